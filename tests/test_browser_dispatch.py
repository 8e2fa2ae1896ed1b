"""Dispatch to completion in a real browser: admin, the crew's phone, the public page."""

import re

import pytest

from requests_app.models import Crew, StaffRole, WorkOrder
from requests_app.services import Intake, request_process_intake, request_submit

from .conftest import ARTIFACTS
from .factories import CITY_CENTER, staff_user
from .photos import make_image

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
PASSWORD = "a-long-test-password"


def _login(page, base, username):
    page.goto(f"{base}/admin/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")


def _user(username, role, department=None):
    user = staff_user(username, role, department)
    user.set_password(PASSWORD)
    user.save()
    return user


def test_dispatcher_assigns_crew_completes_on_phone_public_sees_after_photo(
    live_server, chromium, pothole, tmp_path
):
    crew = Crew.objects.create(name="Crew 1", department=pothole.department)
    crew.members.add(_user("casey", StaffRole.CREW, pothole.department))
    _user("dana", StaffRole.DISPATCHER)
    request = request_submit(
        Intake(
            category=pothole,
            description="Deep pothole by the library",
            lat=CITY_CENTER[0],
            lng=CITY_CENTER[1],
            address="12 Main St",
        )
    )
    request_process_intake(request.pk)
    errors = []

    office = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = office.new_page()
    page.on("pageerror", lambda error: errors.append(str(error)))
    _login(page, live_server.url, "dana")
    page.goto(f"{live_server.url}/admin/requests_app/servicerequest/")
    page.get_by_role("link", name=request.tracking_number).click()
    page.select_option("#id_assign_crew", label=str(crew))
    page.select_option("#id_work_order_action", value="new")
    page.screenshot(path=ARTIFACTS / "dispatch-1-request.png", full_page=True)
    page.click("input[name=_continue]")
    page.wait_for_load_state()
    page.screenshot(path=ARTIFACTS / "dispatch-2-assigned.png", full_page=True)
    order = WorkOrder.objects.get()
    assert order.crew == crew and list(order.requests.all()) == [request]
    office.close()

    phone = chromium.new_context(viewport={"width": 360, "height": 780}, is_mobile=True)
    page = phone.new_page()
    page.on("pageerror", lambda error: errors.append(str(error)))
    _login(page, live_server.url, "casey")
    page.goto(f"{live_server.url}/crew/")
    page.screenshot(path=ARTIFACTS / "crew-1-my-work.png", full_page=True)
    page.get_by_role("link", name=re.compile(str(order))).click()
    page.get_by_role("button", name="Start work").click()
    assert page.get_by_test_id("work-order-status").inner_text() == "In progress"

    photo = tmp_path / "after.jpg"
    photo.write_bytes(make_image(size=(1200, 900), color=(60, 160, 60)))
    page.select_option("#id_kind", value="after")
    page.set_input_files("#id_photo", str(photo))
    page.get_by_role("button", name="Upload photo").click()
    page.fill("#id_resolution_note", "Cut out and patched with hot asphalt")
    page.fill("#id_labour_hours", "1.5")
    page.screenshot(path=ARTIFACTS / "crew-2-ready-to-complete.png", full_page=True)
    page.get_by_role("button", name="Complete work order").click()
    assert page.get_by_test_id("work-order-status").inner_text() == "Completed"
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 360, f"the crew page scrolls sideways at 360 px ({width}px)"
    phone.close()

    resident = chromium.new_context(viewport={"width": 390, "height": 844})
    page = resident.new_page()
    page.goto(f"{live_server.url}/requests/{request.tracking_number}/")
    page.screenshot(path=ARTIFACTS / "dispatch-3-public-completed.png", full_page=True)
    assert page.get_by_test_id("status").inner_text() == "Completed"
    after = order.photos.get(kind="after")
    image = page.locator(f"img[src='{after.get_thumbnail_url()}']")
    assert image.count() == 1
    assert page.evaluate("(img) => img.naturalWidth", image.element_handle()) > 0
    resident.close()
    assert not errors, errors
