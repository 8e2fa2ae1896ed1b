import logging
import os

from celery import Celery
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
    "purge-old-throttle-windows": {"task": "requests_app.tasks.purge_throttle", "schedule": 3600.0},
}

logger = logging.getLogger(__name__)


def enqueue_on_commit(task, *args):
    """Send `task` after the current transaction commits, never failing the caller.

    The database row that made the work necessary is already committed, so a broker that
    is down only delays the work: the periodic sweep enqueues it again later.
    """
    from django.db import transaction

    def send():
        try:
            task.apply_async(args=args)
        except Exception as error:  # broker down or frozen: the sweep will retry
            logger.warning(
                "Could not enqueue %s%r (%s); the sweep will pick it up", task.name, args, error
            )

    transaction.on_commit(send)
