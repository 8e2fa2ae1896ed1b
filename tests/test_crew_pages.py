"""The crew's phone pages: their own navigation, a way to sign out of a shared phone, and
links for the maps app that survive the Spanish number format."""

import re

import pytest
from django.test import Client
from django.urls import reverse

from requests_app.models import StaffRole

from .factories import staff_user
from .test_work_orders import crew, order  # noqa: F401  (fixtures)

pytestmark = pytest.mark.django_db


def _header(page):
    return page.content.decode().split("<header", 1)[1].split("</header>", 1)[0]


@pytest.fixture
def crew_pages(order):  # noqa: F811
    return [reverse("crew:my_work"), reverse("crew:work_order", args=[order.pk])]


def test_crew_pages_offer_the_work_list_and_signing_out_not_the_resident_links(
    client,
    crew,  # noqa: F811
    crew_pages,
):
    client.force_login(crew.member)
    for url in crew_pages:
        header = _header(client.get(url))
        assert f'href="{reverse("crew:my_work")}"' in header
        assert f'href="{reverse("requests_app:report")}"' not in header
        assert f'href="{reverse("resident:my_requests")}"' not in header
        sign_out = re.search(r'<form class="sign-out" action="([^"]+)" method="post"', header)
        assert sign_out and sign_out[1] == reverse("admin:logout")
        assert 'name="csrfmiddlewaretoken"' in header
        assert "casey" in header  # whose phone session this is
        assert 'class="language-switch"' in header


def test_crew_page_header_follows_the_language(client, crew, crew_pages):  # noqa: F811
    client.force_login(crew.member)
    header = _header(client.get(crew_pages[0], HTTP_ACCEPT_LANGUAGE="es"))
    assert ">Mi trabajo</a>" in header and ">Cerrar sesión</button>" in header


def test_crew_member_signs_out_of_a_shared_phone(crew, crew_pages):  # noqa: F811
    phone = Client(enforce_csrf_checks=True)
    phone.force_login(crew.member)
    page = phone.get(crew_pages[1])
    token = re.search(
        r'<form class="sign-out".*?name="csrfmiddlewaretoken" value="([^"]+)"',
        page.content.decode(),
        re.S,
    )[1]
    next_url = re.search(
        r'<form class="sign-out".*?name="next" value="([^"]+)"', page.content.decode(), re.S
    )[1]

    signed_out = phone.post(
        reverse("admin:logout"), {"csrfmiddlewaretoken": token, "next": next_url}
    )

    # Back to the work list, which now asks whoever holds the phone to sign in.
    assert signed_out.status_code == 302 and signed_out["Location"] == reverse("crew:my_work")
    again = phone.get(crew_pages[0])
    assert again.status_code == 302 and again["Location"].startswith(reverse("admin:login"))


def test_resident_pages_keep_their_navigation_after_a_crew_page(client, crew, crew_pages):  # noqa: F811
    """The residents' header is cached per language: a crew page must not end up in it."""
    client.force_login(crew.member)
    client.get(crew_pages[0])
    client.logout()
    header = _header(client.get(reverse("requests_app:home")))
    assert f'href="{reverse("requests_app:report")}"' in header
    assert "sign-out" not in header


def test_directions_links_keep_decimal_points_in_spanish(client, crew, order):  # noqa: F811
    order.requests.update(lat=42.3601, lng=-71.0589)
    client.force_login(crew.member)
    body = client.get(
        reverse("crew:work_order", args=[order.pk]), HTTP_ACCEPT_LANGUAGE="es"
    ).content.decode()
    assert 'href="geo:42.3601,-71.0589"' in body
    assert "route=%3B42.3601%2C-71.0589" in body


def test_directors_dashboard_has_the_staff_header(client):
    director = staff_user("dora", StaffRole.DIRECTOR)
    client.force_login(director)
    header = _header(client.get(reverse("dashboard:home")))
    assert f'href="{reverse("dashboard:home")}" aria-current="page"' in header
    assert f'href="{reverse("admin:requests_app_servicerequest_changelist")}"' in header
    assert f'href="{reverse("requests_app:report")}"' not in header
    assert f'href="{reverse("crew:my_work")}"' not in header
    next_url = re.search(r'name="next" value="([^"]+)"', header)
    assert next_url[1] == reverse("admin:requests_app_servicerequest_changelist")
    assert "dora" in header and 'class="sign-out"' in header
