"""Category, group and department names in the resident's language.

The city fills in a Spanish name beside each English one in the admin; a resident who chose
Spanish reads it on the portal and in their emails, and the English where it was left empty.
"""

import pytest
from django.core import mail

from notifications.models import Notification
from notifications.services import notification_send
from requests_app.services import Intake, request_submit

from .factories import CITY_CENTER, CategoryFactory, ServiceRequestFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def bache(pothole):
    pothole.name_es = "Bache"
    pothole.group_es = "Calles y aceras"
    pothole.save()
    pothole.department.name_es = "Calles"
    pothole.department.save()
    return pothole


def spanish(client):
    client.cookies["django_language"] = "es"
    return client


def test_home_page_and_report_form_name_categories_in_the_residents_language(client, bache):
    english = client.get("/").content.decode()
    assert "Pothole" in english and "Streets and sidewalks" in english
    assert "Bache" not in english

    spanish(client)
    home = client.get("/").content.decode()
    assert "Bache" in home and "Calles y aceras" in home
    form = client.get("/report/").content.decode()
    assert f'<option value="{bache.pk}">Bache</option>' in form
    assert '<optgroup label="Calles y aceras">' in form


def test_a_name_left_empty_reads_in_english(client, bache):
    CategoryFactory(
        code="graffiti", name="Graffiti", group="Neighbourhood", department=bache.department
    )
    form = spanish(client).get("/report/").content.decode()
    assert ">Graffiti</option>" in form and '<optgroup label="Neighbourhood">' in form


def test_status_page_in_spanish_in_its_two_queries(client, bache, django_assert_num_queries):
    request = ServiceRequestFactory(category=bache, department=bache.department)
    spanish(client)
    with django_assert_num_queries(2):
        page = client.get(request.get_absolute_url()).content.decode()
    assert "<h1>Bache</h1>" in page and "Calles y aceras" in page and "<dd>Calles</dd>" in page


def test_a_spanish_reporters_email_names_the_category_in_spanish(bache):
    request = request_submit(
        Intake(
            category=bache,
            description="Un bache enorme",
            lat=CITY_CENTER[0],
            lng=CITY_CENTER[1],
            reporter_email="ana@example.org",
            language="es",
        )
    )
    notification_send(Notification.objects.get(request=request).pk)
    (sent,) = mail.outbox
    assert "(Bache)" in sent.body and "Pothole" not in sent.body


def test_a_categorys_questions_are_asked_in_the_residents_language(client, bache):
    from requests_app.models import ServiceAttribute

    ServiceAttribute.objects.create(
        category=bache,
        code="size",
        datatype=ServiceAttribute.Datatype.SINGLE,
        description="How big is it?",
        description_es="¿Qué tamaño tiene?",
        datatype_description="Roughly",
        datatype_description_es="Más o menos",
        values=[
            {"key": "small", "name": "Smaller than a plate", "name_es": "Más pequeño que un plato"},
            {"key": "large", "name": "Wider than a tyre"},  # no Spanish: the English
        ],
    )
    english = client.get("/report/?category=pothole").content.decode()
    assert "How big is it?" in english and "Smaller than a plate" in english
    form = spanish(client).get("/report/?category=pothole").content.decode()
    assert "¿Qué tamaño tiene?" in form and "Más o menos" in form
    assert "Más pequeño que un plato" in form and "Wider than a tyre" in form
    assert "How big is it?" not in form
    # The API's service definition stays as the city wrote it.
    definition = client.get("/open311/v2/services/pothole.json").json()
    assert definition["attributes"][0]["description"] == "How big is it?"
    assert definition["attributes"][0]["values"][0] == {
        "key": "small",
        "name": "Smaller than a plate",
    }


def test_a_group_name_left_empty_on_one_category_does_not_split_its_group(client, bache):
    CategoryFactory(
        code="sidewalk", name="Damaged sidewalk", group=bache.group, department=bache.department
    )
    form = spanish(client).get("/report/").content.decode()
    assert form.count('<optgroup label="Calles y aceras">') == 1
    assert ">Damaged sidewalk</option>" in form
