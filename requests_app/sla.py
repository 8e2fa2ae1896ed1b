"""Service-level clocks: deadlines in wall-clock or business time, pauses, escalations.

Times are computed, never ticked: a request stores its deadlines, its EscalationClock the
rung it has reached and the moment of the next (an indexed column), and the periodic
sweep only looks at clocks whose moment has come. Each step is claimed by locking the
clock and moving it up with an UPDATE conditional on its level, so two sweeps at once —
or one run twice — take every step exactly once.
"""

import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from itertools import groupby
from typing import NamedTuple
from zoneinfo import ZoneInfo

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import connection, models, transaction
from django.db.models.expressions import RawSQL
from django.db.models.functions import Cast
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop, ngettext

from notifications.models import Notification

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

    Work is done a batch at a time and in sets: one SELECT locks the batch's clocks,
    Python works out when each next rung comes and who hears of this one, and one
    statement takes the rungs — moves the clocks up, writes the history, queues the staff
    emails (written later, by the task that sends them) and raises the priority of the
    few requests whose rung says so. The cost follows the number of steps due, not the
    table, and a rung rewrites the narrow clock row rather than the wide request.
    """
    now = now or timezone.now()
    taken = 0
    while True:
        steps, more = _sweep_batch(now, batch)
        taken += steps
        if not more:
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
    department: object
    crew_id: int | None
    assignee_id: int | None
    due_at: str  # as text: see _DUE_FIELDS
    # Where the locked clock and request rows are (PostgreSQL's ctid, as text), for the
    # statement taking the rung to go straight to them; None on SQLite.
    clock_row: str | None = None
    request_row: str | None = None


_DUE_FIELDS = (
    "request_id",
    "level",
    "request__category_id",
    "request__priority",
    "request__created_at",
    "request__sla_paused_seconds",
    "request__sla_paused_at",
    "request__status",
    "request__department_id",
    "request__crew_id",
    "request__assignee_id",
    # The deadline only goes back into the database (the history note, the email's
    # context), so it is read as text: Django's loader for moments is Python code, and
    # it cost more than the rest of the row.
    Cast("request__due_at", models.TextField()),
)
# For the same reason, PostgreSQL sends the creation time as text too, for
# datetime.fromisoformat (SQLite's text has no time zone: it is left to Django).
_DUE_FIELDS_POSTGRESQL = tuple(
    Cast(field, models.TextField()) if field == "request__created_at" else field
    for field in _DUE_FIELDS
)


def _lock_due(now, batch) -> list[_Due]:
    # SKIP LOCKED lets a second sweep take the rungs the first has not locked instead of
    # waiting for it; SQLite has no row locks and serialises writers instead.
    #
    # The request rows are locked along with the clocks, although a rung only reads them
    # (but for a priority raise). Locking the clock alone would not do: a status or
    # priority change that commits between this statement's snapshot and its lock on the
    # clock hands over the clock as clock_set left it, while the request read with it
    # would still be the one from before the change, and the next rung would be scheduled
    # from a priority or status the request no longer has. Locking the request too makes
    # PostgreSQL read both afresh. It costs little: inserting the history entries locks
    # the same rows anyway (the foreign-key check), and NO KEY UPDATE lets those inserts —
    # and everyone else's — go on.
    due = EscalationClock.objects.filter(next_at__lte=now).order_by("next_at")
    if connection.vendor == "postgresql":
        # A locked row stays where it is until this transaction moves it, so _take finds
        # it by its ctid rather than looking its key up in an index again.
        tables = (EscalationClock._meta.db_table, ServiceRequest._meta.db_table)
        ctids = {f"{table}_row": RawSQL(f"{table}.ctid::text", ()) for table in tables}
        due = due.annotate(**ctids).values_list(*_DUE_FIELDS_POSTGRESQL, *ctids)[:batch]
        # select_for_update(of=...) cannot name a relation that values_list() joins.
        sql, params = due.query.sql_with_params()
        with connection.cursor() as cursor:
            cursor.execute(f"{sql} FOR NO KEY UPDATE OF {', '.join(tables)} SKIP LOCKED", params)
            rows = cursor.fetchall()
    else:
        rows = [(*row, None, None) for row in due.values_list(*_DUE_FIELDS)[:batch]]
    categories = ServiceCategory.objects.select_related("sla_policy__calendar").in_bulk(
        {row[2] for row in rows}
    )
    departments = Department.objects.select_related("supervisor").in_bulk(
        {row[8] for row in rows if row[8]}
    )
    return [
        _Due(
            pk,
            level,
            categories[category_id],
            priority,
            created_at if isinstance(created_at, datetime) else datetime.fromisoformat(created_at),
            *values,
            departments.get(department_id),
            crew_id,
            assignee_id,
            due_at,
            clock_row,
            request_row,
        )
        for (
            pk,
            level,
            category_id,
            priority,
            created_at,
            *values,
            department_id,
            crew_id,
            assignee_id,
            due_at,
            clock_row,
            request_row,
        ) in rows
    ]


class _TargetsCache(dict):
    """targets_for() per (category, priority), computed once per batch."""

    def get_for(self, due):
        key = (due.category.pk, due.priority)
        if key not in self:
            self[key] = targets_for(due.category, due.priority)
        return self[key]


class _Move(NamedTuple):
    """A clock to move from `level` to `new_level`: a rung taken, or (same level, no next
    time) a clock stopped that should not have been running."""

    request_id: int
    row: str | None  # the clock's ctid (see _Due)
    level: int
    new_level: int
    next_at: datetime | None
    # Set when a rung is taken: the share of the resolve time and the deadline it is
    # measured against, for the texts; the priorities, when the rung raises it.
    share: str | None = None
    due_at: str | None = None
    old_priority: int | None = None
    new_priority: int | None = None


def _sweep_batch(now, batch) -> tuple[int, bool]:
    """Take the rungs of up to `batch` due clocks; returns the number taken and whether
    more clocks may be due."""
    from civicdesk.celery import enqueue_on_commit
    from notifications.tasks import send_notification_batch

    with transaction.atomic():
        found = _lock_due(now, batch)
        if not found:
            return 0, False
        # In the order of the requests' ids, which is about that of their rows and index
        # entries: the writes, and the foreign-key checks at commit, then go through the
        # pages in order rather than back and forth (~1 ms of PostgreSQL's time at 1M).
        found.sort(key=lambda due: due.pk)
        targets = _TargetsCache()
        recipients = _Recipients(found)
        moves, raises, emails = [], [], []
        for due in found:
            move, notify = _rung(due, targets)
            moves.append(move)
            if move.new_priority is not None:
                raises.append(
                    (
                        due.pk,
                        due.request_row,
                        due.priority,
                        *schedule(due, targets.get_for(due)).values(),
                    )
                )
            if notify:
                emails.extend((due.pk, email) for email in recipients.for_step(due, notify))
        # A full batch may have left due clocks behind; the statement taking it tells.
        full = len(found) == batch
        taken, queued, more = _take(moves, raises, emails, now, batch if full else None)
        if queued:
            enqueue_on_commit(send_notification_batch, queued)
    return len(taken), more


def _rung(due, targets) -> tuple[_Move, str | None]:
    """How `due`'s clock moves, and who hears of it (None when the clock just stops)."""
    ladder, level = targets.get_for(due).ladder, due.level
    if level >= len(ladder) or not is_running(due):
        # The ladder got shorter, or the request stopped some way the clock missed.
        return _Move(due.pk, due.clock_row, level, level, None), None
    share, notify, raise_priority = ladder[level]
    old_priority = due.priority
    if raise_priority and due.priority < Priority.URGENT:
        due.priority += 1  # the next rungs are timed by the new priority's targets
    raised = due.priority != old_priority
    move = _Move(
        due.pk,
        due.clock_row,
        level,
        level + 1,
        step_at(due, level + 1, targets.get_for(due)),
        f"{share:g}",
        due.due_at,
        old_priority if raised else None,
        due.priority if raised else None,
    )
    return move, notify


def _take(moves, raises, emails, now, more_than=None) -> tuple[list[int], list[int], bool]:
    """Move the clocks and, for each rung taken, write its history entries, queue its
    emails (given as (request, address)) and raise the priority where `raises` says so
    (as (request, its row, priority, due_at, at_risk_at, acknowledge_due_at)).

    The claim is the condition on the level: a rung whose clock has moved since it was
    read (by another sweep: possible on SQLite, which does not lock rows) is not taken
    again, nor are its effects. Returns the requests whose rung was taken, the new
    notifications, and whether more than `more_than` clocks were due (None: don't ask).

    On PostgreSQL this is one statement: the rows to write go in as arrays, the history
    notes are put together by the database (the note's template is a translated Python
    format: its two fields are replaced), and the emails are stored unwritten — the
    task that sends them writes them (step_email) from the share and the deadline the
    rung was taken against.
    """
    if connection.vendor != "postgresql":
        return (*_take_one_by_one(moves, raises, emails, now), more_than is not None)
    history = _insert_into(
        HistoryEntry,
        ("request_id", "at", "actor_label", "action", "field", "old_value", "new_value", "note"),
    )
    email = _insert_into(
        Notification,
        (
            "request_id",
            "recipient",
            "kind",
            "language",
            "render_context",
            "created_at",
            "next_attempt_at",
        ),
    )
    sql = f"""
        WITH moved AS (
            UPDATE {EscalationClock._meta.db_table} AS c
            SET level = m.new_level, next_at = m.next_at
            FROM unnest(%s::bigint[], %s::tid[], %s::int[], %s::int[], %s::timestamptz[],
                        %s::text[], %s::timestamptz[], %s::int[], %s::int[])
                AS m(request_id, row, level, new_level, next_at, share, due_at, old_priority,
                     new_priority)
            -- The row is where the clock was locked; the key makes sure it is that clock.
            WHERE c.ctid = m.row AND c.request_id = m.request_id AND c.level = m.level
            RETURNING m.*
        ), taken AS (
            SELECT *, replace(replace(%s, '%%(share)s', share || '×'), '%%(due)s', coalesce(
                to_char(due_at AT TIME ZONE %s, 'YYYY-MM-DD HH24:MI'), '')) AS note
            FROM moved
            WHERE new_level > level
        ), recorded AS (
            {history.sql}
            SELECT request_id, %s, 'SLA', action, field, old_value, new_value, note, {history.rest}
            FROM (
                SELECT request_id, %s AS action, 'escalation' AS field, level::text AS old_value,
                    new_level::text AS new_value, note
                FROM taken
                UNION ALL
                SELECT request_id, %s, 'priority', old_priority::text, new_priority::text, note
                FROM taken WHERE new_priority IS NOT NULL
            ) AS entry
        ), queued AS (
            -- One email per recipient for the batch (see queued_steps).
            {email.sql}
            SELECT CASE WHEN count(*) = 1 THEN min(request_id) END, e.recipient, %s, %s,
                jsonb_build_object('steps', jsonb_agg(jsonb_build_object(
                    'request', request_id, 'share', share, 'due_at', due_at
                ) ORDER BY request_id)),
                %s, %s, {email.rest}
            FROM unnest(%s::bigint[], %s::text[]) AS e(request_id, recipient)
            JOIN taken USING (request_id)
            GROUP BY e.recipient
            RETURNING id
        ), raised AS (
            UPDATE {ServiceRequest._meta.db_table} AS r
            SET priority = p.priority, due_at = p.due_at, at_risk_at = p.at_risk_at,
                acknowledge_due_at = p.acknowledge_due_at, updated_at = %s
            FROM (
                SELECT *
                FROM unnest(%s::bigint[], %s::tid[], %s::int[], %s::timestamptz[],
                            %s::timestamptz[], %s::timestamptz[])
                    AS p(request_id, row, priority, due_at, at_risk_at, acknowledge_due_at)
                WHERE request_id IN (SELECT request_id FROM taken)
                -- Not merged into the outer query, so the few raised requests are looked
                -- up rather than every taken one.
                OFFSET 0
            ) AS p
            WHERE r.ctid = p.row AND r.id = p.request_id
        )
        SELECT ARRAY(SELECT request_id FROM taken), ARRAY(SELECT id FROM queued),
            -- Seen as they were before this statement, so the batch's own clocks count:
            -- due clocks past them mean another batch. Asking here saves a SELECT that,
            -- when there are none, walks the index entries of the clocks just moved.
            %s::int IS NOT NULL AND EXISTS (
                SELECT FROM {EscalationClock._meta.db_table} WHERE next_at <= %s OFFSET %s
            )
    """
    params = [
        *_arrays(moves, len(_Move._fields)),
        _(STEP_NOTE),
        timezone.get_current_timezone_name(),
        now,
        *history.params,
        HistoryEntry.Action.SLA,
        HistoryEntry.Action.FIELD,
        Notification.Kind.SLA,
        settings.LANGUAGE_CODE,
        now,
        now,
        *email.params,
        *_arrays(emails, 2),
        now,
        *_arrays(raises, 6),
        more_than,
        now,
        more_than or 0,
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()


def _take_one_by_one(moves, raises, emails, now) -> tuple[list[int], list[int]]:
    """_take for SQLite: a conditional UPDATE per clock, then the rest in bulk."""
    claimed = {
        move.request_id: move
        for move in moves
        if EscalationClock.objects.filter(request_id=move.request_id, level=move.level).update(
            level=move.new_level, next_at=move.next_at
        )
    }
    taken = {pk: move for pk, move in claimed.items() if move.new_level > move.level}
    due_at = dict(ServiceRequest.objects.filter(pk__in=taken).values_list("pk", "due_at"))
    entries = []
    for pk, move in taken.items():
        note = _step_note(move.share, due_at[pk])
        step = {"request_id": pk, "at": now, "actor_label": "SLA", "note": note}
        entries.append(
            HistoryEntry(
                **step,
                action=HistoryEntry.Action.SLA,
                field="escalation",
                old_value=str(move.level),
                new_value=str(move.new_level),
            )
        )
        if move.new_priority is not None:
            entries.append(
                HistoryEntry(
                    **step,
                    action=HistoryEntry.Action.FIELD,
                    field="priority",
                    old_value=str(move.old_priority),
                    new_value=str(move.new_priority),
                )
            )
    HistoryEntry.objects.bulk_create(entries)
    steps_by_recipient = {}
    for pk, recipient in emails:
        if pk in taken:
            steps_by_recipient.setdefault(recipient, []).append(
                {
                    "request": pk,
                    "share": taken[pk].share,
                    "due_at": due_at[pk].isoformat() if due_at[pk] else None,
                }
            )
    queued = Notification.objects.bulk_create(
        Notification(
            request_id=steps[0]["request"] if len(steps) == 1 else None,
            recipient=recipient,
            kind=Notification.Kind.SLA,
            language=settings.LANGUAGE_CODE,
            render_context={"steps": sorted(steps, key=lambda step: step["request"])},
            created_at=now,
            next_attempt_at=now,
        )
        for recipient, steps in steps_by_recipient.items()
    )
    for pk, _row, priority, due, at_risk_at, acknowledge_due_at in raises:
        if pk in taken:
            ServiceRequest.objects.filter(pk=pk).update(
                priority=priority,
                due_at=due,
                at_risk_at=at_risk_at,
                acknowledge_due_at=acknowledge_due_at,
                updated_at=now,
            )
    return list(taken), [n.pk for n in queued]


@dataclass
class _Insert:
    sql: str  # INSERT INTO table (columns)
    rest: str  # the values of the columns not given, as SQL
    params: list  # and their parameters


def _insert_into(model, given) -> _Insert:
    """The start of an INSERT … SELECT of the `given` columns into `model`'s table, the
    other columns taking their field's default: the tables have no defaults of their
    own, and naming every column here would break when a field is added."""
    rest = [f for f in model._meta.concrete_fields if not f.primary_key and f.column not in given]
    columns = ", ".join(connection.ops.quote_name(c) for c in (*given, *(f.column for f in rest)))
    return _Insert(
        f"INSERT INTO {model._meta.db_table} ({columns})",
        ", ".join(f"%s::{f.db_type(connection)}" for f in rest),
        [f.get_db_prep_save(f.get_default(), connection) for f in rest],
    )


def _arrays(rows, width) -> list[str]:
    """The columns of `rows` (tuples of `width` values) as PostgreSQL array literals.

    psycopg adapts a Python list element by element, which cost the sweep more than the
    statement the list was for; numbers and ISO times need no quoting in a literal.
    """
    columns = zip(*rows, strict=True) if rows else [()] * width
    return ["{" + _array_body(column) + "}" for column in columns]


def _array_body(column) -> str:
    # Each run of values of one type is converted in one go: a column holding one type is
    # a single run, a mixed one (times or priorities among NULLs) a few.
    return ",".join(_array_elements(list(run), kind) for kind, run in groupby(column, key=type))


def _array_elements(values, kind) -> str:
    """`values`, all of type `kind`, as elements of a PostgreSQL array literal.

    They are converted together, without looking at each value's type: a column holds a
    thousand values, and converting them one by one was a good part of the client's time.
    """
    if kind is type(None):
        return ",".join(["NULL"] * len(values))
    if issubclass(kind, datetime):
        return ",".join(map(datetime.isoformat, values))
    if issubclass(kind, str):
        # Quoted all at once; NUL cannot occur in PostgreSQL text, so it can part them.
        text = "\0".join(values).replace("\\", "\\\\").replace('"', '\\"')
        return '"' + text.replace("\0", '","') + '"'
    return ",".join(map(str, values))


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


# A rung's line in the history and in the staff email; _take fills it in SQL too.
STEP_NOTE = gettext_noop("%(share)s of the resolve time has passed (due %(due)s)")


def _step_note(share, due: datetime | None) -> str:
    due = due.astimezone(timezone.get_current_timezone()) if due else None
    return _(STEP_NOTE) % {"share": f"{share}×", "due": f"{due:%Y-%m-%d %H:%M}" if due else ""}


def queued_steps(notification) -> list[dict]:
    """The rungs a queued SLA email tells of, as {request, share, due_at}.

    A sweep queues one email per recipient for all the rungs it took: after an outage,
    or on a Monday morning, a supervisor gets one email listing forty requests rather
    than forty emails. (Emails queued before that held one rung, without "steps".)
    """
    later = notification.render_context
    if "steps" in later:
        return later["steps"]
    return [
        {"request": notification.request_id, "share": later["share"], "due_at": later["due_at"]}
    ]


def steps_email(notification) -> tuple[str, str] | None:
    """Subject and text of a queued SLA email, as the task sending it writes it; None when
    every request it listed has been deleted since, and it has nothing left to tell."""
    steps = queued_steps(notification)
    requests = ServiceRequest.objects.select_related("category").in_bulk(
        [step["request"] for step in steps]
    )
    # A request deleted since (a spam report) is left out of the list.
    steps = [step for step in steps if step["request"] in requests]
    if not steps:
        return None
    parts = [
        step_email(requests[step["request"]], share=step["share"], due_at=step["due_at"])
        for step in steps
    ]
    if len(parts) == 1:
        return parts[0]
    overdue = sum(Decimal(step["share"]) >= 1 for step in steps)
    subject = ngettext(
        "%(count)d request needs attention (%(overdue)d overdue)",
        "%(count)d requests need attention (%(overdue)d overdue)",
        len(parts),
    ) % {"count": len(parts), "overdue": overdue}
    return subject, "\n\n\n".join([subject, *(text for _subject, text in parts)])


def step_email(request, *, share: str, due_at: str | None) -> tuple[str, str]:
    """Subject and text of the staff email for a rung at `share` of the resolve time
    (due at `due_at`, ISO); see _take."""
    due = datetime.fromisoformat(due_at) if due_at else None
    note = _step_note(share, due)
    subject = (
        _("Overdue: %(number)s %(category)s")
        if Decimal(share) >= 1
        else _("At risk: %(number)s %(category)s")
    ) % {"number": request.tracking_number, "category": request.category}
    link = f"{settings.SITE_URL}/admin/requests_app/servicerequest/{request.pk}/change/"
    return subject, "\n".join([subject, "", note, request.address, "", link])
