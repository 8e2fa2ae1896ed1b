"""Dashboard, heat map and export cost at 100k and 1M requests (PostgreSQL).

    .venv/bin/python bench/dashboard.py [--sizes 100000,1000000]

Builds a throwaway database (civicdesk_bench_dashboard), loads synthetic requests with COPY
(a year of history, 6 departments, 24 categories, a mix of statuses, channels, SLA outcomes),
then times, as a director sees them:

- the KPIs of the last 30 days (both periods, every figure) next to the one minimal SQL
  statement that counts and takes a median over the same rows;
- the heat-map grid of the whole service area at zoom 12, next to its bare GROUP BY;
- the streamed CSV export of the last 30 days: rows per second and peak Python memory.

Prints figures; asserts nothing. Client and server share this machine's cores.
"""

import argparse
import os
import random
import statistics
import subprocess
import sys
import time
import tracemalloc
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DB = "civicdesk_bench_dashboard"
PSQL = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc"]


def _timed(fn, repeat=5):
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - started) * 1000)
    return statistics.median(runs)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100000,1000000")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    subprocess.run([*PSQL, f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)"], check=True)
    subprocess.run([*PSQL, f"CREATE DATABASE {DB}"], check=True)
    os.environ.update(
        DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{DB}",
        DEBUG="1",
        CIVICDESK_VAR_DIR="/tmp/civicdesk-bench-var",
        LOG_LEVEL="WARNING",
    )
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "civicdesk.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from requests_app import dashboard, exports
    from requests_app.access import visible_requests
    from requests_app.models import Department, ServiceCategory, StaffRole
    from tests.factories import staff_user

    call_command("migrate", verbosity=0)
    departments = [
        Department.objects.create(name=f"Department {d}", slug=f"d{d}") for d in range(6)
    ]
    categories = [
        ServiceCategory.objects.create(
            code=f"c{c}",
            name=f"Category {c}",
            group=f"Group {c % 4}",
            department=departments[c % 6],
            sla_hours=24 * (1 + c % 5),
        )
        for c in range(24)
    ]
    director = staff_user("bench-director", StaffRole.DIRECTOR)
    requests = visible_requests(director)
    filters = dashboard.Filters.default()
    start, end = filters.range
    bbox = (-71.19, 42.23, -70.99, 42.40)
    size_deg = dashboard.cell_size(12)

    print(
        f"{'requests':>10} {'KPIs':>9} {'min SQL':>9} {'grid z12':>9} {'min SQL':>9}"
        f" {'breakdowns':>11} {'CSV rows':>9} {'rows/s':>9} {'peak MB':>8}"
    )
    loaded = 0
    for size in sizes:
        _copy(connection, categories, loaded, size - loaded)
        loaded = size
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE requests_app_servicerequest")

        kpi_ms = _timed(lambda: dashboard.kpis(requests, filters))

        def minimal_kpi():
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY "
                    "extract(epoch FROM resolved_at - created_at)) "
                    "FROM requests_app_servicerequest WHERE created_at >= %s AND created_at < %s",
                    [start, end],
                )
                cursor.fetchall()

        min_kpi_ms = _timed(minimal_kpi)
        grid_ms = _timed(lambda: dashboard.grid(requests, filters, bbox=bbox, zoom=12))

        def minimal_grid():
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT floor(lat / %s), floor(lng / %s), count(*) "
                    "FROM requests_app_servicerequest WHERE created_at >= %s AND created_at < %s "
                    "GROUP BY 1, 2",
                    [size_deg, size_deg, start, end],
                )
                cursor.fetchall()

        min_grid_ms = _timed(minimal_grid)
        breakdown_ms = _timed(
            lambda: [dashboard.breakdown(requests, filters, d) for d in dashboard.DIMENSIONS],
            repeat=3,
        )

        export_rows = filters.apply(requests)
        columns = exports.columns_for(director)
        started = time.perf_counter()
        written = sum(1 for _ in exports.csv_lines(export_rows, columns)) - 1
        seconds = time.perf_counter() - started
        tracemalloc.start()
        for _ in exports.csv_lines(export_rows, columns):
            pass
        peak = tracemalloc.get_traced_memory()[1] / 1e6
        tracemalloc.stop()
        print(
            f"{size:>10,} {kpi_ms:>7.0f}ms {min_kpi_ms:>7.0f}ms {grid_ms:>7.0f}ms"
            f" {min_grid_ms:>7.0f}ms {breakdown_ms:>9.0f}ms {written:>9,}"
            f" {written / seconds:>9,.0f} {peak:>8.1f}"
        )
    connection.close()
    subprocess.run([*PSQL, f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)"], check=True)


def _copy(connection, categories, offset, count):
    """A year of synthetic requests, streamed into the table with COPY."""
    from django.utils import timezone

    if count <= 0:
        return
    rng = random.Random(offset)
    now = timezone.now()
    columns = (
        "tracking_number, category_id, department_id, description, lat, lng, address, channel,"
        " status, priority, forward_count, close_reason, is_public, reporter_name,"
        " reporter_email, reporter_phone, reporter_device_id, reporter_account_id, address_id,"
        " import_source, external_id, language, created_at, updated_at, first_response_at,"
        " resolved_at, due_at, sla_paused_seconds, escalation_level, duplicate_confirmed,"
        " intake_processed_at"
    )
    channels = ["web"] * 5 + ["phone"] * 3 + ["api", "email", "walk_in"]
    started = time.perf_counter()
    with connection.cursor() as cursor:
        with cursor.connection.cursor().copy(
            f"COPY requests_app_servicerequest ({columns}) FROM STDIN"
        ) as copy:
            for i in range(offset, offset + count):
                category = categories[i % len(categories)]
                created = now - timedelta(seconds=rng.uniform(0, 365 * 86400))
                due = created + timedelta(hours=category.sla_hours)
                age = (now - created).total_seconds()
                response = created + timedelta(seconds=min(age, rng.expovariate(1 / 20000)))
                resolved = created + timedelta(hours=rng.expovariate(1 / category.sla_hours))
                if resolved < now and rng.random() < 0.9:
                    status = "completed"
                else:
                    status, resolved = "in_progress", None
                copy.write_row(
                    (
                        f"B-{i}",
                        category.pk,
                        category.department_id,
                        "synthetic",
                        42.23 + rng.random() * 0.17,
                        -71.19 + rng.random() * 0.2,
                        "",
                        rng.choice(channels),
                        status,
                        2,
                        1 if rng.random() < 0.05 else 0,
                        "",
                        True,
                        "",
                        "",
                        "",
                        "",
                        "",
                        "",
                        "",
                        "",
                        "en",
                        created,
                        now,
                        response,
                        resolved,
                        due,
                        0,
                        0,
                        False,
                        created,
                    )
                )
    print(f"  (copied {count:,} requests in {time.perf_counter() - started:.1f}s)")


if __name__ == "__main__":
    main()
