"""Rollups behind the director's dashboard: figures per day, at most a minute stale.

At a million requests, computing the dashboard from the requests scans most of the table
for every page view (1.9 s for the KPIs at 1M; bench/dashboard.py). The dashboard reads
these tables instead, kept by `rollups_refresh`, which a Celery beat task runs every minute:

- RequestFact: one narrow row per request holding what the rollups counted for it: its
  dimensions, the days of its events (received, first response, completion, end, survey
  answer), its durations, flags and share of its work order's cost. It makes the refresh
  incremental and idempotent: for each request changed since the last run, its old fact is
  subtracted from the rollups and its new one added; a request whose fact did not change
  adds nothing, so running twice, or over overlapping windows, changes nothing.
- DayRollup: counts and sums per local day and *grain*: all requests; one dimension
  (department, category, district, channel, crew); or "fine", the four filter dimensions
  together, used when two or more filters are combined. Medians are read from a histogram
  of durations kept per row in log-spaced buckets 5 % wide: see `histogram_median` (within
  ±5 % of the exact median, usually much closer).
- CellRollup: the heat map's squares at GRID_ZOOM (about 1.8 km), per day, for all
  requests and per single dimension, with coarse buckets of resolution time for the
  squares' medians (±19 %). Coarser zooms add squares up; finer zooms and combined filters
  count RequestFact rows, through a covering index ordered by square.

What no grain holds is counted among the facts: a crew breakdown under filters, the
hotspots, the details of a square.

Open backlog needs no table of its own: a request adds one on the day it is received and
takes one away on the day it ends (see `ended_day`), so the backlog at the start of a day
is the sum of both before it.

Days are local days in settings.TIME_ZONE, like the dashboard's periods. Each refresh runs
in one transaction: readers see the figures of one refresh or the next, never a mix.
"""

import json
import logging
import math
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from itertools import islice

from django.conf import settings
from django.db import connection, models, transaction
from django.db.models import F, Q, Sum
from django.utils import timezone

from .models import OPEN_STATUSES, Channel, ServiceRequest, Status, WorkOrder

__all__ = ["CellRollup", "DayRollup", "RequestFact", "RollupState"]

logger = logging.getLogger(__name__)

# The heat map's base zoom; a square is 360 / 2**zoom * 48 / 256 degrees (dashboard.cell_size).
GRID_ZOOM = 12
GRID_SIZE = 360.0 / 2**GRID_ZOOM * 48 / 256
# Duration histograms: bucket 0 holds anything under a minute, bucket b ≥ 1 holds
# [60·r^(b-1), 60·r^b) seconds, the last one everything from ~11 years on.
BUCKET_RATIO = 1.05
BUCKET_FLOOR = 60.0
BUCKETS = 320
_LOG_RATIO = math.log(BUCKET_RATIO)
# The heat map's squares keep coarser buckets, as plain count columns r0..r31 that add up
# like the others: r0 under an hour, then √2 wide. Enough to colour a square by its median
# (within ±19 %), and no per-square histogram to merge.
CELL_BUCKETS = 32
CELL_BUCKET_FLOOR = 3600.0
CELL_BUCKET_RATIO = math.sqrt(2)
SELF_SERVICE_CHANNELS = (Channel.WEB, Channel.API)
# Rows whose updated_at lies this far before the last run are looked at again: clocks of
# web and worker machines differ by that much at most (see `_next_watermark`).
CLOCK_SKEW = timedelta(seconds=10)
LOCK_KEY = 7_311_001  # pg_try_advisory_xact_lock: one refresh at a time
CHUNK = 500
_PLACES = Decimal("0.0001")


class Grain(models.TextChoices):
    ALL = "all"
    DEPARTMENT = "department"
    CATEGORY = "category"
    DISTRICT = "district"
    CHANNEL = "channel"
    CREW = "crew"
    FINE = "fine"


DIMENSIONS = ("department", "category", "district", "channel", "crew")
GRAIN_DIMENSIONS = {
    Grain.ALL: (),
    Grain.DEPARTMENT: ("department",),
    Grain.CATEGORY: ("category",),
    Grain.DISTRICT: ("district",),
    Grain.CHANNEL: ("channel",),
    Grain.CREW: ("crew",),
    # Crew would triple the fine rows; a crew breakdown under filters counts facts instead.
    Grain.FINE: ("department", "category", "district", "channel"),
}
CELL_GRAINS = (Grain.ALL, Grain.DEPARTMENT, Grain.CATEGORY, Grain.DISTRICT, Grain.CHANNEL)
# What a rollup row holds for a dimension outside its grain, or for a request without one.
NONE = {"department": 0, "category": 0, "district": 0, "channel": "", "crew": 0}


# --- Models ---------------------------------------------------------------------------------


class RollupState(models.Model):
    """The one row saying how far the rollups have got."""

    refreshed_at = models.DateTimeField(null=True)  # the figures are as of this moment
    watermark = models.DateTimeField(null=True)  # the next run looks at changes from here
    time_zone = models.CharField(max_length=64, blank=True)  # the zone of the days
    built_at = models.DateTimeField(null=True)
    build_seconds = models.FloatField(default=0)
    last_seconds = models.FloatField(default=0)
    last_changed = models.IntegerField(default=0)

    class Meta:
        verbose_name = "dashboard rollup state"

    def __str__(self):
        return f"Rollups as of {self.refreshed_at}"


def _loose_fk(model, **extra):
    # The rollups never stop a row from being deleted; the nightly reconcile drops its fact.
    return models.ForeignKey(
        model,
        null=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
        **extra,
    )


class RequestFact(models.Model):
    """What the rollups last counted for one request (see the module's docstring)."""

    request = models.OneToOneField(
        "requests_app.ServiceRequest",
        primary_key=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    department = _loose_fk("requests_app.Department")
    category = _loose_fk("requests_app.ServiceCategory")
    district = _loose_fk("routing.District")
    crew = _loose_fk("requests_app.Crew")
    work_order = _loose_fk("requests_app.WorkOrder")
    channel = models.CharField(max_length=10)
    lat = models.FloatField(null=True)
    lng = models.FloatField(null=True)
    gy = models.IntegerField(null=True)  # square at GRID_ZOOM
    gx = models.IntegerField(null=True)
    created_day = models.DateField()
    duplicate = models.BooleanField(default=False)
    forwarded = models.BooleanField(default=False)
    self_service = models.BooleanField(default=False)
    # The work order's cost split evenly over the requests it fixes.
    cost_share = models.DecimalField(max_digits=14, decimal_places=4, default=0)
    responded_day = models.DateField(null=True)
    response_seconds = models.FloatField(null=True)
    completed_day = models.DateField(null=True)  # completed with a fix, not closed
    resolution_seconds = models.FloatField(null=True)  # completed requests only
    with_due = models.BooleanField(default=False)
    on_time = models.BooleanField(default=False)
    # Open at the start of day D when created_day < D <= ended_day, or ended_day is NULL.
    ended_day = models.DateField(null=True)
    is_open = models.BooleanField(default=False)
    overdue = models.BooleanField(default=False)  # as of the refresh that wrote the row
    answered_day = models.DateField(null=True)
    rating = models.PositiveSmallIntegerField(null=True)
    fixed = models.BooleanField(null=True)

    class Meta:
        indexes = [
            # Key columns beyond the first ones make these covering, without INCLUDE, which
            # SQLite lacks: the queries they serve read the index alone, not the table.
            # Hotspots and a crew breakdown under filters: received in the period.
            models.Index(
                fields=[
                    "created_day",
                    "category",
                    "department",
                    "district",
                    "channel",
                    "crew",
                    "lat",
                    "lng",
                    "is_open",
                ],
                name="fact_received",
            ),
            # A crew breakdown under filters: completed in the period, ended since a day.
            models.Index(
                fields=[
                    "completed_day",
                    "department",
                    "category",
                    "district",
                    "channel",
                    "crew",
                    "with_due",
                    "on_time",
                    "resolution_seconds",
                ],
                name="fact_completed",
            ),
            models.Index(
                fields=["ended_day", "department", "category", "district", "channel", "crew"],
                name="fact_ended",
            ),
            # The heat map beyond GRID_ZOOM or under combined filters, and the details of a
            # square: the squares in view, then what they show.
            models.Index(
                fields=[
                    "gy",
                    "gx",
                    "created_day",
                    "lat",
                    "lng",
                    "overdue",
                    "resolution_seconds",
                    "response_seconds",
                    "category",
                    "department",
                    "district",
                    "channel",
                ],
                name="fact_square",
            ),
            # Requests open now, for the backlog under combined filters.
            models.Index(
                fields=["department", "category", "district", "channel", "crew"],
                condition=Q(ended_day__isnull=True),
                name="fact_open",
            ),
        ]

    def __str__(self):
        return f"Facts of request {self.request_id}"


class DayRollup(models.Model):
    """Figures of one local day for one grain (see Grain) and one combination of values."""

    grain = models.CharField(max_length=10, choices=Grain.choices)
    day = models.DateField()
    # 0 or "": outside the grain, or the request has none.
    department = models.IntegerField(default=0)
    category = models.IntegerField(default=0)
    district = models.IntegerField(default=0)
    channel = models.CharField(max_length=10, default="")
    crew = models.IntegerField(default=0)
    # Received that day.
    received = models.IntegerField(default=0)
    duplicates = models.IntegerField(default=0)
    forwarded = models.IntegerField(default=0)
    self_service = models.IntegerField(default=0)
    cost = models.DecimalField(max_digits=16, decimal_places=4, default=0)
    # Ended that day (for the backlog).
    ended = models.IntegerField(default=0)
    # Completed that day.
    completed = models.IntegerField(default=0)
    completed_with_due = models.IntegerField(default=0)
    on_time = models.IntegerField(default=0)
    resolution_seconds = models.FloatField(default=0)
    resolution_hist = models.JSONField(default=dict)  # {bucket: count}
    # First answered that day.
    responded = models.IntegerField(default=0)
    response_seconds = models.FloatField(default=0)
    response_hist = models.JSONField(default=dict)
    # Surveys answered that day.
    rated = models.IntegerField(default=0)
    rating_sum = models.IntegerField(default=0)
    judged = models.IntegerField(default=0)
    fixed = models.IntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["grain", "day", "department", "category", "district", "channel", "crew"],
                name="day_rollup_key",
            )
        ]
        # Combined filters read the fine grain, with at least one of these dimensions.
        indexes = [
            models.Index(fields=[d, "day"], condition=Q(grain="fine"), name=f"day_rollup_fine_{d}")
            for d in ("department", "category", "district")
        ]

    def __str__(self):
        return f"{self.grain} {self.day}"


class CellRollup(models.Model):
    """Requests received on one local day in one square of the map at GRID_ZOOM."""

    grain = models.CharField(max_length=10, choices=Grain.choices)
    day = models.DateField()
    department = models.IntegerField(default=0)
    category = models.IntegerField(default=0)
    district = models.IntegerField(default=0)
    channel = models.CharField(max_length=10, default="")
    gy = models.IntegerField()
    gx = models.IntegerField()
    received = models.IntegerField(default=0)
    overdue = models.IntegerField(default=0)
    completed = models.IntegerField(default=0)
    # r0 .. r31: completed requests per coarse bucket of resolution time (CELL_BUCKETS).
    for _bucket in range(CELL_BUCKETS):
        vars()[f"r{_bucket}"] = models.IntegerField(default=0)
    del _bucket

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=[
                    "grain",
                    "day",
                    "department",
                    "category",
                    "district",
                    "channel",
                    "gy",
                    "gx",
                ],
                name="cell_rollup_key",
            )
        ]

    def __str__(self):
        return f"{self.grain} {self.day} ({self.gy}, {self.gx})"


DAY_KEY = ("grain", "day", "department", "category", "district", "channel", "crew")
DAY_VALUES = (
    "received",
    "duplicates",
    "forwarded",
    "self_service",
    "cost",
    "ended",
    "completed",
    "completed_with_due",
    "on_time",
    "resolution_seconds",
    "responded",
    "response_seconds",
    "rated",
    "rating_sum",
    "judged",
    "fixed",
)
DAY_HISTS = ("resolution_hist", "response_hist")
CELL_KEY = ("grain", "day", "department", "category", "district", "channel", "gy", "gx")
CELL_RANKS = tuple(f"r{b}" for b in range(CELL_BUCKETS))
CELL_VALUES = ("received", "overdue", "completed", *CELL_RANKS)
CELL_HISTS = ()
FACT_FIELDS = tuple(f.attname for f in RequestFact._meta.concrete_fields)


# --- Durations --------------------------------------------------------------------------------


def duration_bucket(seconds, floor=BUCKET_FLOOR, log_ratio=_LOG_RATIO, last=BUCKETS):
    if seconds is None:
        return None
    if seconds < floor:
        return 0
    return min(last, 1 + math.floor(math.log(seconds / floor) / log_ratio))


def cell_bucket(seconds):
    return duration_bucket(
        seconds, CELL_BUCKET_FLOOR, math.log(CELL_BUCKET_RATIO), CELL_BUCKETS - 1
    )


def _bucket_sql(column, floor=BUCKET_FLOOR, ratio=BUCKET_RATIO, last=BUCKETS):
    """duration_bucket in PostgreSQL (ln and floor as in Python's math: both are libm's)."""
    return (
        f"CASE WHEN {column} IS NULL THEN NULL WHEN {column} < {floor!r} THEN 0 "
        f"ELSE least({last}, 1 + floor(ln({column} / {floor!r}) / ln({ratio!r}))::int) END"
    )


def _bucket_value(bucket, fraction, floor=BUCKET_FLOOR, ratio=BUCKET_RATIO):
    """The duration `fraction` (0..1) of the way through `bucket`."""
    if bucket <= 0:
        return floor * fraction
    return floor * ratio ** (bucket - 1 + fraction)


def histogram_median(hist, floor=BUCKET_FLOOR, ratio=BUCKET_RATIO):
    """The median of a {bucket: count} histogram, like percentile_cont(0.5).

    Inside a bucket the values are taken as spread evenly on the log scale, so the result is
    within the bucket's 5 % of the true median (for medians over a minute), and usually far
    closer: the error is only that large when the values bunch up at one edge of a bucket.
    """
    items = sorted((int(b), n) for b, n in hist.items() if n)
    total = sum(n for _b, n in items)
    if total <= 0:
        return None

    def value_at(rank):  # rank 0 .. total-1
        seen = 0
        for bucket, n in items:
            if rank < seen + n:
                return _bucket_value(bucket, (rank - seen + 0.5) / n, floor, ratio)
            seen += n
        return _bucket_value(items[-1][0], 1.0, floor, ratio)

    middle = (total - 1) / 2
    low, high = math.floor(middle), math.ceil(middle)
    if low == high:
        return value_at(low)
    return (value_at(low) + value_at(high)) / 2


def cell_median(ranks):
    """The median resolution seconds of a square from its counts r0..r31."""
    return histogram_median(dict(enumerate(ranks)), CELL_BUCKET_FLOOR, CELL_BUCKET_RATIO)


def merge_hists(hists):
    merged = defaultdict(int)
    for hist in hists:
        for bucket, n in hist.items():
            merged[bucket] += n
    return merged


# --- Facts --------------------------------------------------------------------------------------

_REQUEST_COLUMNS = (
    "pk",
    "department_id",
    "category_id",
    "district_id",
    "crew_id",
    "work_order_id",
    "channel",
    "status",
    "lat",
    "lng",
    "created_at",
    "first_response_at",
    "resolved_at",
    "due_at",
    "duplicate_of_id",
    "forward_count",
    "survey__rating",
    "survey__is_fixed",
    "survey__answered_at",
    "work_order__cost",
)


def _local_day(moment, tz):
    return None if moment is None else timezone.localtime(moment, tz).date()


def _seconds(end, start):
    return None if end is None or start is None else (end - start).total_seconds()


def _facts_for(ids, now) -> dict:
    """{request id: RequestFact} computed from the requests as they are now.

    The same rules, for all requests at once, are in _FACTS_SQL; tests check they agree.
    """
    tz = timezone.get_current_timezone()
    rows = list(ServiceRequest.objects.filter(pk__in=ids).order_by().values_list(*_REQUEST_COLUMNS))
    orders = {row[5] for row in rows if row[5]}
    members = dict(
        ServiceRequest.objects.filter(work_order_id__in=orders)
        .order_by()
        .values("work_order_id")
        .annotate(n=models.Count("pk"))
        .values_list("work_order_id", "n")
    )
    facts = {}
    for (
        pk,
        department,
        category,
        district,
        crew,
        work_order,
        channel,
        status,
        lat,
        lng,
        created,
        responded,
        resolved,
        due,
        duplicate_of,
        forward_count,
        rating,
        is_fixed,
        answered,
        cost,
    ) in rows:
        is_open = status in OPEN_STATUSES
        completed = status == Status.COMPLETED and resolved is not None
        created_day = _local_day(created, tz)
        if resolved is not None:
            ended_day = max(_local_day(resolved, tz), created_day)
        else:
            ended_day = None if is_open else created_day
        share = Decimal(0)
        if work_order and cost is not None:
            share = (Decimal(cost) / members[work_order]).quantize(_PLACES, rounding=ROUND_HALF_UP)
        located = lat is not None and lng is not None
        facts[pk] = RequestFact(
            request_id=pk,
            department_id=department,
            category_id=category,
            district_id=district,
            crew_id=crew,
            work_order_id=work_order,
            channel=channel,
            lat=lat,
            lng=lng,
            gy=math.floor(lat / GRID_SIZE) if located else None,
            gx=math.floor(lng / GRID_SIZE) if located else None,
            created_day=created_day,
            duplicate=duplicate_of is not None,
            forwarded=forward_count > 0,
            self_service=channel in SELF_SERVICE_CHANNELS,
            cost_share=share,
            responded_day=_local_day(responded, tz),
            response_seconds=_seconds(responded, created),
            completed_day=_local_day(resolved, tz) if completed else None,
            resolution_seconds=_seconds(resolved, created) if completed else None,
            with_due=completed and due is not None,
            on_time=completed and due is not None and resolved <= due,
            ended_day=ended_day,
            is_open=is_open,
            overdue=(is_open and due is not None and due < now)
            or (resolved is not None and due is not None and resolved > due),
            answered_day=_local_day(answered, tz),
            rating=rating if answered else None,
            fixed=is_fixed if answered else None,
        )
    return facts


def _fact_values(fact):
    return tuple(
        value.normalize() if isinstance(value, Decimal) else value
        for value in (getattr(fact, name) for name in FACT_FIELDS)
    )


# --- Deltas ---------------------------------------------------------------------------------------


class _Deltas:
    """Changes to rollup rows, keyed like their unique constraints."""

    def __init__(self):
        self.days = {}
        self.cells = {}

    @staticmethod
    def _row(table, key, values, hists):
        row = table.get(key)
        if row is None:
            row = table[key] = ({name: 0 for name in values}, {name: {} for name in hists})
        return row

    def _day(self, grain, day, dims, changes, hist=None):
        key = (
            grain,
            day,
            *(dims[d] if d in GRAIN_DIMENSIONS[grain] else NONE[d] for d in DIMENSIONS),
        )
        counts, hists = self._row(self.days, key, DAY_VALUES, DAY_HISTS)
        for name, value in changes.items():
            counts[name] += value
        if hist:
            name, bucket, sign = hist
            hists[name][bucket] = hists[name].get(bucket, 0) + sign

    def add(self, fact, sign):
        dims = {
            "department": fact.department_id or 0,
            "category": fact.category_id or 0,
            "district": fact.district_id or 0,
            "channel": fact.channel or "",
            "crew": fact.crew_id or 0,
        }
        for grain in Grain:
            self._day(
                grain,
                fact.created_day,
                dims,
                {
                    "received": sign,
                    "duplicates": sign * fact.duplicate,
                    "forwarded": sign * fact.forwarded,
                    "self_service": sign * fact.self_service,
                    "cost": sign * Decimal(fact.cost_share or 0),
                },
            )
            if fact.ended_day is not None:
                self._day(grain, fact.ended_day, dims, {"ended": sign})
            if fact.completed_day is not None:
                self._day(
                    grain,
                    fact.completed_day,
                    dims,
                    {
                        "completed": sign,
                        "completed_with_due": sign * fact.with_due,
                        "on_time": sign * fact.on_time,
                        "resolution_seconds": sign * fact.resolution_seconds,
                    },
                    ("resolution_hist", str(duration_bucket(fact.resolution_seconds)), sign),
                )
            if fact.responded_day is not None:
                self._day(
                    grain,
                    fact.responded_day,
                    dims,
                    {"responded": sign, "response_seconds": sign * fact.response_seconds},
                    ("response_hist", str(duration_bucket(fact.response_seconds)), sign),
                )
            if fact.answered_day is not None:
                self._day(
                    grain,
                    fact.answered_day,
                    dims,
                    {
                        "rated": sign * (fact.rating is not None),
                        "rating_sum": sign * (fact.rating or 0),
                        "judged": sign * (fact.fixed is not None),
                        "fixed": sign * (fact.fixed is True),
                    },
                )
        if fact.gy is None:
            return
        for grain in CELL_GRAINS:
            key = (
                grain,
                fact.created_day,
                *(dims[d] if d in GRAIN_DIMENSIONS[grain] else NONE[d] for d in DIMENSIONS[:4]),
                fact.gy,
                fact.gx,
            )
            counts, _hists = self._row(self.cells, key, CELL_VALUES, CELL_HISTS)
            counts["received"] += sign
            counts["overdue"] += sign * fact.overdue
            if fact.resolution_seconds is not None:
                counts["completed"] += sign
                counts[f"r{cell_bucket(fact.resolution_seconds)}"] += sign

    def apply(self):
        _apply(DayRollup, DAY_KEY, DAY_VALUES, DAY_HISTS, self.days)
        _apply(CellRollup, CELL_KEY, CELL_VALUES, CELL_HISTS, self.cells)


def _is_zero(counts, hists):
    return not any(counts.values()) and not any(any(h.values()) for h in hists.values())


def _is_empty(counts, hists):
    """A row counting nothing; float sums may keep a rounding residue of their deltas."""
    counted = (v for v in counts.values() if not isinstance(v, float))
    return not any(counted) and not any(any(h.values()) for h in hists.values())


def _apply(model, key_fields, value_fields, hist_fields, deltas):
    """Add `deltas` to the rows of `model`: read, add up in Python, write back.

    Only the refresh writes these tables and it holds the lock, so read-modify-write is safe.
    """
    deltas = {k: v for k, v in deltas.items() if not _is_zero(*v)}
    if not deltas:
        return
    table = model._meta.db_table
    quoted = ", ".join(connection.ops.quote_name(f) for f in key_fields)
    columns = [*key_fields, *value_fields, *hist_fields]
    keys = list(deltas)
    existing = {}
    with connection.cursor() as cursor:
        for chunk in _chunks(keys, CHUNK):
            placeholders = ", ".join(["(" + ", ".join(["%s"] * len(key_fields)) + ")"] * len(chunk))
            cursor.execute(
                f"SELECT id, {', '.join(connection.ops.quote_name(c) for c in columns)} "
                f"FROM {table} WHERE ({quoted}) IN (VALUES {placeholders})",
                [v for key in chunk for v in key],
            )
            for pk, *values in cursor.fetchall():
                key = tuple(values[: len(key_fields)])
                key = (key[0], _as_date(key[1]), *key[2:])
                existing[key] = (pk, values[len(key_fields) :])
    write, delete = [], []
    for key, (counts, hists) in deltas.items():
        pk, stored = existing.get(key, (None, None))
        values = []
        for i, name in enumerate(value_fields):
            old = stored[i] if stored else 0
            if isinstance(counts[name], Decimal):
                # SQLite hands a decimal back as a float: go through its shortest repr.
                old = Decimal(str(old or 0)).quantize(_PLACES)
            values.append((old or 0) + counts[name])
        merged_hists = []
        for i, name in enumerate(hist_fields):
            old = stored[len(value_fields) + i] if stored else {}
            merged = dict(json.loads(old) if isinstance(old, str) else old or {})
            for bucket, n in hists[name].items():
                merged[bucket] = merged.get(bucket, 0) + n
                if not merged[bucket]:
                    del merged[bucket]
            merged_hists.append(merged)
        empty = _is_empty(
            dict(zip(value_fields, values, strict=True)),
            dict(zip(hist_fields, merged_hists, strict=True)),
        )
        if empty:
            if pk is not None:
                delete.append(pk)
        else:
            write.append((*key, *values, *(json.dumps(h) for h in merged_hists)))
    if delete:
        model.objects.filter(pk__in=delete).delete()
    for chunk in _chunks(write, CHUNK):
        _upsert(table, key_fields, value_fields, hist_fields, chunk)


def _upsert(table, key_fields, value_fields, hist_fields, rows):
    """INSERT ... ON CONFLICT (key) DO UPDATE, in one statement per chunk of rows.

    Not bulk_create(update_conflicts=True): on PostgreSQL it sends columns as arrays, and
    quoting JSON inside array literals took most of a refresh's time.
    """
    quote = connection.ops.quote_name
    as_json = "%s::jsonb" if connection.vendor == "postgresql" else "%s"
    row = (
        "("
        + ", ".join(["%s"] * (len(key_fields) + len(value_fields)) + [as_json] * len(hist_fields))
        + ")"
    )
    updated = [*value_fields, *hist_fields]
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {quote(table)} ({', '.join(quote(c) for c in [*key_fields, *updated])}) "
            f"VALUES {', '.join([row] * len(rows))} "
            f"ON CONFLICT ({', '.join(quote(c) for c in key_fields)}) DO UPDATE SET "
            + ", ".join(f"{quote(c)} = EXCLUDED.{quote(c)}" for c in updated),
            [value for r in rows for value in r],
        )


def _as_date(value):
    return date.fromisoformat(value) if isinstance(value, str) else value


def _chunks(items, size):
    items = iter(items)
    while chunk := list(islice(items, size)):
        yield chunk


# --- Refreshing -------------------------------------------------------------------------------


@dataclass
class RefreshResult:
    refreshed_at: datetime
    changed: int  # requests whose fact changed
    looked_at: int  # requests looked at
    built: bool  # a full build rather than an incremental refresh
    seconds: float


def _lock() -> bool:
    if connection.vendor != "postgresql":
        return True  # SQLite runs one writer at a time anyway
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [LOCK_KEY])
        return cursor.fetchone()[0]


def _next_watermark(now):
    """Where the next run starts: before any change a transaction still open may commit.

    updated_at is stamped before commit, so a row can become visible after a run that
    started later than its stamp. Any transaction still writing started before such
    stamps: the oldest one's start bounds them. CLOCK_SKEW covers differing clocks.
    """
    start = now
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT min(xact_start) FROM pg_stat_activity "
                "WHERE datname = current_database() AND backend_xid IS NOT NULL "
                "AND pid <> pg_backend_pid()"
            )
            oldest = cursor.fetchone()[0]
        if oldest is not None:
            start = min(start, oldest)
    return start - CLOCK_SKEW


def _changed_request_ids(since, until):
    """Requests whose figures may have changed in [since, until)."""
    from surveys.models import Survey

    ids = set(
        ServiceRequest.objects.filter(updated_at__gte=since).order_by().values_list("pk", flat=True)
    )
    # Open requests that became overdue without being touched.
    ids |= set(
        ServiceRequest.objects.filter(status__in=OPEN_STATUSES, due_at__gte=since, due_at__lt=until)
        .order_by()
        .values_list("pk", flat=True)
    )
    ids |= set(
        Survey.objects.filter(answered_at__gte=since)
        .order_by()
        .values_list("request_id", flat=True)
    )
    # A work order gets its cost when it is completed (later edits: see `reconcile`).
    orders = WorkOrder.objects.filter(completed_at__gte=since).values("pk")
    ids |= set(
        ServiceRequest.objects.filter(work_order__in=orders).order_by().values_list("pk", flat=True)
    )
    return ids


def _with_work_order_partners(ids):
    """Add the other requests of the work orders these requests have or had: their share
    of the cost changes when one joins or leaves."""
    orders = set(
        ServiceRequest.objects.filter(pk__in=ids, work_order__isnull=False).values_list(
            "work_order_id", flat=True
        )
    )
    orders |= set(
        RequestFact.objects.filter(request_id__in=ids, work_order__isnull=False).values_list(
            "work_order_id", flat=True
        )
    )
    partners = set()
    for chunk in _chunks(orders, CHUNK):
        partners |= set(
            ServiceRequest.objects.filter(work_order_id__in=chunk)
            .order_by()
            .values_list("pk", flat=True)
        )
    return ids | partners


def _refresh_ids(ids, now) -> int:
    changed = 0
    for chunk in _chunks(sorted(ids), CHUNK):
        old = {f.request_id: f for f in RequestFact.objects.filter(request_id__in=chunk)}
        new = _facts_for(chunk, now)
        deltas = _Deltas()
        write, gone = [], []
        for pk in chunk:
            before, after = old.get(pk), new.get(pk)
            if before is not None and after is not None:
                if _fact_values(before) == _fact_values(after):
                    continue
            if before is not None:
                deltas.add(before, -1)
            if after is not None:
                deltas.add(after, +1)
                write.append(after)
            else:
                gone.append(pk)
            changed += 1
        deltas.apply()
        if gone:
            RequestFact.objects.filter(request_id__in=gone).delete()
        if write:
            RequestFact.objects.bulk_create(
                write,
                update_conflicts=True,
                unique_fields=["request"],
                update_fields=[f for f in FACT_FIELDS if f != "request_id"],
            )
    return changed


def rollups_refresh(*, now=None, rebuild=False, reconcile=False) -> RefreshResult | None:
    """Bring the rollups up to date; None when another refresh holds the lock.

    The first run (or `rebuild`) builds everything; later runs look only at requests changed
    since the previous run. `reconcile` compares every request's fact with the requests
    (nightly): it catches what no timestamp shows, such as a deleted request or a work
    order's cost edited in the admin.
    """
    started = timezone.now()
    now = now or started
    with transaction.atomic():
        if not _lock():
            return None
        state, _created = RollupState.objects.select_for_update().get_or_create(pk=1)
        watermark = _next_watermark(now)
        zone = settings.TIME_ZONE
        if rebuild or state.refreshed_at is None or state.time_zone != zone:
            looked_at = changed = _build(now)
            built = True
            state.built_at = now
        else:
            if reconcile:
                ids = _reconcile_ids(now)
            else:
                ids = _changed_request_ids(state.watermark, now)
            ids = _with_work_order_partners(ids)
            looked_at = len(ids)
            changed = _refresh_ids(ids, now)
            built = False
        seconds = (timezone.now() - started).total_seconds()
        state.refreshed_at = now
        state.watermark = watermark
        state.time_zone = zone
        state.last_seconds = seconds
        state.last_changed = changed
        if built:
            state.build_seconds = seconds
        state.save()
    return RefreshResult(now, changed, looked_at, built, seconds)


def _build(now) -> int:
    """Everything from scratch. Readers keep using the exact figures until the state row
    says the rollups are built, which it does only when this transaction commits."""
    if connection.vendor == "postgresql":
        return _build_postgresql(now)
    for model in (RequestFact, DayRollup, CellRollup):
        model.objects.all().delete()
    ids = list(ServiceRequest.objects.order_by("pk").values_list("pk", flat=True))
    return _refresh_ids(ids, now)


def _reconcile_ids(now):
    if connection.vendor != "postgresql":
        return set(ServiceRequest.objects.values_list("pk", flat=True)) | set(
            RequestFact.objects.values_list("request_id", flat=True)
        )
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT coalesce(n.request_id, f.request_id) FROM ({_facts_select()}) n "
            f"FULL JOIN {RequestFact._meta.db_table} f ON f.request_id = n.request_id "
            f"WHERE (n.request_id IS NULL OR f.request_id IS NULL "
            f"OR ({', '.join('n.' + c for c in FACT_FIELDS)}) "
            f"IS DISTINCT FROM ({', '.join('f.' + c for c in FACT_FIELDS)}))",
            _facts_params(now),
        )
        return {row[0] for row in cursor.fetchall()}


# --- Building in PostgreSQL -------------------------------------------------------------------
# The same rules as _facts_for and _Deltas.add, for every request in a few statements.


def _facts_params(now):
    return {"tz": settings.TIME_ZONE, "now": now, "size": GRID_SIZE}


def _facts_select():
    sr = ServiceRequest._meta.db_table
    open_list = ", ".join(f"'{s}'" for s in sorted(OPEN_STATUSES))
    self_service = ", ".join(f"'{c}'" for c in SELF_SERVICE_CHANNELS)
    completed = f"(r.status = '{Status.COMPLETED}' AND r.resolved_at IS NOT NULL)"
    is_open = f"(r.status IN ({open_list}))"
    created_day = "(r.created_at AT TIME ZONE %(tz)s)::date"
    return f"""
        SELECT r.id AS request_id, r.department_id, r.category_id, r.district_id, r.crew_id,
               r.work_order_id, r.channel, r.lat, r.lng,
               CASE WHEN r.lat IS NOT NULL AND r.lng IS NOT NULL
                    THEN floor(r.lat / %(size)s)::int END AS gy,
               CASE WHEN r.lat IS NOT NULL AND r.lng IS NOT NULL
                    THEN floor(r.lng / %(size)s)::int END AS gx,
               {created_day} AS created_day,
               r.duplicate_of_id IS NOT NULL AS duplicate,
               r.forward_count > 0 AS forwarded,
               r.channel IN ({self_service}) AS self_service,
               coalesce(round(w.cost / m.n, 4), 0)::numeric(14, 4) AS cost_share,
               (r.first_response_at AT TIME ZONE %(tz)s)::date AS responded_day,
               extract(epoch FROM r.first_response_at - r.created_at)::float8
                   AS response_seconds,
               CASE WHEN {completed} THEN (r.resolved_at AT TIME ZONE %(tz)s)::date END
                   AS completed_day,
               CASE WHEN {completed}
                    THEN extract(epoch FROM r.resolved_at - r.created_at)::float8 END
                   AS resolution_seconds,
               {completed} AND r.due_at IS NOT NULL AS with_due,
               coalesce({completed} AND r.resolved_at <= r.due_at, false) AS on_time,
               CASE WHEN r.resolved_at IS NOT NULL
                    THEN greatest((r.resolved_at AT TIME ZONE %(tz)s)::date, {created_day})
                    WHEN NOT {is_open} THEN {created_day} END AS ended_day,
               {is_open} AS is_open,
               coalesce(({is_open} AND r.due_at < %(now)s) OR r.resolved_at > r.due_at, false)
                   AS overdue,
               (s.answered_at AT TIME ZONE %(tz)s)::date AS answered_day,
               CASE WHEN s.answered_at IS NOT NULL THEN s.rating END AS rating,
               CASE WHEN s.answered_at IS NOT NULL THEN s.is_fixed END AS fixed
        FROM {sr} r
        LEFT JOIN surveys_survey s ON s.request_id = r.id
        LEFT JOIN {WorkOrder._meta.db_table} w ON w.id = r.work_order_id
        LEFT JOIN (
            SELECT work_order_id, count(*) AS n FROM {sr}
            WHERE work_order_id IS NOT NULL GROUP BY work_order_id
        ) m ON m.work_order_id = r.work_order_id
    """


def _grouping_sets(grains, dims, extra=()):
    return ", ".join(
        "(" + ", ".join(["day", *(d for d in dims if d in GRAIN_DIMENSIONS[g]), *extra]) + ")"
        for g in grains
    )


def _grain_case(grains, dims):
    """The grain of a GROUPING SETS row, told by which dimensions were grouped."""
    cases = []
    for grain in grains:
        bits = " AND ".join(
            f"grouping({d}) = {0 if d in GRAIN_DIMENSIONS[grain] else 1}" for d in dims
        )
        cases.append(f"WHEN {bits} THEN '{grain.value}'")
    return "CASE " + " ".join(cases) + " END"


def _rolled_up(dims):
    """The dimension columns of a GROUPING SETS row, NULL (rolled up) made 0 or ''."""
    return ", ".join(f"coalesce({d}, {NONE[d]!r}) AS {d}" for d in dims)


def _build_table(run, table, grains, dims, source, values, hists, extra_key=()):
    """Fill `table` with the rows of every grain from `source`, one row per event.

    Two stages: first per day and every dimension (rows of `source` with the same values
    collapse), then GROUPING SETS over those to each grain. Histograms go the same way as
    (bucket, count) rows and become JSON at the end.
    """
    fine = ["day", *dims, *extra_key]
    key = ["grain", *fine]
    grain = _grain_case(grains, dims)
    rolled = f"{grain} AS grain, day, {_rolled_up(dims)}" + "".join(", " + k for k in extra_key)
    sets = _grouping_sets(grains, dims, extra_key)
    sets_b = _grouping_sets(grains, dims, (*extra_key, "kind", "b"))
    run(
        f"{table}: per day",
        f"CREATE TEMPORARY TABLE rollup_fine ON COMMIT DROP AS "
        f"SELECT {', '.join(fine)}, {', '.join(f'{sql} AS {n}' for n, sql in values.items())} "
        f"FROM {source} s GROUP BY {', '.join(fine)}",
    )
    run(
        f"{table}: grains",
        f"CREATE TEMPORARY TABLE rollup_counts ON COMMIT DROP AS "
        f"SELECT {rolled}, {', '.join(f'sum({n}) AS {n}' for n in values)} "
        f"FROM rollup_fine GROUP BY GROUPING SETS ({sets})",
    )
    temporary = ["rollup_fine", "rollup_counts"]
    if hists:
        buckets = " UNION ALL ".join(
            f"SELECT {', '.join(fine)}, {i} AS kind, {bucket} AS b FROM {source} s "
            f"WHERE {bucket} IS NOT NULL"
            for i, bucket in enumerate(hists.values())
        )
        run(
            f"{table}: buckets per day",
            f"CREATE TEMPORARY TABLE rollup_fine_buckets ON COMMIT DROP AS "
            f"SELECT {', '.join(fine)}, kind, b, count(*) AS n FROM ({buckets}) x "
            f"GROUP BY {', '.join(fine)}, kind, b",
        )
        # Sorting a million rows on nine keys is what takes long here; hashing halves it.
        run("hash", "SET LOCAL enable_sort = off")
        run(
            f"{table}: histograms",
            f"CREATE TEMPORARY TABLE rollup_hists ON COMMIT DROP AS "
            f"SELECT {', '.join(key)}, kind, jsonb_object_agg(b, n) AS hist FROM ("
            f"  SELECT {rolled}, kind, b, sum(n) AS n FROM rollup_fine_buckets "
            f"  GROUP BY GROUPING SETS ({sets_b})"
            f") x GROUP BY {', '.join(key)}, kind",
        )
        run("sort", "SET LOCAL enable_sort = on")
        temporary += ["rollup_fine_buckets", "rollup_hists"]
    joins = "".join(
        f" LEFT JOIN rollup_hists h{i} ON h{i}.kind = {i} AND "
        + " AND ".join(f"h{i}.{k} = c.{k}" for k in key)
        for i in range(len(hists))
    )
    hist_columns = "".join(f", {h}" for h in hists)
    hist_values = "".join(f", coalesce(h{i}.hist, '{{}}')" for i in range(len(hists)))
    run(
        f"{table}: insert",
        f"INSERT INTO {table} ({', '.join(key)}, {', '.join(values)}{hist_columns}) "
        f"SELECT {', '.join('c.' + k for k in key)}, {', '.join('c.' + n for n in values)}"
        f"{hist_values} FROM rollup_counts c{joins}",
    )
    run(f"{table}: clean up", f"DROP TABLE {', '.join(temporary)}")


def _events_sql():
    """One row per event of a fact: received, ended, completed, first response, answer."""
    fact = RequestFact._meta.db_table
    zeros = {
        "received": "0",
        "duplicates": "0",
        "forwarded": "0",
        "self_service": "0",
        "cost": "0::numeric",
        "ended": "0",
        "completed": "0",
        "completed_with_due": "0",
        "on_time": "0",
        "resolution_seconds": "0::float8",
        "res_b": "NULL::int",
        "responded": "0",
        "response_seconds": "0::float8",
        "resp_b": "NULL::int",
        "rated": "0",
        "rating_sum": "0",
        "judged": "0",
        "fixed": "0",
    }

    def event(day, where, **values):
        columns = ", ".join(f"{values.get(k, v)} AS {k}" for k, v in zeros.items())
        return (
            f"SELECT {day} AS day, department_id AS department, category_id AS category, "
            f"district_id AS district, channel, crew_id AS crew, {columns} "
            f"FROM {fact} WHERE {where}"
        )

    events = " UNION ALL ".join(
        [
            event(
                "created_day",
                "true",
                received="1",
                duplicates="duplicate::int",
                forwarded="forwarded::int",
                self_service="self_service::int",
                cost="cost_share",
            ),
            event("ended_day", "ended_day IS NOT NULL", ended="1"),
            event(
                "completed_day",
                "completed_day IS NOT NULL",
                completed="1",
                completed_with_due="with_due::int",
                on_time="on_time::int",
                resolution_seconds="resolution_seconds",
                res_b=_bucket_sql("resolution_seconds"),
            ),
            event(
                "responded_day",
                "responded_day IS NOT NULL",
                responded="1",
                response_seconds="response_seconds",
                resp_b=_bucket_sql("response_seconds"),
            ),
            event(
                "answered_day",
                "answered_day IS NOT NULL",
                rated="(rating IS NOT NULL)::int",
                rating_sum="coalesce(rating, 0)",
                judged="(fixed IS NOT NULL)::int",
                fixed="coalesce(fixed, false)::int",
            ),
        ]
    )
    # A request without a department (or district, crew) counts under 0, like in _Deltas:
    # coalesce before grouping, so that a NULL after grouping only means "rolled up".
    return (
        "SELECT day, coalesce(department, 0) AS department, coalesce(category, 0) AS category, "
        "coalesce(district, 0) AS district, channel, coalesce(crew, 0) AS crew, "
        f"{', '.join(zeros)} FROM ({events}) e"
    )


def _cells_sql():
    fact = RequestFact._meta.db_table
    return (
        "SELECT created_day AS day, coalesce(department_id, 0) AS department, "
        "coalesce(category_id, 0) AS category, coalesce(district_id, 0) AS district, "
        "channel, gy, gx, overdue, resolution_seconds, "
        + _bucket_sql("resolution_seconds", CELL_BUCKET_FLOOR, CELL_BUCKET_RATIO, CELL_BUCKETS - 1)
        + f" AS res_c FROM {fact} WHERE gy IS NOT NULL"
    )


@contextmanager
def _indexes_built_after(models_):
    """Drop the models' indexes and unique constraints, and build them again at the end:
    loading first and indexing once is several times faster than index upkeep per row."""
    dropped = []
    with connection.schema_editor() as editor:
        for model in models_:
            for index in model._meta.indexes:
                editor.remove_index(model, index)
                dropped.append((model, index))
            for constraint in model._meta.constraints:
                editor.remove_constraint(model, constraint)
                dropped.append((model, constraint))
    yield
    started = time.perf_counter()
    with connection.schema_editor() as editor:
        for model, thing in dropped:
            if isinstance(thing, models.Index):
                editor.add_index(model, thing)
            else:
                editor.add_constraint(model, thing)
    logger.info("rollups build: indexes in %.1f s", time.perf_counter() - started)


def _build_postgresql(now) -> int:
    fact = RequestFact._meta.db_table
    with connection.cursor() as cursor, _indexes_built_after([RequestFact, DayRollup, CellRollup]):

        def run(step, sql, params=None):
            started = time.perf_counter()
            cursor.execute(sql, params)
            logger.info("rollups build: %s in %.1f s", step, time.perf_counter() - started)
            return cursor.rowcount

        run("settings", "SET LOCAL work_mem = '512MB'")
        run("truncate", f"TRUNCATE {fact}, {DayRollup._meta.db_table}, {CellRollup._meta.db_table}")
        built = run(
            "facts",
            f"INSERT INTO {fact} ({', '.join(FACT_FIELDS)}) "
            f"SELECT {', '.join(FACT_FIELDS)} FROM ({_facts_select()}) n",
            _facts_params(now),
        )
        run("analyze facts", f"ANALYZE {fact}")
        # Temporary tables are also dropped by hand: in a test's transaction no commit comes.
        run("events", f"CREATE TEMPORARY TABLE rollup_events ON COMMIT DROP AS {_events_sql()}")
        _build_table(
            run,
            DayRollup._meta.db_table,
            list(Grain),
            DIMENSIONS,
            "rollup_events",
            {name: f"sum({name})" for name in DAY_VALUES},
            {"resolution_hist": "res_b", "response_hist": "resp_b"},
        )
        run("drop events", "DROP TABLE rollup_events")
        _build_table(
            run,
            CellRollup._meta.db_table,
            list(CELL_GRAINS),
            DIMENSIONS[:4],
            f"({_cells_sql()})",
            {
                "received": "count(*)",
                "overdue": "sum(overdue::int)",
                "completed": "count(resolution_seconds)",
                **{f"r{b}": f"count(*) FILTER (WHERE res_c = {b})" for b in range(CELL_BUCKETS)},
            },
            {},
            extra_key=("gy", "gx"),
        )
        run("analyze rollups", f"ANALYZE {DayRollup._meta.db_table}, {CellRollup._meta.db_table}")
    return built


# --- Reading --------------------------------------------------------------------------------


def current_state() -> RollupState | None:
    """The state of built rollups, or None while there are none."""
    return RollupState.objects.filter(pk=1, refreshed_at__isnull=False).first()


@dataclass(frozen=True)
class Selection:
    """Which rollup rows answer for a choice of filters: the grain, and values per dimension."""

    values: tuple  # ((dimension, (value, ...)), ...)

    @classmethod
    def of(cls, *, department=None, categories=None, district=None, channel=""):
        values = {}
        if department:
            values["department"] = (department,)
        if categories is not None:
            values["category"] = tuple(categories)
        if district:
            values["district"] = (district,)
        if channel:
            values["channel"] = (channel,)
        return cls(tuple(values.items()))

    def grain(self, by=None) -> Grain | None:
        """The coarsest grain holding the filtered dimensions and `by` (grouped by), if any."""
        dims = {d for d, _v in self.values} | ({by} if by else set())
        if not dims:
            return Grain.ALL
        if len(dims) == 1:
            return Grain(dims.pop())
        if dims <= set(GRAIN_DIMENSIONS[Grain.FINE]):
            return Grain.FINE
        return None

    @property
    def dimensions(self):
        return {d for d, _v in self.values}

    def filter(self, rows):
        for dimension, values in self.values:
            rows = rows.filter(**{f"{dimension}__in": values})
        return rows

    def rows(self, model, by=None):
        return self.filter(model.objects.filter(grain=self.grain(by)))

    def facts(self):
        """The facts of the requests these filters select (any day)."""
        return self.filter(RequestFact.objects.all())


def _totals(rows, values, hists):
    totals = {name: 0 for name in values}
    merged = {name: defaultdict(int) for name in hists}
    for row in rows:
        for name, value in zip(values, row, strict=False):
            totals[name] += value
        for name, hist in zip(hists, row[len(values) :], strict=True):
            for bucket, n in hist.items():
                merged[name][bucket] += n
    return totals, merged


def _ratio(part, whole):
    return None if not whole else part / whole


def backlog(selection, before: date | None, by=None):
    """Requests open at the start of day `before` (None: now), per value of `by` if given.

    Open now is the sum over all days of received minus ended; open at an earlier day
    start is that minus what was received and plus what ended since. Single-dimension rows
    are few (one per day and value) and are summed over all days; the fine grain has many,
    so there the requests open now are counted among the facts (a small partial index)
    and only the days since `before` are summed.
    """
    grain = selection.grain(by)
    rows = selection.rows(DayRollup, by).order_by()
    if grain != Grain.FINE:
        if before is not None:
            rows = rows.filter(day__lt=before)
        return _open(rows, by)
    facts = selection.facts().filter(ended_day__isnull=True).order_by()
    if by is None:
        open_now = facts.count()
    else:
        # A fact's dimension is a nullable foreign key; rollups count "none" under 0.
        open_now = {
            row[by] or NONE[by]: row["n"]
            for row in facts.values(by).annotate(n=models.Count("pk")).values(by, "n")
        }
    if before is None:
        return open_now
    since = _open(rows.filter(day__gte=before), by)
    if by is None:
        return open_now - since
    return {k: open_now.get(k, 0) - since.get(k, 0) for k in set(open_now) | set(since)}


def _open(rows, by):
    if by is None:
        sums = rows.aggregate(received=Sum("received"), ended=Sum("ended"))
        return (sums["received"] or 0) - (sums["ended"] or 0)
    sums = rows.values(by).annotate(received=Sum("received"), ended=Sum("ended"))
    return {row[by]: row["received"] - row["ended"] for row in sums}


def period_figures(selection, start: date, end: date, backlog_before: date | None) -> dict:
    """The dashboard's raw figures for the days start..end (see dashboard.period_figures)."""
    rows = (
        selection.rows(DayRollup)
        .filter(day__gte=start, day__lte=end)
        .values_list(*DAY_VALUES, *DAY_HISTS)
    )
    t, hists = _totals(rows, DAY_VALUES, DAY_HISTS)
    return {
        "received": t["received"],
        "duplicates": t["duplicates"],
        "forwarded": t["forwarded"],
        "self_service": t["self_service"],
        "backlog": backlog(selection, backlog_before),
        "completed": t["completed"],
        "completed_with_due": t["completed_with_due"],
        "on_time": t["on_time"],
        "responded": t["responded"],
        "mean_response": _ratio(t["response_seconds"], t["responded"]),
        "mean_resolution": _ratio(t["resolution_seconds"], t["completed"]),
        "median_response": histogram_median(hists["response_hist"]),
        "median_resolution": histogram_median(hists["resolution_hist"]),
        "cost_total": Decimal(t["cost"]),
        "satisfaction": _ratio(t["rating_sum"], t["rated"]),
        "fix_verified": _ratio(t["fixed"], t["judged"]),
    }


def breakdown(selection, start: date, end: date, by: str, backlog_before: date | None):
    """{value of `by`: figures} for the days start..end; 0 or "" stands for none."""
    rows = (
        selection.rows(DayRollup, by)
        .filter(day__gte=start, day__lte=end)
        .values_list(
            by, "received", "completed", "completed_with_due", "on_time", "resolution_hist"
        )
    )
    groups = defaultdict(lambda: {"received": 0, "completed": 0, "with_due": 0, "on_time": 0})
    hists = defaultdict(lambda: defaultdict(int))
    for key, received, completed, with_due, on_time, hist in rows:
        group = groups[key]
        group["received"] += received
        group["completed"] += completed
        group["with_due"] += with_due
        group["on_time"] += on_time
        for bucket, n in hist.items():
            hists[key][bucket] += n
    for key, open_count in backlog(selection, backlog_before, by).items():
        if open_count:
            groups[key]["backlog"] = open_count
    for key, group in groups.items():
        group.setdefault("backlog", 0)
        group["median_resolution"] = histogram_median(hists[key])
    return dict(groups)


def daily(selection, start: date, end: date):
    """[(day, received, resolution histogram of requests completed that day)]."""
    return list(
        selection.rows(DayRollup)
        .filter(day__gte=start, day__lte=end)
        .values_list("day", "received", "resolution_hist")
    )


def grid(selection, start: date, end: date, *, zoom: int, rows_range, cols_range, metric):
    """{(gy, gx): (received, overdue, median resolution seconds)} for squares at `zoom`
    (at most GRID_ZOOM) whose rows and columns at GRID_ZOOM are in the given ranges."""
    shift = GRID_ZOOM - zoom
    cells = (
        selection.rows(CellRollup)
        .filter(
            day__gte=start,
            day__lte=end,
            gy__gte=rows_range[0],
            gy__lte=rows_range[1],
            gx__gte=cols_range[0],
            gx__lte=cols_range[1],
        )
        .annotate(cy=F("gy").bitrightshift(shift), cx=F("gx").bitrightshift(shift))
    )
    medians = metric == "median_resolution"
    sums = {"n": Sum("received"), "od": Sum("overdue")}
    if medians:
        sums.update({rank: Sum(rank) for rank in CELL_RANKS})
    counts = cells.order_by().values("cy", "cx").annotate(**sums)
    return {
        (row["cy"], row["cx"]): (
            row["n"],
            row["od"],
            cell_median([row[rank] for rank in CELL_RANKS]) if medians else None,
        )
        for row in counts
        if row["n"]
    }
