from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from . import services
from .models import IntakeThrottle


@shared_task
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
