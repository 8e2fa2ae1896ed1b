"""Figures for the director's dashboard and the public transparency page.

Two sources, the same figures:

- the rollups (rollups.py), refreshed every minute: what the dashboard reads once they are
  built, when the user sees every request and no `now` is given. Counts, sums and means
  are exact as of the last refresh ("as of" on the page); medians are read from duration
  histograms, within ±5 % of the exact value; the heat map at fine zooms or under combined
  filters, the cell details and the hotspots count the rollups' per-request facts. They
  change only when the refresh runs, so the KPIs, breakdowns, trend and hotspots (and the
  transparency tables) are computed once per refresh and filters (`_once_per_refresh`).
- the requests themselves: for a restricted queryset (a department's staff, the public
  page), for figures as of a given `now` (tests compare these with hand-computed values),
  and before the first refresh. Aggregate queries over `visible_requests(user)`;
  PostgreSQL computes medians with percentile_cont; SQLite, used in development, has no
  such aggregate, so there the medians are taken in Python over the one column they need.

Which requests count for which figure (periods are half-open, [start, end)):

- received, duplicate, forwarding and self-service rates, cost per request: requests
  received in the period (a work order's cost is split evenly over the requests it fixes,
  so it counts once however the requests are sliced by period or filter);
- on-time completion and time to resolution: requests completed (fixed, not closed
  without a fix) in the period; on-time needs a due date, like `sla_compliance`;
- time to first response: requests first answered in the period;
- open backlog: requests open at the end of the period (or now, for a period not over).
"""

import math
import statistics
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from urllib.parse import urlencode

from django import forms
from django.conf import settings
from django.core.cache import cache, caches
from django.db import connection, transaction
from django.db.models import (
    Aggregate,
    Avg,
    Count,
    DecimalField,
    ExpressionWrapper,
    F,
    FloatField,
    Func,
    OuterRef,
    Q,
    Subquery,
    Sum,
    Value,
)
from django.db.models.functions import Floor, Round, TruncWeek
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.formats import date_format, number_format
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext

from routing.models import District

from . import rollups
from .models import (
    OPEN_STATUSES,
    Channel,
    Crew,
    Department,
    ServiceCategory,
    ServiceRequest,
    Status,
    in_language,
)
from .rollups import RequestFact

# Channels where the resident files the request themselves; the rest are typed in by staff.
SELF_SERVICE_CHANNELS = (Channel.WEB, Channel.API)
DEFAULT_PERIOD_DAYS = 30
HOUR = 3600.0


# --- SQL building blocks -------------------------------------------------------------------


class Seconds(Func):
    """Seconds from one datetime column to another, as a float, in SQL."""

    output_field = FloatField()

    def __init__(self, end, start, **extra):
        super().__init__(F(end), F(start), **extra)

    def _compile(self, compiler):
        end, end_params = compiler.compile(self.source_expressions[0])
        start, start_params = compiler.compile(self.source_expressions[1])
        return end, start, (*end_params, *start_params)

    def as_sql(self, compiler, connection, **extra):
        end, start, params = self._compile(compiler)
        return f"(EXTRACT(EPOCH FROM ({end} - {start}))::double precision)", params

    def as_sqlite(self, compiler, connection, **extra):
        end, start, params = self._compile(compiler)
        return f"((julianday({end}) - julianday({start})) * 86400.0)", params


class Median(Aggregate):
    """PostgreSQL's continuous median; see `_median` for the SQLite fallback."""

    function = "PERCENTILE_CONT"
    name = "Median"
    template = "%(function)s(0.5) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()


def has_sql_median() -> bool:
    return connection.vendor == "postgresql"


def _median_python(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _median(queryset, end, start):
    """Median seconds from `start` to `end` over `queryset`."""
    return _median_of(queryset, Seconds(end, start))


def _median_of(queryset, seconds):
    """Median of the expression `seconds` over `queryset`."""
    if has_sql_median():
        return queryset.aggregate(m=Median(seconds))["m"]
    return _median_python(queryset.annotate(_s=seconds).values_list("_s", flat=True).order_by())


def _grouped_median(queryset, key, end, start):
    """{key value: median seconds from `start` to `end`}; `key` is a field or expression."""
    return _grouped_median_of(queryset, key, Seconds(end, start))


def _grouped_median_of(queryset, key, seconds):
    queryset = queryset.annotate(_k=key) if not isinstance(key, str) else queryset
    key_name = key if isinstance(key, str) else "_k"
    if has_sql_median():
        rows = queryset.values(key_name).annotate(m=Median(seconds)).order_by()
        return {row[key_name]: row["m"] for row in rows}
    groups = defaultdict(list)
    rows = queryset.annotate(_s=seconds).values_list(key_name, "_s").order_by()
    for group, value in rows:
        groups[group].append(value)
    return {group: _median_python(values) for group, values in groups.items()}


def _ratio(part, whole):
    return None if not whole else part / whole


def _hours(seconds):
    return None if seconds is None else seconds / HOUR


# --- Filters -------------------------------------------------------------------------------


class DashboardFilterForm(forms.Form):
    start = forms.DateField(
        label=_("From"), required=False, widget=forms.DateInput({"type": "date"})
    )
    end = forms.DateField(label=_("To"), required=False, widget=forms.DateInput({"type": "date"}))
    department = forms.ModelChoiceField(
        Department.objects.all(), label=_("Department"), required=False
    )
    group = forms.ChoiceField(label=_("Category group"), required=False)
    category = forms.ModelChoiceField(
        ServiceCategory.objects.all(), label=_("Category"), required=False
    )
    district = forms.ModelChoiceField(District.objects.all(), label=_("District"), required=False)
    channel = forms.ChoiceField(
        label=_("Channel"), required=False, choices=[("", "---------"), *Channel.choices]
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        groups = ServiceCategory.objects.values_list("group", flat=True).distinct().order_by()
        self.fields["group"].choices = [("", "---------")] + [(g, g) for g in sorted(groups)]

    def clean(self):
        data = super().clean()
        if data.get("start") and data.get("end") and data["end"] < data["start"]:
            raise forms.ValidationError(_("The period must end after it starts."))
        return data


@dataclass(frozen=True)
class Filters:
    """The dashboard's selection: a period of whole local days and optional dimensions."""

    start: date
    end: date  # inclusive
    department: int | None = None
    group: str = ""
    category: int | None = None
    district: int | None = None
    channel: str = ""

    @classmethod
    def default(cls, today=None):
        today = today or timezone.localdate()
        return cls(start=today - timedelta(days=DEFAULT_PERIOD_DAYS - 1), end=today)

    @classmethod
    def from_form(cls, form):
        default = cls.default()
        data = form.cleaned_data if form.is_valid() else {}
        start = data.get("start") or default.start
        end = data.get("end") or (
            start + (default.end - default.start) if data.get("start") else default.end
        )
        return cls(
            start=start,
            end=end,
            department=data["department"].pk if data.get("department") else None,
            group=data.get("group") or "",
            category=data["category"].pk if data.get("category") else None,
            district=data["district"].pk if data.get("district") else None,
            channel=data.get("channel") or "",
        )

    @classmethod
    def from_query(cls, query):
        """From the dashboard's query string, or from the admin change list's."""
        aliases = {
            "department__id__exact": "department",
            "category__id__exact": "category",
            "district__id__exact": "district",
            "channel__exact": "channel",
        }
        data = {aliases.get(k, k): v for k, v in query.items()}
        if "created_at__gte" in data and "start" not in data:
            data["start"] = data["created_at__gte"][:10]
        if "created_at__lt" in data and "end" not in data:
            try:  # the change list's upper bound is exclusive, the dashboard's inclusive
                data["end"] = (
                    date.fromisoformat(data["created_at__lt"][:10]) - timedelta(1)
                ).isoformat()
            except ValueError:
                pass
        return cls.from_form(DashboardFilterForm(data))

    def as_dict(self):
        """JSON-friendly, for ExportJob.filters."""
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "department": self.department,
            "group": self.group,
            "category": self.category,
            "district": self.district,
            "channel": self.channel,
        }

    @classmethod
    def from_dict(cls, data):
        return cls(
            start=date.fromisoformat(data["start"]),
            end=date.fromisoformat(data["end"]),
            department=data.get("department"),
            group=data.get("group") or "",
            category=data.get("category"),
            district=data.get("district"),
            channel=data.get("channel") or "",
        )

    def query_string(self, **override):
        params = {k: v for k, v in {**self.as_dict(), **override}.items() if v not in (None, "")}
        return urlencode(params)

    # Periods ------------------------------------------------------------------------------
    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    @property
    def range(self) -> tuple[datetime, datetime]:
        tz = timezone.get_current_timezone()
        start = datetime.combine(self.start, time.min, tzinfo=tz)
        end = datetime.combine(self.end + timedelta(days=1), time.min, tzinfo=tz)
        return start, end

    def previous(self) -> "Filters":
        """The period of the same length just before this one, same dimensions."""
        return Filters(
            start=self.start - timedelta(days=self.days),
            end=self.start - timedelta(days=1),
            department=self.department,
            group=self.group,
            category=self.category,
            district=self.district,
            channel=self.channel,
        )

    # Querysets ------------------------------------------------------------------------------
    def apply_dimensions(self, requests):
        if self.department:
            requests = requests.filter(department_id=self.department)
        if self.group:
            requests = requests.filter(category__group=self.group)
        if self.category:
            requests = requests.filter(category_id=self.category)
        if self.district:
            requests = requests.filter(district_id=self.district)
        if self.channel:
            requests = requests.filter(channel=self.channel)
        return requests

    def selection(self) -> rollups.Selection:
        """The same dimensions, for reading rollups."""
        categories = None
        if self.group:
            categories = ServiceCategory.objects.filter(group=self.group)
            if self.category:
                categories = categories.filter(pk=self.category)
            categories = list(categories.values_list("pk", flat=True))
        elif self.category:
            categories = [self.category]
        return rollups.Selection.of(
            department=self.department,
            categories=categories,
            district=self.district,
            channel=self.channel,
        )

    def facts(self):
        """The rollups' facts of requests received in the period that match the dimensions."""
        return self.apply_dimensions(RequestFact.objects.all()).filter(
            created_day__gte=self.start, created_day__lte=self.end
        )

    def apply(self, requests):
        """Requests received in the period that match the dimensions (exports, the map)."""
        start, end = self.range
        return self.apply_dimensions(requests).filter(created_at__gte=start, created_at__lt=end)

    def admin_params(self) -> dict:
        """The same selection in the admin change list's own filter parameters."""
        start, end = self.range
        params = {
            "created_at__gte": start.isoformat(),
            "created_at__lt": end.isoformat(),
        }
        if self.department:
            params["department__id__exact"] = self.department
        if self.category:
            params["category__id__exact"] = self.category
        elif self.group:
            # The change list only allows lookups it offers as filters; ids of the group do.
            ids = ServiceCategory.objects.filter(group=self.group).values_list("pk", flat=True)
            params["category__id__in"] = ",".join(str(pk) for pk in ids)
        if self.district:
            params["district__id__exact"] = self.district
        if self.channel:
            params["channel__exact"] = self.channel
        return params

    def admin_url(self, **extra) -> str:
        return (
            reverse("admin:requests_app_servicerequest_changelist")
            + "?"
            + urlencode({**self.admin_params(), **extra})
        )


def _conditions(start, end, now):
    at = min(end, now)
    return {
        "received": Q(created_at__gte=start, created_at__lt=end),
        "completed": Q(status=Status.COMPLETED, resolved_at__gte=start, resolved_at__lt=end),
        "responded": Q(first_response_at__gte=start, first_response_at__lt=end),
        # Open at `at`: still open, or resolved only afterwards.
        "backlog": Q(created_at__lt=at)
        & (Q(resolved_at__gte=at) | Q(resolved_at__isnull=True, status__in=OPEN_STATUSES)),
    }


def _sees_everything(requests) -> bool:
    """True for an unfiltered queryset of all requests: what the rollups count."""
    query = requests.query
    return (
        requests.model is ServiceRequest
        and not query.where
        and not query.is_sliced
        and not query.combinator
        and not query.distinct
    )


def rollup_state(requests, now=None):
    """The state of the rollups when they can answer for `requests` (see the module's
    docstring), else None: then figures are computed from the requests."""
    if now is not None or not _sees_everything(requests):
        return None
    return rollups.current_state()


def _backlog_day(filters, now):
    """The day at whose start the backlog is counted; None while the period is not over."""
    _start, end = filters.range
    return filters.end + timedelta(days=1) if end <= now else None


def _once_per_refresh(state, name, filters, compute):
    """What `compute` returns for these filters, computed once per refresh.

    Figures read from the rollups and their facts change only when the refresh runs, so
    keeping them until the next one (in this process's cache) makes nothing staler. The
    first view after each refresh computes them: see bench/dashboard.py for that cost.
    """
    key = ":".join(
        [
            "dashboard",
            name,
            str(state.refreshed_at.timestamp()),
            str(_backlog_day(filters, timezone.now())),
            filters.query_string(),
        ]
    )
    return cache.get_or_set(key, compute, timeout=5 * 60)


# --- KPIs ----------------------------------------------------------------------------------


@dataclass
class Kpi:
    key: str
    label: str
    value: float | None
    previous: float | None
    unit: str  # "count", "pct", "hours", "money", "score"
    better: str = "up"  # which direction is good, for colouring the change
    note: str = ""

    @property
    def change(self):
        if self.value is None or self.previous is None:
            return None
        if self.unit == "pct":
            return (self.value - self.previous) * 100  # percentage points
        if self.previous == 0:
            return None
        return (self.value - self.previous) / abs(self.previous) * 100

    @property
    def display(self):
        return format_value(self.value, self.unit)

    @property
    def previous_display(self):
        return format_value(self.previous, self.unit)

    @property
    def change_display(self):
        change = self.change
        if change is None:
            return "—"
        signed = ("+" if change >= 0 else "−") + number_format(abs(change), 1)
        return f"{signed} pts" if self.unit == "pct" else f"{signed} %"

    @property
    def trend(self):
        change = self.change
        if change is None or abs(change) < 0.05:
            return "flat"
        good = (change > 0) == (self.better == "up")
        return "good" if good else "bad"


def format_value(value, unit):
    """A KPI as the reader writes numbers (decimal comma in Spanish)."""
    if value is None:
        return "—"
    if unit == "count":
        return number_format(value, force_grouping=True)
    if unit == "pct":
        return f"{number_format(value * 100, 1)} %"
    if unit == "hours":
        return f"{number_format(value, 1)} h" if value < 48 else f"{number_format(value / 24, 1)} d"
    if unit == "money":
        return number_format(value, 2, force_grouping=True)
    return number_format(value, 2)


def period_figures(requests, filters: Filters, now=None) -> dict:
    """Raw figures for one period; `requests` is already limited to what the user may see."""
    now = now or timezone.now()
    start, end = filters.range
    c = _conditions(start, end, now)
    requests = filters.apply_dimensions(requests)
    relevant = requests.filter(c["received"] | c["completed"] | c["responded"] | c["backlog"])
    aggregates = {
        "received": Count("pk", filter=c["received"]),
        "duplicates": Count("pk", filter=c["received"] & Q(duplicate_of__isnull=False)),
        "forwarded": Count("pk", filter=c["received"] & Q(forward_count__gt=0)),
        "self_service": Count("pk", filter=c["received"] & Q(channel__in=SELF_SERVICE_CHANNELS)),
        "backlog": Count("pk", filter=c["backlog"]),
        "completed": Count("pk", filter=c["completed"]),
        "completed_with_due": Count("pk", filter=c["completed"] & Q(due_at__isnull=False)),
        "on_time": Count("pk", filter=c["completed"] & Q(resolved_at__lte=F("due_at"))),
        "responded": Count("pk", filter=c["responded"]),
        "mean_response": Avg(Seconds("first_response_at", "created_at"), filter=c["responded"]),
        "mean_resolution": Avg(Seconds("resolved_at", "created_at"), filter=c["completed"]),
    }
    if has_sql_median():
        aggregates["median_response"] = Median(
            Seconds("first_response_at", "created_at"), filter=c["responded"]
        )
        aggregates["median_resolution"] = Median(
            Seconds("resolved_at", "created_at"), filter=c["completed"]
        )
    figures = relevant.order_by().aggregate(**aggregates)
    if not has_sql_median():
        figures["median_response"] = _median(
            requests.filter(c["responded"]), "first_response_at", "created_at"
        )
        figures["median_resolution"] = _median(
            requests.filter(c["completed"]), "resolved_at", "created_at"
        )
    figures["cost_total"] = _cost(requests.filter(c["received"]))
    figures.update(satisfaction_figures(requests, start, end))
    return figures


def _cost(requests):
    """A work order fixes every request grouped under it: its cost is split evenly over
    them (to 4 decimals, as in the rollups), so it counts once in all."""
    members = (
        ServiceRequest.objects.filter(work_order=OuterRef("work_order"))
        .order_by()
        .values("work_order")
        .annotate(n=Count("pk"))
        .values("n")
    )
    share = ExpressionWrapper(
        Round(F("work_order__cost") / Subquery(members), precision=4),
        output_field=DecimalField(max_digits=14, decimal_places=4),
    )
    total = (
        requests.filter(work_order__cost__isnull=False)
        .annotate(share=share)
        .aggregate(total=Sum("share"))["total"]
    )
    return Decimal(total or 0).quantize(Decimal("0.0001"))


def rollup_period_figures(filters: Filters, now=None) -> dict:
    """period_figures from the rollups, for all requests."""
    now = now or timezone.now()
    return rollups.period_figures(
        filters.selection(), filters.start, filters.end, _backlog_day(filters, now)
    )


def satisfaction_figures(requests, start, end) -> dict:
    """Average rating (1–5) and share answering "fixed", over surveys of `requests`
    answered in the period (residents who did not say either way are left out)."""
    from surveys.models import Survey

    figures = Survey.objects.filter(
        request__in=requests, answered_at__gte=start, answered_at__lt=end
    ).aggregate(
        satisfaction=Avg("rating"),
        fixed=Count("pk", filter=Q(is_fixed=True)),
        judged=Count("pk", filter=Q(is_fixed__isnull=False)),
    )
    return {
        "satisfaction": figures["satisfaction"],
        "fix_verified": _ratio(figures["fixed"], figures["judged"]),
    }


def kpis(requests, filters: Filters, now=None) -> list[Kpi]:
    median_note = ""
    state = rollup_state(requests, now)
    if state:

        def both_periods():
            return rollup_period_figures(filters), rollup_period_figures(filters.previous())

        cur, prev = _once_per_refresh(state, "kpis", filters, both_periods)
        median_note = _("±5 %")
    else:
        now = now or timezone.now()
        cur = period_figures(requests, filters, now)
        prev = period_figures(requests, filters.previous(), now)

    def both(fn):
        return fn(cur), fn(prev)

    def kpi(key, label, fn, unit, better="up", note=""):
        value, previous = both(fn)
        return Kpi(key, label, value, previous, unit, better, note)

    return [
        kpi("received", _("Received"), lambda f: f["received"], "count", "flat"),
        kpi("backlog", _("Open backlog"), lambda f: f["backlog"], "count", "down"),
        kpi(
            "on_time",
            _("Completed on time"),
            lambda f: _ratio(f["on_time"], f["completed_with_due"]),
            "pct",
        ),
        kpi(
            "median_response",
            _("Median time to first response"),
            lambda f: _hours(f["median_response"]),
            "hours",
            "down",
            median_note,
        ),
        kpi(
            "mean_response",
            _("Mean time to first response"),
            lambda f: _hours(f["mean_response"]),
            "hours",
            "down",
        ),
        kpi(
            "median_resolution",
            _("Median time to resolution"),
            lambda f: _hours(f["median_resolution"]),
            "hours",
            "down",
            median_note,
        ),
        kpi(
            "mean_resolution",
            _("Mean time to resolution"),
            lambda f: _hours(f["mean_resolution"]),
            "hours",
            "down",
        ),
        kpi(
            "satisfaction",
            _("Satisfaction (average of 1–5)"),
            lambda f: f["satisfaction"],
            "score",
        ),
        kpi("fix_verified", _("Fix verified by resident"), lambda f: f["fix_verified"], "pct"),
        kpi(
            "duplicate_rate",
            _("Duplicates"),
            lambda f: _ratio(f["duplicates"], f["received"]),
            "pct",
            "flat",
        ),
        kpi(
            "forward_rate",
            _("Forwarded"),
            lambda f: _ratio(f["forwarded"], f["received"]),
            "pct",
            "down",
        ),
        kpi(
            "self_service",
            _("Self-service (web, API)"),
            lambda f: _ratio(f["self_service"], f["received"]),
            "pct",
        ),
        kpi(
            "cost_per_request",
            _("Work-order cost per request"),
            lambda f: None if not f["received"] else float(f["cost_total"]) / f["received"],
            "money",
            "down",
        ),
    ]


# --- Heat-map grid -------------------------------------------------------------------------

CELL_PIXELS = 48
METRICS = ("count", "median_resolution", "overdue")


def cell_size(zoom: int) -> float:
    """Degrees per grid cell so that a cell is about CELL_PIXELS wide at `zoom`."""
    zoom = max(3, min(19, int(zoom)))
    return 360.0 / (2**zoom) * CELL_PIXELS / 256


def _overdue_q(now):
    return Q(status__in=OPEN_STATUSES, due_at__lt=now) | Q(resolved_at__gt=F("due_at"))


@dataclass
class _Rows:
    """Requests received in the period and how to read them: from the requests, or from
    the rollups' facts (a narrow copy, as of the last refresh)."""

    received: object  # queryset
    # What to count: the facts' covering indexes hold created_day, not the request id.
    counted: str
    overdue: Q
    open: Q
    completed: Q
    resolution: object  # expression: seconds from received to resolved
    responded: Q
    response: object  # seconds from received to first response


def _rows(requests, filters, now, state) -> _Rows:
    if state:
        return _Rows(
            received=filters.facts(),
            counted="created_day",
            overdue=Q(overdue=True),
            open=Q(is_open=True),
            completed=Q(resolution_seconds__isnull=False),
            resolution=F("resolution_seconds"),
            responded=Q(response_seconds__isnull=False),
            response=F("response_seconds"),
        )
    return _Rows(
        received=filters.apply(requests),
        counted="pk",
        overdue=_overdue_q(now or timezone.now()),
        open=Q(status__in=OPEN_STATUSES),
        completed=Q(status=Status.COMPLETED, resolved_at__isnull=False),
        resolution=Seconds("resolved_at", "created_at"),
        responded=Q(first_response_at__isnull=False),
        response=Seconds("first_response_at", "created_at"),
    )


def _cell(gy, gx, size, count, value):
    return {
        "gy": gy,
        "gx": gx,
        "south": gy * size,
        "west": gx * size,
        "size": size,
        "count": count,
        "value": value,
    }


def _cell_value(metric, count, overdue, median_seconds):
    if metric == "count":
        return count
    if metric == "overdue":
        return round(100 * overdue / count, 1)
    value = _hours(median_seconds)
    return None if value is None else round(value, 1)


def grid(requests, filters: Filters, *, bbox, zoom, metric="count", now=None) -> dict:
    """Requests received in the period, counted in square cells of the current map view."""
    zoom = max(3, min(19, int(zoom)))
    size = cell_size(zoom)
    west, south, east, north = bbox
    state = rollup_state(requests, now)
    selection = filters.selection() if state else None
    if state and zoom <= rollups.GRID_ZOOM and len(selection.dimensions) <= 1:
        # Whole squares at GRID_ZOOM add up to the squares at this zoom.
        base = rollups.GRID_SIZE
        cells = rollups.grid(
            selection,
            filters.start,
            filters.end,
            zoom=zoom,
            rows_range=(math.floor((south - size) / base), math.floor((north + size) / base)),
            cols_range=(math.floor((west - size) / base), math.floor((east + size) / base)),
            metric=metric,
        )
        return {
            "zoom": zoom,
            "size": size,
            "metric": metric,
            "as_of": state.refreshed_at.isoformat(),
            "cells": [
                _cell(gy, gx, size, count, _cell_value(metric, count, overdue, median))
                for (gy, gx), (count, overdue, median) in cells.items()
            ],
        }
    rows = _rows(requests, filters, now, state)
    # A little margin so cells cut by the map edge are whole.
    received = rows.received.filter(
        lat__gte=south - size, lat__lte=north + size, lng__gte=west - size, lng__lte=east + size
    )
    if state:
        received = _in_squares(received, south - size, west - size, north + size, east + size)
    received = received.annotate(cy=Floor(F("lat") / Value(size)), cx=Floor(F("lng") / Value(size)))
    counts = (
        received.values("cy", "cx")
        .annotate(count=Count(rows.counted), overdue=Count(rows.counted, filter=rows.overdue))
        .order_by()
    )
    medians = {}
    if metric == "median_resolution":
        medians = _cell_medians(received.filter(rows.completed), rows.resolution)
    cells = [
        _cell(
            int(row["cy"]),
            int(row["cx"]),
            size,
            row["count"],
            _cell_value(metric, row["count"], row["overdue"], medians.get((row["cy"], row["cx"]))),
        )
        for row in counts
    ]
    data = {"zoom": zoom, "size": size, "metric": metric, "cells": cells}
    if state:
        data["as_of"] = state.refreshed_at.isoformat()
    return data


def _in_squares(facts, south, west, north, east):
    """Facts in the rollup squares covering the box: what the index fact_square finds."""
    base = rollups.GRID_SIZE

    rows = (math.floor(south / base), math.floor(north / base))
    cols = (math.floor(west / base), math.floor(east / base))
    if (rows[1] - rows[0] + 1) * (cols[1] - cols[0] + 1) > 1000:  # zoomed far out
        return facts.filter(gy__range=rows, gx__range=cols)
    # Lists, not ranges: PostgreSQL then walks the index square by square.
    return facts.filter(gy__in=range(rows[0], rows[1] + 1), gx__in=range(cols[0], cols[1] + 1))


def _cell_medians(completed, seconds) -> dict:
    """{(cy, cx): median of `seconds`} over requests annotated with their cell."""
    if has_sql_median():
        return {
            (r["cy"], r["cx"]): r["m"]
            for r in completed.values("cy", "cx").annotate(m=Median(seconds)).order_by()
        }
    groups = defaultdict(list)
    for cy, cx, value in completed.annotate(_s=seconds).values_list("cy", "cx", "_s").order_by():
        groups[(cy, cx)].append(value)
    return {key: _median_python(v) for key, v in groups.items()}


def cell_detail(requests, filters: Filters, *, zoom, gy, gx, now=None) -> dict:
    size = cell_size(zoom)
    south, west = gy * size, gx * size
    bounds = {"lat__gte": south, "lat__lt": south + size, "lng__gte": west, "lng__lt": west + size}
    state = rollup_state(requests, now)
    rows = _rows(requests, filters, now, state)
    in_cell = rows.received.filter(**bounds)
    if state:
        in_cell = _in_squares(in_cell, south, west, south + size, west + size)
    top = (
        in_cell.values("category__name")
        .annotate(n=Count(rows.counted))
        .order_by("-n", "category__name")[:5]
    )
    return {
        "count": in_cell.count(),
        "top_categories": [{"name": r["category__name"], "count": r["n"]} for r in top],
        "median_response_hours": _round(
            _hours(_median_of(in_cell.filter(rows.responded), rows.response))
        ),
        "median_resolution_hours": _round(
            _hours(_median_of(in_cell.filter(rows.completed), rows.resolution))
        ),
        "admin_url": filters.admin_url(**{k: f"{v:.6f}" for k, v in bounds.items()}),
    }


def _round(value, digits=1):
    return None if value is None else round(value, digits)


# --- Breakdowns, trends, hotspots ------------------------------------------------------------

DIMENSIONS = {
    "district": (_("District"), District, "district__id__exact"),
    "department": (_("Department"), Department, "department__id__exact"),
    "category": (_("Category"), ServiceCategory, "category__id__exact"),
    "crew": (_("Crew"), Crew, "crew__id__exact"),
}


@dataclass
class BreakdownRow:
    key: int | None
    label: str
    label_es: str = ""  # kept between refreshes, so read in any language (display_label)
    received: int = 0
    backlog: int = 0
    resolved: int = 0
    on_time_pct: float | None = None
    median_resolution_hours: float | None = None
    admin_url: str = ""

    @property
    def display_label(self) -> str:
        return in_language(self, "label")


def breakdown(requests, filters: Filters, dimension: str, now=None) -> list[BreakdownRow]:
    state = rollup_state(requests, now)
    if state:
        return _once_per_refresh(
            state,
            f"breakdown:{dimension}",
            filters,
            lambda: _breakdown(requests, filters, dimension, now, state),
        )
    return _breakdown(requests, filters, dimension, now, state)


def _breakdown(requests, filters, dimension, now, state):
    _label, model, admin_param = DIMENSIONS[dimension]
    if state:
        if filters.selection().grain(dimension):
            by_key, compliance, medians = _rollup_breakdown(filters, dimension)
        else:
            by_key, compliance, medians = _facts_breakdown(filters, dimension)
    else:
        by_key, compliance, medians = _exact_breakdown(requests, filters, dimension, now)
    keys = set(by_key) | set(compliance) | set(medians)
    # select_related(): a crew names its department.
    objects = model.objects.select_related().filter(pk__in=[k for k in keys if k])
    with translation.override(settings.LANGUAGE_CODE):
        names = {obj.pk: str(obj) for obj in objects}
    with translation.override("es"):
        names_es = {obj.pk: str(obj) for obj in objects}
    rows = []
    for key in keys:
        row = BreakdownRow(
            key=key,
            label=names.get(key, "—") if key else _("(none)"),
            label_es=names_es.get(key, "") if key else "",
        )
        if key in by_key:
            row.received = by_key[key]["received"]
            row.backlog = by_key[key]["backlog"]
        if key in compliance:
            row.resolved = compliance[key]["resolved"]
            row.on_time_pct = compliance[key]["on_time_pct"]
        row.median_resolution_hours = _round(_hours(medians.get(key)))
        if key:
            row.admin_url = filters.admin_url(**{admin_param: key})
        rows.append(row)
    rows.sort(key=lambda r: (-r.received, -r.backlog, str(r.label)))
    return rows


def _rollup_breakdown(filters, dimension):
    groups = rollups.breakdown(
        filters.selection(),
        filters.start,
        filters.end,
        dimension,
        _backlog_day(filters, timezone.now()),
    )
    by_key, compliance, medians = {}, {}, {}
    for key, group in groups.items():
        key = key or None  # 0 or "": the requests without one
        if group["received"] or group["backlog"]:
            by_key[key] = group
        if group["with_due"]:
            compliance[key] = {
                "resolved": group["with_due"],
                "on_time_pct": round(100 * group["on_time"] / group["with_due"], 1),
            }
        if group["completed"]:
            medians[key] = group["median_resolution"]
    return by_key, compliance, medians


def _facts_breakdown(filters, dimension):
    """A breakdown no rollup grain holds (crews under other filters), from the facts."""
    facts = filters.selection().facts().order_by()

    def counts(rows, **extra):
        # Count("*") and the day: the covering indexes have no request id.
        return {
            row[dimension]: row
            for row in rows.values(dimension).annotate(n=Count("*"), **extra).order_by()
        }

    received = counts(facts.filter(created_day__gte=filters.start, created_day__lte=filters.end))
    backlog = {k: row["n"] for k, row in counts(facts.filter(ended_day__isnull=True)).items()}
    before = _backlog_day(filters, timezone.now())
    if before is not None:
        for key, row in counts(facts.filter(created_day__gte=before)).items():
            backlog[key] = backlog.get(key, 0) - row["n"]
        for key, row in counts(facts.filter(ended_day__gte=before)).items():
            backlog[key] = backlog.get(key, 0) + row["n"]
    completed = facts.filter(completed_day__gte=filters.start, completed_day__lte=filters.end)
    done = counts(
        completed,
        with_due=Count("completed_day", filter=Q(with_due=True)),
        on_time=Count("completed_day", filter=Q(on_time=True)),
    )
    by_key = {}
    for key in set(received) | set(backlog):
        n, open_count = received.get(key, {}).get("n", 0), backlog.get(key, 0)
        if n or open_count:
            by_key[key] = {"received": n, "backlog": open_count}
    compliance = {
        key: {
            "resolved": row["with_due"],
            "on_time_pct": round(100 * row["on_time"] / row["with_due"], 1),
        }
        for key, row in done.items()
        if row["with_due"]
    }
    medians = _grouped_median_of(completed, dimension, F("resolution_seconds"))
    return by_key, compliance, medians


def _exact_breakdown(requests, filters, dimension, now):
    now = now or timezone.now()
    start, end = filters.range
    c = _conditions(start, end, now)
    requests = filters.apply_dimensions(requests)
    counts = (
        requests.filter(c["received"] | c["backlog"])
        .values(dimension)
        .annotate(
            received=Count("pk", filter=c["received"]), backlog=Count("pk", filter=c["backlog"])
        )
        .order_by()
    )
    completed = requests.filter(c["completed"])
    compliance = {
        row[dimension]: row
        for row in completed.filter(due_at__isnull=False).sla_compliance(dimension)
    }
    medians = _grouped_median(completed, dimension, "resolved_at", "created_at")
    return {row[dimension]: row for row in counts}, compliance, medians


def _weeks(filters):
    weeks = []
    monday = filters.start - timedelta(days=filters.start.weekday())
    while monday <= filters.end:
        weeks.append(monday)
        monday += timedelta(days=7)
    return weeks


def weekly_trend(requests, filters: Filters, now=None) -> list[dict]:
    """Received requests and median resolution hours per week (weeks start on Monday)."""
    state = rollup_state(requests, now)
    if state:
        return _once_per_refresh(state, "trend", filters, lambda: _rollup_trend(filters))
    return _exact_trend(requests, filters)


def _rollup_trend(filters):
    received = defaultdict(int)
    hists = defaultdict(list)
    for day, count, hist in rollups.daily(filters.selection(), filters.start, filters.end):
        monday = day - timedelta(days=day.weekday())
        received[monday] += count
        hists[monday].append(hist)
    return [
        {
            "week": week,
            "received": received.get(week, 0),
            "median_resolution_hours": _round(
                _hours(rollups.histogram_median(rollups.merge_hists(hists[week])))
            ),
        }
        for week in _weeks(filters)
    ]


def _exact_trend(requests, filters):
    start, end = filters.range
    tz = timezone.get_current_timezone()
    requests = filters.apply_dimensions(requests)
    received = dict(
        requests.filter(created_at__gte=start, created_at__lt=end)
        .annotate(week=TruncWeek("created_at", tzinfo=tz))
        .values_list("week")
        .annotate(n=Count("pk"))
        .order_by()
    )
    completed = requests.filter(
        status=Status.COMPLETED, resolved_at__gte=start, resolved_at__lt=end
    )
    medians = _grouped_median(
        completed, TruncWeek("resolved_at", tzinfo=tz), "resolved_at", "created_at"
    )

    def day(value):
        return value.astimezone(tz).date() if isinstance(value, datetime) else value

    received = {day(k): v for k, v in received.items()}
    medians = {day(k): v for k, v in medians.items()}
    return [
        {
            "week": week,
            "received": received.get(week, 0),
            "median_resolution_hours": _round(_hours(medians.get(week))),
        }
        for week in _weeks(filters)
    ]


@dataclass
class Chart:
    """A bar or line chart laid out for an inline SVG (no JavaScript)."""

    width: int = 640
    height: int = 180
    pad_left: int = 44
    pad_bottom: int = 26
    pad_top: int = 10
    bars: list = field(default_factory=list)
    points: str = ""
    dots: list = field(default_factory=list)
    ticks: list = field(default_factory=list)
    labels: list = field(default_factory=list)
    empty: bool = True


def svg_chart(rows, key, kind="bar", width=640, height=180, counts=False) -> Chart:
    """`counts`: the values are whole numbers, so the axis is too (no "0.8 requests")."""
    chart = Chart(width=width, height=height)
    values = [row[key] for row in rows]
    present = [v for v in values if v is not None]
    chart.empty = not present or max(present) == 0
    top = max(present) if present and max(present) > 0 else 1
    if counts:
        top = 4 * math.ceil(top / 4)  # five ticks, each a whole number
    plot_w = width - chart.pad_left - 8
    plot_h = height - chart.pad_top - chart.pad_bottom
    step = plot_w / max(1, len(rows))
    base = chart.pad_top + plot_h
    for i in range(5):
        value = top * i / 4
        y = base - plot_h * i / 4
        chart.ticks.append({"y": round(y, 1), "label": number_format(value, 0 if top >= 4 else 1)})
    every = max(1, len(rows) // 8)
    # Translators: a date format (Django's "date" filter) for a week's Monday under a
    # chart; keep it short.
    week_format = pgettext("week on a chart", "M j")
    points = []
    for i, (row, value) in enumerate(zip(rows, values, strict=True)):
        x = chart.pad_left + step * i
        if i % every == 0:
            chart.labels.append(
                {"x": round(x + step / 2, 1), "text": date_format(row["week"], week_format)}
            )
        if value is None:
            continue
        h = plot_h * value / top
        title = f"{row['week']:%Y-%m-%d}: {value:g}"
        if kind == "bar":
            chart.bars.append(
                {
                    "x": round(x + step * 0.1, 1),
                    "y": round(base - h, 1),
                    "w": round(step * 0.8, 1),
                    "h": round(h, 1),
                    "title": title,
                }
            )
        else:
            cx, cy = round(x + step / 2, 1), round(base - h, 1)
            points.append(f"{cx},{cy}")
            chart.dots.append({"x": cx, "y": cy, "title": title})
    chart.points = " ".join(points)
    return chart


def hotspots(requests, filters: Filters, *, min_count=3, limit=15, now=None) -> list[dict]:
    """Places where the same problem keeps being reported: category and location rounded
    to 0.001° (about 110 m north–south), received in the period at least `min_count` times."""
    state = rollup_state(requests, now)
    if state:
        return _once_per_refresh(
            state,
            f"hotspots:{min_count}:{limit}",
            filters,
            lambda: _hotspots(requests, filters, min_count, limit, now, state),
        )
    return _hotspots(requests, filters, min_count, limit, now, state)


@contextmanager
def _memory_for_grouping():
    """Nearly every place is its own group (a month at 10M requests: ~200,000 groups):
    with the default work_mem (4 MB) PostgreSQL's hash table spills to disk."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL work_mem = '64MB'")
        yield


def _hotspots(requests, filters, min_count, limit, now, state):
    source = _rows(requests, filters, now, state)
    rows = (
        source.received.filter(lat__isnull=False, lng__isnull=False)
        .annotate(
            ry=Floor(F("lat") * Value(1000.0) + Value(0.5)),
            rx=Floor(F("lng") * Value(1000.0) + Value(0.5)),
        )
        .values("category", "ry", "rx")
        .annotate(n=Count(source.counted), open=Count(source.counted, filter=source.open))
        .filter(n__gte=min_count)
        .order_by("-n")
    )
    # A month at 10M requests has ~15,000 places reported three times or more: read them
    # most reported first, and only as far as the last count that can still make the list.
    top = []
    with _memory_for_grouping():
        for row in rows.iterator(chunk_size=4 * limit):
            if len(top) >= limit and row["n"] < top[limit - 1]["n"]:
                break
            top.append(row)
    # Ties broken by name here, not in SQL: grouping on the name too made PostgreSQL sort.
    names = dict(ServiceCategory.objects.values_list("pk", "name"))
    rows = sorted(top, key=lambda row: (-row["n"], names.get(row["category"], "")))[:limit]
    for row in rows:
        row["category__name"] = names.get(row["category"])
    result = []
    for row in rows:
        lat, lng = row["ry"] / 1000, row["rx"] / 1000
        bounds = {
            "lat__gte": f"{lat - 0.0005:.6f}",
            "lat__lt": f"{lat + 0.0005:.6f}",
            "lng__gte": f"{lng - 0.0005:.6f}",
            "lng__lt": f"{lng + 0.0005:.6f}",
        }
        result.append(
            {
                "category": row["category__name"],
                "lat": lat,
                "lng": lng,
                "count": row["n"],
                "open": row["open"],
                "admin_url": filters.admin_url(category__id__exact=row["category"], **bounds),
            }
        )
    return result


# --- The public transparency page ------------------------------------------------------------


def transparency_min_cell() -> int:
    return getattr(settings, "TRANSPARENCY_MIN_CELL", 5)


@dataclass
class PublicRow:
    label: str
    received: int | None
    on_time_pct: float | None
    median_response_hours: float | None
    median_resolution_hours: float | None
    suppressed: bool = False
    label_es: str = ""  # a category's Spanish name; the open data keeps `label`

    @property
    def display_label(self) -> str:
        return in_language(self, "label")


TRANSPARENCY_DIMENSIONS = ("category", "district")


# The public page's periods, in days; the default first.
TRANSPARENCY_PERIODS = (90, 30, 365)


def transparency_filters(days: int) -> Filters:
    today = timezone.localdate()
    return Filters(start=today - timedelta(days=days - 1), end=today)


def transparency_tables(filters: Filters) -> list[tuple[str, list[PublicRow]]]:
    """The public page's tables of all public requests, by category and by district.

    They read the requests table (the rollups do not know which requests are public): at
    ten million requests that takes seconds. Everyone sees the same tables, so once the
    rollups run they are computed once per refresh for all web processes (the shared
    cache), like the dashboard's at most a minute stale; the refresh task computes the
    default period's right away (transparency_warm), so visitors do not wait for them.
    Before the first refresh (development, tests), every view computes them.
    """

    def compute():
        public = ServiceRequest.objects.public()
        return [(d, transparency_table(public, filters, d)) for d in TRANSPARENCY_DIMENSIONS]

    state = rollups.current_state()
    if state is None:
        return compute()
    key = ":".join(
        [
            "transparency",
            str(transparency_min_cell()),
            str(state.refreshed_at.timestamp()),
            filters.query_string(),
        ]
    )
    shared = caches["shared"]
    try:
        tables = shared.get(key)
    except Exception:  # the cache's Redis is down: the page answers all the same
        return compute()
    if tables is None:
        tables = compute()
        try:
            shared.set(key, tables, 5 * 60)
        except Exception:
            pass
    return tables


def transparency_warm():
    """The default period's public tables, computed as soon as the rollups are refreshed."""
    return transparency_tables(transparency_filters(TRANSPARENCY_PERIODS[0]))


def transparency_table(public_requests, filters: Filters, dimension: str) -> list[PublicRow]:
    """Counts, on-time share and median times by category or district, with any figure
    resting on fewer than TRANSPARENCY_MIN_CELL requests left out, so that nobody can be
    singled out from a small cell. Only names of categories and districts, never a request."""
    k = transparency_min_cell()
    start, end = filters.range
    c = _conditions(start, end, timezone.now())
    requests = filters.apply_dimensions(public_requests)
    key = {"category": "category__name", "district": "district__name"}[dimension]
    names = (key, "category__name_es") if dimension == "category" else (key,)
    figures = {
        "received": Count("pk", filter=c["received"]),
        "completed_with_due": Count("pk", filter=c["completed"] & Q(due_at__isnull=False)),
        "on_time": Count("pk", filter=c["completed"] & Q(resolved_at__lte=F("due_at"))),
        "responded": Count("pk", filter=c["responded"]),
        "completed": Count("pk", filter=c["completed"]),
    }
    if has_sql_median():  # one pass over the requests for everything
        figures["median_response"] = Median(
            Seconds("first_response_at", "created_at"), filter=c["responded"]
        )
        figures["median_resolution"] = Median(
            Seconds("resolved_at", "created_at"), filter=c["completed"]
        )
    counts = (
        requests.filter(c["received"] | c["completed"] | c["responded"])
        .values(*names)
        .annotate(**figures)
        .filter(Q(received__gt=0) | Q(completed__gt=0))
        .order_by(key)
    )
    if has_sql_median():
        counts = list(counts)
        response = {row[key]: row["median_response"] for row in counts}
        resolution = {row[key]: row["median_resolution"] for row in counts}
    else:
        response = _grouped_median(
            requests.filter(c["responded"]), key, "first_response_at", "created_at"
        )
        resolution = _grouped_median(
            requests.filter(c["completed"]), key, "resolved_at", "created_at"
        )
    rows = []
    for row in counts:
        name = row[key] or _("Not in a district")
        rows.append(
            PublicRow(
                label=name,
                label_es=row.get("category__name_es") or "",
                received=row["received"] if row["received"] >= k else None,
                on_time_pct=round(100 * row["on_time"] / row["completed_with_due"], 1)
                if row["completed_with_due"] >= k
                else None,
                median_response_hours=_round(_hours(response.get(row[key])))
                if row["responded"] >= k
                else None,
                median_resolution_hours=_round(_hours(resolution.get(row[key])))
                if row["completed"] >= k
                else None,
                suppressed=row["received"] < k,
            )
        )
    return rows
