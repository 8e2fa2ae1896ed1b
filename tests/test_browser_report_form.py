"""The report form on a phone, in headless Chromium: a category's own questions with and
without JavaScript, and a place outside the area served refused as soon as it is chosen."""

import json
import re

import pytest
from django.conf import settings
from playwright.sync_api import expect

from requests_app import service_area
from requests_app.models import AttributeAnswer, ServiceAttribute, ServiceRequest

from .conftest import ARTIFACTS
from .factories import CITY_CENTER, CategoryFactory
from .test_browser import PHONE, Problems

pytestmark = [
    pytest.mark.usefixtures("own_broker"),
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
]

Datatype = ServiceAttribute.Datatype
NEW_YORK = {"latitude": 40.70, "longitude": -74.00}  # far outside the default service area


@pytest.fixture
def questions(pothole):
    ServiceAttribute.objects.create(
        category=pothole,
        code="size",
        description="How big is it?",
        datatype=Datatype.SINGLE,
        required=True,
        order=1,
        values=[
            {"key": "small", "name": "Smaller than a dinner plate"},
            {"key": "large", "name": "Wider than a car tyre"},
        ],
    )
    ServiceAttribute.objects.create(
        category=pothole,
        code="depth",
        description="About how deep, in cm?",
        datatype=Datatype.NUMBER,
        order=2,
    )
    dumping = CategoryFactory(
        code="illegal-dumping", name="Illegal dumping", group="Trash and recycling"
    )
    ServiceAttribute.objects.create(
        category=dumping,
        code="items",
        description="What was left there?",
        datatype_description="Choose all that apply",
        datatype=Datatype.MULTI,
        order=1,
        values=[
            {"key": "mattress", "name": "Mattress or furniture"},
            {"key": "tyres", "name": "Tyres"},
            {"key": "bags", "name": "Bags of trash"},
        ],
    )
    return pothole, dumping


@pytest.fixture
def phone(chromium):
    def open_page(**options):
        context = chromium.new_context(**PHONE, **options)
        contexts.append(context)
        page = context.new_page()
        page.add_init_script(
            "window.portalMaps = {};"
            "window.addEventListener('map:init', e => {"
            " window.portalMaps[e.detail.id] = e.detail.map; });"
        )
        return page, Problems(page)

    contexts = []
    yield open_page
    for context in contexts:
        context.close()


def _shot(page, name):
    page.screenshot(path=ARTIFACTS / f"report-form-{name}.png", full_page=True)


def _answers():
    return dict(AttributeAnswer.objects.values_list("attribute__code", "value"))


# --- A category's own questions ------------------------------------------------------------


def test_the_chosen_categorys_questions_appear_below_it_and_are_stored(
    live_server, phone, questions
):
    page, problems = phone()
    page.goto(f"{live_server.url}/report/")
    pothole_questions = page.get_by_role("group", name="More about “Pothole”")
    dumping_questions = page.get_by_role("group", name="More about “Illegal dumping”")
    expect(pothole_questions).to_be_hidden()
    expect(dumping_questions).to_be_hidden()

    category = page.get_by_label("What is the problem?")
    category.select_option(label="Pothole")
    expect(pothole_questions).to_be_visible()
    expect(dumping_questions).to_be_hidden()
    # With JavaScript only the chosen category's questions show: no "only if" hint.
    expect(pothole_questions.get_by_text("Only if the problem is")).to_be_hidden()
    size = page.get_by_role("group", name="How big is it?")
    size.get_by_label("Wider than a car tyre").check()
    page.get_by_label("About how deep, in cm?").fill("15")

    # Another category, then back: what was typed under the first is still there.
    category.select_option(label="Illegal dumping")
    expect(pothole_questions).to_be_hidden()
    expect(dumping_questions).to_be_visible()
    _shot(page, "1-questions-dumping")
    category.select_option(label="Pothole")
    expect(size.get_by_label("Wider than a car tyre")).to_be_checked()
    expect(page.get_by_label("About how deep, in cm?")).to_have_value("15")

    page.get_by_label("Describe it").fill("Deep pothole in the bike lane")
    page.get_by_label("Address or place").fill("48 Harbor Street")
    _shot(page, "2-questions-pothole")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["viewport"]["width"]
    page.get_by_role("button", name="Send report").click()
    page.wait_for_url(re.compile(r"/report/done/CD-"))
    assert _answers() == {"size": "large", "depth": "15"}
    problems.assert_none()


def test_the_questions_can_be_answered_with_the_keyboard(live_server, phone, questions):
    page, problems = phone()
    page.goto(f"{live_server.url}/report/")
    category = page.get_by_label("What is the problem?")
    category.select_option(label="Illegal dumping")
    category.focus()

    # Next after the category: the first choice of its question.
    page.keyboard.press("Tab")
    focused = page.evaluate("() => document.activeElement.labels[0].textContent.trim()")
    assert focused == "Mattress or furniture"
    page.keyboard.press("Space")
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    page.keyboard.press("Space")
    items = page.get_by_role("group", name="What was left there?")
    expect(items.get_by_label("Mattress or furniture")).to_be_checked()
    expect(items.get_by_label("Bags of trash")).to_be_checked()
    expect(items).to_have_accessible_description("Choose all that apply")
    problems.assert_none()


def test_without_javascript_every_categorys_questions_are_shown_and_answers_kept(
    live_server, phone, questions
):
    page, problems = phone(java_script_enabled=False)
    problems.expected_statuses.add(400)
    page.goto(f"{live_server.url}/report/")

    pothole_questions = page.get_by_role("group", name="More about “Pothole”")
    dumping_questions = page.get_by_role("group", name="More about “Illegal dumping”")
    expect(pothole_questions).to_be_visible()
    expect(dumping_questions).to_be_visible()
    expect(pothole_questions.get_by_text("Only if the problem is “Pothole”")).to_be_visible()
    _shot(page, "3-no-js-all-questions")

    # The required size is forgotten: the form comes back with the reason and every answer.
    page.get_by_label("What is the problem?").select_option(label="Pothole")
    page.get_by_label("Describe it").fill("Deep pothole in the bike lane")
    page.get_by_label("Address or place").fill("48 Harbor Street")
    page.get_by_label("About how deep, in cm?").fill("15")
    page.get_by_role("button", name="Send report").click()
    page.wait_for_load_state()
    size = page.get_by_role("group", name="How big is it?")
    expect(size).to_contain_text("Please answer this question.")
    expect(page.get_by_label("About how deep, in cm?")).to_have_value("15")
    expect(page.get_by_label("Describe it")).to_have_value("Deep pothole in the bike lane")
    _shot(page, "4-no-js-required-question")

    size.get_by_label("Smaller than a dinner plate").check()
    page.get_by_role("button", name="Send report").click()
    page.wait_for_url(re.compile(r"/report/done/CD-"))
    assert _answers() == {"size": "small", "depth": "15"}
    assert ServiceRequest.objects.get().category.code == "pothole"
    problems.assert_none()


# --- A place outside the area served -------------------------------------------------------


def _status(page):
    return page.locator("#location-status")


def _markers(page):
    return page.locator("#report-map .leaflet-marker-icon")


def _tap_map_at(page, lat, lng):
    page.locator("#report-map").scroll_into_view_if_needed()
    x, y = page.evaluate(
        """([lat, lng]) => {
            const p = window.portalMaps["report-map"].latLngToContainerPoint([lat, lng]);
            return [p.x, p.y];
        }""",
        [lat, lng],
    )
    box = page.locator("#report-map").bounding_box()
    page.mouse.click(box["x"] + x, box["y"] + y)


def test_my_location_outside_the_city_is_refused_at_once_without_a_pin(live_server, phone, pothole):
    page, problems = phone(geolocation=NEW_YORK, permissions=["geolocation"])
    page.goto(f"{live_server.url}/report/")
    page.wait_for_function("() => window.portalMaps['report-map']")
    view_before = page.evaluate("() => window.portalMaps['report-map'].getCenter()")

    page.get_by_role("button", name="Use my location").click()
    expect(_status(page)).to_have_text(
        f"You seem to be outside the area {settings.CITY_NAME} serves. Tap the map where the "
        "problem is, or type an address."
    )
    expect(_status(page)).to_have_attribute("aria-live", "polite")
    assert _markers(page).count() == 0
    assert page.locator("#id_lat").input_value() == ""
    assert page.locator("#id_lng").input_value() == ""
    # The map still shows the city, not the place the resident is.
    assert page.evaluate("() => window.portalMaps['report-map'].getCenter()") == view_before
    _shot(page, "5-located-outside")

    # A pin placed in the city stays where it is when the device is still elsewhere.
    page.evaluate(
        "([lat, lng]) => window.portalMaps['report-map'].setView([lat, lng], 16, {animate: false})",
        list(CITY_CENTER),
    )
    _tap_map_at(page, *CITY_CENTER)
    expect(_status(page)).to_contain_text("Pin placed at")
    pinned = (page.locator("#id_lat").input_value(), page.locator("#id_lng").input_value())
    page.get_by_role("button", name="Use my location").click()
    expect(_status(page)).to_contain_text("The pin stays where it was.")
    assert _markers(page).count() == 1
    assert (page.locator("#id_lat").input_value(), page.locator("#id_lng").input_value()) == pinned
    problems.assert_none()


def test_a_tap_outside_the_area_is_refused_at_once(live_server, phone, pothole):
    page, problems = phone()
    page.goto(f"{live_server.url}/report/")
    page.wait_for_function("() => window.portalMaps['report-map']")
    min_lng, min_lat, max_lng, max_lat = service_area.bounds()
    # Just west of the area, with the area's edge in view.
    outside = ((min_lat + max_lat) / 2, min_lng - 0.01)
    page.evaluate(
        "([lat, lng]) => window.portalMaps['report-map'].setView([lat, lng], 12, {animate: false})",
        [outside[0], min_lng],
    )

    _tap_map_at(page, *outside)

    expect(_status(page)).to_have_text(
        f"That place is outside the area {settings.CITY_NAME} serves. Please choose a "
        "location inside the city."
    )
    expect(_status(page)).to_have_class(re.compile(r"\blocation-status-error\b"))
    assert _markers(page).count() == 0
    assert page.locator("#id_lat").input_value() == ""
    _shot(page, "6-tap-outside")
    problems.assert_none()


def test_a_tap_outside_a_configured_polygon_is_refused_though_inside_its_box(
    live_server, phone, pothole, settings, tmp_path
):
    # A triangle: its bounding box's south-east corner is not part of the area.
    lat0, lng0 = CITY_CENTER
    triangle = [
        [lng0 - 0.05, lat0 - 0.05],
        [lng0 + 0.05, lat0 - 0.05],
        [lng0 - 0.05, lat0 + 0.05],
        [lng0 - 0.05, lat0 - 0.05],
    ]
    area = tmp_path / "area.geojson"
    area.write_text(json.dumps({"type": "Polygon", "coordinates": [triangle]}))
    settings.SERVICE_AREA_GEOJSON = str(area)
    service_area.clear_cache()
    try:
        page, problems = phone()
        page.goto(f"{live_server.url}/report/")
        page.wait_for_function("() => window.portalMaps['report-map']")
        page.evaluate(
            "([lat, lng]) => window.portalMaps['report-map'].setView([lat, lng], 12, "
            "{animate: false})",
            list(CITY_CENTER),
        )
        corner = (lat0 + 0.02, lng0 + 0.02)  # inside the box, outside the triangle
        assert not service_area.contains(*corner)
        _tap_map_at(page, *corner)
        expect(_status(page)).to_contain_text("That place is outside the area")
        assert _markers(page).count() == 0

        inside = (lat0 - 0.02, lng0 - 0.02)
        assert service_area.contains(*inside)
        _tap_map_at(page, *inside)
        expect(_status(page)).to_contain_text("Pin placed at")
        assert _markers(page).count() == 1
        problems.assert_none()
    finally:
        service_area.clear_cache()


# --- axe-core ------------------------------------------------------------------------------


@pytest.mark.parametrize("javascript", [True, False], ids=["javascript", "no-javascript"])
def test_the_questions_pass_axe(live_server, phone, questions, javascript):
    from .test_a11y import AXE, axe

    if not AXE.exists():
        pytest.skip(f"no axe-core at {AXE} (see tests/test_a11y.py)")
    page, problems = phone(bypass_csp=True)
    problems.expected_statuses.add(400)
    if not javascript:
        # axe itself is a script: the page's own scripts are what stay out, so the page is
        # as the server sends it, every category's questions shown.
        page.route(re.compile(r"/static/.*\.js$"), lambda route: route.abort())
    page.goto(f"{live_server.url}/report/")
    page.get_by_label("What is the problem?").select_option(label="Pothole")
    found = axe(page, "questions shown")
    # Sent without the required answer: the questions with their errors.
    page.get_by_role("button", name="Send report").click()
    page.get_by_text("Please answer this question.").wait_for()
    found += axe(page, "questions with errors")
    assert not found, "\n".join(found)
    if javascript:
        problems.assert_none()
    else:
        # (The map's inline set-up fails without Leaflet; nothing else ran.)
        assert page.get_by_role("group", name="More about “Illegal dumping”").is_visible()
