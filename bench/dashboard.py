"""Dashboard KPIs and heat map at 100k, 1M and 10M requests (PostgreSQL), next to the floor.

    .venv/bin/python bench/dashboard.py [--sizes 100000,1000000] [--ten-million]
                                        [--repeat 21] [--export] [--db NAME] [--keep]
    .venv/bin/python bench/dashboard.py --reuse --sizes 10000000 --db NAME   # timing only

For each size, in a throwaway database (--db, default civicdesk_bench_dashboard):

1. loads synthetic requests generated inside PostgreSQL (bench/dashboard_data.py: seasons,
   weekdays, hot spots, 24 categories in 6 departments, 9 districts, statuses, SLAs, work
   orders with costs, surveys), with the indexes of the models (migrate);
2. builds the rollups (rollups_refresh, first run: a full build) and times it, then changes
   1,000 requests the way a busy minute does and times the incremental refresh (what the
   beat task does every minute: it must take well under a minute);
3. times, as a director sees them, with production settings (DEBUG off), p50 and p95 in ms
   plus the mean CPU time per call of this process and of its PostgreSQL backend:
   - the KPIs of the last 30 days and the 30 before (every figure), with none, one and two
     filters;
   - the heat map at zoom 12 (the whole city) for each metric, as a service call and as
     grid.json through the test client; at zoom 14; under two filters; a square's details;
   - the breakdowns, the weekly trend, the hotspots, the dashboard page, the public
     transparency page;
   - the floor: the minimal SQL over the requests table that computes the same numbers
     (one scan with FILTERed aggregates and percentile_cont for every KPI of both periods,
     plus the work-order cost shares and the surveys; for the grid one GROUP BY per metric),
     and the ratio of our p95 to the floor's p95. Where the dashboard reads rollups, a
     second floor ("rollup floor"): the minimal SQL over the rollup tables for the same
     numbers, which shows what the Python around the queries costs.
   Every figure is computed as the first view after a refresh does (the dashboard keeps
   them until the next refresh: dashboard._once_per_refresh); a last section shows views
   after that;
4. with --export: the worker's CSV export of the newest 1M requests (all of them at smaller
   sizes) in a process of its own: rows per second and peak resident memory;
5. drops the database (unless --keep or --reuse).

--reuse times a database kept by --keep again (steps 2 to 4, no load and build; each run
adds 1,200 requests through the busy-minute changes). Prints figures; asserts nothing.
Client and server share this machine's cores: read the CPU columns next to the wall times.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DB = "civicdesk_bench_dashboard"
PSQL = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc"]
SR = "requests_app_servicerequest"
# The indexes the refresh reads by (to be added to the models; see bench/README.md).
OPEN = "('received', 'assigned', 'scheduled', 'in_progress', 'waiting')"


def _psql(sql, database="postgres"):
    subprocess.run([*PSQL, sql, "-d", database], check=True, stdout=subprocess.DEVNULL)


class _Clock:
    """Wall time, this process's CPU time and the PostgreSQL backend's CPU time of a call.

    Wall figures on a shared machine are noisy; CPU times are not (parallel query workers
    are not counted in the backend's: the bench sessions turn them off, see `_run`).
    """

    def __init__(self):
        self.backend = None
        self.tick = os.sysconf("SC_CLK_TCK")

    def attach(self, connection):
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            self.backend = cursor.fetchone()[0]

    def backend_cpu(self):
        try:
            with open(f"/proc/{self.backend}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except (OSError, TypeError):
            return float("nan")  # the server is on another machine
        return (int(fields[11]) + int(fields[12])) / self.tick

    def timed(self, fn, repeat):
        """(p50, p95, median CPU ms here, median CPU ms in PostgreSQL) over `repeat` runs."""
        started = time.perf_counter()
        fn()  # warm: plans, caches
        if time.perf_counter() - started > 1:  # seconds a call: the median of 5 will do
            repeat = min(repeat, 5)
        runs, cpu, db = [], [], []
        for _ in range(repeat):
            db_before, cpu_before = self.backend_cpu(), time.process_time()
            started = time.perf_counter()
            fn()
            runs.append((time.perf_counter() - started) * 1000)
            cpu.append((time.process_time() - cpu_before) * 1000)
            db.append((self.backend_cpu() - db_before) * 1000)
        runs.sort()
        p95 = runs[min(len(runs) - 1, round(0.95 * (len(runs) - 1)))]
        # Means for CPU: /proc counts in ticks of 10 ms, a median would round them away.
        return statistics.median(runs), p95, statistics.fmean(cpu), statistics.fmean(db)


CLOCK = _Clock()


def main():
    global DB
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--ten-million", action="store_true", help="add 10,000,000")
    parser.add_argument("--repeat", type=int, default=21)
    parser.add_argument("--keep", action="store_true", help="keep the last database")
    parser.add_argument("--export", action="store_true", help="also time the CSV export")
    parser.add_argument(
        "--reuse", action="store_true", help="time the kept database of one size again"
    )
    parser.add_argument("--db", default=DB, help=f"database name (default {DB})")
    parser.add_argument("--export-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    DB = args.db
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
    if args.export_child:
        return _export_child()
    from django.core.management import call_command

    call_command("collectstatic", "--no-input", verbosity=0)
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
    from django.core.cache import cache
    from django.core.cache.backends.dummy import DummyCache
    from django.db import connection
    from django.test import Client

    from requests_app import dashboard
    from requests_app.access import visible_requests
    from requests_app.models import ServiceRequest, StaffRole
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
    with connection.cursor() as cursor:
        # One process per query, so that its backend's CPU time is all of it (see _Clock).
        cursor.execute("SET max_parallel_workers_per_gather = 0")
    CLOCK.attach(connection)
    filters = dashboard.Filters.default()
    department = ref["departments"][0].pk
    district = ref["districts"][4].pk
    one = dashboard.Filters(filters.start, filters.end, department=department)
    two = dashboard.Filters(filters.start, filters.end, department=department, district=district)
    west, south, east, north = settings.SERVICE_AREA_BBOX
    city = f"{west},{south},{east},{north}"
    part = "-71.12,42.28,-71.03,42.34"  # a zoom-14 view
    floors = _floors(connection, filters, department, district)
    # Every figure as the first view after a refresh computes it: nothing kept in the cache
    # (dashboard._once_per_refresh), until the last section.
    dashboard.cache = DummyCache("none", {})

    print(
        f"  {'':40} {'p50':>7} {'p95':>7} {'cpu':>6} {'db cpu':>6}"
        f" {'floor p95':>9} {'ratio':>6} {'rollup floor':>12} {'ratio':>6}"
    )
    print(f"  {'(ms; cpu: mean per call, this process and its PostgreSQL backend)':}")
    for name, (p50, p95, cpu, db) in floors.items():
        print(f"  {'floor: ' + name:40} {p50:>7.1f} {p95:>7.1f} {cpu:>6.1f} {db:>6.1f}")

    def line(label, fn, floor=None, rollup_floor=None):
        p50, p95, cpu, db = CLOCK.timed(fn, repeat)
        ratios = ""
        for name in (floor, rollup_floor):
            if name:
                ratios += f" {floors[name][1]:>9.1f} {p95 / floors[name][1]:>5.2f}x"
            else:
                ratios += f" {'':>9} {'':>6}"
        print(f"  {label:40} {p50:>7.1f} {p95:>7.1f} {cpu:>6.1f} {db:>6.1f}{ratios}", flush=True)

    def page(path, query=""):
        return lambda: _ok(client.get(path + query))

    def grid_json(bbox, zoom, metric, extra=""):
        query = f"?bbox={bbox}&zoom={zoom}&metric={metric}{extra}"
        return lambda: _ok(client.get("/dashboard/grid.json" + query))

    print("  -- KPIs of the last 30 days and the 30 before (13 figures, both periods)")
    line("KPIs (service)", lambda: dashboard.kpis(requests, filters), "KPIs", "KPIs, rollups")
    line("KPIs, one filter (service)", lambda: dashboard.kpis(requests, one), "KPIs, one filter")
    line(
        "KPIs, two filters (service)",
        lambda: dashboard.kpis(requests, two),
        "KPIs, two filters",
        "KPIs, two filters, rollups",
    )
    print("  -- heat map: the whole city at zoom 12, a part of it at zoom 14")
    bbox = tuple(float(v) for v in city.split(","))
    for metric in ("count", "overdue", "median_resolution"):
        floor = f"grid {metric}"
        line(
            f"grid z12 {metric} (service)",
            lambda metric=metric: dashboard.grid(
                requests, filters, bbox=bbox, zoom=12, metric=metric
            ),
            floor,
            floor + ", rollups",
        )
        line(
            f"grid.json z12 {metric} (view)",
            grid_json(city, 12, metric),
            floor,
            floor + ", rollups",
        )
    line("grid.json z14 count (view)", grid_json(part, 14, "count"), "grid z14 count")
    two_query = f"&department={department}&district={district}"
    line(
        "grid.json z12 count, two filters",
        grid_json(city, 12, "count", two_query),
        "grid count, two filters",
    )
    size_14 = dashboard.cell_size(14)
    cell = f"?zoom=14&gy={int(42.31 // size_14)}&gx={int(-71.06 // size_14)}"
    line("cell.json z14 (view)", page("/dashboard/cell.json", cell), "cell z14")
    line("cell.json z14, two filters", page("/dashboard/cell.json", cell + two_query))
    print("  -- the rest of the dashboard page")
    for dimension in dashboard.DIMENSIONS:
        line(
            f"breakdown {dimension} (service)",
            lambda d=dimension: dashboard.breakdown(requests, filters, d),
        )
    line(
        "breakdown crew, two filters",
        lambda: dashboard.breakdown(requests, two, "crew"),
    )
    line("weekly trend (service)", lambda: dashboard.weekly_trend(requests, filters))
    line("hotspots (service)", lambda: dashboard.hotspots(requests, filters), "hotspots")
    line("hotspots, two filters", lambda: dashboard.hotspots(requests, two))
    line("dashboard page (view)", page("/dashboard/"))
    line("dashboard page, two filters", page("/dashboard/", "?" + two_query[1:]))
    print("  -- the public transparency page (public requests: not in the rollups)")
    public = dashboard.Filters(filters.end - timedelta(days=89), filters.end)  # ?days=90
    line(
        "transparency tables, 90 days",
        lambda: [
            dashboard.transparency_table(ServiceRequest.objects.public(), public, d)
            for d in dashboard.TRANSPARENCY_DIMENSIONS
        ],
        "transparency, 90 days",
    )
    line("transparency, 90 days (view)", page("/transparency/", "?days=90"))
    print("  -- after the first view since a refresh (kept until the next refresh)")
    dashboard.cache = cache
    line("dashboard page (view)", page("/dashboard/"))
    line("dashboard page, two filters", page("/dashboard/", "?" + two_query[1:]))
    for days in (30, 90, 365):
        line(f"transparency, {days} days (view)", page("/transparency/", f"?days={days}"))
    if export:
        _export(size)


def _export(size):
    """The worker's CSV export of (at most) the newest 1M requests, in a process of its own:
    rows per second, and the peak resident memory of that process."""
    env = dict(os.environ, BENCH_EXPORT_ROWS=str(min(size, 1_000_000)))
    result = subprocess.run(
        [sys.executable, __file__, "--export-child", "--db", DB],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    print("  " + result.stdout.strip().splitlines()[-1], flush=True)


def _rss_mb():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _export_child():
    import resource

    from django.db import connection
    from django.utils import timezone

    from requests_app import exports
    from requests_app.access import visible_requests
    from requests_app.dashboard import Filters
    from requests_app.models import ServiceRequest, StaffRole
    from tests.factories import staff_user

    rows = int(os.environ["BENCH_EXPORT_ROWS"])
    director = staff_user("bench-director", StaffRole.DIRECTOR)
    # The period holding the newest `rows` requests, as a director would choose it.
    since = ServiceRequest.objects.order_by("-created_at").values_list("created_at", flat=True)[
        rows - 1
    ]
    filters = Filters(start=timezone.localdate(since), end=Filters.default().end)
    requests = filters.apply(visible_requests(director))
    connection.ensure_connection()
    base = _rss_mb()
    cpu = time.process_time()
    started = time.perf_counter()
    with open(os.devnull, "w") as out:
        written = exports.write_export(requests, "csv", director, out)
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"CSV export (exports.write_export, the worker's): {written:,} rows in {seconds:.1f}s, "
        f"{written / seconds:,.0f} rows/s ({written / cpu:,.0f} per CPU second); peak RSS "
        f"{peak:.0f} MB (resident {base:.0f} MB when it started)"
    )


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
    CLOCK.attach(connection)
    refreshes = []
    for round_ in range(3):
        _busy_minute(connection, round_)
        db, cpu = CLOCK.backend_cpu(), time.process_time()
        started = time.perf_counter()
        result = rollups.rollups_refresh()
        refreshes.append(
            (
                time.perf_counter() - started,
                time.process_time() - cpu,
                CLOCK.backend_cpu() - db,
                result,
            )
        )
    idle = min(_seconds(rollups.rollups_refresh) for _ in range(3))
    seconds, cpu, db = (statistics.median(r[i] for r in refreshes) for i in range(3))
    looked_at = refreshes[-1][3].looked_at
    print(
        f"  refresh after 1,000 changed requests: {seconds:.1f}s (median of 3; CPU {cpu:.1f}s "
        f"here, {db:.1f}s in PostgreSQL; {looked_at:,} looked at); with nothing changed: "
        f"{idle:.2f}s"
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
                created_at, updated_at, due_at, sla_paused_seconds, duplicate_confirmed)
            SELECT '{stamp}-' || row_number() OVER (), category_id, department_id,
                   district_id, 'new', lat, lng, '', channel, 'received', 2, 0, '', true, '',
                   '', '', '', '', '', '', '', 'en', %s, %s, %s::timestamptz + interval '3 days',
                   0, false
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


def _floors(connection, filters, department, district):
    """The minimal SQL computing the same numbers, timed like the rest.

    The floor proper reads the requests table (and the work orders and surveys). Where the
    dashboard reads rollups, the same numbers are also computed by the minimal SQL over the
    rollup tables ("…, rollups"): that shows what the Python around the queries costs.
    """
    from django.utils import timezone

    from requests_app import dashboard
    from requests_app.rollups import CELL_RANKS, DAY_VALUES

    now = timezone.now()
    cur_start, cur_end = filters.range
    prev_start, prev_end = filters.previous().range
    size_14 = dashboard.cell_size(14)
    gy, gx = int(42.31 // size_14), int(-71.06 // size_14)
    params = {
        "cs": cur_start,
        "ce": cur_end,
        "ca": min(cur_end, now),
        "ps": prev_start,
        "pe": prev_end,
        "pa": min(prev_end, now),
        "size": dashboard.cell_size(12),
        "size14": size_14,
        "now": now,
        "dep": department,
        "dis": district,
        # Days, for the rollups.
        "cd": filters.start,
        "ed": filters.end,
        "pd": filters.previous().start,
        # The transparency page's 90 days.
        "ts": filters.range[1] - timedelta(days=90),
        # A zoom-14 view (as in _run) and one square of it.
        "s14": 42.28 - size_14,
        "n14": 42.34 + size_14,
        "w14": -71.12 - size_14,
        "e14": -71.03 + size_14,
        "cs14": gy * size_14,
        "cn14": (gy + 1) * size_14,
        "cw14": gx * size_14,
        "ce14": (gx + 1) * size_14,
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

    def kpis(where="TRUE"):
        r_where = where.replace("department_id", "r.department_id").replace(
            "district_id", "r.district_id"
        )
        return [
            f"SELECT {period('c')}, {period('p')} FROM {SR} WHERE {where}",
            f"""
            SELECT sum(round(w.cost / (SELECT count(*) FROM {SR} m
                                       WHERE m.work_order_id = r.work_order_id), 4))
                   FILTER (WHERE r.created_at >= %(cs)s),
                   sum(round(w.cost / (SELECT count(*) FROM {SR} m
                                       WHERE m.work_order_id = r.work_order_id), 4))
                   FILTER (WHERE r.created_at < %(cs)s)
            FROM {SR} r JOIN requests_app_workorder w ON w.id = r.work_order_id
            WHERE r.created_at >= %(ps)s AND r.created_at < %(ce)s AND w.cost IS NOT NULL
                  AND {r_where}
            """,
            f"""
            SELECT avg(rating) FILTER (WHERE answered_at >= %(cs)s),
                   count(*) FILTER (WHERE is_fixed AND answered_at >= %(cs)s),
                   count(is_fixed) FILTER (WHERE answered_at >= %(cs)s),
                   avg(rating) FILTER (WHERE answered_at < %(cs)s),
                   count(*) FILTER (WHERE is_fixed AND answered_at < %(cs)s),
                   count(is_fixed) FILTER (WHERE answered_at < %(cs)s)
            FROM surveys_survey s JOIN {SR} r ON r.id = s.request_id
            WHERE answered_at >= %(ps)s AND answered_at < %(ce)s AND {r_where}
            """,
        ]

    day = "requests_app_dayrollup"

    def kpis_rollups(where="grain = 'all'", open_now=None):
        sums = ", ".join(
            f"sum({v}) FILTER (WHERE day >= %(cd)s), sum({v}) FILTER (WHERE day < %(cd)s)"
            for v in DAY_VALUES
        )
        period = f"{where} AND day >= %(pd)s AND day <= %(ed)s"
        sqls = [f"SELECT {sums} FROM {day} WHERE {period}"]
        sqls += [
            f"SELECT day >= %(cd)s, h.key, sum(h.value::int) FROM {day}, jsonb_each_text({hist}) h "
            f"WHERE {period} GROUP BY 1, 2"
            for hist in ("resolution_hist", "response_hist")
        ]
        if open_now is None:  # open = received minus ended, over all days
            sqls.append(
                "SELECT sum(received - ended), sum(received - ended) FILTER (WHERE day < %(cd)s) "
                f"FROM {day} WHERE {where}"
            )
        else:  # the fine grain: open now among the facts, minus the days since
            sqls.append(open_now)
            sqls.append(f"SELECT sum(received - ended) FROM {day} WHERE {where} AND day >= %(cd)s")
        return sqls

    received = "created_at >= %(cs)s AND created_at < %(ce)s"
    cells = f"FROM {SR} WHERE {received} AND lat IS NOT NULL AND lng IS NOT NULL"
    grid = (
        "SELECT floor(lat / %(size)s), floor(lng / %(size)s), count(*) {} "
        + cells
        + " {} GROUP BY 1, 2"
    )
    overdue = (
        f", count(*) FILTER (WHERE (status IN {OPEN} AND due_at < %(now)s) OR resolved_at > due_at)"
    )
    median = (
        ", percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM resolved_at - "
        "created_at)) FILTER (WHERE status = 'completed' AND resolved_at IS NOT NULL)"
    )
    cell_grid = (
        "SELECT gy, gx, sum(received), sum(overdue) {} FROM requests_app_cellrollup "
        "WHERE grain = 'all' AND day >= %(cd)s AND day <= %(ed)s GROUP BY 1, 2"
    )
    in_square = (
        f"{received} AND lat >= %(cs14)s AND lat < %(cn14)s AND lng >= %(cw14)s AND lng < %(ce14)s"
    )
    two = "department_id = %(dep)s AND district_id = %(dis)s"
    done = "status = 'completed' AND resolved_at >= %(ts)s"
    statements = {
        "KPIs": kpis(),
        "KPIs, one filter": kpis("department_id = %(dep)s"),
        "KPIs, two filters": kpis(two),
        "KPIs, rollups": kpis_rollups(),
        "KPIs, two filters, rollups": kpis_rollups(
            "grain = 'fine' AND department = %(dep)s AND district = %(dis)s",
            f"SELECT count(*) FROM requests_app_requestfact WHERE ended_day IS NULL AND {two}",
        ),
        "grid count": [grid.format("", "")],
        "grid overdue": [grid.format(overdue, "")],
        "grid median_resolution": [grid.format(median, "")],
        "grid count, rollups": [cell_grid.format("")],
        "grid overdue, rollups": [cell_grid.format("")],
        "grid median_resolution, rollups": [
            cell_grid.format(", " + ", ".join(f"sum({r})" for r in CELL_RANKS))
        ],
        "grid z14 count": [
            f"SELECT floor(lat / %(size14)s), floor(lng / %(size14)s), count(*), "
            f"count(*) FILTER (WHERE (status IN {OPEN} AND due_at < %(now)s) "
            f"OR resolved_at > due_at) FROM {SR} WHERE {received} AND lat >= %(s14)s AND "
            "lat <= %(n14)s AND lng >= %(w14)s AND lng <= %(e14)s GROUP BY 1, 2"
        ],
        "grid count, two filters": [grid.format(overdue, "AND " + two)],
        "cell z14": [
            f"SELECT count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM "
            "first_response_at - created_at)) FILTER (WHERE first_response_at IS NOT NULL), "
            "percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM resolved_at - "
            "created_at)) FILTER (WHERE status = 'completed' AND resolved_at IS NOT NULL) "
            f"FROM {SR} WHERE {in_square}",
            f"SELECT category_id, count(*) FROM {SR} WHERE {in_square} GROUP BY 1 "
            "ORDER BY 2 DESC LIMIT 5",
        ],
        "transparency, 90 days": [
            f"""
            SELECT {key}_id,
                   count(*) FILTER (WHERE created_at >= %(ts)s),
                   count(*) FILTER (WHERE {done} AND due_at IS NOT NULL),
                   count(*) FILTER (WHERE {done} AND resolved_at <= due_at),
                   count(*) FILTER (WHERE first_response_at >= %(ts)s),
                   count(*) FILTER (WHERE {done}),
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM
                       first_response_at - created_at)) FILTER (WHERE first_response_at >= %(ts)s),
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM
                       resolved_at - created_at)) FILTER (WHERE {done})
            FROM {SR}
            WHERE is_public AND (created_at >= %(ts)s OR resolved_at >= %(ts)s
                                 OR first_response_at >= %(ts)s)
            GROUP BY 1
            """
            for key in ("category", "district")
        ],
        "hotspots": [
            "SELECT category_id, floor(lat * 1000 + 0.5), floor(lng * 1000 + 0.5), count(*), "
            f"count(*) FILTER (WHERE status IN {OPEN}) {cells} GROUP BY 1, 2, 3 "
            "HAVING count(*) >= 3"
        ],
    }

    def run(sqls):
        with connection.cursor() as cursor:
            for sql in sqls:
                cursor.execute(sql, params)
                cursor.fetchall()

    repeat = 11
    return {
        name: CLOCK.timed(lambda sqls=sqls: run(sqls), repeat) for name, sqls in statements.items()
    }


if __name__ == "__main__":
    main()
