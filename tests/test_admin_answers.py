"""Staff read the reporter's answers to the category's questions on the request's admin
page, whichever channel they came through: each question with its answer, choices by name,
in the questions' order."""

import re
from functools import partial

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from requests_app.models import Channel, ServiceAttribute
from requests_app.open311 import Open311Submission, open311_submit
from requests_app.services import Intake, request_submit

from .factories import question

pytestmark = pytest.mark.django_db

Datatype = ServiceAttribute.Datatype


@pytest.fixture
def questions(pothole):
    ask = partial(question, pothole)

    # Created out of order, so that the page's order is the questions' and not the rows'.
    return {
        "landmark": ask("landmark", Datatype.STRING, "Nearest landmark", 3),
        "hazards": ask(
            "hazards",
            Datatype.MULTI,
            "What is near it?",
            2,
            values=[
                {"key": "school", "name": "A school"},
                {"key": "bikes", "name": "A bike lane"},
                {"key": "bus", "name": "A bus stop"},
            ],
        ),
        "size": ask(
            "size",
            Datatype.SINGLE,
            "How big is it?",
            1,
            values=[
                {"key": "small", "name": "Smaller than a plate"},
                {"key": "large", "name": "Larger <than> a car"},
            ],
        ),
        "depth": ask("depth", Datatype.NUMBER, "Depth in cm", 4),
    }


def _submitted(category, answers):
    return request_submit(
        Intake(category=category, description="Deep pothole", address="12 Main St", answers=answers)
    )


def _change_page(client, service_request):
    return client.get(
        reverse("admin:requests_app_servicerequest_change", args=[service_request.pk])
    )


def _answers_shown(page) -> str:
    """The text of the page's "Answers" row, tags removed and spaces squeezed."""
    html = page.content.decode()
    row = re.search(r'<div class="[^"]*field-answers[^"]*">(.*?)</div>\s*</div>', html, re.S)
    assert row, "the page has no Answers row"
    return " ".join(re.sub(r"<[^>]+>", " ", row.group(1)).split())


def test_dispatcher_sees_portal_answers_by_choice_name_in_question_order(
    client, dispatcher, pothole, questions
):
    service_request = _submitted(
        pothole,
        {
            questions["landmark"]: "Opposite the library",
            questions["hazards"]: ["bus", "school"],
            questions["size"]: "large",
            questions["depth"]: "12",
        },
    )
    client.force_login(dispatcher)

    page = _change_page(client, service_request)

    assert page.status_code == 200
    assert _answers_shown(page) == (
        "Answers: "
        "How big is it? Larger &lt;than&gt; a car "
        "What is near it? A bus stop, A school "
        "Nearest landmark Opposite the library "
        "Depth in cm 12"
    )
    assert ">large<" not in page.content.decode()


def test_dispatcher_sees_open311_answers(client, dispatcher, pothole, questions):
    service_request = open311_submit(
        Open311Submission(
            intake=Intake(
                category=pothole,
                description="Deep pothole",
                address="12 Main St",
                channel=Channel.API,
                answers={questions["size"]: "small", questions["hazards"]: ["bikes"]},
            ),
        )
    )
    client.force_login(dispatcher)

    shown = _answers_shown(_change_page(client, service_request))

    assert shown == "Answers: How big is it? Smaller than a plate What is near it? A bike lane"


def test_a_request_without_answers_shows_a_dash(client, dispatcher, pothole, questions):
    service_request = _submitted(pothole, {})
    client.force_login(dispatcher)

    assert _answers_shown(_change_page(client, service_request)) == "Answers: —"


def test_answers_cost_one_query_however_many_there_are(client, dispatcher, pothole, questions):
    one = _submitted(pothole, {questions["size"]: "small"})
    four = _submitted(
        pothole,
        {
            questions["landmark"]: "Opposite the library",
            questions["hazards"]: ["bus", "school", "bikes"],
            questions["size"]: "large",
            questions["depth"]: "12",
        },
    )
    client.force_login(dispatcher)
    _change_page(client, one)  # sessions, permissions and caches settle on the first page

    def statements(service_request):
        with CaptureQueriesContext(connection) as captured:
            assert _change_page(client, service_request).status_code == 200
        return len(captured)

    assert statements(four) == statements(one)
