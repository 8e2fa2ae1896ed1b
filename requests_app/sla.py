"""Service-level clocks: deadlines in wall-clock or business time, pauses, escalations.

Times are computed, never ticked: a request stores its deadlines and the moment of its
next escalation step (an indexed column), and the periodic sweep only looks at rows whose
moment has come. Each step is claimed with a conditional UPDATE on escalation_level, so
two sweeps at once — or one run twice — take every step exactly once.
"""

import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from .models import (
    OPEN_STATUSES,
    EscalationStep,
    HistoryEntry,
    Priority,
    ServiceRequest,
    StaffRole,
    Status,
)

logger = logging.getLogger(__name__)

# Categories without a policy of their own escalate on this ladder.
DEFAULT_LADDER = (
    (Decimal("0.75"), EscalationStep.Notify.ASSIGNEE, False),
    (Decimal("1.00"), EscalationStep.Notify.SUPERVISOR, True),
    (Decimal("2.00"), EscalationStep.Notify.DIRECTOR, False),
)
AT_RISK_SHARE = Decimal("0.75")
# Learned expected-by dates need this many past resolutions to be trusted.
EXPECTED_MIN_SAMPLE = 20
EXPECTED_PERCENTILE = 0.8


# --- Clocks --------------------------------------------------------------------------------


class WallClock:
    def add(self, start: datetime, seconds: float) -> datetime:
        return start + timedelta(seconds=seconds)

    def between(self, start: datetime, end: datetime) -> float:
        return max(0.0, (end - start).total_seconds())


class BusinessClock:
    """Working time of a calendar: its weekdays and hours, minus holidays, in its zone.

    Each day's window is built from local wall times, so a daylight-saving change is
    handled by the zone: an 8-to-5 day is 9 hours on either side of the change.
    """

    MAX_DAYS = 3 * 366

    def __init__(self, calendar):
        self.zone = ZoneInfo(calendar.time_zone)
        self.weekdays = calendar.working_weekdays
        self.starts, self.ends = calendar.day_starts, calendar.day_ends
        self.holidays = set(calendar.holidays.values_list("date", flat=True))
        if not self.weekdays:
            raise ValueError("A working calendar needs at least one working day")

    def _window(self, day: date):
        if day.weekday() not in self.weekdays or day in self.holidays:
            return None
        return (
            datetime.combine(day, self.starts, tzinfo=self.zone),
            datetime.combine(day, self.ends, tzinfo=self.zone),
        )

    def _windows_from(self, moment: datetime):
        day = moment.astimezone(self.zone).date()
        for _attempt in range(self.MAX_DAYS):
            window = self._window(day)
            if window and window[1] > moment:
                yield max(window[0], moment), window[1]
            day += timedelta(days=1)
        raise ValueError("No working time within three years: check the calendar")

    def add(self, start: datetime, seconds: float) -> datetime:
        remaining = seconds
        for opens, closes in self._windows_from(start):
            available = (closes - opens).total_seconds()
            if remaining <= available:
                return (opens + timedelta(seconds=remaining)).astimezone(start.tzinfo)
            remaining -= available
        raise AssertionError("unreachable")

    def between(self, start: datetime, end: datetime) -> float:
        if end <= start:
            return 0.0
        total = 0.0
        for opens, closes in self._windows_from(start):
            if opens >= end:
                break
            total += (min(closes, end) - opens).total_seconds()
        return total


def clock_for(policy):
    if policy is not None and policy.clock == policy.Clock.BUSINESS and policy.calendar:
        return BusinessClock(policy.calendar)
    return WallClock()


# --- Targets and schedule ------------------------------------------------------------------


@dataclass
class Targets:
    acknowledge: float | None  # seconds on the policy's clock
    resolve: float
    ladder: list  # [(share, notify, raise_priority)]
    clock: object


def targets_for(category, priority) -> Targets:
    policy = category.sla_policy
    if policy is None:
        factor = (
            Decimal(1)
            if priority < Priority.HIGH
            else (Decimal("0.75") if priority < Priority.URGENT else Decimal("0.5"))
        )
        return Targets(
            None, float(category.sla_hours * 3600 * factor), list(DEFAULT_LADDER), WallClock()
        )
    factor = policy.factor(priority)
    ladder = [(s.at_share, s.notify, s.raise_priority) for s in policy.steps.all()]
    return Targets(
        float(policy.acknowledge_hours * 3600 * factor),
        float(policy.resolve_hours * 3600 * factor),
        ladder,
        clock_for(policy),
    )


def schedule(request) -> dict:
    """The SLA fields `request` should have now, as a dict ready for an UPDATE."""
    targets = targets_for(request.category, request.priority)
    start, paused = request.created_at, request.sla_paused_seconds
    clock = targets.clock

    def point(share):
        return clock.add(start, float(share) * targets.resolve + paused)

    fields = {
        "due_at": point(1),
        "at_risk_at": point(AT_RISK_SHARE),
        "acknowledge_due_at": (
            clock.add(start, targets.acknowledge + paused) if targets.acknowledge else None
        ),
    }
    running = request.status in OPEN_STATUSES and request.sla_paused_at is None
    if running and request.escalation_level < len(targets.ladder):
        fields["next_escalation_at"] = point(targets.ladder[request.escalation_level][0])
    else:
        fields["next_escalation_at"] = None
    return fields


def on_status_change(request, old_status, new_status, now) -> dict:
    """Pause the clock while we wait for the resident; resume and reschedule after."""
    changes = {}
    if new_status == Status.WAITING and request.sla_paused_at is None:
        changes["sla_paused_at"] = now
    elif old_status == Status.WAITING and request.sla_paused_at is not None:
        clock = targets_for(request.category, request.priority).clock
        changes["sla_paused_seconds"] = request.sla_paused_seconds + int(
            clock.between(request.sla_paused_at, now)
        )
        changes["sla_paused_at"] = None
    for name, value in changes.items():
        setattr(request, name, value)
    request.status = new_status
    changes.update(schedule(request))
    return changes


def expected_resolution(category, district=None, *, now=None) -> datetime | None:
    """What residents are told: the 80th percentile of recent resolution times for the
    category (and district, where there are enough of them), else the SLA deadline."""
    now = now or timezone.now()
    for scope in ([district] if district else []) + [None]:
        seconds = _learned_seconds(category, scope)
        if seconds is not None:
            return now + timedelta(seconds=seconds)
    return None


def _learned_seconds(category, district):
    key = f"sla-expected:{category.pk}:{district.pk if district else '-'}"
    cached = cache.get(key)
    if cached is not None:
        return cached or None
    resolved = ServiceRequest.objects.filter(
        category=category,
        status=Status.COMPLETED,
        resolved_at__isnull=False,
        resolved_at__gte=timezone.now() - timedelta(days=365),
    )
    if district:
        resolved = resolved.filter(district=district)
    durations = sorted(
        (resolved_at - created_at).total_seconds()
        for created_at, resolved_at in resolved.order_by("-resolved_at").values_list(
            "created_at", "resolved_at"
        )[:1000]
    )
    value = 0
    if len(durations) >= EXPECTED_MIN_SAMPLE:
        value = durations[min(len(durations) - 1, int(EXPECTED_PERCENTILE * len(durations)))]
    cache.set(key, value, 3600)
    return value or None


def state(request, now=None) -> str:
    """on_track / at_risk / breached, for lists and the crew view."""
    now = now or timezone.now()
    if request.due_at is None or request.status not in OPEN_STATUSES:
        return ""
    if now >= request.due_at:
        return "breached"
    if request.at_risk_at and now >= request.at_risk_at:
        return "at_risk"
    return "on_track"


# --- The sweep -----------------------------------------------------------------------------


def sla_sweep(now=None, batch=500) -> int:
    """Take every escalation step that has come due, each exactly once."""
    now = now or timezone.now()
    due = list(
        ServiceRequest.objects.filter(next_escalation_at__lte=now)
        .order_by("next_escalation_at")
        .values_list("pk", "escalation_level")[:batch]
    )
    taken = 0
    for pk, level in due:
        taken += escalate(pk, level, now)
    return taken


def escalate(pk, level, now) -> bool:
    with transaction.atomic():
        # The claim: only the sweep that moves escalation_level from `level` gets a row.
        claimed = ServiceRequest.objects.filter(
            pk=pk, escalation_level=level, next_escalation_at__lte=now
        ).update(escalation_level=level + 1, next_escalation_at=None)
        if not claimed:
            return False
        request = ServiceRequest.objects.select_related(
            "category__sla_policy", "department__supervisor", "crew", "assignee"
        ).get(pk=pk)
        ladder = targets_for(request.category, request.priority).ladder
        if level >= len(ladder):
            return False
        share, notify, raise_priority = ladder[level]
        overdue = share >= 1
        note = _("%(share)s of the resolve time has passed (due %(due)s)") % {
            "share": f"{share:g}×",
            "due": f"{timezone.localtime(request.due_at):%Y-%m-%d %H:%M}",
        }
        request.record(
            HistoryEntry.Action.SLA,
            actor="SLA",
            field="escalation",
            old=level,
            new=level + 1,
            note=note,
        )
        for recipient in _recipients(request, notify):
            _notify_staff(request, recipient, overdue=overdue, note=note)
        if raise_priority and request.priority < Priority.URGENT:
            request._set("priority", request.priority + 1, actor="SLA", note=note)
        fields = schedule(request)
        ServiceRequest.objects.filter(pk=pk).update(**fields)
    return True


def _recipients(request, notify) -> list[str]:
    User = get_user_model()
    if notify == EscalationStep.Notify.DIRECTOR:
        return list(
            User.objects.filter(staff_profile__role=StaffRole.DIRECTOR, is_active=True)
            .exclude(email="")
            .values_list("email", flat=True)
        )
    department = request.department
    if notify == EscalationStep.Notify.SUPERVISOR:
        supervisor = department.supervisor if department else None
        if supervisor and supervisor.email:
            return [supervisor.email]
        return [department.email] if department and department.email else []
    if request.assignee and request.assignee.email:
        return [request.assignee.email]
    if request.crew:
        members = list(request.crew.members.exclude(email="").values_list("email", flat=True))
        if members:
            return members
    return [department.email] if department and department.email else []


def _notify_staff(request, recipient, *, overdue, note):
    from civicdesk.celery import enqueue_on_commit
    from notifications.models import Notification
    from notifications.tasks import send_notification

    link = f"{settings.SITE_URL}/admin/requests_app/servicerequest/{request.pk}/change/"
    subject = (
        _("Overdue: %(number)s %(category)s") if overdue else _("At risk: %(number)s %(category)s")
    ) % {"number": request.tracking_number, "category": request.category}
    body = "\n".join([subject, "", note, request.address, "", link])
    notification = Notification.objects.create(
        request=request,
        recipient=recipient,
        kind="sla",
        language="en",
        subject=subject,
        body_text=body,
    )
    enqueue_on_commit(send_notification, notification.pk)
