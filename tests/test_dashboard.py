"""Dashboard figures on a hand-built city, each checked against a value worked out by hand.

Current period: 1–10 March 2024; previous: 20–29 February 2024 (same ten days).

    req  category channel  received      1st response  resolved (status)       due
    R1   pothole  web      Mar 2 10:00   +2 h          Mar 3 10:00 completed   Mar 5 10:00
    R2   pothole  phone    Mar 3 08:00   +6 h          Mar 6 08:00 completed   Mar 5 08:00
    R3   tree     api      Mar 4 09:00   +1 h          open                    Mar 20
    R4   tree     walk_in  Mar 5 00:00   —             open                    —
    R5   pothole  email    Mar 6 12:00   +1 h          Mar 6 13:00 closed      —
    R6   pothole  phone    Feb 25 10:00  +1 h          Mar 2 16:00 completed   Feb 28 10:00
    R7   pothole  web      Feb 21 10:00  +4 h          Feb 22 10:00 completed  Feb 24 10:00
    R8   pothole  web      Jan 2 10:00   +1 h          Jan 3 10:00 completed   (outside both)

R1 and R2 share work order WO1 ($100), R3 has WO2 ($50); R2 was forwarded once; R3 is a
duplicate of R1.
"""

from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.urls import include, path, reverse

from civicdesk.urls import urlpatterns as project_urls
from requests_app import dashboard
from requests_app.access import visible_requests
from requests_app.dashboard import Filters
from requests_app.dashboard_urls import transparency_urls
from requests_app.models import (
    Channel,
    Comment,
    ServiceRequest,
    StaffRole,
    Status,
    WorkOrder,
)
from routing.models import District
from surveys.models import Survey

from .factories import CategoryFactory, DepartmentFactory, ServiceRequestFactory, staff_user

# Until civicdesk/urls.py mounts them, these tests mount the dashboard themselves.
urlpatterns = [
    path("dashboard/", include("requests_app.dashboard_urls")),
    path("transparency/", include(transparency_urls)),
    *project_urls,
]
pytestmark = [pytest.mark.urls(__name__), pytest.mark.django_db]

NY = ZoneInfo("America/New_York")
NOW = datetime(2024, 4, 1, 12, 0, tzinfo=NY)
PERIOD = Filters(start=date(2024, 3, 1), end=date(2024, 3, 10))


def at(month, day, hour=0, minute=0):
    return datetime(2024, month, day, hour, minute, tzinfo=NY)


@pytest.fixture
def city(db):
    streets = DepartmentFactory(slug="streets", name="Streets")
    parks = DepartmentFactory(slug="parks", name="Parks")
    pothole = CategoryFactory(code="pothole", name="Pothole", group="Streets", department=streets)
    tree = CategoryFactory(code="tree", name="Fallen tree", group="Parks", department=parks)
    square = {
        "type": "Polygon",
        "coordinates": [
            [[-71.2, 42.2], [-71.0, 42.2], [-71.0, 42.4], [-71.2, 42.4], [-71.2, 42.2]]
        ],
    }
    central = District.objects.create(name="Central", code="central", boundary=square)
    wo1 = WorkOrder.objects.create(department=streets, cost=Decimal("100.00"))
    wo2 = WorkOrder.objects.create(department=parks, cost=Decimal("50.00"))

    def make(
        name,
        category,
        channel,
        created,
        *,
        response=None,
        resolved=None,
        status=None,
        due=None,
        **extra,
    ):
        return ServiceRequestFactory(
            category=category,
            department=category.department,
            district=central,
            channel=channel,
            created_at=created,
            first_response_at=created + timedelta(hours=response) if response else None,
            resolved_at=resolved,
            status=status or (Status.COMPLETED if resolved else Status.IN_PROGRESS),
            due_at=due,
            reporter_name=f"Reporter {name}",
            reporter_email=f"{name.lower()}@resident.example",
            reporter_phone=f"617-555-01{name[1:].zfill(2)}",
            **extra,
        )

    r = {}
    r["R1"] = make(
        "R1",
        pothole,
        Channel.WEB,
        at(3, 2, 10),
        response=2,
        resolved=at(3, 3, 10),
        due=at(3, 5, 10),
        work_order=wo1,
        lat=42.3001,
        lng=-71.1001,
    )
    r["R2"] = make(
        "R2",
        pothole,
        Channel.PHONE,
        at(3, 3, 8),
        response=6,
        resolved=at(3, 6, 8),
        due=at(3, 5, 8),
        work_order=wo1,
        forward_count=1,
        lat=42.3002,
        lng=-71.1002,
    )
    r["R3"] = make(
        "R3",
        tree,
        Channel.API,
        at(3, 4, 9),
        response=1,
        due=at(3, 20),
        work_order=wo2,
        duplicate_of=r["R1"],
        lat=42.35,
        lng=-71.05,
    )
    r["R4"] = make(
        "R4", tree, Channel.WALK_IN, at(3, 5), status=Status.RECEIVED, lat=42.35, lng=-71.05
    )
    r["R5"] = make(
        "R5",
        pothole,
        Channel.EMAIL,
        at(3, 6, 12),
        response=1,
        resolved=at(3, 6, 13),
        status=Status.CLOSED,
        close_reason="no_action",
    )
    r["R6"] = make(
        "R6",
        pothole,
        Channel.PHONE,
        at(2, 25, 10),
        response=1,
        resolved=at(3, 2, 16),
        due=at(2, 28, 10),
    )
    r["R7"] = make(
        "R7",
        pothole,
        Channel.WEB,
        at(2, 21, 10),
        response=4,
        resolved=at(2, 22, 10),
        due=at(2, 24, 10),
    )
    r["R8"] = make(
        "R8", pothole, Channel.WEB, at(1, 2, 10), response=1, resolved=at(1, 3, 10), due=at(1, 5)
    )
    for name, rating, fixed, answered in [
        ("R1", 5, True, at(3, 4)),
        ("R2", 2, False, at(3, 7)),
        ("R6", 4, None, at(3, 3)),
        ("R7", 3, True, at(2, 23)),
        ("R8", 1, False, None),  # sent, never answered
    ]:
        Survey.objects.create(
            request=r[name],
            rating=rating if answered else None,
            is_fixed=fixed if answered else None,
            answered_at=answered,
        )
    Comment.objects.create(
        request=r["R1"], text="Called R1 back", is_public=False, author_label="Dana"
    )
    Comment.objects.create(
        request=r["R1"], text="Crew on site", is_public=True, author_label="Crew"
    )
    return {
        "streets": streets,
        "parks": parks,
        "pothole": pothole,
        "tree": tree,
        "district": central,
        **r,
    }


@pytest.fixture
def director(db):
    return staff_user("diane", StaffRole.DIRECTOR)


def figures(user, filters=PERIOD):
    return {k.key: k for k in dashboard.kpis(visible_requests(user), filters, now=NOW)}


def test_every_kpi_matches_the_hand_computed_value(city, director):
    k = figures(director)
    assert (k["received"].value, k["received"].previous) == (5, 2)
    assert k["received"].change == pytest.approx(150.0)
    # Open at the end: R3 and R4 now; at the end of February R6 (resolved 2 March).
    assert (k["backlog"].value, k["backlog"].previous) == (2, 1)
    # Completed in March: R1 on time, R2 late, R6 late. February: R7 on time.
    assert k["on_time"].value == pytest.approx(1 / 3)
    assert k["on_time"].previous == pytest.approx(1.0)
    assert k["on_time"].change == pytest.approx(-66.667, abs=0.01)  # points
    # First responses in March: 2, 6, 1, 1 hours; in February: R6 1 h, R7 4 h.
    assert k["median_response"].value == pytest.approx(1.5, abs=0.01)
    assert k["mean_response"].value == pytest.approx(2.5, abs=0.01)
    assert k["median_response"].previous == pytest.approx(2.5, abs=0.01)
    assert k["mean_response"].previous == pytest.approx(2.5, abs=0.01)
    # Resolutions in March: R1 24 h, R2 72 h, R6 150 h (closed R5 does not count).
    assert k["median_resolution"].value == pytest.approx(72, abs=0.01)
    assert k["mean_resolution"].value == pytest.approx(82, abs=0.01)
    assert k["median_resolution"].previous == pytest.approx(24, abs=0.01)
    assert k["mean_resolution"].previous == pytest.approx(24, abs=0.01)
    assert (k["duplicate_rate"].value, k["duplicate_rate"].previous) == (0.2, 0.0)
    assert (k["forward_rate"].value, k["forward_rate"].previous) == (0.2, 0.0)
    assert (k["self_service"].value, k["self_service"].previous) == (0.4, 0.5)
    # WO1 ($100, R1 and R2, counted once) + WO2 ($50) over 5 requests; none in February.
    assert (k["cost_per_request"].value, k["cost_per_request"].previous) == (30.0, 0.0)
    # Surveys answered in March: ratings 5, 2, 4 → 3.67; fixed yes, no, (no answer) → 50 %.
    assert k["satisfaction"].value == pytest.approx(11 / 3)
    assert k["fix_verified"].value == pytest.approx(0.5)
    # February: one survey, rating 3, fixed → 100 %.
    assert (k["satisfaction"].previous, k["fix_verified"].previous) == (3, 1.0)


def test_filters_narrow_every_figure(city, director):
    k = figures(director, Filters(start=PERIOD.start, end=PERIOD.end, department=city["parks"].pk))
    assert k["received"].value == 2
    assert k["backlog"].value == 2
    assert k["on_time"].value is None  # nothing completed
    assert k["self_service"].value == 0.5
    assert k["cost_per_request"].value == 25.0
    k = figures(director, Filters(start=PERIOD.start, end=PERIOD.end, channel=Channel.PHONE))
    assert k["received"].value == 1
    assert k["median_resolution"].value == pytest.approx(111, abs=0.01)  # R2 72 h, R6 150 h


def test_department_staff_figures_only_cover_their_department(city):
    parks_staff = staff_user("pat", StaffRole.DEPARTMENT_STAFF, city["parks"])
    assert figures(parks_staff)["received"].value == 2


def test_breakdown_by_department_uses_sla_compliance(city, director):
    rows = {
        r.label: r
        for r in dashboard.breakdown(visible_requests(director), PERIOD, "department", now=NOW)
    }
    streets, parks = rows["Streets"], rows["Parks"]
    assert (streets.received, streets.backlog, streets.resolved) == (3, 0, 3)
    assert streets.on_time_pct == 33.3
    assert streets.median_resolution_hours == 72
    assert (parks.received, parks.backlog, parks.resolved, parks.on_time_pct) == (2, 2, 0, None)


def test_weekly_trend_counts_and_medians(city, director):
    trend = dashboard.weekly_trend(visible_requests(director), PERIOD)
    assert [row["week"] for row in trend] == [date(2024, 2, 26), date(2024, 3, 4)]
    assert [row["received"] for row in trend] == [2, 3]
    # Week of 26 Feb: R6 150 h and R1 24 h resolved; week of 4 March: R2 72 h.
    assert [row["median_resolution_hours"] for row in trend] == [87, 72]
    chart = dashboard.svg_chart(trend, "received")
    assert len(chart.bars) == 2 and chart.bars[1]["h"] > chart.bars[0]["h"]
    # At most 3 a week: the count axis still reads in whole requests, not 0.8, 1.5 ...
    counts = dashboard.svg_chart(trend, "received", counts=True)
    assert [tick["label"] for tick in counts.ticks] == ["0", "1", "2", "3", "4"]


def test_hotspots_find_repeated_reports_at_one_place(city, director):
    for _ in range(2):
        ServiceRequestFactory(
            category=city["pothole"], created_at=at(3, 8), lat=42.30012, lng=-71.10008
        )
    spots = dashboard.hotspots(visible_requests(director), PERIOD)
    assert [(s["category"], s["count"]) for s in spots] == [("Pothole", 4)]
    assert (spots[0]["lat"], spots[0]["lng"]) == (42.3, -71.1)


def test_grid_cells_follow_the_zoom_and_hold_every_request(city, director):
    requests = visible_requests(director)
    bbox = (-71.2, 42.2, -71.0, 42.4)
    coarse = dashboard.grid(requests, PERIOD, bbox=bbox, zoom=5)
    fine = dashboard.grid(requests, PERIOD, bbox=bbox, zoom=17)
    assert fine["size"] < coarse["size"]
    # R5 has the factory's location; all five March requests are on the map.
    assert sum(c["count"] for c in coarse["cells"]) == 5
    assert sum(c["count"] for c in fine["cells"]) == 5
    assert len(coarse["cells"]) == 1
    assert len(fine["cells"]) == 3  # R1+R2 share 27 m cells, R3+R4 too, R5 apart
    overdue = dashboard.grid(requests, PERIOD, bbox=bbox, zoom=17, metric="overdue", now=NOW)
    r2_cell = next(
        c
        for c in overdue["cells"]
        if c["south"] <= 42.3002 < c["south"] + c["size"]
        and c["west"] <= -71.1002 < c["west"] + c["size"]
    )
    assert r2_cell["value"] == 50.0  # R1 on time, R2 resolved late


def test_cell_detail_lists_top_categories_and_links_to_the_admin(city, director, client):
    size = dashboard.cell_size(17)
    gy, gx = int(42.35 // size), int(-71.05 // size)
    client.force_login(director)
    response = client.get(
        reverse("dashboard:cell"),
        {"zoom": 17, "gy": gy, "gx": gx, "start": "2024-03-01", "end": "2024-03-10"},
    )
    detail = response.json()
    assert detail["count"] == 2
    assert detail["top_categories"] == [{"name": "Fallen tree", "count": 2}]
    assert detail["median_response_hours"] == 1.0
    admin = client.get(detail["admin_url"])
    assert admin.status_code == 200
    assert admin.context["cl"].result_count == 2


def test_admin_links_carry_the_filters(city, director, client):
    client.force_login(director)
    filters = Filters(start=PERIOD.start, end=PERIOD.end, group="Streets")
    response = client.get(filters.admin_url())
    assert response.status_code == 200
    assert response.context["cl"].result_count == 3  # R1, R2, R5


def test_dashboard_page_renders_for_director(city, director, client):
    client.force_login(director)
    response = client.get(reverse("dashboard:home"), {"start": "2024-03-01", "end": "2024-03-10"})
    assert response.status_code == 200
    body = response.content.decode()
    assert 'data-testid="kpi-received-value">5<' in body
    assert "<svg" in body and "<rect" in body
    assert "dashboard-map-settings" in body
    grid = client.get(
        reverse("dashboard:grid"),
        {"bbox": "-71.2,42.2,-71.0,42.4", "zoom": 12, "start": "2024-03-01", "end": "2024-03-10"},
    )
    assert sum(c["count"] for c in grid.json()["cells"]) == 5


@pytest.mark.parametrize("role", [StaffRole.CREW, StaffRole.DEPARTMENT_STAFF])
def test_roles_without_the_dashboard_get_404(city, client, role):
    client.force_login(staff_user("someone", role, city["streets"]))
    assert client.get(reverse("dashboard:home")).status_code == 404
    assert client.get(reverse("dashboard:grid"), {"bbox": "0,0,1,1", "zoom": 5}).status_code == 404


def test_anonymous_visitors_are_sent_to_log_in(client):
    response = client.get(reverse("dashboard:home"))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


# --- The transparency page and public data --------------------------------------------------


def test_transparency_suppresses_small_cells(city, client, settings, freezer=None):
    settings.TRANSPARENCY_MIN_CELL = 3
    rows = {
        r.label: r
        for r in dashboard.transparency_table(ServiceRequest.objects.public(), PERIOD, "category")
    }
    assert rows["Pothole"].received == 3
    assert rows["Pothole"].on_time_pct == 33.3  # R1, R2, R6 completed in March
    assert rows["Pothole"].median_resolution_hours == 72
    assert rows["Fallen tree"].received is None and rows["Fallen tree"].suppressed
    settings.TRANSPARENCY_MIN_CELL = 5
    rows = {
        r.label: r
        for r in dashboard.transparency_table(ServiceRequest.objects.public(), PERIOD, "category")
    }
    assert rows["Pothole"].received is None and rows["Pothole"].on_time_pct is None


def test_hidden_requests_are_not_counted_publicly(city, settings):
    settings.TRANSPARENCY_MIN_CELL = 1
    ServiceRequest.objects.filter(pk=city["R1"].pk).update(is_public=False)
    rows = {
        r.label: r
        for r in dashboard.transparency_table(ServiceRequest.objects.public(), PERIOD, "category")
    }
    assert rows["Pothole"].received == 2


def _personal_data():
    values = []
    for r in ServiceRequest.objects.all():
        values += [r.reporter_name, r.reporter_email, r.reporter_phone]
    return [v for v in values if v]


def test_transparency_page_and_csv_contain_no_personal_data(city, client, settings):
    settings.TRANSPARENCY_MIN_CELL = 1
    for _ in range(6):
        ServiceRequestFactory(category=city["pothole"])  # Maria Lopez, today
    page = client.get(reverse("transparency:page"), {"days": "365"})
    data = client.get(reverse("transparency:csv"), {"days": "365"})
    assert page.status_code == 200 and data.status_code == 200
    assert "Pothole" in page.content.decode() and "Pothole" in data.content.decode()
    secrets = _personal_data()
    assert "Maria Lopez" in secrets and "r1@resident.example" in secrets
    for text in (page.content.decode(), data.content.decode()):
        for secret in secrets:
            assert secret not in text
        assert "@" not in text
