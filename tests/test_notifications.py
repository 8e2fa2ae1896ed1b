"""Resident and staff emails: who gets them, what they say, and how they stop."""

import re
from datetime import timedelta

import pytest
from anymail.exceptions import AnymailRecipientsRefused
from anymail.signals import AnymailTrackingEvent, tracking
from django.core import mail
from django.test import Client
from django.urls import include, path, reverse
from django.utils import timezone

from civicdesk.urls import urlpatterns as project_urlpatterns
from notifications.links import unsubscribe_token
from notifications.models import DigestRun, Notification, ServiceNotice, SuppressedAddress
from notifications.services import (
    SendOutcome,
    department_digest_send,
    notices_for,
    notification_send,
    notify_crew_assigned,
)
from requests_app.models import (
    CloseReason,
    Crew,
    Follower,
    Photo,
    StaffRole,
    Status,
    WorkOrder,
)
from requests_app.photos import process_photo
from requests_app.services import work_order_add_photo

from . import fake_esp
from .conftest import upload
from .factories import CITY_CENTER, ServiceRequestFactory, staff_user

# Until civicdesk/urls.py mounts them, these tests mount the apps' URLs themselves.
urlpatterns = [
    path("notifications/", include("notifications.urls")),
    path("surveys/", include("surveys.urls")),
    *project_urlpatterns,
]
pytestmark = pytest.mark.urls(__name__)

INTERNAL_NOTE = "Reporter is difficult, lives at 14 Elm"


@pytest.fixture
def request_with_followers(pothole):
    request = ServiceRequestFactory(category=pothole, department=pothole.department, language="en")
    Follower.objects.create(
        request=request, email="MARIA@example.org", source=Follower.Source.REPORTER
    )
    Follower.objects.create(
        request=request, email="jo@example.org", language="es", source=Follower.Source.FOLLOW
    )
    Follower.objects.create(
        request=request,
        email="gone@example.org",
        source=Follower.Source.DUPLICATE,
        unsubscribed_at=timezone.now(),
    )
    return request


@pytest.fixture
def crew(pothole):
    crew = Crew.objects.create(name="Crew 1", department=pothole.department)
    member = staff_user("casey", StaffRole.CREW, pothole.department)
    crew.members.add(member)
    return crew


def emails(request, **filters):
    return list(request.notifications.filter(**filters).order_by("pk"))


def test_status_email_goes_to_reporter_and_followers_once_each(request_with_followers):
    request_with_followers.change_status(Status.IN_PROGRESS)
    sent = emails(request_with_followers, kind="status")
    assert [n.recipient for n in sent] == ["maria@example.org", "jo@example.org"]
    assert {n.template for n in sent} == {"status_in_progress"}


def test_each_email_has_its_own_one_click_unsubscribe(request_with_followers):
    request_with_followers.change_status(Status.IN_PROGRESS)
    first, second = emails(request_with_followers, kind="status")
    for n in (first, second):
        link = re.search(r"<(.+)>", n.headers["List-Unsubscribe"]).group(1)
        assert link.startswith("http://127.0.0.1:8000/notifications/unsubscribe/")
        assert n.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert link in n.body_text and link in n.body_html
    assert first.headers["List-Unsubscribe"] != second.headers["List-Unsubscribe"]


def test_every_link_in_resident_emails_is_absolute(request_with_followers):
    request_with_followers.change_status(Status.IN_PROGRESS)
    for n in emails(request_with_followers):
        for href in re.findall(r'(?:href|src)="([^"]+)"', n.body_html):
            assert href.startswith("http://127.0.0.1:8000/"), href


def test_follower_gets_email_in_own_language_and_never_the_reporters_name(
    request_with_followers,
):
    request_with_followers.change_status(Status.IN_PROGRESS)
    reporter, follower = emails(request_with_followers, kind="status")
    assert "Maria Lopez" in reporter.body_text
    assert follower.language == "es" and 'lang="es"' in follower.body_html
    for text in (follower.subject, follower.body_text, follower.body_html):
        assert "Maria" not in text and "617-555" not in text and "maria@" not in text


def test_completion_email_has_resolution_note_and_after_photo(pothole, crew):
    request = ServiceRequestFactory(category=pothole, department=pothole.department)
    order = WorkOrder.create_for([request], crew=crew)
    order.start()
    photo = work_order_add_photo(order, process_photo(upload()), kind=Photo.Kind.AFTER)
    order.complete("Filled and compacted the hole")
    completed = emails(request, template="status_completed")
    assert len(completed) == 1
    assert "Filled and compacted the hole" in completed[0].body_html
    assert f"http://127.0.0.1:8000/photos/{photo.id}/full/" in completed[0].body_html


def test_closing_email_gives_the_reason(request_with_followers):
    request_with_followers.change_status(
        Status.CLOSED, close_reason=CloseReason.NOT_CITY, note="It is a state highway"
    )
    closed = emails(request_with_followers, template="status_closed")[0]
    assert "Not the city&#x27;s responsibility" in closed.body_html
    assert "It is a state highway" in closed.body_text


def test_internal_notes_are_never_emailed(request_with_followers, dispatcher):
    request_with_followers.add_comment(INTERNAL_NOTE, by=dispatcher, public=False)
    request_with_followers.add_comment("Crew on site tomorrow", by=dispatcher, public=True)
    request_with_followers.change_status(Status.IN_PROGRESS)
    comments = emails(request_with_followers, kind="comment")
    assert len(comments) == 2 and "Crew on site tomorrow" in comments[0].body_text
    for n in emails(request_with_followers):
        assert INTERNAL_NOTE not in n.body_text + n.body_html + n.subject


@pytest.mark.parametrize(
    ("status", "template"),
    [
        (Status.ASSIGNED, "status_assigned"),
        (Status.SCHEDULED, "status_assigned"),
        (Status.IN_PROGRESS, "status_in_progress"),
    ],
)
def test_status_note_is_in_the_assigned_scheduled_and_in_progress_emails(
    request_with_followers, dispatcher, status, template
):
    note = "Crew on site Tuesday <early>; keep the lane clear"
    request_with_followers.change_status(status, by=dispatcher, note=note)
    for n in emails(request_with_followers, kind="status"):
        assert n.template == template
        assert note in n.body_text
        assert "Crew on site Tuesday &lt;early&gt;; keep the lane clear" in n.body_html
        assert "<early>" not in n.body_html


def _received_email(pothole):
    from notifications.services import notify_request_received

    request = ServiceRequestFactory(category=pothole)
    (notification,) = notify_request_received(request)
    notification_send(notification.pk)  # the receipt is written when it is sent
    notification.refresh_from_db()
    return request, notification


def test_without_inbound_email_no_email_asks_for_a_reply(pothole, settings):
    settings.INBOUND_EMAIL_ADDRESS = ""
    request, received = _received_email(pothole)
    request.change_status(Status.COMPLETED)
    closed = ServiceRequestFactory(category=pothole)
    closed.change_status(Status.CLOSED, close_reason=CloseReason.NOT_CITY)
    sent = [received, *emails(request, kind="status"), *emails(closed, kind="status")]
    assert {n.template for n in sent} == {
        "request_received",
        "status_completed",
        "status_closed",
    }
    for n in sent:
        assert "Reply-To" not in n.headers
        for body in (n.body_text, n.body_html):
            assert "reply" not in body.lower(), (n.template, body)
            assert "Demo City 311" in body
    assert "To add something, contact Demo City 311" in received.body_text
    (completed,) = emails(request, template="status_completed")
    assert f"give the tracking number {request.tracking_number}" in completed.body_text


def test_with_inbound_email_the_emails_ask_for_a_reply_that_reaches_us(pothole, settings):
    settings.INBOUND_EMAIL_ADDRESS = "311-replies@city.example"
    request, received = _received_email(pothole)
    request.change_status(Status.COMPLETED)
    (completed,) = emails(request, template="status_completed")
    for n in (received, completed):
        assert n.headers["Reply-To"] == "311-replies@city.example"
    assert "To add something, reply to this email" in received.body_text
    assert "Not fixed after all? Reply to this email and tell us." in completed.body_html
    assert mail.outbox[0].extra_headers["Reply-To"] == "311-replies@city.example"


def test_reply_offers_are_written_in_spanish_too(pothole, settings):
    settings.INBOUND_EMAIL_ADDRESS = ""
    request = ServiceRequestFactory(category=pothole, language="es")
    request.change_status(Status.COMPLETED)
    (completed,) = emails(request, template="status_completed")
    assert completed.language == "es" and "responde" not in completed.body_text.lower()


# --- Unsubscribe ------------------------------------------------------------------------


def unsubscribe_path(request, email):
    return f"/notifications/unsubscribe/{unsubscribe_token(request.pk, email)}/"


def test_unsubscribe_link_asks_first_and_a_get_records_nothing(request_with_followers, client):
    response = client.get(unsubscribe_path(request_with_followers, "jo@example.org"))
    assert response.status_code == 200 and b'<form method="post"' in response.content
    assert not Follower.objects.filter(email="jo@example.org", unsubscribed_at__isnull=False)


def test_one_click_unsubscribe_without_csrf_token_stops_emails(request_with_followers):
    client = Client(enforce_csrf_checks=True)
    response = client.post(
        unsubscribe_path(request_with_followers, "jo@example.org"),
        {"List-Unsubscribe": "One-Click"},
    )
    assert response.status_code == 200
    follower = Follower.objects.get(email="jo@example.org")
    assert follower.unsubscribed_at is not None
    assert request_with_followers.history.filter(field="unsubscribed").count() == 1
    request_with_followers.change_status(Status.IN_PROGRESS)
    assert [n.recipient for n in emails(request_with_followers, kind="status")] == [
        "maria@example.org"
    ]


def test_reporter_without_follower_row_can_unsubscribe(pothole, client):
    request = ServiceRequestFactory(category=pothole)
    client.post(unsubscribe_path(request, "maria@example.org"))
    follower = Follower.objects.get(request=request)
    assert follower.source == Follower.Source.REPORTER and follower.unsubscribed_at
    request.change_status(Status.IN_PROGRESS)
    assert emails(request, kind="status") == []


def test_reused_unsubscribe_link_changes_nothing_more(request_with_followers, client):
    url = unsubscribe_path(request_with_followers, "jo@example.org")
    client.post(url)
    first = Follower.objects.get(email="jo@example.org").unsubscribed_at
    response = client.post(url)
    assert response.status_code == 200
    assert Follower.objects.get(email="jo@example.org").unsubscribed_at == first
    assert request_with_followers.history.filter(field="unsubscribed").count() == 1


def test_unsubscribe_link_opened_again_says_the_emails_already_stopped(
    request_with_followers, client
):
    url = unsubscribe_path(request_with_followers, "jo@example.org")
    client.post(url)
    stopped_at = Follower.objects.get(email="jo@example.org").unsubscribed_at
    for response in (client.get(url), client.post(url)):
        html = response.content.decode()
        assert response.status_code == 200
        assert "You are already unsubscribed" in html
        assert "Stop emails about this report?" not in html
        assert '<form method="post"' not in html
    assert Follower.objects.get(email="jo@example.org").unsubscribed_at == stopped_at
    assert request_with_followers.history.filter(field="unsubscribed").count() == 1
    # Someone else on the same request is still asked.
    other = client.get(unsubscribe_path(request_with_followers, "maria@example.org"))
    assert "Stop emails about this report?" in other.content.decode()


def test_tampered_unsubscribe_link_is_refused(request_with_followers, pothole, client):
    token = unsubscribe_token(request_with_followers.pk, "jo@example.org")
    other = ServiceRequestFactory(category=pothole)
    forged = token.replace(token.split(":")[0], unsubscribe_token(other.pk, "x@y.z").split(":")[0])
    for bad in (token[:-2] + "xx", forged, "nonsense"):
        response = client.post(f"/notifications/unsubscribe/{bad}/")
        assert response.status_code == 400
    assert not Follower.objects.filter(unsubscribed_at__isnull=False).exclude(
        email="gone@example.org"
    )


# --- Delivery ---------------------------------------------------------------------------


def bounce(recipient, event_type="bounced", message_id=""):
    event = AnymailTrackingEvent(
        event_type=event_type,
        recipient=recipient,
        message_id=message_id,
        description="550 5.1.1 mailbox unknown",
    )
    tracking.send(sender=object, event=event, esp_name="TestESP")


def test_bounce_marks_address_undeliverable_and_stops_further_email(request_with_followers):
    request_with_followers.change_status(Status.IN_PROGRESS)
    pending = emails(request_with_followers, kind="status", recipient="jo@example.org")[0]
    bounce("Jo@Example.org")
    assert SuppressedAddress.objects.get().email == "jo@example.org"
    # A row written before the bounce is failed at send time, visibly, without sending.
    assert notification_send(pending.pk) == SendOutcome.FAILED
    pending.refresh_from_db()
    assert pending.status == "failed" and "undeliverable" in pending.last_error
    assert mail.outbox == []
    request_with_followers.change_status(Status.SCHEDULED)
    assert [n.recipient for n in emails(request_with_followers, template="status_assigned")] == [
        "maria@example.org"
    ]


def test_complaint_suppresses_and_delivery_events_do_not(request_with_followers):
    bounce("maria@example.org", event_type="delivered")
    assert not SuppressedAddress.objects.exists()
    bounce("maria@example.org", event_type="complained")
    assert SuppressedAddress.objects.get().reason == "complained"


def test_refused_recipient_fails_at_once_and_is_suppressed(pothole, settings, monkeypatch):
    request = ServiceRequestFactory(category=pothole)
    request.change_status(Status.IN_PROGRESS)
    notification = emails(request, kind="status")[0]

    def refuse(self, messages):
        raise AnymailRecipientsRefused("all recipients refused")

    monkeypatch.setattr("django.core.mail.backends.locmem.EmailBackend.send_messages", refuse)
    assert notification_send(notification.pk) == SendOutcome.FAILED
    notification.refresh_from_db()
    assert notification.status == "failed" and notification.attempts == 1
    assert SuppressedAddress.is_suppressed("maria@example.org")


def test_provider_outage_retries_after_the_providers_retry_after(
    pothole, settings, monkeypatch, tmp_path
):
    settings.EMAIL_BACKEND = "tests.fake_esp.EmailBackend"
    monkeypatch.setenv("FAKE_ESP_DIR", str(tmp_path))
    monkeypatch.setenv("FAKE_ESP_FAILURES", "1")
    monkeypatch.setenv("FAKE_ESP_RETRY_AFTER", "5")
    request = ServiceRequestFactory(category=pothole)
    request.change_status(Status.IN_PROGRESS)
    notification = emails(request, kind="status")[0]
    before = timezone.now()
    assert notification_send(notification.pk) == SendOutcome.RETRY
    notification.refresh_from_db()
    assert notification.status == "pending" and "503" in notification.last_error
    assert timedelta(seconds=4) < notification.next_attempt_at - before < timedelta(seconds=7)
    assert notification_send(notification.pk) == SendOutcome.SKIPPED  # not before its time
    Notification.objects.filter(pk=notification.pk).update(next_attempt_at=timezone.now())
    assert notification_send(notification.pk) == SendOutcome.SENT
    assert notification_send(notification.pk) == SendOutcome.SKIPPED
    (sent,) = fake_esp.sent(tmp_path)
    assert sent["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


# --- Staff ------------------------------------------------------------------------------


def test_crew_members_are_told_of_an_assignment(pothole, crew):
    request = ServiceRequestFactory(category=pothole, department=pothole.department)
    crew.members.add(staff_user("robin", StaffRole.CREW, pothole.department))
    request.assign(crew=crew)
    sent = notify_crew_assigned(request, crew)
    assert sorted(n.recipient for n in sent) == ["casey@city.example", "robin@city.example"]
    assert all(n.kind == "crew" and request.tracking_number in n.subject for n in sent)


def _crew_link(notification):
    link = re.search(r"http://127\.0\.0\.1:8000(\S+)$", notification.body_text, re.M).group(1)
    assert f'href="http://127.0.0.1:8000{link}"' in notification.body_html
    return link


def test_crew_assignment_email_links_crew_members_to_their_own_pages(pothole, crew):
    """The admin answers a crew member "doesn't exist": their pages are under /crew/."""
    casey = crew.members.get()
    request = ServiceRequestFactory(category=pothole, department=pothole.department)
    request.assign(crew=crew)  # no work order yet: their list of work
    (email,) = emails(request, kind="crew")
    link = _crew_link(email)
    assert link == reverse("crew:my_work")
    client = Client()
    client.force_login(casey)
    assert client.get(link).status_code == 200

    later = ServiceRequestFactory(category=pothole, department=pothole.department)
    order = WorkOrder.create_for([later], crew=crew)  # assigns the crew through the order
    (email,) = emails(later, kind="crew")
    link = _crew_link(email)
    assert link == reverse("crew:work_order", args=[order.pk])
    assert client.get(link).status_code == 200


def test_crew_assignment_email_keeps_the_admin_link_for_dispatch_and_department_staff(
    pothole, crew, dispatcher
):
    department_member = staff_user("dana", StaffRole.DEPARTMENT_STAFF, pothole.department)
    crew.members.add(dispatcher, department_member)
    request = ServiceRequestFactory(category=pothole, department=pothole.department)
    order = WorkOrder.create_for([request], crew=crew)
    links = {n.recipient: _crew_link(n) for n in emails(request, kind="crew")}
    admin_page = reverse("admin:requests_app_servicerequest_change", args=[request.pk])
    assert links == {
        "casey@city.example": reverse("crew:work_order", args=[order.pk]),
        "dispatcher@city.example": admin_page,
        "dana@city.example": admin_page,
    }
    for user in (dispatcher, department_member):
        client = Client()
        client.force_login(user)
        assert client.get(admin_page).status_code == 200


def test_department_digest_is_sent_once_per_day(pothole):
    department = pothole.department
    new = ServiceRequestFactory(category=pothole, department=department)
    late = ServiceRequestFactory(
        category=pothole,
        department=department,
        created_at=timezone.now() - timedelta(days=5),
        due_at=timezone.now() - timedelta(days=1),
    )
    assert department_digest_send(department) is not None
    assert department_digest_send(department) is None  # a second beat, the same day
    assert DigestRun.objects.count() == 1
    (digest,) = Notification.objects.filter(kind="digest")
    assert digest.recipient == department.email
    assert new.tracking_number in digest.body_text and late.tracking_number in digest.body_text
    assert "1 new, 1 overdue" in digest.subject
    assert "Maria" not in digest.body_text  # staff digests carry no resident details


# --- Service notices --------------------------------------------------------------------


def test_notices_for_a_point_respect_area_category_and_time(pothole):
    lat, lng = CITY_CENTER
    square = {
        "type": "Polygon",
        "coordinates": [
            [
                [lng - 0.01, lat - 0.01],
                [lng + 0.01, lat - 0.01],
                [lng + 0.01, lat + 0.01],
                [lng - 0.01, lat + 0.01],
                [lng - 0.01, lat - 0.01],
            ]
        ],
    }
    area = ServiceNotice.objects.create(title="Paving on Main St", message="…", area=square)
    area.categories.add(pothole)
    circle = ServiceNotice.objects.create(
        title="Water main work", message="…", center_lat=lat, center_lng=lng, radius_m=300
    )
    ServiceNotice.objects.create(
        title="Over",
        message="…",
        area=square,
        starts_at=timezone.now() - timedelta(days=3),
        ends_at=timezone.now() - timedelta(days=1),
    )
    assert set(notices_for(lat, lng)) == {area, circle}
    assert set(notices_for(lat, lng, category=pothole)) == {area, circle}
    from .factories import CategoryFactory

    assert notices_for(lat, lng, category=CategoryFactory()) == [circle]
    assert notices_for(lat + 0.005, lng) == [area]  # ~550 m north: outside the circle
    assert notices_for(lat + 0.5, lng) == []
    assert notices_for(None, None) == []


# --- What residents see ------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_resident_emails_render_and_carry_nothing_private(
    pothole, crew, chromium, live_server, settings
):
    """Screenshots of every resident email, to tests/artifacts/email_*.png."""
    from surveys.services import survey_send

    from .conftest import ARTIFACTS

    settings.SITE_URL = live_server.url  # so the after photo actually loads
    request = ServiceRequestFactory(category=pothole, reporter_name="Maria Lopez")
    other = ServiceRequestFactory(
        category=pothole, reporter_name="Someone Else", reporter_email="else@example.org"
    )
    Follower.objects.create(
        request=request, email="jo@example.org", language="es", source=Follower.Source.FOLLOW
    )
    from notifications.services import notify_request_received

    notify_request_received(request)
    request.add_comment(INTERNAL_NOTE, public=False)
    order = WorkOrder.create_for([request], crew=crew, scheduled_for=timezone.localdate())
    request.add_comment("We will be there on Tuesday morning.", public=True)
    order.start()
    work_order_add_photo(
        order, process_photo(upload(size=(1200, 800), color=(90, 90, 95))), kind="after"
    )
    order.complete("Cut out the broken asphalt and filled it with hot mix.")
    closed = ServiceRequestFactory(category=pothole)
    closed.change_status(Status.CLOSED, close_reason=CloseReason.NOT_CITY, note="State road")
    survey_send(request.pk)

    page = chromium.new_page(viewport={"width": 640, "height": 900})
    shots = []
    for n in Notification.objects.exclude(template="").order_by("pk"):
        body = n.body_text + n.body_html + n.subject
        assert INTERNAL_NOTE not in body
        assert "Someone Else" not in body and "else@example.org" not in body
        assert other.tracking_number not in body and "617-555" not in body
        if n.recipient != "maria@example.org":
            assert "Maria" not in body and "maria@" not in body
        name = f"email_{n.template}_{n.language}_{n.recipient.split('@')[0]}.png"
        if name in shots:
            continue
        page.set_content(n.body_html, wait_until="networkidle")
        page.screenshot(path=str(ARTIFACTS / name), full_page=True)
        shots.append(name)
    page.close()
    expected = {
        "request_received",
        "status_assigned",
        "status_in_progress",
        "status_completed",
        "status_closed",
        "public_comment",
        "survey",
        "crew_assigned",  # to the crew, when the work order assigns it: no resident data
    }
    assert {s.split("_en_")[0].split("_es_")[0].removeprefix("email_") for s in shots} == expected
