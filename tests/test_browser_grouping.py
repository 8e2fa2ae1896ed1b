"""A resident reporting a pothole next to one already reported, in headless Chromium."""

import re

import pytest

from requests_app.grouping import METRES_PER_DEGREE_LAT
from requests_app.models import Follower, HistoryEntry, ServiceRequest
from requests_app.photos import process_photo
from requests_app.services import Intake, photo_attach, request_submit

from .conftest import ARTIFACTS, upload
from .factories import CITY_CENTER
from .photos import make_image

pytestmark = [
    pytest.mark.usefixtures("own_broker"),
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
]

PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}


def north(metres):
    return CITY_CENTER[0] + metres / METRES_PER_DEGREE_LAT, CITY_CENTER[1]


@pytest.fixture
def open_pothole(pothole):
    request = request_submit(
        Intake(
            category=pothole,
            description="Pothole by the bus stop, deep enough to hurt a bike",
            lat=CITY_CENTER[0],
            lng=CITY_CENTER[1],
            address="12 Main St",
            reporter_email="first@example.org",
        )
    )
    photo_attach(request, process_photo(upload(data=make_image(size=(640, 480)))))
    return request


@pytest.fixture
def page(chromium):
    context = chromium.new_context(**PHONE)
    page = context.new_page()
    page.add_init_script(
        "window.addEventListener('map:init', e => { window.reportMap = e.detail.map; });"
    )
    # Map tiles cannot load here (no network); fail them at once.
    page.route(re.compile(r"^https?://([a-z]\.)?tile\.openstreetmap\.org/"), lambda r: r.abort())
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    yield page
    context.close()


def _shot(page, name):
    page.screenshot(path=ARTIFACTS / f"grouping-{name}.png", full_page=True)


def _tap_map_at(page, lat, lng):
    """Zoom in on the spot as a resident would, then tap it."""
    page.wait_for_function("() => window.reportMap !== undefined")
    point = page.evaluate(
        """([lat, lng]) => {
            window.reportMap.setView([lat, lng], 18, {animate: false});
            const p = window.reportMap.latLngToContainerPoint([lat, lng]);
            return {x: p.x, y: p.y};
        }""",
        [lat, lng],
    )
    page.locator("#report-map").scroll_into_view_if_needed()
    box = page.locator("#report-map").bounding_box()
    page.mouse.click(box["x"] + point["x"], box["y"] + point["y"])


def _start_report(page, base, metres):
    page.goto(f"{base}/report/")
    page.get_by_label("What is the problem?").select_option(label="Pothole")
    _tap_map_at(page, *north(metres))
    lat = float(page.locator("#id_lat").input_value())
    assert lat == pytest.approx(north(metres)[0], abs=2e-5)  # within about 2 m


def test_report_next_to_an_open_pothole_offers_to_follow_it(live_server, page, open_pothole):
    _start_report(page, live_server.url, 30)

    item = page.get_by_test_id("nearby-item")
    item.first.wait_for()
    assert item.count() == 1
    assert open_pothole.tracking_number in item.inner_text()
    assert "30 m away" in item.inner_text()
    thumbnail = item.locator("img")
    thumbnail.scroll_into_view_if_needed()
    page.wait_for_function(
        "img => img.complete && img.naturalWidth > 0", arg=thumbnail.element_handle()
    )
    # Following needs the email, so the field now sits next to the list.
    email = page.locator("#nearby #id_email")
    assert email.is_visible()

    follow = item.get_by_role("button", name="This is my problem — follow it")
    follow.click()  # no email yet: the browser asks for it instead of sending
    assert page.get_by_role("alert").filter(has_text="we need your email").is_visible()
    assert page.url == f"{live_server.url}/report/"
    email.fill("Neighbour@Example.org")
    _shot(page, "1-nearby-offered")
    follow.click()

    page.wait_for_url(f"{live_server.url}/requests/{open_pothole.tracking_number}/")
    assert page.get_by_text(f"You are now following {open_pothole.tracking_number}").is_visible()
    _shot(page, "2-following")
    assert ServiceRequest.objects.count() == 1
    follower = Follower.objects.get(request=open_pothole, source=Follower.Source.FOLLOW)
    assert follower.email == "neighbour@example.org"
    assert open_pothole.history.filter(action=HistoryEntry.Action.FOLLOW).count() == 1
    assert not page.errors, page.errors


def test_report_400_m_away_is_filed_normally(live_server, page, open_pothole):
    _start_report(page, live_server.url, 400)
    # The lookup has answered (nothing nearby) once the form knows it has been asked.
    page.wait_for_function("() => document.getElementById('id_file_anyway').value === '1'")
    assert page.locator("#nearby").is_hidden()
    page.get_by_label("Describe it").fill("Another pothole, by the school")
    page.get_by_label("Your email").fill("parent@example.org")
    _shot(page, "3-far-away")
    page.get_by_role("button", name="Send report").click()

    page.wait_for_url(re.compile(r"/report/done/CD-"))
    _shot(page, "4-filed")
    assert ServiceRequest.objects.count() == 2
    assert not Follower.objects.filter(source=Follower.Source.FOLLOW).exists()
    assert not page.errors, page.errors


def test_without_javascript_nearby_requests_are_a_second_step(
    live_server, chromium, open_pothole, tmp_path
):
    # No script, no map: the photo's GPS places the report, 30 m from the open pothole.
    photo = tmp_path / "pothole.jpg"
    photo.write_bytes(make_image(size=(800, 600), gps=north(30)))
    context = chromium.new_context(java_script_enabled=False, **PHONE)
    page = context.new_page()
    page.goto(f"{live_server.url}/report/")
    page.get_by_label("What is the problem?").select_option(label="Pothole")
    page.get_by_label("Describe it").fill("Pothole by the bus stop")
    page.get_by_label("Photos").set_input_files(str(photo))
    page.get_by_label("Your email").fill("walker@example.org")
    page.get_by_role("button", name="Send report").click()

    page.wait_for_load_state()
    assert page.get_by_text("the same problem may already be reported close by").is_visible()
    assert open_pothole.tracking_number in page.get_by_test_id("nearby-item").inner_text()
    assert page.get_by_text("Your photos were not kept at this step").is_visible()
    assert page.get_by_label("Describe it").input_value() == "Pothole by the bus stop"
    assert page.get_by_label("Your email").input_value() == "walker@example.org"
    _shot(page, "5-second-step-without-js")
    assert ServiceRequest.objects.count() == 1

    page.get_by_label("Photos").set_input_files(str(photo))
    page.get_by_role("button", name="File my report anyway").click()
    page.wait_for_url(re.compile(r"/report/done/CD-"))
    filed = ServiceRequest.objects.exclude(pk=open_pothole.pk).get()
    assert filed.description == "Pothole by the bus stop" and filed.photos.count() == 1
    context.close()
