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
from django.db import connection, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from .models import (
    OPEN_STATUSES,
    Department,
    EscalationStep,
    HistoryEntry,
    Priority,
    ServiceCategory,
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
        self.holidays = {holiday.date for holiday in calendar.holidays.all()}  # prefetchable
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


def schedule(request, targets=None) -> dict:
    """The SLA fields `request` should have now, as a dict ready for an UPDATE."""
    targets = targets or targets_for(request.category, request.priority)
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


def sla_sweep(now=None, batch=1000) -> int:
    """Take every escalation step that has come due, each exactly once.

    Work is done a batch at a time and in sets: the batch is locked with one SELECT and
    moved up the ladder with one UPDATE, and its history entries and staff emails are
    inserted in bulk, so the cost follows the number of steps due, not the table.
    """
    now = now or timezone.now()
    taken = 0
    while True:
        found, steps = _sweep_batch(now, batch)
        taken += steps
        if found < batch:
            return taken


@dataclass
class _Due:
    """A request whose next rung has come, with just what a rung needs."""

    pk: int
    escalation_level: int
    category: object
    priority: int
    created_at: datetime
    sla_paused_seconds: int
    due_at: datetime
    tracking_number: str
    address: str
    department: object
    crew_id: int | None
    assignee_id: int | None
    status: str = Status.ASSIGNED  # only open, running requests have a rung scheduled
    sla_paused_at: None = None


_DUE_FIELDS = (
    "pk",
    "escalation_level",
    "category_id",
    "priority",
    "created_at",
    "sla_paused_seconds",
    "due_at",
    "tracking_number",
    "address",
    "department_id",
    "crew_id",
    "assignee_id",
)


def _lock_due(now, batch) -> list[_Due]:
    # SKIP LOCKED lets a second sweep take the rows the first has not locked instead of
    # waiting for it; SQLite has no row locks and serialises writers instead.
    rows = list(
        ServiceRequest.objects.filter(next_escalation_at__lte=now)
        .order_by("next_escalation_at")
        .select_for_update(skip_locked=True)
        .values_list(*_DUE_FIELDS)[:batch]
    )
    categories = ServiceCategory.objects.select_related("sla_policy__calendar").in_bulk(
        {row[2] for row in rows}
    )
    departments = Department.objects.select_related("supervisor").in_bulk(
        {row[9] for row in rows if row[9]}
    )
    return [
        _Due(
            pk,
            level,
            categories[category_id],
            priority,
            created_at,
            paused,
            due_at,
            number,
            address,
            departments.get(department_id),
            crew_id,
            assignee_id,
        )
        for (
            pk,
            level,
            category_id,
            priority,
            created_at,
            paused,
            due_at,
            number,
            address,
            department_id,
            crew_id,
            assignee_id,
        ) in rows
    ]


class _TargetsCache(dict):
    """targets_for() per (category, priority), computed once per batch."""

    def get_for(self, due):
        key = (due.category.pk, due.priority)
        if key not in self:
            self[key] = targets_for(due.category, due.priority)
        return self[key]


def _sweep_batch(now, batch) -> tuple[int, int]:
    from civicdesk.celery import enqueue_on_commit
    from notifications.models import Notification
    from notifications.tasks import send_notification_batch

    with transaction.atomic():
        found = _lock_due(now, batch)
        if not found:
            return 0, 0
        targets = _TargetsCache()
        wording = _Wording()
        moves, effects = [], {}
        for due in found:
            ladder = targets.get_for(due).ladder
            level = due.escalation_level
            due.escalation_level = level + 1
            if level >= len(ladder):
                moves.append(_move(due, level, targets.get_for(due)))  # the ladder got shorter
                continue
            share, notify, raise_priority = ladder[level]
            note = wording.note % {
                "share": f"{share:g}×",
                "due": f"{timezone.localtime(due.due_at):%Y-%m-%d %H:%M}",
            }
            old_priority = due.priority
            if raise_priority and due.priority < Priority.URGENT:
                due.priority += 1
            moves.append(_move(due, level, targets.get_for(due)))
            effects[due.pk] = (due, level, share, notify, note, old_priority)
        taken = [effects[pk] for pk in _apply_moves(moves) if pk in effects]
        recipients = _Recipients([due for due, *_rest in taken])
        history, notifications = [], []
        for due, level, share, notify, note, old_priority in taken:
            history.append(_history_row(due, now, "escalation", level, level + 1, note))
            if due.priority != old_priority:
                history.append(_history_row(due, now, "priority", old_priority, due.priority, note))
            notifications.extend(
                _staff_notification(due, recipient, wording, overdue=share >= 1, note=note, now=now)
                for recipient in recipients.for_step(due, notify)
            )
        _insert(HistoryEntry, HISTORY_COLUMNS, history)
        created = _insert(Notification, NOTIFICATION_COLUMNS, notifications)
        if created:
            enqueue_on_commit(send_notification_batch, created)
    return len(found), len(taken)


HISTORY_COLUMNS = (
    "request_id",
    "at",
    "actor_label",
    "action",
    "field",
    "old_value",
    "new_value",
    "note",
)
NOTIFICATION_COLUMNS = (
    "request_id",
    "recipient",
    "kind",
    "language",
    "subject",
    "body_text",
    "created_at",
    "next_attempt_at",
)


def _history_row(due, now, field, old, new, note) -> tuple:
    action = HistoryEntry.Action.SLA if field == "escalation" else HistoryEntry.Action.FIELD
    return (due.pk, now, "SLA", action, field, str(old), str(new), note)


def _insert(model, columns, rows) -> list[int]:
    """INSERT rows given as tuples of `columns`, with the model's defaults for the rest.

    On PostgreSQL the rows go through COPY: a sweep writes thousands of them, and building
    model instances for bulk_create cost more than everything else the sweep does.
    """
    if not rows:
        return []
    if connection.vendor != "postgresql":
        created = model.objects.bulk_create(
            model(**dict(zip(columns, row, strict=True))) for row in rows
        )
        return [obj.pk for obj in created]
    rest = [
        f for f in model._meta.concrete_fields if not f.primary_key and f.attname not in columns
    ]
    defaults = tuple(f.get_db_prep_save(f.get_default(), connection) for f in rest)
    table = model._meta.db_table
    names = ", ".join(
        connection.ops.quote_name(c) for c in ("id", *columns, *(f.column for f in rest))
    )
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
            [table, len(rows)],
        )
        ids = [row[0] for row in cursor.fetchall()]
        with cursor.cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
            for pk, row in zip(ids, rows, strict=True):
                copy.write_row((pk, *row, *defaults))
    return ids


def _move(due, level, targets) -> tuple:
    """The row's new values: one rung up, its priority, and the schedule that follows."""
    fields = schedule(due, targets)
    return (
        due.pk,
        level,
        due.escalation_level,
        due.priority,
        fields["due_at"],
        fields["at_risk_at"],
        fields["acknowledge_due_at"],
        fields["next_escalation_at"],
    )


def _apply_moves(moves) -> list[int]:
    """Write every move in one statement; returns the pks whose rung was still `level`.

    The condition on escalation_level is the claim: a rung another sweep has taken in
    the meantime (possible on SQLite, which does not lock rows) is not taken again.
    """
    table = ServiceRequest._meta.db_table
    now = timezone.now()
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            # Kept for the connection's life and emptied at commit: no catalog churn.
            cursor.execute(
                "CREATE TEMPORARY TABLE IF NOT EXISTS sla_moves (id bigint, level int, "
                "new_level int, priority int, due_at timestamptz, at_risk_at timestamptz, "
                "acknowledge_due_at timestamptz, next_escalation_at timestamptz) "
                "ON COMMIT DELETE ROWS"
            )
            cursor.execute("DELETE FROM sla_moves")
            with cursor.cursor.copy("COPY sla_moves FROM STDIN") as copy:
                for move in moves:
                    copy.write_row(move)
            cursor.execute(
                f"UPDATE {table} AS r SET escalation_level = m.new_level, priority = m.priority, "
                "due_at = m.due_at, at_risk_at = m.at_risk_at, "
                "acknowledge_due_at = m.acknowledge_due_at, "
                "next_escalation_at = m.next_escalation_at, updated_at = %s "
                "FROM sla_moves AS m WHERE r.id = m.id AND r.escalation_level = m.level "
                "RETURNING r.id",
                [now],
            )
            return [row[0] for row in cursor.fetchall()]
    claimed = []
    with connection.cursor() as cursor:
        for pk, level, new_level, priority, due_at, at_risk, acknowledge, next_at in moves:
            cursor.execute(
                f"UPDATE {table} SET escalation_level = %s, priority = %s, due_at = %s, "
                "at_risk_at = %s, acknowledge_due_at = %s, next_escalation_at = %s, "
                "updated_at = %s WHERE id = %s AND escalation_level = %s",
                [new_level, priority, due_at, at_risk, acknowledge, next_at, now, pk, level],
            )
            if cursor.rowcount:
                claimed.append(pk)
    return claimed


class _Recipients:
    """Who hears of each rung, for a whole batch with a constant number of queries."""

    def __init__(self, requests):
        self._directors = None
        crew_ids = {r.crew_id for r in requests if r.crew_id}
        assignee_ids = {r.assignee_id for r in requests if r.assignee_id}
        self._assignees = dict(
            get_user_model()
            .objects.filter(pk__in=assignee_ids)
            .exclude(email="")
            .values_list("pk", "email")
        )
        self._crew_members = {}
        if crew_ids:
            for crew_id, email in (
                get_user_model()
                .objects.filter(crews__in=crew_ids)
                .exclude(email="")
                .values_list("crews", "email")
            ):
                self._crew_members.setdefault(crew_id, []).append(email)

    def directors(self) -> list[str]:
        if self._directors is None:
            self._directors = list(
                get_user_model()
                .objects.filter(staff_profile__role=StaffRole.DIRECTOR, is_active=True)
                .exclude(email="")
                .values_list("email", flat=True)
            )
        return self._directors

    def for_step(self, request, notify) -> list[str]:
        if notify == EscalationStep.Notify.DIRECTOR:
            return self.directors()
        department = request.department
        fallback = [department.email] if department and department.email else []
        if notify == EscalationStep.Notify.SUPERVISOR:
            supervisor = department.supervisor if department else None
            return [supervisor.email] if supervisor and supervisor.email else fallback
        if request.assignee_id in self._assignees:
            return [self._assignees[request.assignee_id]]
        return self._crew_members.get(request.crew_id) or fallback


class _Wording:
    """The sweep's texts, translated once per batch rather than once per row."""

    def __init__(self):
        self.note = _("%(share)s of the resolve time has passed (due %(due)s)")
        self.overdue = _("Overdue: %(number)s %(category)s")
        self.at_risk = _("At risk: %(number)s %(category)s")


def _staff_notification(request, recipient, wording, *, overdue, note, now) -> tuple:
    """A row of NOTIFICATION_COLUMNS: the staff email for one rung."""
    link = f"{settings.SITE_URL}/admin/requests_app/servicerequest/{request.pk}/change/"
    subject = (wording.overdue if overdue else wording.at_risk) % {
        "number": request.tracking_number,
        "category": request.category,
    }
    body = "\n".join([subject, "", note, request.address, "", link])
    return (request.pk, recipient, "sla", "en", subject, body, now, now)
