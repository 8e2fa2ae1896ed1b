"""SLA sweep cost with 1,000 requests due among 10k and among 1M open requests (PostgreSQL).

    .venv/bin/python bench/sla_sweep.py [--sizes 10000,1000000]

Builds a throwaway database (civicdesk_bench_sla), fills it with open requests whose next
escalation is in the future plus 1,000 that are due, then times (a) finding what is due —
the indexed query the sweep starts with — and (b) the whole sweep taking all 1,000 steps
(history entry, staff email row to the department, reschedule each). Prints figures; asserts
nothing. Client and server share this machine's two cores.
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


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,1000000")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    subprocess.run(
        [
            "psql",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-qc",
            f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)",
        ],
        check=True,
    )
    subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", f"CREATE DATABASE {DB}"], check=True
    )
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
    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone

    from requests_app.models import Department, ServiceCategory, ServiceRequest
    from requests_app.sla import sla_sweep

    call_command("migrate", verbosity=0)
    # Every step emails the department, as when a request has no assignee or crew yet.
    department = Department.objects.create(
        name="Streets", slug="streets", email="streets@city.example"
    )
    category = ServiceCategory.objects.create(
        code="pothole", name="Pothole", group="Streets", department=department, sla_hours=72
    )
    print(
        f"{'open requests':>14} {'find due p50':>13} {'find due p95':>13} "
        f"{'full sweep (1,000 steps)':>25} {'per step':>9}"
    )
    inserted = 0
    for size in sizes:
        _fill(connection, category.pk, department.pk, inserted, size - inserted)
        inserted = size
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE requests_app_servicerequest")
        now = timezone.now()
        # Put exactly DUE requests past their next step; the rest stay in the future.
        ServiceRequest.objects.update(escalation_level=0)
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE requests_app_servicerequest SET next_escalation_at = %s "
                "WHERE id IN (SELECT id FROM requests_app_servicerequest ORDER BY random() "
                "LIMIT %s)",
                [now - timezone.timedelta(minutes=5), DUE],
            )
        find = []
        for _ in range(30):
            started = time.perf_counter()
            list(
                ServiceRequest.objects.filter(next_escalation_at__lte=now)
                .order_by("next_escalation_at")
                .values_list("pk", "escalation_level")[:500]
            )
            find.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        taken = 0
        while True:
            step = sla_sweep(now=now)
            taken += step
            if not step:
                break
        sweep_ms = (time.perf_counter() - started) * 1000
        find.sort()
        print(
            f"{size:>14,} {statistics.median(find):>11.2f}ms {find[int(0.95 * len(find))]:>11.2f}ms"
            f" {sweep_ms:>23.0f}ms {sweep_ms / max(taken, 1):>7.2f}ms   ({taken} steps)"
        )
    with connection.cursor() as cursor:
        cursor.execute(
            "EXPLAIN SELECT id, escalation_level FROM requests_app_servicerequest "
            "WHERE next_escalation_at <= now() ORDER BY next_escalation_at LIMIT 500"
        )
        print("\nPlan of the find-due query:\n  " + "\n  ".join(r[0] for r in cursor.fetchall()))
    connection.close()
    subprocess.run(
        [
            "psql",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-qc",
            f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)",
        ],
        check=True,
    )


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
                at_risk_at, next_escalation_at, sla_paused_seconds,
                escalation_level, duplicate_confirmed, intake_processed_at,
                reporter_device_id, reporter_account_id, address_id,
                import_source, external_id)
            SELECT 'B-' || i, %s, %s, 'bench', 42.3 + (i %% 1000) / 10000.0, -71.1, '', 'web',
                   'assigned', 2, 0, '', true, '', '', '', 'en', now(), now(),
                   now() + interval '3 days', now() + interval '2 days',
                   now() + interval '2 days' + (i %% 1000) * interval '1 minute', 0, 0, false,
                   now(), '', '', '', 'bench', i::text
            FROM generate_series(%s, %s) AS i
            """,
            [category_id, department_id, offset + 1, offset + count],
        )
    print(f"  (inserted {count:,} open requests in {time.perf_counter() - started:.1f}s)")


if __name__ == "__main__":
    main()
