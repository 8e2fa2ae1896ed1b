"""Composing and sending resident emails through an outbox.

A notification is a row first, written in the transaction of the change that causes it,
then sent by the worker. The send locks the row and only sends what is still pending, so
a duplicated or retried task cannot send the same email twice.
"""

import logging

from anymail.exceptions import AnymailRecipientsRefused
from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db import transaction
from django.template.loader import render_to_string
from django.utils import timezone, translation

from civicdesk.celery import enqueue_on_commit

from .models import MAX_ATTEMPTS, Notification

logger = logging.getLogger(__name__)


def absolute_url(path: str) -> str:
    return f"{settings.SITE_URL}{path}"


def render_email(template: str, context: dict, language: str) -> tuple[str, str, str]:
    """(subject, text, html) from templates/notifications/email/<template>*."""
    context = {"city_name": settings.CITY_NAME, "site_url": settings.SITE_URL, **context}
    with translation.override(language):
        subject = render_to_string(f"notifications/email/{template}_subject.txt", context)
        text = render_to_string(f"notifications/email/{template}.txt", context)
        html = render_to_string(f"notifications/email/{template}.html", context)
    return " ".join(subject.split()), text, html


def notification_queue(request, kind, template, context) -> Notification | None:
    """Write the outbox row for the request's reporter; it is sent after commit."""
    if not request.reporter_email:
        return None
    context = {
        "request": request,
        "status_url": absolute_url(request.get_absolute_url()),
        **context,
    }
    subject, text, html = render_email(template, context, request.language)
    notification = Notification.objects.create(
        request=request,
        recipient=request.reporter_email,
        kind=kind,
        language=request.language,
        subject=subject,
        body_text=text,
        body_html=html,
    )
    from .tasks import send_notification

    enqueue_on_commit(send_notification, notification.pk)
    return notification


def notify_request_received(request):
    return notification_queue(request, Notification.Kind.RECEIVED, "request_received", {})


def notify_status_changed(request):
    after_photo = request.public_photos().filter(kind="after").order_by("-uploaded_at").first()
    return notification_queue(
        request,
        Notification.Kind.STATUS,
        "status_changed",
        {"after_photo_url": absolute_url(after_photo.get_absolute_url()) if after_photo else ""},
    )


def notify_public_comment(request, comment):
    return notification_queue(
        request, Notification.Kind.COMMENT, "public_comment", {"comment": comment}
    )


class SendOutcome:
    SENT = "sent"
    SKIPPED = "skipped"
    RETRY = "retry"
    FAILED = "failed"


def notification_send(notification_id: int) -> str:
    """Send one pending notification at most once.

    The row stays locked while the provider is called; a second worker skips it rather
    than wait, and finds it sent afterwards.
    """
    with transaction.atomic():
        notification = (
            Notification.objects.select_for_update(skip_locked=True)
            .filter(pk=notification_id, status=Notification.Status.PENDING)
            .first()
        )
        if notification is None:
            return SendOutcome.SKIPPED
        message = EmailMultiAlternatives(
            subject=notification.subject,
            body=notification.body_text,
            from_email=settings.DEFAULT_FROM_EMAIL,
            to=[notification.recipient],
        )
        if notification.body_html:
            message.attach_alternative(notification.body_html, "text/html")
        notification.attempts += 1
        try:
            message.send()
        except AnymailRecipientsRefused as error:
            notification.status = Notification.Status.FAILED
            notification.last_error = f"Recipient refused: {error}"
            outcome = SendOutcome.FAILED
        except Exception as error:  # the provider or the network; try again later
            notification.last_error = f"{type(error).__name__}: {error}"
            if notification.attempts >= MAX_ATTEMPTS:
                notification.status = Notification.Status.FAILED
                outcome = SendOutcome.FAILED
            else:
                notification.next_attempt_at = timezone.now() + notification.backoff()
                outcome = SendOutcome.RETRY
            logger.warning("Sending notification %s failed: %s", notification.pk, error)
        else:
            notification.status = Notification.Status.SENT
            notification.sent_at = timezone.now()
            notification.last_error = ""
            anymail_status = getattr(message, "anymail_status", None)
            notification.provider_message_id = (getattr(anymail_status, "message_id", "") or "")[
                :255
            ]
            outcome = SendOutcome.SENT
        notification.save()
    return outcome


def outbox_sweep(batch=100) -> int:
    """Send what is due but was never (or not successfully) handed to a task."""
    sent = 0
    for pk in (
        Notification.objects.due().order_by("next_attempt_at").values_list("pk", flat=True)[:batch]
    ):
        sent += notification_send(pk) == SendOutcome.SENT
    return sent


def notification_resend(notification: Notification):
    """Staff put a failed notification back in the queue."""
    with transaction.atomic():
        Notification.objects.filter(pk=notification.pk, status=Notification.Status.FAILED).update(
            status=Notification.Status.PENDING, attempts=0, next_attempt_at=timezone.now()
        )
        from .tasks import send_notification

        enqueue_on_commit(send_notification, notification.pk)
