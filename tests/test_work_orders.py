"""Work orders: from dispatch to the crew's phone, and what the public then sees."""

import pytest
from django.urls import reverse

from requests_app.models import (
    Crew,
    HistoryEntry,
    InvalidTransition,
    Photo,
    StaffRole,
    Status,
    WorkOrder,
    WorkOrderStatus,
)
from requests_app.photos import process_photo
from requests_app.services import work_order_add_photo

from .conftest import upload
from .factories import DepartmentFactory, ServiceRequestFactory, staff_user


@pytest.fixture
def crew(pothole):
    crew = Crew.objects.create(name="Crew 1", department=pothole.department)
    member = staff_user("casey", StaffRole.CREW, pothole.department)
    crew.members.add(member)
    crew.member = member
    return crew


@pytest.fixture
def order(pothole, crew, dispatcher):
    requests = [
        ServiceRequestFactory(category=pothole, department=pothole.department) for _ in range(2)
    ]
    return WorkOrder.create_for(requests, crew=crew, by=dispatcher)


def add_after_photo(order, by=None):
    return work_order_add_photo(order, process_photo(upload()), kind=Photo.Kind.AFTER, by=by)


def test_creating_a_work_order_assigns_its_requests_to_the_crew(order, crew):
    for request in order.requests.all():
        assert request.crew == crew and request.status == Status.ASSIGNED
        assert request.history.filter(action=HistoryEntry.Action.WORK_ORDER).exists()


def test_starting_and_completing_moves_every_request(order, crew):
    order.start(by=crew.member)
    assert set(order.requests.values_list("status", flat=True)) == {Status.IN_PROGRESS}
    add_after_photo(order, by=crew.member)
    order.complete("Filled and compacted", by=crew.member, labour_hours=2)
    order.refresh_from_db()
    assert order.status == WorkOrderStatus.COMPLETED and order.labour_hours == 2
    for request in order.requests.all():
        assert request.status == Status.COMPLETED and request.resolved_at
        assert request.history.filter(action="status", new_value="completed").count() == 1


def test_cannot_complete_without_after_photo_or_note(order, crew):
    order.start(by=crew.member)
    with pytest.raises(InvalidTransition, match="after"):
        order.complete("Done", by=crew.member)
    add_after_photo(order)
    with pytest.raises(InvalidTransition, match="resolution note"):
        order.complete("  ", by=crew.member)
    order.refresh_from_db()
    assert order.status == WorkOrderStatus.IN_PROGRESS
    assert set(order.requests.values_list("status", flat=True)) == {Status.IN_PROGRESS}


def test_after_photo_requirement_can_be_switched_off_per_category(order, pothole, crew):
    pothole.requires_after_photo = False
    pothole.save()
    order.start()
    order.complete("Nothing to photograph: cleared debris")
    assert order.status == WorkOrderStatus.COMPLETED


def test_cancelled_order_cannot_be_reopened(order):
    order.cancel(note="Duplicate job")
    with pytest.raises(InvalidTransition):
        order.start()
    order.refresh_from_db()
    assert order.status == WorkOrderStatus.CANCELLED


def test_crew_member_completes_from_the_phone_page_and_public_sees_after_photo(client, order, crew):
    client.force_login(crew.member)
    listing = client.get(reverse("crew:my_work"))
    assert str(order) in listing.content.decode()
    url = reverse("crew:work_order", args=[order.pk])
    assert client.get(url).status_code == 200
    assert client.post(reverse("crew:start", args=[order.pk])).status_code == 302

    refused = client.post(
        reverse("crew:complete", args=[order.pk]),
        {"resolution_note": "Patched the hole", "labour_hours": "1.5"},
    )
    assert refused.status_code == 409
    assert "after" in refused.content.decode() and "Patched the hole" in refused.content.decode()

    bad = client.post(
        reverse("crew:photo", args=[order.pk]),
        {"kind": "after", "photo": upload(data=b"not an image")},
    )
    assert bad.status_code == 400

    ok = client.post(reverse("crew:photo", args=[order.pk]), {"kind": "after", "photo": upload()})
    assert ok.status_code == 302
    done = client.post(
        reverse("crew:complete", args=[order.pk]),
        {"resolution_note": "Patched the hole", "labour_hours": "1.5"},
    )
    assert done.status_code == 302

    request = order.requests.first()
    client.logout()
    status_page = client.get(request.get_absolute_url()).content.decode()
    assert "Completed" in status_page
    after = order.photos.get(kind="after")
    assert after.get_thumbnail_url() in status_page
    assert client.get(after.get_absolute_url()).status_code == 200


def test_crew_member_cannot_see_another_crews_work_order(client, order, pothole):
    other = staff_user("other", StaffRole.CREW, pothole.department)
    Crew.objects.create(name="Crew 2", department=pothole.department).members.add(other)
    client.force_login(other)
    assert client.get(reverse("crew:work_order", args=[order.pk])).status_code == 404
    assert client.post(reverse("crew:start", args=[order.pk])).status_code == 404
    assert str(order) not in client.get(reverse("crew:my_work")).content.decode()


def test_director_may_look_but_not_act(client, order):
    director = staff_user("director", StaffRole.DIRECTOR)
    client.force_login(director)
    assert client.get(reverse("crew:work_order", args=[order.pk])).status_code == 200
    assert client.post(reverse("crew:start", args=[order.pk])).status_code == 403


def test_dispatcher_bulk_assigns_from_the_list(client, dispatcher, pothole, crew):
    requests = [ServiceRequestFactory(category=pothole) for _ in range(3)]
    client.force_login(dispatcher)
    response = client.post(
        reverse("admin:requests_app_servicerequest_changelist"),
        {
            "action": "assign_to_crew",
            "_selected_action": [r.pk for r in requests],
            "apply": "1",
            "crew": crew.pk,
        },
    )
    assert response.status_code == 302
    for request in requests:
        request.refresh_from_db()
        assert request.crew == crew and request.status == Status.ASSIGNED


def test_department_staff_cannot_assign_another_departments_crew(client, pothole):
    parks = DepartmentFactory(slug="parks", name="Parks")
    parks_crew = Crew.objects.create(name="Parks crew", department=parks)
    streets_staff = staff_user("streets", StaffRole.DEPARTMENT_STAFF, pothole.department)
    request = ServiceRequestFactory(category=pothole, department=pothole.department)
    client.force_login(streets_staff)
    client.post(
        reverse("admin:requests_app_servicerequest_changelist"),
        {
            "action": "assign_to_crew",
            "_selected_action": [request.pk],
            "apply": "1",
            "crew": parks_crew.pk,
        },
    )
    request.refresh_from_db()
    assert request.crew is None


@pytest.mark.parametrize(
    "role,sees",
    [
        (StaffRole.DISPATCHER, {"streets", "parks"}),
        (StaffRole.DIRECTOR, {"streets", "parks"}),
        (StaffRole.ADMINISTRATOR, {"streets", "parks"}),
        (StaffRole.DEPARTMENT_STAFF, {"streets"}),
        (StaffRole.CREW, set()),
    ],
)
def test_request_list_follows_the_role(client, pothole, role, sees):
    parks = DepartmentFactory(slug="parks", name="Parks")
    made = {
        "streets": ServiceRequestFactory(category=pothole, department=pothole.department),
        "parks": ServiceRequestFactory(category=pothole, department=parks),
    }
    user = staff_user(
        f"u-{role}",
        role,
        pothole.department if role in (StaffRole.DEPARTMENT_STAFF, StaffRole.CREW) else None,
    )
    client.force_login(user)
    response = client.get(reverse("admin:requests_app_servicerequest_changelist"))
    html = response.content.decode() if response.status_code == 200 else ""
    assert {name for name, r in made.items() if r.tracking_number in html} == sees
    for name, request in made.items():
        page = client.get(reverse("admin:requests_app_servicerequest_change", args=[request.pk]))
        visible = page.status_code == 200 and request.tracking_number in page.content.decode()
        assert visible == (name in sees)
