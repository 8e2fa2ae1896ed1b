"""With DEBUG off, pages that are not there, or that fail, still look like the city's site
and speak the visitor's language; the server error page needs no database to show."""

import re

import pytest
from django.template.loader import render_to_string
from django.test import Client
from django.urls import path, reverse
from django.utils import translation
from django.utils.translation import gettext

from civicdesk.urls import urlpatterns as project_urls
from requests_app.models import StaffRole

from .factories import ServiceRequestFactory, staff_user
from .test_work_orders import crew, order  # noqa: F401  (fixtures)

pytestmark = pytest.mark.django_db


def broken_view(request):
    raise RuntimeError("something broke")


urlpatterns = [path("broken/", broken_view), *project_urls]


@pytest.fixture(autouse=True)
def _production(settings):
    settings.DEBUG = False


def _words(language, *msgids):
    """The page's words in `language`, as the catalogue has them (new ones are English
    until the lead merges their Spanish)."""
    with translation.override(language):
        return [gettext(msgid) for msgid in msgids]


@pytest.mark.parametrize("language, main_nav", [("en", "Main"), ("es", "Principal")])
def test_missing_pages_are_branded_and_in_the_visitors_language(client, language, main_nav):
    withdrawn = ServiceRequestFactory()
    withdrawn.withdraw_by_reporter()
    heading, home, track, number = _words(
        language,
        "We could not find that page",
        "Go to the home page",
        "Track a report",
        "Tracking number",
    )
    for url in [
        "/nonexistent/",
        reverse("requests_app:status", args=["CD-AAAA-BBBB"]),  # no such number
        withdrawn.get_absolute_url(),
    ]:
        response = client.get(url, HTTP_ACCEPT_LANGUAGE=language)
        body = response.content.decode()
        assert response.status_code == 404, url
        assert "404.html" in [t.name for t in response.templates]
        assert f'<html lang="{language}">' in body
        assert f'<nav aria-label="{main_nav}">' in body and 'class="language-switch"' in body
        assert f"<h1>{heading}</h1>" in body
        assert f'<a class="button primary" href="/">{home}</a>' in body
        # The tracking-number lookup, right there.
        main = body.split("<main", 1)[1]
        assert f"<h2>{track}</h2>" in main and f'<label for="id_number">{number}</label>' in main
        lookup = re.search(r'<form action="([^"]+)" method="get"', main)
        assert lookup[1] == reverse("requests_app:lookup")


def test_the_lookup_on_the_missing_page_finds_a_report(client):
    service_request = ServiceRequestFactory()
    form = re.search(
        r'<form action="([^"]+)".*?<input[^>]*name="(\w+)"',
        client.get("/nonexistent/").content.decode().split("<main", 1)[1],
        re.S,
    )
    found = client.get(form[1], {form[2]: service_request.tracking_number.lower()})
    assert found.status_code == 302 and found["Location"] == service_request.get_absolute_url()


@pytest.mark.urls(__name__)
@pytest.mark.parametrize("language", ["en", "es"])
def test_a_failing_page_shows_the_static_server_error_page(language):
    client = Client(raise_request_exception=False)
    response = client.get("/broken/", HTTP_ACCEPT_LANGUAGE=language)
    assert response.status_code == 500
    assert [t.name for t in response.templates] == ["500.html"]
    body = response.content.decode()
    (heading,) = _words(language, "Something went wrong on our side")
    assert f'<html lang="{language}">' in body and heading in body


def test_the_server_error_page_needs_no_request_and_no_database(django_assert_num_queries):
    with django_assert_num_queries(0), translation.override("es"):
        body = render_to_string("500.html")  # no context, as Django's handler renders it
    assert '<html lang="es">' in body and 'data-testid="server-error"' in body
    # Nothing it could fail to fetch: no style sheet (and no <style>, which the CSP blocks).
    assert "<link" not in body and "<style" not in body and "<script" not in body


def test_a_refused_action_is_a_branded_403(client, order):  # noqa: F811
    client.force_login(staff_user("dora", StaffRole.DIRECTOR))
    response = client.post(reverse("crew:start", args=[order.pk]), HTTP_ACCEPT_LANGUAGE="es")
    assert response.status_code == 403
    assert "403.html" in [t.name for t in response.templates]
    assert '<html lang="es">' in response.content.decode()
