import logging
import os
import time

from celery import Celery, signals
from celery.schedules import crontab

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "civicdesk.settings")

app = Celery("civicdesk")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

app.conf.beat_schedule = {
    "sweep-unprocessed-intake": {"task": "requests_app.tasks.sweep_intake", "schedule": 30.0},
    "sweep-unsent-notifications": {"task": "notifications.tasks.sweep_outbox", "schedule": 30.0},
    "sweep-sla-escalations": {"task": "requests_app.tasks.sweep_sla", "schedule": 60.0},
    "sweep-exports": {"task": "requests_app.export_tasks.sweep_exports", "schedule": 300.0},
    "dispatch-surveys": {"task": "surveys.tasks.dispatch_surveys", "schedule": 900.0},
    "department-digests": {
        "task": "notifications.tasks.send_department_digests",
        "schedule": crontab(hour=7, minute=0),
    },
    "refresh-dashboard-rollups": {
        "task": "requests_app.tasks.refresh_rollups",
        "schedule": 60.0,
        "options": {"expires": 60},
    },
    "reconcile-dashboard-rollups": {
        "task": "requests_app.tasks.reconcile_rollups",
        "schedule": crontab(hour=2, minute=30),
    },
    "purge-old-throttle-windows": {"task": "requests_app.tasks.purge_throttle", "schedule": 3600.0},
    # Read by /health/. A stamp that waited in the queue longer than its interval is no news.
    "worker-heartbeat": {
        "task": "requests_app.tasks.heartbeat",
        "schedule": 30.0,
        "options": {"expires": 30},
    },
    "anonymise-reporter-contacts": {
        "task": "requests_app.tasks.anonymise_reporter_contacts",
        "schedule": crontab(hour=3, minute=15),
    },
}

logger = logging.getLogger(__name__)


# After a failed publish, skip the broker for this long: each attempt against a frozen
# Redis costs its full timeout, and the sweeps enqueue the skipped work anyway.
BROKER_PAUSE_SECONDS = 5.0
_broker_down_until = 0.0


def enqueue_on_commit(task, *args):
    """Send `task` after the current transaction commits, never failing the caller.

    The database row that made the work necessary is already committed, so a broker that
    is down only delays the work: the periodic sweep enqueues it again later.
    """
    from django.db import transaction

    def send():
        global _broker_down_until
        if time.monotonic() < _broker_down_until:
            logger.info("Broker paused after a failure; %s%r is left to the sweep", task.name, args)
            return
        try:
            task.apply_async(args=args)
        except Exception as error:  # broker down or frozen: the sweep will retry
            _broker_down_until = time.monotonic() + BROKER_PAUSE_SECONDS
            logger.warning(
                "Could not enqueue %s%r (%s); the sweep will pick it up", task.name, args, error
            )

    transaction.on_commit(send)


# --- The heartbeat read by /health/ -------------------------------------------------------


@signals.worker_ready.connect
def _stamp_heartbeat_when_ready(sender, **kwargs):
    """A worker that takes the `heartbeat` task stamps it as soon as it is ready, so that
    /health/ does not report a freshly started installation's worker as missing until
    beat's next heartbeat reaches it.

    Only such a worker: the email worker (-Q email) never runs the task, and its stamp
    would tell /health/ that routing and the sweeps are being done when they may not be.
    """
    from requests_app.health import heartbeat_stamp

    heartbeat_queue = app.amqp.router.route({}, "requests_app.tasks.heartbeat")["queue"].name
    if heartbeat_queue in {queue.name for queue in sender.task_consumer.queues}:
        heartbeat_stamp()


# --- Request ids and JSON logs in the worker ----------------------------------------------
# A task enqueued while handling an HTTP request carries that request's id in a message
# header, and the worker's log lines for the task show it.


@signals.before_task_publish.connect
def _send_request_id(headers=None, **kwargs):
    from requests_app.middleware import request_id

    current = request_id.get()
    if current and headers is not None:
        headers.setdefault("request_id", current)


@signals.task_prerun.connect
def _take_request_id(task=None, **kwargs):
    from requests_app.middleware import request_id

    task.request.civicdesk_request_id_token = request_id.set(
        getattr(task.request, "request_id", None) or ""
    )


@signals.task_postrun.connect
def _drop_request_id(task=None, **kwargs):
    from requests_app.middleware import request_id

    token = getattr(task.request, "civicdesk_request_id_token", None)
    if token is not None:
        request_id.reset(token)


class _TaskFields(logging.Filter):
    def filter(self, record):
        from celery import current_task

        task = current_task if current_task and current_task.request.id else None
        record.task_name = task.name if task else None
        record.task_id = task.request.id if task else None
        return True


@signals.after_setup_logger.connect
@signals.after_setup_task_logger.connect
def _json_worker_logs(logger=None, **kwargs):
    """Celery installs its own handlers in the worker; with LOG_FORMAT=json they write JSON
    lines like the web processes', with the request id and the task."""
    from django.conf import settings

    if settings.LOG_FORMAT != "json":
        return
    from pythonjsonlogger.json import JsonFormatter

    from requests_app.middleware import RequestIdFilter

    json_settings = settings.LOGGING["formatters"]["json"]
    for handler in logger.handlers:
        handler.setFormatter(
            JsonFormatter(
                json_settings["fmt"] + " %(task_name)s %(task_id)s",
                rename_fields=json_settings["rename_fields"],
            )
        )
        handler.addFilter(RequestIdFilter())
        handler.addFilter(_TaskFields())
