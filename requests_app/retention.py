"""Personal data retention: reporters' contact details do not outlive their use.

RETENTION_REPORTER_CONTACT_DAYS after a request was completed or closed, its reporter's
name, email, phone and device/account ids are blanked and its followers' addresses
replaced, by a daily task; so are the residents' copies in the outbox (address, text) and
the sender of emails the request came in or was answered by. The request, its description,
photos and history stay; the history gains one entry saying that it happened, with no
personal data in it.
"""

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from notifications.models import InboundEmail, Notification

from .models import Follower, HistoryEntry, ServiceRequest, Status

# Followers are unique per request and address, so each gets an address of its own; the
# reserved .invalid domain (RFC 2606) can never receive mail.
ANONYMISED_DOMAIN = "anonymised.invalid"
REPORTER_FIELDS = {
    "reporter_name": "",
    "reporter_email": "",
    "reporter_phone": "",
    "reporter_device_id": "",
    "reporter_account_id": "",
}


# Emails to staff hold staff addresses and what staff need; the others went to residents.
RESIDENT_EMAIL_KINDS = [
    kind
    for kind in Notification.Kind.values
    if kind not in {Notification.Kind.CREW, Notification.Kind.DIGEST, Notification.Kind.SLA}
]


def _identifiable_followers():
    return Follower.objects.exclude(email__endswith=f"@{ANONYMISED_DOMAIN}")


def _identifiable_resident_emails():
    # A pending email is still the outbox's to send (or give up on); it is taken next time.
    return (
        Notification.objects.filter(kind__in=RESIDENT_EMAIL_KINDS)
        .exclude(status=Notification.Status.PENDING)
        .exclude(recipient__endswith=f"@{ANONYMISED_DOMAIN}")
    )


def _identifiable_inbound_emails():
    return InboundEmail.objects.exclude(sender="")


def requests_due_for_anonymising(days: int, now=None):
    """Completed and closed requests resolved `days` ago that still hold contact details."""
    now = now or timezone.now()
    has_contact = Q()
    for field in REPORTER_FIELDS:
        has_contact |= ~Q(**{field: ""})
    for identifiable in (
        _identifiable_followers(),
        _identifiable_resident_emails(),
        _identifiable_inbound_emails(),
    ):
        has_contact |= Q(Exists(identifiable.filter(request=OuterRef("pk"))))
    return (
        ServiceRequest.objects.filter(status__in=[Status.COMPLETED, Status.CLOSED])
        # Imported historic requests may have no resolution time: their last change is it.
        .alias(resolved=Coalesce("resolved_at", "updated_at"))
        .filter(resolved__lte=now - timedelta(days=days))
        .filter(has_contact)
    )


def reporter_contacts_anonymise(days: int | None = None, *, batch_size: int = 200) -> int:
    """Anonymise every request due; returns how many. Safe to run twice or at once.

    Each batch is one transaction over rows locked with SKIP LOCKED (PostgreSQL), so a
    second beat takes other rows; a request done once no longer matches, so a second run
    writes no second history entry.
    """
    days = settings.RETENTION_REPORTER_CONTACT_DAYS if days is None else days
    if days <= 0:
        return 0
    done = 0
    while True:
        with transaction.atomic():
            batch = list(
                requests_due_for_anonymising(days)
                .select_for_update(skip_locked=True)
                .order_by("pk")
                .only("pk")[:batch_size]
            )
            for request in batch:
                _anonymise(request, days)
        done += len(batch)
        if len(batch) < batch_size:
            return done


def _anonymise(request, days):
    ServiceRequest.objects.filter(pk=request.pk).update(**REPORTER_FIELDS)
    now = timezone.now()
    for follower in _identifiable_followers().filter(request=request).only("pk"):
        Follower.objects.filter(pk=follower.pk).update(
            email=f"{follower.pk}@{ANONYMISED_DOMAIN}",
            unsubscribed_at=Coalesce("unsubscribed_at", now),
        )
    # The outbox keeps that an email went out, and when; not to whom, nor its text (which
    # greets the resident by name and may quote them).
    for email in _identifiable_resident_emails().filter(request=request).only("pk"):
        Notification.objects.filter(pk=email.pk).update(
            recipient=f"outbox-{email.pk}@{ANONYMISED_DOMAIN}",
            body_text="",
            body_html="",
            headers={},
            render_context={},
        )
    _identifiable_inbound_emails().filter(request=request).update(sender="")
    request.record(
        HistoryEntry.Action.FIELD,
        actor="Retention",
        field="reporter contact",
        note=f"anonymised after {days} days",
    )
