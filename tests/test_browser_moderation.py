"""What the public sees, in headless Chromium: contact details masked, markup shown as text,
and a reporter withdrawing a report from public view with the link from their email."""

import re

import pytest
from django.conf import settings
from django.test import Client

from requests_app.links import withdraw_token
from requests_app.models import HistoryEntry, Photo, ServiceRequest, StaffRole

from .conftest import ARTIFACTS
from .factories import ServiceRequestFactory, staff_user
from .test_moderation import urlpatterns  # noqa: F401  (the portal with the withdraw view)

pytestmark = [
    pytest.mark.usefixtures("own_broker"),
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.urls(__name__),
]

PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
DESCRIPTION = (
    "Streetlight out since Monday. Call me on (555) 123-4567 or 555.123.4567, "
    "or mail jo.resident@example.org"
)
MASKED = (
    "Streetlight out since Monday. Call me on [phone number hidden] or [phone number hidden], "
    "or mail [email address hidden]"
)
XSS = "<img src=x onerror=window.__xss=1>"


def _sign_in(context, live_server, user):
    """A staff session for the browser, without the login form (whose brute-force guard is
    not what this test is about)."""
    client = Client()
    client.force_login(user)
    cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
    context.add_cookies(
        [{"name": settings.SESSION_COOKIE_NAME, "value": cookie, "url": live_server.url}]
    )


def _offline(page):
    # No network here: map tiles fail at once instead of waiting on DNS.
    page.route(re.compile(r"^https?://([a-z]\.)?tile\.openstreetmap\.org/"), lambda r: r.abort())


def test_contact_details_typed_into_a_report_are_masked_on_its_status_page(
    live_server, chromium, pothole
):
    context = chromium.new_context(**PHONE)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    _offline(page)

    page.goto(f"{live_server.url}/report/")
    page.get_by_label("What is the problem?").select_option(label="Pothole")
    page.get_by_label("Describe it").fill(DESCRIPTION)
    page.get_by_label("Address or place").fill("1 City Hall Square")
    page.get_by_role("button", name="Send report").click()
    page.wait_for_url(re.compile(r"/report/done/CD-"))
    number = page.get_by_test_id("tracking-number").inner_text().strip()

    page.get_by_role("link", name="Follow your report").click()
    page.wait_for_url(f"{live_server.url}/requests/{number}/")
    page.screenshot(path=ARTIFACTS / "moderation-1-status-masked.png", full_page=True)
    assert page.get_by_test_id("description").inner_text() == MASKED
    html = page.content()
    for original in ("123-4567", "555.123.4567", "jo.resident@example.org"):
        assert original not in html
    assert ServiceRequest.objects.get(tracking_number=number).description == DESCRIPTION

    # The reporter withdraws it from public view with the link from their email.
    service_request = ServiceRequest.objects.get(tracking_number=number)
    page.goto(f"{live_server.url}/requests/withdraw/{withdraw_token(service_request.pk)}/")
    page.screenshot(path=ARTIFACTS / "moderation-2-withdraw-confirm.png", full_page=True)
    page.get_by_role("button", name="Withdraw from public view").click()
    page.get_by_test_id("withdraw-done").wait_for()
    page.screenshot(path=ARTIFACTS / "moderation-3-withdrawn.png", full_page=True)
    service_request.refresh_from_db()
    assert not service_request.is_public
    assert service_request.history.filter(
        action=HistoryEntry.Action.MODERATION, actor_label="Reporter"
    ).exists()
    response = page.goto(f"{live_server.url}/requests/{number}/")
    assert response.status == 404
    assert not errors, errors
    context.close()


def test_markup_in_a_description_is_shown_as_text_and_never_runs(live_server, chromium, pothole):
    service_request = ServiceRequestFactory(
        category=pothole, department=pothole.department, description=XSS
    )
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    _offline(page)

    page.goto(f"{live_server.url}{service_request.get_absolute_url()}")
    page.screenshot(path=ARTIFACTS / "moderation-4-xss-status.png", full_page=True)
    assert page.get_by_test_id("description").inner_text() == XSS
    assert page.locator(".description img").count() == 0
    assert page.evaluate("typeof window.__xss") == "undefined"

    _sign_in(context, live_server, staff_user("dana", StaffRole.DISPATCHER))
    page.goto(f"{live_server.url}/admin/requests_app/servicerequest/{service_request.pk}/change/")
    page.screenshot(path=ARTIFACTS / "moderation-5-xss-admin.png", full_page=True)
    # The original (staff's view) and what the public sees, both as text.
    assert page.get_by_text(XSS, exact=True).count() == 2
    assert page.locator(".field-description img, .public-description img").count() == 0
    assert page.evaluate("typeof window.__xss") == "undefined"
    context.close()


def test_staff_see_what_the_public_sees_with_flags_and_photos_to_approve(
    live_server, chromium, pothole, photo_upload
):
    service_request = ServiceRequestFactory(
        category=pothole,
        department=pothole.department,
        description="This bullshit pothole again. Ring 617-555-0142.",
    )
    held = Photo.objects.create(
        request=service_request, image=photo_upload(), thumbnail=photo_upload(), is_public=False
    )
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    _offline(page)
    _sign_in(context, live_server, staff_user("dana", StaffRole.DISPATCHER))
    page.goto(f"{live_server.url}/admin/requests_app/servicerequest/{service_request.pk}/change/")
    page.screenshot(path=ARTIFACTS / "moderation-6-admin-flags.png", full_page=True)
    public = page.locator(".field-public_view")
    assert "This description is awaiting review." in public.inner_text()
    assert "Awaiting review: contains “bullshit”" in public.inner_text()
    page.get_by_label("Approve the description as written").check()
    page.locator(f"input[name=show_photos][value='{held.pk}']").check()
    page.get_by_label("Why (hiding, showing, approving or rewording)").fill("Fair complaint")
    page.click("input[name=_continue]")
    page.wait_for_load_state()
    page.screenshot(path=ARTIFACTS / "moderation-7-admin-approved.png", full_page=True)
    assert "Approved as written" in page.locator(".field-public_view").inner_text()
    held.refresh_from_db()
    service_request.refresh_from_db()
    assert held.is_public and service_request.description_approved
    context.close()
