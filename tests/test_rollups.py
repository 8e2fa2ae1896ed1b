# ruff: noqa: F811  (the hand-built city fixtures are shared from test_dashboard.py)
"""The dashboard's rollups: the same figures as the exact computation, kept incrementally.

Uses the hand-built city of test_dashboard.py (R1–R8, 1–10 March 2024). Figures from the
requests themselves (now=NOW) are the reference; the rollups must give the same counts,
sums and means, and medians within 5 %.
"""

import math
import random
import statistics
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection, connections  # noqa: F401 (read by skipif)
from django.urls import reverse
from django.utils import timezone

from requests_app import dashboard, rollups
from requests_app.access import visible_requests
from requests_app.dashboard import Filters
from requests_app.models import Channel, ServiceRequest, StaffRole, Status, WorkOrder
from requests_app.rollups import CellRollup, DayRollup, RequestFact, rollups_refresh
from surveys.models import Survey

from .factories import CategoryFactory, ServiceRequestFactory, staff_user
from .test_dashboard import NOW, PERIOD, at, city, director, urlpatterns  # noqa: F401

pytestmark = [pytest.mark.urls(__name__), pytest.mark.django_db]

postgresql_only = pytest.mark.skipif(
    "connection.vendor != 'postgresql'", reason="PostgreSQL's bulk build and advisory lock"
)
MEDIANS = {"median_response", "median_resolution"}
BBOX = (-71.2, 42.2, -71.0, 42.4)


def kpis(user, filters=PERIOD, now=None):
    return {k.key: k for k in dashboard.kpis(visible_requests(user), filters, now=now)}


def assert_same_kpis(user, filters=PERIOD):
    exact, rolled = kpis(user, filters, now=NOW), kpis(user, filters)
    for key, kpi in exact.items():
        for which in ("value", "previous"):
            want, got = getattr(kpi, which), getattr(rolled[key], which)
            if want is None:
                assert got is None, (key, which)
            elif key in MEDIANS:
                assert got == pytest.approx(want, rel=0.05), (key, which)
            else:
                assert got == pytest.approx(want, rel=1e-6), (key, which)  # julianday


def snapshot():
    """Every rollup row, rounded so that float sums compare after +x−x deltas."""

    def rows(model, exclude=("id",)):
        names = [f.attname for f in model._meta.concrete_fields if f.attname not in exclude]
        result = set()
        for obj in model.objects.all():
            values = []
            for name in names:
                value = getattr(obj, name)
                if isinstance(value, float):
                    value = round(value, 3)
                elif isinstance(value, Decimal):
                    value = value.normalize()
                elif isinstance(value, dict):
                    value = tuple(sorted((str(k), v) for k, v in value.items() if v))
                values.append(value)
            result.add(tuple(values))
        return result

    return {
        "facts": rows(RequestFact, exclude=("overdue",)),
        "days": rows(DayRollup),
        "cells": rows(CellRollup, exclude=("id", "overdue")),
    }


# --- Same figures as the exact computation -----------------------------------------------------


def test_rollup_kpis_match_the_hand_computed_values(city, director):
    rollups_refresh()
    k = kpis(director)
    assert (k["received"].value, k["received"].previous) == (5, 2)
    assert (k["backlog"].value, k["backlog"].previous) == (2, 1)
    assert k["on_time"].value == pytest.approx(1 / 3)
    assert k["mean_response"].value == pytest.approx(2.5, abs=0.01)
    assert k["mean_resolution"].value == pytest.approx(82, abs=0.01)
    # Medians from 5 % histograms: 1.5 h, 72 h (exact: see test_dashboard.py).
    assert k["median_response"].value == pytest.approx(1.5, rel=0.05)
    assert k["median_resolution"].value == pytest.approx(72, rel=0.05)
    assert (k["cost_per_request"].value, k["cost_per_request"].previous) == (30.0, 0.0)
    assert k["satisfaction"].value == pytest.approx(11 / 3)
    assert (k["satisfaction"].previous, k["fix_verified"].previous) == (3, 1.0)
    assert_same_kpis(director)


@pytest.mark.parametrize(
    "dimensions",
    [
        {"department": "parks"},
        {"channel": Channel.PHONE},
        {"group": "Streets"},
        {"category": "tree"},
        {"department": "streets", "channel": Channel.WEB},  # two filters: the fine grain
        {"group": "Streets", "channel": Channel.PHONE},
    ],
)
def test_rollup_kpis_follow_the_filters(city, director, dimensions):
    rollups_refresh()
    values = {
        k: city[v].pk if k in ("department", "category") else v for k, v in dimensions.items()
    }
    assert_same_kpis(director, Filters(start=PERIOD.start, end=PERIOD.end, **values))


def test_district_filter_and_requests_without_a_district(city, director):
    ServiceRequestFactory(category=city["pothole"], created_at=at(3, 7), district=None)
    rollups_refresh()
    assert_same_kpis(director, Filters(start=PERIOD.start, end=PERIOD.end))
    assert_same_kpis(
        director, Filters(start=PERIOD.start, end=PERIOD.end, district=city["district"].pk)
    )


@pytest.mark.parametrize("dimension", ["district", "department", "category", "crew"])
def test_rollup_breakdowns_match_the_exact_ones(city, director, dimension):
    rollups_refresh()
    requests = visible_requests(director)
    for filters in (PERIOD, Filters(start=PERIOD.start, end=PERIOD.end, channel=Channel.WEB)):
        exact = dashboard.breakdown(requests, filters, dimension, now=NOW)
        rolled = dashboard.breakdown(requests, filters, dimension)
        assert [(r.label, r.received, r.backlog, r.resolved, r.on_time_pct) for r in rolled] == [
            (r.label, r.received, r.backlog, r.resolved, r.on_time_pct) for r in exact
        ]
        for a, b in zip(rolled, exact, strict=True):
            if b.median_resolution_hours is None:
                assert a.median_resolution_hours is None
            else:
                assert a.median_resolution_hours == pytest.approx(b.median_resolution_hours, 0.05)


def test_rollup_weekly_trend_matches_the_exact_one(city, director):
    rollups_refresh()
    requests = visible_requests(director)
    rolled = dashboard.weekly_trend(requests, PERIOD)
    exact = dashboard.weekly_trend(requests, PERIOD, now=NOW)
    assert [r["received"] for r in rolled] == [r["received"] for r in exact] == [2, 3]
    assert [r["median_resolution_hours"] for r in rolled] == pytest.approx([87, 72], rel=0.05)


@pytest.mark.parametrize("zoom", [5, 12, 17])
@pytest.mark.parametrize("metric", ["count", "overdue", "median_resolution"])
def test_rollup_grid_matches_the_exact_one(city, director, zoom, metric):
    state = rollups_refresh()
    requests = visible_requests(director)
    rolled = dashboard.grid(requests, PERIOD, bbox=BBOX, zoom=zoom, metric=metric)
    # Overdue is counted as of the refresh.
    exact = dashboard.grid(
        requests, PERIOD, bbox=BBOX, zoom=zoom, metric=metric, now=state.refreshed_at
    )

    def cells(data):
        return sorted((c["gy"], c["gx"], c["count"], c["value"]) for c in data["cells"])

    assert "as_of" in rolled and "as_of" not in exact
    if metric == "median_resolution":
        # Squares up to GRID_ZOOM keep coarse buckets (±19 %); finer ones count the facts.
        precision = 0.19 if zoom <= rollups.GRID_ZOOM else 1e-9
        for a, b in zip(cells(rolled), cells(exact), strict=True):
            assert a[:3] == b[:3]
            if b[3] is None:
                assert a[3] is None
            else:
                assert a[3] == pytest.approx(b[3], rel=precision)
    else:
        assert cells(rolled) == cells(exact)


def test_grid_under_two_filters_counts_the_facts(city, director):
    rollups_refresh()
    filters = Filters(
        start=PERIOD.start, end=PERIOD.end, department=city["streets"].pk, channel=Channel.WEB
    )
    grid = dashboard.grid(visible_requests(director), filters, bbox=BBOX, zoom=12)
    assert sum(c["count"] for c in grid["cells"]) == 1  # R1


def test_cell_detail_and_hotspots_from_the_facts(city, director):
    for _ in range(2):
        ServiceRequestFactory(
            category=city["pothole"], created_at=at(3, 8), lat=42.30012, lng=-71.10008
        )
    rollups_refresh()
    requests = visible_requests(director)
    size = dashboard.cell_size(17)
    gy, gx = int(42.35 // size), int(-71.05 // size)
    rolled = dashboard.cell_detail(requests, PERIOD, zoom=17, gy=gy, gx=gx)
    exact = dashboard.cell_detail(requests, PERIOD, zoom=17, gy=gy, gx=gx, now=NOW)
    assert rolled == exact
    assert rolled["count"] == 2 and rolled["median_response_hours"] == 1.0
    assert dashboard.hotspots(requests, PERIOD) == dashboard.hotspots(requests, PERIOD, now=NOW)


# --- When the rollups answer, and what the page says -----------------------------------------


def test_exact_figures_until_the_first_refresh_and_for_a_department(city, director):
    requests = visible_requests(director)
    assert dashboard.rollup_state(requests) is None
    rollups_refresh()
    assert dashboard.rollup_state(requests) is not None
    assert dashboard.rollup_state(requests, now=NOW) is None
    parks_staff = staff_user("pat", StaffRole.DEPARTMENT_STAFF, city["parks"])
    assert dashboard.rollup_state(visible_requests(parks_staff)) is None
    assert kpis(parks_staff)["received"].value == 2


def test_dashboard_page_says_how_old_the_figures_are(city, director, client):
    client.force_login(director)
    query = {"start": "2024-03-01", "end": "2024-03-10"}
    page = client.get(reverse("dashboard:home"), query).content.decode()
    assert "Live figures." in page
    state = rollups_refresh()
    page = client.get(reverse("dashboard:home"), query).content.decode()
    as_of = timezone.localtime(state.refreshed_at).strftime("%H:%M:%S")
    assert f"Figures as of {as_of}" in page
    assert 'data-testid="kpi-received-value">5<' in page
    assert "±5 %" in page
    grid = client.get(
        reverse("dashboard:grid"), {**query, "bbox": "-71.2,42.2,-71.0,42.4", "zoom": 12}
    )
    assert grid.json()["as_of"] == state.refreshed_at.isoformat()
    assert sum(c["count"] for c in grid.json()["cells"]) == 5


def test_a_late_refresh_is_pointed_out(city, director, client):
    rollups_refresh(now=timezone.now() - timedelta(minutes=10))
    client.force_login(director)
    page = client.get(reverse("dashboard:home")).content.decode()
    assert "The refresh is late" in page


def test_transparency_tables_are_those_of_the_last_refresh(city, settings):
    settings.TRANSPARENCY_MIN_CELL = 1
    public = ServiceRequest.objects.public()

    def computed():
        return [
            (d, dashboard.transparency_table(public, PERIOD, d)) for d in ("category", "district")
        ]

    assert dashboard.transparency_tables(PERIOD) == computed()  # no rollups: every time
    rollups_refresh()
    before = dashboard.transparency_tables(PERIOD)
    assert before == computed()
    ServiceRequestFactory(
        category=city["tree"], department=city["parks"], created_at=at(3, 9), is_public=True
    )
    assert dashboard.transparency_tables(PERIOD) == before  # until the next refresh
    rollups_refresh()
    assert dashboard.transparency_tables(PERIOD) == computed() != before


def test_the_refresh_task_computes_the_default_public_tables_ahead(city, django_assert_num_queries):
    from requests_app.tasks import refresh_rollups

    refresh_rollups()
    default = dashboard.transparency_filters(dashboard.TRANSPARENCY_PERIODS[0])
    with django_assert_num_queries(1):  # the rollups' state; the tables come from the cache
        tables = dashboard.transparency_tables(default)
    public = ServiceRequest.objects.public()
    assert tables == [
        (d, dashboard.transparency_table(public, default, d)) for d in ("category", "district")
    ]


# --- Incremental refresh -------------------------------------------------------------------------


def test_refresh_picks_up_changes_and_running_it_again_changes_nothing(city, director):
    rollups_refresh()
    assert kpis(director)["received"].value == 5
    new = ServiceRequestFactory(
        category=city["tree"], department=city["parks"], created_at=at(3, 9), channel="web"
    )
    city["R4"].change_status(Status.COMPLETED)
    result = rollups_refresh()
    assert not result.built and result.changed >= 2
    k = kpis(director)
    assert k["received"].value == 6
    assert k["self_service"].value == pytest.approx(3 / 6)
    before = snapshot()
    again = rollups_refresh()
    assert again.changed == 0
    assert snapshot() == before
    assert new.pk in {f.request_id for f in RequestFact.objects.all()}


def test_incremental_refresh_agrees_with_a_rebuild(city, director):
    rollups_refresh()
    r = city
    # A new request, a completion, a reopening, a forward, a new category, a survey answer,
    # a work order completed with its cost and a request joining another's work order.
    ServiceRequestFactory(category=r["pothole"], department=r["streets"], created_at=at(3, 9))
    r["R3"].change_status(Status.COMPLETED)
    r["R1"].change_status(Status.RECEIVED, note="Not fixed after all")
    r["R2"].forward(r["parks"], reason="Their tree")
    r["R5"].change_status(Status.RECEIVED, note="Wrong close")
    r["R5"]._set("category", r["tree"])
    from surveys.services import survey_answer

    survey_answer(Survey.objects.get(request=r["R8"]).pk, rating=2, is_fixed=False)
    order = WorkOrder.objects.create(department=r["parks"])
    r["R4"]._set("work_order", order)
    r["R3"]._set("work_order", order)
    WorkOrder.objects.filter(pk=order.pk).update(cost=Decimal("90.00"), completed_at=timezone.now())
    rollups_refresh()
    incremental = snapshot()
    assert_same_kpis(director)
    rollups_refresh(rebuild=True)
    assert snapshot() == incremental


def test_open_requests_become_overdue_without_being_touched(city, director):
    soon = timezone.now() + timedelta(minutes=5)
    request = ServiceRequestFactory(
        category=city["tree"], created_at=timezone.now() - timedelta(hours=1), due_at=soon
    )
    rollups_refresh()
    assert not RequestFact.objects.get(request=request).overdue
    rollups_refresh(now=soon + timedelta(minutes=1))
    assert RequestFact.objects.get(request=request).overdue


def test_reconcile_catches_what_no_timestamp_shows(city, director):
    rollups_refresh()
    before = snapshot()
    # The admin edits a cost; a request disappears without a trace.
    extra = ServiceRequestFactory(category=city["tree"], created_at=at(3, 9))
    rollups_refresh()
    WorkOrder.objects.filter(pk=city["R1"].work_order_id).update(cost=Decimal("130.00"))
    ServiceRequest.objects.filter(pk=extra.pk).delete()
    rollups_refresh()
    assert RequestFact.objects.filter(request_id=extra.pk).exists()
    rollups_refresh(reconcile=True)
    assert not RequestFact.objects.filter(request_id=extra.pk).exists()
    k = kpis(director)
    assert k["received"].value == 5
    assert k["cost_per_request"].value == pytest.approx((130 + 50) / 5)
    assert rollups_refresh(reconcile=True).changed == 0
    WorkOrder.objects.filter(pk=city["R1"].work_order_id).update(cost=Decimal("100.00"))
    rollups_refresh(reconcile=True)
    assert snapshot() == before


@postgresql_only
def test_a_second_refresh_at_the_same_time_steps_aside(city):
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", [rollups.LOCK_KEY])
        assert rollups_refresh() is None
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [rollups.LOCK_KEY])
        assert rollups_refresh() is not None
    finally:
        other.close()


@postgresql_only
def test_postgresql_bulk_build_agrees_with_the_python_rules(city):
    rng = random.Random(7)
    categories = [city["pothole"], city["tree"], CategoryFactory(code="graffiti")]
    for i in range(60):
        created = at(3, 1 + i % 10, i % 24, 7)
        resolved = created + timedelta(hours=rng.uniform(-2, 300)) if i % 3 else None
        ServiceRequestFactory(
            category=categories[i % 3],
            department=categories[i % 3].department,
            district=city["district"] if i % 4 else None,
            channel=rng.choice(Channel.values),
            created_at=created,
            first_response_at=created + timedelta(seconds=rng.uniform(10, 90_000)),
            resolved_at=resolved,
            status=rng.choice([Status.COMPLETED, Status.CLOSED]) if resolved else Status.WAITING,
            due_at=created + timedelta(hours=rng.choice([24, 72])) if i % 5 else None,
            lat=None if i % 7 == 0 else 42.2 + rng.random() * 0.2,
            lng=-71.2 + rng.random() * 0.2,
            forward_count=i % 2,
            duplicate_of=city["R1"] if i % 9 == 0 else None,
            work_order=city["R3"].work_order if i % 11 == 0 else None,
        )
    now = timezone.now()
    rollups_refresh(now=now, rebuild=True)  # SQL
    bulk = snapshot()
    for model in (RequestFact, DayRollup, CellRollup):
        model.objects.all().delete()
    rollups._refresh_ids(set(ServiceRequest.objects.values_list("pk", flat=True)), now)
    assert snapshot() == bulk


# --- Medians from histograms ------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 3, 10, 101, 5000])
def test_histogram_medians_are_within_five_percent(size):
    rng = random.Random(size)
    for _ in range(20):
        values = [math.exp(rng.gauss(math.log(3600 * 20), 1.5)) for _ in range(size)]
        hist = rollups.merge_hists([{str(rollups.duration_bucket(v)): 1} for v in values])
        assert rollups.histogram_median(hist) == pytest.approx(statistics.median(values), 0.05)


def test_square_medians_are_within_a_fifth():
    rng = random.Random(3)
    for size in (1, 4, 30, 400):
        values = [math.exp(rng.gauss(math.log(3600 * 40), 1.2)) for _ in range(size)]
        ranks = [0] * rollups.CELL_BUCKETS
        for v in values:
            ranks[rollups.cell_bucket(v)] += 1
        assert rollups.cell_median(ranks) == pytest.approx(statistics.median(values), 0.19)


def test_histogram_edges():
    assert rollups.histogram_median({}) is None
    assert rollups.histogram_median({"5": 0}) is None
    assert rollups.duration_bucket(-30) == rollups.duration_bucket(59) == 0
    assert rollups.duration_bucket(60) == 1
    assert rollups.duration_bucket(10**12) == rollups.BUCKETS
    assert 0 <= rollups.histogram_median({"0": 3}) < 60
