"""Duplicate grouping on real 311 data, and the nearby lookup's latency (PostgreSQL).

    .venv/bin/python bench/duplicates.py [--sizes 10000,100000,1000000] [--lookups 500]

Builds a throwaway database (civicdesk_bench_duplicates) and

1. replays NYC 2013-12-25 and LA 2020-01-01..03 (../shared/data/311/normalized/) through
   `request_group_duplicates` in the order they were reported, closing each request when
   the source says it was closed, and prints the groups formed and their distances;
2. replays NYC 2014-2019 and Boston 2022-01, whose rows are labelled duplicates or not by
   the city, and prints how many labelled duplicates the grouping flags (and how many
   unlabelled ones it flags too);
3. fills the table with synthetic requests over a city-sized area and times the nearby
   lookup (bounding box on the request_category_location index + haversine in Python)
   at each size, printing p50/p95 and the query plan.

Every source category is its own category and its own group, with the default radius
(250 m) and window (14 days). Prints figures; asserts nothing. Client and server share
this machine's cores; commits are not waited for (synchronous_commit off).
"""

import argparse
import heapq
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "311" / "normalized"
DB = "civicdesk_bench_duplicates"
GROUPED = ["nyc_2013_xmas.jsonl", "la_2020.jsonl"]
LABELLED = ["nyc_2014_2019.jsonl", "boston.jsonl"]
# Synthetic city for the latency figures: about 44 x 45 km (New York's extent).
AREA = (40.50, 40.90, -74.25, -73.70)
GROUPS, PER_GROUP = 5, 4


def psql(sql):
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", sql], check=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--lookups", type=int, default=500)
    parser.add_argument("--data", type=Path, default=DATA, help="the normalized/ folder")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]

    psql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    psql(f"CREATE DATABASE {DB}")
    os.environ.update(
        DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{DB}",
        DEBUG="1",
        CIVICDESK_VAR_DIR="/tmp/civicdesk-bench-duplicates-var",
        LOG_LEVEL="WARNING",
    )
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "civicdesk.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    with connection.cursor() as cursor:
        # A throwaway database: waiting for each commit to reach the disk would time the
        # disk (a dozen commits a replayed request), not the grouping.
        cursor.execute("SET synchronous_commit TO off")
    started = time.perf_counter()
    try:
        print("== Groups formed (every source category its own group; 250 m, 14 days)")
        for name in GROUPED:
            replay(args.data / name, labelled=False)
        print("\n== Labelled duplicates flagged")
        for name in LABELLED:
            replay(args.data / name, labelled=True)
        print("\n== Nearby lookup latency (bounding box + haversine), synthetic open requests")
        latency(sizes, args.lookups)
        print(f"\n(total {time.perf_counter() - started:.0f}s)")
    finally:
        connection.close()
        psql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")


def _reset(connection):
    # TRUNCATE: the append-only history's row triggers refuse DELETE, not this.
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE requests_app_servicerequest, requests_app_servicecategory, "
            "requests_app_department RESTART IDENTITY CASCADE"
        )


def _pct(values, share):
    values = sorted(values)
    return values[min(len(values) - 1, int(share * len(values)))] if values else 0


def replay(path, *, labelled):
    from django.db import connection, transaction
    from django.utils.text import slugify

    from requests_app.grouping import request_group_duplicates
    from requests_app.models import (
        Department,
        HistoryEntry,
        ServiceCategory,
        ServiceRequest,
        Status,
    )

    _reset(connection)
    name = path.name
    rows = [json.loads(line) for line in path.open()]
    rows.sort(key=lambda r: r["created"])
    department = Department.objects.create(name="Bench", slug="bench")
    categories = {}
    for category in sorted({r["category"] for r in rows}):
        categories[category] = ServiceCategory.objects.create(
            code=slugify(category)[:40] + f"-{len(categories)}",
            name=category[:100],
            group=category[:100],
            department=department,
            sla_hours=72,
        )

    def when(text):
        return datetime.fromisoformat(text).replace(tzinfo=UTC) if text else None

    requests = ServiceRequest.objects.bulk_create(
        ServiceRequest(
            tracking_number=f"R-{n:09d}",
            category=categories[r["category"]],
            description=" ".join(filter(None, [r["category"], r.get("subcategory")])),
            lat=r["lat"],
            lng=r["long"],
            address=r.get("address") or "",
            channel="api",
            created_at=when(r["created"]),
            external_id=r["source_id"],
            import_source="bench",
        )
        for n, r in enumerate(rows)
    )
    closing = []  # (closed_at, pk) of requests the source closed
    grouped, seconds = [], []
    started = time.perf_counter()
    for row, request in zip(rows, requests, strict=True):
        now = when(row["created"])
        due = []
        while closing and closing[0][0] <= now:
            due.append(heapq.heappop(closing)[1])
        if due:
            ServiceRequest.objects.filter(pk__in=due).update(status=Status.COMPLETED)
        if row["closed"]:
            heapq.heappush(closing, (when(row["closed"]), request.pk))
        if row["lat"] is None:
            continue
        t = time.perf_counter()
        with transaction.atomic():
            locked = (
                ServiceRequest.objects.select_for_update()
                .select_related("category")
                .get(pk=request.pk)
            )
            match = request_group_duplicates(locked)
        seconds.append(time.perf_counter() - t)
        if match:
            grouped.append((row, match))
    elapsed = time.perf_counter() - started
    located = sum(1 for r in rows if r["lat"] is not None)
    primaries = Counter(
        ServiceRequest.objects.filter(duplicate_of__isnull=False).values_list(
            "duplicate_of_id", flat=True
        )
    )
    distances = [m.distance_m for _row, m in grouped]
    hours = [m.apart.total_seconds() / 3600 for _row, m in grouped]
    print(
        f"\n{name}: {len(rows):,} requests, {located:,} with a location; replayed in "
        f"{elapsed:.1f}s ({statistics.mean(seconds or [0]) * 1000:.2f} ms a request, "
        f"p95 {_pct(seconds, 0.95) * 1000:.2f} ms)"
    )
    print(
        f"  joined a group: {len(grouped):,} ({100 * len(grouped) / max(located, 1):.1f}% of "
        f"located); groups: {len(primaries):,}; largest group: "
        f"{1 + max(primaries.values(), default=0)} requests; groups of 2: "
        f"{sum(1 for n in primaries.values() if n == 1):,}"
    )
    if grouped:
        print(
            f"  distance to the matched request: p50 {_pct(distances, 0.5):.0f} m, "
            f"p90 {_pct(distances, 0.9):.0f} m, max {max(distances):.0f} m; "
            f"exactly the same point: {sum(1 for d in distances if d < 1):,}"
        )
        print(
            f"  time apart: p50 {_pct(hours, 0.5):.1f} h, p90 {_pct(hours, 0.9):.1f} h; "
            f"same category: {sum(m.same_category for _r, m in grouped):,}"
        )
        top = Counter(row["category"] for row, _m in grouped).most_common(5)
        print("  most grouped categories: " + ", ".join(f"{c} {n}" for c, n in top))
        example = grouped[len(grouped) // 2][1]
        entry = HistoryEntry.objects.filter(action="duplicate", field="duplicate_of").first()
        print(f"  a recorded reason: {entry.note if entry else example.reasons()}")
    if labelled:
        flagged_ids = {row["source_id"] for row, _m in grouped}
        dups = [r for r in rows if r["is_duplicate"]]
        dups_located = [r for r in dups if r["lat"] is not None]
        hit = [r for r in dups_located if r["source_id"] in flagged_ids]
        false = [r for r in rows if not r["is_duplicate"] and r["source_id"] in flagged_ids]
        print(
            f"  labelled duplicates: {len(dups)} ({len(dups_located)} with a location); "
            f"flagged: {len(hit)} ({100 * len(hit) / max(len(dups_located), 1):.0f}% of "
            f"located); flagged but not labelled duplicates: {len(false)}"
        )
        for r in hit:
            print(f"    flagged: {r['category']} {r['created']} {r['address'] or ''}")
        print(
            "  (a labelled duplicate can only be flagged if the request it repeats is in "
            "this sample too)"
        )


def latency(sizes, lookups):
    from django.db import connection
    from django.utils import timezone

    from requests_app.grouping import nearby_open_requests
    from requests_app.models import Department, ServiceCategory, ServiceRequest

    _reset(connection)
    department = Department.objects.create(name="Bench", slug="bench")
    categories = [
        ServiceCategory.objects.create(
            code=f"c{g}-{c}",
            name=f"Category {g}-{c}",
            group=f"Group {g}",
            department=department,
            sla_hours=72,
        )
        for g in range(GROUPS)
        for c in range(PER_GROUP)
    ]
    rng = random.Random(311)
    print(
        f"{'stored requests':>16} {'lookup p50':>11} {'lookup p95':>11} {'rows in box':>12}"
        f" {'found':>6}"
    )
    inserted = 0
    for size in sizes:
        t = time.perf_counter()
        _fill(connection, [c.pk for c in categories], inserted, size - inserted)
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE requests_app_servicerequest")
        fill_s = time.perf_counter() - t
        inserted = size
        now = timezone.now()
        times, found = [], []
        for _ in range(lookups):
            category = rng.choice(categories)
            lat = rng.uniform(AREA[0], AREA[1])
            lng = rng.uniform(AREA[2], AREA[3])
            t = time.perf_counter()
            result = nearby_open_requests(
                category,
                lat,
                lng,
                since=now - timedelta(hours=category.duplicate_window_hours),
                limit=None,
            )
            times.append((time.perf_counter() - t) * 1000)
            found.append(len(result))
        in_box = _rows_in_box(connection, categories[0], AREA)
        print(
            f"{size:>16,} {statistics.median(times):>9.2f}ms {_pct(times, 0.95):>9.2f}ms"
            f" {in_box:>12.1f} {statistics.mean(found):>6.1f}   (filled in {fill_s:.1f}s)"
        )
    with connection.cursor() as cursor:
        from requests_app.grouping import CANDIDATE_FIELDS, bounding_box

        center = ((AREA[0] + AREA[1]) / 2, (AREA[2] + AREA[3]) / 2)
        min_lat, max_lat, min_lng, max_lng = bounding_box(*center, 250)
        query = (
            ServiceRequest.objects.open()
            .filter(
                category_id__in=ServiceCategory.objects.filter(group=categories[0].group).values(
                    "pk"
                ),
                lat__gte=min_lat,
                lat__lte=max_lat,
                lng__gte=min_lng,
                lng__lte=max_lng,
                created_at__gte=timezone.now() - timedelta(days=14),
            )
            .select_related("category")
            .only(*CANDIDATE_FIELDS)
        )
        sql, params = query.query.sql_with_params()
        cursor.execute("EXPLAIN ANALYZE " + sql, params)
        print("\nPlan at the largest size:\n  " + "\n  ".join(r[0] for r in cursor.fetchall()))


def _rows_in_box(connection, category, area):
    """Average rows of a category group in one 250 m bounding box: what the index returns."""
    from requests_app.grouping import bounding_box

    box = bounding_box((area[0] + area[1]) / 2, (area[2] + area[3]) / 2, 250)
    box_area = (box[1] - box[0]) * (box[3] - box[2])
    total_area = (area[1] - area[0]) * (area[3] - area[2])
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM requests_app_servicerequest c "
            "JOIN requests_app_servicecategory k ON k.id = c.category_id WHERE k.group = %s",
            [category.group],
        )
        return cursor.fetchone()[0] * box_area / total_area


def _fill(connection, category_ids, offset, count):
    """Synthetic requests in one INSERT … SELECT: 80% open, reported over the last 30 days.

    Columns come from the model, so fields added later get their defaults here too.
    """
    if count <= 0:
        return
    from requests_app.models import ServiceRequest

    special = {
        "tracking_number": "'S-' || lpad(to_hex(i), 9, '0')",
        "category_id": "(%(categories)s)[1 + (i %% %(n)s)]",
        "description": "'Synthetic request ' || i",
        "lat": f"{AREA[0]} + random() * {AREA[1] - AREA[0]}",
        "lng": f"{AREA[2]} + random() * {AREA[3] - AREA[2]}",
        "channel": "'web'",
        "status": "CASE WHEN random() < 0.8 THEN 'received' ELSE 'completed' END",
        "created_at": "now() - random() * interval '30 days'",
        "updated_at": "now()",
    }
    columns, values, params = [], [], {"categories": category_ids, "n": len(category_ids)}
    for field in ServiceRequest._meta.concrete_fields:
        if field.primary_key:
            continue
        columns.append(field.column)
        if field.column in special:
            values.append(special[field.column])
        elif field.null:
            values.append("NULL")
        else:
            key = f"d_{field.column}"
            params[key] = field.get_db_prep_save(field.get_default(), connection)
            values.append(f"%({key})s")
    params.update(start=offset + 1, end=offset + count)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO requests_app_servicerequest ({', '.join(columns)}) "
            f"SELECT {', '.join(values)} FROM generate_series(%(start)s, %(end)s) AS i",
            params,
        )


if __name__ == "__main__":
    main()
