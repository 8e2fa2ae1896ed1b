"""Likely duplicates: nearby search, grouping at intake, following, and staff merge/split."""

import inspect
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from requests_app import grouping
from requests_app.models import (
    Crew,
    Follower,
    HistoryEntry,
    ServiceRequest,
    Status,
    WorkOrder,
)
from requests_app.services import request_process_intake

from .conftest import upload
from .factories import CITY_CENTER, CategoryFactory, ServiceRequestFactory, staff_user

METRES_PER_DEGREE = grouping.METRES_PER_DEGREE_LAT
REPORT_URL = "/report/"
NEARBY_URL = "/report/nearby/"


def north(metres, east=0.0):
    """A point `metres` north (and `east` metres east) of the city centre."""
    lat = CITY_CENTER[0] + metres / METRES_PER_DEGREE
    lng = CITY_CENTER[1] + east / (METRES_PER_DEGREE * 0.7384)  # cos(42.355°)
    return lat, lng


def report(category, metres=0.0, *, ago=timedelta(0), east=0.0, **fields):
    lat, lng = north(metres, east)
    fields.setdefault("reporter_email", f"r{ServiceRequest.objects.count()}@example.org")
    return ServiceRequestFactory(
        category=category, lat=lat, lng=lng, created_at=timezone.now() - ago, **fields
    )


@pytest.fixture
def streetlight(streets):
    return CategoryFactory(
        code="streetlight", name="Streetlight out", group="Streets and sidewalks"
    )


@pytest.fixture
def graffiti(db):
    return CategoryFactory(code="graffiti", name="Graffiti", group="Clean city")


@pytest.fixture
def manager(db):
    from requests_app.models import StaffRole

    return staff_user("dana", StaffRole.DISPATCHER)


# --- Geometry and nearby search ----------------------------------------------------------


def test_haversine_matches_known_distance():
    # Boston City Hall to the State House: about 520 m.
    assert grouping.haversine_m(42.3603, -71.0580, 42.3588, -71.0638) == pytest.approx(500, abs=30)
    assert grouping.haversine_m(*north(100), *north(0)) == pytest.approx(100, abs=0.5)


def test_bounding_box_contains_the_whole_circle():
    min_lat, max_lat, min_lng, max_lng = grouping.bounding_box(*CITY_CENTER, 250)
    east_edge = grouping.haversine_m(CITY_CENTER[0], CITY_CENTER[1], CITY_CENTER[0], max_lng)
    north_edge = grouping.haversine_m(CITY_CENTER[0], CITY_CENTER[1], max_lat, CITY_CENTER[1])
    assert east_edge >= 249.9 and north_edge >= 249.9


def test_nearby_search_filters_on_a_bounding_box_not_the_whole_table(pothole):
    near = report(pothole, 30)
    report(pothole, 400)

    with CaptureQueriesContext(connection) as queries:
        found = grouping.nearby_open_requests(pothole, *CITY_CENTER)

    assert [n.request for n in found] == [near]
    sql = next(q["sql"] for q in queries if "requests_app_servicerequest" in q["sql"])
    assert '"lat" >=' in sql and '"lng" <=' in sql and '"category_id" IN' in sql


def test_nearby_lists_nearest_first_at_most_five(pothole):
    for metres in (200, 50, 120, 10, 90, 150, 240):
        report(pothole, metres)

    found = grouping.nearby_open_requests(pothole, *CITY_CENTER)

    assert [round(n.distance_m) for n in found] == [10, 50, 90, 120, 150]


def test_per_category_radius_is_used(pothole):
    pothole.duplicate_radius_m = 50
    pothole.save()
    report(pothole, 80)

    assert grouping.nearby_open_requests(pothole, *CITY_CENTER) == []


# --- Grouping at intake ------------------------------------------------------------------


def test_same_category_within_radius_is_grouped_with_reasons(pothole):
    first = report(pothole, 0, ago=timedelta(hours=3), description="Deep pothole in the bike lane")
    second = report(pothole, 30, description="Pothole in bike lane, very deep")

    match = grouping.request_group_duplicates(second)

    second.refresh_from_db()
    assert match is not None and second.duplicate_of == first
    entry = second.history.get(action=HistoryEntry.Action.DUPLICATE, field="duplicate_of")
    assert entry.new_value == first.tracking_number
    assert "30 m from" in entry.note
    assert "3 h 0 min later" in entry.note
    assert "same category (Pothole)" in entry.note
    assert "score" in entry.note
    assert first.history.filter(
        action=HistoryEntry.Action.DUPLICATE, new_value=second.tracking_number
    ).exists()
    assert ServiceRequest.objects.count() == 2  # nothing closed, nothing new


@pytest.mark.parametrize(
    "case",
    ["outside radius", "outside window", "closed", "other group", "no location", "newer"],
)
def test_not_grouped(case, pothole, graffiti):
    existing = report(pothole, 0, ago=timedelta(hours=1))
    if case == "outside radius":
        new = report(pothole, 260)
    elif case == "outside window":
        ServiceRequest.objects.filter(pk=existing.pk).update(
            created_at=timezone.now() - timedelta(hours=pothole.duplicate_window_hours + 1)
        )
        new = report(pothole, 30)
    elif case == "closed":
        existing.change_status(Status.COMPLETED)
        new = report(pothole, 30)
    elif case == "other group":
        new = report(graffiti, 10)
    elif case == "no location":
        new = report(pothole, 0)
        ServiceRequest.objects.filter(pk=new.pk).update(lat=None, lng=None)
        new.refresh_from_db()
    elif case == "newer":
        # The first report of the problem leads; it never joins a later one.
        report(pothole, 30)
        new = existing

    assert grouping.request_group_duplicates(new) is None
    new.refresh_from_db()
    assert new.duplicate_of is None
    assert not new.history.filter(action=HistoryEntry.Action.DUPLICATE).exists()


def test_same_group_other_category_is_grouped_but_same_category_wins(pothole, streetlight):
    light = report(streetlight, 20, ago=timedelta(hours=1))
    hole = report(pothole, 60, ago=timedelta(hours=1))
    new = report(pothole, 0)

    match = grouping.request_group_duplicates(new)

    assert match.candidate == hole and match.same_category
    ServiceRequest.objects.filter(pk__in=[hole.pk, new.pk]).update(status=Status.CLOSED)
    other = report(pothole, 0)
    match = grouping.request_group_duplicates(other)
    assert match.candidate == light
    assert "same group (Streets and sidewalks: Streetlight out)" in match.reasons()


def test_joining_a_duplicate_joins_its_groups_primary(pothole):
    primary = report(pothole, 0, ago=timedelta(hours=5))
    middle = report(pothole, 200, ago=timedelta(hours=2))
    grouping.request_group_duplicates(middle)
    # 60 m from `middle` but beyond the radius of the primary itself.
    new = report(pothole, 260, description="Another")

    grouping.request_group_duplicates(new)

    new.refresh_from_db()
    assert new.duplicate_of == primary
    assert set(grouping.group_members(primary)) == {middle, new}


def test_new_reporter_follows_the_primary_once(pothole):
    primary = report(pothole, 0, ago=timedelta(hours=1), reporter_email="first@example.org")
    again = [report(pothole, 10 * n, reporter_email="Neighbour@Example.org") for n in (1, 2)]

    for request in again:
        grouping.request_group_duplicates(request)

    follower = Follower.objects.get(request=primary)
    assert (follower.email, follower.source) == ("neighbour@example.org", "duplicate")
    assert primary.history.filter(action=HistoryEntry.Action.FOLLOW).count() == 1


def test_follower_add_is_idempotent(pothole):
    request = report(pothole)

    first, created = grouping.follower_add(request, "maria@example.org", "es", "reporter")
    again, created_again = grouping.follower_add(request, "MARIA@example.org", "en", "follow")

    assert created and not created_again and first.pk == again.pk
    assert Follower.objects.filter(request=request).count() == 1
    assert grouping.follower_add(request, "", "en", "reporter") == (None, False)


def test_following_again_after_unsubscribing_resubscribes(pothole):
    request = report(pothole)
    follower, _ = grouping.follower_add(request, "maria@example.org", "en", "duplicate")
    Follower.objects.filter(pk=follower.pk).update(unsubscribed_at=timezone.now())

    grouping.follower_add(request, "maria@example.org", "en", "duplicate")
    assert Follower.objects.get(pk=follower.pk).unsubscribed_at is not None
    grouping.follower_add(request, "maria@example.org", "en", "follow")
    assert Follower.objects.get(pk=follower.pk).unsubscribed_at is None


# --- Work orders -------------------------------------------------------------------------


@pytest.fixture
def crew(pothole):
    pothole.requires_after_photo = False
    pothole.save()
    return Crew.objects.create(name="Crew 1", department=pothole.department)


def test_duplicate_joins_the_primarys_work_order_and_completing_it_completes_all(pothole, crew):
    primary = report(pothole, 0, ago=timedelta(hours=2))
    order = WorkOrder.create_for([primary], crew=crew)
    new = report(pothole, 30)

    grouping.request_group_duplicates(new)

    new.refresh_from_db()
    assert new.work_order == order and new.crew == crew and new.status == Status.ASSIGNED
    order.start()
    order.complete("Patched with hot asphalt")
    assert set(ServiceRequest.objects.values_list("status", flat=True)) == {Status.COMPLETED}


def test_members_follow_a_work_order_made_later_for_the_primary(pothole, crew):
    primary = report(pothole, 0, ago=timedelta(hours=2))
    new = report(pothole, 30)
    grouping.request_group_duplicates(new)
    order = WorkOrder.objects.create(department=pothole.department, crew=crew)
    order.attach(primary)

    grouping.group_attach_members(order, primary)  # what WorkOrder.attach calls, once wired

    assert ServiceRequest.objects.get(pk=new.pk).work_order == order
    assert grouping.group_attach_members(order, primary) == []
    assert grouping.group_attach_members(order, new) == []


ATTACH_WIRED = "group_attach_members" in inspect.getsource(WorkOrder.attach)


@pytest.mark.skipif(not ATTACH_WIRED, reason="WorkOrder.attach does not call the group hook yet")
def test_work_order_created_later_for_the_primary_takes_its_duplicates(pothole, crew):
    primary = report(pothole, 0, ago=timedelta(hours=2))
    new = report(pothole, 30)
    grouping.request_group_duplicates(new)

    order = WorkOrder.create_for([primary], crew=crew)
    order.start()
    order.complete("Patched")

    assert ServiceRequest.objects.get(pk=new.pk).status == Status.COMPLETED


INTAKE_WIRED = "request_group_duplicates" in inspect.getsource(request_process_intake)


@pytest.mark.skipif(not INTAKE_WIRED, reason="intake does not call the grouping yet")
def test_intake_processing_groups_a_new_report(pothole):
    primary = report(pothole, 0, ago=timedelta(hours=2))
    new = report(pothole, 30)

    request_process_intake(new.pk)

    assert ServiceRequest.objects.get(pk=new.pk).duplicate_of == primary


# --- Staff: confirm, merge, split ----------------------------------------------------------


def test_confirm_marks_every_member(pothole, manager):
    primary = report(pothole, 0, ago=timedelta(hours=2))
    members = [report(pothole, 20 * n) for n in (1, 2)]
    for member in members:
        grouping.request_group_duplicates(member)

    confirmed = grouping.group_confirm(members[0], by=manager)

    assert {m.pk for m in confirmed} == {m.pk for m in members}
    assert all(r.duplicate_confirmed for r in ServiceRequest.objects.filter(duplicate_of=primary))
    assert grouping.group_confirm(primary, by=manager) == []


def test_merge_puts_requests_and_their_groups_under_one_primary(pothole, crew, manager):
    into = report(pothole, 0, ago=timedelta(hours=5))
    order = WorkOrder.create_for([into], crew=crew)
    other = report(pothole, 600, ago=timedelta(hours=3))
    others_member = report(pothole, 620, ago=timedelta(hours=1))
    grouping.request_group_duplicates(others_member)
    assert ServiceRequest.objects.get(pk=others_member.pk).duplicate_of == other

    merged = grouping.group_merge([other], into, by=manager)

    assert merged == [other]
    for request in ServiceRequest.objects.filter(pk__in=[other.pk, others_member.pk]):
        assert request.duplicate_of_id == into.pk
        assert request.duplicate_confirmed
        assert request.work_order == order
    entry = other.history.filter(action=HistoryEntry.Action.DUPLICATE, field="duplicate_of").last()
    assert entry.actor == manager and "Merged by staff" in entry.note
    assert Follower.objects.filter(request=into, source="duplicate").count() == 2


def test_split_takes_a_member_out_of_the_group_and_its_work_order(pothole, crew, manager):
    primary = report(pothole, 0, ago=timedelta(hours=2), reporter_email="a@example.org")
    order = WorkOrder.create_for([primary], crew=crew)
    member = report(pothole, 30, reporter_email="b@example.org")
    grouping.request_group_duplicates(member)

    grouping.group_split(member, by=manager)

    member.refresh_from_db()
    assert member.duplicate_of is None and member.work_order is None
    assert not Follower.objects.filter(request=primary, email="b@example.org").exists()
    order.start()
    order.complete("Patched")
    member.refresh_from_db()
    assert member.status != Status.COMPLETED


def test_splitting_the_primary_leaves_the_oldest_member_leading(pothole, manager):
    primary = report(pothole, 0, ago=timedelta(hours=3))
    older = report(pothole, 20, ago=timedelta(hours=2))
    newer = report(pothole, 40, ago=timedelta(hours=1))
    for member in (older, newer):
        grouping.request_group_duplicates(member)

    grouping.group_split(primary, by=manager)

    assert ServiceRequest.objects.get(pk=older.pk).duplicate_of is None
    assert ServiceRequest.objects.get(pk=newer.pk).duplicate_of_id == older.pk
    assert not ServiceRequest.objects.filter(duplicate_of=primary).exists()


def test_admin_actions_merge_and_split(client, pothole, manager):
    from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME

    from requests_app.admin import ServiceRequestAdmin
    from requests_app.admin_grouping import GROUPING_ACTIONS

    ServiceRequestAdmin.actions = [*ServiceRequestAdmin.actions, *GROUPING_ACTIONS]
    try:
        a = report(pothole, 0, ago=timedelta(hours=2))
        b = report(pothole, 900)
        client.force_login(manager)
        url = "/admin/requests_app/servicerequest/"
        response = client.post(
            url, {"action": "merge_duplicate_groups", ACTION_CHECKBOX_NAME: [a.pk, b.pk]}
        )
        assert response.status_code == 302
        assert ServiceRequest.objects.get(pk=b.pk).duplicate_of_id == a.pk
        client.post(url, {"action": "split_from_duplicate_groups", ACTION_CHECKBOX_NAME: [b.pk]})
        assert ServiceRequest.objects.get(pk=b.pk).duplicate_of is None
    finally:
        ServiceRequestAdmin.actions = [
            x for x in ServiceRequestAdmin.actions if x not in GROUPING_ACTIONS
        ]


# --- The report form: second step without JavaScript, and the JSON endpoint ----------------


def form_data(category, metres=30.0, **overrides):
    lat, lng = north(metres)
    data = {
        "category": category.pk,
        "description": "Big pothole by the crossing",
        "address": "14 Main St",
        "lat": f"{lat:.6f}",
        "lng": f"{lng:.6f}",
        "name": "Ana Ruiz",
        "email": "ana@example.org",
        "phone": "617-555-0199",
        "website": "",
    }
    data.update(overrides)
    return data


def test_report_near_an_open_request_shows_it_as_a_second_step(client, pothole):
    existing = report(pothole, 0, ago=timedelta(hours=1))

    response = client.post(REPORT_URL, form_data(pothole))

    assert response.status_code == 200
    html = response.content.decode()
    assert existing.tracking_number in html
    assert "This is my problem — follow it" in html
    assert "File my report anyway" in html
    for typed in ("Big pothole by the crossing", "14 Main St", "Ana Ruiz", "ana@example.org"):
        assert typed in html
    assert "Your photos were not kept" not in html
    assert existing.reporter_email not in html  # private
    assert ServiceRequest.objects.count() == 1


def test_second_step_says_photos_must_be_chosen_again(client, pothole):
    report(pothole, 0, ago=timedelta(hours=1))

    response = client.post(REPORT_URL, {**form_data(pothole), "photos": [upload()]})

    assert "Your photos were not kept at this step" in response.content.decode()


def test_following_creates_no_request_and_subscribes_the_resident(client, pothole):
    existing = report(pothole, 0, ago=timedelta(hours=1))

    response = client.post(
        REPORT_URL, {**form_data(pothole), "follow": existing.tracking_number}, follow=True
    )

    assert response.redirect_chain[-1][0] == existing.get_absolute_url()
    assert f"You are now following {existing.tracking_number}" in response.content.decode()
    assert ServiceRequest.objects.count() == 1
    follower = Follower.objects.get(request=existing)
    assert (follower.email, follower.source) == ("ana@example.org", Follower.Source.FOLLOW)
    assert existing.history.filter(action=HistoryEntry.Action.FOLLOW).count() == 1


def test_following_a_grouped_duplicate_follows_its_primary(client, pothole):
    primary = report(pothole, 0, ago=timedelta(hours=2))
    member = report(pothole, 20, ago=timedelta(hours=1))
    grouping.request_group_duplicates(member)

    client.post(REPORT_URL, {**form_data(pothole), "follow": member.tracking_number})

    assert Follower.objects.get(email="ana@example.org").request == primary


def test_following_needs_an_email(client, pothole):
    existing = report(pothole, 0, ago=timedelta(hours=1))

    response = client.post(
        REPORT_URL, {**form_data(pothole, email=""), "follow": existing.tracking_number}
    )

    assert response.status_code == 400
    html = response.content.decode()
    assert "To follow a request we need your email" in html
    assert "Big pothole by the crossing" in html and existing.tracking_number in html
    assert not Follower.objects.exists()


def test_following_a_closed_request_is_refused(client, pothole):
    existing = report(pothole, 0, ago=timedelta(hours=1))
    existing.change_status(Status.COMPLETED)

    response = client.post(REPORT_URL, {**form_data(pothole), "follow": existing.tracking_number})

    assert response.status_code == 400
    assert "no longer open" in response.content.decode()
    assert not Follower.objects.exists()


def test_file_mine_anyway_files_normally(client, pothole):
    report(pothole, 0, ago=timedelta(hours=1))

    response = client.post(REPORT_URL, {**form_data(pothole), "file_anyway": "1"})

    assert response.status_code == 302
    assert ServiceRequest.objects.count() == 2
    assert ServiceRequest.objects.filter(description="Big pothole by the crossing").exists()


def test_report_far_from_open_requests_is_filed_at_once(client, pothole):
    report(pothole, 0, ago=timedelta(hours=1))

    assert client.post(REPORT_URL, form_data(pothole, metres=400)).status_code == 302
    assert ServiceRequest.objects.count() == 2


def test_nearby_endpoint_lists_public_open_requests_nearest_first(client, pothole, graffiti):
    far = report(pothole, 200, ago=timedelta(hours=1), description="<b>Hole</b>")
    near = report(pothole, 30, ago=timedelta(hours=1))
    report(pothole, 10, is_public=False)
    report(graffiti, 10)
    closed = report(pothole, 5)
    closed.change_status(Status.COMPLETED)
    lat, lng = CITY_CENTER

    response = client.get(NEARBY_URL, {"category": pothole.pk, "lat": lat, "lng": lng})

    assert response.status_code == 200
    body = response.json()
    assert body["radius_m"] == 250
    assert [r["tracking_number"] for r in body["results"]] == [
        near.tracking_number,
        far.tracking_number,
    ]
    first = body["results"][0]
    assert first["distance_m"] == 30 and first["status"] == "received"
    assert first["url"] == near.get_absolute_url()
    assert "reporter" not in str(body) and near.reporter_email not in str(body)
    assert body["results"][1]["description"] == "<b>Hole</b>"  # JSON; the script uses textContent


def test_nearby_endpoint_shows_public_photo_thumbnails(client, pothole):
    from requests_app.photos import process_photo
    from requests_app.services import photo_attach

    existing = report(pothole, 30)
    shown = photo_attach(existing, process_photo(upload()))
    hidden = photo_attach(existing, process_photo(upload("b.jpg")))
    hidden.is_public = False
    hidden.save()

    body = client.get(
        NEARBY_URL, {"category": pothole.pk, "lat": CITY_CENTER[0], "lng": CITY_CENTER[1]}
    ).json()

    assert body["results"][0]["thumbnails"] == [shown.get_thumbnail_url()]


@pytest.mark.parametrize(
    "params",
    [{}, {"category": "x", "lat": "1", "lng": "2"}, {"lat": "40.7", "lng": "-74.0"}],
)
def test_nearby_endpoint_rejects_bad_or_outside_queries(client, pothole, params):
    params = {"category": pothole.pk, **params} if "category" not in params and params else params

    response = client.get(NEARBY_URL, params)

    assert response.status_code == 400
    assert response.json()["results"] == []
