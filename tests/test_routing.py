"""Routing: districts by point-in-polygon, ordered rules, fallback and triage."""

import pytest
from django.urls import reverse

from requests_app.models import HistoryEntry, Priority, Status
from requests_app.services import Intake, request_process_intake, request_submit
from routing.models import District, RoutingRule, RoutingRuleChange
from routing.services import decide, district_for

from .factories import CategoryFactory, DepartmentFactory

# Two districts side by side inside the service area; the east one is a MultiPolygon.
WEST = {
    "type": "Polygon",
    "coordinates": [
        [[-71.10, 42.33], [-71.06, 42.33], [-71.06, 42.38], [-71.10, 42.38], [-71.10, 42.33]]
    ],
}
EAST = {
    "type": "MultiPolygon",
    "coordinates": [
        [[[-71.06, 42.33], [-71.02, 42.33], [-71.02, 42.38], [-71.06, 42.38], [-71.06, 42.33]]],
        [[[-71.02, 42.24], [-71.00, 42.24], [-71.00, 42.26], [-71.02, 42.26], [-71.02, 42.24]]],
    ],
}
IN_WEST = (42.35, -71.08)
IN_EAST = (42.35, -71.04)
IN_EAST_ISLAND = (42.25, -71.01)
NOWHERE = (42.30, -71.15)


@pytest.fixture
def districts(db):
    return (
        District.objects.create(name="West", code="west", boundary=WEST),
        District.objects.create(name="East", code="east", boundary=EAST),
    )


@pytest.fixture
def crews(pothole):
    from requests_app.models import Crew

    return (
        Crew.objects.create(name="Crew 1", department=pothole.department),
        Crew.objects.create(name="Crew 3", department=pothole.department),
    )


def submit_and_route(category, point, text="Pothole"):
    request = request_submit(
        Intake(
            category=category,
            description=text,
            lat=point[0] if point else None,
            lng=point[1] if point else None,
            address="" if point else "12 Main St",
        )
    )
    request_process_intake(request.pk)
    request.refresh_from_db()
    return request


def test_district_found_by_point_in_polygon_including_multipolygons(districts):
    west, east = districts
    assert district_for(*IN_WEST) == west
    assert district_for(*IN_EAST) == east
    assert district_for(*IN_EAST_ISLAND) == east
    assert district_for(*NOWHERE) is None
    assert district_for(None, None) is None


def test_rule_for_category_and_district_routes_to_crew_and_explains_why(pothole, districts, crews):
    rule = RoutingRule.objects.create(name="Potholes in West", position=1, crew=crews[1])
    rule.categories.add(pothole)
    rule.districts.add(districts[0])

    routed = submit_and_route(pothole, IN_WEST)
    assert routed.district == districts[0]
    assert routed.crew == crews[1] and routed.department == pothole.department
    assert routed.status == Status.ASSIGNED
    explanation = routed.history.get(action=HistoryEntry.Action.ROUTING).note
    assert explanation == (
        "Routed to Streets / Crew 3 by rule ‘Potholes in West’ (category + district)"
    )

    elsewhere = submit_and_route(pothole, IN_EAST)
    assert elsewhere.crew is None and elsewhere.department == pothole.department
    assert "no rule matched" in elsewhere.history.get(action="routing").note


def test_keyword_rule_overrides_department_and_priority(pothole, districts):
    water = DepartmentFactory(slug="water", name="Water")
    RoutingRule.objects.create(
        name="Flooding",
        position=1,
        keywords="flooding, gas",
        department=water,
        priority=Priority.URGENT,
    )
    routed = submit_and_route(pothole, IN_WEST, text="Street FLOODING after the pothole")
    assert routed.department == water and routed.priority == Priority.URGENT
    assert "keyword “flooding”" in routed.history.get(action="routing").note
    plain = submit_and_route(pothole, IN_WEST, text="Pothole near the old flood wall")
    assert plain.department == pothole.department


def test_rules_are_tried_in_order_and_switched_off_rules_are_skipped(pothole, districts, crews):
    first = RoutingRule.objects.create(name="First", position=1, crew=crews[0], is_active=False)
    first.categories.add(pothole)
    second = RoutingRule.objects.create(name="Second", position=2, crew=crews[1])
    second.categories.add(pothole)
    assert decide(pothole, *IN_WEST, "x").rule == second
    first.is_active = True
    first.save()
    assert decide(pothole, *IN_WEST, "x").rule == first


def test_category_group_rule(pothole, districts, crews):
    rule = RoutingRule.objects.create(
        name="Streets group", category_groups="streets and sidewalks", crew=crews[0]
    )
    assert decide(pothole, *IN_WEST, "").rule == rule


def test_nothing_matches_and_no_department_lands_in_triage(districts):
    closed = DepartmentFactory(slug="closed", name="Closed dept", is_active=False)
    orphan = CategoryFactory(code="orphan", name="Orphan", department=closed)
    routed = submit_and_route(orphan, IN_WEST)
    assert routed.department is None and routed.status == Status.RECEIVED
    assert "triage queue" in routed.history.get(action="routing").note
    from requests_app.models import ServiceRequest

    assert ServiceRequest.objects.needing_triage().filter(pk=routed.pk).exists()


def test_forwarding_counts_and_records(pothole, dispatcher):
    parks = DepartmentFactory(slug="parks", name="Parks")
    routed = submit_and_route(pothole, IN_WEST)
    routed.forward(parks, by=dispatcher, reason="It is in the park")
    routed.refresh_from_db()
    assert routed.department == parks and routed.forward_count == 1
    assert "Forwarded: It is in the park" in routed.history.filter(field="department").last().note


def test_simulator_shows_the_rule_without_creating_anything(
    client, dispatcher, pothole, districts, crews
):
    rule = RoutingRule.objects.create(name="Potholes in West", crew=crews[1])
    rule.categories.add(pothole)
    client.force_login(dispatcher)
    from requests_app.models import ServiceRequest

    response = client.get(
        reverse("admin:routing_simulate"),
        {"category": pothole.pk, "lat": IN_WEST[0], "lng": IN_WEST[1], "text": "hole"},
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert "Potholes in West" in html and "West" in html and "Crew 3" in html
    assert not ServiceRequest.objects.exists()


def test_rule_changes_are_recorded_with_who_and_what(client, db, pothole, crews):
    from requests_app.models import StaffRole

    from .factories import staff_user

    admin_user = staff_user("boss", StaffRole.ADMINISTRATOR)
    client.force_login(admin_user)
    response = client.post(
        reverse("admin:routing_routingrule_add"),
        {
            "name": "Potholes fast",
            "position": 5,
            "is_active": "on",
            "categories": [pothole.pk],
            "category_groups": "",
            "keywords": "",
            "department": "",
            "crew": crews[0].pk,
            "assignee": "",
            "priority": Priority.HIGH,
        },
    )
    assert response.status_code == 302, response.content.decode()[:1500]
    change = RoutingRuleChange.objects.get()
    assert change.user == admin_user and change.action == "created"
    assert "Pothole" in change.summary and "Crew 1" in change.summary


def test_sending_from_triage_is_not_counted_as_a_forward(dispatcher):
    closed = DepartmentFactory(slug="closed", name="Closed dept", is_active=False)
    orphan = CategoryFactory(code="orphan", name="Orphan", department=closed)
    parks = DepartmentFactory(slug="parks", name="Parks")
    routed = submit_and_route(orphan, IN_WEST)
    routed.forward(parks, by=dispatcher, reason="Parks handles this")
    routed.refresh_from_db()
    assert routed.department == parks and routed.forward_count == 0
    assert routed.status == Status.ASSIGNED


def test_priority_only_rule_adds_priority_and_lets_routing_continue(pothole, districts, crews):
    RoutingRule.objects.create(
        name="Near a school", position=1, keywords="school", priority=Priority.HIGH
    )
    area = RoutingRule.objects.create(name="Potholes in West", position=2, crew=crews[1])
    area.categories.add(pothole)
    decision = decide(pothole, *IN_WEST, "Hole by the school gate")
    assert decision.rule == area and decision.crew == crews[1]
    assert decision.priority == Priority.HIGH
    assert "priority High by rule ‘Near a school’ (keyword “school”)" in decision.explain()


def test_rule_to_a_closed_department_is_skipped(pothole, districts):
    closed = DepartmentFactory(slug="closed", name="Closed", is_active=False)
    RoutingRule.objects.create(name="To closed", position=1, department=closed)
    assert decide(pothole, *IN_WEST, "").department == pothole.department


def test_keywords_match_whole_words(pothole, districts):
    water = DepartmentFactory(slug="water", name="Water")
    RoutingRule.objects.create(name="Gas", keywords="gas", department=water)
    assert decide(pothole, *IN_WEST, "smell of gas here").department == water
    assert decide(pothole, *IN_WEST, "gasoline spill").department == pothole.department


def test_rule_changes_take_effect_at_once(pothole, districts, crews):
    rule = RoutingRule.objects.create(name="Potholes", crew=crews[0])
    assert decide(pothole, *IN_WEST, "").rule == rule  # matches everything, cached now
    rule.categories.add(CategoryFactory(code="other", name="Other"))
    rule.save()  # what the admin does after saving categories and districts
    assert decide(pothole, *IN_WEST, "").rule is None
