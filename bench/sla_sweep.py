"""SLA sweep cost with 1,000 requests due among 10k and among 1M open requests (PostgreSQL).

    .venv/bin/python bench/sla_sweep.py [--sizes 10000,1000000] [--rounds 7] [--mixed-rungs]
                                        [--profile] [--keep]

Builds a throwaway database (civicdesk_bench_sla), fills it with open requests whose next
escalation is in the future, then, round after round, makes 1,000 random ones due and times
(a) finding what is due — the indexed query the sweep starts with — and (b) the whole sweep
taking all 1,000 steps (history entry, staff email row to the department, reschedule each),
commit included. Prints the wall-time median and the CPU time spent here and in the
PostgreSQL backend; asserts nothing. Client and server share this machine's two cores, so
wall figures move with the load average (printed); the CPU figures move much less.

The machine runs with autovacuum off, so each round starts with a VACUUM of the tables the
sweep writes, standing in for the autovacuum a real server runs (outside the timing).

--profile adds, at the largest size, a few more rounds: one under cProfile (this process's
time by function), three timing each statement and the commit, and one printing every
statement's plan (auto_explain, sent back to this client as notices).
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DB = "civicdesk_bench_sla"
DUE = 1000
SWEPT_TABLES = (
    "requests_app_escalationclock",
    "requests_app_servicerequest",
    "requests_app_history",
    "notifications_notification",
)


def psql(sql):
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", sql], check=True)


class BackendCpu:
    """CPU seconds used so far by this connection's PostgreSQL backend (same machine).

    From /proc/<pid>/schedstat, in nanoseconds: /proc/<pid>/stat counts clock ticks (10
    ms here), as coarse as the figure it would measure.
    """

    def __init__(self, connection):
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            pid = cursor.fetchone()[0]
        self.schedstat, self.stat = Path(f"/proc/{pid}/schedstat"), Path(f"/proc/{pid}/stat")
        self.tick = os.sysconf("SC_CLK_TCK")

    def __call__(self):
        try:
            return int(self.schedstat.read_text().split()[0]) / 1e9
        except (OSError, ValueError, IndexError):
            pass
        try:
            fields = self.stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")  # the server is on another machine
        return (int(fields[11]) + int(fields[12])) / self.tick


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,1000000")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--keep", action="store_true", help="leave the database for a look")
    parser.add_argument(
        "--mixed-rungs",
        action="store_true",
        help="due requests on random rungs of the default ladder (a third raise priority) "
        "rather than all on the first",
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    _make_due.mixed = args.mixed_rungs

    psql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    psql(f"CREATE DATABASE {DB}")
    os.environ.update(
        DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{DB}",
        # Production settings: DEBUG would record every query and slow the figures down.
        DEBUG="0",
        SECRET_KEY="bench-" + "x" * 44,
        ALLOWED_HOSTS="127.0.0.1",
        CIVICDESK_VAR_DIR="/tmp/civicdesk-bench-var",
        LOG_LEVEL="WARNING",
    )
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "civicdesk.settings")
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection

    from requests_app.models import Department, ServiceCategory, StaffProfile, StaffRole
    from requests_app.sla import sla_sweep

    call_command("migrate", verbosity=0)
    # Every step emails the department, as when a request has no assignee or crew yet.
    department = Department.objects.create(
        name="Streets", slug="streets", email="streets@city.example"
    )
    category = ServiceCategory.objects.create(
        code="pothole", name="Pothole", group="Streets", department=department, sla_hours=72
    )
    director = get_user_model().objects.create(username="director", email="director@city.example")
    StaffProfile.objects.create(user=director, role=StaffRole.DIRECTOR)
    connection.ensure_connection()
    backend_cpu = BackendCpu(connection)
    print(
        f"{'open requests':>14} {'find due p50':>13} {'sweep p50':>10} {'sweep p95':>10} "
        f"{'CPU here':>9} {'CPU in PG':>10} {'load':>5}   (sweep of {DUE:,} steps; CPU: means)"
    )
    inserted = 0
    for size in sizes:
        _fill(connection, category.pk, department.pk, inserted, size - inserted)
        inserted = size
        find, wall, here, there = [], [], [], []
        for _round in range(args.rounds):
            now = _make_due(connection)
            find.append(_find_due_ms(now))
            db_before, cpu_before = backend_cpu(), time.process_time()
            started = time.perf_counter()
            taken = sla_sweep(now=now)
            wall.append((time.perf_counter() - started) * 1000)
            here.append((time.process_time() - cpu_before) * 1000)
            there.append((backend_cpu() - db_before) * 1000)
            if taken != DUE:
                raise SystemExit(f"the sweep took {taken} steps, not {DUE}")
        wall.sort()
        print(
            f"{size:>14,} {statistics.median(find):>11.2f}ms {statistics.median(wall):>8.0f}ms "
            f"{wall[round(0.95 * (len(wall) - 1))]:>8.0f}ms "
            f"{statistics.fmean(here):>7.0f}ms {statistics.fmean(there):>8.0f}ms "
            f"{os.getloadavg()[0]:>5.1f}   (runs: {', '.join(f'{w:.0f}' for w in wall)} ms)"
        )
    if args.profile:
        _profile(connection, sla_sweep)
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN {_FIND_DUE_SQL}", [_make_due.now])
        print("\nPlan of the find-due query:\n  " + "\n  ".join(r[0] for r in cursor.fetchall()))
    connection.close()
    if not args.keep:
        psql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")


# The query the sweep starts with (see sla._lock_due), without the row locks.
_FIND_DUE_SQL = (
    "SELECT request_id, level FROM requests_app_escalationclock "
    "WHERE next_at <= %s ORDER BY next_at LIMIT 1000"
)


def _find_due_ms(now, repeat=15):
    from django.db import connection

    runs = []
    with connection.cursor() as cursor:
        for _ in range(repeat):
            started = time.perf_counter()
            cursor.execute(_FIND_DUE_SQL, [now])
            cursor.fetchall()
            runs.append((time.perf_counter() - started) * 1000)
    return statistics.median(runs)


def _make_due(connection):
    """Vacuum what the last round wrote, then put DUE random open requests past their next
    step (back at the start of the ladder, or on a random rung with --mixed-rungs); the
    rest stay days in the future."""
    from django.utils import timezone

    for table in SWEPT_TABLES:
        with connection.cursor() as cursor:
            cursor.execute(f"VACUUM (ANALYZE) {table}")
    now = _make_due.now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE requests_app_escalationclock "
            "SET level = CASE WHEN %s THEN floor(random() * 3)::int ELSE 0 END, next_at = %s "
            "WHERE request_id IN (SELECT request_id FROM requests_app_escalationclock "
            "ORDER BY random() LIMIT %s)",
            [_make_due.mixed, now - timezone.timedelta(minutes=5), DUE],
        )
    return now


def _profile(connection, sla_sweep):
    """Three more rounds: one under cProfile (where this process spends its time), three
    with each statement's wall time, and one with every statement's plan (auto_explain,
    sent back to this client as notices; statements run many times — the foreign-key
    checks — are summed up rather than printed each time)."""
    import cProfile
    import pstats
    import re

    now = _make_due(connection)
    profiler = cProfile.Profile()
    profiler.runcall(sla_sweep, now=now)
    print("\nWhere this process spends the sweep (cProfile, by own time):")
    pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(25)

    timings = {}

    def timed(execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            statement = " ".join(sql.split())[:110]
            timings.setdefault(statement, []).append((time.perf_counter() - started) * 1000)

    # The commit runs the foreign-key checks of the rows written (Django makes them
    # deferred) before it flushes the WAL.
    commit = connection._commit

    def timed_commit():
        started = time.perf_counter()
        try:
            return commit()
        finally:
            timings.setdefault("COMMIT", []).append((time.perf_counter() - started) * 1000)

    connection._commit = timed_commit
    try:
        for _round in range(3):
            now = _make_due(connection)
            with connection.execute_wrapper(timed):
                sla_sweep(now=now)
    finally:
        del connection._commit
    print("\nStatements of the sweep (wall ms, median of 3 rounds, in order):")
    for statement, runs in timings.items():
        print(f"  {statistics.median(runs):7.1f} ms  {statement}")

    notices = []
    connection.connection.add_notice_handler(
        lambda diagnostic: notices.append(diagnostic.message_primary)
    )
    now = _make_due(connection)
    with connection.cursor() as cursor:
        cursor.execute("LOAD 'auto_explain'")
        cursor.execute(
            "SET auto_explain.log_min_duration = 0; SET auto_explain.log_analyze = on; "
            "SET auto_explain.log_buffers = on; SET auto_explain.log_wal = on; "
            "SET auto_explain.log_timing = on; SET auto_explain.log_nested_statements = on; "
            "SET auto_explain.log_triggers = on; SET auto_explain.log_level = notice; "
            "SET client_min_messages = notice"
        )
    sla_sweep(now=now)
    with connection.cursor() as cursor:
        cursor.execute("SET auto_explain.log_min_duration = -1")
    repeated = {}
    print("\nPlans (auto_explain):")
    for notice in notices:
        duration, text = re.match(
            r"duration: ([\d.]+) ms.*?Query Text: ([^\n]*)", notice, re.S
        ).groups()
        if text.startswith("SELECT 1 FROM ONLY"):  # a foreign-key check
            runs = repeated.setdefault(text, [])
            runs.append(float(duration))
            continue
        print("  " + re.sub(r"'\{[^}]{200,}\}'", "'{…}'", notice).replace("\n", "\n  "))
    for text, runs in repeated.items():
        print(f"  {len(runs):,} × {sum(runs):.1f} ms in all: {text}")


def _fill(connection, category_id, department_id, offset, count):
    """Open requests with their next escalation days ahead, inserted in one statement."""
    if count <= 0:
        return
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO requests_app_servicerequest (
                tracking_number, category_id, department_id, description, lat,
                lng, address, channel, status, priority, forward_count,
                close_reason, is_public, reporter_name, reporter_email,
                reporter_phone, language, created_at, updated_at, due_at,
                at_risk_at, sla_paused_seconds, duplicate_confirmed, intake_processed_at,
                reporter_device_id, reporter_account_id, address_id,
                import_source, external_id)
            SELECT 'B-' || i, %s, %s, 'bench', 42.3 + (i %% 1000) / 10000.0, -71.1, '', 'web',
                   'assigned', 2, 0, '', true, '', '', '', 'en', now(), now(),
                   now() + interval '3 days', now() + interval '2 days', 0, false,
                   now(), '', '', '', 'bench', i::text
            FROM generate_series(%s, %s) AS i
            """,
            [category_id, department_id, offset + 1, offset + count],
        )
        cursor.execute(
            """
            INSERT INTO requests_app_escalationclock (request_id, level, next_at)
            SELECT id, 0, created_at + interval '2 days' + (id % 1000) * interval '1 minute'
            FROM requests_app_servicerequest
            WHERE id > (SELECT coalesce(max(request_id), 0) FROM requests_app_escalationclock)
            """
        )
        cursor.execute("VACUUM (ANALYZE) requests_app_servicerequest")
        cursor.execute("VACUUM (ANALYZE) requests_app_escalationclock")
    print(f"  (inserted {count:,} open requests in {time.perf_counter() - started:.1f}s)")


if __name__ == "__main__":
    main()
