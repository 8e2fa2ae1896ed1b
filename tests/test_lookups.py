"""field__any_of: the same rows as __in, sent as one array parameter on PostgreSQL."""

import pytest

from requests_app.models import HistoryEntry, ServiceRequest

from .factories import ServiceRequestFactory


@pytest.mark.django_db
def test_any_of_matches_in_on_fields_and_relations(pothole):
    requests = ServiceRequestFactory.create_batch(3, category=pothole)
    for request in requests:
        request.record(HistoryEntry.Action.NOTE, note="checked")
    wanted = [requests[0].pk, requests[2].pk]

    assert set(ServiceRequest.objects.filter(pk__any_of=wanted)) == {requests[0], requests[2]}
    assert set(
        HistoryEntry.objects.filter(request_id__any_of=wanted).values_list("request_id", flat=True)
    ) == set(
        HistoryEntry.objects.filter(request_id__in=wanted).values_list("request_id", flat=True)
    )
    matched = set(HistoryEntry.objects.filter(request__any_of=wanted))
    assert matched == set(HistoryEntry.objects.filter(request__in=wanted))
    assert {entry.request_id for entry in matched} == set(wanted)


@pytest.mark.django_db
def test_any_of_an_empty_list_matches_nothing(pothole):
    ServiceRequestFactory(category=pothole)
    assert not ServiceRequest.objects.filter(pk__any_of=[]).exists()
