"""A resident finds the place by its address, in headless Chromium: suggestions while typing,
the map and pin follow the pick, a pin dropped on the map fills in the address, and the same
without JavaScript through "Find address"."""

import math
import re
from urllib.parse import urlparse

import pytest
from django.conf import settings
from playwright.sync_api import expect

from requests_app.models import ServiceRequest
from routing.gazetteer import address_build, addresses_save, streets_rebuild
from routing.models import METRES_PER_DEGREE, Street

from .conftest import ARTIFACTS
from .factories import CITY_CENTER

pytestmark = [
    pytest.mark.usefixtures("own_broker"),
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
]

PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
TILE_HOST = urlparse(settings.LEAFLET_CONFIG["TILES"][0][1].replace("{s}.", "")).hostname


def at(east_m=0.0, north_m=0.0):
    lat = CITY_CENTER[0] + north_m / METRES_PER_DEGREE
    lng = CITY_CENTER[1] + east_m / (METRES_PER_DEGREE * math.cos(math.radians(CITY_CENTER[0])))
    return round(lat, 6), round(lng, 6)


# Elm Street runs east from the centre, a house every 20 m; Elmwood Road lies 300 m north.
ELM = {n: at(east_m=10 * n) for n in range(2, 31, 2)}
ELMWOOD = {n: at(north_m=300, east_m=10 * n) for n in (1, 3, 5)}


@pytest.fixture
def gazetteer(db):
    rows = [address_build("city", f"{n} Elm Street", *p, zipcode="02110") for n, p in ELM.items()]
    rows += [
        address_build("city", f"{n} Elmwood Road", *p, zipcode="02110") for n, p in ELMWOOD.items()
    ]
    addresses_save(rows, "city")
    streets_rebuild()


class Problems:
    """JavaScript and console errors, except the map tiles, which cannot load here."""

    def __init__(self, page):
        self.errors = []
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("console", self._console)
        page.route(f"**://{TILE_HOST}/**", lambda route: route.abort())
        page.route(re.compile(r"^https?://[a-z]\.tile\.openstreetmap\.org/"), lambda r: r.abort())

    def _console(self, message):
        url = message.location.get("url", "")
        if message.type == "error" and not (TILE_HOST and TILE_HOST in url):
            self.errors.append(f"{message.text} ({url})")

    def assert_none(self):
        assert not self.errors, self.errors


@pytest.fixture
def phone(chromium):
    context = chromium.new_context(**PHONE)
    page = context.new_page()
    page.add_init_script(
        "window.portalMaps = {};"
        "window.addEventListener('map:init', e => {"
        " window.portalMaps[e.detail.id] = e.detail.map; });"
    )
    problems = Problems(page)
    yield page, problems
    context.close()


def _shot(page, name):
    page.screenshot(path=ARTIFACTS / f"addresses-{name}.png", full_page=True)


def _wait_for_view(page, map_id, lat, lng, zoom):
    """Until the map looks at (lat, lng) at `zoom` (an animated move takes a moment)."""
    page.wait_for_function(
        """([id, lat, lng, zoom]) => {
            const map = window.portalMaps[id];
            if (!map || map.getZoom() !== zoom) return false;
            const c = map.getCenter();
            return Math.abs(c.lat - lat) < 1e-5 && Math.abs(c.lng - lng) < 1e-5;
        }""",
        arg=[map_id, lat, lng, zoom],
        timeout=5000,
    )


def _tap_map_at(page, map_id, lat, lng):
    page.locator(f"#{map_id}").scroll_into_view_if_needed()
    x, y = page.evaluate(
        """([id, lat, lng]) => {
            const p = window.portalMaps[id].latLngToContainerPoint([lat, lng]);
            return [p.x, p.y];
        }""",
        [map_id, lat, lng],
    )
    box = page.locator(f"#{map_id}").bounding_box()
    page.mouse.click(box["x"] + x, box["y"] + y)


def test_resident_picks_a_suggested_address_and_the_report_is_saved_there(
    live_server, phone, pothole, gazetteer
):
    page, problems = phone
    page.goto(f"{live_server.url}/report/")
    page.get_by_label("What is the problem?").select_option(label="Pothole")
    page.get_by_label("Describe it").fill(
        "Deep pothole in front of the bakery, call me on (617) 555-0142"
    )

    address = page.get_by_role("combobox", name="Address or place")
    expect(address).to_have_attribute("aria-expanded", "false")
    address.press_sequentially("12 El", delay=40)
    suggestions = page.get_by_role("listbox", name="Matching addresses")
    expect(suggestions.get_by_role("option")).to_have_count(1)
    option = suggestions.get_by_role("option", name=re.compile(r"^12 Elm Street"))
    expect(option).to_be_visible()
    expect(address).to_have_attribute("aria-expanded", "true")
    expect(page.locator("#address-status")).to_have_text(re.compile(r"^1 match"))
    _shot(page, "1-suggestions")

    # The keyboard: down to the suggestion, Enter takes it (and sends nothing).
    address.press("ArrowDown")
    expect(option).to_have_attribute("aria-selected", "true")
    expect(address).to_have_attribute("aria-activedescendant", option.get_attribute("id"))
    address.press("Enter")
    lat, lng = ELM[12]
    expect(address).to_have_value("12 Elm Street")
    expect(suggestions).to_be_hidden()
    expect(page.locator("#id_lat")).to_have_value(f"{lat:.6f}")
    expect(page.locator("#id_lng")).to_have_value(f"{lng:.6f}")
    expect(page.locator("#address-status")).to_have_text("The pin is now at 12 Elm Street.")
    _wait_for_view(page, "report-map", lat, lng, 18)
    assert page.locator("#report-map .leaflet-marker-icon").count() == 1
    assert page.url == f"{live_server.url}/report/"
    _shot(page, "2-picked")

    page.get_by_role("button", name="Send report").click()
    page.wait_for_url(re.compile(r"/report/done/CD-"))
    request = ServiceRequest.objects.get()
    assert (request.lat, request.lng) == (lat, lng)
    assert request.address == "12 Elm Street"
    assert "(617) 555-0142" in request.description  # staff keep what was written

    # The public status page shows the description with the phone number masked.
    page.get_by_role("link", name="Follow your report").click()
    page.wait_for_url(re.compile(r"/requests/CD-"))
    body = page.locator("main").inner_text()
    assert "Deep pothole in front of the bakery" in body and "12 Elm Street" in body
    assert "[phone number hidden]" in body and "555-0142" not in body
    _shot(page, "8-status-masked")
    problems.assert_none()


def test_a_pin_dropped_on_the_map_fills_in_the_nearest_address_unless_one_was_typed(
    live_server, phone, pothole, gazetteer
):
    page, problems = phone
    page.goto(f"{live_server.url}/report/")
    page.wait_for_function("() => window.portalMaps && window.portalMaps['report-map']")
    page.evaluate(
        "([lat, lng]) => window.portalMaps['report-map'].setView([lat, lng], 18, {animate: false})",
        list(ELM[14]),
    )
    address = page.get_by_label("Address or place")

    _tap_map_at(page, "report-map", ELM[14][0] + 0.00004, ELM[14][1])  # 4 m north of no. 14
    expect(address).to_have_value("14 Elm Street")
    expect(page.locator("#address-status")).to_have_text(
        "Address filled in from the pin: 14 Elm Street."
    )
    _shot(page, "3-pin-fills-address")

    # Filled in by us, so a new pin may replace it...
    _tap_map_at(page, "report-map", ELM[20][0] - 0.00004, ELM[20][1])
    expect(address).to_have_value("20 Elm Street")
    # ...but never the resident's own words.
    address.fill("By the red door of the bakery")
    _tap_map_at(page, "report-map", ELM[16][0], ELM[16][1])
    page.wait_for_function(  # the pin moved (to within a pixel)
        "lng => Math.abs(parseFloat(document.getElementById('id_lng').value) - lng) < 1e-5",
        arg=ELM[16][1],
    )
    page.wait_for_timeout(500)  # time enough for an answer that must not be used
    expect(address).to_have_value("By the red door of the bakery")
    problems.assert_none()


def test_home_search_moves_the_map_to_a_street_and_offers_to_report_there(
    live_server, phone, pothole, gazetteer
):
    page, problems = phone
    page.goto(f"{live_server.url}/")
    search = page.get_by_role("combobox", name="Find an address or street")
    search.press_sequentially("elm", delay=40)
    street = page.get_by_role("option", name=re.compile(r"^Elm Street"))
    expect(street).to_be_visible()
    _shot(page, "4-home-suggestions")
    street.tap()

    centre = Street.objects.get(search_text="elm street")
    expect(search).to_have_value("Elm Street")
    _wait_for_view(page, "home-map", centre.lat, centre.lng, 16)
    assert page.locator("#home-map .leaflet-marker-icon").count() == 1
    _shot(page, "5-home-picked")

    page.get_by_role("link", name="Report a problem here").click()
    page.wait_for_url(re.compile(r"/report/\?lat="))
    expect(page.get_by_label("Address or place")).to_have_value("Elm Street")
    expect(page.locator("#id_lat")).to_have_value(f"{centre.lat:.6f}")
    _wait_for_view(page, "report-map", round(centre.lat, 6), round(centre.lng, 6), 17)
    problems.assert_none()


def test_without_javascript_find_address_lists_matches_to_pick_from(
    live_server, chromium, pothole, gazetteer
):
    context = chromium.new_context(java_script_enabled=False, **PHONE)
    page = context.new_page()
    page.goto(f"{live_server.url}/report/")
    page.get_by_label("What is the problem?").select_option(label="Pothole")
    page.get_by_label("Describe it").fill("Deep pothole in front of the bakery")
    page.get_by_label("Address or place").fill("elm st")
    page.get_by_role("button", name="Find address").click()

    expect(page.get_by_role("heading", name="Which address do you mean?")).to_be_visible()
    _shot(page, "6-no-js-matches")
    page.get_by_role("button", name=re.compile(r"^4 Elm Street")).click()
    expect(page.get_by_label("Address or place")).to_have_value("4 Elm Street")
    expect(page.get_by_text("The pin is now at 4 Elm Street.")).to_be_visible()
    assert page.get_by_label("Describe it").input_value() == "Deep pothole in front of the bakery"
    _shot(page, "7-no-js-picked")

    page.get_by_role("button", name="Send report").click()
    page.wait_for_url(re.compile(r"/report/done/CD-"))
    request = ServiceRequest.objects.get()
    assert (request.lat, request.lng) == ELM[4]
    context.close()
