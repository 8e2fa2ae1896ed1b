"""Who may do what: every role against every action, enforced by the server.

A forbidden object answers like a missing one (404, or the admin's redirect to its list);
a forbidden action on a visible object is 403, or changes nothing.
"""

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from requests_app.models import Crew, StaffRole, Status, WorkOrder

from .factories import DepartmentFactory, ServiceRequestFactory, staff_user

ROLES = ["anonymous", "resident", "dispatcher", "streets", "parks", "crew", "director", "admin"]


@pytest.fixture
def world(pothole):
    parks = DepartmentFactory(slug="parks", name="Parks")
    streets_crew = Crew.objects.create(name="Crew 1", department=pothole.department)
    users = {
        "resident": get_user_model().objects.create_user("resident", password="x"),
        "dispatcher": staff_user("dispatcher", StaffRole.DISPATCHER),
        "streets": staff_user("streets", StaffRole.DEPARTMENT_STAFF, pothole.department),
        "parks": staff_user("parks", StaffRole.DEPARTMENT_STAFF, parks),
        "crew": staff_user("crew", StaffRole.CREW, pothole.department),
        "director": staff_user("director", StaffRole.DIRECTOR),
        "admin": staff_user("admin", StaffRole.ADMINISTRATOR),
    }
    streets_crew.members.add(users["crew"])
    request = ServiceRequestFactory(category=pothole, department=pothole.department)
    order = WorkOrder.create_for([request], crew=streets_crew)
    return {"users": users, "request": request, "order": order, "crew": streets_crew}


def login(client, world, role):
    if role != "anonymous":
        client.force_login(world["users"][role])


def visible(response, text):
    return response.status_code == 200 and text in response.content.decode()


EXPECTED = {
    #               list  view  add   change  crew-page  crew-act  simulator
    "anonymous": (False, False, False, False, False, False, False),
    "resident": (False, False, False, False, False, False, False),
    "dispatcher": (True, True, True, True, True, True, True),
    "streets": (True, True, True, True, True, True, True),
    "parks": (False, False, True, False, False, False, True),
    "crew": (False, False, False, False, True, True, True),
    "director": (True, True, False, False, True, False, True),
    "admin": (True, True, True, True, True, True, True),
}


@pytest.mark.parametrize("role", ROLES)
def test_role_matrix(client, world, role):
    login(client, world, role)
    request, order = world["request"], world["order"]
    can_list, can_view, can_add, can_change, can_see_crew, can_act, can_simulate = EXPECTED[role]

    listing = client.get(reverse("admin:requests_app_servicerequest_changelist"))
    assert visible(listing, request.tracking_number) == can_list

    page = client.get(reverse("admin:requests_app_servicerequest_change", args=[request.pk]))
    assert visible(page, request.tracking_number) == can_view
    if not can_view:
        assert request.reporter_email not in page.content.decode()

    add = client.get(reverse("admin:requests_app_servicerequest_add"))
    assert (add.status_code == 200) == can_add

    # Changing the status through the admin form.
    before = request.updated_at.isoformat()
    client.post(
        reverse("admin:requests_app_servicerequest_change", args=[request.pk]),
        {
            "priority": request.priority,
            "is_public": "on",
            "new_status": Status.IN_PROGRESS,
            "loaded_at": before,
            **{
                f"{p}-{k}": v
                for p in ("history", "comments", "photos", "duplicates")
                for k, v in (("TOTAL_FORMS", 0), ("INITIAL_FORMS", 0))
            },
        },
    )
    request.refresh_from_db()
    assert (request.status == Status.IN_PROGRESS) == can_change

    crew_page = client.get(reverse("crew:work_order", args=[order.pk]))
    assert (crew_page.status_code == 200) == can_see_crew
    if not can_see_crew:
        assert crew_page.status_code in (302, 404)

    start = client.post(reverse("crew:start", args=[order.pk]))
    order.refresh_from_db()
    assert (order.status == "in_progress") == can_act
    if not can_act and role not in ("anonymous", "resident"):
        assert start.status_code in (403, 404)

    simulator = client.get(reverse("admin:routing_simulate"))
    assert (simulator.status_code == 200) == can_simulate
