"""Open311 GET requests.json at 100k+ stored requests (PostgreSQL): p50/p95 per query shape.

    .venv/bin/python bench/open311_requests.py [--requests 150000] [--runs 30]
        [--db civicdesk_bench_open311] [--keep] [--reuse]

Builds a throwaway database (civicdesk_bench_open311, or --db) with requests spread over
two years across six categories and every status, a few hidden, with public comments,
internal notes, status history and photo rows; then times the whole Django request
(middleware, view, queries, serialisation) for the filters clients use, each returning up
to 1,000 rows.
Prints figures; asserts nothing. Client and server share this machine's cores, so next to
the wall-clock times it prints CPU times, which other work on the machine disturbs less:
this process's (Django's, median) and the PostgreSQL backend's (mean per request).
--keep leaves the database in place afterwards and --reuse times one left so, without
filling it again (a fill of 10M takes a while): for profiling, or several runs.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DB = "civicdesk_bench_open311"
# Tracking numbers in the real alphabet, so that lookups by id normalise like real ones.
ALPHABET = "23456789ABCDEFGHJKMNPQRSTWXYZ"
CATEGORIES = ["pothole", "sidewalk", "streetlight", "graffiti", "trash", "tree"]


def psql(sql):
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", sql], check=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=150_000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--db", default=DEFAULT_DB)
    parser.add_argument("--keep", action="store_true", help="do not drop the database at the end")
    parser.add_argument("--reuse", action="store_true", help="time a database kept earlier")
    args = parser.parse_args()
    DB = args.db

    if not args.reuse:
        psql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        psql(f"CREATE DATABASE {DB}")
    os.environ.update(
        DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{DB}",
        # Production settings: DEBUG would record every query and slow the figures down.
        DEBUG="0",
        SECRET_KEY="bench-" + "x" * 44,
        ALLOWED_HOSTS="127.0.0.1",
        SECURE_SSL_REDIRECT="0",
        CIVICDESK_VAR_DIR="/tmp/civicdesk-bench-var",
        LOG_LEVEL="WARNING",
    )
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "civicdesk.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.utils import timezone

    from requests_app.models import Department, ServiceCategory, ServiceRequest

    try:
        if args.reuse:
            print(f"(reusing {DB}: {ServiceRequest.objects.count():,} requests)")
        else:
            call_command("migrate", verbosity=0)
            department = Department.objects.create(name="Streets", slug="streets")
            category_ids = [
                ServiceCategory.objects.create(
                    code=code,
                    name=code.title(),
                    group="Streets",
                    department=department,
                    sla_hours=72,
                ).pk
                for code in CATEGORIES
            ]
            _fill(connection, category_ids, department.pk, args.requests)

        client = Client(HTTP_HOST="127.0.0.1")
        now = timezone.now()
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT tracking_number FROM requests_app_servicerequest "
                "WHERE is_public ORDER BY random() LIMIT 50"
            )
            ids = ",".join(row[0] for row in cursor.fetchall())
        year_ago = (now - timezone.timedelta(days=365)).isoformat()
        half_year_ago = (now - timezone.timedelta(days=182)).isoformat()
        week_ago = (now - timezone.timedelta(days=7)).strftime("%Y-%m-%d %H:%M:%S")
        shapes = [
            ("default (90 days)", "requests.json", {}),
            (
                "service_code + status=open",
                "requests.json",
                {"service_code": "pothole,trash", "status": "open"},
            ),
            (
                "start_date/end_date (6 months)",
                "requests.json",
                {"start_date": year_ago, "end_date": half_year_ago},
            ),
            ("updated_after (7 days)", "requests.json", {"updated_after": week_ago}),
            (
                "page 3 of 90 days, page_size 500",
                "requests.json",
                {"page": "3", "page_size": "500"},
            ),
            ("extensions=true", "requests.json", {"extensions": "true"}),
            ("XML", "requests.xml", {}),
            ("50 service_request_ids", "requests.json", {"service_request_id": ids}),
        ]
        print(f"(load average {_load_average()})")
        print(
            f"\n{'query':<34} {'rows':>5} {'p50':>9} {'p95':>9} {'CPU p50':>9} {'PG CPU':>8} "
            f"{'bytes':>10}"
        )
        for label, path, params in shapes:
            timings, cpu, rows, size = [], [], 0, 0
            client.get(f"/open311/v2/{path}", params)  # warm caches; not counted
            backend = _backend_pid(connection)
            backend_started = _backend_cpu_ms(backend)
            for _ in range(args.runs):
                started, started_cpu = time.perf_counter(), time.process_time()
                response = client.get(f"/open311/v2/{path}", params)
                timings.append((time.perf_counter() - started) * 1000)
                # This process's CPU: Django's share, which other work on the machine
                # slows less than it slows the wall-clock figure.
                cpu.append((time.process_time() - started_cpu) * 1000)
                assert response.status_code == 200, response.content[:300]
                size = len(response.content)
                rows = (
                    response.content.count(b"<request>")
                    if path.endswith("xml")
                    else (response.content.count(b'"service_request_id"'))
                )
            # The database server's CPU, a mean: the kernel counts it in 10 ms ticks.
            backend_cpu = (_backend_cpu_ms(backend) - backend_started) / args.runs
            if _backend_pid(connection) != backend:
                backend_cpu = float("nan")  # the connection was replaced along the way
            timings.sort()
            p95 = timings[min(len(timings) - 1, int(0.95 * len(timings)))]
            print(
                f"{label:<34} {rows:>5} {statistics.median(timings):>7.1f}ms {p95:>7.1f}ms "
                f"{statistics.median(cpu):>7.1f}ms {backend_cpu:>6.1f}ms {size:>10,}"
            )
        print(f"(load average {_load_average()})")
        with connection.cursor() as cursor:
            cursor.execute(
                "EXPLAIN ANALYZE SELECT id FROM requests_app_servicerequest WHERE is_public AND "
                "created_at >= now() - interval '90 days' ORDER BY created_at DESC, id DESC "
                "LIMIT 1000"
            )
            plan = "\n  ".join(r[0] for r in cursor.fetchall())
        print(f"\nPlan of the default window (ids only):\n  {plan}")
    finally:
        connection.close()
        if not args.keep:
            psql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")


def _backend_pid(connection):
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def _backend_cpu_ms(pid):
    """CPU time of a PostgreSQL backend on this machine, user and system, in ms."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")  # a server elsewhere
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def _load_average():
    return " ".join(f"{load:.2f}" for load in os.getloadavg())


def _fill(connection, category_ids, department_id, count):
    """Requests over two years, one in 50 hidden, a third closed; then their satellites."""
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO requests_app_servicerequest (
                tracking_number, category_id, department_id, description, lat, lng, address,
                channel, status, priority, forward_count, close_reason, is_public,
                reporter_name, reporter_email, reporter_phone, reporter_device_id,
                reporter_account_id, address_id, import_source, external_id, language,
                created_at, updated_at, expected_at, sla_paused_seconds,
                duplicate_confirmed, intake_processed_at)
            SELECT 'CD-22' || substr(%s, 1 + (i / 20511149) %% 29, 1)
                   || substr(%s, 1 + (i / 707281) %% 29, 1)
                   || '-' || substr(%s, 1 + (i / 24389) %% 29, 1)
                   || substr(%s, 1 + (i / 841) %% 29, 1) || substr(%s, 1 + (i / 29) %% 29, 1)
                   || substr(%s, 1 + i %% 29, 1),
                   (%s::bigint[])[1 + i %% %s], %s,
                   'Benchmark request number ' || i || ', a deep hole by the curb',
                   42.3 + (i %% 1000) / 10000.0, -71.1 + (i %% 777) / 10000.0,
                   i || ' Main St', 'web',
                   (ARRAY['received', 'assigned', 'in_progress', 'scheduled', 'completed',
                          'closed'])[1 + i %% 6],
                   2, 0, '', i %% 50 <> 0, 'Resident ' || i, 'r' || i || '@example.org', '',
                   '', '', '', '', '', 'en',
                   now() - interval '730 days' * (i::float8 / %s),
                   now() - interval '730 days' * (i::float8 / %s) + (i %% 20) * interval '1 day',
                   now() - interval '730 days' * (i::float8 / %s) + interval '3 days',
                   0, false, now()
            FROM generate_series(1, %s) AS i
            """,
            [*[ALPHABET] * 6, category_ids, len(category_ids), department_id, *[count] * 4],
        )
        # A public comment on every third request, an internal note on every fifth, a
        # status change on every second, a photo on every fourth.
        cursor.execute(
            """
            INSERT INTO requests_app_comment (request_id, author_label, text, is_public, created_at)
            SELECT id, 'Streets', 'Crew scheduled for next week', true,
                   created_at + interval '1 hour'
            FROM requests_app_servicerequest WHERE id % 3 = 0
            UNION ALL
            SELECT id, 'Streets', 'internal', false, created_at + interval '2 hours'
            FROM requests_app_servicerequest WHERE id % 5 = 0
            """
        )
        cursor.execute(
            """
            INSERT INTO requests_app_history (request_id, at, actor_label, action, field,
                old_value, new_value, note, is_public)
            SELECT id, created_at + interval '30 minutes', 'System', 'status', 'status',
                'received', 'assigned', '', true
            FROM requests_app_servicerequest WHERE id % 2 = 0
            """
        )
        cursor.execute(
            """
            INSERT INTO requests_app_photo (id, request_id, kind, image, thumbnail, width,
                height, is_public, uploaded_at)
            SELECT gen_random_uuid(), id, 'citizen', 'photos/x.jpg', 'photos/x-thumb.jpg',
                800, 600, true, created_at
            FROM requests_app_servicerequest WHERE id % 4 = 0
            """
        )
        cursor.execute("ANALYZE")
    print(
        f"(stored {count:,} requests and their comments, history and photos in "
        f"{time.perf_counter() - started:.1f}s)"
    )


if __name__ == "__main__":
    main()
