"""Open311 GeoReport v2: the city's requests for apps and other systems, in JSON and XML.

Spec: http://wiki.open311.org/GeoReport_v2/ . Element names, nesting and the shape of
errors follow what other cities' servers return (see tests/test_open311.py), so existing
clients work unmodified. Extensions, as implemented elsewhere:

- paging (`page`, `page_size`) and `updated_after`/`updated_before` (Bloomington, Boston);
- `extensions=true` adds `extended_attributes` to each request (Chicago);
- `servicerequestupdates` lists status changes and public comments in the format
  FixMyStreet follows (mySociety's update extension);
- a `media` file in a multipart POST becomes the request's photo.

Only public data leaves through here: requests staff hid, hidden photos, internal notes and
anything about the reporter never do, and residents' words go out as the status page shows
them (contact details masked, held back while awaiting review: moderation.py). Submissions
go through the portal's intake (`request_submit`), so routing, service levels and emails
follow exactly as for the web.
"""

import hashlib
import hmac
import json
import math
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import wraps

from django.conf import settings
from django.core import signing
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation, ValidationError
from django.core.validators import validate_email
from django.db import connections, transaction
from django.db.models import BigIntegerField, Func, OuterRef, Q, Subquery, Window
from django.db.models.functions import RowNumber
from django.http import HttpResponse
from django.http.multipartparser import MultiPartParserError
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from . import moderation, service_area
from .models import (
    OPEN_STATUSES,
    ApiClient,
    Channel,
    CloseReason,
    Comment,
    HistoryEntry,
    IntakeThrottle,
    Photo,
    ServiceAttribute,
    ServiceCategory,
    ServiceRequest,
    Status,
)
from .photos import PhotoRejected, ProcessedPhoto, process_photo
from .services import Intake, request_submit
from .tracking import normalize_tracking_number

SPECIFICATION = "http://wiki.open311.org/GeoReport_v2"
# When this API's behaviour last changed; clients compare it to decide whether to re-read.
CHANGESET = "2026-11-23T00:00:00+00:00"
DEFAULT_WINDOW = timedelta(days=90)  # the spec's default span for GET requests
MAX_ROWS = 1000  # the spec's default row limit, and our largest page
MAX_DESCRIPTION = 4000  # as on the portal's report form
MAX_IDS = 1000
# Far beyond any real history, and small enough that OFFSET never overflows a database.
MAX_PAGE = 1_000_000
TOKEN_SALT = "requests_app.open311.token"
KEY_PREFIX_BYTES = 5  # "cd" + 10 hex characters fills ApiClient.key_prefix (12)

_SERVICE_CODE = re.compile(r"^[-a-zA-Z0-9_]+$")
_ATTRIBUTE_FIELD = re.compile(r"^attribute\[([^\[\]]+)\](\[\])?$")
# A "+" in an unencoded query string arrives as a space: "…T10:00:00 05:00".
_SPACE_FOR_PLUS = re.compile(r"(\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?) (\d{2}(?::?\d{2})?)$")
# Characters XML 1.0 cannot carry at all, even escaped; and those and what must be escaped.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_XML_SPECIAL = re.compile("[&<>\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
# XML element of each member of a list, by the list's element name (spec and extensions).
_ITEM_TAGS = {
    "endpoints": "endpoint",
    "formats": "format",
    "attributes": "attribute",
    "values": "value",
    "notes": "note",
}


class Open311Error(Exception):
    """An error the client caused, answered as the spec's list of {code, description}."""

    def __init__(self, status, *descriptions, headers=None):
        super().__init__(descriptions[0] if descriptions else "")
        self.status = status
        self.descriptions = list(descriptions)
        self.headers = headers or {}


# --- Formats ---------------------------------------------------------------------------------


def w3c(value, tz=None):
    """A W3C date-time with the city's offset, e.g. 2026-04-14T06:37:38-04:00."""
    if value is None:
        return None
    return value.astimezone(tz or timezone.get_current_timezone()).isoformat(timespec="seconds")


class EpochMicroseconds(Func):
    """A date-time column as microseconds since 1970, for w3c_from_epoch and for sorting.

    Read where a response formats many date-times: psycopg reads a bigint in C, while
    Django's loader for timestamptz runs in Python, and in a feed of 1,000 requests it cost
    more than the query. The databases keep microseconds, so nothing is rounded.
    """

    template = "(extract(epoch from %(expressions)s) * 1000000)::bigint"
    output_field = BigIntegerField()

    def as_sqlite(self, compiler, connection, **extra_context):
        # Django keeps date-times there as text in UTC, "2026-04-14 10:37:38.123456" (no
        # fraction when it is 0): the whole seconds from julianday(), exact once rounded,
        # and the microseconds from the text. A column: its SQL appears twice.
        template = (
            "(CAST(ROUND((julianday(substr(%(expressions)s, 1, 19)) - 2440587.5) * 86400)"
            " AS INTEGER) * 1000000 + CAST(substr(%(expressions)s || '.000000', 21, 6)"
            " AS INTEGER))"
        )
        return self.as_sql(compiler, connection, template=template, **extra_context)

    def get_db_converters(self, connection):
        return []  # the driver's int is the value: Django's int() of it, per row, is waste


def w3c_from_epoch(microseconds, tz):
    """w3c() of the date-time `microseconds` after 1970 (an EpochMicroseconds)."""
    if microseconds is None:
        return None
    # Floored, as isoformat() drops the fraction of a second, before 1970 too.
    return datetime.fromtimestamp(microseconds // 1_000_000, tz).isoformat(timespec="seconds")


def _xml_text(value):
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if not _XML_SPECIAL.search(text):  # most texts: one look rather than four
        return text
    text = _NOT_XML.sub("", text)
    # What ElementTree escapes in element text, in its order.
    if "&" in text:
        text = text.replace("&", "&amp;")
    if "<" in text:
        text = text.replace("<", "&lt;")
    if ">" in text:
        text = text.replace(">", "&gt;")
    return text


def _xml_write(out: list, tag, value):
    # Written as strings, not through ElementTree: a feed of 1,000 requests is some 20,000
    # elements, and building them as objects cost more than everything else in the response.
    # Other servers write <description></description>, not <description />; some clients'
    # XML-to-object mappers only see the former as an empty string.
    if isinstance(value, dict):
        out.append(f"<{tag}>")
        for key, child in value.items():
            _xml_write(out, key, child)
        out.append(f"</{tag}>")
    elif isinstance(value, list):
        out.append(f"<{tag}>")
        item_tag = _ITEM_TAGS.get(tag, "item")
        for child in value:
            _xml_write(out, item_tag, child)
        out.append(f"</{tag}>")
    else:
        out.append(f"<{tag}>{_xml_text(value)}</{tag}>")


def render(fmt, data, *, root, item=None, status=200, headers=None):
    """`data` as JSON, or as XML under `root` (list members as `item` elements)."""
    if fmt == "xml":
        out = ['<?xml version="1.0" encoding="utf-8"?>\n']
        if isinstance(data, list):
            out.append(f"<{root}>")
            for member in data:
                _xml_write(out, item, member)
            out.append(f"</{root}>")
        else:
            _xml_write(out, root, data)
        response = HttpResponse("".join(out), content_type="text/xml; charset=utf-8", status=status)
    else:
        response = HttpResponse(
            json.dumps(data, ensure_ascii=False),
            content_type="application/json; charset=utf-8",
            status=status,
        )
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def render_error(fmt, error: Open311Error):
    return render(
        fmt,
        [{"code": error.status, "description": text} for text in error.descriptions],
        root="errors",
        item="error",
        status=error.status,
        headers=error.headers,
    )


def open311_view(methods):
    """Answer wrong methods and client errors in the requested format, never as HTML."""

    def decorate(view):
        @wraps(view)
        def wrapper(request, *args, format="json", **kwargs):
            fmt = format if format in ("json", "xml") else "json"
            try:
                if request.method not in methods:
                    raise Open311Error(
                        405,
                        f"Method {request.method} is not allowed here.",
                        headers={"Allow": ", ".join(methods)},
                    )
                return view(request, fmt, *args, **kwargs)
            except Open311Error as error:
                return render_error(fmt, error)
            except (MultiPartParserError, RequestDataTooBig, SuspiciousOperation) as error:
                # Django would answer these with an HTML page (or, for a broken multipart
                # body, a server error); a client of this API expects the error list.
                return render_error(fmt, Open311Error(400, f"Malformed request: {error}"))

        # No view here acts on a browser's cookies: the one that changes anything (POST
        # requests) is authenticated by api_key, so CSRF protection has nothing to protect.
        return csrf_exempt(wrapper)

    return decorate


# --- Parsing what clients send ---------------------------------------------------------------


def parse_datetime(text, name):
    """A W3C date-time, leniently: with or without T, offset, seconds or time of day."""
    raw = (text or "").strip()
    candidate = _SPACE_FOR_PLUS.sub(r"\1+\2", raw)
    try:
        try:
            value = datetime.fromisoformat(candidate)
        except ValueError:
            value = datetime.combine(date.fromisoformat(candidate), time())
        if timezone.is_naive(value):
            value = timezone.make_aware(value)
        # In UTC: PostgreSQL refuses offsets beyond ±15:59, which Python accepts. Years at
        # the edges of the calendar overflow here.
        value = value.astimezone(UTC)
    except (ValueError, OverflowError):
        raise Open311Error(
            400, f"{name} must be a W3C date-time such as 2026-01-31T09:00:00-05:00."
        ) from None
    return value


def _optional_datetime(params, name):
    return parse_datetime(params[name], name) if params.get(name, "").strip() else None


def _shift(value, delta):
    try:
        return value + delta
    except OverflowError:
        return datetime.min.replace(tzinfo=UTC) if delta < timedelta(0) else None


def _text(data, name, *, max_length, required=False):
    value = data.get(name, "")
    if "\x00" in value:
        raise Open311Error(400, f"{name} must not contain null characters.")
    value = value.strip()
    if required and not value:
        raise Open311Error(400, f"{name} is required.")
    if len(value) > max_length:
        raise Open311Error(400, f"{name} must be at most {max_length} characters long.")
    return value


def _coordinate(data, name, limit):
    raw = data.get(name, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise Open311Error(400, f"{name} must be a number in decimal degrees.") from None
    if not math.isfinite(value) or abs(value) > limit:
        raise Open311Error(400, f"{name} must be between -{limit} and {limit}.")
    return value


def _positive_int(params, name, default, *, clamp=None, limit=None):
    """A whole number from 1; above `clamp` it is `clamp`, above `limit` an error."""
    raw = params.get(name, "").strip()
    if not raw:
        return default
    if not raw.isascii() or not raw.isdigit() or int(raw[:20]) < 1:
        raise Open311Error(400, f"{name} must be a whole number of at least 1.")
    # Python refuses to convert thousands of digits; anything that long is simply huge.
    value = int(raw) if len(raw) <= 18 else 10**18
    if limit and value > limit:
        raise Open311Error(400, f"{name} must be at most {limit}.")
    return min(value, clamp) if clamp else value


def _list(params, name):
    """A comma-separated parameter, given once or several times."""
    return [part.strip() for raw in params.getlist(name) for part in raw.split(",") if part.strip()]


def _flag(params, name):
    return params.get(name, "").strip().lower() in ("true", "1", "yes")


# --- API keys --------------------------------------------------------------------------------


def _key_hash(key: str) -> str:
    # A fast hash is enough: the secret is 256 random bits, not a password to guess.
    return hashlib.sha256(key.encode()).hexdigest()


def api_client_issue_key(client: ApiClient) -> str:
    """Give `client` a new key and return it; only its hash is kept, so this is the one
    time anybody sees it. A key issued before stops working."""
    prefix = "cd" + secrets.token_hex(KEY_PREFIX_BYTES)
    key = f"{prefix}.{secrets.token_urlsafe(32)}"
    client.key_prefix = prefix
    client.key_hash = _key_hash(key)
    client.is_active = True
    client.revoked_at = None
    if client.pk:
        client.save(update_fields=["key_prefix", "key_hash", "is_active", "revoked_at"])
    else:
        client.save()
    return key


def api_client_revoke(client: ApiClient) -> None:
    now = timezone.now()
    ApiClient.objects.filter(pk=client.pk).update(is_active=False, revoked_at=now)
    client.is_active, client.revoked_at = False, now


def api_client_for_key(key: str) -> ApiClient | None:
    prefix, dot, _secret = (key or "").strip().partition(".")
    if not dot or not prefix:
        return None
    client = ApiClient.objects.filter(
        key_prefix=prefix, is_active=True, revoked_at__isnull=True
    ).first()
    if client is None or not hmac.compare_digest(client.key_hash, _key_hash(key.strip())):
        return None
    return client


def _authenticate(params) -> ApiClient:
    client = api_client_for_key(params.get("api_key", ""))
    if client is None:
        raise Open311Error(403, "Invalid api_key: ask the city for a key, or check yours.")
    within_limit = IntakeThrottle.hit(
        f"open311:{client.pk}", limit=client.requests_per_minute, window=timedelta(minutes=1)
    )
    if not within_limit:
        raise Open311Error(
            429,
            f"Too many requests with this api_key: at most {client.requests_per_minute} a minute.",
            headers={"Retry-After": "60"},
        )
    return client


# --- Tokens ----------------------------------------------------------------------------------


def request_token(service_request) -> str:
    """An opaque handle for a new request: the tracking number, signed."""
    return signing.Signer(salt=TOKEN_SALT).sign_object(service_request.tracking_number)


def _tracking_number_for_token(token) -> str | None:
    try:
        value = signing.Signer(salt=TOKEN_SALT).unsign_object(token)
    except (signing.BadSignature, ValueError, TypeError, UnicodeError):
        return None
    return value if isinstance(value, str) else None


# --- Reading ---------------------------------------------------------------------------------


def open311_status(status) -> str:
    return "open" if status in OPEN_STATUSES else "closed"


def _absolute(path):
    return f"{settings.SITE_URL}{path}"


def _category_data(category: ServiceCategory, has_attributes: bool):
    return {
        "service_code": category.code,
        "service_name": category.name,
        "description": category.description or None,
        "metadata": has_attributes,
        "type": "realtime",
        "keywords": category.keywords or None,
        "group": category.group,
    }


def _attribute_data(attribute: ServiceAttribute):
    values = attribute.values if isinstance(attribute.values, list) else []
    return {
        "variable": attribute.variable,
        "code": attribute.code,
        "datatype": attribute.datatype,
        "required": attribute.required,
        "datatype_description": attribute.datatype_description or None,
        "order": attribute.order,
        "description": attribute.description,
        "values": [
            {"key": str(value.get("key", "")), "name": str(value.get("name", ""))}
            for value in values
            if isinstance(value, dict)
        ],
    }


# Only what the public may see is ever read, so nothing private can slip into a response.
# Plain rows rather than model instances: building 1,000 requests with their category and
# department as objects costs more than the queries themselves. Date-times are read as
# PUBLIC_DATETIMES.
PUBLIC_FIELDS = (
    "pk",
    "tracking_number",
    "status",
    "close_reason",
    "description",
    "lat",
    "lng",
    "address",
    "address_id",
    "zipcode",
    "channel",
    "work_order_id",
    "duplicate_of_id",
    "category__code",
    "category__name",
    "category__service_notice",
    "department__name",
    "district__name",
    "duplicate_of__tracking_number",
    "duplicate_of__is_public",
    # Read only to work out the public wording of the description.
    "public_description_override",
    "description_approved",
)
PUBLIC_DATETIMES = {
    "created": EpochMicroseconds("created_at"),
    "updated": EpochMicroseconds("updated_at"),
    "expected": EpochMicroseconds("expected_at"),
}
COMMENT_FIELDS = ("text", "public_text_override", "text_approved", "author_id")


def _public_description(row) -> str:
    return moderation.public_text(
        row["description"],
        override=row["public_description_override"],
        approved=row["description_approved"],
    )


def _public_comment(text, override, approved, author_id) -> str:
    """Comment.public_text, from a row of COMMENT_FIELDS."""
    return moderation.public_text(
        text, override=override, approved=approved, review=author_id is None, kind="comment"
    )


def _status_notes(ids) -> dict[int, str]:
    """What explains each request's current status, by request id: the latest public
    comment, unless the status has changed since; then that change's note, if it had one.

    A comment made before a reopening ("we have scheduled the repair") no longer speaks
    for the reopened request.
    """
    comments = _latest_per_request(
        Comment.objects.filter(request_id__any_of=ids, is_public=True), "created_at"
    ).values_list("request_id", "created_at", *COMMENT_FIELDS)
    changes = _latest_per_request(
        HistoryEntry.objects.filter(
            request_id__any_of=ids, is_public=True, action=HistoryEntry.Action.STATUS
        ),
        "at",
    ).values_list("request_id", "at", "note")
    notes = {request_id: (at, _public_comment(*fields)) for request_id, at, *fields in comments}
    for request_id, at, note in changes:
        if request_id not in notes or notes[request_id][0] < at:
            notes[request_id] = (at, moderation.public_text(note, review=False))
    return {request_id: text for request_id, (_at, text) in notes.items()}


def _latest_per_request(queryset, time_field):
    newest_first = Window(
        RowNumber(), partition_by="request_id", order_by=[f"-{time_field}", "-pk"]
    )
    return queryset.annotate(newness=newest_first).filter(newness=1).order_by()


def _first_photo_urls(rows) -> dict[int, str]:
    """The first public photo of each request (its own, or its work order's)."""
    ids = [r["pk"] for r in rows]
    orders = {r["work_order_id"] for r in rows if r["work_order_id"]}
    first_by_request, first_by_order = {}, {}
    photos = (
        Photo.objects.filter(is_public=True)
        .filter(Q(request_id__any_of=ids) | Q(work_order_id__any_of=orders))
        .order_by("uploaded_at", "id")
        .values_list("id", "request_id", "work_order_id")
    )
    # Ranks in upload order stand in for the upload times, which need not be read.
    for rank, (photo_id, request_id, order_id) in enumerate(photos):
        if request_id:
            first_by_request.setdefault(request_id, (rank, photo_id))
        if order_id:
            first_by_order.setdefault(order_id, (rank, photo_id))
    # One reverse() for the pattern rather than one per photo.
    sentinel = uuid.UUID(int=0)
    pattern = _absolute(reverse("requests_app:photo", args=[sentinel, "full"]))
    urls = {}
    for r in rows:
        own = first_by_request.get(r["pk"])
        order = r["work_order_id"] and first_by_order.get(r["work_order_id"])
        if own or order:
            first = min(own, order) if own and order else own or order
            urls[r["pk"]] = pattern.replace(str(sentinel), str(first[1]))
    return urls


def _notes(opened, tz) -> dict[int, list]:
    """Chicago's `notes`: what a resident sees on the status page, oldest first.

    `opened`: (id, EpochMicroseconds, w3c) of each request's creation."""
    notes = {pk: [(at, 0, _note(when, "opened", "Request opened"))] for pk, at, when in opened}
    ids = list(notes)
    # Worked out once per response: a label is a translation.
    changed_to = {status: f"Status changed to {status.label}" for status in Status}
    history = HistoryEntry.objects.filter(
        request_id__any_of=ids, is_public=True, action=HistoryEntry.Action.STATUS
    ).values_list("request_id", EpochMicroseconds("at"), "pk", "new_value", "note")
    for request_id, at, pk, new_value, note in history:
        summary = changed_to.get(new_value) or f"Status changed to {new_value}"
        kind = "closed" if new_value in (Status.COMPLETED, Status.CLOSED) else "activity"
        note = moderation.public_text(note, review=False)  # HistoryEntry.public_note
        notes[request_id].append((at, pk, _note(w3c_from_epoch(at, tz), kind, summary, note)))
    comments = Comment.objects.filter(request_id__any_of=ids, is_public=True).values_list(
        "request_id", EpochMicroseconds("created_at"), "pk", *COMMENT_FIELDS
    )
    for request_id, at, pk, *fields in comments:
        text = _public_comment(*fields)
        notes[request_id].append(
            (at, pk, _note(w3c_from_epoch(at, tz), "activity", "Public comment", text))
        )
    return {
        pk: [note for _at, _pk, note in sorted(entries, key=lambda e: e[:2])]
        for pk, entries in notes.items()
    }


def _note(when, kind, summary, description=""):
    return {
        "datetime": when,
        "summary": summary,
        "type": kind,
        "description": description or None,
    }


def _without_parallel_workers(rows) -> list:
    """The rows of a queryset, planned by PostgreSQL without parallel workers.

    A page stops after 1,000 rows of the created_at index, but when filters leave many rows
    PostgreSQL plans parallel workers for it, and starting them took longer (some 8 ms on a
    busy two-core server) than the whole walk (1 to 2 ms).
    """
    connection = connections[rows.db]
    if connection.vendor != "postgresql":
        return list(rows)
    with transaction.atomic(using=rows.db):
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL max_parallel_workers_per_gather = 0")
        return list(rows)


def serialize_requests(requests, *, extensions=False) -> list[dict]:
    """Open311 request elements for a queryset of public requests."""
    rows = _without_parallel_workers(requests.values(*PUBLIC_FIELDS, **PUBLIC_DATETIMES))
    ids = [r["pk"] for r in rows]
    media = _first_photo_urls(rows)
    status_notes = _status_notes(ids)
    tz = timezone.get_current_timezone()
    out = []
    for r in rows:
        row = {
            "service_request_id": r["tracking_number"],
            "status": open311_status(r["status"]),
            "status_notes": status_notes.get(r["pk"]) or None,
            "service_name": r["category__name"],
            "service_code": r["category__code"],
            "description": _public_description(r) or None,
            "agency_responsible": r["department__name"],
            "service_notice": r["category__service_notice"] or None,
            "requested_datetime": w3c_from_epoch(r["created"], tz),
            "updated_datetime": w3c_from_epoch(r["updated"], tz),
            "expected_datetime": w3c_from_epoch(r["expected"], tz),
            "address": r["address"] or None,
            "address_id": r["address_id"] or None,
            "zipcode": r["zipcode"] or None,
            "lat": r["lat"],
            "long": r["lng"],
            "media_url": media.get(r["pk"]),
        }
        out.append(row)
    if extensions:
        opened = [
            (r["pk"], r["created"], row["requested_datetime"])
            for r, row in zip(rows, out, strict=True)
        ]
        notes = _notes(opened, tz)
        for r, row in zip(rows, out, strict=True):
            parent_shown = r["duplicate_of_id"] and r["duplicate_of__is_public"]
            row["extended_attributes"] = {
                "channel": r["channel"],
                "detailed_status": r["status"],
                "close_reason": r["close_reason"] or None,
                "district": r["district__name"],
                "duplicate": r["duplicate_of_id"] is not None,
                "parent_service_request_id": (
                    r["duplicate_of__tracking_number"] if parent_shown else None
                ),
                "notes": notes.get(r["pk"], []),
            }
    return out


def _requests_response(fmt, rows):
    return render(fmt, rows, root="service_requests", item="request")


# --- Views: discovery and services -----------------------------------------------------------


@open311_view(["GET"])
def discovery(request, fmt):
    endpoint = _absolute(reverse("open311:services", args=["json"]).removesuffix("/services.json"))
    return render(
        fmt,
        {
            "changeset": CHANGESET,
            "contact": f"{settings.CITY_NAME} 311, {settings.SITE_URL}/",
            "key_service": "API keys for submitting requests are issued by the city's 311 "
            "staff; ask at the contact above.",
            "endpoints": [
                {
                    "specification": SPECIFICATION,
                    "url": endpoint,
                    "changeset": CHANGESET,
                    "type": "production",
                    "formats": ["text/xml", "application/json"],
                }
            ],
        },
        root="discovery",
    )


@open311_view(["GET"])
def services(request, fmt):
    categories = ServiceCategory.objects.active().order_by("group", "name")
    with_questions = set(
        ServiceAttribute.objects.filter(category__is_active=True).values_list(
            "category_id", flat=True
        )
    )
    return render(
        fmt,
        [_category_data(c, c.pk in with_questions) for c in categories],
        root="services",
        item="service",
    )


def _active_category(code):
    if not code or not _SERVICE_CODE.match(code):
        return None
    return ServiceCategory.objects.active().filter(code=code).first()


@open311_view(["GET"])
def service_definition(request, fmt, service_code):
    category = _active_category(service_code)
    if category is None:
        raise Open311Error(404, f"No service with the service_code {service_code}.")
    return render(
        fmt,
        {
            "service_code": category.code,
            "attributes": [_attribute_data(a) for a in category.attributes.order_by("order", "pk")],
        },
        root="service_definition",
    )


# --- Views: requests -------------------------------------------------------------------------


@open311_view(["GET", "POST"])
def requests_list(request, fmt):
    if request.method == "POST":
        return _post_request(request, fmt)
    params = request.GET
    extensions = _flag(params, "extensions")
    page_size = _positive_int(params, "page_size", MAX_ROWS, clamp=MAX_ROWS)
    page = _positive_int(params, "page", 1, limit=MAX_PAGE)
    found = _filter_requests(ServiceRequest.objects.public(), params).order_by("-created_at", "-pk")
    start = (page - 1) * page_size
    return _requests_response(
        fmt, serialize_requests(found[start : start + page_size], extensions=extensions)
    )


def _filter_requests(requests, params):
    ids = _list(params, "service_request_id")
    if ids:
        # The spec: a list of ids overrides every other filter.
        numbers = {normalize_tracking_number(i) for i in ids[:MAX_IDS]} - {None}
        return requests.filter(tracking_number__in=numbers)

    codes = _list(params, "service_code")
    if codes:
        requests = requests.filter(category__code__in=[c for c in codes if _SERVICE_CODE.match(c)])

    statuses = {s.lower() for s in _list(params, "status")}
    if statuses - {"open", "closed"}:
        raise Open311Error(400, "status must be open or closed (or both, comma-separated).")
    if statuses == {"open"}:
        requests = requests.open()
    elif statuses == {"closed"}:
        requests = requests.exclude(status__in=OPEN_STATUSES)

    dates = {
        name: value
        for name in ("start_date", "end_date", "updated_after", "updated_before")
        if (value := _optional_datetime(params, name))
    }
    start, end = dates.get("start_date"), dates.get("end_date")
    if start and end and start > end:
        raise Open311Error(400, "start_date must not be after end_date.")
    if not dates:
        # The spec's default span; paging clients that give updated_* get all of history.
        start = timezone.now() - DEFAULT_WINDOW
    elif end and not start and "updated_after" not in dates:
        start = _shift(end, -DEFAULT_WINDOW)
    if start:
        requests = requests.filter(created_at__gte=start)
    if end:
        requests = requests.filter(created_at__lte=end)
    if "updated_after" in dates:
        requests = requests.filter(updated_at__gte=dates["updated_after"])
    if "updated_before" in dates:
        requests = requests.filter(updated_at__lte=dates["updated_before"])
    return requests


@open311_view(["GET"])
def request_detail(request, fmt, service_request_id):
    number = normalize_tracking_number(service_request_id)
    found = ServiceRequest.objects.public().filter(tracking_number=number or "")
    rows = serialize_requests(found, extensions=_flag(request.GET, "extensions"))
    if not rows:
        raise Open311Error(404, f"No service request with the id {service_request_id}.")
    return _requests_response(fmt, rows)


@open311_view(["GET"])
def token_detail(request, fmt, token):
    number = _tracking_number_for_token(token)
    found = (
        ServiceRequest.objects.public()
        .filter(tracking_number=number)
        .only("tracking_number")
        .first()
        if number
        else None
    )
    if found is None:
        raise Open311Error(404, f"No service request with the token {token}.")
    return _requests_response(fmt, [{"service_request_id": found.tracking_number, "token": token}])


# --- Submitting ------------------------------------------------------------------------------


@dataclass
class Open311Submission:
    """What an Open311 POST adds to the portal's intake."""

    intake: Intake
    api_client: ApiClient | None = None
    address_id: str = ""
    device_id: str = ""
    account_id: str = ""


def open311_submit(submission: Open311Submission) -> ServiceRequest:
    """The portal's intake, plus what only Open311 carries, in one transaction.

    request_submit's Intake has no place for these, so they are written right after it;
    routing and emails are enqueued on commit, by when everything is in place.
    """
    with transaction.atomic():
        service_request = request_submit(submission.intake)
        extra = {
            "api_client": submission.api_client,
            "address_id": submission.address_id,
            "reporter_device_id": submission.device_id,
            "reporter_account_id": submission.account_id,
        }
        ServiceRequest.objects.filter(pk=service_request.pk).update(**extra)
        for name, value in extra.items():
            setattr(service_request, name, value)
    return service_request


def _post_request(request, fmt):
    data = request.POST.copy()
    for name in ("api_key", "jurisdiction_id"):  # some clients put these in the query
        if name not in data and name in request.GET:
            data[name] = request.GET[name]
    client = _authenticate(data)

    code = _text(data, "service_code", max_length=50, required=True)
    category = _active_category(code)
    if category is None:
        raise Open311Error(400, f"service_code {code} is not a service of this city.")

    lat = _coordinate(data, "lat", 90)
    lng = _coordinate(data, "long", 180)
    address = _text(data, "address_string", max_length=255)
    address_id = _text(data, "address_id", max_length=100)
    if (lat is None) != (lng is None):
        raise Open311Error(400, "lat and long must be given together.")
    if lat is None and not address and not address_id:
        raise Open311Error(
            400, "A location is required: lat and long, address_string or address_id."
        )
    if lat is not None and not service_area.contains(lat, lng):
        raise Open311Error(400, f"That location is outside the area {settings.CITY_NAME} serves.")

    # The spec makes description optional; our requests always say what they are about.
    description = _text(data, "description", max_length=MAX_DESCRIPTION) or category.name
    email = _text(data, "email", max_length=254)
    if email:
        try:
            validate_email(email)
        except ValidationError:
            raise Open311Error(400, "email is not a valid email address.") from None
    name = " ".join(
        part
        for part in (
            _text(data, "first_name", max_length=60),
            _text(data, "last_name", max_length=60),
        )
        if part
    )
    answers = _answers(category, data)
    photos = _photos(request)

    submission = Open311Submission(
        intake=Intake(
            category=category,
            description=description,
            channel=Channel.API,
            lat=lat,
            lng=lng,
            address=address,
            reporter_name=name,
            reporter_email=email,
            reporter_phone=_text(data, "phone", max_length=40),
            photos=photos,
            answers=answers,
        ),
        api_client=client,
        address_id=address_id,
        device_id=_text(data, "device_id", max_length=100),
        account_id=_text(data, "account_id", max_length=100),
    )
    service_request = open311_submit(submission)
    return render(
        fmt,
        [
            {
                "service_request_id": service_request.tracking_number,
                "token": request_token(service_request),
                "service_notice": category.service_notice or None,
                "account_id": submission.account_id or None,
            }
        ],
        root="service_requests",
        item="request",
    )


def _photos(request) -> list[ProcessedPhoto]:
    uploads = request.FILES.getlist("media")
    if len(uploads) > settings.PHOTOS_PER_REPORT:
        raise Open311Error(400, f"At most {settings.PHOTOS_PER_REPORT} media files per request.")
    processed = []
    for upload in uploads:
        try:
            processed.append(process_photo(upload))
        except PhotoRejected as rejected:
            raise Open311Error(400, f"media: {rejected.message}") from None
    return processed


def _answers(category, data) -> dict:
    """attribute[code] and attribute[code][] checked against the category's questions.

    Answers to questions the category does not ask are passed over, not refused: clients
    such as FixMyStreet send attributes of their own (report_url, title …) to every server.
    """
    given = {}
    for key in data:
        match = _ATTRIBUTE_FIELD.match(key)
        if match:
            values = [v for v in data.getlist(key) if v.strip()]
            given.setdefault(match.group(1), []).extend(values)
    answers, errors = {}, []
    for attribute in category.attributes.filter(variable=True).order_by("order", "pk"):
        values = given.get(attribute.code, [])
        if not values:
            if attribute.required:
                errors.append(f"attribute[{attribute.code}] is required: {attribute.description}")
            continue
        try:
            answers[attribute] = attribute.answer_value(values)
        except ValueError as problem:
            errors.append(f"attribute[{attribute.code}] {problem}")
    if errors:
        raise Open311Error(400, *errors)
    return answers


# --- mySociety's service request updates -----------------------------------------------------

# Our statuses in the vocabulary FixMyStreet maps onto its own states.
FMS_STATUS = {
    Status.RECEIVED: "OPEN",
    Status.ASSIGNED: "INVESTIGATING",
    Status.SCHEDULED: "ACTION_SCHEDULED",
    Status.IN_PROGRESS: "IN_PROGRESS",
    Status.WAITING: "INVESTIGATING",
    Status.COMPLETED: "FIXED",
    Status.CLOSED: "CLOSED",
}
FMS_CLOSE_REASON = {
    CloseReason.DUPLICATE: "DUPLICATE",
    CloseReason.NOT_CITY: "NOT_COUNCILS_RESPONSIBILITY",
    CloseReason.REFERRED: "NOT_COUNCILS_RESPONSIBILITY",
    CloseReason.NOT_FOUND: "NO_FURTHER_ACTION",
    CloseReason.NO_ACTION: "NO_FURTHER_ACTION",
    CloseReason.RESIDENT_WITHDREW: "CLOSED",
}


def _fms_status(status, note="", close_reason=""):
    if status == Status.CLOSED:
        # The history keeps the reason's label at the start of the note.
        for reason in CloseReason:
            if note.startswith(str(reason.label)):
                return FMS_CLOSE_REASON[reason]
        return FMS_CLOSE_REASON.get(close_reason, "CLOSED")
    return FMS_STATUS.get(status, "OPEN")


@open311_view(["GET"])
def service_request_updates(request, fmt):
    params = request.GET
    start, end = _optional_datetime(params, "start_date"), _optional_datetime(params, "end_date")
    if start and end and start > end:
        raise Open311Error(400, "start_date must not be after end_date.")
    if start is None:
        start = _shift(end or timezone.now(), -timedelta(days=1))
    page_size = _positive_int(params, "page_size", MAX_ROWS, clamp=MAX_ROWS)
    page = _positive_int(params, "page", 1, limit=MAX_PAGE)
    wanted = page * page_size

    window = Q(at__gte=start) & (Q(at__lte=end) if end else Q())
    history = (
        HistoryEntry.objects.filter(window, is_public=True, action=HistoryEntry.Action.STATUS)
        .filter(request__is_public=True)
        .order_by("at", "pk")
        .values_list(
            "pk", "at", "new_value", "note", "request__tracking_number", "request__close_reason"
        )[:wanted]
    )
    status_then = (
        HistoryEntry.objects.filter(
            request=OuterRef("request_id"),
            is_public=True,
            action=HistoryEntry.Action.STATUS,
            at__lte=OuterRef("created_at"),
        )
        .order_by("-at", "-pk")
        .values("new_value")[:1]
    )
    comment_window = Q(created_at__gte=start) & (Q(created_at__lte=end) if end else Q())
    comments = (
        Comment.objects.filter(comment_window, is_public=True, request__is_public=True)
        .annotate(status_then=Subquery(status_then))
        .order_by("created_at", "pk")
        .values_list(
            "pk", "created_at", "status_then", "request__tracking_number", *COMMENT_FIELDS
        )[:wanted]
    )
    updates = [
        (
            at,
            f"s{pk}",
            {
                "update_id": f"s{pk}",
                "service_request_id": number,
                "status": _fms_status(new_value, note, close_reason),
                "updated_datetime": w3c(at),
                "description": moderation.public_text(note, review=False) or None,
                "media_url": None,
            },
        )
        for pk, at, new_value, note, number, close_reason in history
    ] + [
        (
            at,
            f"c{pk}",
            {
                "update_id": f"c{pk}",
                "service_request_id": number,
                "status": _fms_status(status or Status.RECEIVED),
                "updated_datetime": w3c(at),
                "description": _public_comment(*fields),
                "media_url": None,
            },
        )
        for pk, at, status, number, *fields in comments
    ]
    updates.sort(key=lambda u: u[:2])
    rows = [u[2] for u in updates[(page - 1) * page_size : wanted]]
    return render(fmt, rows, root="service_requests_updates", item="request_update")


# --- OpenAPI ---------------------------------------------------------------------------------


@open311_view(["GET"])
def openapi(request, fmt):
    return render("json", openapi_document(), root="openapi")


@csrf_exempt
def not_found(request, path=""):
    return render_error(
        "xml" if path.endswith(".xml") else "json", Open311Error(404, "No such Open311 resource.")
    )


def openapi_document() -> dict:
    """The API as OpenAPI 3.0, for client generators and for the fuzzing tests."""
    text = {"type": "string"}
    nullable_text = {"type": "string", "nullable": True}
    when = {"type": "string", "format": "date-time", "nullable": True}
    fmt = {
        "name": "format",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "enum": ["json", "xml"]},
    }
    jurisdiction = {"name": "jurisdiction_id", "in": "query", "schema": text}

    def query(name, schema=None, description=""):
        return {"name": name, "in": "query", "schema": schema or text, "description": description}

    errors = {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["code", "description"],
            "properties": {"code": {"type": "integer"}, "description": text},
        },
    }

    def responses(ok_schema, *codes):
        result = {
            "200": {
                "description": "OK",
                "content": {
                    "application/json": {"schema": ok_schema},
                    "text/xml": {"schema": text},
                },
            }
        }
        # 404: any path outside the documented ones, such as an unknown format.
        for code in sorted({*codes, 404}):
            result[str(code)] = {
                "description": "Error",
                "content": {"application/json": {"schema": errors}, "text/xml": {"schema": text}},
            }
        return result

    service = {
        "type": "object",
        "required": ["service_code", "service_name", "metadata", "type", "group"],
        "properties": {
            "service_code": text,
            "service_name": text,
            "description": nullable_text,
            "metadata": {"type": "boolean"},
            "type": {"type": "string", "enum": ["realtime", "batch", "blackbox"]},
            "keywords": nullable_text,
            "group": text,
        },
    }
    attribute = {
        "type": "object",
        "required": ["variable", "code", "datatype", "required", "order", "description", "values"],
        "properties": {
            "variable": {"type": "boolean"},
            "code": text,
            "datatype": {
                "type": "string",
                "enum": [d.value for d in ServiceAttribute.Datatype],
            },
            "required": {"type": "boolean"},
            "datatype_description": nullable_text,
            "order": {"type": "integer"},
            "description": text,
            "values": {
                "type": "array",
                "items": {"type": "object", "properties": {"key": text, "name": text}},
            },
        },
    }
    note = {
        "type": "object",
        "properties": {
            "datetime": when,
            "summary": text,
            "type": text,
            "description": nullable_text,
        },
    }
    service_request = {
        "type": "object",
        "required": [
            "service_request_id",
            "status",
            "status_notes",
            "service_name",
            "service_code",
            "description",
            "agency_responsible",
            "service_notice",
            "requested_datetime",
            "updated_datetime",
            "expected_datetime",
            "address",
            "address_id",
            "zipcode",
            "lat",
            "long",
            "media_url",
        ],
        "properties": {
            "service_request_id": text,
            "status": {"type": "string", "enum": ["open", "closed"]},
            "status_notes": nullable_text,
            "service_name": text,
            "service_code": text,
            "description": nullable_text,
            "agency_responsible": nullable_text,
            "service_notice": nullable_text,
            "requested_datetime": when,
            "updated_datetime": when,
            "expected_datetime": when,
            "address": nullable_text,
            "address_id": nullable_text,
            "zipcode": nullable_text,
            "lat": {"type": "number", "nullable": True},
            "long": {"type": "number", "nullable": True},
            "media_url": {"type": "string", "format": "uri", "nullable": True},
            "extended_attributes": {
                "type": "object",
                "properties": {
                    "channel": text,
                    "detailed_status": {"type": "string", "enum": [s.value for s in Status]},
                    "close_reason": nullable_text,
                    "district": nullable_text,
                    "duplicate": {"type": "boolean"},
                    "parent_service_request_id": nullable_text,
                    "notes": {"type": "array", "items": note},
                },
            },
        },
    }
    created = {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["service_request_id", "token"],
            "properties": {
                "service_request_id": text,
                "token": text,
                "service_notice": nullable_text,
                "account_id": nullable_text,
            },
        },
    }
    update = {
        "type": "object",
        "required": ["update_id", "service_request_id", "status", "updated_datetime"],
        "properties": {
            "update_id": text,
            "service_request_id": text,
            "status": text,
            "updated_datetime": when,
            "description": nullable_text,
            "media_url": nullable_text,
        },
    }
    paging = [
        query("page", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}),
        query("page_size", {"type": "integer", "minimum": 1, "maximum": MAX_ROWS}),
    ]
    date_param = {"type": "string", "format": "date-time"}
    post_fields = {
        "type": "object",
        "required": ["api_key", "service_code"],
        "properties": {
            "api_key": text,
            "jurisdiction_id": text,
            "service_code": text,
            "lat": {"type": "number"},
            "long": {"type": "number"},
            "address_string": text,
            "address_id": text,
            "email": text,
            "device_id": text,
            "account_id": text,
            "first_name": text,
            "last_name": text,
            "phone": text,
            "description": text,
            "media_url": text,
        },
    }
    multipart = {
        **post_fields,
        "properties": {
            **post_fields["properties"],
            "media": {"type": "string", "format": "binary"},
        },
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": f"{settings.CITY_NAME} Open311 GeoReport v2",
            "version": "2",
            "description": "GeoReport v2 with paging, updated_after/updated_before, Chicago's "
            "extended_attributes, mySociety's servicerequestupdates and photo upload.",
        },
        "servers": [{"url": "/"}],
        "paths": {
            "/open311/discovery.{format}": {
                "get": {
                    "operationId": "discovery",
                    "parameters": [fmt],
                    "responses": responses({"type": "object"}),
                }
            },
            "/open311/v2/services.{format}": {
                "get": {
                    "operationId": "services",
                    "parameters": [fmt, jurisdiction],
                    "responses": responses({"type": "array", "items": service}),
                }
            },
            "/open311/v2/services/{service_code}.{format}": {
                "get": {
                    "operationId": "serviceDefinition",
                    "parameters": [
                        {"name": "service_code", "in": "path", "required": True, "schema": text},
                        fmt,
                        jurisdiction,
                    ],
                    "responses": responses(
                        {
                            "type": "object",
                            "properties": {
                                "service_code": text,
                                "attributes": {"type": "array", "items": attribute},
                            },
                        },
                        404,
                    ),
                }
            },
            "/open311/v2/requests.{format}": {
                "get": {
                    "operationId": "serviceRequests",
                    "parameters": [
                        fmt,
                        jurisdiction,
                        query(
                            "service_request_id",
                            description="Comma-separated; overrides the other filters.",
                        ),
                        query("service_code", description="Comma-separated."),
                        query("start_date", date_param),
                        query("end_date", date_param),
                        query(
                            "status", {"type": "string", "enum": ["open", "closed", "open,closed"]}
                        ),
                        query("updated_after", date_param),
                        query("updated_before", date_param),
                        query("extensions", {"type": "boolean"}),
                        *paging,
                    ],
                    "responses": responses({"type": "array", "items": service_request}, 400),
                },
                "post": {
                    "operationId": "postServiceRequest",
                    "parameters": [fmt],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/x-www-form-urlencoded": {"schema": post_fields},
                            "multipart/form-data": {"schema": multipart},
                        },
                    },
                    "responses": responses(created, 400, 403, 429),
                },
            },
            "/open311/v2/requests/{service_request_id}.{format}": {
                "get": {
                    "operationId": "serviceRequest",
                    "parameters": [
                        {
                            "name": "service_request_id",
                            "in": "path",
                            "required": True,
                            "schema": text,
                        },
                        fmt,
                        jurisdiction,
                        query("extensions", {"type": "boolean"}),
                    ],
                    "responses": responses({"type": "array", "items": service_request}, 404),
                }
            },
            "/open311/v2/tokens/{token}.{format}": {
                "get": {
                    "operationId": "token",
                    "parameters": [
                        {"name": "token", "in": "path", "required": True, "schema": text},
                        fmt,
                        jurisdiction,
                    ],
                    "responses": responses(
                        {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {"service_request_id": text, "token": text},
                            },
                        },
                        404,
                    ),
                }
            },
            "/open311/v2/servicerequestupdates.{format}": {
                "get": {
                    "operationId": "serviceRequestUpdates",
                    "parameters": [
                        fmt,
                        jurisdiction,
                        query("api_key"),
                        query("start_date", date_param),
                        query("end_date", date_param),
                        *paging,
                    ],
                    "responses": responses({"type": "array", "items": update}, 400),
                }
            },
        },
    }
