"""The resident portal: reporting a problem, the confirmation and the public status page."""

import json

import pytest
from django.test import Client
from django.urls import reverse

from requests_app.models import IntakeThrottle, ServiceRequest, SLAPolicy, Status
from requests_app.photos import process_photo
from requests_app.services import photo_attach

from .conftest import upload
from .factories import CITY_CENTER, CategoryFactory, ServiceRequestFactory
from .photos import make_image

OUTSIDE = (40.7128, -74.0060)  # New York: well outside the default service area
REPORT_URL = "/report/"


def report_data(category, /, **overrides):
    data = {
        "category": category.pk,
        "description": "Deep pothole by the bus stop",
        "address": "12 Main St",
        "lat": "",
        "lng": "",
        "name": "Maria Lopez",
        "email": "maria@example.org",
        "phone": "617-555-0142",
        "website": "",
    }
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not None}


def post_report(client, category, /, photos=(), **overrides):
    data = report_data(category, **overrides)
    if photos:
        data["photos"] = list(photos)
    return client.post(REPORT_URL, data)


def assert_typed_answers_kept(html):
    assert "Deep pothole by the bus stop" in html
    assert 'value="12 Main St"' in html
    assert 'value="Maria Lopez"' in html
    assert 'value="maria@example.org"' in html
    assert 'value="617-555-0142"' in html


# --- The report form ---------------------------------------------------------------------


def test_report_form_offers_active_categories_grouped(client, pothole):
    CategoryFactory(code="old", name="Retired category", is_active=False)

    response = client.get(REPORT_URL)

    assert response.status_code == 200
    html = response.content.decode()
    assert '<optgroup label="Streets and sidewalks">' in html
    assert "Pothole" in html
    assert "Retired category" not in html


def test_category_link_from_home_preselects_the_category(client, pothole):
    response = client.get(REPORT_URL, {"category": "pothole"})
    assert f'<option value="{pothole.pk}" selected>' in response.content.decode()


def test_home_page_links_to_categories_and_counts_open_requests(client, pothole):
    ServiceRequestFactory(category=pothole)
    ServiceRequestFactory(category=pothole, is_public=False)

    response = client.get("/")

    assert response.status_code == 200
    html = response.content.decode()
    assert "/report/?category=pothole" in html
    assert "1 open request in the city" in html


def test_successful_report_redirects_to_confirmation_with_tracking_number(client, pothole):
    lat, lng = CITY_CENTER
    response = post_report(client, pothole, lat=str(lat), lng=str(lng))

    service_request = ServiceRequest.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse(
        "requests_app:confirmation", args=[service_request.tracking_number]
    )
    assert service_request.category == pothole
    assert service_request.description == "Deep pothole by the bus stop"
    assert (service_request.lat, service_request.lng) == (lat, lng)
    assert service_request.reporter_email == "maria@example.org"
    assert service_request.channel == "web"
    assert service_request.language == "en"

    page = client.get(response["Location"])
    assert page.status_code == 200
    html = page.content.decode()
    assert service_request.tracking_number in html
    assert "Thank you, we received your report" in html
    assert service_request.get_absolute_url() in html


def test_thanks_come_from_a_signed_cookie_not_a_session_row(client, pothole):
    from django.contrib.sessions.models import Session

    lat, lng = CITY_CENTER
    response = post_report(client, pothole, lat=str(lat), lng=str(lng))
    number = ServiceRequest.objects.get().tracking_number

    assert not Session.objects.exists()
    assert response.cookies["submitted"]["httponly"]
    assert "Thank you, we received your report" in client.get(response["Location"]).content.decode()
    # Someone else opening the same confirmation page is not thanked for it.
    other = Client()
    assert "Thank you, we received" not in other.get(response["Location"]).content.decode()
    client.cookies["submitted"] = client.cookies["submitted"].value.replace(number, "CD-AAAA-AAAA")
    assert "Thank you, we received" not in client.get(response["Location"]).content.decode()


def test_report_with_address_only_is_accepted(client, pothole):
    response = post_report(client, pothole)

    assert response.status_code == 302
    service_request = ServiceRequest.objects.get()
    assert service_request.address == "12 Main St"
    assert service_request.lat is None


def test_contact_details_are_optional(client, pothole):
    response = post_report(client, pothole, name="", email="", phone="")
    assert response.status_code == 302
    assert ServiceRequest.objects.get().reporter_email == ""


def test_missing_category_description_and_location_are_each_explained(client, pothole):
    response = post_report(client, pothole, category="", description="   ", address="")

    assert response.status_code == 400
    form = response.context["form"]
    assert set(form.errors) >= {"category", "description", "address"}
    html = response.content.decode()
    assert "Please tell us where: type an address or pick the spot on the map." in html
    assert "Please correct the marked fields below." in html
    assert 'value="Maria Lopez"' in html
    assert not ServiceRequest.objects.exists()


def test_pin_outside_service_area_is_rejected_and_answers_kept(client, pothole):
    response = post_report(client, pothole, lat=str(OUTSIDE[0]), lng=str(OUTSIDE[1]))

    assert response.status_code == 400
    html = response.content.decode()
    assert "outside the area Demo City serves" in html
    assert_typed_answers_kept(html)
    assert not ServiceRequest.objects.exists()


def test_half_a_map_position_is_rejected(client, pothole):
    response = post_report(client, pothole, lat=str(CITY_CENTER[0]), lng="")

    assert response.status_code == 400
    assert "The map position was incomplete" in response.content.decode()
    assert not ServiceRequest.objects.exists()


@pytest.mark.parametrize("bad", ["nan", "inf", "not-a-number", "1e400"])
def test_garbage_coordinates_are_rejected_not_stored(client, pothole, bad):
    response = post_report(client, pothole, lat=bad, lng=str(CITY_CENTER[1]))

    assert response.status_code == 400
    assert not ServiceRequest.objects.exists()


def test_inactive_category_cannot_be_reported(client, pothole):
    retired = CategoryFactory(code="retired", is_active=False)

    response = post_report(client, retired)

    assert response.status_code == 400
    assert "category" in response.context["form"].errors


def test_a_category_retired_in_the_admin_is_refused_from_the_next_report(client, pothole):
    assert post_report(client, pothole).status_code == 302  # the categories are now cached

    pothole.is_active = False
    pothole.save()
    response = post_report(client, pothole)

    assert response.status_code == 400
    assert "category" in response.context["form"].errors
    assert ServiceRequest.objects.count() == 1


def test_a_changed_deadline_applies_to_the_next_report(client, pothole):
    policy = SLAPolicy.objects.create(name="Potholes", acknowledge_hours=24, resolve_hours=72)
    pothole.sla_policy = policy
    pothole.save()
    assert post_report(client, pothole).status_code == 302  # the categories are now cached

    policy.resolve_hours = 144
    policy.save()

    assert post_report(client, pothole).status_code == 302
    first, second = ServiceRequest.objects.order_by("pk")
    assert second.due_at - second.created_at > first.due_at - first.created_at


def test_photo_gps_places_a_report_without_a_pin(client, pothole):
    photo = upload("gps.jpg", make_image(size=(60, 40), gps=CITY_CENTER))

    response = post_report(client, pothole, photos=[photo], address="")

    assert response.status_code == 302
    service_request = ServiceRequest.objects.get()
    assert service_request.lat == pytest.approx(CITY_CENTER[0], abs=1e-4)
    assert service_request.lng == pytest.approx(CITY_CENTER[1], abs=1e-4)


def test_pin_wins_over_photo_gps(client, pothole):
    pin = (42.3000, -71.1000)
    photo = upload("gps.jpg", make_image(size=(60, 40), gps=CITY_CENTER))

    response = post_report(client, pothole, photos=[photo], lat=str(pin[0]), lng=str(pin[1]))

    assert response.status_code == 302
    service_request = ServiceRequest.objects.get()
    assert (service_request.lat, service_request.lng) == pin


def test_photo_gps_outside_the_area_does_not_block_a_report_with_an_address(client, pothole):
    # A photo taken earlier, elsewhere, is no reason to refuse the place the resident typed.
    photo = upload("old.jpg", make_image(size=(60, 40), gps=OUTSIDE))

    response = post_report(client, pothole, photos=[photo])

    assert response.status_code == 302
    service_request = ServiceRequest.objects.get()
    assert service_request.address == "12 Main St"
    assert service_request.lat is None


def test_photo_gps_outside_the_area_and_no_address_asks_where(client, pothole):
    photo = upload("old.jpg", make_image(size=(60, 40), gps=OUTSIDE))

    response = post_report(client, pothole, photos=[photo], address="")

    assert response.status_code == 400
    assert "Please tell us where" in response.content.decode()
    assert not ServiceRequest.objects.exists()


def test_honeypot_filled_in_creates_no_request(client, pothole):
    response = post_report(client, pothole, website="http://spam.example")

    assert response.status_code == 400
    assert "Your report could not be accepted." in response.content.decode()
    assert not ServiceRequest.objects.exists()


def test_honeypot_field_is_rendered_empty_even_after_a_bot_filled_it(client, pothole):
    response = post_report(client, pothole, website="http://spam.example")
    assert "http://spam.example" not in response.content.decode()


# --- Rate limit ----------------------------------------------------------------------------


def test_third_report_in_an_hour_is_refused_with_429_and_answers_kept(client, pothole, settings):
    settings.REPORTS_PER_IP_PER_HOUR = 2

    assert post_report(client, pothole).status_code == 302
    assert post_report(client, pothole).status_code == 302
    response = post_report(client, pothole)

    assert response.status_code == 429
    html = response.content.decode()
    assert "Too many reports have come from your connection in the last hour." in html
    assert_typed_answers_kept(html)
    assert ServiceRequest.objects.count() == 2


def test_rate_limit_is_per_address(client, pothole, settings):
    settings.REPORTS_PER_IP_PER_HOUR = 1

    assert client.post(REPORT_URL, report_data(pothole), REMOTE_ADDR="10.0.0.1").status_code == 302
    assert client.post(REPORT_URL, report_data(pothole), REMOTE_ADDR="10.0.0.2").status_code == 302
    assert client.post(REPORT_URL, report_data(pothole), REMOTE_ADDR="10.0.0.1").status_code == 429


def test_spoofed_forwarded_for_does_not_escape_the_rate_limit(client, pothole, settings):
    # Behind one reverse proxy, only the address the proxy appended can be trusted; the
    # entries before it are whatever the client chose to send.
    settings.USE_X_FORWARDED_FOR = True
    settings.REPORTS_PER_IP_PER_HOUR = 2

    statuses = [
        client.post(
            REPORT_URL, report_data(pothole), HTTP_X_FORWARDED_FOR=f"198.51.100.{n}, 203.0.113.7"
        ).status_code
        for n in range(3)
    ]

    assert statuses == [302, 302, 429]
    assert ServiceRequest.objects.count() == 2


def test_forwarded_for_identifies_clients_behind_the_proxy(client, pothole, settings):
    settings.USE_X_FORWARDED_FOR = True
    settings.REPORTS_PER_IP_PER_HOUR = 1

    first = client.post(REPORT_URL, report_data(pothole), HTTP_X_FORWARDED_FOR="203.0.113.7")
    second = client.post(REPORT_URL, report_data(pothole), HTTP_X_FORWARDED_FOR="203.0.113.8")

    assert (first.status_code, second.status_code) == (302, 302)
    assert IntakeThrottle.objects.filter(key="report:203.0.113.7").exists()


def test_garbage_forwarded_for_falls_back_to_the_connection_address(client, pothole, settings):
    settings.USE_X_FORWARDED_FOR = True

    response = client.post(REPORT_URL, report_data(pothole), HTTP_X_FORWARDED_FOR="x" * 300)

    assert response.status_code == 302
    assert IntakeThrottle.objects.filter(key="report:127.0.0.1").exists()


def test_staff_are_not_rate_limited(client, pothole, settings, dispatcher):
    settings.REPORTS_PER_IP_PER_HOUR = 1
    client.force_login(dispatcher)

    assert [post_report(client, pothole).status_code for _ in range(3)] == [302, 302, 302]


# --- Language ------------------------------------------------------------------------------


def test_report_made_after_switching_to_spanish_is_in_spanish(client, pothole):
    response = client.post("/i18n/setlang/", {"language": "es", "next": REPORT_URL})
    assert response.status_code == 302

    page = client.get(REPORT_URL)
    assert '<html lang="es">' in page.content.decode()

    assert post_report(client, pothole).status_code == 302
    assert ServiceRequest.objects.get().language == "es"


# --- Confirmation and status pages -----------------------------------------------------------


def small_photo(name):
    return process_photo(upload(name, make_image(size=(60, 40))))


@pytest.fixture
def reported(pothole):
    service_request = ServiceRequestFactory(
        category=pothole,
        description="Deep pothole by the bus stop",
        reporter_name="Maria Lopez",
        reporter_email="maria@example.org",
        reporter_phone="617-555-0142",
    )
    shown = photo_attach(service_request, small_photo("a.jpg"))
    hidden = photo_attach(service_request, small_photo("b.jpg"))
    hidden.is_public = False
    hidden.save()
    service_request.add_comment("Reporter sounded upset, neighbour dispute", public=False)
    service_request.add_comment("A crew will fill it this week", public=True)
    return service_request, shown, hidden


def test_status_page_shows_what_the_public_may_see(client, reported):
    service_request, shown, _hidden = reported

    response = client.get(service_request.get_absolute_url())

    assert response.status_code == 200
    html = response.content.decode()
    assert "Pothole" in html
    assert service_request.tracking_number in html
    assert 'data-testid="status">Received<' in html
    assert "Deep pothole by the bus stop" in html
    assert shown.get_thumbnail_url() in html
    assert "A crew will fill it this week" in html


def test_status_page_never_shows_reporter_details_internal_notes_or_hidden_photos(client, reported):
    service_request, _shown, hidden = reported

    html = client.get(service_request.get_absolute_url()).content.decode()

    for private in (
        "Maria Lopez",
        "maria@example.org",
        "617-555-0142",
        "555-0142",
        "neighbour dispute",
        str(hidden.id),
    ):
        assert private not in html


def test_confirmation_page_never_shows_reporter_details(client, reported):
    service_request, _shown, _hidden = reported

    html = client.get(
        reverse("requests_app:confirmation", args=[service_request.tracking_number])
    ).content.decode()

    assert service_request.tracking_number in html
    for private in ("Maria Lopez", "maria@example.org", "617-555-0142"):
        assert private not in html


def test_status_page_follows_status_changes(client, reported, dispatcher):
    service_request, _shown, _hidden = reported
    service_request.change_status(Status.IN_PROGRESS, by=dispatcher)

    html = client.get(service_request.get_absolute_url()).content.decode()

    assert 'data-testid="status">In progress<' in html


def test_hidden_request_is_404_everywhere_public(client, reported):
    service_request, shown, _hidden = reported
    ServiceRequest.objects.filter(pk=service_request.pk).update(is_public=False)
    number = service_request.tracking_number

    assert client.get(reverse("requests_app:status", args=[number])).status_code == 404
    assert client.get(reverse("requests_app:confirmation", args=[number])).status_code == 404
    assert client.get(reverse("requests_app:lookup"), {"number": number}).status_code == 404
    assert client.get(shown.get_absolute_url()).status_code == 404


def test_unknown_tracking_number_is_404(client, db):
    assert client.get("/requests/CD-2345-6789/").status_code == 404


def test_status_page_of_a_request_without_location_or_photos(client, pothole):
    service_request = ServiceRequestFactory(category=pothole, lat=None, lng=None, address="")

    response = client.get(service_request.get_absolute_url())

    assert response.status_code == 200
    assert 'id="map-marker"' not in response.content.decode()


def test_description_with_markup_is_shown_as_text(client, pothole):
    service_request = ServiceRequestFactory(
        category=pothole, description='<script>alert("x")</script> deep hole'
    )

    html = client.get(service_request.get_absolute_url()).content.decode()

    assert '<script>alert("x")</script>' not in html
    assert "&lt;script&gt;" in html


# --- What the status page reads (it skips queries when there is nothing to show) -------------


def test_status_page_shows_the_crews_photo_of_its_work_order(client, pothole, dispatcher):
    from requests_app.models import Crew, Photo, WorkOrder
    from requests_app.services import work_order_add_photo

    service_request = ServiceRequestFactory(category=pothole, department=pothole.department)
    crew = Crew.objects.create(name="Crew 1", department=pothole.department)
    order = WorkOrder.create_for([service_request], crew=crew, by=dispatcher)
    after = work_order_add_photo(order, small_photo("after.jpg"), kind=Photo.Kind.AFTER)

    html = client.get(service_request.get_absolute_url()).content.decode()

    assert after.get_thumbnail_url() in html


def test_status_page_shows_a_current_notice_around_the_request(client, pothole):
    from datetime import timedelta

    from django.utils import timezone

    from notifications.models import ServiceNotice

    service_request = ServiceRequestFactory(category=pothole)
    url = service_request.get_absolute_url()
    assert "Water main break" not in client.get(url).content.decode()

    now = timezone.now()
    notice = ServiceNotice.objects.create(
        title="Water main break on Main St",
        message="Crews on site until 6 pm.",
        center_lat=service_request.lat,
        center_lng=service_request.lng,
        radius_m=300,
        starts_at=now - timedelta(hours=1),
        ends_at=now + timedelta(hours=5),
    )
    assert "Water main break on Main St" in client.get(url).content.decode()

    ServiceNotice.objects.filter(pk=notice.pk).update(ends_at=now - timedelta(minutes=1))
    assert "Water main break" not in client.get(url).content.decode()


def test_status_page_without_photos_comments_or_notices_runs_two_queries(
    client, reported, django_assert_num_queries
):
    service_request, _shown, _hidden = reported
    plain = ServiceRequestFactory(category=service_request.category)

    # The request with whether it has photos or comments and whether a notice is current;
    # its status changes. Every field the page shows was in the first query.
    with django_assert_num_queries(2):
        page = client.get(plain.get_absolute_url())
    assert page.status_code == 200 and plain.tracking_number in page.content.decode()
    with django_assert_num_queries(4):  # and its photos, and its comments
        assert client.get(service_request.get_absolute_url()).status_code == 200
    plain.add_comment("Crew booked for Monday", public=True)
    with django_assert_num_queries(3):  # and its comments
        assert "Crew booked for Monday" in client.get(plain.get_absolute_url()).content.decode()


def test_cached_parts_of_the_page_follow_the_language(client, reported):
    service_request, _shown, _hidden = reported
    url = service_request.get_absolute_url()

    english = client.get(url, HTTP_ACCEPT_LANGUAGE="en").content.decode()
    spanish = client.get(url, HTTP_ACCEPT_LANGUAGE="es").content.decode()

    assert 'aria-label="Main"' in english and 'aria-label="Principal"' in spanish
    assert '<option value="es" selected>' in spanish
    assert '<option value="en" selected>' in english
    # The visitor's own token and path are never part of what is cached.
    assert f'name="next" type="hidden" value="{url}"' in spanish
    assert 'name="csrfmiddlewaretoken"' in spanish


def test_a_refused_report_is_still_counted(client, pothole, settings):
    settings.REPORTS_PER_IP_PER_HOUR = 1
    post_report(client, pothole)
    assert post_report(client, pothole).status_code == 429

    assert IntakeThrottle.objects.get(key="report:127.0.0.1").hits == 2
    assert ServiceRequest.objects.count() == 1


def test_a_report_with_mistakes_is_not_counted_but_shown_with_its_errors(client, pothole, settings):
    settings.REPORTS_PER_IP_PER_HOUR = 1
    post_report(client, pothole)

    response = post_report(client, pothole, description="")

    # Nothing would have been filed, so the limit has nothing to say about it yet.
    assert response.status_code == 400
    assert "This field is required." in response.content.decode()
    assert IntakeThrottle.objects.get(key="report:127.0.0.1").hits == 1


def test_a_resident_who_corrects_mistakes_is_not_blocked_by_the_limit(client, pothole, settings):
    # As QA found it: one report, one follow, then eight attempts with mistakes.
    settings.REPORTS_PER_IP_PER_HOUR = 10
    assert post_report(client, pothole).status_code == 302
    followed = ServiceRequest.objects.get()
    response = client.post(
        REPORT_URL,
        report_data(pothole, follow=followed.tracking_number, email="ana@example.org"),
    )
    assert response.status_code == 302
    not_an_image = upload("notes.jpg", data=b"not a picture")
    mistakes = [
        {"address": ""},
        {"email": "maria at example.org"},
        {"description": ""},
        {"category": ""},
        {"lat": str(OUTSIDE[0]), "lng": str(OUTSIDE[1])},
        {"email": "not-an-email"},
        {"lat": "1e400", "lng": "0"},
        {"address": ""},
    ]
    for overrides in mistakes:
        assert post_report(client, pothole, **overrides).status_code == 400, overrides
    assert post_report(client, pothole, photos=[not_an_image]).status_code == 400

    assert post_report(client, pothole).status_code == 302
    assert IntakeThrottle.objects.get(key="report:127.0.0.1").hits == 3
    assert ServiceRequest.objects.count() == 2


def test_a_follow_that_fails_is_not_counted(client, pothole, settings):
    settings.REPORTS_PER_IP_PER_HOUR = 1
    followed = ServiceRequestFactory(category=pothole)

    without_email = client.post(
        REPORT_URL, report_data(pothole, follow=followed.tracking_number, email="")
    )
    assert without_email.status_code == 400
    assert not IntakeThrottle.objects.exists()

    with_email = client.post(REPORT_URL, report_data(pothole, follow=followed.tracking_number))
    assert with_email.status_code == 302
    assert IntakeThrottle.objects.get(key="report:127.0.0.1").hits == 1
    assert post_report(client, pothole).status_code == 429


def test_a_filled_honeypot_still_counts_against_the_limit(client, pothole, settings):
    settings.REPORTS_PER_IP_PER_HOUR = 2

    statuses = [
        post_report(client, pothole, website="http://spam.example").status_code for _ in range(3)
    ]

    assert statuses == [400, 400, 429]
    assert IntakeThrottle.objects.get(key="report:127.0.0.1").hits == 3
    assert not ServiceRequest.objects.exists()


def test_the_second_step_counts_as_an_attempt(client, pothole, settings):
    # The "already reported nearby?" step files nothing, but the report was complete.
    ServiceRequestFactory(category=pothole)
    settings.REPORTS_PER_IP_PER_HOUR = 10

    response = post_report(
        client, pothole, lat=f"{CITY_CENTER[0]:.6f}", lng=f"{CITY_CENTER[1]:.6f}"
    )

    assert response.status_code == 200
    assert "Is it already reported?" in response.content.decode()
    assert IntakeThrottle.objects.get(key="report:127.0.0.1").hits == 1


@pytest.mark.django_db
def test_the_maps_speak_the_residents_language(client):
    def map_text(language):
        page = client.get("/", HTTP_ACCEPT_LANGUAGE=language)
        script = page.content.decode().split('id="map-settings" type="application/json">')[1]
        return json.loads(script.split("</script>")[0])["text"]

    assert map_text("en")["pinPlaced"] == "Pin placed at"
    assert map_text("es") == {
        "openRequest": "solicitud abierta",
        "openRequests": "solicitudes abiertas",
        "pinPlaced": "Marcador colocado en",
        "finding": "Buscando tu ubicación…",
        "unavailable": "Tu ubicación no está disponible. Toca el mapa o escribe una dirección.",
    }
