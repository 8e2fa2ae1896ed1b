"""Duplicate grouping on real 311 data, and the nearby lookup's latency (PostgreSQL).

    .venv/bin/python bench/duplicates.py [--latency-only] [--sizes 10000,1000000,10000000]

Builds a throwaway database (civicdesk_bench_duplicates) and

1. replays NYC 2013-12-25 and LA 2020-01-01..03 (../shared/data/311/normalized/) through
   `request_group_duplicates` in the order they were reported, closing each request when
   the source says it was closed, and prints the groups formed and their distances;
2. replays NYC 2014-2019 and Boston 2022-01, whose rows are labelled duplicates or not by
   the city, and prints how many labelled duplicates the grouping flags (and how many
   unlabelled ones it flags too);
3. fills the table with a synthetic history (a few percent open, the rest closed over
   years) up to each size and times the nearby lookup as intake and the report form
   call it, printing p50/p95/p99, CPU a lookup and the plan of the SQL it sends.

Every source category is its own category and its own group, with the default radius
(250 m) and window (14 days). Prints figures; asserts nothing. Client and server share
this machine's cores; commits are not waited for (synchronous_commit off). More in
bench/README.md.
"""

import argparse
import heapq
import json
import math
import os
import random
import secrets
import shutil
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
FILL_CHUNK = 1_000_000


def psql(sql):
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", sql], check=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,1000000,10000000", help="stored requests")
    parser.add_argument("--lookups", type=int, default=1000, help="lookups a round and size")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--open-share", type=float, default=0.03, help="share of rows open")
    parser.add_argument("--years", type=int, default=5, help="history the closed rows span")
    parser.add_argument(
        "--latency-only", action="store_true", help="skip the replays of real data (1, 2)"
    )
    parser.add_argument(
        "--no-open-index",
        action="store_true",
        help="time the lookup on the model's indexes only, without request_open_location",
    )
    parser.add_argument("--data", type=Path, default=DATA, help="the normalized/ folder")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(",") if s)

    psql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    psql(f"CREATE DATABASE {DB}")
    # DEBUG off: with DEBUG on every query is recorded, which would be timed with the lookup.
    os.environ.update(
        DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{DB}",
        DEBUG="0",
        SECRET_KEY=secrets.token_urlsafe(40),  # throwaway; nothing is signed
        CIVICDESK_VAR_DIR="/tmp/civicdesk-bench-duplicates-var",
        LOG_LEVEL="WARNING",
        LOG_FORMAT="text",
    )
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "civicdesk.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    started = time.perf_counter()
    try:
        _check_disk(connection, max(sizes, default=0))
        call_command("migrate", verbosity=0)
        with connection.cursor() as cursor:
            # A throwaway database: waiting for each commit to reach the disk would time the
            # disk (a dozen commits a replayed request), not the grouping.
            cursor.execute("SET synchronous_commit TO off")
        if not args.latency_only:
            print("== Groups formed (every source category its own group; 250 m, 14 days)")
            for name in GROUPED:
                replay(args.data / name, labelled=False)
            print("\n== Labelled duplicates flagged")
            for name in LABELLED:
                replay(args.data / name, labelled=True)
        print("\n== Nearby lookup latency (bounding box + haversine), synthetic history")
        latency(sizes, args)
        print(f"\n(total {time.perf_counter() - started:.0f}s)")
    finally:
        connection.close()
        psql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")


def _check_disk(connection, rows):
    """Refuse to start a fill that would run the database's disk full."""
    with connection.cursor() as cursor:
        cursor.execute("SHOW data_directory")
        data_directory = cursor.fetchone()[0]
    # The table and its indexes take about 450 bytes a row; WAL and a margin on top.
    needed = rows * 1000
    try:
        free = shutil.disk_usage(data_directory).free
    except OSError:  # a server on another machine, or a folder we may not read
        return
    if needed > free:
        raise SystemExit(
            f"{rows:,} rows need about {needed / 1e9:.0f} GB; {data_directory} has "
            f"{free / 1e9:.0f} GB free."
        )


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


def latency(sizes, args):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from requests_app.grouping import nearby_for_portal, nearby_open_requests
    from requests_app.models import Department, ServiceCategory

    _reset(connection)
    index = _open_location_index(connection, wanted=not args.no_open_index)
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
    print(
        f"{100 * args.open_share:g}% of the stored requests open, the rest completed or closed "
        f"over {args.years} years; {GROUPS} groups of {PER_GROUP} categories. "
        f"Index: {index or 'the model’s only'}.\n{args.lookups} lookups a round, half of "
        f"them within 100 m of an open request reported in the duplicate window (a repeat "
        f"report), half anywhere; median of {args.rounds} rounds, in ms."
    )

    def intake(category, lat, lng):
        # As best_match calls it for a new request.
        now = timezone.now()
        window = timedelta(hours=category.duplicate_window_hours)
        return nearby_open_requests(
            category, lat, lng, since=now - window, until=now, exclude_pk=0, limit=None
        )

    inserted = 0
    for size in sizes:
        t = time.perf_counter()
        _fill(
            connection,
            [c.pk for c in categories],
            inserted,
            size - inserted,
            open_share=args.open_share,
            years=args.years,
        )
        with connection.cursor() as cursor:
            # As autovacuum leaves a table: statistics, and the visibility map.
            cursor.execute("VACUUM ANALYZE requests_app_servicerequest")
        fill_s = time.perf_counter() - t
        inserted = size
        points = _lookup_points(connection, categories, args.lookups, seed=size)
        timed = {"nearby_open_requests": intake, "nearby_for_portal": nearby_for_portal}
        print(
            f"\n{size:,} stored requests ({_stored(connection)}; filled in {fill_s:.0f}s)\n"
            f"  {'':<22} {'p50':>6} {'p95':>6} {'p99':>6} {'found':>6}  CPU: client  server"
        )
        load = os.getloadavg()[0]
        figures = time_lookups(connection, timed, points, args.rounds)
        for name, (p50, p95, p99, found, cpu, server) in figures.items():
            print(
                f"  {name:<22} {p50:>6.2f} {p95:>6.2f} {p99:>6.2f} {found:>6.2f}"
                f"  {cpu:>11.2f} {server:>7.2f}"
            )
        print(
            f"  load average {load:.1f} before, {os.getloadavg()[0]:.1f} after "
            f"({os.cpu_count()} cores)"
        )
        # The plan of the SQL the lookup really sends, for a repeat report.
        category, lat, lng = points[1]
        with CaptureQueriesContext(connection) as queries:
            intake(category, lat, lng)
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + queries[-1]["sql"])
            print("  plan:\n    " + "\n    ".join(r[0] for r in cursor.fetchall()))


def time_lookups(connection, timed, points, rounds):
    """{name: (p50, p95, p99 in ms, results a lookup, CPU ms a lookup here and in the
    server)}: each the median of `rounds` rounds.

    The CPU times are what the lookup costs when nothing else wants the cores; the
    latencies also hold the waits for them.
    """
    for category, lat, lng in points[:200]:  # warm the connection and the caches
        for lookup in timed.values():
            lookup(category, lat, lng)
    server_cpu = _server_cpu(connection)
    figures = {name: [] for name in timed}
    found = dict.fromkeys(timed, 0)
    for _round in range(rounds):
        # Round by round, so that a busy neighbour slows each lookup about equally.
        for name, lookup in timed.items():
            times = []
            cpu, server = time.process_time(), server_cpu()
            for category, lat, lng in points:
                t = time.perf_counter()
                found[name] += len(lookup(category, lat, lng))
                times.append((time.perf_counter() - t) * 1000)
            cpu = (time.process_time() - cpu) * 1000 / len(points)
            server = (server_cpu() - server) * 1000 / len(points)
            figures[name].append([*(_pct(times, s) for s in (0.5, 0.95, 0.99)), cpu, server])
    return {
        name: (
            *(statistics.median(r[i] for r in figures[name]) for i in range(3)),
            found[name] / (rounds * len(points)),
            *(statistics.median(r[i] for r in figures[name]) for i in range(3, 5)),
        )
        for name in timed
    }


def _server_cpu(connection):
    """A function giving the CPU seconds the connection's server process has used."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        stat = Path(f"/proc/{cursor.fetchone()[0]}/stat")
    ticks = os.sysconf("SC_CLK_TCK")

    def seconds():
        try:
            # utime and stime, after the command name (which may hold spaces).
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # a server on another machine
            return math.nan
        return (int(fields[11]) + int(fields[12])) / ticks

    return seconds


def _open_location_index(connection, *, wanted):
    """Until the model has it, add the open requests' (category, lat, lng) index (or drop it).

    The DDL is the schema editor's for the models.Index meant for ServiceRequest.Meta,
    so the planner sees exactly what a migration would create. Returns its name, or
    None when the model's indexes alone are timed.
    """
    from django.db import models
    from django.db.models import Q

    from requests_app.models import OPEN_STATUSES, ServiceRequest

    index = models.Index(
        fields=["category", "lat", "lng"],
        condition=Q(status__in=sorted(OPEN_STATUSES)),
        name="request_open_location",
    )
    with connection.cursor() as cursor:
        table = ServiceRequest._meta.db_table
        present = index.name in connection.introspection.get_constraints(cursor, table)
    with connection.schema_editor() as editor:
        if wanted and not present:
            editor.add_index(ServiceRequest, index)
        elif present and not wanted:
            editor.remove_index(ServiceRequest, index)
    return index.name if wanted else None


def _lookup_points(connection, categories, count, *, seed):
    """(category, lat, lng) to look up: every other one near a recent open request."""
    from requests_app.models import OPEN_STATUSES

    by_pk = {c.pk: c for c in categories}
    window = timedelta(hours=categories[0].duplicate_window_hours)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT category_id, lat, lng FROM requests_app_servicerequest "
            "WHERE status = ANY(%s) AND created_at >= now() - %s ORDER BY random() LIMIT %s",
            [sorted(OPEN_STATUSES), window, count],
        )
        recent = cursor.fetchall()
    rng = random.Random(seed)
    points = []
    for n in range(count):
        if n % 2 and recent:
            category_id, lat, lng = rng.choice(recent)
            # Within about 100 m, in the same category or another of its group.
            category = rng.choice([c for c in categories if c.group == by_pk[category_id].group])
            points.append(
                (category, lat + rng.uniform(-0.0006, 0.0006), lng + rng.uniform(-0.0008, 0.0008))
            )
        else:
            points.append((rng.choice(categories), rng.uniform(*AREA[:2]), rng.uniform(*AREA[2:])))
    return points


def _stored(connection):
    """Open rows, and the sizes of the table and of the location indexes."""
    from requests_app.models import OPEN_STATUSES

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM requests_app_servicerequest WHERE status = ANY(%s)",
            [sorted(OPEN_STATUSES)],
        )
        open_rows = cursor.fetchone()[0]
        cursor.execute(
            "SELECT c.relname, pg_size_pretty(pg_relation_size(c.oid)) FROM pg_class c "
            "WHERE c.relname IN ('requests_app_servicerequest', 'request_category_location', "
            "'request_open_location') ORDER BY c.relname DESC"
        )
        sizes = ", ".join(f"{name} {size}" for name, size in cursor.fetchall())
    return f"{open_rows:,} open; {sizes}"


def _fill(connection, category_ids, offset, count, *, open_share, years):
    """Synthetic requests by INSERT … SELECT generate_series, a million rows a statement.

    Like a city's table after some years: `open_share` of the rows are open, mostly
    reported in the last weeks (exponential, mean three weeks; the backlog's long tail
    goes back two years); the rest are completed (85%) or closed, reported evenly over
    `years`. 2% are hidden from the public. Columns come from the model, so fields added
    later get their defaults here too.
    """
    from requests_app.models import OPEN_STATUSES, ServiceRequest

    open_statuses = sorted(OPEN_STATUSES)
    created = (
        "now() - CASE WHEN s.is_open "
        "THEN least(-ln(1 - s.r_age) * 21, 730) * interval '1 day' "
        f"ELSE s.r_age * interval '{years * 365} days' END"
    )
    special = {
        "tracking_number": "'S-' || lpad(to_hex(s.i), 9, '0')",
        "category_id": "(%(categories)s)[1 + (s.i %% %(n)s)]",
        "description": "'Synthetic request ' || s.i",
        "lat": f"{AREA[0]} + s.r_lat * {AREA[1] - AREA[0]}",
        "lng": f"{AREA[2]} + s.r_lng * {AREA[3] - AREA[2]}",
        "channel": "'web'",
        "status": (
            "CASE WHEN s.is_open THEN (%(open)s::text[])[1 + floor(s.r_status * %(n_open)s)::int] "
            "WHEN s.r_status < 0.85 THEN 'completed' ELSE 'closed' END"
        ),
        "is_public": "s.r_public >= 0.02",
        "created_at": created,
        "updated_at": "now()",
        "intake_processed_at": created,
        "due_at": f"{created} + interval '3 days'",
        "resolved_at": (
            f"CASE WHEN s.is_open THEN NULL ELSE {created} + s.r_status * interval '10 days' END"
        ),
    }
    columns, values = [], []
    params = {
        "categories": category_ids,
        "n": len(category_ids),
        "open": open_statuses,
        "n_open": len(open_statuses),
        "open_share": open_share,
    }
    for field in ServiceRequest._meta.concrete_fields:
        if field.primary_key or (field.has_db_default() and field.column not in special):
            continue  # the database fills it in
        columns.append(field.column)
        if field.column in special:
            values.append(special[field.column])
        elif field.null:
            values.append("NULL")
        else:
            key = f"d_{field.column}"
            params[key] = field.get_db_prep_save(field.get_default(), connection)
            values.append(f"%({key})s")
    # The random draws are made once a row in a subquery, which volatile functions keep
    # the planner from flattening, so that created_at and resolved_at agree.
    sql = (
        f"INSERT INTO requests_app_servicerequest ({', '.join(columns)}) "
        f"SELECT {', '.join(values)} FROM ("
        "SELECT i, random() < %(open_share)s AS is_open, random() AS r_age, "
        "random() AS r_lat, random() AS r_lng, random() AS r_status, random() AS r_public "
        "FROM generate_series(%(start)s, %(end)s) AS i) AS s"
    )
    for start in range(offset + 1, offset + count + 1, FILL_CHUNK):
        params.update(start=start, end=min(offset + count, start + FILL_CHUNK - 1))
        with connection.cursor() as cursor:
            cursor.execute(sql, params)


if __name__ == "__main__":
    main()
