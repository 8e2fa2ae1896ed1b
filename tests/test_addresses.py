"""The address gazetteer: import, search as you type, the address at a pin, and intake
geocoding (the gazetteer, then an outside geocoder only when configured)."""

import io
import json
import math
import sys

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.urls import reverse

from requests_app.models import ApiClient, Channel, HistoryEntry, ServiceRequest
from requests_app.open311 import api_client_issue_key
from requests_app.services import Intake, request_process_intake, request_submit
from routing import geocoding
from routing.gazetteer import (
    address_build,
    addresses_save,
    demo_addresses_seed,
    generate_demo_addresses,
    normalize,
    streets_rebuild,
)
from routing.geocoding import (
    address_geocode,
    address_nearest,
    address_search,
    geocoder_lookup,
)
from routing.models import METRES_PER_DEGREE, Address, Street

from .factories import CITY_CENTER

postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="trigram similarity needs PostgreSQL (pg_trgm)"
)
GEOCODER_URL = "https://geocoder.example/search"


def at(east_m=0.0, north_m=0.0):
    """A point this many metres from the city centre."""
    lat = CITY_CENTER[0] + north_m / METRES_PER_DEGREE
    lng = CITY_CENTER[1] + east_m / (METRES_PER_DEGREE * math.cos(math.radians(CITY_CENTER[0])))
    return round(lat, 7), round(lng, 7)


def load(*rows, source="city"):
    """rows: (address, (lat, lng), address_id, zipcode) with the last two optional."""
    addresses = []
    for address, (lat, lng), *rest in rows:
        address_id, zipcode = (rest + ["", ""])[:2]
        addresses.append(address_build(source, address, lat, lng, address_id, zipcode))
    counts = addresses_save(addresses, source)
    streets_rebuild()
    return counts


@pytest.fixture
def town(db):
    """Elm Street (five houses, 20 m apart, eastwards), Elmwood Road and Old Elm Court."""
    load(
        *[(f"{n} Elm Street", at(east_m=10 * n), f"E-{n}", "02110") for n in (2, 4, 6, 10, 12)],
        ("14 ELM ST", at(east_m=140), "E-14", "02110"),
        ("3 Elmwood Road", at(north_m=300), "W-3", "02110"),
        ("12 Elmwood Road", at(north_m=320), "W-12", "02110"),
        ("4 Old Elm Court", at(north_m=-300), "O-4", "02111"),
        ("1 Washington Street", at(east_m=-400), "WA-1", "02111"),
    )


@pytest.fixture(autouse=True)
def _geocoder_forgets_failures():
    geocoding.geocoder_reset()
    yield
    geocoding.geocoder_reset()


def labels(places):
    return [p.label for p in places]


# --- Import ------------------------------------------------------------------------------------


def write_csv(path, header, *rows):
    path.write_text("\n".join([",".join(header), *(",".join(map(str, r)) for r in rows)]) + "\n")
    return path


def run_import(*args):
    out = io.StringIO()
    call_command("import_addresses", *map(str, args), "--quiet-progress", stdout=out)
    return out.getvalue()


def test_import_reads_the_default_columns_and_builds_streets(db, tmp_path):
    lat, lng = at()
    path = write_csv(
        tmp_path / "addresses.csv",
        ["address", "lat", "lng", "id", "zipcode"],
        ["12 ELM ST", lat, lng, "A-12", "02110"],
        ["14 Elm Street", lat, lng + 0.0002, "A-14", "02110"],
    )
    output = run_import(path)
    assert "2 rows read for source 'city': 2 created, 0 updated, 0 unchanged, 0 skipped" in output
    twelve = Address.objects.get(address_id="A-12")
    assert (twelve.address, twelve.street, twelve.search_text) == (
        "12 Elm St",
        "Elm St",
        "12 elm street",
    )
    assert (twelve.lat, twelve.lng, twelve.zipcode, twelve.source) == (lat, lng, "02110", "city")
    street = Street.objects.get()
    assert (street.search_text, street.zipcode, street.address_count) == ("elm street", "02110", 2)
    assert street.lng == pytest.approx(lng + 0.0001)


def test_running_the_import_again_updates_rows_instead_of_adding_them(db, tmp_path):
    lat, lng = at()
    header = ["address", "lat", "lng", "id"]
    run_import(write_csv(tmp_path / "a.csv", header, ["12 Elm St", lat, lng, "A-12"]))
    output = run_import(
        write_csv(
            tmp_path / "b.csv",
            header,
            ["12 Elm Street", lat + 0.001, lng, "A-12"],
            ["14 Elm Street", lat, lng, "A-14"],
        )
    )
    assert "1 created, 1 updated, 0 unchanged" in output
    assert Address.objects.count() == 2
    moved = Address.objects.get(address_id="A-12")
    assert (moved.address, moved.lat) == ("12 Elm Street", lat + 0.001)
    assert "0 created, 0 updated, 2 unchanged" in run_import(tmp_path / "b.csv")


def test_without_an_id_column_a_rerun_matches_by_the_normalized_text(db, tmp_path):
    lat, lng = at()
    header = ["address", "lat", "lng"]
    run_import(write_csv(tmp_path / "a.csv", header, ["12 ELM ST.", lat, lng]))
    output = run_import(write_csv(tmp_path / "b.csv", header, ["12 Elm Street", lat, lng + 1e-4]))
    assert "0 created, 1 updated" in output
    assert Address.objects.get().lng == lng + 1e-4


def test_import_with_a_mapping_joins_columns_and_ignores_their_case(db, tmp_path):
    lat, lng = at()
    path = write_csv(
        tmp_path / "openaddresses.csv",
        ["lon", "lat", "number", "street", "unit", "postcode", "hash"],
        [lng, lat, "12", "ELM ST", "", "02110", "a1b2"],
        [lng, lat, "12", "ELM ST", "", "02110", "a1b2"],  # a repeated row: one address
    )
    run_import(path, "--mapping", "routing/address_mappings/openaddresses.json")
    (address,) = Address.objects.all()
    assert (address.source, address.address_id, address.address) == (
        "openaddresses",
        "a1b2",
        "12 Elm St",
    )
    # The same file under another source name is another set of addresses.
    run_import(path, "--mapping", "routing/address_mappings/openaddresses.json", "--source", "x")
    assert Address.objects.count() == 2


def test_import_skips_and_counts_rows_it_cannot_use(db, tmp_path):
    lat, lng = at()
    path = write_csv(
        tmp_path / "addresses.csv",
        ["address", "lat", "lng"],
        ["12 Elm St", lat, lng],
        ["", lat, lng],
        ["14 Elm St", "north", lng],
        ["5th Avenue", 40.7128, -74.0060],
    )
    output = run_import(path)
    assert "1 created" in output and "3 skipped" in output
    for reason in ("no address", "no readable position", "outside the service area"):
        assert reason in output


def test_import_refuses_a_file_without_the_mapped_columns(db, tmp_path):
    path = write_csv(tmp_path / "addresses.csv", ["street", "y", "x"], ["Elm St", 42.35, -71.06])
    with pytest.raises(CommandError, match="Columns missing from the file: address, lat, lng"):
        run_import(path)


def test_progress_is_shown_on_stderr_without_tqdm(db, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # as if it were not installed
    lat, lng = at()
    rows = [[f"{n} Elm St", lat, lng + n * 1e-5] for n in range(1, 201)]
    path = write_csv(tmp_path / "a.csv", ["address", "lat", "lng"], *rows)
    call_command("import_addresses", str(path), "--batch", "50", stdout=io.StringIO())
    assert "200/200 rows (100%)" in capsys.readouterr().err
    assert Address.objects.count() == 200


# --- The demo city ------------------------------------------------------------------------------


def test_demo_addresses_lie_in_the_service_area_and_a_rerun_changes_nothing(db):
    from requests_app import service_area

    generated = list(generate_demo_addresses())
    assert len(generated) > 10_000
    assert all(service_area.contains(a.lat, a.lng) for a in generated)
    assert len({a.zipcode for a in generated}) == 6  # one per seed_demo district
    assert {"12 Elm Street", "1 City Hall Square", "48 Harbor Road"} <= {
        a.address for a in generated
    }

    out = io.StringIO()
    call_command("seed_addresses", stdout=out)
    assert f"{len(generated)} created" in out.getvalue()
    call_command("seed_addresses", stdout=out)
    assert f"0 created, 0 updated, {len(generated)} unchanged" in out.getvalue()
    assert labels(address_search("12 elm st"))[0] == "12 Elm Street"


def test_demo_seed_takes_a_smaller_box(db):
    lat, lng = CITY_CENTER
    counts = demo_addresses_seed(bbox=(lng - 0.01, lat - 0.01, lng + 0.01, lat + 0.01))
    assert 0 < counts["created"] == Address.objects.count() < 5000
    assert counts["streets"] == Street.objects.count() > 0


# --- Search as you type -------------------------------------------------------------------------


def test_normalized_text_treats_abbreviations_case_and_accents_alike():
    assert normalize("12 ELM ST.") == normalize("12 Elm Street") == "12 elm street"
    assert normalize("3 N. Main Ave") == "3 north main avenue"
    assert normalize("7 Rue de l’Église") == "7 rue de leglise"
    assert normalize("O'Brien Hwy") == "obrien highway"


def test_street_names_and_prefixes_come_before_words_inside(town):
    found = address_search("elm")
    assert labels(found)[:3] == ["Elm Street", "Elmwood Road", "Old Elm Court"]
    assert [p.kind for p in found[:3]] == ["street", "street", "street"]
    assert labels(found)[3:] == [
        "2 Elm Street",
        "4 Elm Street",
        "6 Elm Street",
        "10 Elm Street",
        "12 Elm Street",
    ]


def test_a_house_number_searches_addresses_from_the_start(town):
    assert labels(address_search("12 elm")) == ["12 Elm Street", "12 Elmwood Road"]
    assert labels(address_search("12 Elm St")) == ["12 Elm Street"]
    assert labels(address_search("12 elmwood rd")) == ["12 Elmwood Road"]
    assert labels(address_search("14 elm street")) == ["14 Elm St"]


def test_a_zip_code_after_a_comma_narrows_the_search(town):
    assert labels(address_search("elm, Demo City 02111")) == ["Old Elm Court", "4 Old Elm Court"]
    # A wrong one does not hide the address.
    assert labels(address_search("12 elm st, 02199")) == ["12 Elm Street"]


def test_a_street_suggestion_is_centred_on_its_address_points(town):
    street = address_search("elm st")[0]
    assert (street.kind, street.label) == ("street", "Elm Street")
    points = Address.objects.filter(search_text__endswith="elm street")
    assert street.lat == pytest.approx(sum(a.lat for a in points) / len(points))
    assert street.lng == pytest.approx(sum(a.lng for a in points) / len(points))


def test_too_little_or_too_common_text_suggests_nothing(town):
    assert address_search("") == address_search("e") == []
    assert address_search("st") == address_search("street") == []


def test_search_endpoint_answers_at_most_eight_places_as_json(client, town):
    load(*[(f"{n} Elm Street", at(east_m=200 + n), "", "02110") for n in range(20, 40)])
    response = client.get("/addresses/search/", {"q": "elm"})
    assert response.status_code == 200
    assert response["Cache-Control"] == "public, max-age=300"
    results = response.json()["results"]
    assert len(results) == 8
    first = results[0]
    assert set(first) == {"id", "kind", "label", "lat", "lng", "zipcode"}
    assert (first["kind"], first["label"], first["zipcode"]) == ("street", "Elm Street", "02110")
    twelve = client.get("/addresses/search/", {"q": "12 elm st"}).json()["results"][0]
    assert twelve == {
        "id": f"a{Address.objects.get(address_id='E-12').pk}",
        "kind": "address",
        "label": "12 Elm Street",
        "lat": at(east_m=120)[0],
        "lng": at(east_m=120)[1],
        "zipcode": "02110",
        "address_id": "E-12",
    }


def test_search_endpoint_refuses_a_missing_query(client, db):
    assert client.get("/addresses/search/").status_code == 400
    assert client.get("/addresses/search/", {"q": "x" * 201}).status_code == 400


@postgresql_only
def test_typos_are_found_by_trigram_similarity_on_postgresql(town):
    assert labels(address_search("12 elm stret")) == ["12 Elm Street"]
    assert labels(address_search("washingtn")) == ["Washington Street"]
    # The house number is kept: a typo never lands on a neighbour's door.
    assert "10 Elm Street" not in labels(address_search("12 elm stret"))


@postgresql_only
def test_a_shared_street_type_alone_is_no_near_miss_on_postgresql(town):
    load(("12 Bay Road", at(north_m=-600), "B-12", "02111"))
    assert labels(address_search("12 ash road")) == []
    assert labels(address_search("12 bay rd")) == ["12 Bay Road"]


@postgresql_only
def test_a_prefix_match_keeps_near_misses_away_on_postgresql(town):
    load(("12 Elk Street", at(north_m=-500), "K-12", "02111"))
    # "12 Elm Street" is as near a miss of "12 elk st" as can be, but the text matches.
    assert labels(address_search("12 elk st")) == ["12 Elk Street"]
    assert labels(address_search("12 elk stret"))[0] == "12 Elk Street"


@postgresql_only
def test_the_migration_made_the_search_indexes_on_postgresql(db):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename LIKE 'routing_%'"
        )
        indexes = dict(cursor.fetchall())
    assert 'COLLATE "C"' in indexes["routing_address_search_c"]
    assert "gin (search_text gin_trgm_ops)" in indexes["routing_street_search_trgm"]


# --- The address at a pin -----------------------------------------------------------------------


def test_the_nearest_address_within_75_m_is_found(town):
    lat, lng = at(east_m=125, north_m=5)
    found = address_nearest(lat, lng)
    assert found.label == "12 Elm Street"
    assert found.distance_m == pytest.approx(7.1, abs=0.5)


def test_no_address_is_found_beyond_75_m(town):
    assert address_nearest(*at(east_m=60, north_m=80)) is None
    assert address_nearest(*at(east_m=60, north_m=70)) is not None


def test_reverse_endpoint(client, town):
    lat, lng = at(east_m=38)
    response = client.get("/addresses/reverse/", {"lat": lat, "lng": lng})
    assert response.json()["result"]["label"] == "4 Elm Street"
    far = client.get("/addresses/reverse/", {"lat": at(north_m=-900)[0], "lng": lng})
    assert far.json() == {"result": None}
    assert client.get("/addresses/reverse/", {"lat": "north", "lng": lng}).status_code == 400


# --- Intake: an address without a pin -------------------------------------------------------------


def processed(request):
    assert request_process_intake(request.pk) is True
    request.refresh_from_db()
    return request


def test_address_only_portal_report_is_located_at_intake(client, pothole, town):
    response = client.post(
        "/report/",
        {"category": pothole.pk, "description": "Pothole", "address": "12 elm st", "website": ""},
    )
    assert response.status_code == 302
    request = ServiceRequest.objects.get()
    assert request.lat is None  # the resident's request did not wait for it
    request = processed(request)
    assert (request.lat, request.lng) == at(east_m=120)
    assert (request.address, request.address_id) == ("12 elm st", "E-12")
    entry = request.history.get(field="location")
    assert entry.actor_label == "Geocoding"
    assert "12 Elm Street, found by the address gazetteer" in entry.note
    assert request.department == pothole.department  # routed as well


def test_open311_address_string_and_address_id_are_located(client, pothole, town):
    key = api_client_issue_key(ApiClient(name="Resident app", requests_per_minute=100))
    data = {
        "api_key": key,
        "jurisdiction_id": "city.example",
        "service_code": pothole.code,
        "description": "Pothole",
        "address_string": "4 Elm Street, Demo City, MA 02110",
    }
    numbers = []
    for extra in ({}, {"address_string": "", "address_id": "W-3"}):
        response = client.post(reverse("open311:requests", args=["json"]), {**data, **extra})
        assert response.status_code == 200, response.content
        numbers.append(response.json()[0]["service_request_id"])
    by_string, by_id = (processed(ServiceRequest.objects.get(tracking_number=n)) for n in numbers)
    assert (by_string.lat, by_string.lng) == at(east_m=40)
    assert (by_id.lat, by_id.lng) == at(north_m=300)


def test_an_email_with_an_address_in_its_text_is_located(pothole, town):
    request = request_submit(
        Intake(
            category=pothole,
            channel=Channel.EMAIL,
            description="Hello,\n\nThere is a deep hole outside 10 Elm St. by the bakery.",
        )
    )
    request = processed(request)
    assert (request.lat, request.lng) == at(east_m=100)
    assert request.address == "10 Elm St"


def test_an_address_the_gazetteer_does_not_know_keeps_no_location(pothole, town):
    request = processed(
        request_submit(Intake(category=pothole, description="Hole", address="Behind the mill"))
    )
    assert request.lat is None and request.lng is None
    assert request.intake_processed_at is not None
    assert not request.history.filter(field="location").exists()


def test_an_ambiguous_address_is_not_guessed(pothole, town):
    load(("12 Elm Street", at(north_m=-2000), "", "02111"), source="other")
    assert address_geocode("12 Elm Street") is None
    assert address_geocode("12 Elm Street, 02111").lat == at(north_m=-2000)[0]
    # Close together, the same address from two sources is one place.
    load(("3 Elmwood Road", at(north_m=302), "", "02110"), source="other")
    assert address_geocode("3 elmwood rd").lat == pytest.approx(at(north_m=300)[0], abs=3e-5)


def test_a_pin_is_never_moved_by_the_address(pothole, town):
    lat, lng = at(north_m=-1500)
    request = processed(
        request_submit(
            Intake(category=pothole, description="Hole", address="12 Elm St", lat=lat, lng=lng)
        )
    )
    assert (request.lat, request.lng) == (lat, lng)


def test_a_pin_gets_the_nearest_address_id_and_zip_code_and_its_text_if_none_was_typed(
    client, pothole, town
):
    lat, lng = at(east_m=61)  # 1 m from 6 Elm Street
    typed = processed(
        request_submit(
            Intake(category=pothole, description="Hole", address="By the bakery", lat=lat, lng=lng)
        )
    )
    assert (typed.address, typed.address_id, typed.zipcode) == ("By the bakery", "E-6", "02110")
    untyped = processed(
        request_submit(Intake(category=pothole, description="Hole", lat=lat, lng=lng))
    )
    assert (untyped.address, untyped.address_id, untyped.zipcode) == (
        "6 Elm Street",
        "E-6",
        "02110",
    )
    assert untyped.history.get(field="address").actor_label == "Geocoding"

    # Open311 clients read the same fields.
    body = client.get(f"/open311/v2/requests/{untyped.tracking_number}.json").json()
    assert (body[0]["address"], body[0]["address_id"], body[0]["zipcode"]) == (
        "6 Elm Street",
        "E-6",
        "02110",
    )

    far = processed(
        request_submit(Intake(category=pothole, description="Hole", lat=lat + 0.01, lng=lng))
    )
    assert (far.address, far.address_id, far.zipcode) == ("", "", "")


def test_a_clear_beginning_is_located_but_not_an_unclear_one(town):
    assert address_geocode("6 elm").label == "6 Elm Street"
    assert address_geocode("12 elm") is None  # 12 Elm Street or 12 Elmwood Road


@postgresql_only
def test_a_typo_with_the_right_house_number_is_located_on_postgresql(town):
    assert address_geocode("12 Elm Stret").label == "12 Elm Street"
    assert address_geocode("13 Elm Stret") is None


# --- The outside geocoder ------------------------------------------------------------------------


class FakeGeocoder:
    """Stands in for urllib.request.urlopen: records the requests, answers or fails."""

    def __init__(self, answer=None, error=None, body=None):
        self.body = body if body is not None else json.dumps(answer or []).encode()
        self.error, self.requests = error, []

    def __call__(self, request, timeout=None):
        self.requests.append((request, timeout))
        if self.error:
            raise self.error
        return io.BytesIO(self.body)


@pytest.fixture
def geocoder(monkeypatch):
    def install(**kwargs):
        fake = FakeGeocoder(**kwargs)
        monkeypatch.setattr(geocoding.urllib.request, "urlopen", fake)
        return fake

    return install


def answer_at(lat, lng):
    return [{"lat": str(lat), "lon": str(lng), "display_name": "1 Far Away Lane, Demo City"}]


def test_the_outside_geocoder_is_not_asked_when_not_configured(pothole, town, geocoder, settings):
    settings.GEOCODER_URL = ""
    fake = geocoder(answer=answer_at(*at(north_m=-800)))
    request = processed(request_submit(Intake(category=pothole, description="x", address="Mill")))
    assert request.lat is None and fake.requests == []


def test_the_outside_geocoder_locates_what_the_gazetteer_does_not_know(
    pothole, town, geocoder, settings
):
    settings.GEOCODER_URL = GEOCODER_URL
    fake = geocoder(answer=answer_at(*at(north_m=-800)))
    request = processed(
        request_submit(Intake(category=pothole, description="x", address="1 Far Away Lane"))
    )
    assert (request.lat, request.lng) == at(north_m=-800)
    (sent, timeout) = fake.requests[0]
    assert timeout == 2
    assert sent.full_url.startswith(f"{GEOCODER_URL}?q=1+Far+Away+Lane&format=jsonv2")
    assert "bounded=1" in sent.full_url and sent.get_header("User-agent").startswith("CivicDesk")
    assert "found by the outside geocoder" in request.history.get(field="location").note


def test_the_outside_geocoder_is_not_asked_when_the_gazetteer_knows(
    pothole, town, geocoder, settings
):
    settings.GEOCODER_URL = GEOCODER_URL
    fake = geocoder(answer=answer_at(*at(north_m=-800)))
    request = processed(request_submit(Intake(category=pothole, description="x", address="2 Elm")))
    assert (request.lat, request.lng) == at(east_m=20)
    assert fake.requests == []


def test_a_geocoder_answer_outside_the_service_area_is_ignored(pothole, town, geocoder, settings):
    settings.GEOCODER_URL = GEOCODER_URL
    geocoder(answer=answer_at(40.7128, -74.0060))
    request = processed(request_submit(Intake(category=pothole, description="x", address="Mill")))
    assert request.lat is None


@pytest.mark.parametrize(
    "failure",
    [
        {"error": TimeoutError("timed out")},
        {"error": OSError("connection refused")},
        {"body": b"<html>A proxy's error page</html>"},
    ],
)
def test_a_failing_geocoder_never_loses_the_request(pothole, town, geocoder, settings, failure):
    settings.GEOCODER_URL = GEOCODER_URL
    fake = geocoder(**failure)
    first = processed(request_submit(Intake(category=pothole, description="x", address="Mill")))
    assert first.lat is None and first.department == pothole.department
    # Paused after the failure: the next request does not wait for the timeout again.
    second = processed(request_submit(Intake(category=pothole, description="y", address="Mil")))
    assert second.intake_processed_at is not None
    assert len(fake.requests) == 1


def test_the_web_request_never_waits_for_the_outside_geocoder(
    client, pothole, town, geocoder, settings
):
    settings.GEOCODER_URL = GEOCODER_URL
    fake = geocoder(error=AssertionError("called during the web request"))
    response = client.post(
        "/report/",
        {"category": pothole.pk, "description": "Pothole", "address": "Mill", "website": ""},
    )
    assert response.status_code == 302 and fake.requests == []
    assert ServiceRequest.objects.get().history.filter(action=HistoryEntry.Action.CREATED)


def test_geocoder_lookup_is_quiet_about_empty_text(settings, geocoder):
    settings.GEOCODER_URL = GEOCODER_URL
    fake = geocoder()
    assert geocoder_lookup("  ") is None and fake.requests == []


# --- The report form without JavaScript ---------------------------------------------------------


def report_data(category, **overrides):
    data = {
        "category": category.pk,
        "description": "Deep pothole by the bus stop",
        "address": "12 elm",
        "name": "Maria Lopez",
        "email": "maria@example.org",
        "website": "",
    }
    return {**data, **overrides}


def test_find_address_lists_the_matches_and_keeps_the_answers(client, pothole, town):
    response = client.post("/report/", {**report_data(pothole), "find_address": "1"})
    assert response.status_code == 200
    html = response.content.decode()
    twelve = Address.objects.get(address_id="E-12")
    assert f'name="pick_address" value="a{twelve.pk}"' in html
    assert "Which address do you mean?" in html and "12 Elmwood Road" in html
    assert "Deep pothole by the bus stop" in html and 'value="Maria Lopez"' in html
    assert "errorlist" not in html  # nothing was judged yet
    assert not ServiceRequest.objects.exists()


def test_picking_a_match_puts_the_pin_there_and_the_report_is_sent_with_it(client, pothole, town):
    twelve = Address.objects.get(address_id="E-12")
    response = client.post("/report/", {**report_data(pothole), "pick_address": f"a{twelve.pk}"})
    html = response.content.decode()
    lat, lng = f"{twelve.lat:.6f}", f"{twelve.lng:.6f}"
    assert f'name="lat" value="{lat}"' in html and f'name="lng" value="{lng}"' in html
    assert 'value="12 Elm Street"' in html and "The pin is now at 12 Elm Street." in html
    assert not ServiceRequest.objects.exists()

    data = report_data(pothole, address="12 Elm Street", lat=lat, lng=lng, file_anyway="1")
    assert client.post("/report/", data).status_code == 302
    request = ServiceRequest.objects.get()
    assert (request.lat, request.lng) == (float(lat), float(lng))


@pytest.mark.parametrize("garbage", ["a99999999999999999999999", "x12", "a", "s-1"])
def test_picking_a_match_that_does_not_exist_searches_again(client, pothole, town, garbage):
    response = client.post("/report/", {**report_data(pothole), "pick_address": garbage})
    assert response.status_code == 200
    assert "Which address do you mean?" in response.content.decode()


def test_find_address_without_a_match_says_so(client, pothole, town):
    response = client.post("/report/", {**report_data(pothole, address="Mill"), "find_address": 1})
    assert "No address found" in response.content.decode()


def test_the_home_page_search_without_javascript_opens_the_report_with_matches(client, town):
    home = client.get("/").content.decode()
    assert 'action="/report/"' in home and 'name="find_address"' in home
    response = client.get("/report/", {"address": "12 elm", "find_address": "1"})
    html = response.content.decode()
    assert "12 Elm Street" in html and 'name="pick_address"' in html
    assert 'value="12 elm"' in html


def test_a_link_with_a_place_puts_the_pin_on_the_report_form(client, town):
    lat, lng = at(east_m=120)
    html = client.get("/report/", {"lat": lat, "lng": lng, "address": "12 Elm Street"}).content
    assert f'name="lat" value="{lat:.6f}"'.encode() in html
    assert b'value="12 Elm Street"' in html and b"pick_address" not in html
    outside = client.get("/report/", {"lat": 40.7128, "lng": -74.006}).content
    assert b'name="lat" value="40.7' not in outside


def test_demo_requests_sit_at_addresses_the_search_finds(db):
    call_command("seed_demo", requests=25, verbosity=0)
    gazetteer = {(a.address, round(a.lat, 6), round(a.lng, 6)) for a in Address.objects.all()}
    requests = list(ServiceRequest.objects.all())
    assert len(requests) == 25
    for request in requests:
        assert (request.address, request.lat, request.lng) in gazetteer, request.address
    assert request.address in labels(address_search(request.address))
