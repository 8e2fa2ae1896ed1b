"""Intake never waits on the broker, and what follows it happens exactly once."""

from datetime import timedelta

import pytest
from anymail.exceptions import AnymailRecipientsRefused
from django.core import mail
from django.core.mail import EmailMultiAlternatives
from django.utils import timezone

from notifications.models import Notification
from notifications.services import SendOutcome, notification_send, outbox_sweep
from requests_app.models import HistoryEntry, ServiceRequest, Status
from requests_app.services import Intake, intake_sweep, request_process_intake, request_submit

from .conftest import use_broker
from .factories import CITY_CENTER

DEAD_BROKER = "redis://127.0.0.1:9/0"  # the discard port: nothing answers there


def submit(category, **extra):
    return request_submit(
        Intake(
            category=category,
            description="Pothole by the school",
            lat=CITY_CENTER[0],
            lng=CITY_CENTER[1],
            **extra,
        )
    )


@pytest.fixture
def dead_broker(settings):
    use_broker(
        DEAD_BROKER,
        settings.CELERY_BROKER_TRANSPORT_OPTIONS
        if settings.REDIS_URL
        else {"socket_connect_timeout": 1, "socket_timeout": 2, "max_retries": 0},
    )
    yield
    use_broker(settings.CELERY_BROKER_URL, settings.CELERY_BROKER_TRANSPORT_OPTIONS)


def test_intake_enqueues_processing_only_after_commit(pothole, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        submit(pothole, reporter_email="maria@example.org")
    # One message once the rows exist: the intake task, which also sends the confirmation.
    assert len(callbacks) == 1


def test_intake_task_sends_the_confirmation_after_its_own_commit(
    pothole, django_capture_on_commit_callbacks, monkeypatch
):
    from notifications.tasks import send_notification
    from requests_app.tasks import process_intake

    enqueued = []
    for task in (process_intake, send_notification):
        monkeypatch.setattr(
            task, "apply_async", lambda args, task=task, **kw: enqueued.append((task.name, *args))
        )
    with django_capture_on_commit_callbacks(execute=True):
        request = submit(pothole, reporter_email="maria@example.org")
    assert enqueued == [(process_intake.name, request.pk)]

    with django_capture_on_commit_callbacks(execute=True):
        assert request_process_intake(request.pk)
    confirmation = Notification.objects.get(request=request, kind=Notification.Kind.RECEIVED)
    assert (send_notification.name, confirmation.pk) in enqueued[1:]


def test_intake_with_broker_down_saves_request_and_sweep_finishes_it(
    pothole, dead_broker, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        request = submit(pothole, reporter_email="maria@example.org")
    request.refresh_from_db()
    assert request.tracking_number and request.intake_processed_at is None
    assert Notification.objects.get(request=request).status == Notification.Status.PENDING

    # What the periodic sweeps do once a worker runs again.
    assert intake_sweep(older_than=timedelta(0)) == 1
    assert outbox_sweep() == 2  # the confirmation, and "assigned" from routing
    request.refresh_from_db()
    assert request.intake_processed_at is not None
    assert request.status == Status.ASSIGNED and request.department == pothole.department
    assert len(mail.outbox) == 2  # received, then assigned


def test_processing_intake_twice_routes_once(pothole):
    request = submit(pothole)
    assert request_process_intake(request.pk) is True
    assert request_process_intake(request.pk) is False
    assert request.history.filter(action=HistoryEntry.Action.DEPARTMENT).count() == 1
    routed = request.history.get(action=HistoryEntry.Action.DEPARTMENT)
    assert "Routed to Streets: no rule matched, default department" in routed.note


def test_processing_a_missing_request_is_quiet(db):
    assert request_process_intake(987654) is False


def test_notification_is_sent_once_however_often_the_task_runs(pothole):
    request = submit(pothole, reporter_email="maria@example.org")
    notification = Notification.objects.get(request=request)
    assert notification_send(notification.pk) == SendOutcome.SENT
    assert notification_send(notification.pk) == SendOutcome.SKIPPED
    assert outbox_sweep() == 0
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert request.tracking_number in message.subject
    assert f"/requests/{request.tracking_number}/" in message.body
    html = message.alternatives[0][0]
    assert "http://" in html and request.tracking_number in html


def test_provider_failures_retry_with_backoff_then_send_once(pothole, monkeypatch):
    request = submit(pothole, reporter_email="maria@example.org")
    notification = Notification.objects.get(request=request)
    real_send = EmailMultiAlternatives.send
    failures = {"left": 3}

    def flaky_send(self, *args, **kwargs):
        if failures["left"]:
            failures["left"] -= 1
            raise ConnectionError("provider unavailable")
        return real_send(self, *args, **kwargs)

    monkeypatch.setattr(EmailMultiAlternatives, "send", flaky_send)

    def send_when_due():
        notification.refresh_from_db()
        assert notification_send(notification.pk) == SendOutcome.SKIPPED  # not yet
        Notification.objects.filter(pk=notification.pk).update(next_attempt_at=timezone.now())
        return notification_send(notification.pk)

    outcomes = [notification_send(notification.pk), send_when_due(), send_when_due()]
    assert outcomes == [SendOutcome.RETRY] * 3
    notification.refresh_from_db()
    assert notification.attempts == 3 and "provider unavailable" in notification.last_error
    assert notification.next_attempt_at > notification.created_at
    assert send_when_due() == SendOutcome.SENT
    assert notification_send(notification.pk) == SendOutcome.SKIPPED
    assert len(mail.outbox) == 1


def test_refused_recipient_fails_without_retry(pothole, monkeypatch):
    request = submit(pothole, reporter_email="nobody@invalid.example")
    notification = Notification.objects.get(request=request)

    def refuse(self, *args, **kwargs):
        raise AnymailRecipientsRefused("invalid address")

    monkeypatch.setattr(EmailMultiAlternatives, "send", refuse)
    assert notification_send(notification.pk) == SendOutcome.FAILED
    notification.refresh_from_db()
    assert notification.status == Notification.Status.FAILED
    assert outbox_sweep() == 0


def test_no_email_row_without_an_address(pothole):
    request = submit(pothole)
    assert not Notification.objects.filter(request=request).exists()
    assert ServiceRequest.objects.filter(pk=request.pk).exists()


def test_spanish_reporter_gets_spanish_email(pothole):
    request = submit(pothole, reporter_email="ana@example.org", language="es")
    notification = Notification.objects.get(request=request)
    assert notification.language == "es"
    notification_send(notification.pk)  # the receipt is written when it is sent

    notification.refresh_from_db()
    (sent,) = mail.outbox
    assert "Recibimos" in sent.subject or "recibimos" in sent.subject
    assert notification.subject == sent.subject and "CD-" in notification.body_text


def test_a_submission_writes_its_rows_without_looking_anything_else_up(
    pothole, django_assert_num_queries
):
    submit(pothole)  # the first of a category also learns its expected resolution time
    # The tracking number looked for among the stored ones; the request, its CREATED
    # entry, the reporter's follower row and the confirmation email: no savepoints, no
    # follower or suppression lookups for a request that is only being created.
    with django_assert_num_queries(5):
        request = submit(pothole, reporter_email="maria@example.org")
    assert request.followers.get().email == "maria@example.org"
    assert Notification.objects.get(request=request).recipient == "maria@example.org"


def test_a_submission_returns_its_rows_as_stored(pothole):
    # The request and its history are written with statements compiled once
    # (models.insert_new): what the caller holds must be what the database has, down to the
    # columns the database fills in itself.
    request = submit(pothole, reporter_email="maria@example.org", reporter_name="María")
    entry = request.record(HistoryEntry.Action.NOTE, actor="Dispatch", note="Checked")
    for held in (request, entry):
        stored = type(held).objects.get(pk=held.pk)
        assert not held._state.adding and held._state.db == "default"
        for field in type(held)._meta.concrete_fields:
            assert getattr(held, field.attname) == getattr(stored, field.attname), field.name
    assert request.public_description_override == "" and request.zipcode == ""
    assert request.history.first().action == HistoryEntry.Action.CREATED
