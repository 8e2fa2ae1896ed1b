"""Service-level clocks: deadlines in wall-clock or business time, pauses, escalations.

Times are computed, never ticked: a request stores its deadlines, its EscalationClock the
rung it has reached and the moment of the next (an indexed column), and the periodic
sweep only looks at clocks whose moment has come. Each step is claimed by locking the
clock and moving it up with an UPDATE conditional on its level, so two sweeps at once —
or one run twice — take every step exactly once.
"""

import json
import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import connection, models, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from .models import (
    OPEN_STATUSES,
    Department,
    EscalationClock,
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


def is_running(request) -> bool:
    """Whether the request's escalation clock runs: open, and not waiting for the resident."""
    return request.status in OPEN_STATUSES and request.sla_paused_at is None


def schedule(request, targets=None) -> dict:
    """The deadlines `request` should have now, as a dict ready for an UPDATE."""
    targets = targets or targets_for(request.category, request.priority)
    clock, start = targets.clock, request.created_at
    paused = request.sla_paused_seconds
    return {
        "due_at": _point(request, targets, 1),
        "at_risk_at": _point(request, targets, AT_RISK_SHARE),
        "acknowledge_due_at": (
            clock.add(start, targets.acknowledge + paused) if targets.acknowledge else None
        ),
    }


def step_at(request, level, targets=None) -> datetime | None:
    """When rung `level` of the request's ladder comes due; None while the clock is stopped
    or once the ladder is climbed."""
    targets = targets or targets_for(request.category, request.priority)
    if not is_running(request) or level >= len(targets.ladder):
        return None
    return _point(request, targets, targets.ladder[level][0])


def _point(request, targets, share) -> datetime:
    """The moment `share` of the resolve time has passed, pauses left out."""
    seconds = float(share) * targets.resolve + request.sla_paused_seconds
    return targets.clock.add(request.created_at, seconds)


def clock_set(request, *, level=None) -> EscalationClock:
    """Stop, restart or move the request's clock after its status, priority or category
    changed (or put it at `level`, for requests brought in with a past).

    The clock row is locked first, so a sweep taking a rung at this moment finishes
    before the next rung is worked out from the level it leaves.
    """
    with transaction.atomic():
        clock = EscalationClock.objects.select_for_update().filter(request=request).first()
        clock = clock or EscalationClock(request=request)
        if level is not None:
            clock.level = level
        clock.next_at = step_at(request, clock.level)
        clock.save()
    return clock


def on_status_change(request, old_status, new_status, now) -> dict:
    """Pause the clock while we wait for the resident; resume and reschedule after.

    Returns the request's changed fields; the caller moves the escalation clock
    (clock_set) once they are saved.
    """
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

    Work is done a batch at a time and in sets: one SELECT locks the batch's clocks and
    requests, one UPDATE moves the clocks up a rung, another raises the priority of the
    few requests whose rung says so, and the history entries and staff emails are
    inserted in bulk. The cost follows the number of steps due, not the table, and a
    rung rewrites the narrow clock row rather than the wide request.
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
    level: int
    category: object
    priority: int
    created_at: datetime
    sla_paused_seconds: int
    sla_paused_at: datetime | None
    status: str
    due_at: datetime
    tracking_number: str
    address: str
    department: object
    crew_id: int | None
    assignee_id: int | None


_DUE_FIELDS = (
    "request_id",
    "level",
    "request__category_id",
    "request__priority",
    "request__created_at",
    "request__sla_paused_seconds",
    "request__sla_paused_at",
    "request__status",
    "request__due_at",
    "request__tracking_number",
    "request__address",
    "request__department_id",
    "request__crew_id",
    "request__assignee_id",
)


def _lock_due(now, batch) -> list[_Due]:
    # SKIP LOCKED lets a second sweep take the rungs the first has not locked instead of
    # waiting for it; SQLite has no row locks and serialises writers instead. The request
    # rows are locked too (NO KEY UPDATE: inserts referring to them go on) so that a
    # status or priority change waits for the rung, or the rung for the next sweep.
    due = EscalationClock.objects.filter(next_at__lte=now).order_by("next_at")
    due = due.values_list(*_DUE_FIELDS)[:batch]
    if connection.vendor == "postgresql":
        # select_for_update(of=...) cannot name a relation that values_list() joins.
        sql, params = due.query.sql_with_params()
        tables = (EscalationClock._meta.db_table, ServiceRequest._meta.db_table)
        with connection.cursor() as cursor:
            cursor.execute(f"{sql} FOR NO KEY UPDATE OF {', '.join(tables)} SKIP LOCKED", params)
            rows = cursor.fetchall()
    else:
        rows = list(due)
    categories = ServiceCategory.objects.select_related("sla_policy__calendar").in_bulk(
        {row[2] for row in rows}
    )
    departments = Department.objects.select_related("supervisor").in_bulk(
        {row[11] for row in rows if row[11]}
    )
    return [
        _Due(
            pk,
            level,
            categories[category_id],
            *values,
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
            *values,
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
        moves, raises, effects = [], [], {}
        for due in found:
            ladder = targets.get_for(due).ladder
            level = due.level
            if level >= len(ladder) or not is_running(due):
                # The ladder got shorter, or the request stopped some way the clock missed.
                moves.append((due.pk, level, level, None))
                continue
            share, notify, raise_priority = ladder[level]
            old_priority = due.priority
            if raise_priority and due.priority < Priority.URGENT:
                due.priority += 1
                raises.append((due.pk, due.priority, *schedule(due, targets.get_for(due)).values()))
            moves.append((due.pk, level, level + 1, step_at(due, level + 1, targets.get_for(due))))
            effects[due.pk] = (due, share, notify, old_priority)
        claimed = set(_move_clocks(moves))
        taken = [effect for pk, effect in effects.items() if pk in claimed]
        _raise_priorities([r for r in raises if r[0] in claimed], now)
        recipients = _Recipients([due for due, *_rest in taken])
        zone = timezone.get_current_timezone()
        history, notifications = [], []
        for due, share, notify, old_priority in taken:
            note = wording.note % {
                "share": f"{share:g}×",
                "due": f"{due.due_at.astimezone(zone):%Y-%m-%d %H:%M}",
            }
            history.append(_history_row(due, now, "escalation", due.level, due.level + 1, note))
            if due.priority != old_priority:
                history.append(_history_row(due, now, "priority", old_priority, due.priority, note))
            notifications.extend(
                _staff_notification(due, recipient, wording, overdue=share >= 1, note=note, now=now)
                for recipient in recipients.for_step(due, notify)
            )
        _insert(HistoryEntry, HISTORY_COLUMNS, history)
        created = _insert(Notification, NOTIFICATION_COLUMNS, notifications, ids=True)
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


def _insert(model, columns, rows, *, ids=False) -> list[int]:
    """INSERT rows given as tuples of `columns`, with the model's defaults for the rest;
    returns the new primary keys when `ids` is asked for.

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
    # COPY reads text: JSON defaults are written as their text once, not dumped per row.
    defaults = tuple(
        json.dumps(f.get_default())
        if isinstance(f, models.JSONField)
        else f.get_db_prep_save(f.get_default(), connection)
        for f in rest
    )
    table = model._meta.db_table
    names = [*columns, *(f.column for f in rest)]
    with connection.cursor() as cursor:
        keys = []
        if ids:
            # COPY cannot say which keys it gave, so they are taken from the sequence first.
            cursor.execute(
                "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
                [table, len(rows)],
            )
            keys = [row[0] for row in cursor.fetchall()]
            names.insert(0, "id")
            rows = [(pk, *row) for pk, row in zip(keys, rows, strict=True)]
        quoted = ", ".join(connection.ops.quote_name(name) for name in names)
        with cursor.cursor.copy(f"COPY {table} ({quoted}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row((*row, *defaults))
    return keys


def _move_clocks(moves) -> list[int]:
    """Write every (request, level, new level, next rung's time) at once; returns the
    requests whose clock was still at `level`.

    The condition on the level is the claim: a rung another sweep has taken in the
    meantime (possible on SQLite, which does not lock rows) is not taken again.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {EscalationClock._meta.db_table} AS c "
                "SET level = m.new_level, next_at = m.next_at "
                "FROM unnest(%s::bigint[], %s::int[], %s::int[], %s::timestamptz[]) "
                "AS m(request_id, level, new_level, next_at) "
                "WHERE c.request_id = m.request_id AND c.level = m.level "
                "RETURNING c.request_id",
                [_array(column) for column in zip(*moves, strict=True)],
            )
            return [row[0] for row in cursor.fetchall()]
    return [
        pk
        for pk, level, new_level, next_at in moves
        if EscalationClock.objects.filter(request_id=pk, level=level).update(
            level=new_level, next_at=next_at
        )
    ]


def _array(values) -> str:
    """A PostgreSQL array literal of numbers and moments (None as NULL).

    psycopg adapts a Python list element by element, which cost the sweep more than the
    statement the list was for; numbers and ISO times need no quoting in a literal.
    """
    return (
        "{"
        + ",".join(
            "NULL" if v is None else v.isoformat() if isinstance(v, datetime) else str(v)
            for v in values
        )
        + "}"
    )


def _raise_priorities(raises, now):
    """The rungs that raise priority: the request's new priority and the deadlines that
    follow from it, given as (request, priority, due_at, at_risk_at, acknowledge_due_at)."""
    if not raises:
        return
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {ServiceRequest._meta.db_table} AS r SET priority = m.priority, "
                "due_at = m.due_at, at_risk_at = m.at_risk_at, "
                "acknowledge_due_at = m.acknowledge_due_at, updated_at = %s "
                "FROM unnest(%s::bigint[], %s::int[], %s::timestamptz[], %s::timestamptz[], "
                "%s::timestamptz[]) AS m(id, priority, due_at, at_risk_at, acknowledge_due_at) "
                "WHERE r.id = m.id",
                [now, *(_array(column) for column in zip(*raises, strict=True))],
            )
        return
    for pk, priority, due_at, at_risk_at, acknowledge_due_at in raises:
        ServiceRequest.objects.filter(pk=pk).update(
            priority=priority,
            due_at=due_at,
            at_risk_at=at_risk_at,
            acknowledge_due_at=acknowledge_due_at,
            updated_at=now,
        )


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
