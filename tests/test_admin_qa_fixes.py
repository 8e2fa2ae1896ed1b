"""The staff admin's request list and page as a QA pass found them: the list's CSV export,
its links, its order, the work-order picker, the history inline and the audit package's
times."""

import csv
import io
import json
import re
import zipfile
from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from requests_app import dashboard_views
from requests_app.export_tasks import run_export
from requests_app.models import (
    Crew,
    ExportJob,
    HistoryEntry,
    Priority,
    StaffRole,
    Status,
    WorkOrder,
    WorkOrderStatus,
)

from .factories import CategoryFactory, DepartmentFactory, ServiceRequestFactory, staff_user

LIST = "admin:requests_app_servicerequest_changelist"


@pytest.fixture
def city(pothole):
    """Streets and Parks requests, some received long before the dashboard's 30 days."""
    parks = DepartmentFactory(slug="parks", name="Parks")
    bench = CategoryFactory(code="bench", name="Broken bench", department=parks)
    long_ago = timezone.now() - timedelta(days=90)
    streets = pothole.department

    def made(category, department, status=Status.RECEIVED, **fields):
        return ServiceRequestFactory(
            category=category, department=department, status=status, **fields
        )

    return {
        "open": made(pothole, streets),
        "old_open": made(pothole, streets, created_at=long_ago),
        "completed": made(pothole, streets, Status.COMPLETED),
        "old_completed": made(pothole, streets, Status.COMPLETED, created_at=long_ago),
        "parks": made(bench, parks, reporter_email="bench@resident.example"),
        "parks_closed": made(bench, parks, Status.CLOSED, close_reason="duplicate"),
    }


def _export_link(client, query=None):
    """The list with `query`, and its "Export these as CSV" link."""
    page = client.get(reverse(LIST), query or {})
    assert page.status_code == 200
    return page.context.get("export_url")


def _rows(response):
    assert response.status_code == 200, response
    text = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(text)))


def _numbers(rows):
    return sorted(row["tracking_number"] for row in rows)


def _listed(client, query=None):
    """Tracking numbers of every row the list shows for `query`, over all its pages."""
    page = client.get(reverse(LIST), query or {})
    return sorted(r.tracking_number for r in page.context["cl"].queryset)


# --- 1. "Export these as CSV" exports the rows the list shows -----------------------------------


LIST_QUERIES = {
    "everything": lambda city: {},
    "completed": lambda city: {"status__exact": Status.COMPLETED},
    "searched": lambda city: {"q": city["old_open"].tracking_number},
    "filtered twice": lambda city: {
        "status__exact": Status.RECEIVED,
        "department__id__exact": city["open"].department_id,
    },
    "one month": lambda city: {
        "created_at__year": timezone.localtime(city["old_open"].created_at).year,
        "created_at__month": timezone.localtime(city["old_open"].created_at).month,
    },
}


@pytest.mark.parametrize("name", LIST_QUERIES)
def test_list_export_has_exactly_the_rows_the_list_shows(client, dispatcher, city, name):
    query = LIST_QUERIES[name](city)
    client.force_login(dispatcher)
    listed = _listed(client, query)
    exported = _numbers(_rows(client.get(_export_link(client, query))))
    assert exported == listed
    expected = {
        "everything": city.values(),
        "completed": [city["completed"], city["old_completed"]],  # older than 30 days too
        "searched": [city["old_open"]],
        "filtered twice": [city["open"], city["old_open"]],
        "one month": [city["old_open"], city["old_completed"]],
    }[name]
    assert exported == sorted(r.tracking_number for r in expected)


def test_list_export_keeps_to_what_the_user_may_see_and_the_contact_rules(client, city, pothole):
    streets_staff = staff_user("streets", StaffRole.DEPARTMENT_STAFF, pothole.department)
    client.force_login(streets_staff)
    # The Parks filter in the URL shows a Streets member nothing, and exports nothing.
    parks_only = {"department__id__exact": city["parks"].department_id}
    assert _rows(client.get(_export_link(client, parks_only))) == []
    rows = _rows(client.get(_export_link(client)))
    assert _numbers(rows) == _listed(client)
    assert city["parks"].tracking_number not in _numbers(rows)
    # Staff who work requests call residents back: their export has the contact details.
    assert {"reporter_email", "public_description"} <= set(rows[0])

    client.force_login(staff_user("director", StaffRole.DIRECTOR))
    rows = _rows(client.get(_export_link(client)))
    assert len(rows) == len(city)
    assert "reporter_email" not in rows[0]
    text = json.dumps(rows)
    assert not [r.reporter_email for r in city.values() if r.reporter_email in text]


def test_list_export_of_many_rows_is_written_by_the_worker_with_the_same_rows(
    client, dispatcher, city, monkeypatch, django_capture_on_commit_callbacks
):
    monkeypatch.setattr(dashboard_views, "STREAM_MAX_ROWS", 1)
    client.force_login(dispatcher)
    query = {"status__exact": Status.COMPLETED, "p": "1"}
    with django_capture_on_commit_callbacks() as callbacks:
        response = client.get(_export_link(client, query))
    job = ExportJob.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("dashboard:export_job", args=[job.pk])
    assert len(callbacks) == 1
    page = client.get(response["Location"])
    assert page.status_code == 200
    # The job page says which days the rows were received.
    assert job.filters["start"] == timezone.localdate(city["old_completed"].created_at).isoformat()

    run_export(job.pk)
    job.refresh_from_db()
    assert job.status == ExportJob.Status.DONE, job.error
    download = client.get(reverse("dashboard:export_download", args=[job.pk]))
    assert _numbers(_rows(download)) == sorted(
        [city["completed"].tracking_number, city["old_completed"].tracking_number]
    )


def test_list_export_with_a_query_the_list_refuses_goes_back_to_the_list(client, dispatcher, city):
    client.force_login(dispatcher)
    response = client.get(reverse("admin:requests_app_servicerequest_export"), {"nonsense": "1"})
    assert response.status_code == 302
    assert response["Location"] == reverse(LIST) + "?e=1"


def test_a_crew_member_cannot_export_from_the_list(client, city, pothole):
    client.force_login(staff_user("crew", StaffRole.CREW, pothole.department))
    assert _export_link(client) is None
    response = client.get(reverse("admin:requests_app_servicerequest_export"))
    assert response.status_code == 404


# --- 2. The list's links lead where the user may go ---------------------------------------------


@pytest.mark.parametrize(
    "role, links",
    [
        (StaffRole.DISPATCHER, {"Export these as CSV", "Dashboard"}),
        (StaffRole.DIRECTOR, {"Export these as CSV", "Dashboard"}),
        (StaffRole.DEPARTMENT_STAFF, {"Export these as CSV"}),
        (StaffRole.CREW, set()),
    ],
)
def test_list_shows_only_the_links_that_work_for_the_user(client, city, pothole, role, links):
    client.force_login(staff_user("someone", role, pothole.department))
    page = client.get(reverse(LIST)).content.decode()
    tools = page.split('class="object-tools"', 1)[1].split("</ul>", 1)[0]
    shown = dict(
        (text.strip(), href.replace("&amp;", "&"))
        for href, text in re.findall(r'<a href="([^"]+)"[^>]*>([^<]+)</a>', tools)
    )
    assert set(shown) & {"Export these as CSV", "Dashboard"} == links
    for text in links:
        assert client.get(shown[text]).status_code == 200, text


# --- 3. Open requests first -------------------------------------------------------------------


def test_list_puts_open_requests_first_by_urgency_then_closed_ones(client, dispatcher, pothole):
    def made(status, priority, **fields):
        return ServiceRequestFactory(category=pothole, status=status, priority=priority, **fields)

    open_low = made(Status.RECEIVED, Priority.LOW)
    completed_urgent = made(Status.COMPLETED, Priority.URGENT)
    waiting_high = made(Status.WAITING, Priority.HIGH)
    closed_high = made(Status.CLOSED, Priority.HIGH, close_reason="duplicate")
    in_progress_urgent = made(Status.IN_PROGRESS, Priority.URGENT)
    client.force_login(dispatcher)

    rows = list(client.get(reverse(LIST)).context["cl"].result_list)
    assert rows == [in_progress_urgent, waiting_high, open_low, completed_urgent, closed_high]

    # Sorting by a column (here priority, highest first) is that column's order alone.
    list_display = client.get(reverse(LIST)).context["cl"].list_display
    by_priority = {"o": f"-{list_display.index('priority')}"}
    rows = list(client.get(reverse(LIST), by_priority).context["cl"].result_list)
    assert [r.priority for r in rows] == sorted((r.priority for r in rows), reverse=True)
    assert completed_urgent in rows[:2]  # among the urgent ones, not after the open ones


# --- 4. The work order picker -----------------------------------------------------------------


def test_work_order_picker_says_what_each_is_and_puts_the_departments_own_first(
    client, dispatcher, pothole, city
):
    streets = pothole.department
    crew = Crew.objects.create(name="Streets crew 1", department=streets)
    parks_order = WorkOrder.create_for([city["parks"]])
    older_streets = WorkOrder.create_for([city["old_open"]], crew=crew)
    newer_streets = WorkOrder.create_for(
        [ServiceRequestFactory(category=pothole, department=streets, address="9 Elm St")]
    )
    done = WorkOrder.create_for([ServiceRequestFactory(category=pothole, department=streets)])
    WorkOrder.objects.filter(pk=done.pk).update(status=WorkOrderStatus.COMPLETED)
    client.force_login(dispatcher)

    page = client.get(reverse("admin:requests_app_servicerequest_change", args=[city["open"].pk]))
    field = page.context["adminform"].form.fields["attach_to"]
    choices = list(field.choices)
    assert choices[0][0] == ""
    groups = [
        (group, [(str(value), label) for value, label in options]) for group, options in choices[1:]
    ]
    assert [group for group, _options in groups] == [
        "Streets (this request's department)",
        "Parks",
    ]
    streets_options, parks_options = groups[0][1], groups[1][1]
    assert [value for value, _label in streets_options] == [
        str(newer_streets.pk),
        str(older_streets.pk),
    ]
    assert streets_options[0][1] == f"{newer_streets} · Pothole, 9 Elm St · Open · no crew"
    assert streets_options[1][1] == f"{older_streets} · Pothole, 12 Main St · Open · Streets crew 1"
    assert [value for value, _label in parks_options] == [str(parks_order.pk)]
    assert str(done.pk) not in {value for _g, options in groups for value, _l in options}
    assert '<optgroup label="Streets (this request&#x27;s department)">' in page.content.decode()


# --- 5. The history inline ---------------------------------------------------------------------


def _history_rows(page):
    formset = next(f for f in page.context["inline_admin_formsets"] if f.opts.model is HistoryEntry)
    for inline_form in formset:
        cells = {
            field.field["name"]: field.contents()
            for fieldset in inline_form
            for line in fieldset
            for field in line
        }
        yield inline_form.original, cells


def test_history_inline_shows_a_public_comment_as_public(client, dispatcher, city):
    request = city["open"]
    request.add_comment("Crew booked for Tuesday", by=dispatcher, public=True)
    request.add_comment("Gate code 4471", by=dispatcher, public=False)
    client.force_login(dispatcher)
    page = client.get(reverse("admin:requests_app_servicerequest_change", args=[request.pk]))
    public = {
        entry.action: "icon-yes" in cells[[n for n in cells if "public" in n][0]]
        for entry, cells in _history_rows(page)
        if entry.action in (HistoryEntry.Action.COMMENT, HistoryEntry.Action.NOTE)
    }
    assert public == {HistoryEntry.Action.COMMENT: True, HistoryEntry.Action.NOTE: False}


def test_history_inline_row_titles_are_in_the_citys_time(client, dispatcher, city):
    request = city["open"]
    late_evening = datetime(2026, 11, 24, 4, 18, tzinfo=UTC)  # 23:18 on the 23rd in Boston
    HistoryEntry.objects.create(request=request, at=late_evening, action="created")
    client.force_login(dispatcher)
    page = client.get(reverse("admin:requests_app_servicerequest_change", args=[request.pk]))
    text = page.content.decode()
    assert "2026-11-23 23:18 Created" in text
    assert "2026-11-24 04:18" not in text


# --- 6. The audit package's times --------------------------------------------------------------


def _timestamps(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _timestamps(v)
    elif isinstance(value, list):
        for v in value:
            yield from _timestamps(v)
    elif isinstance(value, str) and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d.*", value):
        yield value


@pytest.mark.parametrize("version", ["staff", "public"])
def test_audit_package_times_are_in_the_city_time_zone_as_its_readme_says(
    client, dispatcher, city, version
):
    request = city["open"]
    request.change_status(Status.ASSIGNED, by=dispatcher)
    request.add_comment("Crew booked for Tuesday", by=dispatcher, public=True)
    client.force_login(dispatcher)
    url = reverse("dashboard:audit_package", args=[request.tracking_number])
    response = client.get(url, {"version": version} if version == "public" else {})
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    readme = archive.read("README.txt").decode()
    assert "America/New_York" in readme and "offset from UTC" in readme
    generated = datetime.fromisoformat(re.search(r"Generated: (\S+)", readme).group(1))

    stamps = [
        stamp
        for name in ("request.json", "timeline.json", "comments.json", "photos.json")
        for stamp in _timestamps(json.loads(archive.read(name)))
    ]
    assert len(stamps) >= 3
    for stamp in stamps:
        moment = datetime.fromisoformat(stamp)
        assert moment.utcoffset() == timezone.localtime(moment).utcoffset() != timedelta(0)
        assert moment.utcoffset() == generated.utcoffset()
