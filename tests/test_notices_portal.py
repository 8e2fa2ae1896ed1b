"""Service notices where residents meet them: home, the report form (before sending)."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from notifications.models import ServiceNotice
from requests_app.models import ServiceRequest

from .factories import CITY_CENTER


@pytest.fixture
def water_main(db):
    return ServiceNotice.objects.create(
        title="Water main break on Main St",
        message="Crews on site until 6 pm; no need to report low pressure.",
        center_lat=CITY_CENTER[0],
        center_lng=CITY_CENTER[1],
        radius_m=300,
        starts_at=timezone.now() - timedelta(hours=1),
        ends_at=timezone.now() + timedelta(hours=5),
    )


def report(client, pothole, lat, lng, **extra):
    return client.post(
        reverse("requests_app:report"),
        {
            "category": pothole.pk,
            "description": "Low water pressure and a pothole",
            "address": "",
            "lat": lat,
            "lng": lng,
            "email": "ana@example.org",
            **extra,
        },
    )


def test_notice_intercepts_a_report_inside_its_area(client, pothole, water_main):
    response = report(client, pothole, *CITY_CENTER)
    assert response.status_code == 200
    html = response.content.decode()
    assert "Water main break on Main St" in html and "File my report anyway" in html
    assert "Low water pressure and a pothole" in html  # what was typed is kept
    assert not ServiceRequest.objects.exists()

    filed = report(client, pothole, *CITY_CENTER, file_anyway="1")
    assert filed.status_code == 302
    assert ServiceRequest.objects.count() == 1


def test_report_outside_the_notice_is_filed_at_once(client, pothole, water_main):
    far = (CITY_CENTER[0] + 0.02, CITY_CENTER[1])  # about 2 km north
    assert report(client, pothole, *far).status_code == 302
    assert ServiceRequest.objects.count() == 1


def test_live_lookup_returns_the_notice_for_the_chosen_place(client, pothole, water_main):
    data = client.get(
        reverse("requests_app:nearby"),
        {"category": pothole.pk, "lat": CITY_CENTER[0], "lng": CITY_CENTER[1]},
    ).json()
    assert [n["title"] for n in data["notices"]] == ["Water main break on Main St"]


def test_home_lists_current_notices_only(client, water_main):
    ServiceNotice.objects.create(
        title="Old notice",
        message="Over",
        center_lat=CITY_CENTER[0],
        center_lng=CITY_CENTER[1],
        radius_m=100,
        starts_at=timezone.now() - timedelta(days=3),
        ends_at=timezone.now() - timedelta(days=2),
    )
    html = client.get(reverse("requests_app:home")).content.decode()
    assert "Water main break on Main St" in html and "Old notice" not in html
