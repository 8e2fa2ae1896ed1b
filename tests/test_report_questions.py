"""A category's own questions (its ServiceAttributes) on the portal's report form: asked,
checked and stored as the Open311 API does, without JavaScript too, and without costing a
report in a category that has none."""

import re
from functools import partial

import pytest
from django.urls import reverse

from requests_app.models import AttributeAnswer, IntakeThrottle, ServiceAttribute, ServiceRequest

from .factories import CITY_CENTER, CategoryFactory, ServiceRequestFactory, question
from .test_portal import REPORT_URL, assert_typed_answers_kept, report_data

pytestmark = pytest.mark.django_db

Datatype = ServiceAttribute.Datatype
W3C = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d$")


@pytest.fixture
def questions(pothole):
    ask = partial(question, pothole)

    return {
        "size": ask(
            "size",
            Datatype.SINGLE,
            "How big is it?",
            1,
            required=True,
            values=[
                {"key": "small", "name": "Smaller than a plate"},
                {"key": "large", "name": "Larger"},
            ],
        ),
        "hazards": ask(
            "hazards",
            Datatype.MULTI,
            "What is near it?",
            2,
            datatype_description="Choose all that apply",
            values=[{"key": "school", "name": "A school"}, {"key": "bikes", "name": "A bike lane"}],
        ),
        "depth": ask("depth", Datatype.NUMBER, "Depth in cm", 3),
        "seen": ask("seen", Datatype.DATETIME, "When did you first see it?", 4),
        "landmark": ask("landmark", Datatype.STRING, "Nearest landmark", 5),
        "more": ask("more", Datatype.TEXT, "Anything else?", 6),
        "note": ask(
            "note",
            Datatype.TEXT,
            "We fill potholes in the order they are reported.",
            7,
            variable=False,
        ),
    }


@pytest.fixture
def streetlight(streets):
    category = CategoryFactory(
        code="streetlight", name="Streetlight out", group="Streets and sidewalks"
    )
    ServiceAttribute.objects.create(
        category=category,
        code="pole-number",
        datatype=Datatype.STRING,
        description="The number on the pole",
        datatype_description="Usually on a small plate at eye level",
    )
    return category


def name(question):
    return f"q{question.category_id}-{question.code}"


def answered(pothole, questions, /, **overrides):
    """A sound report that answers the pothole's questions as a resident would."""
    answers = {
        name(questions["size"]): "large",
        name(questions["hazards"]): ["school", "bikes"],
        name(questions["depth"]): "12.5",
        name(questions["seen"]): "2026-01-02T08:00",
        name(questions["landmark"]): "The bakery",
        name(questions["more"]): "Cars swerve into the bike lane",
    }
    answers.update(overrides)
    data = report_data(pothole, **answers)
    return {key: value for key, value in data.items() if value is not None}


def stored_answers(service_request):
    return dict(
        AttributeAnswer.objects.filter(request=service_request).values_list(
            "attribute__code", "value"
        )
    )


# --- Asked -----------------------------------------------------------------------------------


def test_a_category_with_questions_asks_them_on_the_form(client, questions):
    html = client.get(REPORT_URL, {"category": "pothole"}).content.decode()

    assert "More about “Pothole”" in html
    for label in ["How big is it?", "What is near it?", "Depth in cm", "Anything else?"]:
        assert label in html
    assert f'type="radio" name="{name(questions["size"])}" value="large"' in html
    assert f'type="checkbox" name="{name(questions["hazards"])}" value="school"' in html
    assert f'type="datetime-local" name="{name(questions["seen"])}"' in html
    assert 'inputmode="decimal"' in html
    # Informational text is shown, not asked.
    assert "We fill potholes in the order they are reported." in html
    assert f'name="{name(questions["note"])}"' not in html


def test_each_question_is_labelled_and_choices_are_grouped_under_the_question(client, questions):
    html = client.get(REPORT_URL).content.decode()

    depth = name(questions["depth"])
    assert f'<label for="id_{depth}">Depth in cm <span class="optional">' in html
    # Radio buttons and checkboxes: a fieldset whose legend is the question, described by
    # its hint; each choice has a label of its own.
    hazards = name(questions["hazards"])
    assert re.search(
        rf'<fieldset class="field choices" aria-describedby="id_{hazards}_helptext">\s*'
        r"<legend>What is near it\?",
        html,
    )
    assert f'<label for="id_{hazards}_0"><input type="checkbox"' in html
    size = name(questions["size"])
    assert re.search(r"<legend>How big is it\?</legend>", html)  # required: no "(optional)"
    assert f'<label for="id_{size}_1"><input type="radio"' in html


def test_without_javascript_every_categorys_questions_are_on_the_page_under_their_own_legend(
    client, questions, streetlight
):
    html = client.get(REPORT_URL).content.decode()

    for category in ("Pothole", "Streetlight out"):
        assert f"<legend>More about “{category}”</legend>" in html
        assert f"Only if the problem is “{category}”; otherwise leave these empty." in html
    assert f'data-questions-for="{streetlight.pk}"' in html
    assert "The number on the pole" in html


def test_a_form_without_any_questions_shows_no_question_groups(client, pothole):
    html = client.get(REPORT_URL).content.decode()
    assert "data-category-questions" not in html and "More about" not in html


# --- Stored ----------------------------------------------------------------------------------


def test_answers_are_stored_as_the_api_stores_them(client, pothole, questions, settings):
    from requests_app.models import ApiClient
    from requests_app.open311 import api_client_issue_key

    response = client.post(REPORT_URL, answered(pothole, questions))

    assert response.status_code == 302
    portal = ServiceRequest.objects.get()
    assert stored_answers(portal) == {
        "size": "large",
        "hazards": ["school", "bikes"],
        "depth": "12.5",
        "seen": stored_answers(portal)["seen"],
        "landmark": "The bakery",
        "more": "Cars swerve into the bike lane",
    }
    assert W3C.match(stored_answers(portal)["seen"])
    assert stored_answers(portal)["seen"].startswith("2026-01-02T08:00:00")

    # The same answers through Open311 are stored the same way.
    key = api_client_issue_key(ApiClient(name="Resident app", requests_per_minute=100))
    api = client.post(
        reverse("open311:requests", args=["json"]),
        {
            "api_key": key,
            "service_code": "pothole",
            "lat": str(CITY_CENTER[0]),
            "long": str(CITY_CENTER[1]),
            "description": "Deep pothole",
            "attribute[size]": "large",
            "attribute[hazards][]": ["school", "bikes"],
            "attribute[depth]": "12.5",
            "attribute[seen]": "2026-01-02T08:00",
            "attribute[landmark]": "The bakery",
            "attribute[more]": "Cars swerve into the bike lane",
        },
    )
    assert api.status_code == 200, api.content
    by_api = ServiceRequest.objects.exclude(pk=portal.pk).get()
    assert stored_answers(by_api) == stored_answers(portal)


def test_optional_questions_may_be_left_unanswered(client, pothole, questions):
    response = client.post(
        REPORT_URL,
        answered(
            pothole,
            questions,
            **{
                name(questions[code]): None
                for code in ("hazards", "depth", "seen", "landmark", "more")
            },
        ),
    )

    assert response.status_code == 302
    assert stored_answers(ServiceRequest.objects.get()) == {"size": "large"}


def test_answers_to_another_categorys_questions_are_ignored(
    client, pothole, questions, streetlight
):
    # Typed under the pothole before the resident changed their mind: the pothole's
    # required question does not hold up a streetlight report.
    data = answered(pothole, questions, **{name(questions["size"]): None})
    data["category"] = streetlight.pk
    data[f"q{streetlight.pk}-pole-number"] = "SL-4471"

    response = client.post(REPORT_URL, data)

    assert response.status_code == 302
    assert stored_answers(ServiceRequest.objects.get()) == {"pole-number": "SL-4471"}


def test_answers_survive_the_second_step_and_are_stored_when_filed(client, pothole, questions):
    ServiceRequestFactory(category=pothole)  # already reported, right there
    here = {"lat": f"{CITY_CENTER[0]:.6f}", "lng": f"{CITY_CENTER[1]:.6f}"}

    step = client.post(REPORT_URL, answered(pothole, questions, **here))

    assert step.status_code == 200
    html = step.content.decode()
    assert "Is it already reported?" in html
    assert re.search(rf'name="{name(questions["size"])}" value="large"[^>]*checked', html)
    assert re.search(rf'name="{name(questions["hazards"])}" value="bikes"[^>]*checked', html)
    assert 'value="12.5"' in html and "Cars swerve into the bike lane" in html

    filed = client.post(REPORT_URL, {**answered(pothole, questions, **here), "file_anyway": "1"})
    assert filed.status_code == 302
    new = ServiceRequest.objects.latest("created_at")
    assert stored_answers(new)["hazards"] == ["school", "bikes"]


def test_finding_the_address_without_javascript_keeps_every_answer(client, pothole, questions):
    data = {**answered(pothole, questions), "find_address": "1"}

    html = client.post(REPORT_URL, data).content.decode()

    assert re.search(rf'name="{name(questions["hazards"])}" value="school"[^>]*checked', html)
    assert re.search(rf'name="{name(questions["hazards"])}" value="bikes"[^>]*checked', html)
    assert re.search(rf'name="{name(questions["size"])}" value="large"[^>]*checked', html)
    assert 'value="The bakery"' in html
    assert not ServiceRequest.objects.exists()


# --- Checked ---------------------------------------------------------------------------------


def test_a_required_question_left_unanswered_is_explained_and_everything_typed_kept(
    client, pothole, questions
):
    response = client.post(
        REPORT_URL, answered(pothole, questions, **{name(questions["size"]): None})
    )

    assert response.status_code == 400
    html = response.content.decode()
    size = name(questions["size"])
    assert re.search(
        rf'<div class="field-errors" id="id_{size}_error" role="alert">'
        r'<ul class="errorlist"><li>Please answer this question.</li>',
        html,
    )
    assert f'aria-describedby="id_{size}_error"' in html
    assert_typed_answers_kept(html)
    assert re.search(rf'name="{name(questions["hazards"])}" value="bikes"[^>]*checked', html)
    assert 'value="12.5"' in html and 'value="The bakery"' in html
    assert not ServiceRequest.objects.exists()


@pytest.mark.parametrize(
    ("code", "answer", "message"),
    [
        ("depth", "a few", "Please give a number, e.g. 3 or 2.5."),
        ("depth", "Infinity", "Please give a number, e.g. 3 or 2.5."),
        ("seen", "last week", "Please give a date and time, e.g. 2026-05-31 14:30."),
        ("size", "huge", "Select a valid choice. huge is not one of the available choices."),
        ("hazards", ["school", "lava"], "Select a valid choice. lava is not one of the"),
        ("landmark", "x" * 256, "Ensure this value has at most 255 characters"),
    ],
)
def test_a_wrong_answer_is_explained_and_kept(client, pothole, questions, code, answer, message):
    response = client.post(
        REPORT_URL, answered(pothole, questions, **{name(questions[code]): answer})
    )

    assert response.status_code == 400
    html = response.content.decode()
    assert message in html
    assert f'id="id_{name(questions[code])}_error"' in html
    if code in ("depth", "seen"):
        assert f'value="{answer}"' in html
    assert not ServiceRequest.objects.exists()
    assert not AttributeAnswer.objects.exists()


def test_garbage_answers_are_refused_without_a_server_error(client, pothole, questions):
    for garbage in ["\x00", "1e999999", "nan", "\ud800".encode("utf-8", "replace").decode(), " "]:
        data = answered(
            pothole,
            questions,
            **{name(questions[code]): garbage for code in ("size", "depth", "seen", "more")},
        )
        assert client.post(REPORT_URL, data).status_code == 400, garbage
    assert not ServiceRequest.objects.exists()


def test_wrong_answers_do_not_count_against_the_limit(client, pothole, questions, settings):
    settings.REPORTS_PER_IP_PER_HOUR = 1
    for _ in range(3):
        wrong = answered(pothole, questions, **{name(questions["depth"]): "deep"})
        assert client.post(REPORT_URL, wrong).status_code == 400

    assert client.post(REPORT_URL, answered(pothole, questions)).status_code == 302
    assert IntakeThrottle.objects.get().hits == 1


def test_a_question_staff_add_or_remove_is_asked_or_dropped_on_the_next_report(
    client, pothole, questions
):
    data = {**answered(pothole, questions), "file_anyway": "1"}
    assert client.post(REPORT_URL, data).status_code == 302  # the category is now cached

    lanes = ServiceAttribute.objects.create(
        category=pothole,
        code="lanes",
        datatype=Datatype.STRING,
        description="Which lane is it in?",
        order=8,
        required=True,
    )
    refused = client.post(REPORT_URL, data)
    assert refused.status_code == 400
    assert refused.context["form"].errors == {name(lanes): ["Please answer this question."]}

    lanes.delete()
    assert client.post(REPORT_URL, data).status_code == 302
    assert ServiceRequest.objects.count() == 2


# --- What it costs ---------------------------------------------------------------------------


def test_a_report_in_a_category_without_questions_asks_nothing_more(
    client, pothole, questions, django_assert_num_queries
):
    plain = CategoryFactory(code="graffiti", name="Graffiti", department=pothole.department)
    data = {**report_data(plain), "file_anyway": "1"}
    client.post(REPORT_URL, data)  # the categories come into the per-process cache

    # The throttle row; the tracking number looked for; the request, its CREATED entry, the
    # reporter's follower row and the confirmation email; the view's transaction, here a
    # savepoint in the test's own.
    with django_assert_num_queries(8):
        assert client.post(REPORT_URL, data).status_code == 302


def test_a_report_with_answers_adds_only_the_statement_that_stores_them(
    client, pothole, questions, django_assert_num_queries
):
    data = {**answered(pothole, questions), "file_anyway": "1"}
    client.post(REPORT_URL, data)  # the category and its questions are read once

    with django_assert_num_queries(8 + 1):
        assert client.post(REPORT_URL, data).status_code == 302


def test_a_choice_without_a_key_is_no_answer(pothole):
    # values is edited as free JSON in the admin; a choice missing its key offers nothing.
    asked = question(
        pothole,
        "size",
        Datatype.SINGLE,
        "How big is it?",
        1,
        values=[{"name": "Keyless"}, {"key": "small", "name": "Small"}],
    )
    assert asked.choice_names() == {"small": "Small"}
    assert asked.display_choices() == [("small", "Small")]
    with pytest.raises(ValueError):
        asked.answer_value(["None"])
    assert asked.answer_value(["small"]) == "small"
