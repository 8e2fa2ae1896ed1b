import pytest
from django.db import DatabaseError, IntegrityError, connection, transaction

from requests_app.models import (
    CloseReason,
    ConcurrentChange,
    HistoryEntry,
    InvalidTransition,
    ServiceRequest,
    Status,
)
from requests_app.services import Intake, request_submit

from .factories import CITY_CENTER


@pytest.fixture
def new_request(pothole):
    return request_submit(
        Intake(
            category=pothole,
            description="Pothole by the school",
            lat=CITY_CENTER[0],
            lng=CITY_CENTER[1],
            reporter_email="maria@example.org",
        )
    )


def test_submitted_request_is_received_with_due_date_and_history(new_request, pothole):
    assert new_request.status == Status.RECEIVED
    assert new_request.due_at - new_request.created_at == pothole.sla
    assert new_request.priority == pothole.default_priority
    assert [e.action for e in new_request.history.all()] == [HistoryEntry.Action.CREATED]
    assert new_request.intake_processed_at is None  # the worker's job, not the web request's


def test_full_lifecycle_sets_timestamps_and_records_every_step(new_request, dispatcher):
    for status in (Status.ASSIGNED, Status.SCHEDULED, Status.IN_PROGRESS, Status.COMPLETED):
        new_request.change_status(status, by=dispatcher)
    new_request.refresh_from_db()
    assert new_request.status == Status.COMPLETED
    assert new_request.first_response_at is not None
    assert new_request.resolved_at is not None
    steps = list(
        new_request.history.filter(action=HistoryEntry.Action.STATUS).values_list(
            "old_value", "new_value"
        )
    )
    assert steps == [
        ("received", "assigned"),
        ("assigned", "scheduled"),
        ("scheduled", "in_progress"),
        ("in_progress", "completed"),
    ]
    assert all(e.actor == dispatcher for e in new_request.history.filter(action="status"))


def test_completed_request_cannot_go_back_to_in_progress(new_request):
    new_request.change_status(Status.COMPLETED)
    with pytest.raises(InvalidTransition):
        new_request.change_status(Status.IN_PROGRESS)
    new_request.refresh_from_db()
    assert new_request.status == Status.COMPLETED


def test_closing_without_fix_needs_a_reason(new_request):
    with pytest.raises(InvalidTransition):
        new_request.change_status(Status.CLOSED)
    new_request.change_status(Status.CLOSED, close_reason=CloseReason.NOT_CITY)
    new_request.refresh_from_db()
    assert new_request.close_reason == CloseReason.NOT_CITY
    assert new_request.resolved_at is not None


def test_reopening_needs_a_note_and_clears_resolution(new_request):
    new_request.change_status(Status.COMPLETED)
    with pytest.raises(InvalidTransition):
        new_request.change_status(Status.RECEIVED)
    new_request.change_status(Status.RECEIVED, note="Resident says the hole is back")
    new_request.refresh_from_db()
    assert new_request.is_open and new_request.resolved_at is None


def test_second_of_two_simultaneous_status_changes_is_refused(new_request):
    first = ServiceRequest.objects.get(pk=new_request.pk)
    second = ServiceRequest.objects.get(pk=new_request.pk)
    first.change_status(Status.IN_PROGRESS)
    with pytest.raises(ConcurrentChange):
        second.change_status(Status.CLOSED, close_reason=CloseReason.NOT_FOUND)
    new_request.refresh_from_db()
    assert new_request.status == Status.IN_PROGRESS
    assert new_request.history.filter(action="status").count() == 1


def test_status_changes_email_the_reporter(new_request):
    new_request.change_status(Status.IN_PROGRESS)
    kinds = list(new_request.notifications.order_by("pk").values_list("kind", "recipient"))
    assert kinds == [("received", "maria@example.org"), ("status", "maria@example.org")]


def test_internal_note_is_not_in_public_timeline(new_request, dispatcher):
    new_request.add_comment("Reporter is difficult", by=dispatcher, public=False)
    new_request.add_comment("Crew on site tomorrow", by=dispatcher, public=True)
    texts = [e.get("text") for e in new_request.public_timeline()]
    assert "Crew on site tomorrow" in texts
    assert "Reporter is difficult" not in texts


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE requests_app_history SET note = 'rewritten'",
        "DELETE FROM requests_app_history",
    ],
)
def test_database_refuses_to_rewrite_history(new_request, statement):
    with pytest.raises((DatabaseError, IntegrityError)), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(statement)
    assert new_request.history.filter(note__startswith="Received via").exists()


def test_orm_refuses_to_change_a_history_entry(new_request):
    entry = new_request.history.first()
    entry.note = "rewritten"
    with pytest.raises(Exception, match="cannot be changed"):
        entry.save()
