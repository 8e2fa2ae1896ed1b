"""Garbage in every form and query we own gets a clear 4xx (or is ignored), never a 500."""

import pytest

from requests_app.models import StaffRole

from .factories import ServiceRequestFactory, staff_user

GARBAGE = {
    "category": "x'; DROP TABLE",
    "lat": "nan",
    "lng": "1e999",
    "description": "\x00" * 3,
    "address": "<img src=x onerror=alert(1)>" * 50,
    "email": "not-an-email",
    "number": "%%%%",
    "start": "2026-13-45",
    "end": "yesterday",
    "department": "abc",
    "district": "-1",
    "channel": "fax",
    "zoom": "999999",
    "metric": "../../etc",
    "page": "-5",
    "kind": "x",
    "rating": "11",
    "fixed": "maybe",
    "bbox": "a,b,c,d",
    "q": "\ud800",
}
PUBLIC = [
    "/",
    "/report/",
    "/report/nearby/",
    "/track/",
    "/transparency/",
    "/transparency/data.csv",
    "/requests/CD-AAAA-AAAA/",
    "/photos/00000000-0000-0000-0000-000000000000/thumb/",
    "/notifications/unsubscribe/garbage/",
    "/surveys/garbage/",
]
STAFF = [
    "/dashboard/",
    "/dashboard/grid.json",
    "/dashboard/cell.json",
    "/dashboard/export.csv",
    "/dashboard/export.geojson",
    "/crew/",
    "/admin/requests_app/servicerequest/",
    "/admin/routing/routingrule/simulate/",
]


def _safe(text):
    return {k: v.encode("utf-8", "replace").decode() for k, v in text.items()}


@pytest.mark.parametrize("url", PUBLIC)
def test_public_pages_answer_garbage_without_server_error(client, pothole, url):
    ServiceRequestFactory(category=pothole)
    assert client.get(url, _safe(GARBAGE)).status_code < 500
    assert client.post(url, _safe(GARBAGE)).status_code < 500


@pytest.mark.parametrize("url", STAFF)
def test_staff_pages_answer_garbage_without_server_error(client, pothole, url):
    ServiceRequestFactory(category=pothole, department=pothole.department)
    client.force_login(staff_user("dispatcher", StaffRole.DISPATCHER))
    assert client.get(url, _safe(GARBAGE)).status_code < 500
