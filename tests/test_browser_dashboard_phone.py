"""The director's dashboard and the public transparency page on a phone, in Spanish: nothing
wider than the screen, charts the browser can draw, and a map caption in the reader's
language and the city's time zone."""

import json
import re

import pytest
from django.conf import settings
from django.core.management import call_command

from requests_app.management.commands.seed_demo import DEMO_PASSWORD

from .conftest import ARTIFACTS
from .test_csp import OFFLINE_TILES

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
# Far from the city's America/New_York, so that a time shown in the browser's zone differs.
BROWSER_TIME_ZONE = "Asia/Tokyo"


def _page_width(page):
    return page.evaluate("() => document.documentElement.scrollWidth")


@pytest.fixture
def phone(chromium, live_server):
    context = chromium.new_context(**PHONE, timezone_id=BROWSER_TIME_ZONE, locale="es-ES")
    context.add_cookies(
        [{"name": settings.LANGUAGE_COOKIE_NAME, "value": "es", "url": live_server.url}]
    )
    context.route(OFFLINE_TILES, lambda route: route.abort())
    page = context.new_page()
    page.problems = []
    page.on("pageerror", lambda error: page.problems.append(str(error)))
    page.on(
        "console",
        lambda message: (
            message.type == "error"
            and "Failed to load resource" not in message.text  # the map tiles, kept offline
            and page.problems.append(message.text)
        ),
    )
    yield page
    context.close()


def test_public_transparency_page_fits_a_phone(live_server, phone):
    call_command("seed_demo", requests=200, verbosity=0)
    phone.goto(f"{live_server.url}/transparency/?days=365")
    phone.screenshot(path=ARTIFACTS / "transparency-phone-es.png", full_page=True)
    assert _page_width(phone) <= 390
    # The widest column is still there, reachable by scrolling the table alone.
    last_header = phone.get_by_test_id("transparency-category").locator("th").last
    assert last_header.inner_text() == "Mediana de horas hasta la resolución"
    assert not phone.problems, phone.problems


def test_dashboard_fits_a_phone_and_speaks_spanish(live_server, phone):
    call_command("seed_demo", requests=200, verbosity=0)
    phone.goto(f"{live_server.url}/dashboard/")
    phone.fill("#id_username", "director")
    phone.fill("#id_password", DEMO_PASSWORD)
    phone.click("input[type=submit]")
    phone.wait_for_url("**/dashboard/")
    phone.wait_for_function(
        "() => document.getElementById('map-status').dataset.total !== undefined"
    )
    phone.screenshot(path=ARTIFACTS / "dashboard-phone-es.png", full_page=True)

    assert _page_width(phone) <= 390
    # Every bar and week label has a position the browser understood: a localized "53,8"
    # is dropped with a console error, the bar drawn with no width and the label centred
    # on the chart's left edge, half cut off.
    bars = phone.locator("svg.chart rect.bar")
    assert bars.count() > 0
    assert all(width > 0 for width in bars.evaluate_all("bars => bars.map(b => b.getBBox().width)"))
    labels = phone.locator("svg.chart text[text-anchor=middle]").evaluate_all(
        "labels => labels.map(l => { const box = l.getBBox(); return [box.x, box.x + box.width]; })"
    )
    assert labels and all(0 <= left and right <= 640 for left, right in labels), labels

    # The caption under the map: in the server's words for the reader's language (its
    # Spanish arrives with the translations), numbers and time as the page writes them.
    text = json.loads(phone.locator("#dashboard-map-settings").text_content())["text"]
    status = phone.get_by_test_id("map-status")
    cells, total = int(status.get_attribute("data-cells")), int(status.get_attribute("data-total"))
    header_time = re.search(r"\d\d:\d\d:\d\d", phone.get_by_test_id("as-of").inner_text())[0]
    expected = " · ".join(
        [
            _plural(text["cells"], cells),
            _plural(text["requests"], total),
            # The same clock as the header: the city's, not the browser's.
            text["asOf"] % {"time": header_time},
        ]
    )
    assert status.inner_text() == expected
    assert not phone.problems, phone.problems


def _plural(forms, n):
    return (forms["one"] if n == 1 else forms["other"]) % {"count": n}
