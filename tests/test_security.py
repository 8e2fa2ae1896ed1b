"""Production hardening: request ids and JSON logs, private responses, staff sign-in
(lockout, two-factor, logging), password length, production settings and queues."""

import json
import logging
import os
import subprocess
import sys

import pytest
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.http import HttpResponse, HttpResponseForbidden
from django.test import RequestFactory
from django.urls import reverse
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from civicdesk.celery import _send_request_id, _take_request_id, app
from requests_app.middleware import (
    PrivateResponseMiddleware,
    RequestIdFilter,
    request_id,
)
from requests_app.models import StaffRole

from .conftest import ROOT
from .factories import staff_user

PASSWORD = "a-long-test-password"
LOGIN_URL = "/admin/login/"


# --- Request ids and logs ---------------------------------------------------------------


def test_a_request_id_is_made_when_the_proxy_sends_none(client, db):
    first = client.get("/")["X-Request-ID"]
    second = client.get("/")["X-Request-ID"]
    assert len(first) == 32 and first != second


def test_the_proxys_request_id_is_kept(client, db):
    response = client.get("/", headers={"X-Request-ID": "lb-7f3a9c2e-0001"})
    assert response["X-Request-ID"] == "lb-7f3a9c2e-0001"


@pytest.mark.parametrize("forged", ["a b c d e f g h", 'x" level="ERROR', "z" * 300, "short"])
def test_a_malformed_request_id_is_replaced(client, db, forged):
    response = client.get("/", headers={"X-Request-ID": forged})
    assert response["X-Request-ID"] != forged and len(response["X-Request-ID"]) == 32


def _json_line(message, **extra):
    from django.conf import settings

    config = settings.LOGGING["formatters"]["json"]
    from pythonjsonlogger.json import JsonFormatter

    formatter = JsonFormatter(config["fmt"], rename_fields=config["rename_fields"])
    record = logging.LogRecord("civicdesk.test", logging.WARNING, __file__, 1, message, (), None)
    record.__dict__.update(extra)
    RequestIdFilter().filter(record)
    return json.loads(formatter.format(record))


def test_json_log_lines_carry_the_request_id_and_extra_fields():
    token = request_id.set("req-1234abcd")
    try:
        line = _json_line("Sign-in failed", username="dana", ip="10.0.0.7")
    finally:
        request_id.reset(token)
    assert line["message"] == "Sign-in failed"
    assert line["level"] == "WARNING" and line["logger"] == "civicdesk.test"
    assert line["request_id"] == "req-1234abcd"
    assert line["username"] == "dana" and line["ip"] == "10.0.0.7"
    assert "time" in line


def test_log_lines_outside_a_request_have_a_dash_for_id():
    assert _json_line("Beat tick")["request_id"] == "-"


def test_tasks_enqueued_during_a_request_carry_its_id_to_the_worker():
    headers = {}
    token = request_id.set("req-5678efgh")
    try:
        _send_request_id(headers=headers)
    finally:
        request_id.reset(token)
    assert headers["request_id"] == "req-5678efgh"

    class Task:
        class request:
            request_id = "req-5678efgh"

    _take_request_id(task=Task)
    try:
        assert request_id.get() == "req-5678efgh"
    finally:
        request_id.reset(Task.request.civicdesk_request_id_token)


def test_the_access_log_names_url_patterns_not_one_time_tokens(client, db, settings, caplog):
    settings.ACCESS_LOG = True
    with caplog.at_level(logging.INFO, logger="requests_app.access"):
        client.get("/my/sign-in/SECRET-TOKEN-123/", headers={"X-Request-ID": "req-access-0001"})
    [record] = [r for r in caplog.records if r.name == "requests_app.access"]
    assert record.route == "/my/sign-in/<str:token>/"
    assert record.method == "GET" and record.status == 400  # a token that is no link
    assert "SECRET-TOKEN-123" not in record.getMessage()


# --- Private responses ------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/my/", "/crew/", "/dashboard/", "/admin/"])
def test_private_paths_are_not_stored_by_caches(client, db, path):
    response = client.get(path)
    assert "no-store" in response["Cache-Control"]


def test_public_pages_for_anonymous_visitors_may_be_cached(client, db):
    assert "no-store" not in client.get("/").get("Cache-Control", "")


def test_every_page_for_signed_in_staff_is_not_stored(client, dispatcher):
    client.force_login(dispatcher)
    assert client.get("/")["Cache-Control"] == "no-store"


def test_a_cache_policy_chosen_by_the_view_is_kept():
    def view(request):
        response = HttpResponse("photo")
        response["Cache-Control"] = "public, max-age=3600"
        return response

    request = RequestFactory().get("/crew/photo")
    assert PrivateResponseMiddleware(view)(request)["Cache-Control"] == "public, max-age=3600"


def test_forbidden_responses_are_logged_with_path_and_user(dispatcher, caplog):
    request = RequestFactory().post("/crew/work-orders/1/complete/")
    request.user = dispatcher
    with caplog.at_level(logging.WARNING, logger="requests_app.middleware"):
        PrivateResponseMiddleware(lambda request: HttpResponseForbidden())(request)
    [record] = [r for r in caplog.records if r.name == "requests_app.middleware"]
    assert record.path == "/crew/work-orders/1/complete/"
    assert record.username == "dispatcher" and record.event == "forbidden"


# --- Staff sign-in ----------------------------------------------------------------------


@pytest.fixture
def dana(db):
    user = staff_user("dana", StaffRole.DISPATCHER)
    user.set_password(PASSWORD)
    user.save()
    return user


def _login(client, username="dana", password=PASSWORD, ip="10.0.0.7", **fields):
    return client.post(
        LOGIN_URL,
        {"username": username, "password": password, "next": "/admin/", **fields},
        REMOTE_ADDR=ip,
    )


def _signed_in(client):
    return "_auth_user_id" in client.session


def test_staff_without_a_device_sign_in_with_their_password(client, dana):
    response = _login(client)
    assert response.status_code == 302 and _signed_in(client)


def test_the_login_page_asks_for_an_authentication_code(client, db):
    content = client.get(LOGIN_URL).content.decode()
    assert 'name="otp_token"' in content and 'autocomplete="one-time-code"' in content


@pytest.fixture
def dana_device(dana):
    return TOTPDevice.objects.create(user=dana, name="phone", confirmed=True)


def test_staff_with_a_device_need_its_code(client, dana_device):
    response = _login(client)
    assert response.status_code == 200 and not _signed_in(client)
    assert "Enter the code from your authenticator app" in response.content.decode()


def test_a_wrong_code_is_refused(client, dana_device):
    wrong = f"{(totp(dana_device.bin_key) + 1) % 1_000_000:06d}"
    response = _login(client, otp_token=wrong)
    assert response.status_code == 200 and not _signed_in(client)
    assert "That code is not valid" in response.content.decode()


def test_the_right_code_signs_in_and_verifies_the_session(client, dana_device):
    response = _login(client, otp_token=f"{totp(dana_device.bin_key):06d}")
    assert response.status_code == 302 and _signed_in(client)
    assert client.session["otp_device_id"] == dana_device.persistent_id


def test_an_unconfirmed_device_does_not_ask_for_a_code(client, dana):
    TOTPDevice.objects.create(user=dana, name="half set up", confirmed=False)
    assert _login(client).status_code == 302 and _signed_in(client)


def test_required_two_factor_refuses_staff_without_a_device(client, dana, settings):
    settings.REQUIRE_STAFF_2FA = True
    response = _login(client)
    assert response.status_code == 200 and not _signed_in(client)
    assert "Two-factor sign-in is required" in response.content.decode()


def test_required_two_factor_admits_staff_with_their_code(client, dana_device, settings):
    settings.REQUIRE_STAFF_2FA = True
    response = _login(client, otp_token=f"{totp(dana_device.bin_key):06d}")
    assert response.status_code == 302 and _signed_in(client)
    assert client.get("/admin/").status_code == 200


def test_required_two_factor_ends_sessions_opened_without_it(client, dana, settings):
    client.force_login(dana)
    settings.REQUIRE_STAFF_2FA = True
    response = client.get("/admin/requests_app/servicerequest/")
    assert response.status_code == 302 and response["Location"].startswith(LOGIN_URL)
    assert not _signed_in(client)


def test_five_wrong_passwords_lock_the_username_at_that_address(client, dana, settings):
    settings.AXES_ENABLED = True
    for _attempt in range(4):
        assert _login(client, password="wrong-password").status_code == 200
    assert _login(client, password="wrong-password").status_code == 429
    locked = _login(client)  # even the right password, within the cool-off
    assert locked.status_code == 429 and not _signed_in(client)
    assert "no-store" in locked["Cache-Control"]
    # The same username from another address, and another username, still may try.
    assert _login(client, ip="10.0.0.8").status_code == 302


def test_a_successful_sign_in_resets_the_failure_count(client, dana, settings):
    settings.AXES_ENABLED = True
    for _attempt in range(4):
        _login(client, password="wrong-password")
    assert _login(client).status_code == 302
    client.logout()
    for _attempt in range(4):
        _login(client, password="wrong-password")
    assert _login(client).status_code == 302


def test_sign_ins_failures_lockouts_and_sign_outs_are_logged(client, dana, settings, caplog):
    settings.AXES_ENABLED = True
    with caplog.at_level(logging.INFO, logger="requests_app.staff_auth"):
        _login(client)
        client.post(reverse("admin:logout"))  # from the test client's 127.0.0.1
        for _attempt in range(5):
            _login(client, password="wrong-password")
    records = [r for r in caplog.records if r.name == "requests_app.staff_auth"]
    events = [(r.event, r.username, r.ip) for r in records]
    assert events[:3] == [
        ("login", "dana", "10.0.0.7"),
        ("logout", "dana", "127.0.0.1"),
        ("login_failed", "dana", "10.0.0.7"),
    ]
    assert ("lockout", "dana", "10.0.0.7") in events
    assert all("wrong-password" not in r.getMessage() for r in records)


def test_passwords_need_at_least_12_characters(dana):
    with pytest.raises(ValidationError):
        validate_password("Tr0ub4dor&3", user=dana)
    validate_password("correct horse battery", user=dana)


# --- Production settings ----------------------------------------------------------------

PRODUCTION_ENV = {
    "DEBUG": "0",
    "SECRET_KEY": "k" * 20 + "-production-test-only-" + "0123456789abcdef" * 2,
    "ALLOWED_HOSTS": "example.org",
}


def _manage(*args, **env):
    # The production environment, not this test run's (the browser fixture allows async-
    # unsafe ORM use, which the deployment checks rightly refuse).
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AWS_", "MEDIA_S3", "SECURE_", "DJANGO_ALLOW_ASYNC_UNSAFE"))
    }
    environment.update(PRODUCTION_ENV, **env)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _production_settings(**env):
    names = [
        "SECURE_HSTS_SECONDS",
        "SECURE_HSTS_INCLUDE_SUBDOMAINS",
        "SECURE_HSTS_PRELOAD",
        "SECURE_SSL_REDIRECT",
        "SESSION_COOKIE_SECURE",
        "CSRF_COOKIE_SECURE",
        "SESSION_COOKIE_HTTPONLY",
        "SECURE_REFERRER_POLICY",
        "LOG_FORMAT",
        "STORAGES",
    ]
    code = (
        "import json; from django.conf import settings; "
        f"print(json.dumps({{n: getattr(settings, n) for n in {names!r}}}, default=str))"
    )
    result = _manage("shell", "-c", code, **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_production_settings_pass_the_deployment_checks():
    result = _manage("check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr


def test_production_defaults_are_strict():
    values = _production_settings()
    assert values["SECURE_HSTS_SECONDS"] == 365 * 24 * 3600
    assert values["SECURE_HSTS_INCLUDE_SUBDOMAINS"] is True
    assert values["SECURE_HSTS_PRELOAD"] is False
    assert values["SECURE_SSL_REDIRECT"] is True
    assert values["SESSION_COOKIE_SECURE"] and values["CSRF_COOKIE_SECURE"]
    assert values["SESSION_COOKIE_HTTPONLY"] is True
    assert values["SECURE_REFERRER_POLICY"] == "same-origin"
    assert values["LOG_FORMAT"] == "json"
    assert values["STORAGES"]["default"]["BACKEND"].endswith("FileSystemStorage")


def test_hsts_preload_and_media_bucket_come_from_the_environment():
    values = _production_settings(
        SECURE_HSTS_PRELOAD="1",
        SECURE_HSTS_SECONDS="600",
        AWS_STORAGE_BUCKET_NAME="city-311-media",
        AWS_S3_ENDPOINT_URL="https://s3.example.org",
        AWS_S3_REGION_NAME="us-east-1",
    )
    assert values["SECURE_HSTS_PRELOAD"] is True and values["SECURE_HSTS_SECONDS"] == 600
    default = values["STORAGES"]["default"]
    assert default["BACKEND"] == "storages.backends.s3.S3Storage"
    assert default["OPTIONS"]["bucket_name"] == "city-311-media"
    assert default["OPTIONS"]["endpoint_url"] == "https://s3.example.org"
    assert default["OPTIONS"]["file_overwrite"] is False


def test_health_is_reachable_over_plain_http_in_production():
    code = (
        "from django.test import Client; "
        "r = Client().get('/', headers={'host': 'example.org'}); "
        "h = Client().get('/health/', headers={'host': 'example.org'}); "
        "print(r.status_code, h.status_code)"
    )
    result = _manage("shell", "-c", code)
    assert result.returncode == 0, result.stderr
    portal, health = result.stdout.split()[-2:]
    assert portal == "301" and health in ("200", "503")


# --- Queues -----------------------------------------------------------------------------


def test_email_tasks_have_their_own_queue():
    def queue(name):
        return app.amqp.router.route({}, name)["queue"].name

    assert queue("notifications.tasks.send_notification") == "email"
    assert queue("notifications.tasks.sweep_outbox") == "email"
    assert queue("requests_app.tasks.process_intake") == "celery"
    assert queue("requests_app.tasks.heartbeat") == "celery"
    # A worker started without -Q takes both.
    assert {q.name for q in app.conf.task_queues} == {"celery", "email"}
