"""Dashboard KPIs and heat map at 100k, 1M and 10M requests (PostgreSQL), next to the floor.

    .venv/bin/python bench/dashboard.py [--sizes 100000,1000000] [--ten-million]
                                        [--repeat 21] [--keep] [--export]

For each size, in a throwaway database (civicdesk_bench_dashboard):

1. loads synthetic requests generated inside PostgreSQL (bench/dashboard_data.py: seasons,
   weekdays, hot spots, 24 categories in 6 departments, 9 districts, statuses, SLAs, work
   orders with costs, surveys), with the indexes the rollup refresh needs (PROPOSED_INDEXES);
2. builds the rollups (rollups_refresh, first run: a full build) and times it, then changes
   1,000 requests the way a busy minute does and times the incremental refresh;
3. times, as a director sees them, with production settings (DEBUG off):
   - the KPIs of the last 30 days (both periods, every figure) as a service call and as the
     dashboard page through the Django test client (the page also holds the breakdowns, the
     weekly trend and the hotspots), with one filter and with two;
   - the heat map at zoom 12 (the whole city) for each metric, and at zoom 14, as a service
     call and as grid.json through the test client;
   - the floor: the minimal SQL over the requests table that computes the same numbers
     (one scan with FILTERed aggregates and percentile_cont for every KPI of both periods,
     plus the work-order cost shares and the surveys; for the grid one GROUP BY per metric).
   It prints p50 and p95 in ms and the ratio of our p95 to the floor's p95;
4. drops the database (unless --keep).

Prints figures; asserts nothing. Client and server share this machine's cores.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DB = "civicdesk_bench_dashboard"
PSQL = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc"]
SR = "requests_app_servicerequest"
# The indexes the refresh reads by (to be added to the models; see bench/README.md).
PROPOSED_INDEXES = [
    f"CREATE INDEX request_updated ON {SR} (updated_at)",
    "CREATE INDEX survey_answered ON surveys_survey (answered_at)",
    "CREATE INDEX work_order_completed ON requests_app_workorder (completed_at)",
]
OPEN = "('received', 'assigned', 'scheduled', 'in_progress', 'waiting')"


def _psql(sql, database="postgres"):
    subprocess.run([*PSQL, sql, "-d", database], check=True, stdout=subprocess.DEVNULL)


def _timed(fn, repeat):
    fn()  # warm: plans, caches
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - started) * 1000)
    runs.sort()
    return statistics.median(runs), runs[min(len(runs) - 1, round(0.95 * (len(runs) - 1)))]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--ten-million", action="store_true", help="add 10,000,000")
    parser.add_argument("--repeat", type=int, default=21)
    parser.add_argument("--keep", action="store_true", help="keep the last database")
    parser.add_argument("--export", action="store_true", help="also time the CSV export")
    parser.add_argument(
        "--reuse", action="store_true", help="time the kept database of one size again"
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if args.ten_million:
        sizes.append(10_000_000)

    var = tempfile.mkdtemp(prefix="civicdesk-bench-dashboard-")
    os.environ.update(
        DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{DB}",
        # Production settings: DEBUG would record every query and slow the figures down.
        DEBUG="0",
        SECRET_KEY="bench-" + "x" * 44,
        ALLOWED_HOSTS="127.0.0.1,testserver",
        SECURE_SSL_REDIRECT="0",
        CIVICDESK_VAR_DIR=var,
        LOG_LEVEL="WARNING",
        DJANGO_SETTINGS_MODULE="bench.settings",  # static files in the var directory
    )
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("collectstatic", "--no-input", verbosity=0)
    print(f"{'':32} {'p50':>8} {'p95':>8} {'floor p95':>10} {'ratio':>6}")
    try:
        for size in sizes:
            if not args.reuse:
                _psql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
                _psql(f"CREATE DATABASE {DB}")
            _run(size, args.repeat, args.export, args.reuse)
    finally:
        from django.db import connection

        connection.close()
        if not (args.keep or args.reuse):
            _psql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")


def _run(size, repeat, export, reuse=False):
    from django.conf import settings
    from django.db import connection
    from django.test import Client

    from requests_app import dashboard
    from requests_app.access import visible_requests
    from requests_app.models import StaffRole
    from tests.factories import staff_user

    connection.close()  # a new database: reconnect
    if reuse:
        print(f"\n== {size:,} requests, database kept from an earlier run")
        ref = _reference()
    else:
        ref = _load_and_build(size)
    _time_refresh()

    director = staff_user("bench-director", StaffRole.DIRECTOR)  # get or create
    requests = visible_requests(director)
    client = Client()
    client.force_login(director)
    filters = dashboard.Filters.default()
    department = ref["departments"][0].pk
    district = ref["districts"][4].pk
    one = dashboard.Filters(filters.start, filters.end, department=department)
    two = dashboard.Filters(filters.start, filters.end, department=department, district=district)
    west, south, east, north = settings.SERVICE_AREA_BBOX
    city = f"{west},{south},{east},{north}"
    part = "-71.12,42.28,-71.03,42.34"  # a zoom-14 view
    floors = _floors(connection, filters, size)

    def line(label, fn, floor=None):
        p50, p95 = _timed(fn, repeat)
        ratio = ""
        if floor:
            ratio = f"{floors[floor][1]:>9.0f}  {p95 / floors[floor][1]:>5.2f}x"
        print(f"  {label:30} {p50:>8.1f} {p95:>8.1f} {ratio}", flush=True)

    def page(query=""):
        return lambda: _ok(client.get("/dashboard/" + query))

    def grid_json(bbox, zoom, metric, extra=""):
        query = f"?bbox={bbox}&zoom={zoom}&metric={metric}{extra}"
        return lambda: _ok(client.get("/dashboard/grid.json" + query))

    for name, (p50, p95) in floors.items():
        print(f"  {'floor: ' + name:30} {p50:>8.1f} {p95:>8.1f}")
    line("KPIs (service)", lambda: dashboard.kpis(requests, filters), "KPIs")
    line("KPIs, one filter (service)", lambda: dashboard.kpis(requests, one), "KPIs")
    line("KPIs, two filters (service)", lambda: dashboard.kpis(requests, two), "KPIs")
    line("dashboard page (view)", page(), "KPIs")
    line("dashboard page, two filters", page(f"?department={department}&district={district}"))
    for metric, floor in (
        ("count", "grid count"),
        ("overdue", "grid overdue"),
        ("median_resolution", "grid median"),
    ):
        bbox = tuple(float(v) for v in city.split(","))
        line(
            f"grid z12 {metric} (service)",
            lambda bbox=bbox, metric=metric: dashboard.grid(
                requests, filters, bbox=bbox, zoom=12, metric=metric
            ),
            floor,
        )
        line(f"grid.json z12 {metric} (view)", grid_json(city, 12, metric), floor)
    line("grid.json z14 count (view)", grid_json(part, 14, "count"))
    two_query = f"&department={department}&district={district}"
    line("grid.json z12, two filters", grid_json(city, 12, "count", two_query))
    size_14 = dashboard.cell_size(14)
    line(
        "cell.json z14 (view)",
        lambda: _ok(
            client.get(
                f"/dashboard/cell.json?zoom=14&gy={int(42.31 // size_14)}"
                f"&gx={int(-71.06 // size_14)}"
            )
        ),
    )
    line(
        "breakdowns (service)",
        lambda: [dashboard.breakdown(requests, filters, d) for d in dashboard.DIMENSIONS],
    )
    line("hotspots (service)", lambda: dashboard.hotspots(requests, filters))
    if export:
        _export(director, filters)


def _export(director, filters):
    """The streamed CSV of the last 30 days: rows per second and peak Python memory."""
    import tracemalloc

    from requests_app import exports
    from requests_app.access import visible_requests

    rows = filters.apply(visible_requests(director))
    columns = exports.columns_for(director)
    started = time.perf_counter()
    written = sum(1 for _ in exports.csv_lines(rows, columns)) - 1
    seconds = time.perf_counter() - started
    tracemalloc.start()
    for _ in exports.csv_lines(rows, columns):
        pass
    peak = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    print(f"  CSV export: {written:,} rows, {written / seconds:,.0f} rows/s, peak {peak:.1f} MB")


def _load_and_build(size):
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection

    from bench import dashboard_data
    from requests_app import rollups

    call_command("migrate", verbosity=0)
    days = dashboard_data.history_days(size)
    print(f"\n== {size:,} requests over {days} days")
    ref = dashboard_data.load(
        connection,
        size=size,
        days=days,
        bbox=settings.SERVICE_AREA_BBOX,
        log=lambda line: print(line, flush=True),
    )
    with connection.cursor() as cursor:
        for sql in PROPOSED_INDEXES:
            cursor.execute(sql)

    started = time.perf_counter()
    built = rollups.rollups_refresh()
    print(f"  rollups built in {time.perf_counter() - started:.0f}s ({built.changed:,} facts)")
    _vacuum()  # what autovacuum does after a bulk load: index-only scans need it
    print("  " + _sizes(connection))
    return ref


def _time_refresh():
    """An incremental refresh after a busy minute (three times), and one with no change."""
    from django.db import connection

    from requests_app import rollups

    rollups.rollups_refresh()
    refreshes = []
    for round_ in range(3):
        _busy_minute(connection, round_)
        started = time.perf_counter()
        result = rollups.rollups_refresh()
        refreshes.append((time.perf_counter() - started, result))
    idle = min(_seconds(rollups.rollups_refresh) for _ in range(3))
    seconds = statistics.median(s for s, _r in refreshes)
    looked_at = refreshes[-1][1].looked_at
    print(
        f"  refresh after 1,000 changed requests: {seconds:.1f}s (median of 3; "
        f"{looked_at:,} looked at); with nothing changed: {idle:.2f}s"
    )


def _reference():
    from requests_app.models import Department
    from routing.models import District

    return {
        "departments": list(Department.objects.order_by("pk")),
        "districts": list(District.objects.order_by("pk")),
    }


def _ok(response):
    assert response.status_code == 200, response.status_code
    return response


def _seconds(fn):
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _vacuum():
    for table in ("requestfact", "dayrollup", "cellrollup"):
        _psql(f"VACUUM (ANALYZE) requests_app_{table}", DB)
    _psql(f"VACUUM (ANALYZE) {SR}", DB)


def _sizes(connection):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, c.reltuples::bigint, pg_total_relation_size(c.oid) "
            "FROM pg_class c WHERE c.relname IN "
            f"('{SR}', 'requests_app_requestfact', 'requests_app_dayrollup', "
            "'requests_app_cellrollup') ORDER BY c.relname"
        )
        return "; ".join(
            f"{name.replace('requests_app_', '')} {rows:,} rows {size / 2**20:,.0f} MB"
            for name, rows, size in cursor.fetchall()
        )


def _busy_minute(connection, round_):
    """1,000 changed requests: 400 new, 300 open ones resolved, 200 first answers, 100
    forwarded to another department (a realistic minute for a city of ~10M requests)."""
    from django.utils import timezone

    now = timezone.now()
    stamp = f"N{int(now.timestamp()) % 100_000}-{round_}"  # tracking numbers: 12 characters
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT max(id) FROM {SR}")
        top = cursor.fetchone()[0]
        cursor.execute(
            f"""
            INSERT INTO {SR} (
                tracking_number, category_id, department_id, district_id, description, lat,
                lng, address, channel, status, priority, forward_count, close_reason,
                is_public, reporter_name, reporter_email, reporter_phone, reporter_device_id,
                reporter_account_id, address_id, import_source, external_id, language,
                created_at, updated_at, due_at, sla_paused_seconds, escalation_level,
                duplicate_confirmed)
            SELECT '{stamp}-' || row_number() OVER (), category_id, department_id,
                   district_id, 'new', lat, lng, '', channel, 'received', 2, 0, '', true, '',
                   '', '', '', '', '', '', '', 'en', %s, %s, %s::timestamptz + interval '3 days',
                   0, 0, false
            FROM (SELECT * FROM {SR} WHERE id > %s - 100000 ORDER BY random() LIMIT 400) s
            """,
            [now, now, now, top],
        )
        cursor.execute(
            f"""
            UPDATE {SR} SET status = 'completed', resolved_at = %s, updated_at = %s,
                   first_response_at = coalesce(first_response_at, %s)
            WHERE id IN (SELECT id FROM {SR} WHERE status IN {OPEN} AND resolved_at IS NULL
                         ORDER BY random() LIMIT 300)
            """,
            [now, now, now],
        )
        cursor.execute(
            f"""
            UPDATE {SR} SET first_response_at = %s, status = 'assigned', updated_at = %s
            WHERE id IN (SELECT id FROM {SR} WHERE status = 'received' ORDER BY random()
                         LIMIT 200)
            """,
            [now, now],
        )
        cursor.execute(
            f"""
            UPDATE {SR} SET forward_count = forward_count + 1, updated_at = %s,
                   department_id = 1 + department_id %% 6
            WHERE id IN (SELECT id FROM {SR} WHERE status IN {OPEN} ORDER BY random()
                         LIMIT 100)
            """,
            [now],
        )


def _floors(connection, filters, size):
    """The minimal SQL over the requests for the same numbers, timed like the rest."""
    from django.utils import timezone

    from requests_app import dashboard

    now = timezone.now()
    cur_start, cur_end = filters.range
    prev_start, prev_end = filters.previous().range
    params = {
        "cs": cur_start,
        "ce": cur_end,
        "ca": min(cur_end, now),
        "ps": prev_start,
        "pe": prev_end,
        "pa": min(prev_end, now),
        "size": dashboard.cell_size(12),
        "now": now,
    }

    def period(p):
        s, e, a = f"%({p}s)s", f"%({p}e)s", f"%({p}a)s"
        received = f"created_at >= {s} AND created_at < {e}"
        completed = f"status = 'completed' AND resolved_at >= {s} AND resolved_at < {e}"
        responded = f"first_response_at >= {s} AND first_response_at < {e}"
        res = "extract(epoch FROM resolved_at - created_at)"
        resp = "extract(epoch FROM first_response_at - created_at)"
        return f"""
            count(*) FILTER (WHERE {received}),
            count(*) FILTER (WHERE {received} AND duplicate_of_id IS NOT NULL),
            count(*) FILTER (WHERE {received} AND forward_count > 0),
            count(*) FILTER (WHERE {received} AND channel IN ('web', 'api')),
            count(*) FILTER (WHERE created_at < {a} AND (resolved_at >= {a}
                             OR (resolved_at IS NULL AND status IN {OPEN}))),
            count(*) FILTER (WHERE {completed}),
            count(*) FILTER (WHERE {completed} AND due_at IS NOT NULL),
            count(*) FILTER (WHERE {completed} AND resolved_at <= due_at),
            count(*) FILTER (WHERE {responded}),
            avg({resp}) FILTER (WHERE {responded}),
            avg({res}) FILTER (WHERE {completed}),
            percentile_cont(0.5) WITHIN GROUP (ORDER BY {resp}) FILTER (WHERE {responded}),
            percentile_cont(0.5) WITHIN GROUP (ORDER BY {res}) FILTER (WHERE {completed})
        """

    kpis = f"SELECT {period('c')}, {period('p')} FROM {SR}"
    costs = f"""
        SELECT sum(round(w.cost / (SELECT count(*) FROM {SR} m
                                   WHERE m.work_order_id = r.work_order_id), 4))
               FILTER (WHERE r.created_at >= %(cs)s),
               sum(round(w.cost / (SELECT count(*) FROM {SR} m
                                   WHERE m.work_order_id = r.work_order_id), 4))
               FILTER (WHERE r.created_at < %(cs)s)
        FROM {SR} r JOIN requests_app_workorder w ON w.id = r.work_order_id
        WHERE r.created_at >= %(ps)s AND r.created_at < %(ce)s AND w.cost IS NOT NULL
    """
    surveys = """
        SELECT avg(rating) FILTER (WHERE answered_at >= %(cs)s),
               count(*) FILTER (WHERE is_fixed AND answered_at >= %(cs)s),
               count(is_fixed) FILTER (WHERE answered_at >= %(cs)s),
               avg(rating) FILTER (WHERE answered_at < %(cs)s),
               count(*) FILTER (WHERE is_fixed AND answered_at < %(cs)s),
               count(is_fixed) FILTER (WHERE answered_at < %(cs)s)
        FROM surveys_survey WHERE answered_at >= %(ps)s AND answered_at < %(ce)s
    """
    cells = (
        f"FROM {SR} WHERE created_at >= %(cs)s AND created_at < %(ce)s "
        "AND lat IS NOT NULL AND lng IS NOT NULL GROUP BY 1, 2"
    )
    grid = "SELECT floor(lat / %(size)s), floor(lng / %(size)s), count(*) "
    statements = {
        "KPIs": [kpis, costs, surveys],
        "grid count": [grid + cells],
        "grid overdue": [
            grid + f", count(*) FILTER (WHERE (status IN {OPEN} AND due_at < %(now)s) "
            "OR resolved_at > due_at) " + cells
        ],
        "grid median": [
            grid + ", percentile_cont(0.5) WITHIN GROUP (ORDER BY "
            "extract(epoch FROM resolved_at - created_at)) "
            "FILTER (WHERE status = 'completed' AND resolved_at IS NOT NULL) " + cells
        ],
    }

    def run(sqls):
        with connection.cursor() as cursor:
            for sql in sqls:
                cursor.execute(sql, params)
                cursor.fetchall()

    repeat = 11 if size < 5_000_000 else 7
    return {name: _timed(lambda sqls=sqls: run(sqls), repeat) for name, sqls in statements.items()}


if __name__ == "__main__":
    main()
