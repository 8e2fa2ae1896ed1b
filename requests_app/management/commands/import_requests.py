"""Bring another system's historic requests into CivicDesk from a CSV export.

    manage.py import_requests nyc.csv --mapping requests_app/import_mappings/nyc.json

A mapping file (JSON) says which column holds which field, how dates are written, and how
the source's statuses, channels, agencies and request types translate; categories and
departments that do not exist yet are created. Rows are written directly — no routing, no
emails, no SLA escalations — each with one CREATED history entry. Every request remembers
its source and id (import_source, external_id), so running the import again updates the
rows it brought in before instead of adding them twice. Rows that cannot be imported are
counted by reason, and with --rejects written to a CSV with the reason in a last column.

Mapping keys (see the shipped nyc.json, la.json, boston.json):
  source              import_source stored on each request, e.g. "nyc311"
  id_column           the source's unique id
  timezone            time zone of naive timestamps (default: settings.TIME_ZONE)
  date_formats        strptime formats, tried in order (ISO 8601 always works)
  columns             field -> column: created_at (required), resolved_at, due_at,
                      first_response_at, category (required), group, department,
                      department_name, status, channel, lat, lng, address, and
                      description (a column or a list of columns joined with " – ")
  status_map          source status -> CivicDesk status; "closed:<reason>" closes
                      without a fix for that reason (e.g. "closed:referred")
  channel_map, default_channel
  department_map      source agency code -> department name
  category_map        source type -> {"name": ..., "group": ..., "code": ...}
  duplicate           {"column": ..., "contains": [...]}: closed as a duplicate
  ignore_coordinates  [[lat, lng], ...] placeholder locations treated as unknown
  default_sla_hours   resolve target for categories created by the import (default 72)
"""

import csv
import json
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.text import slugify

from requests_app.models import (
    OPEN_STATUSES,
    Channel,
    CloseReason,
    Department,
    HistoryEntry,
    ServiceCategory,
    ServiceRequest,
    Status,
)
from requests_app.tracking import new_tracking_number

BATCH = 500
UPDATABLE = [
    "category",
    "department",
    "district",
    "description",
    "lat",
    "lng",
    "address",
    "channel",
    "status",
    "close_reason",
    "created_at",
    "first_response_at",
    "resolved_at",
    "due_at",
]


class Reject(Exception):
    pass


class Mapping:
    def __init__(self, data):
        try:
            self.source = data["source"]
            self.id_column = data["id_column"]
            self.columns = data["columns"]
            self.columns["created_at"], self.columns["category"]  # noqa: B018
        except KeyError as missing:
            raise CommandError(f"The mapping has no {missing}") from None
        self.tz = ZoneInfo(data.get("timezone") or settings.TIME_ZONE)
        self.date_formats = data.get("date_formats", [])
        self.status_map = data.get("status_map", {})
        self.channel_map = data.get("channel_map", {})
        self.default_channel = data.get("default_channel", Channel.PHONE)
        self.department_map = data.get("department_map", {})
        self.category_map = data.get("category_map", {})
        self.duplicate = data.get("duplicate")
        self.ignore_coordinates = {tuple(pair) for pair in data.get("ignore_coordinates", [])}
        self.default_sla_hours = int(data.get("default_sla_hours", 72))
        for value in self.status_map.values():
            status, _sep, reason = value.partition(":")
            if status not in Status.values or (reason and reason not in CloseReason.values):
                raise CommandError(f"status_map: {value!r} is not a CivicDesk status")
        for value in [*self.channel_map.values(), self.default_channel]:
            if value not in Channel.values:
                raise CommandError(f"channel_map: {value!r} is not a CivicDesk channel")

    def get(self, row, field):
        column = self.columns.get(field)
        if column is None:
            return ""
        if isinstance(column, list):
            return " – ".join(row.get(c, "").strip() for c in column if row.get(c, "").strip())
        return (row.get(column) or "").strip()

    def date(self, row, field, *, required=False):
        text = self.get(row, field)
        if not text:
            if required:
                raise Reject(f"no {field}")
            return None
        for fmt in self.date_formats:
            try:
                value = datetime.strptime(text, fmt)
                break
            except ValueError:
                continue
        else:
            try:
                value = datetime.fromisoformat(text)
            except ValueError:
                raise Reject(f"unreadable {field}") from None
        if timezone.is_naive(value):
            value = value.replace(tzinfo=self.tz)
        return value

    def coordinate(self, row, field, low, high):
        text = self.get(row, field)
        if not text:
            return None
        try:
            value = float(text)
        except ValueError:
            raise Reject(f"unreadable {field}") from None
        if not low <= value <= high:
            raise Reject(f"{field} out of range")
        return value


class Command(BaseCommand):
    help = "Import historic requests from a CSV file described by a JSON mapping."

    def add_arguments(self, parser):
        parser.add_argument("csv", type=Path)
        parser.add_argument("--mapping", type=Path, required=True)
        parser.add_argument("--rejects", type=Path, help="write rejected rows here, with reasons")
        parser.add_argument("--limit", type=int, help="import only the first N rows")
        parser.add_argument("--dry-run", action="store_true", help="check, then roll back")
        parser.add_argument("--quiet-progress", action="store_true")

    def handle(self, *args, **options):
        try:
            mapping = Mapping(json.loads(options["mapping"].read_text()))
        except (OSError, json.JSONDecodeError) as error:
            raise CommandError(f"Cannot read the mapping: {error}") from None
        path = options["csv"]
        if not path.exists():
            raise CommandError(f"No such file: {path}")
        self.mapping = mapping
        self.departments = {}
        self.categories = {}
        self.stats = Counter()
        self.reasons = Counter()
        self.examples = []
        self.rejected_rows = []
        self.show_progress = not options["quiet_progress"]

        with path.open(newline="", encoding="utf-8-sig", errors="replace") as f:
            total = max(0, sum(1 for _ in csv.reader(f)) - 1)
        if options["limit"] is not None:
            total = min(total, options["limit"])

        from routing.services import district_for

        self.district_for = district_for
        try:
            with transaction.atomic():
                self._run(path, total, options["limit"])
                if options["dry_run"]:
                    raise _DryRun
        except _DryRun:
            self.stdout.write("Dry run: nothing was saved.")

        if options["rejects"] and self.rejected_rows:
            self._write_rejects(options["rejects"])
        self._report(total)

    # --- Reading ---------------------------------------------------------------------------
    def _run(self, path, total, limit):
        batch = []
        with path.open(newline="", encoding="utf-8-sig", errors="replace") as f:
            reader = csv.DictReader(f)
            missing = [
                c
                for c in [self.mapping.id_column, *self._flat_columns()]
                if c not in (reader.fieldnames or [])
            ]
            if missing:
                raise CommandError(f"Columns missing from the file: {', '.join(missing)}")
            for number, row in enumerate(reader, start=2):  # line 1 is the header
                if limit is not None and number - 2 >= limit:
                    break
                try:
                    batch.append((number, row, self._parse(row)))
                except Reject as reason:
                    self._reject(number, row, str(reason))
                if len(batch) >= BATCH:
                    self._write(batch)
                    batch = []
                self._progress(number - 1, total)
        if batch:
            self._write(batch)
        self._progress(total, total, finished=True)

    def _flat_columns(self):
        for column in self.mapping.columns.values():
            yield from column if isinstance(column, list) else [column]

    def _parse(self, row):
        m = self.mapping
        external_id = (row.get(m.id_column) or "").strip()
        if not external_id:
            raise Reject("no id")
        if len(external_id) > 100:
            raise Reject("id longer than 100 characters")
        created = m.date(row, "created_at", required=True)
        resolved = m.date(row, "resolved_at")
        if resolved and resolved < created:
            raise Reject("closed before it was created")
        source_status = m.get(row, "status")
        if m.status_map:
            if source_status not in m.status_map:
                raise Reject(f"unknown status {source_status!r}")
            status, _sep, close_reason = m.status_map[source_status].partition(":")
        else:
            status, close_reason = (Status.COMPLETED if resolved else Status.RECEIVED), ""
        if m.duplicate and status != Status.RECEIVED:
            text = (row.get(m.duplicate["column"]) or "").lower()
            if any(word.lower() in text for word in m.duplicate["contains"]):
                status, close_reason = Status.CLOSED, CloseReason.DUPLICATE
        if status in OPEN_STATUSES:
            resolved = None
        if status == Status.CLOSED and not close_reason:
            close_reason = CloseReason.NO_ACTION
        category_name = m.get(row, "category")
        if not category_name:
            raise Reject("no category")
        lat = m.coordinate(row, "lat", -90, 90)
        lng = m.coordinate(row, "lng", -180, 180)
        if lat is None or lng is None or (lat, lng) in m.ignore_coordinates:
            lat = lng = None
        department_code = m.get(row, "department")
        description = m.get(row, "description") or category_name
        return {
            "external_id": external_id,
            "category": (
                category_name,
                m.get(row, "group"),
                department_code,
                m.get(row, "department_name"),
            ),
            "description": description,
            "lat": lat,
            "lng": lng,
            "address": m.get(row, "address")[:255],
            "channel": m.channel_map.get(m.get(row, "channel"), m.default_channel),
            "status": status,
            "close_reason": close_reason,
            "created_at": created,
            "first_response_at": m.date(row, "first_response_at"),
            "resolved_at": resolved,
            "due_at": m.date(row, "due_at"),
        }

    # --- Categories and departments ----------------------------------------------------------
    def _department(self, code, name):
        code = code or "imported"
        key = code.lower()
        if key not in self.departments:
            name = (self.mapping.department_map.get(code) or name or code)[:100]
            slug = slugify(code)[:50] or "imported"
            department = (
                Department.objects.filter(slug=slug).first()
                or Department.objects.filter(name=name).first()
            )
            if department is None:
                department = Department.objects.create(slug=slug, name=name)
                self.stats["departments created"] += 1
            self.departments[key] = department
        return self.departments[key]

    def _category(self, name, group, department_code, department_name):
        if name not in self.categories:
            mapped = self.mapping.category_map.get(name, {})
            display = mapped.get("name", name)[:100]
            code = (mapped.get("code") or slugify(display))[:50] or "imported"
            category = ServiceCategory.objects.filter(code=code).first()
            if category is None:
                department = self._department(department_code, department_name)
                category = ServiceCategory.objects.create(
                    code=code,
                    name=display,
                    group=(mapped.get("group") or group or department.name)[:100],
                    department=department,
                    sla_hours=self.mapping.default_sla_hours,
                )
                self.stats["categories created"] += 1
            self.categories[name] = category
        return self.categories[name]

    # --- Writing ---------------------------------------------------------------------------
    def _write(self, batch):
        source = self.mapping.source
        ids = [parsed["external_id"] for _n, _row, parsed in batch]
        existing = {
            r.external_id: r
            for r in ServiceRequest.objects.filter(import_source=source, external_id__in=ids)
        }
        new, changed, history = [], [], []
        now = timezone.now()
        seen = {}
        for _number, _row, parsed in batch:
            category_key = parsed.pop("category")
            category = self._category(*category_key)
            department = (
                self._department(category_key[2], category_key[3])
                if category_key[2]
                else category.department
            )
            values = {
                **parsed,
                "category": category,
                "department": department,
                "district": self.district_for(parsed["lat"], parsed["lng"]),
            }
            external_id = values.pop("external_id")
            request = existing.get(external_id) or seen.get(external_id)
            if request is None:
                request = ServiceRequest(
                    tracking_number=new_tracking_number(),
                    import_source=source,
                    external_id=external_id,
                    intake_processed_at=now,  # the intake sweep must leave it alone
                    **values,
                )
                new.append(request)
                seen[external_id] = request
                continue
            differences = [f for f in UPDATABLE if getattr(request, f) != values[f]]
            if not differences:
                self.stats["unchanged"] += 1
                continue
            old_status = request.status
            for field in differences:
                setattr(request, field, values[field])
            if request.pk is None:
                continue  # a later row of this file for a request created above
            changed.append(request)
            history.append(
                HistoryEntry(
                    request=request,
                    at=now,
                    actor_label="Import",
                    action=HistoryEntry.Action.FIELD,
                    field="status" if "status" in differences else differences[0],
                    old_value=old_status if "status" in differences else "",
                    new_value=request.status if "status" in differences else "",
                    note=f"Updated by the {source} import: {', '.join(differences)}",
                )
            )
        with transaction.atomic():
            self._insert(new)
            history += [
                HistoryEntry(
                    request=r,
                    at=r.created_at,
                    actor_label="Import",
                    action=HistoryEntry.Action.CREATED,
                    note=f"Imported from {source} (id {r.external_id})",
                )
                for r in new
            ]
            if changed:
                ServiceRequest.objects.bulk_update(changed, [*UPDATABLE, "updated_at"])
            HistoryEntry.objects.bulk_create(history)
        self.stats["created"] += len(new)
        self.stats["updated"] += len(changed)

    def _insert(self, requests):
        try:
            with transaction.atomic():
                ServiceRequest.objects.bulk_create(requests)
        except IntegrityError:
            # A tracking number clashed (rare): save one by one, which draws new ones.
            for request in requests:
                request.pk = None
                request.tracking_number = ""
                request.save()

    # --- Reporting -------------------------------------------------------------------------
    def _reject(self, number, row, reason):
        key = reason.split(" '")[0] if reason.startswith("unknown status") else reason
        self.reasons[key] += 1
        if len(self.examples) < 10:
            self.examples.append(f"  line {number}: {reason}")
        self.rejected_rows.append((number, row, reason))

    def _write_rejects(self, path):
        with path.open("w", newline="", encoding="utf-8") as f:
            fieldnames = ["line", *self.rejected_rows[0][1].keys(), "reason"]
            writer = csv.DictWriter(f, fieldnames=fieldnames, extrasaction="ignore")
            writer.writeheader()
            for number, row, reason in self.rejected_rows:
                writer.writerow({"line": number, **row, "reason": reason})
        self.stdout.write(f"Rejected rows written to {path}")

    def _progress(self, done, total, *, finished=False):
        if not self.show_progress or not total:
            return
        step = max(1, total // 100)
        if not finished and done % step:
            return
        width = 30
        filled = int(width * done / total)
        bar = "#" * filled + "." * (width - filled)
        sys.stderr.write(f"\r  [{bar}] {100 * done // total:3d}% {done}/{total} rows")
        if finished:
            sys.stderr.write("\n")
        sys.stderr.flush()

    def _report(self, total):
        s = self.stats
        self.stdout.write(
            f"{total} rows read: {s['created']} created, {s['updated']} updated, "
            f"{s['unchanged']} unchanged, {sum(self.reasons.values())} rejected; "
            f"{s['categories created']} categories and {s['departments created']} "
            "departments created."
        )
        if self.reasons:
            self.stdout.write("Rejected, by reason:")
            for reason, count in self.reasons.most_common():
                self.stdout.write(f"  {count:6d}  {reason}")
            self.stdout.write("First rejected rows:")
            for line in self.examples:
                self.stdout.write(line)


class _DryRun(Exception):
    pass
