"""The dashboard in Spanish: numbers a browser reads (SVG coordinates, map settings) stay
plain numbers, and what a person reads (week labels, the map's words) follows the language.

Uses test_dashboard.py's hand-built city (March 2024, around 42.30, -71.10).
"""

import json
import re
from datetime import date

import pytest
from django.urls import reverse
from django.utils import translation
from django.utils.formats import date_format
from django.utils.translation import pgettext

from .factories import ServiceRequestFactory
from .test_dashboard import at, city, director  # noqa: F401  (fixtures)

pytestmark = pytest.mark.django_db

MARCH = {"start": "2024-03-01", "end": "2024-03-10"}
SVG_NUMBERS = re.compile(r'\s(x|y|x1|x2|y1|y2|cx|cy|r|width|height)="([^"]*)"')


def _dashboard(client, language, **query):
    return client.get(
        reverse("dashboard:home"), query or MARCH, HTTP_ACCEPT_LANGUAGE=language
    ).content.decode()


def _svgs(body):
    return re.findall(r"<svg class=\"chart\".*?</svg>", body, re.S)


def _week_labels(body):
    return [
        label
        for svg in _svgs(body)
        for label in re.findall(r'<text [^>]*text-anchor="middle">([^<]*)</text>', svg)
    ]


def test_chart_coordinates_are_plain_numbers_in_spanish(city, director, client):  # noqa: F811
    client.force_login(director)
    svgs = _svgs(_dashboard(client, "es"))
    assert len(svgs) == 2 and "<rect" in svgs[0] and "<circle" in svgs[1]
    coordinates = [value for svg in svgs for _name, value in SVG_NUMBERS.findall(svg)]
    coordinates += [n for svg in svgs for n in re.search(r'viewBox="([^"]*)"', svg)[1].split()]
    coordinates += [
        n
        for svg in svgs
        for points in re.findall(r'points="([^"]*)"', svg)
        for point in points.split()
        for n in point.split(",")
    ]
    assert any("." in value for value in coordinates)  # the bars' fractions are there
    for value in coordinates:
        assert re.fullmatch(r"-?\d+(\.\d+)?", value), value


def test_hotspot_places_keep_their_decimal_point_in_spanish(city, director, client):  # noqa: F811
    for _ in range(2):
        ServiceRequestFactory(
            category=city["pothole"], created_at=at(3, 8), lat=42.30012, lng=-71.10008
        )
    client.force_login(director)
    # "42,300, -71,100" would be four numbers, not two.
    assert "<td>42.300, -71.100</td>" in _dashboard(client, "es")


def test_week_labels_follow_the_language(city, director, client):  # noqa: F811
    client.force_login(director)
    query = {"start": "2024-01-01", "end": "2024-03-10"}

    assert _week_labels(_dashboard(client, "en", **query))[:2] == ["Jan 1", "Jan 8"]
    spanish = _week_labels(_dashboard(client, "es", **query))
    with translation.override("es"):
        expected = date_format(date(2024, 1, 1), pgettext("week on a chart", "M j"))
    assert spanish[0] == expected
    assert "ene" in spanish[0].lower() and not any("Jan" in label for label in spanish)


def _map_settings(body):
    script = body.split('id="dashboard-map-settings" type="application/json">')[1]
    return json.loads(script.split("</script>")[0])


def test_map_script_gets_its_words_the_city_clock_and_the_language(
    city,  # noqa: F811
    director,  # noqa: F811
    client,
    settings,
):
    settings.TIME_ZONE = "America/Chicago"
    client.force_login(director)

    english = _map_settings(_dashboard(client, "en"))
    spanish = _map_settings(_dashboard(client, "es"))

    assert english["time_zone"] == spanish["time_zone"] == "America/Chicago"
    assert (english["language"], spanish["language"]) == ("en", "es")
    assert english["text"]["cells"] == {"one": "%(count)s cell", "other": "%(count)s cells"}
    assert english["text"]["asOf"] == "as of %(time)s"
    assert english["text"]["openInAdmin"] == "Open these requests in the admin"
    # Spanish has the same words to fill in, in its own translation once the catalogue has it.
    assert spanish["text"].keys() == english["text"].keys()
    with translation.override("es"):
        assert spanish["text"]["loading"] == translation.gettext("Loading…")


def test_breakdowns_kept_between_refreshes_keep_each_readers_language(
    city,  # noqa: F811
    director,  # noqa: F811
    client,
):
    from requests_app.models import ServiceCategory
    from requests_app.rollups import rollups_refresh

    ServiceCategory.objects.filter(code="pothole").update(name_es="Bache")
    rollups_refresh(rebuild=True)  # the figures now come from the rollups, kept per refresh
    client.force_login(director)
    assert ">Bache<" in _dashboard(client, "es")
    english = _dashboard(client, "en")
    assert ">Pothole<" in english and "Bache" not in english


def test_transparency_names_categories_in_the_readers_language_and_open_data_in_english(
    city,  # noqa: F811
    client,
    settings,
):
    from requests_app.models import ServiceCategory

    settings.TRANSPARENCY_MIN_CELL = 1
    ServiceCategory.objects.filter(code="pothole").update(name_es="Bache")
    ServiceRequestFactory(category=city["pothole"])  # today: inside the last 365 days
    query = {"days": "365"}
    spanish = client.get(reverse("transparency:page"), query, HTTP_ACCEPT_LANGUAGE="es")
    assert "<td>Bache</td>" in spanish.content.decode()
    english = client.get(reverse("transparency:page"), query, HTTP_ACCEPT_LANGUAGE="en")
    assert "<td>Pothole</td>" in english.content.decode()
    data = client.get(reverse("transparency:csv"), query, HTTP_ACCEPT_LANGUAGE="es")
    assert "category,Pothole," in data.content.decode() and "Bache" not in data.content.decode()


def test_kpis_are_written_as_the_reader_writes_numbers(city, director, client):  # noqa: F811
    client.force_login(director)
    kpi = re.compile(r'data-testid="kpi-([a-z_]+)-value">([^<]*)<')
    english = dict(kpi.findall(_dashboard(client, "en")))
    spanish = dict(kpi.findall(_dashboard(client, "es")))
    decimals = [key for key, value in english.items() if re.search(r"\d\.\d", value)]
    assert decimals, english  # some KPI has a decimal part to compare
    for key in decimals:
        assert spanish[key] == english[key].replace(".", ","), (key, spanish[key])
