"""Personal data retention: reporters' contact details are anonymised a while after a
request is resolved, once, with a trace in the history and nothing else touched."""

from datetime import timedelta

from django.utils import timezone

from requests_app import tasks
from requests_app.models import Follower, HistoryEntry, Status
from requests_app.retention import reporter_contacts_anonymise

from .factories import ServiceRequestFactory

CONTACT = {
    "reporter_name": "Maria Lopez",
    "reporter_email": "maria@example.org",
    "reporter_phone": "617-555-0142",
    "reporter_device_id": "device-77",
    "reporter_account_id": "account-88",
}


def _resolved(pothole, status=Status.COMPLETED, days_ago=400, **fields):
    return ServiceRequestFactory(
        category=pothole,
        status=status,
        resolved_at=timezone.now() - timedelta(days=days_ago),
        **{**CONTACT, **fields},
    )


def _follow(request, email):
    return Follower.objects.create(request=request, email=email, source=Follower.Source.FOLLOW)


def _retention_entries(request):
    return list(request.history.filter(field="reporter contact"))


def _contact(request):
    request.refresh_from_db()
    return {field: getattr(request, field) for field in CONTACT}


def test_contact_of_a_request_completed_long_ago_is_anonymised(pothole, settings):
    settings.RETENTION_REPORTER_CONTACT_DAYS = 365
    request = _resolved(pothole)
    follower = _follow(request, "neighbour@example.org")

    assert reporter_contacts_anonymise() == 1

    assert _contact(request) == dict.fromkeys(CONTACT, "")
    follower.refresh_from_db()
    assert follower.email == f"{follower.pk}@anonymised.invalid"
    assert follower.unsubscribed_at is not None
    [entry] = _retention_entries(request)
    assert entry.action == HistoryEntry.Action.FIELD
    assert entry.note == "anonymised after 365 days"
    assert entry.actor is None and not entry.is_public
    recorded = " ".join([entry.actor_label, entry.old_value, entry.new_value, entry.note])
    assert "maria" not in recorded.lower() and "555" not in recorded
    # The request itself stays, as it was.
    assert request.status == Status.COMPLETED and request.description


def test_closed_requests_are_anonymised_too(pothole):
    request = _resolved(pothole, status=Status.CLOSED, close_reason="duplicate")
    assert reporter_contacts_anonymise(365) == 1
    assert _contact(request)["reporter_email"] == ""


def test_a_second_run_changes_nothing_and_records_nothing(pothole):
    request = _resolved(pothole)
    _follow(request, "neighbour@example.org")
    assert reporter_contacts_anonymise(365) == 1
    assert reporter_contacts_anonymise(365) == 0
    assert len(_retention_entries(request)) == 1


def test_open_requests_are_untouched_however_old(pothole):
    old = timezone.now() - timedelta(days=900)
    request = ServiceRequestFactory(
        category=pothole, status=Status.IN_PROGRESS, created_at=old, **CONTACT
    )
    follower = _follow(request, "neighbour@example.org")
    assert reporter_contacts_anonymise(365) == 0
    assert _contact(request) == CONTACT
    follower.refresh_from_db()
    assert follower.email == "neighbour@example.org"
    assert _retention_entries(request) == []


def test_recently_resolved_requests_keep_their_contact(pothole):
    request = _resolved(pothole, days_ago=30)
    assert reporter_contacts_anonymise(365) == 0
    assert _contact(request) == CONTACT


def test_requests_without_contact_get_no_history_entry(pothole):
    request = _resolved(pothole, **dict.fromkeys(CONTACT, ""))
    assert reporter_contacts_anonymise(365) == 0
    assert _retention_entries(request) == []


def test_a_request_with_only_a_follower_left_is_still_anonymised(pothole):
    request = _resolved(pothole, **dict.fromkeys(CONTACT, ""))
    follower = _follow(request, "neighbour@example.org")
    assert reporter_contacts_anonymise(365) == 1
    follower.refresh_from_db()
    assert follower.email.endswith("@anonymised.invalid")


def test_zero_days_disables_retention(pothole, settings):
    settings.RETENTION_REPORTER_CONTACT_DAYS = 0
    request = _resolved(pothole, days_ago=4000)
    assert reporter_contacts_anonymise() == 0
    assert tasks.anonymise_reporter_contacts() == 0
    assert _contact(request) == CONTACT


def test_many_requests_are_done_in_batches(pothole):
    requests = [_resolved(pothole) for _ in range(5)]
    assert reporter_contacts_anonymise(365, batch_size=2) == 5
    assert all(_contact(r)["reporter_email"] == "" for r in requests)
    assert all(len(_retention_entries(r)) == 1 for r in requests)


def test_the_daily_task_uses_the_setting(pothole, settings):
    settings.RETENTION_REPORTER_CONTACT_DAYS = 90
    request = _resolved(pothole, days_ago=100)
    assert tasks.anonymise_reporter_contacts() == 1
    [entry] = _retention_entries(request)
    assert entry.note == "anonymised after 90 days"


def test_retention_runs_daily_from_beat():
    from civicdesk.celery import app

    entry = app.conf.beat_schedule["anonymise-reporter-contacts"]
    assert entry["task"] == tasks.anonymise_reporter_contacts.name
    assert entry["schedule"].hour == {3}


def test_the_residents_emails_in_the_outbox_and_inbound_senders_are_anonymised_too(pothole):
    from notifications.models import InboundEmail, Notification

    request = _resolved(pothole)
    emails = {
        kind: Notification.objects.create(
            request=request,
            recipient=recipient,
            kind=kind,
            language="en",
            subject=f"Your request {request.tracking_number}",
            body_text="Hello Maria Lopez, thank you for your report.",
            body_html="<p>Hello Maria Lopez</p>",
            status=Notification.Status.SENT,
        )
        for kind, recipient in [
            (Notification.Kind.RECEIVED, "maria@example.org"),
            (Notification.Kind.STATUS, "neighbour@example.org"),
            (Notification.Kind.SLA, "streets@city.example"),
        ]
    }
    inbound = InboundEmail.objects.create(
        message_id="<m1@example.org>",
        sender="maria@example.org",
        subject="pothole",
        outcome=InboundEmail.Outcome.NEW_REQUEST,
        request=request,
    )

    assert reporter_contacts_anonymise(365) == 1

    for kind in (Notification.Kind.RECEIVED, Notification.Kind.STATUS):
        email = Notification.objects.get(pk=emails[kind].pk)
        assert email.recipient.endswith("@anonymised.invalid")
        assert "Maria" not in email.body_text + email.body_html
        assert email.status == Notification.Status.SENT  # that it went out stays known
    staff_email = Notification.objects.get(pk=emails[Notification.Kind.SLA].pk)
    assert staff_email.recipient == "streets@city.example"
    inbound.refresh_from_db()
    assert inbound.sender == ""
    # Nothing is left to find: a second run records nothing.
    assert reporter_contacts_anonymise(365) == 0
    assert len(_retention_entries(request)) == 1


def test_an_email_still_pending_does_not_bring_the_request_back_each_day(pothole):
    from notifications.models import Notification

    request = _resolved(pothole)
    Notification.objects.create(
        request=request,
        recipient="maria@example.org",
        kind=Notification.Kind.STATUS,
        language="en",
        subject="Done",
        body_text="Hello",
    )
    assert reporter_contacts_anonymise(365) == 1
    assert reporter_contacts_anonymise(365) == 0
    assert len(_retention_entries(request)) == 1
