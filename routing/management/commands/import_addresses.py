"""Load a city's address points into the gazetteer from a CSV file.

    manage.py import_addresses addresses.csv
    manage.py import_addresses boston.csv \
        --mapping routing/address_mappings/openaddresses.json

Without a mapping the columns are address, lat, lng, id and zipcode (id and zipcode may be
left out). A mapping (JSON) names the source and the columns:

  source    stored on each address (default "city"). Running the import again for the
            same source updates the addresses it loaded before — matched by id, or by the
            normalized text when the file has no ids — instead of adding them twice.
  columns   field -> column: address (one column, or a list joined with spaces, e.g.
            ["NUMBER", "STREET"]), lat, lng, id, zipcode. Column names match whatever
            their case.

--source overrides the mapping's. Rows without an address or a readable position, or
outside the service area, are skipped and counted by reason. Addresses are written in
batches of --batch rows, one upsert each; the list of streets that the search offers is
rebuilt at the end.
"""

import csv
import json
import sys
from collections import Counter
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from requests_app import service_area
from routing.gazetteer import address_build, addresses_save, streets_rebuild

DEFAULT_MAPPING = {
    "source": "city",
    "columns": {"address": "address", "lat": "lat", "lng": "lng", "id": "id", "zipcode": "zipcode"},
}
FIELDS = ("address", "lat", "lng", "id", "zipcode")
REQUIRED = ("address", "lat", "lng")


class Reject(Exception):
    pass


class Command(BaseCommand):
    help = "Import address points (the gazetteer the address search uses) from a CSV file."

    def add_arguments(self, parser):
        parser.add_argument("csv", type=Path)
        parser.add_argument("--mapping", type=Path, help="JSON: source and column names")
        parser.add_argument("--source", help="stored on each address; overrides the mapping")
        parser.add_argument("--batch", type=int, default=1000, help="rows per upsert")
        parser.add_argument("--quiet-progress", action="store_true")

    def handle(self, *args, **options):
        mapping = DEFAULT_MAPPING
        if options["mapping"]:
            try:
                mapping = json.loads(options["mapping"].read_text())
            except (OSError, json.JSONDecodeError) as error:
                raise CommandError(f"Cannot read the mapping: {error}") from None
        source = (options["source"] or mapping.get("source") or "city")[:50]
        path = options["csv"]
        if not path.exists():
            raise CommandError(f"No such file: {path}")
        with path.open(newline="", encoding="utf-8-sig", errors="replace") as f:
            total = max(0, sum(1 for _ in csv.reader(f)) - 1)

        counts, reasons = Counter(), Counter()
        progress = _Progress(total, enabled=not options["quiet_progress"])
        with path.open(newline="", encoding="utf-8-sig", errors="replace") as f:
            reader = csv.DictReader(f)
            columns = self._columns(
                mapping.get("columns") or {},
                reader.fieldnames or [],
                defaults=options["mapping"] is None,
            )
            batch = []
            for row in reader:
                try:
                    batch.append(self._parse(row, columns, source))
                except Reject as reason:
                    reasons[str(reason)] += 1
                if len(batch) >= options["batch"]:
                    counts += addresses_save(batch, source)
                    batch = []
                progress.step()
            if batch:
                counts += addresses_save(batch, source)
        progress.close()
        streets = streets_rebuild()
        self.stdout.write(
            f"{total} rows read for source {source!r}: {counts['created']} created, "
            f"{counts['updated']} updated, {counts['unchanged']} unchanged, "
            f"{sum(reasons.values())} skipped; {streets} streets."
        )
        for reason, count in reasons.most_common():
            self.stdout.write(f"  {count:8d}  {reason}")

    def _columns(self, wanted, fieldnames, *, defaults):
        """field -> [the file's column names], matched whatever their case."""
        by_lower = {name.strip().lower(): name for name in fieldnames}
        columns, missing = {}, [f"({field})" for field in REQUIRED if field not in wanted]
        for field, names in wanted.items():
            if field not in FIELDS:
                raise CommandError(f"The mapping names an unknown field {field!r}")
            names = names if isinstance(names, list) else [names]
            found = [by_lower.get(str(name).strip().lower()) for name in names]
            if None not in found:
                columns[field] = found
            elif not (defaults and field not in REQUIRED):  # default id, zipcode: optional
                missing += [n for n, f in zip(names, found, strict=True) if f is None]
        if missing:
            raise CommandError(f"Columns missing from the file: {', '.join(missing)}")
        return columns

    def _parse(self, row, columns, source):
        def value(field):
            return " ".join(
                (row.get(c) or "").strip() for c in columns.get(field, []) if (row.get(c) or "")
            ).strip()

        text = value("address")
        if not text:
            raise Reject("no address")
        try:
            lat, lng = float(value("lat")), float(value("lng"))
        except ValueError:
            raise Reject("no readable position") from None
        if not (-90 <= lat <= 90 and -180 <= lng <= 180):
            raise Reject("no readable position")
        if not service_area.contains(lat, lng):
            raise Reject("outside the service area")
        address = address_build(source, text, lat, lng, value("id"), value("zipcode"))
        if address is None:
            raise Reject("no address")
        return address


class _Progress:
    """tqdm when it is installed; otherwise a counter on stderr, redrawn every 1 %."""

    def __init__(self, total, *, enabled):
        self.total, self.done, self.enabled = total, 0, enabled and total > 0
        self.bar = None
        if self.enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=total, unit="rows", file=sys.stderr)

    def step(self):
        self.done += 1
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(1)
        elif self.done % max(1, self.total // 100) == 0 or self.done == self.total:
            share = 100 * self.done // self.total
            sys.stderr.write(f"\r  {self.done:,}/{self.total:,} rows ({share}%)")
            sys.stderr.flush()

    def close(self):
        if self.bar is not None:
            self.bar.close()
        elif self.enabled:
            sys.stderr.write("\n")
