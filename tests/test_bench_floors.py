"""The throughput benchmark's reference views do the work their figures claim.

bench/portal_throughput.py compares the portal with these; a view that quietly did less
(no history entry, no intake task) would make the comparison say more than it should.
"""

from unittest import mock

import pytest
from django.test import override_settings

from requests_app.models import HistoryEntry, IntakeThrottle, ServiceRequest

pytestmark = [pytest.mark.django_db, pytest.mark.urls("bench.floor_urls")]


def submission(category):
    return {
        "category": str(category.pk),
        "description": "Deep pothole in the right lane",
        "address": "12 Main St",
        "email": "resident@bench.example",
    }


@override_settings(REPORTS_PER_IP_PER_HOUR=1)
def test_required_work_files_a_request_with_history_and_enqueues_intake(
    client, pothole, django_capture_on_commit_callbacks
):
    with (
        mock.patch("bench.floor_urls.process_intake") as intake,
        django_capture_on_commit_callbacks(execute=True),
    ):
        response = client.post("/bench/floor/required/", submission(pothole))

    filed = ServiceRequest.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/report/done/{filed.tracking_number}/"
    assert filed.category == pothole
    assert filed.description == "Deep pothole in the right lane"
    assert filed.reporter_email == "resident@bench.example"
    assert list(filed.history.values_list("action", flat=True)) == [HistoryEntry.Action.CREATED]
    intake.apply_async.assert_called_once_with(args=(filed.pk,))
    assert IntakeThrottle.objects.get().hits == 1

    # The per-IP count applies, as on the portal.
    assert client.post("/bench/floor/required/", submission(pothole)).status_code == 429
    assert ServiceRequest.objects.count() == 1


def test_required_work_checks_csrf(pothole):
    from django.test import Client

    response = Client(enforce_csrf_checks=True).post("/bench/floor/required/", submission(pothole))
    assert response.status_code == 403
    assert not ServiceRequest.objects.exists()
