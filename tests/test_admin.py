"""Staff intake and triage in the Django admin."""

import pytest
from django.urls import reverse

from notifications.models import Notification
from requests_app.models import Channel, Comment, HistoryEntry, ServiceRequest, StaffRole, Status

from .factories import (
    CategoryFactory,
    DepartmentFactory,
    ServiceRequestFactory,
    staff_user,
)


@pytest.fixture
def parks_request(db):
    parks = DepartmentFactory(slug="parks", name="Parks")
    category = CategoryFactory(code="tree-down", name="Tree down", department=parks, sla_hours=4)
    return ServiceRequestFactory(category=category, department=parks)


def test_phone_request_entered_by_staff_is_a_tracked_request(client, dispatcher, pothole):
    client.force_login(dispatcher)
    response = client.post(
        reverse("admin:requests_app_servicerequest_add"),
        {
            "channel": Channel.PHONE,
            "category": pothole.pk,
            "description": "Caller reports a pothole outside the library",
            "address": "700 Boylston St",
            "lat": "",
            "lng": "",
            "reporter_name": "Joe Caller",
            "reporter_email": "joe@example.org",
            "reporter_phone": "617-555-0100",
            "language": "en",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    request = ServiceRequest.objects.get()
    assert request.channel == Channel.PHONE
    assert request.entered_by == dispatcher
    assert request.tracking_number.startswith("CD-")
    assert request.history.get(action=HistoryEntry.Action.CREATED).actor == dispatcher
    assert Notification.objects.filter(request=request, kind="received").exists()


def test_staff_intake_outside_service_area_is_refused(client, dispatcher, pothole):
    client.force_login(dispatcher)
    response = client.post(
        reverse("admin:requests_app_servicerequest_add"),
        {
            "channel": Channel.WALK_IN,
            "category": pothole.pk,
            "description": "Far away",
            "address": "",
            "lat": "40.7",
            "lng": "-74.0",
            "language": "en",
        },
    )
    assert response.status_code == 200
    assert "outside the service area" in response.content.decode()
    assert not ServiceRequest.objects.exists()


def test_dispatcher_changes_status_and_adds_internal_note(client, dispatcher, pothole):
    request = ServiceRequestFactory(category=pothole)
    client.force_login(dispatcher)
    url = reverse("admin:requests_app_servicerequest_change", args=[request.pk])
    page = client.get(url)
    assert page.status_code == 200
    loaded_at = page.context["adminform"].form["loaded_at"].value()
    response = client.post(
        url,
        {
            "priority": request.priority,
            "department": pothole.department.pk,
            "is_public": "on",
            "new_status": Status.IN_PROGRESS,
            "status_note": "",
            "close_reason_choice": "",
            "comment": "Reporter asked us to ring the bell",
            "comment_is_public": "",
            "loaded_at": loaded_at,
            **_empty_inlines(),
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    request.refresh_from_db()
    assert request.status == Status.IN_PROGRESS
    note = Comment.objects.get(request=request)
    assert note.is_public is False
    assert request.history.filter(action=HistoryEntry.Action.NOTE, actor=dispatcher).exists()


def test_stale_admin_form_cannot_overwrite_a_newer_change(client, dispatcher, pothole):
    request = ServiceRequestFactory(category=pothole)
    client.force_login(dispatcher)
    url = reverse("admin:requests_app_servicerequest_change", args=[request.pk])
    loaded_at = client.get(url).context["adminform"].form["loaded_at"].value()
    request.change_status(Status.ASSIGNED)  # another dispatcher, a moment later
    response = client.post(
        url,
        {
            "priority": request.priority,
            "department": "",
            "is_public": "on",
            "new_status": Status.CLOSED,
            "status_note": "",
            "close_reason_choice": "not_found",
            "comment": "",
            "loaded_at": loaded_at,
            **_empty_inlines(),
        },
    )
    assert response.status_code == 200
    assert "Someone else changed this request" in response.content.decode()
    request.refresh_from_db()
    assert request.status == Status.ASSIGNED


def test_department_staff_only_see_their_department(client, pothole, parks_request):
    streets_staff = staff_user("streets", StaffRole.DEPARTMENT_STAFF, pothole.department)
    own = ServiceRequestFactory(category=pothole, department=pothole.department)
    client.force_login(streets_staff)
    listing = client.get(reverse("admin:requests_app_servicerequest_changelist"))
    assert own.tracking_number in listing.content.decode()
    assert parks_request.tracking_number not in listing.content.decode()
    other = client.get(reverse("admin:requests_app_servicerequest_change", args=[parks_request.pk]))
    assert other.status_code in (302, 404)  # the admin redirects a missing object to the list
    assert parks_request.reporter_email not in other.content.decode()


def test_director_reads_but_cannot_add(client, pothole):
    director = staff_user("director", StaffRole.DIRECTOR)
    client.force_login(director)
    assert client.get(reverse("admin:requests_app_servicerequest_changelist")).status_code == 200
    assert client.get(reverse("admin:requests_app_servicerequest_add")).status_code == 403


def test_resident_cannot_reach_the_admin_list(client, db):
    response = client.get(reverse("admin:requests_app_servicerequest_changelist"))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def _empty_inlines():
    data = {}
    for prefix in ("history", "comments", "photos", "duplicates"):
        data.update(
            {
                f"{prefix}-TOTAL_FORMS": "0",
                f"{prefix}-INITIAL_FORMS": "0",
                f"{prefix}-MIN_NUM_FORMS": "0",
                f"{prefix}-MAX_NUM_FORMS": "1000",
            }
        )
    return data


def test_dispatch_sees_the_outbox_backlog_and_can_resend(client, pothole):
    from notifications.services import notification_send

    from .factories import ServiceRequestFactory, staff_user

    request = ServiceRequestFactory(category=pothole, reporter_email="maria@example.org")
    request.change_status("in_progress")
    pending = Notification.objects.filter(request=request).first()
    Notification.objects.filter(pk=pending.pk).update(
        status=Notification.Status.FAILED, last_error="503 provider unavailable"
    )
    url = "/admin/notifications/notification/"
    client.force_login(staff_user("dina", StaffRole.DISPATCHER))
    page = client.get(url + "?status__exact=failed")
    assert page.status_code == 200 and "503 provider unavailable" in page.content.decode()
    client.post(url, {"action": "resend", "_selected_action": [pending.pk]})
    pending.refresh_from_db()
    assert pending.status == Notification.Status.PENDING
    assert notification_send(pending.pk) == "sent"

    client.force_login(staff_user("cris", StaffRole.CREW))
    assert client.get(url).status_code == 403
