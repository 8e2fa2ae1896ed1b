"""/health/: is this installation doing its work?

Answers 503 when the database cannot be queried or no worker has stamped its heartbeat
lately; the broker, the email outbox and the intake backlog are reported without failing
the check. Counts and ages only: no personal data. Every outside call has a timeout of a
second or two, and the worker is never asked anything: it stamps a heartbeat (the
`heartbeat` beat task, every 30 s, and once as it starts: civicdesk/celery.py) and this
view only reads it.
"""

import time
from datetime import timedelta

from django.conf import settings
from django.core.cache import caches
from django.db import connection, transaction
from django.db.models import Count, Min
from django.http import JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

HEARTBEAT_KEY = "worker-heartbeat"
# Requests still unprocessed this long after intake are a backlog (the sweep runs every 30 s).
INTAKE_BACKLOG_AFTER = timedelta(minutes=1)


def heartbeat_stamp() -> float:
    """Called by the worker: record that it is taking tasks now."""
    now = time.time()
    caches["shared"].set(HEARTBEAT_KEY, now, timeout=24 * 3600)
    return now


def _database() -> dict:
    started = time.monotonic()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return {"status": "ok", "ms": round(1000 * (time.monotonic() - started), 1)}


def _broker() -> dict:
    if not settings.REDIS_URL:
        return {"status": "embedded"}
    import redis

    client = redis.Redis.from_url(
        settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1, retry_on_timeout=False
    )
    try:
        client.ping()
    finally:
        client.close()
    return {"status": "ok"}


def _worker() -> dict:
    stamped = caches["shared"].get(HEARTBEAT_KEY)
    if stamped is None:
        return {"status": "missing"}
    age = max(time.time() - stamped, 0)
    stale = age > settings.HEALTH_WORKER_STALE_SECONDS
    return {"status": "stale" if stale else "ok", "age_s": round(age)}


def _backlog(queryset, field, *, older_than: timedelta) -> dict:
    now = timezone.now()
    late = queryset.filter(**{f"{field}__lte": now - older_than})
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL statement_timeout = 2000")
        found = late.aggregate(count=Count("pk"), oldest=Min(field))
    count, oldest = found["count"], found["oldest"]
    return {
        "status": "backlog" if count else "ok",
        "older_than_s": int(older_than.total_seconds()),
        "count": count,
        "oldest_age_s": round((now - oldest).total_seconds()) if oldest else None,
    }


def _outbox() -> dict:
    from notifications.models import Notification

    return _backlog(
        Notification.objects.filter(status=Notification.Status.PENDING),
        "created_at",
        older_than=timedelta(minutes=settings.HEALTH_OUTBOX_BACKLOG_MINUTES),
    )


def _intake() -> dict:
    from .models import ServiceRequest

    return _backlog(
        ServiceRequest.objects.filter(intake_processed_at__isnull=True),
        "created_at",
        older_than=INTAKE_BACKLOG_AFTER,
    )


CHECKS = {
    "database": _database,
    "broker": _broker,
    "worker": _worker,
    "outbox": _outbox,
    "intake": _intake,
}
# Without these the installation is not doing its job: the answer is 503.
CRITICAL = {"database", "worker"}


def health_report() -> tuple[bool, dict]:
    checks = {}
    for name, check in CHECKS.items():
        try:
            checks[name] = check()
        except Exception as error:  # a check that fails reports it, and the others still run
            # Only the class: a message could carry a connection string with a password.
            checks[name] = {"status": "error", "error": type(error).__name__}
    healthy = all(checks[name]["status"] == "ok" for name in CRITICAL)
    if not healthy:
        status = "error"
    elif all(c["status"] in ("ok", "embedded") for c in checks.values()):
        status = "ok"
    else:
        status = "degraded"
    return healthy, {"status": status, "checks": checks}


@never_cache
@require_GET
def health(request):
    healthy, report = health_report()
    return JsonResponse(report, status=200 if healthy else 503)
