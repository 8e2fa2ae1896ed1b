"""Service notices emailed, on request, to residents with open requests in their area."""

import re
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone

from notifications import services
from notifications.models import NoticeEmail, Notification, ServiceNotice, SuppressedAddress
from notifications.services import notice_email_send
from requests_app.models import Follower, Status

from .factories import CITY_CENTER, CategoryFactory, ServiceRequestFactory

pytestmark = pytest.mark.django_db

LAT, LNG = CITY_CENTER
NEARBY = (LAT + 0.001, LNG)  # about 110 m north
FAR = (LAT + 0.02, LNG)  # about 2 km north


@pytest.fixture
def notice(pothole):
    return ServiceNotice.objects.create(
        title="Water main work on Main St",
        message="Crews on site until Friday; no need to report low pressure.",
        center_lat=LAT,
        center_lng=LNG,
        radius_m=300,
        starts_at=timezone.now() - timedelta(hours=1),
        ends_at=timezone.now() + timedelta(days=3),
        email_residents=True,
    )


def follow(request, email, language="en", **fields):
    return Follower.objects.create(
        request=request, email=email, language=language, source=Follower.Source.FOLLOW, **fields
    )


@pytest.fixture
def neighbourhood(pothole):
    """Open requests inside the notice's circle and some that must not be emailed."""
    inside = ServiceRequestFactory(category=pothole, reporter_email="maria@example.org")
    follow(inside, "jo@example.org", language="es")
    follow(inside, "gone@example.org", unsubscribed_at=timezone.now())
    follow(inside, "bounced@example.org")
    SuppressedAddress.suppress("bounced@example.org", SuppressedAddress.Reason.BOUNCED)
    # Maria's second request nearby, which Jo follows too: still one email each.
    second = ServiceRequestFactory(
        category=pothole, reporter_email="MARIA@example.org", lat=NEARBY[0], lng=NEARBY[1]
    )
    follow(second, "JO@example.org")
    completed = ServiceRequestFactory(category=pothole, reporter_email="done@example.org")
    completed.change_status(Status.COMPLETED)
    far = ServiceRequestFactory(
        category=pothole, reporter_email="far@example.org", lat=FAR[0], lng=FAR[1]
    )
    nowhere = ServiceRequestFactory(
        category=pothole, reporter_email="nowhere@example.org", lat=None, lng=None
    )
    return {"inside": inside, "second": second, "far": far, "nowhere": nowhere}


def notice_emails():
    return Notification.objects.filter(kind=Notification.Kind.NOTICE).order_by("pk")


def test_each_resident_in_the_area_is_emailed_once(notice, neighbourhood):
    assert notice_email_send(notice) == 2
    assert [n.recipient for n in notice_emails()] == ["maria@example.org", "jo@example.org"]
    assert set(NoticeEmail.objects.values_list("email", flat=True)) == {
        "maria@example.org",
        "jo@example.org",
    }
    assert {n.request for n in notice_emails()} == {neighbourhood["inside"]}


def test_running_it_again_emails_nobody_twice(notice, neighbourhood):
    assert notice_email_send(notice) == 2
    assert notice_email_send(notice) == 0
    assert notice_emails().count() == 2
    # A new request inside the area later: only its new resident is emailed.
    newcomer = ServiceRequestFactory(
        category=neighbourhood["inside"].category, reporter_email="new@example.org"
    )
    follow(newcomer, "maria@example.org")
    assert notice_email_send(notice) == 1
    assert notice_emails().last().recipient == "new@example.org"


def test_an_address_taken_by_a_run_at_the_same_moment_is_not_emailed_again(
    notice, neighbourhood, monkeypatch
):
    """Two staff members pressing at once: the other run claimed Maria after ours read the
    claims. The unique row makes ours give her up, and her email is not written twice."""
    NoticeEmail.objects.create(notice=notice, email="maria@example.org")
    stale_claims = SimpleNamespace(
        objects=SimpleNamespace(
            filter=lambda **kwargs: NoticeEmail.objects.none(),
            create=NoticeEmail.objects.create,
        )
    )
    monkeypatch.setattr(services, "NoticeEmail", stale_claims)
    assert notice_email_send(notice) == 1
    assert [n.recipient for n in notice_emails()] == ["jo@example.org"]
    assert NoticeEmail.objects.count() == 2


def test_unsubscribed_and_undeliverable_addresses_are_skipped(notice, neighbourhood):
    notice_email_send(notice)
    recipients = set(notice_emails().values_list("recipient", flat=True))
    assert "gone@example.org" not in recipients
    assert "bounced@example.org" not in recipients
    assert not NoticeEmail.objects.filter(email__in=["gone@example.org", "bounced@example.org"])


def test_closed_far_and_unplaced_requests_are_not_emailed(notice, neighbourhood):
    notice_email_send(notice)
    recipients = set(notice_emails().values_list("recipient", flat=True))
    assert recipients.isdisjoint({"done@example.org", "far@example.org", "nowhere@example.org"})


def test_a_notice_for_some_categories_only_emails_those(notice, neighbourhood):
    notice.categories.add(CategoryFactory(code="water-pressure", name="Low water pressure"))
    assert notice_email_send(notice) == 0
    ServiceRequestFactory(category=notice.categories.get(), reporter_email="pressure@example.org")
    assert notice_email_send(notice) == 1
    assert notice_emails().get().recipient == "pressure@example.org"


def test_a_polygon_area_is_used(pothole, notice, neighbourhood):
    d = 0.0005  # a small square around the centre only, not the second request's spot
    notice.center_lat = notice.center_lng = notice.radius_m = None
    notice.area = {
        "type": "Polygon",
        "coordinates": [
            [[LNG - d, LAT - d], [LNG + d, LAT - d], [LNG + d, LAT + d], [LNG - d, LAT + d]]
        ],
    }
    notice.save()
    notice_email_send(notice)
    assert {n.request for n in notice_emails()} == {neighbourhood["inside"]}


def test_without_the_opt_in_nobody_is_emailed(notice, neighbourhood):
    notice.email_residents = False
    notice.save()
    with pytest.raises(ValidationError, match="may not be emailed"):
        notice_email_send(notice)
    assert not notice_emails().exists()


def test_an_ended_notice_is_not_emailed(notice, neighbourhood):
    notice.ends_at = timezone.now() - timedelta(minutes=1)
    notice.save()
    with pytest.raises(ValidationError, match="has ended"):
        notice_email_send(notice)
    assert not notice_emails().exists()


def test_emails_are_queued_after_commit(notice, neighbourhood, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        notice_email_send(notice)
    assert len(callbacks) == notice_emails().count() == 2
    assert set(notice_emails().values_list("status", flat=True)) == {"pending"}


def test_the_email_tells_the_notice_in_the_residents_language_with_an_unsubscribe(
    notice, neighbourhood
):
    notice_email_send(notice)
    reporter, follower = notice_emails()
    for n in (reporter, follower):
        body = n.body_text + n.body_html
        assert "Water main work on Main St" in n.subject
        assert "no need to report low pressure" in n.body_text
        assert neighbourhood["inside"].tracking_number in body
        assert n.headers["List-Unsubscribe"].startswith("<http://127.0.0.1:8000/notifications/")
        assert n.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        for href in re.findall(r'href="([^"]+)"', n.body_html):
            assert href.startswith("http://127.0.0.1:8000/"), href
    assert "Maria Lopez" in reporter.body_text
    assert follower.language == "es" and 'lang="es"' in follower.body_html
    for text in (follower.subject, follower.body_text, follower.body_html):
        assert "Maria" not in text and "maria@" not in text and "617-555" not in text


def test_admin_action_emails_the_notice_once(notice, neighbourhood, admin_client):
    url = reverse("admin:notifications_servicenotice_changelist")
    data = {"action": "email_residents_action", "_selected_action": [notice.pk]}
    first = admin_client.post(url, data, follow=True)
    assert "2 emails queued" in first.content.decode()
    second = admin_client.post(url, data, follow=True)
    assert "0 emails queued" in second.content.decode()
    assert notice_emails().count() == 2
    listing = admin_client.get(url).content.decode()
    assert 'class="field-emailed_to">2<' in listing


def test_admin_action_refuses_a_notice_without_the_opt_in(notice, neighbourhood, admin_client):
    notice.email_residents = False
    notice.save()
    response = admin_client.post(
        reverse("admin:notifications_servicenotice_changelist"),
        {"action": "email_residents_action", "_selected_action": [notice.pk]},
        follow=True,
    )
    assert "may not be emailed" in response.content.decode()
    assert not notice_emails().exists()
