"""A resident on a phone, in headless Chromium: report a pothole, follow it, get errors right."""

import json
import re
from urllib.parse import urlparse

import pytest
from django.conf import settings
from playwright.sync_api import expect

from requests_app import service_area
from requests_app.models import ServiceRequest

from .conftest import ARTIFACTS, use_broker
from .factories import CITY_CENTER, CategoryFactory
from .photos import make_image

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
# A spot inside the service area but away from its centre, so a report placed by the
# photo cannot be mistaken for a default map position.
PHOTO_GPS = (CITY_CENTER[0] + 0.0123, CITY_CENTER[1] - 0.0234)
DESCRIPTION = "Deep pothole in the bike lane outside no. 48, about a foot across"
REPORTER = {
    "Your name": "Rosalind Okonkwo-Finch",
    "Your email": "rosalind.finch@example.org",
    "Your phone": "617-555-0199",
}
TILE_HOST = urlparse(settings.LEAFLET_CONFIG["TILES"][0][1].replace("{s}.", "")).hostname
TRACKING_NUMBER = re.compile(r"^CD-[A-Z0-9]{4}-[A-Z0-9]{4}$")


@pytest.fixture
def parks_category(db):
    # A second group, so the home page has more than one to show.
    return CategoryFactory(code="fallen-tree", name="Fallen tree", group="Parks and trees")


@pytest.fixture(autouse=True)
def _own_broker(settings, tmp_path):
    """Reports submitted through the live server enqueue work after commit. Without Redis
    that lands in the filesystem broker under var/, where a developer's running worker
    would take tasks naming rows of the test database; give them a folder of their own."""
    if settings.REDIS_URL:
        yield
        return
    folder = tmp_path / "broker"
    use_broker(
        "filesystem://",
        {
            "data_folder_in": str(folder),
            "data_folder_out": str(folder),
            "control_folder": str(folder / "control"),
            "store_processed": False,
        },
    )
    folder.mkdir()
    yield
    use_broker(settings.CELERY_BROKER_URL, settings.CELERY_BROKER_TRANSPORT_OPTIONS)


class Problems:
    """JavaScript errors and console errors a resident's browser would show, except the
    map tiles, which cannot load here (no network), and documents we expect to be 4xx."""

    def __init__(self, page):
        self.page_errors = []
        self.console_errors = []
        self.expected_statuses = set()
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))
        page.on("console", self._console)
        # Fail tile requests at once instead of waiting on DNS in a closed network.
        page.route(f"**://{TILE_HOST}/**", lambda route: route.abort())
        page.route(re.compile(r"^https?://[a-z]\.tile\.openstreetmap\.org/"), lambda r: r.abort())

    def _console(self, message):
        if message.type != "error":
            return
        url = message.location.get("url", "")
        if "tile.openstreetmap.org" in url or (TILE_HOST and TILE_HOST in url):
            return
        status = re.search(r"status of (\d{3})", message.text)
        if status and int(status.group(1)) in self.expected_statuses:
            return
        self.console_errors.append(f"{message.text} ({url})")

    def assert_none(self):
        assert not self.page_errors, self.page_errors
        assert not self.console_errors, self.console_errors


def _shot(page, name):
    page.screenshot(path=ARTIFACTS / f"resident-{name}.png", full_page=True)


def _assert_fits_phone(page):
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["viewport"]["width"], f"{page.url} scrolls sideways ({width}px)"


def _assert_no_personal_data(page):
    html = page.content()
    for value in [*REPORTER.values(), "Rosalind", "Finch", "555-0199"]:
        assert value not in html, f"{value!r} is on the public page {page.url}"


def _map_height(page, selector):
    return page.locator(selector).bounding_box()["height"]


def _map_view(page, map_id):
    """Where a Leaflet map looks: its bounds, centre and zoom, read from the map itself."""
    return page.evaluate(
        """id => {
            const map = window.portalMaps[id], b = map.getBounds(), c = map.getCenter();
            return {south: b.getSouth(), west: b.getWest(), north: b.getNorth(),
                    east: b.getEast(), lat: c.lat, lng: c.lng, zoom: map.getZoom()};
        }""",
        map_id,
    )


def _assert_shows_service_area(page, map_id):
    view = _map_view(page, map_id)
    min_lng, min_lat, max_lng, max_lat = service_area.bounds()
    assert view["south"] <= min_lat and view["north"] >= max_lat, view
    assert view["west"] <= min_lng and view["east"] >= max_lng, view


@pytest.fixture
def phone(chromium):
    context = chromium.new_context(**PHONE)
    page = context.new_page()
    # django-leaflet keeps no global for its maps; remember them to ask where they look.
    page.add_init_script(
        "window.portalMaps = {};"
        "window.addEventListener('map:init', e => {"
        " window.portalMaps[e.detail.id] = e.detail.map; });"
    )
    problems = Problems(page)
    yield page, problems
    context.close()


def test_resident_reports_pothole_located_by_photo_and_follows_it_without_personal_data(
    live_server, phone, pothole, parks_category, tmp_path
):
    page, problems = phone
    photo = tmp_path / "pothole.jpg"
    photo.write_bytes(make_image(size=(1600, 1200), color=(90, 90, 95), gps=PHOTO_GPS))

    # Home: categories under their groups, and the tracking lookup.
    page.goto(f"{live_server.url}/")
    _shot(page, "1-home")
    groups = page.locator(".category-group")
    assert groups.locator("h3").all_inner_texts() == ["Parks and trees", "Streets and sidewalks"]
    streets = groups.filter(has=page.get_by_role("heading", name="Streets and sidewalks"))
    assert streets.get_by_role("link", name="Pothole").is_visible()
    assert page.get_by_role("heading", name="Track a report").is_visible()
    assert page.get_by_label("Tracking number").is_visible()
    assert page.get_by_role("button", name="Find it").is_visible()
    assert _map_height(page, "#home-map") >= 300
    _assert_shows_service_area(page, "home-map")
    _assert_fits_phone(page)

    # Report a pothole; the place comes from the photo's GPS, the map is never touched.
    page.get_by_role("link", name="Report a problem").first.click()
    page.wait_for_url(f"{live_server.url}/report/")
    assert _map_height(page, "#report-map") >= 300
    _assert_shows_service_area(page, "report-map")
    page.get_by_label("What is the problem?").select_option(label="Pothole")
    page.get_by_label("Describe it").fill(DESCRIPTION)
    page.get_by_label("Photos").set_input_files(str(photo))
    for label, value in REPORTER.items():
        page.get_by_label(label).fill(value)
    assert page.locator("#id_lat").input_value() == ""
    assert page.locator("#id_lng").input_value() == ""
    _assert_fits_phone(page)
    _shot(page, "2-report-filled")
    page.get_by_role("button", name="Send report").click()

    # Confirmation with a tracking number.
    page.wait_for_url(re.compile(r"/report/done/CD-"))
    _shot(page, "3-confirmation")
    number = page.get_by_test_id("tracking-number").inner_text().strip()
    assert TRACKING_NUMBER.match(number), number
    assert page.get_by_role("heading", name="Thank you, we received your report").is_visible()
    _assert_fits_phone(page)
    _assert_no_personal_data(page)

    service_request = ServiceRequest.objects.get(tracking_number=number)
    assert service_request.lat == pytest.approx(PHOTO_GPS[0], abs=1e-4)
    assert service_request.lng == pytest.approx(PHOTO_GPS[1], abs=1e-4)

    # The public status page.
    page.get_by_role("link", name="Follow your report").click()
    page.wait_for_url(f"{live_server.url}/requests/{number}/")
    thumbnail = page.locator(".photo-grid img")
    thumbnail.first.scroll_into_view_if_needed()  # it loads lazily
    page.wait_for_function(
        "img => img.complete && img.naturalWidth > 0", arg=thumbnail.first.element_handle()
    )
    page.evaluate("window.scrollTo(0, 0)")
    _shot(page, "4-status")
    assert page.get_by_role("heading", name="Pothole", level=1).is_visible()
    assert page.get_by_text(number).first.is_visible()
    assert page.locator(".description").inner_text() == DESCRIPTION
    assert page.get_by_test_id("status").inner_text() in {"Received", "Assigned"}
    assert thumbnail.count() == 1
    assert _map_height(page, "#status-map") >= 200
    view = _map_view(page, "status-map")
    assert (view["lat"], view["lng"]) == pytest.approx(PHOTO_GPS, abs=1e-4)
    marker = json.loads(page.locator("#map-marker").text_content())
    assert marker["lat"] == pytest.approx(PHOTO_GPS[0], abs=1e-4)
    assert marker["lng"] == pytest.approx(PHOTO_GPS[1], abs=1e-4)
    _assert_fits_phone(page)

    _assert_no_personal_data(page)
    problems.assert_none()


def test_unreadable_photo_is_explained_and_the_description_kept(
    live_server, phone, pothole, tmp_path
):
    page, problems = phone
    problems.expected_statuses.add(400)  # the form answers its errors with 400 Bad Request
    fake = tmp_path / "photo.jpg"
    fake.write_text("These are not the pixels you are looking for.\n")

    page.goto(f"{live_server.url}/report/")
    page.get_by_label("What is the problem?").select_option(label="Pothole")
    page.get_by_label("Describe it").fill(DESCRIPTION)
    page.get_by_label("Address or place").fill("48 Harbor Street")
    page.get_by_label("Photos").set_input_files(str(fake))
    page.get_by_role("button", name="Send report").click()
    page.locator(".form-errors").wait_for()
    _shot(page, "5-bad-photo")

    assert page.url == f"{live_server.url}/report/"
    summary = page.locator(".form-errors")
    assert summary.is_visible()
    assert "Everything you typed is still here" in summary.inner_text()
    photo_errors = page.locator("#id_photos_error")
    assert photo_errors.is_visible()
    assert "photo.jpg is not a photo we can read" in photo_errors.inner_text()
    assert page.get_by_label("Describe it").input_value() == DESCRIPTION
    assert page.get_by_label("Address or place").input_value() == "48 Harbor Street"
    selected = page.get_by_label("What is the problem?").evaluate(
        "select => select.selectedOptions[0].textContent"
    )
    assert selected == "Pothole"
    assert photo_errors.get_attribute("role") == "alert"  # read out when the page loads
    _assert_fits_phone(page)
    assert not ServiceRequest.objects.exists()
    problems.assert_none()


def test_report_form_can_be_filled_and_sent_with_the_keyboard_alone(live_server, phone, pothole):
    page, problems = phone
    page.goto(f"{live_server.url}/report/")
    form = page.locator("form.report-form")

    # Every control a person can see has a label that names it.
    labels = {
        "#id_category": "What is the problem?",
        "#id_description": "Describe it",
        "#id_address": "Address or place",
        "#id_photos": "Photos",
        "#id_name": "Your name",
        "#id_email": "Your email",
        "#id_phone": "Your phone",
    }
    for selector, label in labels.items():
        field = page.get_by_label(label, exact=False)
        assert field.count() == 1, label
        assert field.evaluate("(el, sel) => el.matches(sel)", selector), label
    controls = form.locator("input:not([type=hidden]):not([type=submit]), select, textarea").all()
    visible = [
        control
        for control in controls
        if control.is_visible() and not control.evaluate("el => !!el.closest('[aria-hidden=true]')")
    ]
    ids = {control.get_attribute("id") for control in visible}
    assert ids == {selector[1:] for selector in labels}, ids

    # Tab order runs through the form in reading order; the trap for bots is never reached.
    page.get_by_label("What is the problem?").focus()
    reached = [_focused(page)]
    while reached[-1] != "Send report" and len(reached) < 40:
        page.keyboard.press("Tab")
        reached.append(_focused(page))
    expected = [*(selector[1:] for selector in labels), "Send report"]
    assert [item for item in reached if item in expected] == expected, reached
    assert "id_website" not in reached

    # Fill it in and send it with the keyboard alone.
    page.get_by_label("What is the problem?").focus()
    page.keyboard.press("ArrowDown")
    category = page.get_by_label("What is the problem?")
    assert category.evaluate("select => select.selectedOptions[0].textContent") == "Pothole"
    _tab_to(page, "id_description")
    page.keyboard.type("Pothole at the crosswalk")
    _tab_to(page, "id_address")
    page.keyboard.type("1 City Hall Square")
    _shot(page, "6-keyboard")
    _tab_to(page, "Send report")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/report/done/CD-"))
    assert ServiceRequest.objects.get().address == "1 City Hall Square"
    problems.assert_none()


def _focused(page):
    return page.evaluate(
        "() => (document.activeElement.id || document.activeElement.textContent).trim()"
    )


def _tab_to(page, target, limit=20):
    for _ in range(limit):
        page.keyboard.press("Tab")
        if _focused(page) == target:
            return
    raise AssertionError(f"Tab never reached {target}")


def test_photo_error_and_help_are_read_out_with_the_photo_field(
    live_server, phone, pothole, tmp_path
):
    page, problems = phone
    problems.expected_statuses.add(400)
    fake = tmp_path / "photo.jpg"
    fake.write_text("not a picture")
    page.goto(f"{live_server.url}/report/")
    page.get_by_label("What is the problem?").select_option(label="Pothole")
    page.get_by_label("Describe it").fill(DESCRIPTION)
    page.get_by_label("Address or place").fill("48 Harbor Street")
    page.get_by_label("Photos").set_input_files(str(fake))
    page.get_by_role("button", name="Send report").click()
    page.locator(".form-errors").wait_for()

    expect(page.get_by_label("Photos")).to_have_accessible_description(
        re.compile(r"Up to 5 photos.*photo\.jpg is not a photo we can read"), timeout=2000
    )
    expect(page.get_by_label("Photos")).to_have_attribute("aria-invalid", "true")
    problems.assert_none()
