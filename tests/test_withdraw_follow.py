"""After withdrawing a report from public view, its reporter can still follow it.

The public status page answers 404 from then on; the reporter's emails link to "My
requests" (a sign-in away), which shows the report, says who took it off the public pages
and shows its timeline. A follower who is not the reporter gets no way in.
"""

import re
import time

import pytest
from django.core import signing
from django.test import Client
from django.urls import reverse

from notifications.models import Notification
from requests_app.links import withdraw_token
from requests_app.models import Follower, Photo, Status, WorkOrder
from requests_app.photos import process_photo
from requests_app.services import work_order_add_photo

from .conftest import upload
from .factories import ServiceRequestFactory

SITE = "http://127.0.0.1:8000"
SIGN_IN_LINK = re.compile(r"http://127\.0\.0\.1:8000(/my/sign-in/[A-Za-z0-9_-]+/)")
FOLLOWER = "neighbour@example.org"


@pytest.fixture
def report(pothole):
    """Maria's report, followed by a neighbour, which Maria then withdraws."""
    report = ServiceRequestFactory(category=pothole, department=pothole.department)
    Follower.objects.create(request=report, email=FOLLOWER, source=Follower.Source.FOLLOW)
    return report


def withdraw(report):
    response = Client().post(reverse("requests_app:withdraw", args=[withdraw_token(report.pk)]))
    assert response.status_code == 200
    report.refresh_from_db()
    assert not report.is_public
    return response


def signed_in(email) -> Client:
    client = Client()
    client.post("/my/", {"email": email})
    notification = Notification.objects.filter(
        kind=Notification.Kind.SIGN_IN, recipient=email
    ).latest("pk")
    assert client.post(SIGN_IN_LINK.search(notification.body_text).group(1)).status_code == 302
    return client


def status_emails(report, recipient):
    return list(
        report.notifications.filter(kind=Notification.Kind.STATUS, recipient=recipient).order_by(
            "pk"
        )
    )


def test_status_emails_after_withdrawal_link_the_reporter_to_my_requests(report):
    withdraw(report)
    report.change_status(Status.IN_PROGRESS, note="Crew on site")
    (email,) = status_emails(report, "maria@example.org")
    mine = f"{SITE}/my/#{report.tracking_number}"
    assert mine in email.body_text
    assert f'href="{mine}"' in email.body_html
    public_page = f"/requests/{report.tracking_number}/"
    assert public_page not in email.body_text + email.body_html
    assert "My requests" in email.body_text and "My requests" in email.body_html

    # The link leads somewhere: once signed in, the report is on the page it names.
    client = signed_in("maria@example.org")
    assert Client().get(public_page).status_code == 404
    page = client.get("/my/").content.decode()
    assert f'id="{report.tracking_number}"' in page


def test_a_follower_gets_no_link_to_a_withdrawn_report(report):
    withdraw(report)
    report.change_status(Status.IN_PROGRESS)
    (email,) = status_emails(report, FOLLOWER)
    body = email.body_text + email.body_html
    assert f"/requests/{report.tracking_number}/" not in body
    assert "/my/" not in body
    assert "no longer shown on the city's public pages" in email.body_text
    assert "Maria" not in body


def test_a_follower_who_reported_another_request_still_cannot_see_the_withdrawn_one(
    report, pothole
):
    ServiceRequestFactory(category=pothole, reporter_email=FOLLOWER)
    withdraw(report)
    html = signed_in(FOLLOWER).get("/my/").content.decode()
    assert report.tracking_number not in html


def test_my_requests_says_the_reporter_withdrew_it_and_shows_its_timeline(report, dispatcher):
    withdraw(report)
    report.change_status(Status.IN_PROGRESS, by=dispatcher, note="Crew on site this week")
    report.add_comment("Cones placed around the hole.", by=dispatcher, public=True)
    report.add_comment("Internal: call the landlord", by=dispatcher, public=False)

    html = signed_in("maria@example.org").get("/my/").content.decode()
    assert "you withdrew it from the public pages" in html
    assert "staff hid" not in html
    assert "Crew on site this week" in html
    assert "Cones placed around the hole." in html
    assert "In progress" in html
    assert "Internal: call the landlord" not in html


def test_my_requests_says_staff_hid_it_when_staff_did(report, dispatcher):
    report.set_public(False, by=dispatcher, reason="On private land")
    html = signed_in("maria@example.org").get("/my/").content.decode()
    assert "staff hid this request from the public pages" in html
    assert "you withdrew it" not in html
    assert "On private land" not in html  # the moderation reason is for staff


def test_the_latest_change_of_visibility_decides_who_hid_it(report, dispatcher):
    withdraw(report)
    report.set_public(True, by=dispatcher, reason="Reporter asked to show it again")
    report.set_public(False, by=dispatcher, reason="Abusive follow-up comments")
    html = signed_in("maria@example.org").get("/my/").content.decode()
    assert "staff hid this request" in html and "you withdrew it" not in html


def test_the_withdraw_pages_point_to_my_requests(report):
    done = withdraw(report).content.decode()
    assert f'href="/my/#{report.tracking_number}"' in done
    again = Client().get(reverse("requests_app:withdraw", args=[withdraw_token(report.pk)]))
    assert f'href="/my/#{report.tracking_number}"' in again.content.decode()


def test_the_completion_email_of_a_withdrawn_report_carries_no_broken_photo(report, crew):
    order = WorkOrder.create_for([report], crew=crew)
    withdraw(report)
    order.start()
    work_order_add_photo(order, process_photo(upload()), kind=Photo.Kind.AFTER)
    order.complete("Filled the hole")
    (email,) = [
        n for n in status_emails(report, "maria@example.org") if n.template == "status_completed"
    ]
    assert "/photos/" not in email.body_html + email.body_text
    assert "Filled the hole" in email.body_text
    # The public's photo view refuses it: an <img> of it would be broken.
    photo = report.public_photos().get(kind="after")
    assert Client().get(photo.get_absolute_url()).status_code == 404


@pytest.fixture
def crew(pothole):
    from requests_app.models import Crew, StaffRole

    from .factories import staff_user

    crew = Crew.objects.create(name="Crew 1", department=pothole.department)
    crew.members.add(staff_user("casey", StaffRole.CREW, pothole.department))
    return crew


@pytest.mark.parametrize(
    ("inbound", "says"),
    [
        ("", "contact Demo City 311 and give its tracking number"),
        ("311@city.example", "reply to any email about it and ask us"),
    ],
)
def test_an_expired_withdraw_link_offers_a_reply_only_when_replies_reach_us(
    report, settings, monkeypatch, inbound, says
):
    settings.INBOUND_EMAIL_ADDRESS = inbound
    long_ago = time.time() - (settings.WITHDRAW_LINK_MAX_AGE_DAYS + 1) * 24 * 3600
    with monkeypatch.context() as patch:
        patch.setattr(signing.time, "time", lambda: long_ago)
        token = withdraw_token(report.pk)
    response = Client().get(reverse("requests_app:withdraw", args=[token]))
    assert response.status_code == 400
    html = response.content.decode()
    assert "This link has expired" in html and says in html
    if not inbound:
        assert "reply" not in html.lower()
