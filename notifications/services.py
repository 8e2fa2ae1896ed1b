"""Composing and sending emails through an outbox.

A notification is a row first, written in the transaction of the change that causes it,
then sent by the worker. The send locks the row and only sends what is still pending, so
a duplicated or retried task cannot send the same email twice.

Resident emails go to the reporter and to every follower who has not unsubscribed, one
row per address, each rendered in that person's language with their own signed
unsubscribe link (and the List-Unsubscribe headers mail clients show as a button).
"""

import logging
import math
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta

from anymail.exceptions import AnymailInvalidAddress, AnymailRecipientsRefused
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import EmailMultiAlternatives
from django.db import IntegrityError, transaction
from django.template.loader import render_to_string
from django.urls import NoReverseMatch, reverse
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from civicdesk.celery import enqueue_on_commit
from requests_app.compiled import insert_new
from requests_app.moderation import mask_contact_details

from .links import address_key, new_signin_token, unsubscribe_token
from .models import (
    DigestRun,
    NoticeEmail,
    Notification,
    ResidentSignInLink,
    ServiceNotice,
    SuppressedAddress,
)
from .resident import reporter_request_path, resident_requests

logger = logging.getLogger(__name__)

# Addresses left out of resident emails for the duration of a block (see quiet_for).
_quiet: ContextVar[frozenset] = ContextVar("notifications_quiet", default=frozenset())


def absolute_url(path: str) -> str:
    return f"{settings.SITE_URL}{path}"


def render_email(template: str, context: dict, language: str) -> tuple[str, str, str]:
    """(subject, text, html) from templates/notifications/email/<template>*."""
    context = {
        "city_name": settings.CITY_NAME,
        "site_url": settings.SITE_URL,
        "language": language,
        **context,
    }
    with translation.override(language):
        subject = render_to_string(f"notifications/email/{template}_subject.txt", context)
        text = render_to_string(f"notifications/email/{template}.txt", context)
        html = render_to_string(f"notifications/email/{template}.html", context)
    return " ".join(subject.split()), text, html


# --- Who is told ----------------------------------------------------------------------


@dataclass(frozen=True)
class Recipient:
    email: str
    language: str
    is_reporter: bool = False
    # Only the reporter is greeted by name: a follower must not learn who reported.
    name: str = ""


def _reporter_recipient(request) -> list[Recipient]:
    if not request.reporter_email:
        return []
    return [
        Recipient(
            request.reporter_email.strip(),
            request.language,
            is_reporter=True,
            name=request.reporter_name,
        )
    ]


def new_request_recipients(request) -> list[Recipient]:
    """resident_recipients for a request being created, without asking the database: it
    has no followers yet but its reporter, and nobody can have unsubscribed from it. An
    undeliverable address is caught when sending."""
    quiet = _quiet.get()
    return [r for r in _reporter_recipient(request) if r.email.lower() not in quiet]


def resident_recipients(request) -> list[Recipient]:
    """The reporter, then followers, one per address, minus the unsubscribed and the
    undeliverable."""
    from requests_app.models import Follower

    followers = list(Follower.objects.filter(request=request).order_by("created_at", "pk"))
    unsubscribed = {f.email.strip().lower() for f in followers if f.unsubscribed_at}
    candidates = _reporter_recipient(request) + [
        Recipient(f.email.strip(), f.language or request.language)
        for f in followers
        if not f.unsubscribed_at
    ]
    suppressed = (
        set(
            SuppressedAddress.objects.filter(
                email__in=[c.email.lower() for c in candidates]
            ).values_list("email", flat=True)
        )
        if candidates
        else set()
    )
    skip = unsubscribed | suppressed | _quiet.get()
    seen, recipients = set(), []
    for candidate in candidates:
        key = candidate.email.lower()
        if key in seen or key in skip:
            continue
        seen.add(key)
        recipients.append(candidate)
    return recipients


@contextmanager
def quiet_for(*emails):
    """Leave these addresses out of the resident emails queued inside the block, e.g. the
    resident whose own emailed reply becomes a comment."""
    token = _quiet.set(_quiet.get() | {e.strip().lower() for e in emails if e})
    try:
        yield
    finally:
        _quiet.reset(token)


def link_path(name: str, token: str, fallback: str) -> str:
    """The path of one of our signed-link views.

    Until civicdesk/urls.py mounts the app (checks.py warns about it), the link still
    points where it will be mounted rather than failing the change that sends the email.
    """
    try:
        return reverse(name, args=[token])
    except NoReverseMatch:
        return fallback


def unsubscribe_url(request, email: str) -> str:
    token = unsubscribe_token(request.pk, email)
    return absolute_url(
        link_path("notifications:unsubscribe", token, f"/notifications/unsubscribe/{token}/")
    )


def reply_address() -> str:
    """Where replies to resident emails reach us (inbound.py), or "" when nothing reads
    them: the emails then must not ask for a reply."""
    return getattr(settings, "INBOUND_EMAIL_ADDRESS", "")


def _resident_headers(unsubscribe: str) -> dict:
    headers = {
        "List-Unsubscribe": f"<{unsubscribe}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    reply_to = reply_address()
    if reply_to:
        headers["Reply-To"] = reply_to
    return headers


def notification_queue(
    request, kind, template, context, recipients=None, *, write_now=True, send=True
) -> list[Notification]:
    """Write one outbox row per resident recipient; each is sent after commit.

    With write_now=False the row is stored unwritten and the send task writes it (see
    Notification.render_context): the context must then be JSON. With send=False no task
    is enqueued: the caller has one that sends it (or the outbox sweep will).
    """
    recipients = resident_recipients(request) if recipients is None else recipients
    notifications = []
    for recipient in recipients:
        unsubscribe = unsubscribe_url(request, recipient.email)
        if write_now:
            subject, text, html = _write(request, template, recipient, unsubscribe, context)
            later = {}
        else:
            subject = text = html = ""
            later = {
                "is_reporter": recipient.is_reporter,
                "name": recipient.name,
                "unsubscribe_url": unsubscribe,
                "context": context,
            }
        notifications.append(
            _create(
                send=send,
                request=request,
                recipient=recipient.email,
                kind=kind,
                template=template,
                language=recipient.language,
                subject=subject,
                body_text=text,
                body_html=html,
                headers=_resident_headers(unsubscribe),
                render_context=later,
            )
        )
    return notifications


def request_follow_url(request, recipient: Recipient) -> str:
    """Where `recipient` can follow `request`: its public page while it has one.

    Off the public pages (withdrawn by the reporter, or hidden by staff) it is still the
    reporter's: "My requests" shows it to them after an emailed sign-in. A follower gets
    no link: the request is not theirs to see any more.
    """
    if request.is_public or recipient.is_reporter:
        return absolute_url(reporter_request_path(request))
    return ""


def _write(request, template, recipient, unsubscribe, context) -> tuple[str, str, str]:
    personal = {
        "request": request,
        "status_url": request_follow_url(request, recipient),
        "replies_reach_us": bool(reply_address()),
        "recipient": recipient,
        "greeting_name": recipient.name if recipient.is_reporter else "",
        "unsubscribe_url": unsubscribe,
        **context,
    }
    return render_email(template, personal, recipient.language)


def _write_queued(notification) -> bool:
    """Write an email that was queued unwritten, as of now; the caller saves the row.

    False when there is nothing left to write: an SLA email whose requests have all been
    deleted since.
    """
    later = notification.render_context
    if notification.kind == Notification.Kind.SLA:
        # Staff emails of the SLA sweep, one per recipient and sweep (sla._take).
        from requests_app.sla import steps_email

        written = steps_email(notification)
        if written is None:
            return False
        notification.subject, notification.body_text = written
        return True
    recipient = Recipient(
        notification.recipient,
        notification.language,
        is_reporter=later.get("is_reporter", False),
        name=later.get("name", ""),
    )
    notification.subject, notification.body_text, notification.body_html = _write(
        notification.request,
        notification.template,
        recipient,
        later.get("unsubscribe_url", ""),
        later.get("context", {}),
    )
    return True


def _create(send=True, **fields) -> Notification:
    from .tasks import send_notification

    notification = insert_new(Notification(**fields))
    if send:
        enqueue_on_commit(send_notification, notification.pk)
    return notification


def notify_request_received(request):
    """Queue the confirmation with the tracking number, for the intake task to send.

    Written by the send task, too: every submission queues one, and rendering three
    templates would be most of the cost of submitting.
    """
    return notification_queue(
        request,
        Notification.Kind.RECEIVED,
        "request_received",
        {},
        new_request_recipients(request),
        write_now=False,
        send=False,
    )


def received_email_send(request):
    """Send the request's confirmation after the intake's commit (notify_request_received)."""
    from .tasks import send_notification

    for pk in request.notifications.filter(
        kind=Notification.Kind.RECEIVED, status=Notification.Status.PENDING
    ).values_list("pk", flat=True):
        enqueue_on_commit(send_notification, pk)


STATUS_TEMPLATES = {
    "assigned": "status_assigned",
    "scheduled": "status_assigned",
    "in_progress": "status_in_progress",
    "completed": "status_completed",
    "closed": "status_closed",
}


def _public_status_note(request) -> str:
    """The note of the latest status change: shown on the public timeline already."""
    from requests_app.models import HistoryEntry

    entry = (
        request.history.filter(action=HistoryEntry.Action.STATUS, is_public=True)
        .order_by("-at", "-pk")
        .first()
    )
    return entry.public_note if entry else ""


def notify_status_changed(request):
    template = STATUS_TEMPLATES.get(request.status, "status_changed")
    context = {"status_note": _public_status_note(request)}
    if request.status == "completed":
        order = request.work_order
        context["resolution_note"] = (
            mask_contact_details(order.resolution_note)
            if order and order.resolution_note
            else context["status_note"]
        )
        # The photo view shows a request's photos to the public only while the request is
        # public: otherwise the email would carry a broken image.
        after = (
            request.public_photos().filter(kind="after").order_by("-uploaded_at").first()
            if request.is_public
            else None
        )
        context["after_photo_url"] = absolute_url(after.get_absolute_url()) if after else ""
    if request.status == "scheduled" and request.work_order_id:
        context["scheduled_for"] = request.work_order.scheduled_for
    return notification_queue(request, Notification.Kind.STATUS, template, context)


def notify_public_comment(request, comment):
    # A resident's own comment (an emailed reply) is not mailed to the other residents:
    # it was written to the city, and may carry its author's name or signature.
    if comment.author_id is None and comment.author_label == "Resident":
        return []
    return notification_queue(
        request, Notification.Kind.COMMENT, "public_comment", {"comment": comment}
    )


# --- Resident sign-in -------------------------------------------------------------------

SIGN_IN_LINK_LIFETIME = timedelta(minutes=30)


def signin_link_send(email: str, language: str, now: datetime | None = None):
    """Email a one-time "My requests" link to `email`, if it has requests to show.

    Returns the link row, or None when nothing was sent. The caller must answer the same
    either way: whether an address has reported anything is not the asker's business.
    """
    now = now or timezone.now()
    email = email.strip()
    if not resident_requests(email).exists() or SuppressedAddress.is_suppressed(email):
        return None
    token, token_hash = new_signin_token()
    with transaction.atomic():
        # Spent and expired links are of no use to anyone after a day.
        ResidentSignInLink.objects.filter(expires_at__lt=now - timedelta(days=1)).delete()
        link = ResidentSignInLink.objects.create(
            email=email.lower(),
            token_hash=token_hash,
            created_at=now,
            expires_at=now + SIGN_IN_LINK_LIFETIME,
        )
        context = {
            "signin_url": absolute_url(reverse("resident:sign_in", args=[token])),
            "my_requests_url": absolute_url(reverse("resident:my_requests")),
            "link_minutes": int(SIGN_IN_LINK_LIFETIME.total_seconds() // 60),
        }
        subject, text, html = render_email("signin_link", context, language)
        # A transactional email the resident just asked for: no unsubscribe link or
        # List-Unsubscribe header, and no request it belongs to.
        _create(
            recipient=email,
            kind=Notification.Kind.SIGN_IN,
            template="signin_link",
            language=language,
            subject=subject,
            body_text=text,
            body_html=html,
        )
    return link


# --- Staff ----------------------------------------------------------------------------


def _admin_url(request) -> str:
    return absolute_url(reverse("admin:requests_app_servicerequest_change", args=[request.pk]))


def _staff_url(request) -> str:
    return _crew_url(request) if request.work_order_id else _admin_url(request)


def _crew_url(request) -> str:
    """The crew's phone pages: the request's work order, or their list until it has one."""
    if request.work_order_id:
        return absolute_url(reverse("crew:work_order", args=[request.work_order_id]))
    return absolute_url(reverse("crew:my_work"))


def crew_member_url(request, member) -> str:
    """Where `member` of the crew `request` was given to opens it: in the admin if they
    see it there (dispatch, the department's staff), else on the crew's pages, since the
    admin shows crew members no requests."""
    from requests_app.access import visible_requests

    if visible_requests(member).filter(pk=request.pk).exists():
        return _admin_url(request)
    return _crew_url(request)


def notify_crew_assigned(request, crew) -> list[Notification]:
    """Tell the members of `crew` that `request` is theirs; call inside the assignment's
    transaction."""
    links, seen = [], set()
    for member in (
        crew.members.filter(is_active=True)
        .exclude(email="")
        .select_related("staff_profile")
        .order_by("pk")
    ):
        key = member.email.lower()
        if key in seen or SuppressedAddress.is_suppressed(member.email):
            continue
        seen.add(key)
        links.append((member.email, crew_member_url(request, member)))
    language = settings.LANGUAGE_CODE
    written = {}  # one rendering per link: the email is otherwise the same for everyone
    notifications = []
    for email, url in links:
        if url not in written:
            written[url] = render_email(
                "crew_assigned", {"request": request, "crew": crew, "staff_url": url}, language
            )
        subject, text, html = written[url]
        notifications.append(
            _create(
                request=request,
                recipient=email,
                kind=Notification.Kind.CREW,
                template="crew_assigned",
                language=language,
                subject=subject,
                body_text=text,
                body_html=html,
            )
        )
    return notifications


DIGEST_LIMIT = 50


def _digest_recipients(department) -> list[str]:
    emails = [department.email] if department.email else []
    supervisor = department.supervisor
    if supervisor and supervisor.is_active and supervisor.email:
        emails.append(supervisor.email)
    seen, unique = set(), []
    for email in emails:
        if email.lower() not in seen and not SuppressedAddress.is_suppressed(email):
            seen.add(email.lower())
            unique.append(email)
    return unique


def department_digest_send(department, now: datetime | None = None) -> DigestRun | None:
    """Queue today's digest for one department, at most once per department and day.

    The DigestRun row is the claim: a second beat (or a rerun) hits the unique constraint
    and queues nothing.
    """
    from requests_app.models import ServiceRequest

    now = now or timezone.now()
    day = timezone.localdate(now)
    requests = ServiceRequest.objects.filter(department=department).select_related("category")
    new = list(requests.filter(created_at__gt=now - timedelta(days=1)).order_by("created_at"))
    overdue = list(requests.open().filter(due_at__lt=now).order_by("due_at"))
    try:
        with transaction.atomic():
            run = DigestRun.objects.create(
                department=department,
                date=day,
                new_count=len(new),
                overdue_count=len(overdue),
            )
            if new or overdue:
                context = {
                    "department": department,
                    "day": day,
                    "new": [(r, _staff_url(r)) for r in new[:DIGEST_LIMIT]],
                    "overdue": [(r, _staff_url(r)) for r in overdue[:DIGEST_LIMIT]],
                    "new_count": len(new),
                    "overdue_count": len(overdue),
                    "queue_url": absolute_url(
                        reverse("admin:requests_app_servicerequest_changelist")
                    ),
                }
                subject, text, html = render_email(
                    "department_digest", context, settings.LANGUAGE_CODE
                )
                for email in _digest_recipients(department):
                    _create(
                        recipient=email,
                        kind=Notification.Kind.DIGEST,
                        template="department_digest",
                        language=settings.LANGUAGE_CODE,
                        subject=subject,
                        body_text=text,
                        body_html=html,
                    )
    except IntegrityError:
        return None
    return run


def digests_send(now=None) -> int:
    from requests_app.models import Department

    return sum(
        department_digest_send(department, now) is not None
        for department in Department.objects.filter(is_active=True)
    )


# --- Sending --------------------------------------------------------------------------


class SendOutcome:
    SENT = "sent"
    SKIPPED = "skipped"
    RETRY = "retry"
    FAILED = "failed"


def _retry_after(error) -> timedelta | None:
    """The provider's own "try again in N seconds" (HTTP 429/503 Retry-After), if any."""
    seconds = getattr(error, "retry_after", None)
    if seconds is None:
        headers = getattr(getattr(error, "response", None), "headers", None) or {}
        seconds = headers.get("Retry-After")
    try:
        seconds = float(seconds)
    except (TypeError, ValueError):
        return None
    if math.isnan(seconds):
        return None
    return timedelta(seconds=min(max(seconds, 1), 3600))


def _earlier_pending(notification) -> Notification | None:
    if notification.request_id is None:
        return None
    return (
        Notification.objects.filter(
            request_id=notification.request_id,
            recipient=notification.recipient,
            status=Notification.Status.PENDING,
            pk__lt=notification.pk,
        )
        .order_by("next_attempt_at")
        .first()
    )


def notification_send(notification_id: int) -> str:
    """Send one pending notification at most once.

    The row stays locked while the provider is called; a second worker skips it rather
    than wait, and finds it sent afterwards.
    """
    with transaction.atomic():
        notification = (
            Notification.objects.select_for_update(skip_locked=True)
            # Not before its time: a retry task and the outbox sweep may both hold the id.
            .filter(
                pk=notification_id,
                status=Notification.Status.PENDING,
                next_attempt_at__lte=timezone.now(),
            )
            .first()
        )
        if notification is None:
            return SendOutcome.SKIPPED
        earlier = _earlier_pending(notification)
        if earlier is not None:
            # Keep a resident's emails about a request in the order of events: "fixed"
            # must not overtake "received" while the provider is failing.
            notification.next_attempt_at = max(earlier.next_attempt_at, timezone.now()) + timedelta(
                seconds=1
            )
            notification.save(update_fields=["next_attempt_at"])
            return SendOutcome.RETRY
        suppressed = SuppressedAddress.objects.filter(
            email=notification.recipient.strip().lower()
        ).first()
        if suppressed is not None:
            notification.status = Notification.Status.FAILED
            notification.last_error = f"Not sent: the address is undeliverable ({suppressed})"
            notification.save(update_fields=["status", "last_error"])
            return SendOutcome.FAILED
        if not notification.is_written and not _write_queued(notification):
            notification.status = Notification.Status.FAILED
            notification.last_error = "Not sent: every request it listed has been deleted since"
            notification.save(update_fields=["status", "last_error"])
            return SendOutcome.FAILED
        message = EmailMultiAlternatives(
            subject=notification.subject,
            body=notification.body_text,
            from_email=settings.DEFAULT_FROM_EMAIL,
            to=[notification.recipient],
            headers=notification.headers or None,
        )
        if notification.body_html:
            message.attach_alternative(notification.body_html, "text/html")
        notification.attempts += 1
        try:
            message.send()
        except (AnymailRecipientsRefused, AnymailInvalidAddress) as error:
            # Permanent: sending again cannot help, and the provider would count it
            # against our reputation.
            notification.status = Notification.Status.FAILED
            notification.last_error = f"Recipient refused: {error}"
            SuppressedAddress.suppress(
                notification.recipient, SuppressedAddress.Reason.REFUSED, str(error)
            )
            outcome = SendOutcome.FAILED
        except Exception as error:  # the provider or the network; try again later
            notification.last_error = f"{type(error).__name__}: {error}"
            if notification.should_give_up():
                notification.status = Notification.Status.FAILED
                outcome = SendOutcome.FAILED
            else:
                wait = _retry_after(error) or notification.backoff()
                notification.next_attempt_at = timezone.now() + wait
                outcome = SendOutcome.RETRY
            logger.warning("Sending notification %s failed: %s", notification.pk, error)
        else:
            notification.status = Notification.Status.SENT
            notification.sent_at = timezone.now()
            notification.last_error = ""
            if notification.kind == Notification.Kind.SIGN_IN:
                # The link is a key to the resident's requests: once it is in their inbox,
                # the outbox (and whoever reads the admin) has no need to hold a copy.
                notification.body_text = "(The sign-in link was removed after sending.)"
                notification.body_html = ""
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


# --- Unsubscribe and delivery events ---------------------------------------------------


def unsubscribe_target(request_id: int, key: str):
    """(request, address) a token names, or (None, "") when it names nobody we email."""
    from requests_app.models import Follower, ServiceRequest

    request = ServiceRequest.objects.filter(pk=request_id).first()
    if request is None:
        return None, ""
    candidates = [request.reporter_email] + list(
        Follower.objects.filter(request=request).values_list("email", flat=True)
    )
    for email in candidates:
        if email and address_key(email) == key:
            return request, email
    return None, ""


def is_unsubscribed(request, email: str) -> bool:
    """Whether `email` has stopped emails about `request` (follower_unsubscribe)."""
    from requests_app.models import Follower

    return Follower.objects.filter(
        request=request, email__iexact=email.strip(), unsubscribed_at__isnull=False
    ).exists()


def follower_unsubscribe(request, email: str) -> bool:
    """Stop emails about `request` to `email`; True if this changed anything."""
    from requests_app.models import Follower, HistoryEntry

    is_reporter = email.strip().lower() == request.reporter_email.strip().lower()
    with transaction.atomic():
        follower = (
            Follower.objects.select_for_update()
            .filter(request=request, email__iexact=email.strip())
            .first()
        )
        if follower is None:
            follower = Follower.objects.create(
                request=request,
                email=email.strip(),
                language=request.language,
                source=Follower.Source.REPORTER if is_reporter else Follower.Source.FOLLOW,
                unsubscribed_at=timezone.now(),
            )
        elif follower.unsubscribed_at is None:
            Follower.objects.filter(pk=follower.pk).update(unsubscribed_at=timezone.now())
        else:
            return False
        request.record(
            HistoryEntry.Action.FOLLOW,
            actor="Resident",
            field="unsubscribed",
            note="The reporter unsubscribed from emails"
            if is_reporter
            else "A follower unsubscribed from emails",
        )
    return True


BOUNCE_EVENTS = {"bounced": SuppressedAddress.Reason.BOUNCED}
COMPLAINT_EVENTS = {"complained": SuppressedAddress.Reason.COMPLAINED}
PERMANENT_REJECTS = {"bounced", "invalid", "spam"}


def delivery_event_record(event) -> SuppressedAddress | None:
    """Handle one provider tracking event (anymail's normalized AnymailTrackingEvent)."""
    reason = {**BOUNCE_EVENTS, **COMPLAINT_EVENTS}.get(event.event_type)
    if event.event_type == "rejected" and event.reject_reason in PERMANENT_REJECTS:
        reason = SuppressedAddress.Reason.BOUNCED
    if reason is None or not event.recipient:
        return None
    detail = " ".join(p for p in (event.description, event.mta_response) if p)[:2000]
    suppressed = SuppressedAddress.suppress(event.recipient, reason, detail)
    if event.message_id:
        Notification.objects.filter(provider_message_id=event.message_id).update(
            last_error=f"{reason.label} after sending: {detail}"[:2000]
        )
    logger.info("Suppressed %s: %s", event.recipient, reason)
    return suppressed


# --- Service notices --------------------------------------------------------------------

EARTH_RADIUS_M = 6_371_000


def _distance_m(lat1, lng1, lat2, lng2) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lng2 - lng1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(a))


def _notice_covers(notice, lat, lng) -> bool:
    if notice.area:
        from shapely.geometry import Point, shape

        try:
            return shape(notice.area).covers(Point(lng, lat))
        except Exception:  # a malformed area saved around the admin's validation
            logger.warning("Service notice %s has an unreadable area", notice.pk)
            return False
    if None in (notice.center_lat, notice.center_lng, notice.radius_m):
        return False
    return _distance_m(lat, lng, notice.center_lat, notice.center_lng) <= notice.radius_m


def notices_for(lat=None, lng=None, category=None, now=None) -> list[ServiceNotice]:
    """Current notices that cover the point (and apply to the category, if given).

    Without a point there is nothing to show: a page that does not know a place yet gets
    no notices rather than every notice in the city.
    """
    if lat is None or lng is None:
        return []
    notices = ServiceNotice.objects.current(now).prefetch_related("categories")
    found = []
    for notice in notices:
        categories = list(notice.categories.all())
        if category is not None and categories and category not in categories:
            continue
        if _notice_covers(notice, lat, lng):
            found.append(notice)
    return found


# --- Service notices by email ----------------------------------------------------------

# Metres per degree of latitude, for a bounding box around a notice's circle.
METRES_PER_DEGREE = 111_320


def _notice_bounds(notice) -> tuple[float, float, float, float] | None:
    """(min_lat, min_lng, max_lat, max_lng) around the notice's area, a little generous:
    only a first cut for the database; _notice_covers decides."""
    if notice.area:
        from shapely.geometry import shape

        try:
            min_lng, min_lat, max_lng, max_lat = shape(notice.area).bounds
        except Exception:
            return None
        return min_lat - 1e-6, min_lng - 1e-6, max_lat + 1e-6, max_lng + 1e-6
    if None in (notice.center_lat, notice.center_lng, notice.radius_m):
        return None
    dlat = notice.radius_m / METRES_PER_DEGREE * 1.01
    cos_lat = max(math.cos(math.radians(notice.center_lat)), 0.01)
    dlng = dlat / cos_lat
    return (
        notice.center_lat - dlat,
        notice.center_lng - dlng,
        notice.center_lat + dlat,
        notice.center_lng + dlng,
    )


def notice_requests(notice):
    """Open requests inside the notice's area (and of its categories, if it has any),
    oldest first."""
    from requests_app.models import ServiceRequest

    bounds = _notice_bounds(notice)
    if bounds is None:
        return []
    min_lat, min_lng, max_lat, max_lng = bounds
    requests = ServiceRequest.objects.open().filter(
        lat__gte=min_lat, lat__lte=max_lat, lng__gte=min_lng, lng__lte=max_lng
    )
    categories = list(notice.categories.values_list("pk", flat=True))
    if categories:
        requests = requests.filter(category_id__in=categories)
    requests = requests.select_related("category").order_by("created_at", "pk")
    return [r for r in requests if _notice_covers(notice, r.lat, r.lng)]


def notice_email_send(notice, now: datetime | None = None) -> int:
    """Email `notice` to the reporters and followers of open requests inside its area, each
    address once per notice however often this runs; returns how many were queued.

    Each email is about one of the resident's requests there, and carries that request's
    unsubscribe link: whoever stopped emails about it (or whose address bounces) is left
    out, as for any other email about the request.
    """
    now = now or timezone.now()
    if not notice.email_residents:
        raise ValidationError(
            _("“%(notice)s” may not be emailed: tick “may be emailed to residents” first.")
            % {"notice": notice}
        )
    if notice.ends_at and notice.ends_at <= now:
        raise ValidationError(_("“%(notice)s” has ended.") % {"notice": notice})
    done = set(NoticeEmail.objects.filter(notice=notice).values_list("email", flat=True))
    queued = 0
    for request in notice_requests(notice):
        for recipient in resident_recipients(request):
            key = recipient.email.lower()
            if key in done:
                continue
            done.add(key)
            try:
                with transaction.atomic():
                    (notification,) = notification_queue(
                        request,
                        Notification.Kind.NOTICE,
                        "service_notice",
                        {"notice": notice},
                        recipients=[recipient],
                    )
                    NoticeEmail.objects.create(
                        notice=notice, email=key, notification=notification, created_at=now
                    )
            except IntegrityError:
                continue  # a run at the same moment took this address; its email stands
            queued += 1
    return queued
