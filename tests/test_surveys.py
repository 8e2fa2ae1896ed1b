"""Satisfaction surveys: one email, signed expiring links, answers that count."""

import re
from datetime import timedelta
from unittest import mock

import pytest
from django.core import signing
from django.urls import include, path
from django.utils import timezone

from civicdesk.urls import urlpatterns as project_urlpatterns
from notifications.models import Notification
from requests_app.models import Follower, HistoryEntry, ServiceRequest, Status
from requests_app.services import Intake, request_submit
from surveys.links import survey_token
from surveys.models import ReviewTask, Survey
from surveys.services import survey_dispatch, survey_send

from . import fake_esp
from .conftest import wait_for
from .factories import CITY_CENTER, ServiceRequestFactory

# Until civicdesk/urls.py mounts them, these tests mount the apps' URLs themselves.
urlpatterns = [
    path("notifications/", include("notifications.urls")),
    path("surveys/", include("surveys.urls")),
    *project_urlpatterns,
]
pytestmark = pytest.mark.urls(__name__)


def completed(category, hours_ago=49, **fields):
    request = ServiceRequestFactory(category=category, department=category.department, **fields)
    request.change_status(Status.COMPLETED, note="Filled the hole")
    resolved = timezone.now() - timedelta(hours=hours_ago)
    ServiceRequest.objects.filter(pk=request.pk).update(resolved_at=resolved)
    request.refresh_from_db()
    return request


def survey_path(survey):
    return f"/surveys/{survey_token(survey.pk)}/"


@pytest.fixture
def survey(pothole):
    return survey_send(completed(pothole).pk)


def test_reporter_gets_one_survey_after_the_delay(pothole, settings):
    settings.SURVEY_DELAY_HOURS = 48
    due = completed(pothole)
    Follower.objects.create(request=due, email="jo@example.org", source="follow")
    completed(pothole, hours_ago=2)  # too recent
    completed(pothole, hours_ago=24 * 60)  # completed long before surveys were on
    assert survey_dispatch() == 1
    assert survey_dispatch() == 0  # a second beat finds it claimed
    (survey,) = Survey.objects.all()
    assert survey.request == due
    (email,) = Notification.objects.filter(kind="survey")
    assert email.recipient == "maria@example.org" and survey.notification == email
    assert "List-Unsubscribe" in email.headers


def test_the_claim_is_the_unique_survey_row(pothole):
    request = completed(pothole)
    assert survey_send(request.pk) is not None
    assert survey_send(request.pk) is None
    assert Notification.objects.filter(kind="survey").count() == 1


def test_unsubscribed_reporter_is_not_surveyed_but_the_request_is_claimed(pothole):
    request = completed(pothole)
    Follower.objects.create(
        request=request,
        email="maria@example.org",
        source="reporter",
        unsubscribed_at=timezone.now(),
    )
    survey = survey_send(request.pk)
    assert survey.notification is None
    assert not Notification.objects.filter(kind="survey").exists()


def test_survey_email_links_are_absolute_and_signed(survey):
    email = Notification.objects.get(kind="survey")
    links = re.findall(r'href="([^"]+)"', email.body_html)
    survey_links = [link for link in links if "/surveys/" in link]
    assert len(survey_links) == 7  # fixed yes/no and ratings 1 to 5
    assert all(link.startswith("http://127.0.0.1:8000/surveys/") for link in survey_links)


def test_opening_a_link_records_nothing(survey, client):
    response = client.get(survey_path(survey) + "?rating=1")
    assert response.status_code == 200
    assert b'value="1" required' not in response.content  # optional fields
    assert b'value="1"' in response.content and b"checked" in response.content
    survey.refresh_from_db()
    assert survey.answered_at is None and not ReviewTask.objects.exists()


def test_answer_is_recorded_by_post_and_a_second_answer_replaces_it(survey, client):
    client.post(survey_path(survey), {"rating": "5", "fixed": "yes", "comment": "Quick!"})
    survey.refresh_from_db()
    assert (survey.rating, survey.is_fixed, survey.comment) == (5, True, "Quick!")
    client.post(survey_path(survey), {"rating": "4", "fixed": "yes"})
    survey.refresh_from_db()
    assert (survey.rating, survey.comment, survey.answer_count) == (4, "", 2)
    assert not ReviewTask.objects.exists()
    assert Survey.objects.summary()["average_rating"] == 4


def test_low_rating_opens_a_review_without_reopening(survey, client):
    client.post(survey_path(survey), {"rating": "2", "fixed": "yes", "comment": "Took weeks"})
    review = ReviewTask.objects.get()
    assert (review.request, review.rating, review.comment) == (survey.request, 2, "Took weeks")
    survey.request.refresh_from_db()
    assert survey.request.status == Status.COMPLETED


def test_not_fixed_reopens_the_request_with_a_history_entry(survey, client):
    client.post(survey_path(survey), {"fixed": "no", "comment": "Still a hole, call me"})
    request = ServiceRequest.objects.get(pk=survey.request.pk)
    assert request.status == Status.RECEIVED and request.resolved_at is None
    entry = request.history.filter(action=HistoryEntry.Action.STATUS).last()
    assert (entry.old_value, entry.new_value) == ("completed", "received")
    assert "not fixed" in entry.note and "call me" not in entry.note
    assert ReviewTask.objects.get().is_fixed is False
    # Answering again neither reopens twice nor opens a second review.
    client.post(survey_path(survey), {"fixed": "no", "rating": "1"})
    assert request.history.filter(action="status", new_value="received").count() == 1
    assert ReviewTask.objects.count() == 1 and ReviewTask.objects.get().rating == 1


def test_an_empty_answer_is_refused(survey, client):
    response = client.post(survey_path(survey), {"comment": "hm"})
    assert response.status_code == 200 and b"Choose a rating" in response.content
    survey.refresh_from_db()
    assert survey.answered_at is None


def test_tampered_link_is_refused(survey, client, pothole):
    token = survey_token(survey.pk)
    other = survey_send(completed(pothole).pk)
    forged = survey_token(other.pk).split(":")[0] + ":" + token.split(":", 1)[1]
    for bad in (token[:-3] + "abc", forged, "garbage"):
        response = client.post(f"/surveys/{bad}/", {"rating": "1"})
        assert response.status_code == 400
    assert not Survey.objects.answered().exists()


def test_unsubscribe_token_is_not_a_survey_token(survey, client):
    from notifications.links import unsubscribe_token

    response = client.post(f"/surveys/{unsubscribe_token(survey.pk, 'x@y.z')}/", {"rating": "1"})
    assert response.status_code == 400


def test_expired_link_is_refused(survey, client, settings):
    settings.SURVEY_LINK_MAX_AGE_DAYS = 30
    long_ago = timezone.now().timestamp() - 31 * 24 * 3600
    with mock.patch("django.core.signing.time.time", return_value=long_ago):
        token = survey_token(survey.pk)
    response = client.post(f"/surveys/{token}/", {"rating": "1"})
    assert response.status_code == 410 and b"expired" in response.content
    survey.refresh_from_db()
    assert survey.answered_at is None
    with pytest.raises(signing.SignatureExpired):
        from surveys.links import read_survey_token

        read_survey_token(token)


# --- With a real worker and a provider that fails first ------------------------------------


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_requests_life_sends_the_expected_emails_once_each_in_order(
    pothole, celery_worker_env, tmp_path, client
):
    from .conftest import WorkerProcess

    esp = tmp_path / "esp"
    env = {
        **celery_worker_env,
        "EMAIL_BACKEND": "tests.fake_esp.EmailBackend",
        "FAKE_ESP_DIR": str(esp),
        "FAKE_ESP_FAILURES": "3",
        "FAKE_ESP_RETRY_AFTER": "1",
    }
    worker = WorkerProcess(env, tmp_path / "worker.log").start().wait_ready()
    try:
        request = request_submit(
            Intake(
                category=pothole,
                description="Pothole by the school",
                lat=CITY_CENTER[0],
                lng=CITY_CENTER[1],
                reporter_name="Maria Lopez",
                reporter_email="maria@example.org",
            )
        )
        request.add_comment("Reporter sounded upset", public=False)  # internal only
        assert wait_for(lambda: len(fake_esp.sent(esp)) == 2, timeout=60), worker.output()
        request.refresh_from_db()
        assert request.status == Status.ASSIGNED  # routed by the worker

        request.change_status(Status.COMPLETED, note="Filled and compacted")
        assert wait_for(lambda: len(fake_esp.sent(esp)) == 3, timeout=30), worker.output()

        survey_dispatch(now=request.resolved_at + timedelta(hours=49))
        assert wait_for(lambda: len(fake_esp.sent(esp)) == 4, timeout=30), worker.output()

        link = re.search(
            r"http://127\.0\.0\.1:8000(/surveys/[^\s]+/)", fake_esp.sent(esp)[3]["text"]
        )
        response = client.post(link.group(1), {"rating": "2", "fixed": "yes", "comment": "Slow"})
        assert response.status_code == 200
        import time

        time.sleep(3)  # anything wrongly queued or sent twice has had its chance
    finally:
        worker.stop()

    sent = fake_esp.sent(esp)
    assert [(m["to"], m["subject"]) for m in sent] == [
        (["maria@example.org"], f"We received your report {request.tracking_number}"),
        (["maria@example.org"], f"{request.tracking_number}: a team has your report"),
        (["maria@example.org"], f"{request.tracking_number} is fixed"),
        (["maria@example.org"], f"How did we do on {request.tracking_number}?"),
    ]
    assert fake_esp.failures(esp) == 3
    rows = Notification.objects.filter(request=request).order_by("pk")
    assert [(n.template, n.status) for n in rows] == [
        ("request_received", "sent"),
        ("status_assigned", "sent"),
        ("status_completed", "sent"),
        ("survey", "sent"),
    ]
    assert rows[0].attempts == 4 and all(n.attempts == 1 for n in rows[1:])
    for message in sent:
        assert "Reporter sounded upset" not in message["text"] + message["html"]
        assert message["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    review = ReviewTask.objects.get()
    assert (review.request_id, review.rating, review.comment) == (request.pk, 2, "Slow")


@pytest.mark.parametrize("public", [True, False], ids=["public", "withdrawn"])
def test_the_thanks_page_links_to_where_the_reporter_can_see_the_report(survey, client, public):
    request = survey.request
    if not public:
        request.withdraw_by_reporter()
    page = client.post(survey_path(survey), {"rating": "5", "fixed": "yes"}).content.decode()
    link = re.search(r'<a href="([^"]+)">See the report</a>', page)[1]
    if public:
        assert link == request.get_absolute_url()
    else:  # its status page answers 404 now; My requests shows it to its reporter
        assert link == f"/my/#{request.tracking_number}"
