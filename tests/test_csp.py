"""Content-Security-Policy: sent on every page, and every page works under it.

The first tests read the header and the markup of every kind of page with Django's test
client (fast). The last one walks through the portal, the crew pages, the dashboard and the
admin in headless Chromium with the policy enforced, uses the maps and scripts on each,
and fails on any violation the browser reports.

`build_city` is shared with test_browser_xss.py, which fills the same city with markup.
"""

import json
import re
import time
from html.parser import HTMLParser
from urllib.parse import urlparse

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.test import Client
from django.utils import timezone

from civicdesk import settings as project_settings
from notifications.links import unsubscribe_token
from notifications.models import ServiceNotice
from requests_app.links import withdraw_token
from requests_app.models import Crew, Follower, StaffRole, WorkOrder
from requests_app.services import Intake, request_process_intake, request_submit
from routing.models import District
from surveys.links import survey_token
from surveys.models import Survey

from .conftest import ARTIFACTS
from .factories import CITY_CENTER, CategoryFactory, DepartmentFactory, staff_user
from .test_browser import _own_broker  # noqa: F401  (reports filed in the browser)
from .test_resident_signin import ask, link_path, signed_in_client

TILE_HOST = urlparse(settings.LEAFLET_CONFIG["TILES"][0][1].replace("{s}.", "")).hostname
OFFLINE_TILES = re.compile(r"^https?://([a-z]\.)?tile\.openstreetmap\.org/")

# --- A small city with something on every page --------------------------------------------


def build_city(mark=""):
    """Departments, a district, a crew with a work order, requests with comments and notes,
    a service notice, a survey and a follower. `mark` is appended to every text a person
    types (test_browser_xss.py passes markup)."""
    streets = DepartmentFactory(slug="streets", name=f"Streets{mark}")
    pothole = CategoryFactory(
        code="pothole",
        name=f"Pothole{mark}",
        description=f"Holes in the road{mark}",
        group="Streets and sidewalks",
        department=streets,
    )
    lat, lng = CITY_CENTER
    ring = [
        [lng - 0.05, lat - 0.05],
        [lng + 0.05, lat - 0.05],
        [lng + 0.05, lat + 0.05],
        [lng - 0.05, lat + 0.05],
        [lng - 0.05, lat - 0.05],
    ]
    district = District.objects.create(
        name=f"Harborside{mark}",
        code="harborside",
        boundary={"type": "Polygon", "coordinates": [ring]},
    )
    admin = staff_user("root", StaffRole.ADMINISTRATOR)
    dispatcher = staff_user("dana", StaffRole.DISPATCHER)
    director = staff_user("dora", StaffRole.DIRECTOR)
    casey = staff_user("casey", StaffRole.CREW, streets)
    crew = Crew.objects.create(name=f"Crew 1{mark}", department=streets)
    crew.members.add(casey)

    requests = []
    for n in range(6):
        request = request_submit(
            Intake(
                category=pothole,
                description=f"Deep pothole by the library, number {n}{mark}",
                lat=lat + 0.0004 * n,
                lng=lng - 0.0003 * n,
                address=f"{12 + n} Main St{mark}",
                reporter_name=f"Rosalind Finch{mark}",
                reporter_email=f"rosalind{n}@example.org",
                reporter_phone="617-555-0199",
            )
        )
        request_process_intake(request.pk)
        request.refresh_from_db()
        requests.append(request)
    first = requests[0]
    first.add_comment(f"Crew on site tomorrow{mark}", by=dispatcher, public=True)
    first.add_comment(f"Reporter sounded upset on the phone{mark}", by=dispatcher, public=False)
    order = WorkOrder.create_for(requests[:2], crew=crew, by=dispatcher)
    ServiceNotice.objects.create(
        title=f"Water main work on Main St{mark}",
        message=f"No need to report low pressure until Friday.{mark}",
        center_lat=lat,
        center_lng=lng,
        radius_m=800,
    )
    survey = Survey.objects.create(
        request=requests[5],
        recipient="rosalind5@example.org",
        rating=2,
        is_fixed=False,
        comment=f"Still a hole there{mark}",
        answered_at=timezone.now(),
    )
    Follower.objects.create(
        request=first, email="neighbour@example.org", source=Follower.Source.FOLLOW
    )
    return {
        "streets": streets,
        "pothole": pothole,
        "district": district,
        "crew": crew,
        "order": order,
        "requests": requests,
        "survey": survey,
        "admin": admin,
        "dispatcher": dispatcher,
        "director": director,
        "casey": casey,
        "survey_url": f"/surveys/{survey_token(survey.pk)}/",
        "unsubscribe_url": (
            f"/notifications/unsubscribe/{unsubscribe_token(first.pk, 'neighbour@example.org')}/"
        ),
        "withdraw_url": f"/requests/withdraw/{withdraw_token(requests[4].pk)}/",
    }


def pages(city):
    """Every kind of page, by who may see it."""
    first = city["requests"][0]
    notice = ServiceNotice.objects.get()
    return {
        None: [
            "/",
            "/report/",
            f"/report/?lat={CITY_CENTER[0]}&lng={CITY_CENTER[1]}",
            "/track/",
            f"/track/?number={first.tracking_number}",
            first.get_absolute_url(),
            "/transparency/",
            "/my/",
            city["survey_url"],
            city["unsubscribe_url"],
            city["withdraw_url"],
            "/no-such-page/",
            "/surveys/not-a-token/",
            "/notifications/unsubscribe/not-a-token/",
            "/requests/withdraw/not-a-token/",
            "/my/sign-in/not-a-token/",
        ],
        "admin": [
            "/admin/",
            "/admin/requests_app/servicerequest/",
            f"/admin/requests_app/servicerequest/{first.pk}/change/",
            "/admin/requests_app/comment/",
            f"/admin/requests_app/workorder/{city['order'].pk}/change/",
            f"/admin/requests_app/servicecategory/{city['pothole'].pk}/change/",
            f"/admin/requests_app/department/{city['streets'].pk}/change/",
            f"/admin/requests_app/crew/{city['crew'].pk}/change/",
            "/admin/routing/routingrule/",
            "/admin/routing/routingrule/simulate/",
            f"/admin/routing/district/{city['district'].pk}/change/",
            "/admin/routing/district/add/",
            f"/admin/notifications/servicenotice/{notice.pk}/change/",
            "/admin/surveys/survey/",
            f"/admin/surveys/survey/{city['survey'].pk}/change/",
            "/dashboard/",
        ],
        "casey": ["/crew/", city["order"].get_absolute_url()],
    }


# --- The header and the markup --------------------------------------------------------------


def policy(response) -> dict[str, list[str]]:
    header = response.headers.get("Content-Security-Policy")
    assert header, f"{response.request['PATH_INFO']} has no Content-Security-Policy"
    directives = {}
    for part in header.split(";"):
        name, *values = part.split()
        assert name not in directives, f"{name} twice in {header}"
        directives[name] = values
    return directives


EXPECTED = {
    "default-src": ["'none'"],
    "script-src": ["'self'"],
    "style-src": ["'self'"],
    "style-src-attr": ["'unsafe-inline'"],
    "img-src": ["'self'", "data:", "https://tile.openstreetmap.org"],
    "font-src": ["'self'"],
    "connect-src": ["'self'"],
    "form-action": ["'self'"],
    "frame-ancestors": ["'none'"],
    "base-uri": ["'none'"],
    "object-src": ["'none'"],
    "report-uri": ["/csp-report/"],
}
NONCE = re.compile(r"^'nonce-([A-Za-z0-9+/]{22}==)'$")
# Script types a browser does not run: json_script's blocks carry data, not code.
DATA_TYPES = {"application/json", "application/ld+json"}


class Markup(HTMLParser):
    """What in a page the policy has a say on."""

    def __init__(self, html):
        super().__init__(convert_charrefs=True)
        self.inline_scripts = []  # their nonce attributes (None when missing)
        self.script_sources = []
        self.handlers = []
        self.javascript_urls = []
        self.style_elements = 0
        self.stylesheets = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        for name, value in attributes.items():
            if name.startswith("on"):
                self.handlers.append(f"<{tag} {name}={value!r}>")
            if name in ("href", "src", "action", "formaction") and (
                value or ""
            ).strip().lower().startswith("javascript:"):
                self.javascript_urls.append(f"<{tag} {name}={value!r}>")
        if tag == "script":
            if "src" in attributes:
                self.script_sources.append(attributes["src"])
            elif (attributes.get("type") or "").lower() not in DATA_TYPES:
                self.inline_scripts.append(attributes.get("nonce"))
        elif tag == "style":
            self.style_elements += 1
        elif tag == "link" and "stylesheet" in (attributes.get("rel") or "").split():
            self.stylesheets.append(attributes.get("href", ""))


def assert_page_fits_the_policy(response):
    path = response.request["PATH_INFO"]
    directives = policy(response)
    script_src = directives.get("script-src", [])
    nonces = [NONCE.match(source).group(1) for source in script_src if NONCE.match(source)]
    assert {k: [v for v in values if not NONCE.match(v)] for k, values in directives.items()} == (
        EXPECTED
    ), path
    markup = Markup(response.content.decode())
    assert not markup.handlers, (path, markup.handlers)
    assert not markup.javascript_urls, (path, markup.javascript_urls)
    assert not markup.style_elements, f"{path} has <style> elements"
    for source in markup.script_sources + markup.stylesheets:
        assert source.startswith("/") and not source.startswith("//"), (path, source)
    if markup.inline_scripts:
        assert len(nonces) == 1, (path, script_src)
        assert markup.inline_scripts == [nonces[0]] * len(markup.inline_scripts), path
    else:
        # A nonce is only sent where a script uses it.
        assert not nonces, (path, script_src)
    return markup


@pytest.fixture
def city(db, settings):
    settings.TRANSPARENCY_MIN_CELL = 1
    return build_city()


def test_every_page_sends_the_policy_and_each_inline_script_carries_its_nonce(city, client):
    clients = {None: client}
    for username in ("admin", "casey"):
        clients[username] = Client()
        clients[username].force_login(city[username])
    inline = 0
    for who, urls in pages(city).items():
        for url in urls:
            response = clients[who].get(url, follow=True)
            assert response.status_code in (200, 400, 404), (who, url, response.status_code)
            inline += len(assert_page_fits_the_policy(response).inline_scripts)
    assert inline >= 5  # the maps' loaders were seen, so the nonce check was not vacuous


def test_signing_in_and_reporting_fit_the_policy(city):
    email = "rosalind0@example.org"
    assert_page_fits_the_policy(ask(Client(), email))  # "we have sent you a link"
    assert_page_fits_the_policy(Client().get(link_path(email)))  # "sign in?"
    assert_page_fits_the_policy(signed_in_client(email).get("/my/"))
    response = Client().post(
        "/report/",
        {
            "category": city["pothole"].pk,
            "description": "Streetlight out",
            "address": "1 City Hall Square",
            "file_anyway": "1",
        },
        follow=True,
    )
    assert response.redirect_chain and "/report/done/" in response.redirect_chain[-1][0]
    assert_page_fits_the_policy(response)


def test_each_response_gets_a_fresh_nonce(city, client):
    first, second = (policy(client.get("/"))["script-src"] for _ in range(2))
    assert first != second


def test_tile_hosts_come_from_the_leaflet_settings():
    sources = project_settings._tile_sources
    tiles = [("Map", "https://{s}.tile.example.org/{z}/{x}/{y}.png", {})]
    overlays = [("Bikes", "//bikes.example.net:8443/{z}/{x}/{y}.png", {}), ("Own", "/t/{z}", {})]
    config = {"TILES": tiles, "OVERLAYS": overlays}
    assert sources(config) == ["bikes.example.net:8443", "https://*.tile.example.org"]
    with pytest.raises(ImproperlyConfigured):
        sources({"TILES": [("Map", "https://tiles.{s}.example.org/{z}/{x}/{y}.png", {})]})


# --- In the browser -------------------------------------------------------------------------

WATCH = """
document.addEventListener("securitypolicyviolation", event => {
  window.__cspViolation([event.violatedDirective, event.blockedURI,
                        event.sourceFile + ":" + event.lineNumber, event.sample].join(" "));
}, true);
"""


class Watch:
    """CSP violations (the DOM event and the console's report), script errors and console
    errors in every page of a browser context. Map tiles cannot load here (no network)."""

    def __init__(self, context):
        self.problems = []
        self.url = ""
        context.expose_binding(
            "__cspViolation", lambda source, text: self.problems.append(f"{self.url}: CSP {text}")
        )
        context.add_init_script(WATCH)
        context.route(OFFLINE_TILES, lambda route: route.abort())
        context.set_default_timeout(10_000)

    def page(self, context):
        page = context.new_page()
        page.on("pageerror", lambda error: self.problems.append(f"{page.url}: {error}"))
        page.on("console", lambda message: self._console(page, message))
        page.on("framenavigated", lambda frame: setattr(self, "url", frame.url))
        return page

    def _console(self, page, message):
        if message.type not in ("error", "warning"):
            return
        where = message.location.get("url", "")
        if (
            TILE_HOST in where
            or "Content Security Policy" not in message.text
            and (message.type == "warning" or re.search(r"status of 404", message.text))
        ):
            return  # the 404 page is visited on purpose
        self.problems.append(f"{page.url}: console {message.type}: {message.text}")

    def assert_none(self):
        assert not self.problems, "\n".join(self.problems)


def _sign_in(context, live_server, client):
    cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
    context.add_cookies(
        [{"name": settings.SESSION_COOKIE_NAME, "value": cookie, "url": live_server.url}]
    )


def _staff_context(chromium, live_server, user, **options):
    context = chromium.new_context(**options)
    client = Client()
    client.force_login(user)
    _sign_in(context, live_server, client)
    return context


def _map_ready(page, selector):
    page.locator(f"{selector} .leaflet-map-pane").wait_for(state="attached")


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_portal_crew_dashboard_and_admin_work_under_the_policy(live_server, chromium, settings):
    settings.TRANSPARENCY_MIN_CELL = 1
    city = build_city()
    first = city["requests"][0]
    base = live_server.url

    # A resident on a phone: the home map, the address search, the report form with its map,
    # the nearby list and the notice, the confirmation, the status page and the rest.
    resident = chromium.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    watch = Watch(resident)
    page = watch.page(resident)
    page.goto(f"{base}/")
    _map_ready(page, "#home-map")
    assert page.locator("#home-map path.leaflet-interactive").count() >= 1
    page.get_by_label("Find an address or street").fill("Main")
    page.wait_for_function(
        "() => document.getElementById('home-address-status').textContent !== ''"
    )
    # From a place on the map: the pin is there, and picking the category asks what is near.
    page.goto(f"{base}/report/?lat={first.lat}&lng={first.lng}")
    _map_ready(page, "#report-map")
    page.locator("#report-map .leaflet-marker-icon").wait_for()
    page.get_by_label("What is the problem?").select_option(value=str(city["pothole"].pk))
    page.get_by_test_id("nearby-item").first.wait_for()
    page.locator(".notice").first.wait_for()
    page.get_by_label("Describe it").fill("Another pothole, on the corner")
    page.get_by_role("button", name="Send report").click()
    page.wait_for_url(re.compile(r"/report/done/CD-"))
    page.screenshot(path=ARTIFACTS / "csp-1-confirmation.png", full_page=True)
    page.goto(f"{base}{first.get_absolute_url()}")
    _map_ready(page, "#status-map")
    page.locator("#status-map .leaflet-marker-icon").wait_for()
    page.screenshot(path=ARTIFACTS / "csp-2-status.png", full_page=True)
    for url in ("/track/", "/transparency/", "/my/", city["survey_url"], city["unsubscribe_url"]):
        page.goto(f"{base}{url}")
    page.goto(f"{base}{city['withdraw_url']}")
    page.get_by_role("button", name="Withdraw from public view").click()
    page.get_by_test_id("withdraw-done").wait_for()
    _sign_in(resident, live_server, signed_in_client("rosalind0@example.org"))
    page.goto(f"{base}/my/")
    page.get_by_test_id("my-requests").wait_for()
    resident.close()

    # The crew on a phone: their map with a pin per work order, and a work order.
    crew = _staff_context(
        chromium, live_server, city["casey"], viewport={"width": 360, "height": 780}
    )
    watch_crew = Watch(crew)
    page = watch_crew.page(crew)
    page.goto(f"{base}/crew/")
    _map_ready(page, "#crew-map")
    page.locator("#crew-map .leaflet-marker-icon").first.click()
    page.locator(".leaflet-popup-content a").wait_for()
    assert page.locator(".leaflet-popup-content a").inner_text() == str(city["order"])
    page.screenshot(path=ARTIFACTS / "csp-3-crew-map.png", full_page=True)
    page.locator(".leaflet-popup-content a").click()
    page.wait_for_url(f"**{city['order'].get_absolute_url()}")
    crew.close()

    # The office: the dashboard's heat map and popup, and the admin with its maps.
    office = _staff_context(
        chromium, live_server, city["admin"], viewport={"width": 1280, "height": 900}
    )
    watch_office = Watch(office)
    page = watch_office.page(office)
    page.goto(f"{base}/dashboard/")
    page.wait_for_function(
        "() => document.getElementById('map-status').dataset.total !== undefined"
    )
    page.locator("#dashboard-map path.leaflet-interactive").first.click(force=True)
    page.locator(".cell-popup a").wait_for()
    page.screenshot(path=ARTIFACTS / "csp-4-dashboard.png", full_page=True)
    page.goto(f"{base}/admin/requests_app/servicerequest/")
    page.get_by_role("link", name=first.tracking_number).click()
    _map_ready(page, ".point-view")
    page.screenshot(path=ARTIFACTS / "csp-5-admin-request.png", full_page=True)
    page.goto(f"{base}/admin/routing/district/{city['district'].pk}/change/")
    _map_ready(page, ".district-map")
    page.locator(".leaflet-draw-toolbar").first.wait_for()
    page.screenshot(path=ARTIFACTS / "csp-6-district-editor.png", full_page=True)
    page.goto(f"{base}/admin/routing/routingrule/simulate/")
    _map_ready(page, ".point-picker")
    page.locator(".point-picker").click()
    assert page.locator("#id_lat").input_value()
    page.select_option("#id_category", value=str(city["pothole"].pk))
    page.get_by_role("button", name="Simulate").click()
    page.get_by_test_id("simulation").wait_for()
    for url in pages(city)["admin"]:
        page.goto(f"{base}{url}")
    office.close()

    for each in (watch, watch_crew, watch_office):
        each.assert_none()


# --- Reports of what the policy blocked ---------------------------------------------------


def csp_report_body(**report):
    return {
        "csp-report": {
            "document-uri": "https://city.example/my/signin/SECRET-TOKEN/?next=/my/#top",
            "effective-directive": "img-src",
            "violated-directive": "img-src",
            "blocked-uri": "https://tiles.elsewhere.example/3/4/2.png?key=abc",
            "source-file": "https://city.example/static/portal/map.js?v=1",
            "line-number": 12,
            **report,
        }
    }


def test_a_blocked_load_is_logged_without_queries(client, caplog):
    caplog.set_level("WARNING", logger="civicdesk.csp")
    response = client.post(
        "/csp-report/", json.dumps(csp_report_body()), content_type="application/csp-report"
    )
    assert response.status_code == 204
    (record,) = caplog.records
    line = record.getMessage()
    assert "https://tiles.elsewhere.example/3/4/2.png (img-src)" in line
    assert "https://city.example/my/signin/SECRET-TOKEN/" in line
    assert "static/portal/map.js line 12" in line
    # Queries and fragments may hold keys and search terms; they are not logged.
    assert "key=abc" not in line and "next=" not in line and "#top" not in line
    assert "v=1" not in line


def test_an_inline_violation_keeps_its_keyword(client, caplog):
    caplog.set_level("WARNING", logger="civicdesk.csp")
    body = csp_report_body(**{"blocked-uri": "inline", "effective-directive": "script-src-elem"})
    client.post("/csp-report/", json.dumps(body), content_type="application/csp-report")
    assert "CSP blocked inline (script-src-elem)" in caplog.records[0].getMessage()


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"[]", b'{"csp-report": "x"}', b"[" * 5000 + b"]" * 5000, b"\xff\xfe"],
    ids=["empty", "not-json", "list", "report-not-object", "deeply-nested", "not-utf8"],
)
def test_anything_but_a_report_gets_a_400(client, caplog, body):
    response = client.post("/csp-report/", body, content_type="application/csp-report")
    assert response.status_code == 400
    assert not [r for r in caplog.records if r.name == "civicdesk.csp"]


def test_a_large_body_is_refused_unread(client):
    body = json.dumps(csp_report_body(**{"script-sample": "x" * 20_000}))
    response = client.post("/csp-report/", body, content_type="application/csp-report")
    assert response.status_code == 413


def test_reports_are_not_only_get_requests(client):
    assert client.get("/csp-report/").status_code == 405


def test_a_flood_of_reports_is_capped_in_the_log(client, caplog, monkeypatch):
    from requests_app import csp_report

    monkeypatch.setattr(csp_report, "_minute", [0, 0])
    caplog.set_level("WARNING", logger="civicdesk.csp")
    for _ in range(csp_report.REPORTS_LOGGED_PER_MINUTE + 20):
        response = client.post(
            "/csp-report/", json.dumps(csp_report_body()), content_type="application/csp-report"
        )
        assert response.status_code == 204
    logged = [r for r in caplog.records if r.name == "civicdesk.csp"]
    assert len(logged) == csp_report.REPORTS_LOGGED_PER_MINUTE


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_chromium_reports_a_blocked_load_to_the_log(live_server, chromium, caplog):
    caplog.set_level("WARNING", logger="civicdesk.csp")
    context = chromium.new_context()
    page = context.new_page()
    page.goto(f"{live_server.url}/track/")
    # As an injected tag would: an image from a host the policy does not name.
    page.evaluate(
        "() => { const img = document.createElement('img');"
        " img.src = 'https://evil.example/pixel.png?who=me'; document.body.append(img); }"
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not [
        r for r in caplog.records if r.name == "civicdesk.csp"
    ]:
        time.sleep(0.1)
    context.close()
    (record,) = [r for r in caplog.records if r.name == "civicdesk.csp"]
    line = record.getMessage()
    assert "https://evil.example/pixel.png (img-src)" in line and "/track/" in line
    assert "who=me" not in line
