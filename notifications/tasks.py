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


@shared_task
def send_notification_batch(notification_ids):
    """Send rows created together (an SLA sweep's emails) from one message, not one each.

    A row that must be tried again keeps its next_attempt_at, and the outbox sweep takes
    it up then; one slow address does not hold up the rest of the batch.
    """
    return [services.notification_send(pk) for pk in notification_ids]
