"""/health/: database, broker, worker heartbeat and backlogs, for probes and monitoring."""

import json
import time
from datetime import timedelta
from types import SimpleNamespace
from unittest import mock

import pytest
from celery import signals
from django.core.cache import caches
from django.db import OperationalError, connection
from django.utils import timezone
from kombu import Queue

from notifications.models import Notification
from requests_app import health, tasks

from .conftest import WorkerProcess
from .factories import ServiceRequestFactory

HEALTH_URL = "/health/"


@pytest.fixture
def heartbeat():
    """A fresh heartbeat, as a worker would have stamped it; gone again afterwards."""
    tasks.heartbeat()
    yield
    caches["shared"].delete(health.HEARTBEAT_KEY)


def _get(client):
    response = client.get(HEALTH_URL)
    return response, json.loads(response.content)


def test_healthy_installation_answers_200_with_every_check(client, db, heartbeat, settings):
    response, body = _get(client)
    assert response.status_code == 200, body
    assert body["status"] == "ok"
    checks = body["checks"]
    assert checks["database"]["status"] == "ok"
    assert checks["broker"]["status"] == ("ok" if settings.REDIS_URL else "embedded")
    assert checks["worker"]["status"] == "ok" and checks["worker"]["age_s"] < 60
    assert checks["outbox"] == {
        "status": "ok",
        "older_than_s": 600,
        "count": 0,
        "oldest_age_s": None,
    }
    assert checks["intake"]["status"] == "ok" and checks["intake"]["count"] == 0


def test_health_is_never_cached_and_carries_a_request_id(client, db, heartbeat):
    response, _body = _get(client)
    assert "no-store" in response["Cache-Control"]
    assert response["X-Request-ID"]


def test_missing_worker_heartbeat_answers_503(client, db):
    caches["shared"].delete(health.HEARTBEAT_KEY)
    response, body = _get(client)
    assert response.status_code == 503
    assert body["status"] == "error"
    assert body["checks"]["worker"] == {"status": "missing"}
    assert body["checks"]["database"]["status"] == "ok"


def test_stale_worker_heartbeat_answers_503(client, db, heartbeat, settings):
    settings.HEALTH_WORKER_STALE_SECONDS = 120
    caches["shared"].set(health.HEARTBEAT_KEY, time.time() - 300)
    response, body = _get(client)
    assert response.status_code == 503
    assert body["checks"]["worker"]["status"] == "stale"
    assert body["checks"]["worker"]["age_s"] >= 300


def test_database_down_answers_503_without_leaking_the_error_text(client, db, heartbeat):
    def refuse(*args, **kwargs):
        raise OperationalError("connection to server failed: password=s3cret")

    # Undone before the test's own rollback, which needs the connection.
    with mock.patch.object(connection, "cursor", refuse):
        response, body = _get(client)
    assert response.status_code == 503
    assert body["checks"]["database"] == {"status": "error", "error": "OperationalError"}
    assert "s3cret" not in response.content.decode()


def test_unreachable_broker_is_reported_but_the_site_stays_up(client, db, heartbeat, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    started = time.monotonic()
    response, body = _get(client)
    assert time.monotonic() - started < 5
    assert response.status_code == 200
    assert body["status"] == "degraded"
    assert body["checks"]["broker"]["status"] == "error"


def test_old_pending_emails_are_reported_as_outbox_backlog(client, db, heartbeat):
    old = timezone.now() - timedelta(minutes=25)
    for minutes in (25, 1):
        Notification.objects.create(
            recipient="resident@example.org",
            kind=Notification.Kind.STATUS,
            language="en",
            subject="Your request",
            body_text="Hello",
            created_at=timezone.now() - timedelta(minutes=minutes),
        )
    Notification.objects.create(
        recipient="sent@example.org",
        kind=Notification.Kind.STATUS,
        language="en",
        subject="Sent long ago",
        body_text="Hello",
        status=Notification.Status.SENT,
        created_at=old,
    )
    response, body = _get(client)
    assert response.status_code == 200
    assert body["status"] == "degraded"
    outbox = body["checks"]["outbox"]
    assert outbox["status"] == "backlog" and outbox["count"] == 1
    assert 25 * 60 <= outbox["oldest_age_s"] < 26 * 60
    assert "resident@example.org" not in response.content.decode()


def test_requests_not_processed_after_a_minute_are_reported_as_intake_backlog(
    client, pothole, heartbeat
):
    ServiceRequestFactory(category=pothole, created_at=timezone.now() - timedelta(minutes=5))
    ServiceRequestFactory(category=pothole)  # just arrived: the worker has a minute
    ServiceRequestFactory(
        category=pothole,
        created_at=timezone.now() - timedelta(hours=1),
        intake_processed_at=timezone.now(),
    )
    response, body = _get(client)
    assert response.status_code == 200
    intake = body["checks"]["intake"]
    assert intake["status"] == "backlog" and intake["count"] == 1
    assert intake["oldest_age_s"] >= 300
    content = response.content.decode()
    assert "maria@example.org" not in content and "Maria" not in content


def test_heartbeat_task_is_scheduled_every_30_seconds():
    from civicdesk.celery import app

    entry = app.conf.beat_schedule["worker-heartbeat"]
    assert entry["task"] == tasks.heartbeat.name
    assert entry["schedule"] == 30.0


class _Consumer:
    """A worker's consumer, which sends worker_ready, as far as the heartbeat needs."""

    def __init__(self, *queues):
        self.task_consumer = SimpleNamespace(queues=[Queue(name) for name in queues])


def _worker_ready(*queues):
    signals.worker_ready.send(sender=_Consumer(*queues))


@pytest.mark.parametrize("queues", [("celery",), ("celery", "email")])
def test_a_worker_taking_the_heartbeat_stamps_it_as_soon_as_it_is_ready(queues):
    caches["shared"].delete(health.HEARTBEAT_KEY)
    before = time.time()
    _worker_ready(*queues)
    try:
        assert caches["shared"].get(health.HEARTBEAT_KEY) >= before
    finally:
        caches["shared"].delete(health.HEARTBEAT_KEY)


def test_the_email_worker_does_not_stamp_the_heartbeat():
    # It never runs the heartbeat task: its stamp would hide a missing default worker.
    caches["shared"].delete(health.HEARTBEAT_KEY)
    _worker_ready("email")
    assert caches["shared"].get(health.HEARTBEAT_KEY) is None


@pytest.mark.worker
def test_a_freshly_started_worker_is_healthy_before_beat_sends_a_heartbeat(
    client, celery_worker_env, tmp_path
):
    caches["shared"].delete(health.HEARTBEAT_KEY)
    worker = WorkerProcess(celery_worker_env, tmp_path / "worker.log").start()  # no beat
    try:
        worker.wait_ready()
        response, body = _get(client)
    finally:
        worker.stop()
        caches["shared"].delete(health.HEARTBEAT_KEY)
    assert response.status_code == 200, (body, worker.output())
    assert body["checks"]["worker"]["status"] == "ok"
