"""Open311 GeoReport v2: every endpoint in JSON and XML, as other cities' servers answer."""

import json
import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from notifications.models import Notification
from requests_app.models import (
    ApiClient,
    AttributeAnswer,
    Channel,
    CloseReason,
    HistoryEntry,
    IntakeThrottle,
    Photo,
    ServiceAttribute,
    ServiceRequest,
    StaffRole,
    Status,
    WorkOrder,
)
from requests_app.open311 import (
    api_client_issue_key,
    api_client_revoke,
    request_token,
    w3c,
    w3c_from_epoch,
)
from requests_app.photos import process_photo
from requests_app.services import photo_attach, request_process_intake, work_order_add_photo

from .conftest import SHARED_DATA, upload
from .factories import CITY_CENTER, CategoryFactory, ServiceRequestFactory, staff_user

REFERENCE = SHARED_DATA / "open311_reference"


def reference_xml(*parts):
    """Output captured from real Open311 servers, in ../shared beside the checkout."""
    path = REFERENCE.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"reference data not found at {path}")
    return ET.parse(path)


OUTSIDE = (40.7128, -74.0060)  # New York
W3C = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d$")
REQUEST_FIELDS = [
    "service_request_id",
    "status",
    "status_notes",
    "service_name",
    "service_code",
    "description",
    "agency_responsible",
    "service_notice",
    "requested_datetime",
    "updated_datetime",
    "expected_datetime",
    "address",
    "address_id",
    "zipcode",
    "lat",
    "long",
    "media_url",
]
PRIVATE = ["maria@example.org", "Maria Lopez", "617-555-0142", "device-42", "acct-7"]


# --- Fixtures and helpers --------------------------------------------------------------------


@pytest.fixture
def questions(pothole):
    pothole.service_notice = "Potholes are usually filled within 3 working days."
    pothole.save()
    return {
        "size": ServiceAttribute.objects.create(
            category=pothole,
            code="size",
            description="How big is it?",
            datatype=ServiceAttribute.Datatype.SINGLE,
            required=True,
            order=1,
            values=[
                {"key": "small", "name": "Smaller than a plate"},
                {"key": "large", "name": "Larger"},
            ],
        ),
        "hazards": ServiceAttribute.objects.create(
            category=pothole,
            code="hazards",
            description="What is near it?",
            datatype=ServiceAttribute.Datatype.MULTI,
            order=2,
            values=[{"key": "school", "name": "A school"}, {"key": "bikes", "name": "A bike lane"}],
        ),
        "depth": ServiceAttribute.objects.create(
            category=pothole,
            code="depth",
            description="Depth in cm",
            datatype=ServiceAttribute.Datatype.NUMBER,
            order=3,
        ),
        "seen": ServiceAttribute.objects.create(
            category=pothole,
            code="seen",
            description="When did you first see it?",
            datatype=ServiceAttribute.Datatype.DATETIME,
            order=4,
        ),
        "note": ServiceAttribute.objects.create(
            category=pothole,
            code="note",
            description="We fill potholes in the order they are reported.",
            datatype=ServiceAttribute.Datatype.TEXT,
            variable=False,
            order=5,
        ),
    }


@pytest.fixture
def api_key(db):
    return api_client_issue_key(ApiClient(name="Resident app", requests_per_minute=100))


def url(name, fmt="json", *args):
    return reverse(f"open311:{name}", args=[*args, fmt])


def as_json(response, status=200):
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    return json.loads(response.content)


def as_xml(response, status=200):
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("text/xml")
    assert response.content.startswith(b'<?xml version="1.0" encoding="utf-8"?>')
    return ET.fromstring(response.content)


def children(element):
    return [child.tag for child in element]


def assert_errors(response, status, fragment, fmt="json"):
    if fmt == "xml":
        root = as_xml(response, status)
        assert root.tag == "errors"
        assert [children(e) for e in root] == [["code", "description"]] * len(root)
        assert root.find("error/code").text == str(status)
        descriptions = [e.findtext("description") for e in root]
    else:
        body = as_json(response, status)
        assert all(set(e) == {"code", "description"} and e["code"] == status for e in body)
        descriptions = [e["description"] for e in body]
    assert any(fragment in d for d in descriptions), descriptions


def public_request(category, **fields):
    defaults = {
        "reporter_device_id": "device-42",
        "reporter_account_id": "acct-7",
        "department": category.department,
    }
    return ServiceRequestFactory(category=category, **{**defaults, **fields})


def post_data(category, key, /, **overrides):
    data = {
        "api_key": key,
        "jurisdiction_id": "city.example",
        "service_code": category.code,
        "lat": str(CITY_CENTER[0]),
        "long": str(CITY_CENTER[1]),
        "address_string": "12 Main St",
        "address_id": "A-1001",
        "description": "Deep pothole by the school",
        "email": "maria@example.org",
        "first_name": "Maria",
        "last_name": "Lopez",
        "phone": "617-555-0142",
        "device_id": "device-42",
        "account_id": "acct-7",
        "attribute[size]": "large",
        "attribute[hazards][]": ["school", "bikes"],
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


# --- Discovery and services ------------------------------------------------------------------


def test_discovery_lists_the_v2_endpoint_in_both_formats(client, db):
    body = as_json(client.get("/open311/discovery.json"))
    assert set(body) == {"changeset", "contact", "key_service", "endpoints"}
    (endpoint,) = body["endpoints"]
    assert endpoint["url"].endswith("/open311/v2")
    assert endpoint["specification"] == "http://wiki.open311.org/GeoReport_v2"
    assert W3C.match(endpoint["changeset"])
    assert endpoint["formats"] == ["text/xml", "application/json"]

    root = as_xml(client.get("/open311/discovery.xml"))
    assert root.tag == "discovery"
    assert children(root) == ["changeset", "contact", "key_service", "endpoints"]
    assert children(root.find("endpoints/endpoint")) == [
        "specification",
        "url",
        "changeset",
        "type",
        "formats",
    ]
    assert [f.text for f in root.findall("endpoints/endpoint/formats/format")] == [
        "text/xml",
        "application/json",
    ]


def test_services_list_active_categories_with_group_and_metadata(client, pothole, questions):
    CategoryFactory(code="retired", name="Retired", is_active=False)
    CategoryFactory(code="graffiti", name="Graffiti", group="Clean streets")

    body = as_json(client.get(url("services"), {"jurisdiction_id": "city.example"}))
    assert [s["service_code"] for s in body] == ["graffiti", "pothole"]
    pothole_service = body[1]
    assert pothole_service == {
        "service_code": "pothole",
        "service_name": "Pothole",
        "description": None,
        "metadata": True,
        "type": "realtime",
        "keywords": None,
        "group": "Streets and sidewalks",
    }
    assert body[0]["metadata"] is False and body[0]["group"] == "Clean streets"

    root = as_xml(client.get(url("services", "xml")))
    assert root.tag == "services"
    assert [s.tag for s in root] == ["service", "service"]
    assert children(root[1]) == [
        "service_code",
        "service_name",
        "description",
        "metadata",
        "type",
        "keywords",
        "group",
    ]
    assert root[1].findtext("metadata") == "true"
    assert root[0].findtext("metadata") == "false"


def test_a_single_service_is_still_a_list(client, pothole):
    assert len(as_json(client.get(url("services")))) == 1
    root = as_xml(client.get(url("services", "xml")))
    assert [s.tag for s in root] == ["service"]


def test_service_definition_carries_every_attribute_field(client, pothole, questions):
    body = as_json(client.get(url("service_definition", "json", "pothole")))
    assert body["service_code"] == "pothole"
    assert [a["code"] for a in body["attributes"]] == ["size", "hazards", "depth", "seen", "note"]
    assert body["attributes"][0] == {
        "variable": True,
        "code": "size",
        "datatype": "singlevaluelist",
        "required": True,
        "datatype_description": None,
        "order": 1,
        "description": "How big is it?",
        "values": [
            {"key": "small", "name": "Smaller than a plate"},
            {"key": "large", "name": "Larger"},
        ],
    }
    assert body["attributes"][4]["variable"] is False

    root = as_xml(client.get(url("service_definition", "xml", "pothole")))
    assert root.tag == "service_definition"
    assert children(root) == ["service_code", "attributes"]
    first = root.find("attributes/attribute")
    # The element order of DC's and the spec's service definitions.
    assert children(first) == [
        "variable",
        "code",
        "datatype",
        "required",
        "datatype_description",
        "order",
        "description",
        "values",
    ]
    assert [(v.findtext("key"), v.findtext("name")) for v in first.findall("values/value")] == [
        ("small", "Smaller than a plate"),
        ("large", "Larger"),
    ]


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_unknown_or_retired_service_definition_is_a_404_error_list(client, pothole, fmt):
    CategoryFactory(code="retired", is_active=False)
    assert_errors(client.get(url("service_definition", fmt, "nope")), 404, "nope", fmt)
    assert_errors(client.get(url("service_definition", fmt, "retired")), 404, "retired", fmt)


# --- GET requests ----------------------------------------------------------------------------


def test_request_fields_match_the_spec_and_hide_private_data(client, pothole, dispatcher):
    pothole.service_notice = "Usually filled within 3 days."
    pothole.save()
    sr = public_request(
        pothole, address_id="A-1001", expected_at=timezone.now() + timedelta(days=3)
    )
    sr.add_comment("Crew scheduled for Tuesday", by=dispatcher, public=True)
    sr.add_comment("Resident sounded annoyed", by=dispatcher, public=False)

    body = as_json(client.get(url("requests")))
    (row,) = body
    assert list(row) == REQUEST_FIELDS
    assert row["service_request_id"] == sr.tracking_number
    assert row["status"] == "open"
    assert row["status_notes"] == "Crew scheduled for Tuesday"
    assert row["agency_responsible"] == "Streets"
    assert row["service_notice"] == "Usually filled within 3 days."
    assert row["address"] == "12 Main St" and row["address_id"] == "A-1001"
    assert row["zipcode"] is None and row["media_url"] is None
    assert (row["lat"], row["long"]) == CITY_CENTER
    for name in ("requested_datetime", "updated_datetime", "expected_datetime"):
        assert W3C.match(row[name]), row[name]
    text = json.dumps(body)
    for secret in [*PRIVATE, "annoyed"]:
        assert secret not in text

    xml = client.get(url("requests", "xml"))
    root = as_xml(xml)
    assert root.tag == "service_requests"
    assert [r.tag for r in root] == ["request"]  # one element even for a single result
    assert children(root[0]) == REQUEST_FIELDS
    assert b"<zipcode></zipcode>" in xml.content
    for secret in [*PRIVATE, "annoyed"]:
        assert secret.encode() not in xml.content


def test_request_elements_follow_the_reference_servers(client, pothole):
    public_request(pothole)
    reference = reference_xml("ruby-open311-spec-fixtures", "service_requests.xml")
    ours = as_xml(client.get(url("requests", "xml")))
    assert children(ours[0]) == children(reference.getroot()[0])
    mock = reference_xml("node-open311-mocks", "service-request.xml").getroot()
    assert mock.tag == ours.tag and children(mock[0]) == children(ours[0])


def test_empty_result_is_an_empty_list(client, db):
    assert as_json(client.get(url("requests"))) == []
    root = as_xml(client.get(url("requests", "xml")))
    assert root.tag == "service_requests" and len(root) == 0


def test_hidden_requests_and_hidden_photos_never_show(client, pothole, photo_upload):
    shown = public_request(pothole)
    hidden = public_request(pothole, is_public=False)
    secret_photo = photo_attach(shown, process_photo(photo_upload()))
    Photo.objects.filter(pk=secret_photo.pk).update(is_public=False)

    body = as_json(client.get(url("requests")))
    assert [r["service_request_id"] for r in body] == [shown.tracking_number]
    assert body[0]["media_url"] is None
    assert_errors(client.get(url("request", "json", hidden.tracking_number)), 404, "No service")
    by_id = as_json(client.get(url("requests"), {"service_request_id": hidden.tracking_number}))
    assert by_id == []


def test_media_url_is_the_first_public_photo_absolute(client, pothole, photo_upload, settings):
    sr = public_request(pothole)
    first = photo_attach(sr, process_photo(photo_upload()))
    photo_attach(sr, process_photo(photo_upload()))

    (row,) = as_json(client.get(url("request", "json", sr.tracking_number)))
    assert row["media_url"] == f"{settings.SITE_URL}/photos/{first.id}/full/"
    assert client.get(row["media_url"].removeprefix(settings.SITE_URL)).status_code == 200


def test_media_url_is_the_earliest_of_own_and_work_order_photos(
    client, pothole, photo_upload, settings
):
    order = WorkOrder.objects.create(department=pothole.department)
    own_first = public_request(pothole, work_order=order)
    crew_first = public_request(pothole, work_order=order)
    photo_attach(own_first, process_photo(photo_upload()))
    crew = work_order_add_photo(order, process_photo(photo_upload()), kind=Photo.Kind.BEFORE)
    later = photo_attach(crew_first, process_photo(photo_upload()))
    earlier = timezone.now() - timedelta(days=1)
    Photo.objects.filter(request=own_first).update(uploaded_at=earlier)

    rows = as_json(client.get(url("requests")))
    media = {r["service_request_id"]: r["media_url"] for r in rows}
    own_photo = Photo.objects.get(request=own_first)
    assert media[own_first.tracking_number] == f"{settings.SITE_URL}/photos/{own_photo.id}/full/"
    assert media[crew_first.tracking_number] == f"{settings.SITE_URL}/photos/{crew.id}/full/"
    assert str(later.id) not in json.dumps(rows)


def test_closed_statuses_map_to_closed(client, pothole, dispatcher):
    done = public_request(pothole)
    done.change_status(Status.COMPLETED, by=dispatcher)
    dropped = public_request(pothole)
    dropped.change_status(Status.CLOSED, by=dispatcher, close_reason=CloseReason.NO_ACTION)
    working = public_request(pothole)
    working.change_status(Status.IN_PROGRESS, by=dispatcher)

    statuses = {r["service_request_id"]: r["status"] for r in as_json(client.get(url("requests")))}
    assert statuses == {
        done.tracking_number: "closed",
        dropped.tracking_number: "closed",
        working.tracking_number: "open",
    }
    closed = as_json(client.get(url("requests"), {"status": "closed"}))
    assert {r["service_request_id"] for r in closed} == {
        done.tracking_number,
        dropped.tracking_number,
    }
    opened = as_json(client.get(url("requests"), {"status": "open"}))
    assert [r["service_request_id"] for r in opened] == [working.tracking_number]
    both = as_json(client.get(url("requests"), {"status": "open,closed"}))
    assert len(both) == 3


def test_filters_by_service_code_and_dates(client, pothole):
    graffiti = CategoryFactory(code="graffiti", name="Graffiti")
    now = timezone.now()
    recent = public_request(pothole, created_at=now - timedelta(days=2))
    older = public_request(pothole, created_at=now - timedelta(days=40))
    ancient = public_request(pothole, created_at=now - timedelta(days=200))
    tagged = public_request(graffiti, created_at=now - timedelta(days=1))

    def ids(**params):
        return [r["service_request_id"] for r in as_json(client.get(url("requests"), params))]

    # The spec's default span: 90 days.
    assert ids() == [tagged.tracking_number, recent.tracking_number, older.tracking_number]
    assert ids(service_code="pothole") == [recent.tracking_number, older.tracking_number]
    assert ids(service_code="pothole,graffiti") == ids()
    assert ids(service_code="unknown") == []
    start = (now - timedelta(days=300)).isoformat()
    end = (now - timedelta(days=30)).isoformat()
    assert ids(start_date=start, end_date=end) == [older.tracking_number, ancient.tracking_number]
    # Without T and with an offset whose "+" arrived as a space.
    lenient = (now - timedelta(days=3)).strftime("%Y-%m-%d %H:%M:%S") + " 00:00"
    assert ids(start_date=lenient) == [tagged.tracking_number, recent.tracking_number]
    assert ids(start_date=(now - timedelta(days=3)).date().isoformat()) == ids(start_date=lenient)


def test_service_request_ids_override_the_other_filters(client, pothole):
    old = public_request(pothole, created_at=timezone.now() - timedelta(days=400))
    other = public_request(pothole)
    body = as_json(
        client.get(
            url("requests"),
            {
                "service_request_id": f"{old.tracking_number},{other.tracking_number.lower()},junk",
                "service_code": "graffiti",
                "status": "closed",
            },
        )
    )
    assert {r["service_request_id"] for r in body} == {old.tracking_number, other.tracking_number}


def test_updated_after_and_before_ignore_the_default_window(client, pothole, dispatcher):
    long_ago = timezone.now() - timedelta(days=200)
    touched = public_request(pothole, created_at=long_ago)
    untouched = public_request(pothole, created_at=long_ago)
    ServiceRequest.objects.filter(pk=untouched.pk).update(updated_at=long_ago)
    ServiceRequest.objects.filter(pk=touched.pk).update(updated_at=long_ago + timedelta(days=150))

    after = (long_ago + timedelta(days=100)).strftime("%Y-%m-%dT%H:%M:%S%z")
    body = as_json(client.get(url("requests"), {"updated_after": after}))
    assert [r["service_request_id"] for r in body] == [touched.tracking_number]
    before = (long_ago + timedelta(days=1)).strftime("%Y-%m-%d %H:%M")
    body = as_json(client.get(url("requests"), {"updated_before": before}))
    assert [r["service_request_id"] for r in body] == [untouched.tracking_number]


def test_paging(client, pothole):
    now = timezone.now()
    made = [public_request(pothole, created_at=now - timedelta(hours=h)) for h in range(5)]
    numbers = [r.tracking_number for r in made]

    def page(**params):
        return [r["service_request_id"] for r in as_json(client.get(url("requests"), params))]

    assert page(page_size=2) == numbers[:2]
    assert page(page_size=2, page=2) == numbers[2:4]
    assert page(page_size=2, page=3) == numbers[4:]
    assert page(page_size=2, page=4) == []
    assert page(page_size=5000) == numbers  # more than the limit is the limit


@pytest.mark.parametrize("fmt", ["json", "xml"])
@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"start_date": "yesterday"}, "start_date must be a W3C date-time"),
        ({"end_date": "2026-13-45"}, "end_date must be a W3C date-time"),
        ({"updated_after": "0000-00-00T00:00:00"}, "updated_after"),
        ({"start_date": "2026-02-01", "end_date": "2026-01-01"}, "start_date must not be after"),
        ({"status": "pending"}, "status must be open or closed"),
        ({"page": "0"}, "page must be a whole number"),
        ({"page_size": "ten"}, "page_size must be a whole number"),
    ],
)
def test_bad_filters_are_400_errors(client, db, params, fragment, fmt):
    assert_errors(client.get(url("requests", fmt), params), 400, fragment, fmt)


def test_single_request_in_both_formats(client, pothole):
    sr = public_request(pothole)
    (row,) = as_json(
        client.get(url("request", "json", sr.tracking_number), {"jurisdiction_id": "x"})
    )
    assert row["service_request_id"] == sr.tracking_number
    root = as_xml(client.get(url("request", "xml", sr.tracking_number)))
    assert root.tag == "service_requests" and [r.tag for r in root] == ["request"]
    assert root.findtext("request/service_request_id") == sr.tracking_number
    assert_errors(client.get(url("request", "xml", "CD-2222-2222")), 404, "CD-2222-2222", "xml")
    assert_errors(client.get(url("request", "json", "not-an-id")), 404, "not-an-id")


def test_extensions_add_chicago_style_extended_attributes(client, pothole, dispatcher):
    parent = public_request(pothole)
    sr = public_request(pothole, duplicate_of=parent)
    sr.change_status(Status.IN_PROGRESS, by=dispatcher, note="Crew on site")
    sr.add_comment("Filled the hole", by=dispatcher, public=True)
    sr.add_comment("Used cold patch", by=dispatcher, public=False)

    (plain,) = as_json(client.get(url("request", "json", sr.tracking_number)))
    assert "extended_attributes" not in plain
    (row,) = as_json(client.get(url("request", "json", sr.tracking_number), {"extensions": "true"}))
    extended = row["extended_attributes"]
    assert extended["channel"] == "web"
    assert extended["detailed_status"] == "in_progress"
    assert extended["duplicate"] is True
    assert extended["parent_service_request_id"] == parent.tracking_number
    assert [(n["type"], n["summary"], n["description"]) for n in extended["notes"]] == [
        ("opened", "Request opened", None),
        ("activity", "Status changed to In progress", "Crew on site"),
        ("activity", "Public comment", "Filled the hole"),
    ]
    assert "cold patch" not in json.dumps(row)

    root = as_xml(
        client.get(
            url("requests", "xml"), {"extensions": "true", "service_request_id": sr.tracking_number}
        )
    )
    notes = root.findall("request/extended_attributes/notes/note")
    assert [n.findtext("type") for n in notes] == ["opened", "activity", "activity"]
    assert children(notes[0]) == ["datetime", "summary", "type", "description"]


def test_notes_keep_the_order_of_events_within_one_second(client, pothole, dispatcher):
    sr = public_request(pothole, created_at=datetime(2026, 3, 2, 15, 0, 0, 100, tzinfo=UTC))
    # Within one second, and numbered against the order they happened in.
    comment = sr.add_comment("Crew on the way", by=dispatcher, public=True)
    comment.created_at = datetime(2026, 3, 2, 15, 0, 0, 900_000, tzinfo=UTC)
    comment.save(update_fields=["created_at"])
    # An id above the comment's, so that only the time can put it first (bulk_create: the
    # model refuses to save() an entry that has an id).
    entry = HistoryEntry(
        pk=10**9,
        request=sr,
        at=datetime(2026, 3, 2, 15, 0, 0, 400_000, tzinfo=UTC),
        action=HistoryEntry.Action.STATUS,
        field="status",
        old_value=Status.RECEIVED,
        new_value=Status.ASSIGNED,
        is_public=True,
    )
    HistoryEntry.objects.bulk_create([entry])

    (row,) = as_json(client.get(url("request", "json", sr.tracking_number), {"extensions": "1"}))
    notes = row["extended_attributes"]["notes"]
    assert [n["summary"] for n in notes] == [
        "Request opened",
        "Status changed to Assigned",
        "Public comment",
    ]
    assert {n["datetime"] for n in notes} == {"2026-03-02T10:00:00-05:00"}
    assert row["status_notes"] == "Crew on the way"


def test_status_notes_speak_for_the_current_status(client, pothole, dispatcher):
    sr = public_request(pothole)
    sr.change_status(Status.SCHEDULED, by=dispatcher)
    sr.add_comment("Thanks Maria, we have scheduled the repair.", by=dispatcher, public=True)
    sr.add_comment("Crew rota: Tuesday team", by=dispatcher, public=False)
    sr.change_status(Status.COMPLETED, by=dispatcher)

    def status_notes():
        (row,) = as_json(client.get(url("request", "json", sr.tracking_number)))
        return row["status"], row["status_notes"]

    # Completed since the comment, without a note: the comment no longer explains it.
    assert status_notes() == ("closed", None)
    # Reopened by the resident's survey answer: its note, not the scheduling comment.
    sr.change_status(Status.RECEIVED, note="The resident says it is not fixed.")
    assert status_notes() == ("open", "The resident says it is not fixed.")
    sr.add_comment("Sending the crew back on Friday.", by=dispatcher, public=True)
    assert status_notes() == ("open", "Sending the crew back on Friday.")


@pytest.mark.parametrize(
    "when",
    [
        datetime(2026, 7, 1, 12, 0, 0, 999_999, tzinfo=UTC),
        datetime(2026, 11, 1, 5, 59, 59, 500_000, tzinfo=UTC),  # 01:59:59 EDT, then EST
        datetime(2026, 11, 1, 6, 0, 0, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 500_000, tzinfo=UTC),
    ],
)
def test_datetimes_read_as_microseconds_show_as_w3c(when):
    tz = timezone.get_current_timezone()
    microseconds = (when - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    assert w3c_from_epoch(microseconds, tz) == w3c(when, tz)
    assert w3c_from_epoch(None, tz) is None


def test_xml_escapes_what_residents_type(client, pothole):
    sr = public_request(pothole, description="Fish & chips <shop> sign\x0b fell >here")
    xml = client.get(url("request", "xml", sr.tracking_number))
    assert b"<description>Fish &amp; chips &lt;shop&gt; sign fell &gt;here</description>" in (
        xml.content
    )
    assert as_xml(xml).findtext("request/description") == "Fish & chips <shop> sign fell >here"


def test_parent_of_a_duplicate_is_not_named_when_hidden(client, pothole):
    parent = public_request(pothole, is_public=False)
    sr = public_request(pothole, duplicate_of=parent)
    (row,) = as_json(client.get(url("request", "json", sr.tracking_number), {"extensions": "1"}))
    assert row["extended_attributes"]["duplicate"] is True
    assert row["extended_attributes"]["parent_service_request_id"] is None


# --- POST requests ---------------------------------------------------------------------------


def test_post_creates_a_request_through_the_portal_intake(client, pothole, questions, api_key):
    body = as_json(client.post(url("requests"), post_data(pothole, api_key)))
    (created,) = body
    assert set(created) == {"service_request_id", "token", "service_notice", "account_id"}
    assert created["service_notice"] == "Potholes are usually filled within 3 working days."
    assert created["account_id"] == "acct-7"

    sr = ServiceRequest.objects.get(tracking_number=created["service_request_id"])
    assert sr.channel == Channel.API
    assert sr.api_client == ApiClient.objects.get()
    assert (sr.lat, sr.lng) == CITY_CENTER
    assert (sr.address, sr.address_id) == ("12 Main St", "A-1001")
    assert sr.reporter_name == "Maria Lopez"
    assert (sr.reporter_email, sr.reporter_phone) == ("maria@example.org", "617-555-0142")
    assert (sr.reporter_device_id, sr.reporter_account_id) == ("device-42", "acct-7")
    assert sr.expected_at is not None and sr.due_at is not None
    answers = {a.attribute.code: a.value for a in AttributeAnswer.objects.filter(request=sr)}
    assert answers == {"size": "large", "hazards": ["school", "bikes"]}
    assert sr.history.filter(action=HistoryEntry.Action.CREATED).count() == 1


def test_post_answers_in_xml_and_accepts_every_location_form(client, pothole, api_key):
    only_address = post_data(pothole, api_key, lat=None, long=None, address_id=None)
    root = as_xml(client.post(url("requests", "xml"), only_address))
    assert root.tag == "service_requests"
    assert children(root[0]) == ["service_request_id", "token", "service_notice", "account_id"]

    only_id = post_data(pothole, api_key, lat=None, long=None, address_string=None)
    (created,) = as_json(client.post(url("requests"), only_id))
    sr = ServiceRequest.objects.get(tracking_number=created["service_request_id"])
    assert sr.address_id == "A-1001" and sr.address == "" and sr.lat is None

    only_point = post_data(pothole, api_key, address_string=None, address_id=None)
    (created,) = as_json(client.post(url("requests"), only_point))
    assert ServiceRequest.objects.get(tracking_number=created["service_request_id"]).lat


def test_post_accepts_api_key_in_the_query_and_a_missing_description(client, pothole, api_key):
    data = post_data(pothole, None, description=None)
    (created,) = as_json(client.post(url("requests") + f"?api_key={api_key}", data))
    sr = ServiceRequest.objects.get(tracking_number=created["service_request_id"])
    assert sr.description == "Pothole"


def test_post_ignores_attributes_the_service_does_not_ask(client, pothole, questions, api_key):
    # FixMyStreet sends its own attributes (report_url, title …) to every server.
    data = post_data(pothole, api_key, **{"attribute[report_url]": "https://fms.example/1"})
    data["attribute[note]"] = "informational questions take no answer"
    (created,) = as_json(client.post(url("requests"), data))
    codes = AttributeAnswer.objects.filter(
        request__tracking_number=created["service_request_id"]
    ).values_list("attribute__code", flat=True)
    assert set(codes) == {"size", "hazards"}


def test_post_checks_number_and_datetime_answers(client, pothole, questions, api_key):
    good = post_data(
        pothole, api_key, **{"attribute[depth]": "12.5", "attribute[seen]": "2026-01-02 08:00"}
    )
    (created,) = as_json(client.post(url("requests"), good))
    answers = dict(
        AttributeAnswer.objects.filter(
            request__tracking_number=created["service_request_id"]
        ).values_list("attribute__code", "value")
    )
    assert answers["depth"] == "12.5"
    assert W3C.match(answers["seen"]) and answers["seen"].startswith("2026-01-02T08:00:00")


@pytest.mark.parametrize("fmt", ["json", "xml"])
@pytest.mark.parametrize(
    ("overrides", "status", "fragment"),
    [
        ({"api_key": None}, 403, "Invalid api_key"),
        ({"api_key": "cd0000000000.nope"}, 403, "Invalid api_key"),
        ({"api_key": "garbage"}, 403, "Invalid api_key"),
        ({"service_code": "unicorns"}, 400, "service_code unicorns is not a service"),
        ({"service_code": None}, 400, "service_code is required"),
        (
            {"lat": None, "long": None, "address_string": None, "address_id": None},
            400,
            "A location is required",
        ),
        ({"long": None}, 400, "lat and long must be given together"),
        ({"lat": "north"}, 400, "lat must be a number"),
        ({"lat": "nan"}, 400, "lat must be between"),
        ({"lat": str(OUTSIDE[0]), "long": str(OUTSIDE[1])}, 400, "outside the area"),
        ({"attribute[size]": None}, 400, "attribute[size] is required"),
        ({"attribute[size]": "huge"}, 400, "attribute[size] has no choice 'huge'"),
        (
            {"attribute[size][]": ["small", "large"], "attribute[size]": None},
            400,
            "takes one value",
        ),
        ({"attribute[hazards][]": ["school", "lava"]}, 400, "has no choice 'lava'"),
        ({"attribute[depth]": "deep"}, 400, "attribute[depth] must be a number"),
        ({"attribute[depth]": "Infinity"}, 400, "attribute[depth] must be a number"),
        ({"attribute[seen]": "last week"}, 400, "attribute[seen] must be a W3C date-time"),
        ({"description": "x" * 4001}, 400, "description must be at most 4000 characters"),
        ({"description": "nul\x00byte"}, 400, "null characters"),
        ({"email": "not-an-address"}, 400, "email is not a valid email address"),
    ],
)
def test_bad_posts_are_refused_with_errors_and_store_nothing(
    client, pothole, questions, api_key, overrides, status, fragment, fmt
):
    response = client.post(url("requests", fmt), post_data(pothole, api_key, **overrides))
    assert_errors(response, status, fragment, fmt)
    assert not ServiceRequest.objects.exists()
    assert not AttributeAnswer.objects.exists()


def test_revoked_or_deactivated_keys_stop_working(client, pothole, api_key):
    api = ApiClient.objects.get()
    api_client_revoke(api)
    assert_errors(client.post(url("requests"), post_data(pothole, api_key)), 403, "api_key")
    new_key = api_client_issue_key(api)
    assert as_json(client.post(url("requests"), post_data(pothole, new_key)))
    assert_errors(client.post(url("requests"), post_data(pothole, api_key)), 403, "api_key")
    ApiClient.objects.update(is_active=False)
    assert_errors(client.post(url("requests"), post_data(pothole, new_key)), 403, "api_key")


def test_only_a_hash_of_the_key_is_stored(api_key):
    api = ApiClient.objects.get()
    prefix, secret = api_key.split(".")
    assert api.key_prefix == prefix and len(prefix) == 12
    assert secret not in api.key_hash and api_key not in api.key_hash


def test_each_key_is_rate_limited(client, pothole, api_key):
    ApiClient.objects.update(requests_per_minute=2)
    for _attempt in range(2):
        as_json(client.post(url("requests"), post_data(pothole, api_key)))
    response = client.post(url("requests", "xml"), post_data(pothole, api_key))
    assert_errors(response, 429, "Too many requests", "xml")
    assert response["Retry-After"] == "60"
    assert ServiceRequest.objects.count() == 2
    assert IntakeThrottle.objects.filter(key__startswith="open311:").exists()


def test_multipart_post_with_a_photo(client, pothole, api_key, settings):
    data = post_data(pothole, api_key)
    data["media"] = upload(gps=(1.0, 2.0))
    (created,) = as_json(client.post(url("requests"), data))  # the test client sends multipart
    sr = ServiceRequest.objects.get(tracking_number=created["service_request_id"])
    (photo,) = sr.photos.all()
    assert photo.width == 800
    (row,) = as_json(client.get(url("request", "json", sr.tracking_number)))
    assert row["media_url"] == f"{settings.SITE_URL}/photos/{photo.id}/full/"


def test_multipart_post_with_a_file_that_is_no_photo(client, pothole, api_key):
    data = post_data(pothole, api_key)
    data["media"] = upload("notes.txt", data=b"just text", content_type="text/plain")
    assert_errors(client.post(url("requests"), data), 400, "media: notes.txt is not a photo")
    assert not ServiceRequest.objects.exists()


def test_post_without_a_csrf_token_is_accepted(pothole, api_key):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    assert as_json(strict.post(url("requests"), post_data(pothole, api_key)))


def test_posted_request_is_routed_and_notified_like_a_portal_one(
    client, pothole, api_key, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        (created,) = as_json(client.post(url("requests"), post_data(pothole, api_key)))
    assert len(callbacks) == 1  # the intake task (routing, then the confirmation), as the portal
    sr = ServiceRequest.objects.get(tracking_number=created["service_request_id"])

    assert request_process_intake(sr.pk) is True  # what the worker does
    sr.refresh_from_db()
    assert sr.department == pothole.department and sr.status == Status.ASSIGNED
    sent_to = Notification.objects.filter(request=sr).values_list("recipient", "kind")
    assert set(sent_to) == {
        ("maria@example.org", Notification.Kind.RECEIVED),
        ("maria@example.org", Notification.Kind.STATUS),
    }
    (row,) = as_json(client.get(url("request", "json", sr.tracking_number)))
    assert row["agency_responsible"] == "Streets"


def test_wrong_method_and_unknown_paths_answer_in_open311_format(client, db):
    assert_errors(client.delete(url("requests")), 405, "DELETE")
    assert_errors(client.post(url("services", "xml")), 405, "POST", "xml")
    assert_errors(client.get("/open311/v2/nothing.xml"), 404, "No such", "xml")
    assert_errors(client.get("/open311/v2/requests.csv"), 404, "No such")


def test_malformed_multipart_body_is_a_400(client, db):
    response = client.generic(
        "POST",
        url("requests"),
        b"--xyz\r\nContent-Disposition: form-data; name=\r\n\r\n",
        content_type="multipart/form-data; boundary=",
    )
    assert response.status_code == 400
    assert response["Content-Type"].startswith("application/json")


# --- Tokens ----------------------------------------------------------------------------------


def test_token_leads_to_the_request(client, pothole, api_key):
    (created,) = as_json(client.post(url("requests"), post_data(pothole, api_key)))
    token = created["token"]
    assert created["service_request_id"] not in token or ":" in token

    (found,) = as_json(client.get(url("token", "json", token)))
    assert found == {"service_request_id": created["service_request_id"], "token": token}
    root = as_xml(client.get(url("token", "xml", token), {"jurisdiction_id": "city.example"}))
    assert root.tag == "service_requests"
    assert children(root[0]) == ["service_request_id", "token"]
    # As the reference servers answer.
    reference = reference_xml("ruby-open311-spec-fixtures", "request_id_from_token.xml")
    assert children(reference.getroot()[0]) == children(root[0])


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_forged_or_hidden_tokens_are_404(client, pothole, fmt):
    hidden = public_request(pothole, is_public=False)
    assert_errors(client.get(url("token", fmt, request_token(hidden))), 404, "token", fmt)
    assert_errors(client.get(url("token", fmt, "IkNELTIyMjItMjIyMiI:forged")), 404, "token", fmt)


# --- Service request updates (mySociety) -----------------------------------------------------


def test_service_request_updates_follow_status_changes_and_public_comments(
    client, pothole, dispatcher
):
    sr = public_request(pothole)
    sr.change_status(Status.IN_PROGRESS, by=dispatcher)
    sr.add_comment("Crew is on the way", by=dispatcher, public=True)
    sr.add_comment("Internal only", by=dispatcher, public=False)
    sr.change_status(
        Status.CLOSED, by=dispatcher, close_reason=CloseReason.DUPLICATE, note="See other"
    )
    hidden = public_request(pothole, is_public=False)
    hidden.change_status(Status.IN_PROGRESS, by=dispatcher)

    start = (timezone.now() - timedelta(hours=1)).isoformat()
    body = as_json(client.get(url("updates"), {"start_date": start, "api_key": "anything"}))
    assert [(u["status"], u["description"]) for u in body] == [
        ("IN_PROGRESS", None),
        ("IN_PROGRESS", "Crew is on the way"),
        ("DUPLICATE", "Duplicate of another request — See other"),
    ]
    assert {u["service_request_id"] for u in body} == {sr.tracking_number}
    assert len({u["update_id"] for u in body}) == 3
    assert all(W3C.match(u["updated_datetime"]) for u in body)

    root = as_xml(client.get(url("updates", "xml"), {"start_date": start}))
    assert root.tag == "service_requests_updates"
    assert [u.tag for u in root] == ["request_update"] * 3
    assert children(root[0]) == [
        "update_id",
        "service_request_id",
        "status",
        "updated_datetime",
        "description",
        "media_url",
    ]
    assert b"Internal only" not in client.get(url("updates", "xml"), {"start_date": start}).content

    later = (timezone.now() + timedelta(minutes=5)).isoformat()
    assert as_json(client.get(url("updates"), {"start_date": later})) == []
    page = as_json(client.get(url("updates"), {"start_date": start, "page_size": 1, "page": 2}))
    assert [u["description"] for u in page] == ["Crew is on the way"]
    assert_errors(client.get(url("updates"), {"end_date": "soon"}), 400, "end_date")


# --- OpenAPI and the admin -------------------------------------------------------------------


def test_openapi_description_is_served(client, db):
    body = as_json(client.get(reverse("open311:openapi")))
    assert body["openapi"].startswith("3.")
    assert "/open311/v2/requests.{format}" in body["paths"]
    assert set(body["paths"]["/open311/v2/requests.{format}"]) == {"get", "post"}


def test_admin_issues_a_key_once_and_revokes_it(client, pothole):
    admin_user = staff_user("boss", StaffRole.ADMINISTRATOR)
    client.force_login(admin_user)
    response = client.post(
        reverse("admin:requests_app_apiclient_add"),
        {"name": "FixMyStreet", "contact_email": "fms@example.org", "requests_per_minute": "30"},
    )
    assert response.status_code == 200
    api = ApiClient.objects.get(name="FixMyStreet")
    key = re.search(rb"<code[^>]*>([^<]+)</code>", response.content).group(1).decode()
    assert key.startswith(api.key_prefix + ".")
    assert "no-store" in response["Cache-Control"]
    change_page = client.get(reverse("admin:requests_app_apiclient_change", args=[api.pk]))
    assert key.encode() not in change_page.content

    client.logout()
    assert as_json(client.post(url("requests"), post_data(pothole, key)))

    client.force_login(admin_user)
    client.post(
        reverse("admin:requests_app_apiclient_changelist"),
        {"action": "revoke_keys", "_selected_action": [api.pk]},
    )
    api.refresh_from_db()
    assert not api.is_active and api.revoked_at is not None
    assert_errors(client.post(url("requests"), post_data(pothole, key)), 403, "api_key")

    reissued = client.post(
        reverse("admin:requests_app_apiclient_changelist"),
        {"action": "issue_new_key", "_selected_action": [api.pk]},
    )
    new_key = re.search(rb"<code[^>]*>([^<]+)</code>", reissued.content).group(1).decode()
    assert new_key != key
    assert as_json(client.post(url("requests"), post_data(pothole, new_key)))


def test_only_administrators_manage_api_clients(client, dispatcher):
    client.force_login(dispatcher)
    assert client.get(reverse("admin:requests_app_apiclient_changelist")).status_code == 403


def test_admin_checks_the_choices_of_a_question(client, pothole):
    client.force_login(staff_user("boss", StaffRole.ADMINISTRATOR))
    data = {
        "category": pothole.pk,
        "order": 1,
        "code": "size",
        "description": "How big?",
        "datatype": "singlevaluelist",
        "datatype_description": "",
        "values": "[]",
    }
    response = client.post(reverse("admin:requests_app_serviceattribute_add"), data)
    assert response.status_code == 200 and not ServiceAttribute.objects.exists()
    data["values"] = json.dumps([{"key": "s", "name": "Small"}])
    response = client.post(reverse("admin:requests_app_serviceattribute_add"), data)
    assert response.status_code == 302
    assert ServiceAttribute.objects.get().values == [{"key": "s", "name": "Small"}]


def test_datetimes_carry_the_city_offset(client, pothole, settings):
    sr = public_request(pothole, created_at=datetime(2026, 7, 1, 12, 0, tzinfo=UTC))
    (row,) = as_json(client.get(url("request", "json", sr.tracking_number)))
    assert row["requested_datetime"] == "2026-07-01T08:00:00-04:00"  # America/New_York, summer
