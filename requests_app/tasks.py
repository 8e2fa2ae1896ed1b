from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.utils import timezone

from . import services
from .health import heartbeat_stamp
from .models import IntakeThrottle
from .retention import reporter_contacts_anonymise


# A deadlock between two intakes locking the same group, or a database restart, only
# delays routing: the task is idempotent, and a retry a second later beats the intake
# sweep's grace by a minute.
@shared_task(
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=1,
    retry_backoff_max=8,
    max_retries=5,
)
def process_intake(request_id):
    services.request_process_intake(request_id)


@shared_task
def sweep_intake():
    return services.intake_sweep(timedelta(seconds=settings.INTAKE_SWEEP_GRACE_SECONDS))


@shared_task
def purge_throttle():
    IntakeThrottle.objects.filter(window_start__lt=timezone.now() - timedelta(days=1)).delete()


@shared_task
def sweep_sla():
    from .sla import sla_sweep

    return sla_sweep()


@shared_task
def refresh_rollups():
    """The dashboard's figures: at most a minute stale (rollups.py). Overlapping runs skip."""
    from .rollups import rollups_refresh

    result = rollups_refresh()
    if result is not None:
        from .dashboard import transparency_warm

        transparency_warm()
    return result and result.changed


@shared_task
def reconcile_rollups():
    """Nightly: catches what no timestamp shows (a deleted request, a cost edited later)."""
    from .rollups import rollups_refresh

    result = rollups_refresh(reconcile=True)
    return result and result.changed


@shared_task
def heartbeat():
    """Stamped by whichever worker takes it: /health/ reads how long ago that was."""
    return heartbeat_stamp()


@shared_task
def anonymise_reporter_contacts():
    return reporter_contacts_anonymise()
