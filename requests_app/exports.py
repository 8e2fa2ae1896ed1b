"""Exports of requests: CSV and GeoJSON streamed row by row, and the per-request audit
package (a zip) for public-records requests.

Rows are read with `iterator(chunk_size=2000)` and written as they come, so an export of a
million requests holds one chunk in memory, whether it streams to the browser or is written
to a file by the worker (export_tasks.py).

Private fields: the reporter's name, email and phone appear only in CSV exports made by
staff who work requests (dispatchers, department staff, administrators; `can_edit_requests`),
who need them to call residents back. Directors get the same rows without contact details,
and GeoJSON — meant for maps and open data — never has them. Device, account and address
ids are never exported.

Residents' words: the CSV, a staff work file, has the description as written and, next to
it, `public_description` — what the public sees (contact details masked, the staff's public
wording, or "awaiting review"; see moderation.py). GeoJSON's `description` is the public
one. The public audit package has only the public wording of the description and comments.
"""

import csv
import json
import tempfile
import zipfile
from datetime import datetime

from django.core.serializers.json import DjangoJSONEncoder
from django.utils import timezone

from . import moderation
from .access import can_edit_requests
from .models import Photo

CHUNK = 2000
# Not a column of the table: worked out from the fields below for each row.
PUBLIC_DESCRIPTION = "public_description"
MODERATION_FIELDS = ("description", "public_description_override", "description_approved")

COLUMNS = [
    # (header, values_list path)
    ("tracking_number", "tracking_number"),
    ("received", "created_at"),
    ("status", "status"),
    ("category", "category__name"),
    ("category_group", "category__group"),
    ("department", "department__name"),
    ("district", "district__name"),
    ("crew", "crew__name"),
    ("channel", "channel"),
    ("priority", "priority"),
    ("address", "address"),
    ("lat", "lat"),
    ("lng", "lng"),
    ("description", "description"),
    ("public_description", PUBLIC_DESCRIPTION),
    ("first_response", "first_response_at"),
    ("resolved", "resolved_at"),
    ("due", "due_at"),
    ("close_reason", "close_reason"),
    ("duplicate_of", "duplicate_of__tracking_number"),
    ("times_forwarded", "forward_count"),
    ("work_order", "work_order_id"),
    ("work_order_cost", "work_order__cost"),
    ("is_public", "is_public"),
    ("imported_from", "import_source"),
    ("external_id", "external_id"),
]
CONTACT_COLUMNS = [
    ("reporter_name", "reporter_name"),
    ("reporter_email", "reporter_email"),
    ("reporter_phone", "reporter_phone"),
]
# Open data: the description as the public sees it, under its usual name.
GEOJSON_COLUMNS = [
    ("description", PUBLIC_DESCRIPTION) if header == "description" else (header, path)
    for header, path in COLUMNS
    if header not in ("lat", "lng", "public_description")
]


def may_export_contact(user) -> bool:
    return can_edit_requests(user)


def columns_for(user):
    return COLUMNS + (CONTACT_COLUMNS if may_export_contact(user) else [])


def _cell(value):
    if value is None:
        return ""
    if isinstance(value, datetime):
        return timezone.localtime(value).isoformat(timespec="seconds")
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        # Spreadsheets run cells starting with these as formulas (CSV injection).
        return "'" + value
    return value


class _Line:
    """csv.writer target that hands back what it was given."""

    def write(self, value):
        return value


def _rows(requests, paths):
    """One list of values per request, in the order of `paths`, read in chunks."""
    if PUBLIC_DESCRIPTION not in paths:
        yield from (
            requests.order_by("created_at", "pk").values_list(*paths).iterator(chunk_size=CHUNK)
        )
        return
    read = list(dict.fromkeys([p for p in paths if p != PUBLIC_DESCRIPTION] + [*MODERATION_FIELDS]))
    for row in requests.order_by("created_at", "pk").values(*read).iterator(chunk_size=CHUNK):
        row[PUBLIC_DESCRIPTION] = moderation.public_text(
            row["description"],
            override=row["public_description_override"],
            approved=row["description_approved"],
        )
        yield [row[p] for p in paths]


def csv_lines(requests, columns):
    """Header, then one CSV line per request, read in chunks."""
    writer = csv.writer(_Line())
    yield writer.writerow([header for header, _path in columns])
    paths = [path for _header, path in columns]
    for row in _rows(requests, paths):
        yield writer.writerow([_cell(v) for v in row])


def geojson_chunks(requests):
    """A FeatureCollection, one Feature per request (geometry null when it has none)."""
    yield '{"type": "FeatureCollection", "features": [\n'
    paths = ["lat", "lng"] + [path for _h, path in GEOJSON_COLUMNS]
    headers = [h for h, _p in GEOJSON_COLUMNS]
    first = True
    for row in _rows(requests, paths):
        lat, lng, *values = row
        feature = {
            "type": "Feature",
            "geometry": None
            if lat is None or lng is None
            else {"type": "Point", "coordinates": [lng, lat]},
            "properties": {
                h: timezone.localtime(v).isoformat(timespec="seconds")
                if isinstance(v, datetime)
                else v
                for h, v in zip(headers, values, strict=True)
            },
        }
        yield ("" if first else ",\n") + json.dumps(feature, cls=DjangoJSONEncoder)
        first = False
    yield "\n]}\n"


def write_export(requests, fmt, user, out, progress=None, every=CHUNK) -> int:
    """Write the export to the text file `out`, calling `progress(rows)` every `every` rows;
    returns the number of rows written."""
    if fmt == "csv":
        chunks, frame = csv_lines(requests, columns_for(user)), 1  # the header
    else:
        chunks, frame = geojson_chunks(requests), 2  # the opening and the closing
    written = 0
    for index, chunk in enumerate(chunks):
        out.write(chunk)
        written = index + 1
        if progress and index and index % every == 0:
            progress(index)
    return written - frame


# --- The audit package -------------------------------------------------------------------------


class _CityTimeEncoder(DjangoJSONEncoder):
    """Times in the city's time zone with their offset from UTC (ISO 8601, e.g.
    2026-11-23T23:18:48.055-05:00): the day and hour the city's staff saw, and still exact
    for a machine. The database hands them over in UTC."""

    def default(self, o):
        if isinstance(o, datetime) and timezone.is_aware(o):
            o = timezone.localtime(o)
        return super().default(o)


def _dump(data):
    return json.dumps(data, cls=_CityTimeEncoder, indent=2, ensure_ascii=False)


def _photos_of(request):
    photos = Photo.objects.filter(request=request)
    if request.work_order_id:
        photos = photos | Photo.objects.filter(work_order_id=request.work_order_id)
    return photos.order_by("uploaded_at")


def audit_package(request, *, staff: bool, generated_by: str = ""):
    """A zip (as an open temporary file) of everything on record about one request.

    The staff version has the full history, internal notes, every photo and the reporter's
    contact details; the public version — what can be released to a records requester —
    has the public timeline, public comments and public photos only, and residents' words as
    the public sees them.
    """
    now = timezone.now()
    record = {
        "tracking_number": request.tracking_number,
        "category": request.category.name,
        "description": request.description if staff else request.public_description,
        "address": request.address,
        "lat": request.lat,
        "lng": request.lng,
        "channel": request.channel,
        "status": request.status,
        "department": str(request.department or ""),
        "district": str(request.district or ""),
        "received": request.created_at,
        "first_response": request.first_response_at,
        "resolved": request.resolved_at,
        "due": request.due_at,
        "close_reason": request.close_reason,
        "duplicate_of": request.duplicate_of.tracking_number if request.duplicate_of else None,
    }
    if staff:
        record.update(
            reporter_name=request.reporter_name,
            reporter_email=request.reporter_email,
            reporter_phone=request.reporter_phone,
            is_public=request.is_public,
            crew=str(request.crew or ""),
            work_order=str(request.work_order or ""),
            times_forwarded=request.forward_count,
            public_description=request.public_description,
        )
        timeline = [
            {
                "at": e.at,
                "action": e.action,
                "actor": e.actor_label,
                "field": e.field,
                "old": e.old_value,
                "new": e.new_value,
                "note": e.note,
                "public": e.is_public,
            }
            for e in request.history.all()
        ]
        comments = request.comments.all()
        photos = _photos_of(request)
    else:
        timeline = [
            {
                "at": e["at"],
                "kind": e["kind"],
                "status": str(e.get("status", "")),
                "note": e.get("note", "") or e.get("text", ""),
            }
            for e in request.public_timeline()
        ]
        comments = request.comments.filter(is_public=True)
        photos = request.public_photos()
    comment_rows = [
        {
            "at": c.created_at,
            "author": c.author_label,
            "text": c.text if staff else c.public_text,
            **(
                {
                    "kind": "public comment" if c.is_public else "internal note",
                    **({"public_text": c.public_text} if c.is_public else {}),
                }
                if staff
                else {}
            ),
        }
        for c in comments
    ]
    photo_rows = []
    version = "staff (contains personal data and internal notes)" if staff else "public"
    out = tempfile.TemporaryFile()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for photo in photos:
            uploaded = timezone.localtime(photo.uploaded_at)
            name = f"photos/{uploaded:%Y%m%dT%H%M%S}-{photo.kind}-{photo.pk}.jpg"
            try:
                with photo.image.open("rb") as image:
                    archive.writestr(name, image.read())
            except (FileNotFoundError, ValueError):
                name = None  # recorded, but the file is missing from storage
            photo_rows.append(
                {
                    "file": name,
                    "kind": photo.kind,
                    "uploaded_at": photo.uploaded_at,
                    "width": photo.width,
                    "height": photo.height,
                    # Photos carry no location of their own (EXIF is stripped on upload).
                    "location": {"lat": request.lat, "lng": request.lng},
                    **({"public": photo.is_public} if staff else {}),
                }
            )
        archive.writestr("request.json", _dump(record))
        archive.writestr("timeline.json", _dump(timeline))
        archive.writestr("comments.json", _dump(comment_rows))
        archive.writestr("photos.json", _dump(photo_rows))
        archive.writestr(
            "README.txt",
            f"Record of service request {request.tracking_number}\n"
            f"Version: {version}\n"
            f"Generated: {timezone.localtime(now).isoformat(timespec='seconds')}"
            + (f" by {generated_by}" if generated_by else "")
            + f"\nTimes are in the city's time zone ({timezone.get_current_timezone_name()}), "
            "written in ISO 8601 with their offset from UTC; photo file names begin with the "
            "local time of the upload. Files: request.json, timeline.json (history), "
            "comments.json, photos.json and photos/.\n",
        )
    out.seek(0)
    return out
