"""SLA clocks: business-hours arithmetic, pauses, recomputation and the escalation ladder."""

import threading
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from unittest import mock
from zoneinfo import ZoneInfo

import pytest
from django.db import connection, transaction
from django.utils import timezone

from notifications.models import Notification
from requests_app import sla
from requests_app.models import (
    EscalationClock,
    EscalationStep,
    HistoryEntry,
    Holiday,
    Priority,
    ServiceRequest,
    SLAPolicy,
    StaffRole,
    Status,
    WorkingCalendar,
)
from requests_app.services import Intake, request_process_intake, request_submit

from .factories import CITY_CENTER, CategoryFactory, ServiceRequestFactory, staff_user

NY = ZoneInfo("America/New_York")


def ny(*args):
    return datetime(*args, tzinfo=NY)


@pytest.fixture
def calendar(db):
    calendar = WorkingCalendar.objects.create(
        name="City hall",
        time_zone="America/New_York",
        weekdays="0,1,2,3,4",
        day_starts=time(8),
        day_ends=time(17),
    )
    Holiday.objects.create(calendar=calendar, date=date(2026, 11, 26), name="Thanksgiving")
    return calendar


@pytest.fixture
def clock(calendar):
    return sla.BusinessClock(calendar)


@pytest.fixture
def frozen(monkeypatch):
    """A clock the test moves by hand."""

    class Frozen:
        now = timezone.now().replace(microsecond=0)

        def tick(self, **delta):
            self.now += timedelta(**delta)

    frozen = Frozen()
    monkeypatch.setattr(timezone, "now", lambda: frozen.now)
    return frozen


# --- Business hours ------------------------------------------------------------------------


def test_time_inside_one_working_day(clock):
    assert clock.add(ny(2026, 11, 24, 9), 3 * 3600) == ny(2026, 11, 24, 12)


def test_overnight_carries_to_next_morning(clock):
    assert clock.add(ny(2026, 11, 24, 16, 30), 3600) == ny(2026, 11, 25, 8, 30)


def test_weekend_is_skipped(clock):
    assert clock.add(ny(2026, 11, 20, 16), 2 * 3600) == ny(2026, 11, 23, 9)  # Fri → Mon


def test_request_on_saturday_starts_counting_monday_morning(clock):
    assert clock.add(ny(2026, 11, 21, 10), 3600) == ny(2026, 11, 23, 9)


def test_holiday_is_skipped(clock):
    # Wed 16:00 + 2 h: an hour on Wednesday, Thursday is Thanksgiving, an hour on Friday.
    assert clock.add(ny(2026, 11, 25, 16), 2 * 3600) == ny(2026, 11, 27, 9)


def test_daylight_saving_change_keeps_local_hours(clock):
    # DST starts Sunday 2026-03-08: Friday is UTC-5, Monday UTC-4.
    due = clock.add(ny(2026, 3, 6, 16), 2 * 3600)
    assert due == ny(2026, 3, 9, 9)
    assert due.utcoffset() == timedelta(hours=-4)
    assert due.astimezone(ZoneInfo("UTC")).hour == 13


def test_five_business_days(clock):
    start = ny(2026, 11, 30, 8)  # a Monday
    assert clock.add(start, 5 * 9 * 3600) == ny(2026, 12, 4, 17)


def test_between_counts_only_working_time(clock):
    assert clock.between(ny(2026, 11, 20, 16), ny(2026, 11, 23, 9)) == 2 * 3600
    assert clock.between(ny(2026, 11, 25, 16), ny(2026, 11, 27, 9)) == 2 * 3600
    assert clock.between(ny(2026, 11, 23, 9), ny(2026, 11, 23, 8)) == 0


# --- Deadlines on requests -----------------------------------------------------------------


@pytest.fixture
def graffiti_policy(calendar):
    policy = SLAPolicy.objects.create(
        name="Graffiti",
        acknowledge_hours=Decimal(9),
        resolve_hours=Decimal(45),
        clock=SLAPolicy.Clock.BUSINESS,
        calendar=calendar,
    )
    for share, notify, raise_priority in sla.DEFAULT_LADDER:
        EscalationStep.objects.create(
            policy=policy, at_share=share, notify=notify, raise_priority=raise_priority
        )
    return policy


def escalation_clock(request):
    return EscalationClock.objects.get(request=request)


def submit(category, **extra):
    """A request as the worker leaves it: submitted, then through intake (routing, clock)."""
    request = request_submit(
        Intake(category=category, description="x", lat=CITY_CENTER[0], lng=CITY_CENTER[1], **extra)
    )
    request_process_intake(request.pk)
    request.refresh_from_db()
    return request


def test_business_hours_policy_sets_deadlines_at_intake(pothole, graffiti_policy, frozen):
    pothole.sla_policy = graffiti_policy
    pothole.save()
    frozen.now = ny(2026, 11, 30, 8)  # Monday 8:00
    request = submit(pothole)
    assert request.due_at == ny(2026, 12, 4, 17)
    assert request.acknowledge_due_at == ny(2026, 11, 30, 17)
    assert (
        escalation_clock(request).level == 0
        and escalation_clock(request).next_at == request.at_risk_at
    )


def test_priority_change_recomputes_deadlines(pothole, frozen):
    request = submit(pothole)
    normal_due = request.due_at
    request._set("priority", Priority.URGENT)
    request.refresh_from_db()
    assert request.due_at == request.created_at + (normal_due - request.created_at) / 2
    assert escalation_clock(request).next_at == request.at_risk_at  # the next rung moved with them


def test_category_change_moves_the_clock_from_the_rung_reached(pothole, graffiti_policy, frozen):
    request = submit(pothole)
    frozen.tick(hours=pothole.sla_hours * 0.75 + 0.01)
    assert sla.sla_sweep() == 1
    graffiti = CategoryFactory(
        code="graffiti", department=pothole.department, sla_policy=graffiti_policy
    )
    request._set("category", graffiti)
    request.refresh_from_db()
    assert escalation_clock(request).level == 1
    assert escalation_clock(request).next_at == request.due_at  # rung 2 of the ladder is the breach


def test_waiting_for_the_resident_pauses_the_clock(pothole, frozen):
    request = submit(pothole)
    due = request.due_at
    frozen.tick(hours=1)
    request.change_status(Status.WAITING)
    request.refresh_from_db()
    assert escalation_clock(request).next_at is None and request.sla_paused_at == frozen.now
    frozen.tick(hours=5)
    request.change_status(Status.ASSIGNED)
    request.refresh_from_db()
    assert request.sla_paused_at is None
    assert request.due_at == due + timedelta(hours=5)
    assert escalation_clock(request).next_at == request.at_risk_at


def test_paused_requests_are_not_escalated(pothole, frozen):
    request = submit(pothole)
    request.change_status(Status.WAITING)
    frozen.tick(days=30)
    assert sla.sla_sweep() == 0


# --- Escalation ----------------------------------------------------------------------------


@pytest.fixture
def staffed(pothole):
    supervisor = staff_user("sam", StaffRole.DEPARTMENT_STAFF, pothole.department)
    supervisor.email = "supervisor@city.example"
    supervisor.save()
    pothole.department.supervisor = supervisor
    pothole.department.save()
    director = staff_user("drew", StaffRole.DIRECTOR)
    director.email = "director@city.example"
    director.save()
    assignee = staff_user("ann", StaffRole.DEPARTMENT_STAFF, pothole.department)
    assignee.email = "ann@city.example"
    assignee.save()
    return assignee


def test_ladder_warns_then_breaches_then_tells_director_each_once(pothole, staffed, frozen):
    request = submit(pothole)
    request_process_intake(request.pk)  # routed to Streets, whose supervisor is Sam
    request.refresh_from_db()
    request.assign(assignee=staffed)
    request.refresh_from_db()
    hours = pothole.sla_hours

    frozen.tick(hours=hours * 0.75 + 0.01)
    assert sla.sla_sweep() == 1
    assert sla.sla_sweep() == 0  # the same sweep again takes nothing
    frozen.tick(hours=hours * 0.25)
    assert sla.sla_sweep() == 1
    request.refresh_from_db()
    assert request.priority == Priority.HIGH  # raised at breach, and deadlines follow it
    assert (
        request.due_at
        == sla.schedule(request)["due_at"]
        < request.created_at + timedelta(hours=hours)
    )
    assert escalation_clock(request).next_at == request.created_at + timedelta(
        hours=hours * 2 * 0.75
    )
    frozen.tick(hours=hours)
    assert sla.sla_sweep() == 1
    frozen.tick(days=30)
    assert sla.sla_sweep() == 0

    steps = list(
        request.history.filter(action=HistoryEntry.Action.SLA).values_list("new_value", flat=True)
    )
    assert steps == ["1", "2", "3"]
    recipients = list(
        Notification.objects.filter(kind="sla").order_by("pk").values_list("recipient", flat=True)
    )
    assert recipients == ["ann@city.example", "supervisor@city.example", "director@city.example"]


@pytest.mark.parametrize("batch", [1, 2, 5, 6])  # smaller than the backlog, its size, larger
def test_sweep_takes_a_backlog_a_batch_at_a_time(pothole, staffed, frozen, batch):
    requests = [submit(pothole) for _ in range(5)]
    frozen.tick(hours=pothole.sla_hours * 0.75 + 0.01)
    assert sla.sla_sweep(batch=batch) == 5
    assert sla.sla_sweep(batch=batch) == 0
    assert set(EscalationClock.objects.values_list("level", flat=True)) == {1}
    steps = HistoryEntry.objects.filter(action=HistoryEntry.Action.SLA)
    assert set(steps.values_list("request", "new_value")) == {(r.pk, "1") for r in requests}
    # One email to the department per sweep batch, telling of each step once.
    emails = Notification.objects.filter(kind="sla")
    assert emails.count() == -(-5 // batch)
    told = sorted(step["request"] for email in emails for step in sla.queued_steps(email))
    assert told == sorted(r.pk for r in requests)


def test_completed_requests_stop_escalating(pothole, frozen):
    request = submit(pothole)
    request.change_status(Status.COMPLETED)
    frozen.tick(days=30)
    assert sla.sla_sweep() == 0


def test_sweep_stops_the_clock_of_a_request_closed_behind_its_back(pothole, frozen):
    request = submit(pothole)
    ServiceRequest.objects.filter(pk=request.pk).update(status=Status.CLOSED)
    frozen.tick(days=30)
    assert sla.sla_sweep() == 0
    assert escalation_clock(request).next_at is None and escalation_clock(request).level == 0
    assert not request.history.filter(action=HistoryEntry.Action.SLA).exists()


def test_sla_state_for_lists(pothole, frozen):
    request = submit(pothole)
    assert sla.state(request) == "on_track"
    frozen.tick(hours=pothole.sla_hours * 0.8)
    assert sla.state(request) == "at_risk"
    frozen.tick(hours=pothole.sla_hours)
    assert sla.state(request) == "breached"


@pytest.mark.django_db(transaction=True)
def test_concurrent_sweeps_take_each_step_once(pothole, staffed):
    requests = [submit(pothole) for _ in range(20)]
    EscalationClock.objects.filter(request__in=requests).update(
        next_at=timezone.now() - timedelta(minutes=1)
    )
    results, errors = [], []

    def sweep():
        try:
            results.append(sla.sla_sweep())
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=sweep) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert sum(results) == 20
    assert HistoryEntry.objects.filter(action=HistoryEntry.Action.SLA).count() == 20
    assert set(EscalationClock.objects.values_list("level", flat=True)) == {1}


@pytest.mark.django_db(transaction=True)
def test_sweep_leaves_a_request_whose_status_is_changing_to_the_change(pothole, staffed):
    if connection.vendor == "sqlite":
        pytest.skip("SQLite has no row locks and serialises writers")
    pausing, other = submit(pothole), submit(pothole)
    EscalationClock.objects.update(next_at=timezone.now() - timedelta(minutes=1))
    changed, release = threading.Event(), threading.Event()

    def wait_for_the_resident():
        try:
            with transaction.atomic():
                ServiceRequest.objects.get(pk=pausing.pk).change_status(Status.WAITING)
                changed.set()
                release.wait(10)
        finally:
            connection.close()

    thread = threading.Thread(target=wait_for_the_resident)
    thread.start()
    try:
        assert changed.wait(10)
        assert sla.sla_sweep() == 1  # the other request's rung; the changing one is skipped
    finally:
        release.set()
        thread.join()
    assert sla.sla_sweep() == 0  # once paused, its clock is stopped
    assert (escalation_clock(pausing).level, escalation_clock(pausing).next_at) == (0, None)
    assert escalation_clock(other).level == 1
    assert not pausing.history.filter(action=HistoryEntry.Action.SLA).exists()


# --- Expected-by -----------------------------------------------------------------------------


def test_expected_by_learned_from_past_resolutions(pothole, frozen):
    from django.core.cache import cache

    cache.clear()
    for hours in range(1, 31):  # 30 past potholes fixed in 1..30 hours
        ServiceRequestFactory(
            category=pothole,
            status=Status.COMPLETED,
            created_at=frozen.now - timedelta(days=10),
            resolved_at=frozen.now - timedelta(days=10) + timedelta(hours=hours),
        )
    request = submit(pothole)
    assert request.expected_at == frozen.now + timedelta(hours=25)  # the 80th percentile


def test_expected_by_falls_back_to_the_deadline(pothole):
    from django.core.cache import cache

    cache.clear()
    request = submit(pothole)
    assert request.expected_at == request.due_at


def test_sla_compliance_by_department(pothole, frozen):
    for late in (False, False, False, True):
        created = frozen.now - timedelta(days=10)
        ServiceRequestFactory(
            category=pothole,
            department=pothole.department,
            status=Status.COMPLETED,
            created_at=created,
            due_at=created + timedelta(hours=72),
            resolved_at=created + timedelta(hours=100 if late else 10),
        )
    rows = ServiceRequest.objects.sla_compliance("department__name")
    assert rows == [
        {"department__name": "Streets", "resolved": 4, "on_time": 3, "on_time_pct": 75.0}
    ]


def test_sweep_emails_are_sent_by_one_batch_task(
    pothole, staffed, frozen, django_capture_on_commit_callbacks
):
    from django.core import mail

    from notifications.tasks import send_notification_batch

    requests = [submit(pothole) for _ in range(3)]
    for request in requests:
        request_process_intake(request.pk)
    frozen.tick(hours=pothole.sla_hours * 0.75 + 0.01)
    with mock.patch.object(send_notification_batch, "apply_async") as enqueue:
        with django_capture_on_commit_callbacks(execute=True):
            assert sla.sla_sweep() == 3
    (call,) = enqueue.call_args_list  # one message for the whole batch
    (ids,) = call.kwargs["args"]
    assert sorted(ids) == sorted(
        Notification.objects.filter(kind="sla").values_list("pk", flat=True)
    )
    mail.outbox.clear()
    send_notification_batch(ids)
    send_notification_batch(ids)  # delivered twice by the broker: sent once
    # The three rungs reach their one recipient as one email listing them.
    (sent,) = mail.outbox
    assert sent.subject == "3 requests need attention (0 overdue)"
    for request in requests:
        assert f"At risk: {request.tracking_number} {pothole}" in sent.body
        assert f"/admin/requests_app/servicerequest/{request.pk}/change/" in sent.body
    assert set(Notification.objects.filter(kind="sla").values_list("status", flat=True)) == {"sent"}


def test_an_email_queued_before_the_digests_is_still_written(pothole, staffed):
    from django.core import mail

    from notifications.services import notification_send

    request = submit(pothole)
    email = Notification.objects.create(
        request=request,
        recipient="streets@city.example",
        kind=Notification.Kind.SLA,
        language="en",
        render_context={"share": "0.75", "due_at": request.due_at.isoformat()},
    )
    mail.outbox.clear()
    assert notification_send(email.pk) == "sent"
    (sent,) = mail.outbox
    assert sent.subject == f"At risk: {request.tracking_number} {pothole}"


def test_breach_email_and_history_tell_the_deadline_that_was_missed(pothole, staffed, frozen):
    from django.core import mail

    from notifications.services import notification_send

    request = submit(pothole)
    missed = request.due_at.astimezone(timezone.get_current_timezone())
    frozen.tick(hours=pothole.sla_hours + 0.01)
    assert sla.sla_sweep() == 1  # at risk
    assert sla.sla_sweep() == 1  # breached: the priority goes up and the deadline with it
    request.refresh_from_db()
    assert request.priority == Priority.HIGH and request.due_at < missed

    note = f"1.00× of the resolve time has passed (due {missed:%Y-%m-%d %H:%M})"
    breach = request.history.filter(new_value="2").get()
    raised = request.history.get(field="priority")
    assert breach.note == raised.note == note
    assert (raised.old_value, raised.new_value) == (str(Priority.NORMAL), str(Priority.HIGH))

    # Queued unwritten, written as it is sent.
    email = Notification.objects.filter(kind="sla").latest("pk")
    assert email.recipient == "supervisor@city.example" and not email.is_written
    mail.outbox.clear()
    assert notification_send(email.pk) == "sent"
    (sent,) = mail.outbox
    assert sent.subject == f"Overdue: {request.tracking_number} {pothole}"
    assert note in sent.body and request.address in sent.body
    assert f"/admin/requests_app/servicerequest/{request.pk}/change/" in sent.body
    email.refresh_from_db()
    assert email.subject == sent.subject and email.body_text == sent.body


def _sla_email_listing_two_requests(category):
    requests = [ServiceRequestFactory(category=category) for _ in range(2)]
    email = Notification.objects.create(
        recipient="streets@city.example",
        kind=Notification.Kind.SLA,
        language="en",
        render_context={
            "steps": [{"request": r.pk, "share": "0.75", "due_at": None} for r in requests]
        },
    )
    return requests, email


def test_an_email_whose_requests_were_all_deleted_since_has_nothing_to_tell(pothole):
    requests, email = _sla_email_listing_two_requests(pothole)
    ServiceRequest.objects.filter(pk=requests[0].pk).delete()  # a spam report
    subject, _text = sla.steps_email(email)
    assert subject == f"At risk: {requests[1].tracking_number} {pothole}"
    ServiceRequest.objects.filter(pk=requests[1].pk).delete()
    # Not "0 requests need attention".
    assert sla.steps_email(email) is None


def test_an_email_whose_requests_were_all_deleted_since_is_not_sent(pothole):
    from django.core import mail

    from notifications.services import notification_send

    requests, email = _sla_email_listing_two_requests(pothole)
    ServiceRequest.objects.filter(pk__in=[r.pk for r in requests]).delete()
    mail.outbox.clear()
    assert notification_send(email.pk) == "failed"
    assert mail.outbox == []
    email.refresh_from_db()
    assert email.status == Notification.Status.FAILED
    assert email.last_error == "Not sent: every request it listed has been deleted since"
    assert notification_send(email.pk) == "skipped"  # nor by the outbox sweep, later
