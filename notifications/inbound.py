"""Email that residents send us, from the provider's inbound webhook (anymail).

A reply to one of our emails (its subject carries the tracking number) becomes a public
comment on that request from the resident; anything else becomes a new request in the
triage queue, with its image attachments as photos. Each message is handled once, keyed
by its Message-ID, because providers redeliver webhooks.
"""

import hashlib
import logging
import re
from email.utils import parseaddr

from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import IntegrityError, transaction
from django.utils.html import strip_tags

from .models import InboundEmail
from .services import quiet_for

logger = logging.getLogger(__name__)

# Lenient on purpose: mail clients and people rewrite dashes and spaces; the canonical
# form is decided by normalize_tracking_number.
_TRACKING_CANDIDATE = re.compile(
    r"\bCD[\s\-_.\u2010-\u2015\u2212]?[A-Z0-9]{4}[\s\-_.\u2010-\u2015\u2212]?[A-Z0-9]{4}\b",
    re.IGNORECASE,
)
# Where the quoted original starts in a reply.
_QUOTE_START = re.compile(
    r"^(On .+ wrote:|El .+ escribió:|-{2,}\s*Original Message\s*-{2,}|From: .+|De: .+|-- )$",
    re.IGNORECASE,
)
# Small inline images are signature logos, not photos of the problem.
MIN_PHOTO_EDGE = 120


def tracking_number_in(subject: str) -> str | None:
    from requests_app.tracking import normalize_tracking_number

    for match in _TRACKING_CANDIDATE.finditer(subject or ""):
        number = normalize_tracking_number(match.group(0))
        if number:
            return number
    return None


def reply_text(message) -> str:
    """The new part of an email: without the quoted original (which carries our signed
    links) and without the signature."""
    text = message.stripped_text or message.text
    if not text and message.html:
        text = strip_tags(message.html)
    lines = []
    for line in (text or "").replace("\r\n", "\n").split("\n"):
        if _QUOTE_START.match(line.rstrip("\n")) or line.startswith(">"):
            break
        lines.append(line.rstrip())
    return "\n".join(lines).strip()


def _message_id(message) -> str:
    message_id = (message["Message-ID"] or "").strip()
    if message_id:
        return message_id[:255]
    fingerprint = "\n".join(str(message[h] or "") for h in ("From", "Subject", "Date")) + (
        message.text or ""
    )
    return "sha256:" + hashlib.sha256(fingerprint.encode()).hexdigest()


def _is_automatic(message) -> bool:
    auto = (message["Auto-Submitted"] or "no").strip().lower()
    precedence = (message["Precedence"] or "").strip().lower()
    return (
        auto != "no"
        or precedence in ("bulk", "junk", "auto_reply")
        or message["X-Autoreply"] is not None
        or message["X-Autorespond"] is not None
    )


def _sender(message) -> tuple[str, str]:
    sender = message.from_email
    if isinstance(sender, list):  # several From addresses: take none of them as the reporter
        return "", ""
    if sender is None:
        return "", ""
    return (sender.addr_spec or "").strip(), (sender.display_name or "").strip()


def inbound_category():
    """The category of requests that arrive by email: INBOUND_EMAIL_CATEGORY's code.

    Created on first use under an inactive department when the city has not set one up:
    routing then leaves these requests in the triage queue, and the portal does not
    offer the category.
    """
    from requests_app.models import Department, ServiceCategory

    code = getattr(settings, "INBOUND_EMAIL_CATEGORY", "email")
    category = ServiceCategory.objects.filter(code=code).first()
    if category is not None:
        return category
    department, _created = Department.objects.get_or_create(
        slug="email-triage", defaults={"name": "Email triage", "is_active": False}
    )
    category, _created = ServiceCategory.objects.get_or_create(
        code=code,
        defaults={
            "name": "Reported by email",
            "group": "Other",
            "department": department,
            "sla_hours": 72,
            "requires_after_photo": False,
            "is_active": False,
        },
    )
    return category


def _photos(message):
    """(processed photos, reasons for what was skipped)."""
    from requests_app.photos import PhotoRejected, process_photo

    processed, skipped = [], []
    parts = [p for p in message.walk() if p.is_attachment() or p.is_inline()]
    for part in parts:
        name = part.get_filename() or "attachment"
        if part.get_content_maintype() == "multipart":
            continue
        if part.is_inline() and not part.get_filename():
            continue  # an inline HTML part, not a file
        if len(processed) >= settings.PHOTOS_PER_REPORT:
            skipped.append(f"{name}: more than {settings.PHOTOS_PER_REPORT} photos")
            continue
        upload = SimpleUploadedFile(name, part.get_content_bytes() or b"", part.get_content_type())
        try:
            photo = process_photo(upload)
        except PhotoRejected as error:
            skipped.append(str(error.message))
            continue
        if photo.width < MIN_PHOTO_EDGE and photo.height < MIN_PHOTO_EDGE:
            if part.is_inline():
                continue
        processed.append(photo)
    return processed, skipped


def inbound_email_receive(message) -> InboundEmail | None:
    """Turn one inbound email into a comment or a request; None if already handled."""
    email, name = _sender(message)
    subject = (message.subject or "").strip()
    with transaction.atomic():
        try:
            with transaction.atomic():
                record = InboundEmail.objects.create(
                    message_id=_message_id(message),
                    sender=email[:254],
                    subject=subject[:255],
                    outcome=InboundEmail.Outcome.IGNORED,
                )
        except IntegrityError:
            logger.info("Inbound email %s was already handled", message["Message-ID"])
            return None
        own = parseaddr(settings.DEFAULT_FROM_EMAIL)[1].lower()
        if not email or _is_automatic(message) or email.lower() == own:
            record.detail = "automatic reply or no sender"
        else:
            number = tracking_number_in(subject)
            request = _request(number) if number else None
            if request is not None:
                _reply(record, request, message, email)
            else:
                _new_request(record, message, email, name, subject)
        record.save()
    return record


def _request(number):
    from requests_app.models import ServiceRequest

    return ServiceRequest.objects.filter(tracking_number=number).first()


def _is_party(request, email) -> bool:
    if request.reporter_email and request.reporter_email.strip().lower() == email.lower():
        return True
    return request.followers.filter(email__iexact=email, unsubscribed_at__isnull=True).exists()


def _reply(record, request, message, email):
    from requests_app.services import photo_attach

    text = reply_text(message)
    photos, skipped = _photos(message)
    record.request = request
    if not _is_party(request, email):
        # Anyone can write a tracking number in a subject; only the people on the request
        # may speak publicly on it. Staff still see what was sent.
        request.add_comment(
            text or "(empty email)",
            public=False,
            author_label=f"Email from {email}"[:150],
        )
        record.outcome, record.detail = InboundEmail.Outcome.NOTE, "sender is not on the request"
        return
    if text:
        with quiet_for(email):
            request.add_comment(text, public=True, author_label="Resident")
    for photo in photos:
        photo_attach(request, photo)
    if skipped:
        request.add_comment(
            "Attachments not added: " + "; ".join(skipped), public=False, author_label="Email"
        )
    record.outcome = InboundEmail.Outcome.COMMENT


def _new_request(record, message, email, name, subject):
    from requests_app import service_area
    from requests_app.models import Channel
    from requests_app.services import Intake, request_submit

    body = reply_text(message)
    description = "\n\n".join(part for part in (subject, body) if part) or "(empty email)"
    photos, skipped = _photos(message)
    located = next((p.gps for p in photos if p.gps and service_area.contains(*p.gps)), (None, None))
    request = request_submit(
        Intake(
            category=inbound_category(),
            description=description,
            channel=Channel.EMAIL,
            lat=located[0],
            lng=located[1],
            reporter_name=name[:120],
            reporter_email=email,
            photos=photos,
        )
    )
    if skipped:
        request.add_comment(
            "Attachments not added: " + "; ".join(skipped), public=False, author_label="Email"
        )
    record.request = request
    record.outcome = InboundEmail.Outcome.NEW_REQUEST
