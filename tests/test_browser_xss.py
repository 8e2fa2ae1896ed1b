"""Markup typed into any text field is shown as text and never runs, in headless Chromium.

The city of test_csp.py is built with a payload appended to every text a person types:
residents (description, address, name, survey comment) and staff (public comment, internal
note, the names of categories, departments, districts and crews, a category's description,
a service notice's title and message). Every page that shows them is then visited —
public pages, map popups, the crew's pages, the dashboard and the admin.

The browser ignores the Content-Security-Policy here (`bypass_csp`): the policy would stop
an injected script anyway (test_csp.py), and this test is about the first line of
defence, escaping. test_browser_moderation.py already checks the status page and the
admin change form with a description alone.
"""

import re

import pytest
from django.conf import settings
from django.test import Client

from .conftest import ARTIFACTS
from .test_browser import _own_broker  # noqa: F401  (reports filed in the browser)
from .test_csp import OFFLINE_TILES, build_city
from .test_resident_signin import signed_in_client

pytestmark = pytest.mark.browser

PAYLOAD = '"><script>window.__xss=1</script><img src=x onerror=window.__xss=1><svg onload=alert(1)>'
# What escaping failures leave in the document, besides window.__xss and a dialog.
INJECTED = "img[src='x'], svg[onload], [onerror]"


class Visitor:
    """A browser context that records dialogs and checks each page it is shown."""

    def __init__(self, chromium, live_server, user=None, **options):
        self.context = chromium.new_context(bypass_csp=True, **options)
        self.context.set_default_timeout(10_000)
        self.context.route(OFFLINE_TILES, lambda route: route.abort())
        if user is not None:
            client = user if isinstance(user, Client) else Client()
            if not isinstance(user, Client):
                client.force_login(user)
            cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
            self.context.add_cookies(
                [{"name": settings.SESSION_COOKIE_NAME, "value": cookie, "url": live_server.url}]
            )
        self.base = live_server.url
        self.dialogs = []
        self.page = self.context.new_page()
        self.page.on("dialog", self._dialog)
        self.checked = []

    def _dialog(self, dialog):
        self.dialogs.append(f"{self.page.url}: {dialog.type} {dialog.message}")
        dialog.dismiss()

    def visit(self, path, shows_payload=True):
        self.page.goto(self.base + path)
        self.check(shows_payload)

    def check(self, shows_payload=True, within="body"):
        page = self.page
        page.wait_for_load_state("load")
        where = f"{page.url} ({within})"
        if shows_payload:
            # The payload is on the page, as text: the check below is not vacuous.
            assert "window.__xss=1" in page.locator(within).first.inner_text(), where
        assert page.evaluate("typeof window.__xss") == "undefined", where
        assert page.locator(INJECTED).count() == 0, where
        assert not self.dialogs, self.dialogs
        self.checked.append(page.url)

    def close(self):
        self.context.close()


@pytest.fixture
def city(settings):
    settings.TRANSPARENCY_MIN_CELL = 1
    return build_city(mark=PAYLOAD)


def test_the_payload_runs_in_this_browser_when_it_is_not_escaped(chromium):
    """The detector works: unescaped, the payload sets window.__xss and opens a dialog."""
    context = chromium.new_context()
    page = context.new_page()
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.set_content(f"<div>{PAYLOAD}</div>")
    page.wait_for_function("() => window.__xss === 1")
    assert page.locator(INJECTED).count() >= 1
    page.wait_for_timeout(100)
    assert dialogs == ["1"]
    context.close()


@pytest.mark.django_db(transaction=True)
def test_markup_in_every_text_field_runs_nowhere(live_server, chromium, city):
    first = city["requests"][0]
    pothole = city["pothole"]

    # The public: home (categories, notice, map tooltips), status page, report form with
    # its live nearby list and notices, the same list as the server's second step,
    # transparency, the survey, the resident's own list and the emailed links' pages.
    public = Visitor(chromium, live_server, viewport={"width": 1024, "height": 900})
    page = public.page
    public.visit("/")
    page.locator("#home-map path.leaflet-interactive").first.hover(force=True)
    page.locator(".leaflet-tooltip").wait_for()
    public.check(shows_payload=False, within=".leaflet-tooltip")
    public.visit(first.get_absolute_url())
    page.screenshot(path=ARTIFACTS / "xss-1-status.png", full_page=True)
    public.visit(f"/report/?lat={first.lat}&lng={first.lng}")
    page.get_by_label("What is the problem?").select_option(value=str(pothole.pk))
    page.get_by_test_id("nearby-item").first.wait_for()
    page.locator("#report-notices .notice").wait_for()
    public.check(within="#nearby-list")
    public.check(within="#report-notices")
    # Ask the server for its second step, as a browser without scripts would get it.
    page.evaluate("() => { document.getElementById('id_file_anyway').value = ''; }")
    page.get_by_label("Describe it").fill(f"Another pothole{PAYLOAD}")
    page.get_by_role("button", name="Send report").click()
    page.get_by_text("the same problem may already be reported close by").wait_for()
    public.check(within="#nearby-list")
    page.screenshot(path=ARTIFACTS / "xss-2-report-second-step.png", full_page=True)
    for path in ("/transparency/", city["survey_url"]):
        public.visit(path)
    for path in (city["unsubscribe_url"], city["withdraw_url"]):
        public.visit(path, shows_payload=False)
    public.close()

    resident = Visitor(
        chromium, live_server, signed_in_client("rosalind0@example.org"), is_mobile=True
    )
    resident.visit("/my/")
    resident.close()

    # The crew: their map's popups, their list and a work order.
    crew = Visitor(chromium, live_server, city["casey"], viewport={"width": 390, "height": 844})
    crew.visit("/crew/")
    crew.page.locator("#crew-map .leaflet-marker-icon").first.click()
    crew.page.locator(".leaflet-popup-content a").wait_for()
    crew.check(shows_payload=False, within=".leaflet-popup-content")
    crew.visit(city["order"].get_absolute_url())
    crew.page.screenshot(path=ARTIFACTS / "xss-3-work-order.png", full_page=True)
    crew.close()

    # The office: the dashboard and its heat-map popup, the routing simulator's answer and
    # the admin's lists and forms of everything with typed text.
    office = Visitor(chromium, live_server, city["admin"], viewport={"width": 1280, "height": 900})
    page = office.page
    office.visit("/dashboard/")
    page.locator("#dashboard-map path.leaflet-interactive").first.click(force=True)
    page.locator(".cell-popup a").wait_for()
    office.check(within=".cell-popup")
    page.screenshot(path=ARTIFACTS / "xss-4-dashboard.png", full_page=True)
    office.visit(
        f"/admin/routing/routingrule/simulate/?category={pothole.pk}"
        f"&lat={first.lat}&lng={first.lng}&text=pothole"
    )
    admin_pages = [
        "/admin/requests_app/servicerequest/",
        f"/admin/requests_app/servicerequest/{first.pk}/change/",
        "/admin/requests_app/comment/",
        "/admin/requests_app/workorder/",
        f"/admin/requests_app/workorder/{city['order'].pk}/change/",
        "/admin/requests_app/servicecategory/",
        f"/admin/requests_app/servicecategory/{pothole.pk}/change/",
        "/admin/requests_app/department/",
        "/admin/requests_app/crew/",
        f"/admin/requests_app/crew/{city['crew'].pk}/change/",
        "/admin/routing/district/",
        f"/admin/routing/district/{city['district'].pk}/change/",
        "/admin/notifications/servicenotice/",
        f"/admin/surveys/survey/{city['survey'].pk}/change/",
    ]
    for path in admin_pages:
        office.visit(path)
    office.visit("/admin/surveys/survey/", shows_payload=False)  # lists no typed text
    page.goto(f"{live_server.url}/admin/requests_app/servicerequest/{first.pk}/change/")
    page.screenshot(path=ARTIFACTS / "xss-5-admin-request.png", full_page=True)
    # Both the resident's and the staff's words are on the request's form (some of them in
    # collapsed sections, hence the text content rather than the visible text).
    text = page.locator("body").text_content()
    for typed in ("Rosalind Finch", "Reporter sounded upset on the phone", "Crew on site tomorrow"):
        assert re.search(re.escape(typed) + r'"><script>window\.__xss=1', text), typed
    office.close()
