"""Residents sign in with an emailed one-time link to see "My requests"."""

import re
from datetime import timedelta

import pytest
from django.core import mail
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from playwright.sync_api import expect

from notifications import views
from notifications.models import Notification, ResidentSignInLink, SuppressedAddress
from notifications.resident import resident_requests
from notifications.services import SendOutcome, notification_send, signin_link_send
from requests_app.models import Follower, IntakeThrottle, Status

from .conftest import ARTIFACTS
from .factories import ServiceRequestFactory

MY_REQUESTS = "/my/"
SIGN_IN_LINK = re.compile(r"http://127\.0\.0\.1:8000(/my/sign-in/[A-Za-z0-9_-]+/)")
NEUTRAL = "If we have requests for {}, we've emailed you a sign-in link."


@pytest.fixture
def requests_of_maria(pothole):
    """Maria reported one request and follows another; other people's stay theirs."""
    own = ServiceRequestFactory(category=pothole, reporter_email="Maria@Example.org")
    followed = ServiceRequestFactory(
        category=pothole, reporter_name="Jo Park", reporter_email="jo@example.org"
    )
    Follower.objects.create(
        request=followed, email="maria@example.org", source=Follower.Source.FOLLOW
    )
    unfollowed = ServiceRequestFactory(category=pothole, reporter_email="lee@example.org")
    Follower.objects.create(
        request=unfollowed,
        email="maria@example.org",
        source=Follower.Source.FOLLOW,
        unsubscribed_at=timezone.now(),
    )
    hidden_followed = ServiceRequestFactory(
        category=pothole, reporter_email="lee@example.org", is_public=False
    )
    Follower.objects.create(
        request=hidden_followed, email="maria@example.org", source=Follower.Source.FOLLOW
    )
    others = ServiceRequestFactory(category=pothole, reporter_email="someone@example.org")
    return {
        "own": own,
        "followed": followed,
        "unfollowed": unfollowed,
        "hidden_followed": hidden_followed,
        "others": others,
    }


def ask(client, email, ip="198.51.100.7", **extra):
    return client.post(MY_REQUESTS, {"email": email}, REMOTE_ADDR=ip, **extra)


def link_path(email) -> str:
    notification = Notification.objects.filter(
        kind=Notification.Kind.SIGN_IN, recipient=email
    ).latest("pk")
    return SIGN_IN_LINK.search(notification.body_text).group(1)


def signed_in_client(email="maria@example.org") -> Client:
    client = Client()
    ask(client, email)
    assert client.post(link_path(email)).status_code == 302
    return client


def test_link_flow_signs_in_and_shows_own_and_followed_requests_only(
    requests_of_maria, client, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        response = ask(client, "maria@example.org")
    assert response.status_code == 200
    assert NEUTRAL.format("maria@example.org") in response.content.decode()

    # A stored row first, handed to the worker after commit; absolute links in both parts.
    notification = Notification.objects.get(kind=Notification.Kind.SIGN_IN)
    assert len(callbacks) == 1
    assert notification.status == Notification.Status.PENDING
    assert notification.recipient == "maria@example.org" and notification.request is None
    path = SIGN_IN_LINK.search(notification.body_text).group(1)
    assert f'href="http://127.0.0.1:8000{path}"' in notification.body_html
    for href in re.findall(r'href="([^"]+)"', notification.body_html):
        assert href.startswith("http://127.0.0.1:8000/"), href
    # A transactional email the resident asked for: no unsubscribe machinery.
    assert "List-Unsubscribe" not in notification.headers
    assert "unsubscribe" not in notification.body_text.lower()

    # Opening the link (or a mail scanner prefetching it) only shows a button.
    for _scan in range(2):
        page = client.get(path)
        assert page.status_code == 200
        assert '<form method="post">' in page.content.decode()
        assert "Sign in" in page.content.decode()
    assert ResidentSignInLink.objects.get().used_at is None
    assert client.get(MY_REQUESTS).context["form"] is not None  # still signed out

    signed_in = client.post(path)
    assert signed_in.status_code == 302 and signed_in.url == MY_REQUESTS
    assert ResidentSignInLink.objects.get().used_at is not None

    page = client.get(MY_REQUESTS)
    html = page.content.decode()
    assert page.status_code == 200
    assert "Signed in as maria@example.org" in html and "Sign out" in html
    for listed in ("own", "followed"):
        number = requests_of_maria[listed].tracking_number
        assert number in html
        assert f'href="/requests/{number}/"' in html
    for hidden in ("unfollowed", "hidden_followed", "others"):
        assert requests_of_maria[hidden].tracking_number not in html
    # Newest first, and nothing of the other reporter's personal data.
    numbers = [row.request.tracking_number for row in page.context["rows"]]
    assert numbers == [requests_of_maria["followed"].tracking_number] + [
        requests_of_maria["own"].tracking_number
    ]
    assert "Jo Park" not in html and "jo@example.org" not in html


def test_signing_in_gives_the_session_a_new_key(requests_of_maria, client):
    ask(client, "maria@example.org")
    planted = client.session  # as if someone had set the browser's session cookie
    planted["planted"] = "yes"
    planted.save()
    before = planted.session_key
    client.post(link_path("maria@example.org"))
    assert client.session.session_key != before
    assert client.session["resident_email"] == "maria@example.org"


def test_a_used_link_is_refused_with_a_way_to_ask_again(requests_of_maria, client):
    ask(client, "maria@example.org")
    path = link_path("maria@example.org")
    assert client.post(path).status_code == 302

    stranger = Client()
    for response in (stranger.get(path), stranger.post(path)):
        assert response.status_code == 410
        html = response.content.decode()
        assert "This sign-in link was already used" in html
        assert f'href="{MY_REQUESTS}"' in html and "Email me a new link" in html
    assert "resident_email" not in stranger.session
    assert "Signed in as" not in stranger.get(MY_REQUESTS).content.decode()


def test_an_expired_link_is_refused(requests_of_maria, client):
    signin_link_send("maria@example.org", "en", now=timezone.now() - timedelta(minutes=31))
    path = link_path("maria@example.org")
    for response in (client.get(path), client.post(path)):
        assert response.status_code == 410
        assert "This sign-in link has expired" in response.content.decode()
    assert "resident_email" not in client.session
    assert ResidentSignInLink.objects.get().used_at is None


def test_a_link_still_works_just_before_it_expires(requests_of_maria, client):
    signin_link_send("maria@example.org", "en", now=timezone.now() - timedelta(minutes=29))
    assert client.post(link_path("maria@example.org")).status_code == 302


def test_a_tampered_link_is_refused(requests_of_maria, client):
    ask(client, "maria@example.org")
    path = link_path("maria@example.org")
    token = path.rstrip("/").rsplit("/", 1)[1]
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    for bad in (f"/my/sign-in/{tampered}/", f"/my/sign-in/{token[:-4]}/", "/my/sign-in/x/"):
        for response in (client.get(bad), client.post(bad)):
            assert response.status_code == 400
            html = response.content.decode()
            assert "This sign-in link is not valid" in html and "Email me a new link" in html
    assert "resident_email" not in client.session
    assert ResidentSignInLink.objects.get().used_at is None


def _neutral(response, email):
    html = response.content.decode().replace(email, "EMAIL")
    return re.sub(r'name="csrfmiddlewaretoken" value="[^"]+"', "", html)


def test_an_unknown_address_gets_the_same_answer_and_no_email(requests_of_maria):
    known = ask(Client(), "maria@example.org")
    unknown = ask(Client(), "nobody@example.org")
    assert known.status_code == unknown.status_code == 200
    assert _neutral(known, "maria@example.org") == _neutral(unknown, "nobody@example.org")
    assert NEUTRAL.format("nobody@example.org") in unknown.content.decode()
    assert not Notification.objects.filter(recipient="nobody@example.org").exists()
    assert ResidentSignInLink.objects.filter(email="nobody@example.org").count() == 0


def test_an_undeliverable_address_gets_the_same_answer_and_no_email(requests_of_maria, client):
    SuppressedAddress.suppress("maria@example.org", SuppressedAddress.Reason.BOUNCED)
    response = ask(client, "maria@example.org")
    assert response.status_code == 200
    assert NEUTRAL.format("maria@example.org") in response.content.decode()
    assert not Notification.objects.filter(kind=Notification.Kind.SIGN_IN).exists()


def test_a_follower_only_can_sign_in_too(requests_of_maria):
    Follower.objects.create(
        request=requests_of_maria["others"], email="fan@example.org", source="follow"
    )
    page = signed_in_client("fan@example.org").get(MY_REQUESTS).content.decode()
    assert requests_of_maria["others"].tracking_number in page
    assert "You follow it" in page


def test_an_invalid_address_is_an_error_not_an_email(requests_of_maria, client):
    response = ask(client, "not an email")
    assert response.status_code == 400
    assert response.context["form"].errors["email"]
    assert not Notification.objects.exists()


def test_links_per_address_are_limited_known_or_not(requests_of_maria, monkeypatch):
    monkeypatch.setattr(views, "SIGN_IN_LINKS_PER_EMAIL_PER_HOUR", 2)
    for email in ("maria@example.org", "nobody@example.org"):
        # From different connections: the limit is the address's.
        answers = [ask(Client(), email, ip=f"198.51.100.{n}").status_code for n in range(3)]
        assert answers == [200, 200, 429]
    throttled = ask(Client(), "MARIA@example.org", ip="198.51.100.99")
    assert throttled.status_code == 429
    assert "Too many sign-in links" in throttled.content.decode()
    assert Notification.objects.filter(kind=Notification.Kind.SIGN_IN).count() == 2


def test_asks_per_connection_are_limited(requests_of_maria, monkeypatch):
    monkeypatch.setattr(views, "SIGN_IN_ASKS_PER_IP_PER_HOUR", 2)
    emails = ["a@example.org", "b@example.org", "maria@example.org"]
    answers = [ask(Client(), email, ip="203.0.113.5").status_code for email in emails]
    assert answers == [200, 200, 429]
    assert not Notification.objects.filter(kind=Notification.Kind.SIGN_IN).exists()
    assert IntakeThrottle.objects.filter(key="signin-ip:203.0.113.5").exists()
    # ...and the limit does not follow the resident to another connection.
    assert ask(Client(), "maria@example.org", ip="203.0.113.6").status_code == 200


def test_pages_with_personal_data_are_never_cached(requests_of_maria):
    client = Client()
    asked = ask(client, "maria@example.org")
    path = link_path("maria@example.org")
    responses = [client.get(MY_REQUESTS), asked, client.get(path), client.post(path)]
    responses += [client.get(MY_REQUESTS), client.post(reverse("resident:sign_out"))]
    responses += [client.get(path), client.get("/my/sign-in/nonsense/")]
    for response in responses:
        assert "no-store" in response["Cache-Control"], response


def test_signing_out_forgets_the_resident(requests_of_maria):
    client = signed_in_client()
    assert client.get(reverse("resident:sign_out")).status_code == 405
    response = client.post(reverse("resident:sign_out"), follow=True)
    html = response.content.decode()
    assert "You are signed out." in html
    assert "Email me a sign-in link" in html
    assert requests_of_maria["own"].tracking_number not in html


def test_own_request_hidden_by_staff_is_listed_without_a_link(pothole):
    hidden = ServiceRequestFactory(
        category=pothole, reporter_email="maria@example.org", is_public=False
    )
    html = signed_in_client().get(MY_REQUESTS).content.decode()
    assert hidden.tracking_number in html
    assert f"/requests/{hidden.tracking_number}/" not in html
    assert "Not shown publicly" in html


def test_resident_requests_matches_addresses_case_insensitively(requests_of_maria):
    expected = {requests_of_maria["own"].pk, requests_of_maria["followed"].pk}
    for email in ("maria@example.org", "MARIA@EXAMPLE.ORG", " Maria@example.org "):
        assert set(resident_requests(email).values_list("pk", flat=True)) == expected
    assert not resident_requests("").exists()


def test_list_shows_status_and_dates(requests_of_maria):
    own = requests_of_maria["own"]
    own.change_status(Status.COMPLETED)
    html = signed_in_client().get(MY_REQUESTS).content.decode()
    assert "Completed" in html and "resolved" in html and "Pothole" in html


def test_link_is_emailed_in_the_residents_language(requests_of_maria, client):
    ask(client, "maria@example.org", HTTP_ACCEPT_LANGUAGE="es")
    notification = Notification.objects.get(kind=Notification.Kind.SIGN_IN)
    assert notification.language == "es"
    assert 'lang="es"' in notification.body_html
    assert "Inicia sesión" in notification.body_html


def test_the_sent_email_carries_the_link_and_the_outbox_forgets_it(requests_of_maria, client):
    ask(client, "maria@example.org")
    notification = Notification.objects.get(kind=Notification.Kind.SIGN_IN)
    path = link_path("maria@example.org")
    assert notification_send(notification.pk) == SendOutcome.SENT
    (message,) = mail.outbox
    assert message.to == ["maria@example.org"]
    assert path in message.body and path in message.alternatives[0][0]
    notification.refresh_from_db()
    assert path not in notification.body_text and path not in notification.body_html
    # The link itself still works: the outbox only held a copy.
    assert client.post(path).status_code == 302


def test_portal_navigation_links_to_my_requests(db, client):
    html = client.get("/").content.decode()
    assert f'href="{MY_REQUESTS}"' in html and "My requests" in html


# --- In a browser ---------------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_resident_signs_in_from_the_emailed_link_in_a_browser(
    pothole, chromium, live_server, settings, own_broker
):
    settings.SITE_URL = live_server.url
    own = ServiceRequestFactory(category=pothole, reporter_email="maria@example.org")
    others = ServiceRequestFactory(category=pothole, reporter_email="someone@example.org")
    page = chromium.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
    page.goto(live_server.url + "/")
    page.get_by_role("link", name="My requests").click()
    page.get_by_label("Your email").fill("maria@example.org")
    page.get_by_role("button", name="Email me a sign-in link").click()
    expect(page.get_by_test_id("link-sent")).to_contain_text("maria@example.org")

    notification = Notification.objects.get(kind=Notification.Kind.SIGN_IN)
    url = re.search(r"(http://\S+/my/sign-in/\S+/)", notification.body_text).group(1)
    assert url.startswith(live_server.url)
    email = chromium.new_page(viewport={"width": 640, "height": 700})
    email.set_content(notification.body_html)
    email.screenshot(path=ARTIFACTS / "email_signin_link_en_maria.png", full_page=True)
    email.close()
    page.goto(url)
    page.screenshot(path=ARTIFACTS / "resident-sign-in.png", full_page=True)
    page.get_by_role("button", name="Sign in").click()

    expect(page.get_by_role("heading", name="My requests")).to_be_visible()
    listed = page.get_by_test_id("my-requests")
    expect(listed).to_contain_text(own.tracking_number)
    expect(listed).not_to_contain_text(others.tracking_number)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"My requests scrolls sideways ({width}px)"
    page.screenshot(path=ARTIFACTS / "resident-my-requests.png", full_page=True)

    page.get_by_role("link", name=f"See {own.tracking_number}").click()
    expect(page.get_by_test_id("status")).to_be_visible()
    page.go_back()
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_text("You are signed out.")).to_be_visible()
    page.close()


@pytest.mark.parametrize(
    "email", ["not-an-email", "\x00" * 3, "a@" + "b" * 300 + ".org", "<script>@x.org", ""]
)
def test_garbage_addresses_get_a_clear_error(db, client, email):
    response = ask(client, email)
    assert response.status_code == 400
    assert "<script>@x.org" not in response.content.decode()


@pytest.mark.parametrize("token", ["%00", "..", "a" * 5000, "%ED%A0%80", "'; DROP TABLE"])
def test_garbage_tokens_are_refused_without_a_server_error(db, client, token):
    for response in (client.get(f"/my/sign-in/{token}/"), client.post(f"/my/sign-in/{token}/")):
        assert response.status_code in (400, 404)
