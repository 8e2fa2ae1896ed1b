from celery import shared_task

from . import services


@shared_task(bind=True, max_retries=None)
def send_notification(self, notification_id):
    outcome = services.notification_send(notification_id)
    if outcome == services.SendOutcome.RETRY:
        from .models import Notification

        notification = Notification.objects.get(pk=notification_id)
        raise self.retry(countdown=notification.backoff().total_seconds())
    return outcome


@shared_task
def sweep_outbox():
    return services.outbox_sweep()
