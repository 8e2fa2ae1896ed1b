from celery import shared_task
from django.utils import timezone

from . import services


@shared_task(bind=True, max_retries=None)
def send_notification(self, notification_id):
    outcome = services.notification_send(notification_id)
    if outcome == services.SendOutcome.RETRY:
        from .models import Notification

        notification = Notification.objects.filter(pk=notification_id).first()
        if notification is None:
            return outcome
        wait = (notification.next_attempt_at - timezone.now()).total_seconds()
        raise self.retry(countdown=max(wait, 0))
    return outcome


@shared_task
def sweep_outbox():
    return services.outbox_sweep()


@shared_task
def send_department_digests():
    return services.digests_send()
