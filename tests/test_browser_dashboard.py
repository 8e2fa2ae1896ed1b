"""A director looks at the dashboard in a real browser, narrows it, and sees it change."""

import pytest
from django.core.management import call_command
from django.urls import include, path

from civicdesk.urls import urlpatterns as project_urls
from requests_app.dashboard_urls import transparency_urls
from requests_app.management.commands.seed_demo import DEMO_PASSWORD
from requests_app.models import Department

from .conftest import ARTIFACTS

# Until civicdesk/urls.py mounts them, this test mounts the dashboard itself.
urlpatterns = [
    path("dashboard/", include("requests_app.dashboard_urls")),
    path("transparency/", include(transparency_urls)),
    *project_urls,
]
pytestmark = [
    pytest.mark.browser,
    pytest.mark.urls(__name__),
    pytest.mark.django_db(transaction=True),
]


def _map_total(page):
    page.wait_for_load_state("networkidle")
    page.wait_for_function(
        "() => document.getElementById('map-status').dataset.total !== undefined"
    )
    return int(page.get_by_test_id("map-status").get_attribute("data-total"))


def test_director_filters_the_dashboard_and_the_map_follows(live_server, chromium):
    call_command("seed_demo", requests=200, verbosity=0)
    errors = []
    context = chromium.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{live_server.url}/dashboard/")
    page.fill("#id_username", "director")
    page.fill("#id_password", DEMO_PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url("**/dashboard/")

    received_all = int(page.get_by_test_id("kpi-received-value").inner_text().replace(",", ""))
    cells_all = _map_total(page)
    assert received_all > 0 and cells_all == received_all
    page.screenshot(path=ARTIFACTS / "dashboard-1-all.png", full_page=True)

    streets = Department.objects.get(slug="streets")
    page.select_option("#id_department", value=str(streets.pk))
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url("**department=*")
    received_streets = int(page.get_by_test_id("kpi-received-value").inner_text())
    total_streets = _map_total(page)
    assert 0 < received_streets < received_all
    assert total_streets == received_streets

    page.select_option("#map-metric", value="overdue")
    page.wait_for_function(
        "() => !document.getElementById('map-status').textContent.startsWith('Loading')"
    )
    cell = page.locator("path.leaflet-interactive").first
    cell.click(force=True)
    popup = page.locator(".cell-popup")
    popup.get_by_role("link", name="Open these requests in the admin").wait_for()
    assert "request" in popup.inner_text()
    page.screenshot(path=ARTIFACTS / "dashboard-2-streets-overdue.png", full_page=True)

    page.goto(f"{live_server.url}/transparency/?days=90")
    page.screenshot(path=ARTIFACTS / "transparency.png", full_page=True)
    context.close()
    assert not errors, errors
