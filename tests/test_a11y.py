"""The resident portal passes axe-core's WCAG 2.1 A/AA checks (and its best practices:
landmarks, heading order) in headless Chromium, page by page and state by state, and the
report form can be sent with the keyboard alone when there is no map at all.

axe-core comes from the npm registry, not from this repository: `.ci/run` installs it into
var/axe; elsewhere run `npm install --prefix var/axe axe-core@4.11.4`, or point AXE_CORE_JS
at an axe.min.js. Without it the axe test is skipped.
"""

import os
import re
from pathlib import Path

import pytest
from django.conf import settings

from requests_app.models import ServiceRequest
from requests_app.services import Intake, request_process_intake, request_submit

from .conftest import ARTIFACTS, ROOT
from .factories import CITY_CENTER
from .test_browser import _own_broker  # noqa: F401  (reports filed in the browser)
from .test_csp import OFFLINE_TILES
from .test_resident_signin import signed_in_client

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

AXE = Path(
    os.environ.get("AXE_CORE_JS")
    or ROOT / "var" / "axe" / "node_modules" / "axe-core" / "axe.min.js"
)
RULES = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}


def axe(page, state):
    """The violations axe finds on the page as it is now, one line per element."""
    page.add_script_tag(path=str(AXE))
    result = page.evaluate(
        "rules => axe.run(document, {runOnly: {type: 'tag', values: rules}})", RULES
    )
    return [
        f"{state}: {violation['id']} ({violation['impact']}) {node['target']}: "
        + node["failureSummary"].replace("\n", " ")
        for violation in result["violations"]
        for node in violation["nodes"]
    ]


@pytest.fixture
def open_pothole(pothole, dispatcher, settings):
    settings.TRANSPARENCY_MIN_CELL = 1
    request = request_submit(
        Intake(
            category=pothole,
            description="Pothole by the bus stop, deep enough to hurt a bike",
            lat=CITY_CENTER[0],
            lng=CITY_CENTER[1],
            address="12 Main St",
            reporter_email="maria@example.org",
        )
    )
    request_process_intake(request.pk)
    request.refresh_from_db()
    request.add_comment("Crew on site tomorrow.", by=dispatcher, public=True)
    return request


@pytest.mark.skipif(
    not AXE.exists(),
    reason=f"axe-core is not at {AXE}: run `npm install --prefix var/axe axe-core@4.11.4` "
    "(.ci/run does) or set AXE_CORE_JS",
)
def test_portal_pages_pass_axe(live_server, chromium, open_pothole, pothole):
    # The policy would refuse axe's script tag; it is not what this test is about.
    context = chromium.new_context(bypass_csp=True, **PHONE)
    context.set_default_timeout(10_000)
    context.route(OFFLINE_TILES, lambda route: route.abort())
    page = context.new_page()
    base = live_server.url
    found = []

    def check(path, state=None):
        if path is not None:
            page.goto(base + path)
        found.extend(axe(page, state or path))

    check("/")
    check("/report/")
    page.get_by_role("button", name="Send report").click()
    page.locator(".form-errors").wait_for()
    check(None, "report form with errors")
    page.screenshot(path=ARTIFACTS / "a11y-report-errors.png", full_page=True)

    # A place next to the open pothole: the live list of requests nearby, then the server's
    # second step (as without JavaScript), then the confirmation.
    page.goto(f"{base}/report/?lat={CITY_CENTER[0]}&lng={CITY_CENTER[1]}")
    page.get_by_label("What is the problem?").select_option(label="Pothole")
    page.get_by_test_id("nearby-item").first.wait_for()
    check(None, "report form with requests nearby")
    page.evaluate("() => { document.getElementById('id_file_anyway').value = ''; }")
    page.get_by_label("Describe it").fill("Another pothole")
    page.get_by_role("button", name="Send report").click()
    page.get_by_role("button", name="File my report anyway").wait_for()
    check(None, "report form, second step")
    page.get_by_role("button", name="File my report anyway").click()
    page.wait_for_url(re.compile(r"/report/done/CD-"))
    check(None, "confirmation")

    check(open_pothole.get_absolute_url())
    check("/track/")
    check("/track/?number=nonsense", "lookup with an error")
    check("/my/")
    page.get_by_label("Your email").fill("not an address")
    page.get_by_role("button", name="Email me a sign-in link").click()
    page.locator(".field-errors").wait_for()
    check(None, "my requests, asking with an error")
    check("/transparency/")
    resident = signed_in_client("maria@example.org")
    context.add_cookies(
        [
            {
                "name": settings.SESSION_COOKIE_NAME,
                "value": resident.cookies[settings.SESSION_COOKIE_NAME].value,
                "url": base,
            }
        ]
    )
    page.goto(f"{base}/my/")
    page.get_by_test_id("my-requests").wait_for()
    check(None, "my requests, signed in")
    context.close()
    assert not found, "\n".join(found)


def test_report_form_without_javascript_is_sent_with_the_keyboard_alone(
    live_server, chromium, pothole
):
    """No script, so no map and no pin: the address typed is where it is."""
    context = chromium.new_context(java_script_enabled=False, **PHONE)
    page = context.new_page()
    page.goto(f"{live_server.url}/report/")
    assert page.locator(".leaflet-container").count() == 0
    page.keyboard.press("Tab")  # the skip link comes first
    assert page.evaluate("document.activeElement.textContent.trim()") == "Skip to content"
    page.get_by_label("What is the problem?").focus()
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Tab")
    page.keyboard.type("Pothole at the crosswalk")
    for _ in range(10):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "id_address":
            break
    page.keyboard.type("1 City Hall Square")
    page.keyboard.press("Enter")  # the form's first button is "Send report"
    page.wait_for_url(re.compile(r"/report/done/CD-"))
    request = ServiceRequest.objects.get()
    assert request.category == pothole and request.address == "1 City Hall Square"
    assert request.description == "Pothole at the crosswalk" and request.lat is None
    context.close()
