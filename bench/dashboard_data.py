"""Synthetic 311 history for bench/dashboard.py, generated inside PostgreSQL.

One INSERT ... SELECT over generate_series per million rows: no row crosses the wire, so
10M requests load in minutes. The shape follows a mid-to-large US city:

- intake: a daily rate with seasons (potholes in spring, snow in winter), weekdays busier
  than weekends, most requests by day; the history is a year, or longer at ~8,000 a day
  (a city of NYC's size files about 3M service requests a year);
- 24 categories in 6 departments with their own shares, SLAs and resolution times;
- locations clustered around hot spots over a background, in 9 districts;
- channels: web, phone, the app (API), email, social media, walk-ins;
- statuses: most completed (log-normal resolution time, ~75 % inside the SLA), some closed
  without a fix, a few never finished, the recent ones still open;
- first responses (log-normal, median 1.5 h), forwards, duplicates that share the primary's
  work order, work orders with costs, crews, and satisfaction surveys.

Secondary indexes and foreign keys are dropped for the load and rebuilt after it.
"""

import math
import random
import time
from datetime import datetime, timedelta

CATEGORIES = [
    # code, name, group, department, share, SLA hours, median hours to resolve
    ("pothole", "Pothole", "Streets", 0, 11, 72, 40),
    ("streetlight", "Street light out", "Streets", 0, 8, 120, 70),
    ("sidewalk", "Sidewalk repair", "Streets", 0, 3, 720, 400),
    ("signal", "Traffic signal", "Streets", 0, 2, 24, 6),
    ("sign", "Damaged sign", "Streets", 0, 3, 168, 90),
    ("trash", "Missed trash pickup", "Sanitation", 1, 10, 24, 14),
    ("recycling", "Missed recycling", "Sanitation", 1, 5, 48, 20),
    ("bulk", "Bulk item pickup", "Sanitation", 1, 6, 120, 60),
    ("dumping", "Illegal dumping", "Sanitation", 1, 4, 72, 50),
    ("graffiti", "Graffiti", "Sanitation", 1, 5, 168, 80),
    ("tree", "Fallen tree", "Parks", 2, 3, 48, 20),
    ("pruning", "Tree pruning", "Parks", 2, 2, 720, 500),
    ("park", "Park maintenance", "Parks", 2, 2, 240, 120),
    ("playground", "Playground repair", "Parks", 2, 1, 240, 150),
    ("noise", "Noise complaint", "Code enforcement", 3, 6, 24, 8),
    ("parking", "Illegal parking", "Code enforcement", 3, 7, 12, 3),
    ("vehicle", "Abandoned vehicle", "Code enforcement", 3, 3, 168, 100),
    ("housing", "Housing conditions", "Code enforcement", 3, 3, 336, 200),
    ("rodent", "Rodent activity", "Health", 4, 3, 168, 90),
    ("food", "Restaurant complaint", "Health", 4, 1, 72, 40),
    ("snow", "Unshoveled sidewalk", "Streets", 0, 3, 24, 16),
    ("hydrant", "Leaking hydrant", "Water", 5, 2, 48, 24),
    ("sewer", "Sewer backup", "Water", 5, 2, 24, 10),
    ("water", "Water main break", "Water", 5, 1, 12, 5),
]
DEPARTMENTS = ["Streets", "Sanitation", "Parks", "Code enforcement", "Health", "Water"]
# Month weights (Jan..Dec) for categories that follow the seasons.
SEASONS = {
    "pothole": [1.3, 1.6, 2.2, 2.0, 1.2, 0.8, 0.6, 0.6, 0.7, 0.8, 0.9, 1.1],
    "snow": [3, 3, 1.5, 0.2, 0, 0, 0, 0, 0, 0, 0.5, 2.5],
    "tree": [0.8, 0.8, 1, 1, 1, 1.2, 1.5, 1.5, 1.3, 1.2, 0.9, 0.8],
    "noise": [0.6, 0.6, 0.8, 1, 1.2, 1.5, 1.7, 1.6, 1.2, 0.9, 0.7, 0.6],
}
CHANNELS = [("web", 35), ("phone", 28), ("api", 22), ("email", 6), ("social", 5), ("walk_in", 4)]
HOUR_WEIGHTS = [1, 1, 1, 1, 1, 2, 4, 7, 9, 10, 10, 10, 9, 9, 9, 9, 9, 8, 7, 6, 5, 4, 3, 2]
OPEN_STATES = ["assigned", "scheduled", "in_progress", "in_progress", "waiting"]
CLOSE_REASONS = ["duplicate", "not_city", "not_found", "no_action", "referred", "withdrawn"]
DISTRICT_ROWS = DISTRICT_COLS = 3
DAILY_CAP = 8000
TABLE = "requests_app_servicerequest"


def history_days(size: int) -> int:
    return max(365, math.ceil(size / DAILY_CAP))


def _lookup(weights, length=1000):
    """A table of `length` indexes in which index i appears in proportion to weights[i]."""
    total = sum(weights)
    table, acc = [], 0.0
    for i, w in enumerate(weights):
        acc += w
        while len(table) < round(acc / total * length):
            table.append(i)
    return table


def _index_definitions(cursor, table):
    cursor.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s "
        "AND indexname NOT IN (SELECT conname FROM pg_constraint WHERE contype IN ('p', 'u'))",
        [table],
    )
    indexes = cursor.fetchall()
    cursor.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = %s::regclass AND contype = 'f'",
        [table],
    )
    return indexes, cursor.fetchall()


def load(connection, *, size, days, bbox, seed=1, now=None, log=print):
    """Fill an empty, migrated database with `size` requests over `days` days.

    Returns the reference rows the benchmark needs (category ids, district ids...).
    """
    from django.utils import timezone

    from requests_app.models import Crew, Department, ServiceCategory
    from routing.models import District

    rng = random.Random(seed)
    now = timezone.localtime(now or timezone.now())
    west, south, east, north = bbox
    departments = [
        Department.objects.create(name=name, slug=name.lower().replace(" ", "-"))
        for name in DEPARTMENTS
    ]
    crews = [
        Crew.objects.create(name=f"{d.name} crew {n}", department=d)
        for d in departments
        for n in range(1, 4)
    ]
    categories = [
        ServiceCategory.objects.create(
            code=code, name=name, group=group, department=departments[dept], sla_hours=sla
        )
        for code, name, group, dept, _share, sla, _median in CATEGORIES
    ]
    districts = []
    dlat, dlng = (north - south) / DISTRICT_ROWS, (east - west) / DISTRICT_COLS
    for row in range(DISTRICT_ROWS):
        for col in range(DISTRICT_COLS):
            s, w = south + row * dlat, west + col * dlng
            ring = [[w, s], [w + dlng, s], [w + dlng, s + dlat], [w, s + dlat], [w, s]]
            districts.append(
                District.objects.create(
                    name=f"District {row * DISTRICT_COLS + col + 1}",
                    code=f"d{row * DISTRICT_COLS + col + 1}",
                    boundary={"type": "Polygon", "coordinates": [ring]},
                )
            )

    # Per-day intake weights (seasons come per category below, weekdays and growth here),
    # and per category a table of days so that seasonal categories cluster in their months.
    first_day = (now - timedelta(days=days)).date()
    day_weights = []
    for d in range(days):
        day = first_day + timedelta(days=d)
        weekday = 1.0 if day.weekday() < 5 else 0.55
        day_weights.append(weekday * (0.8 + 0.4 * d / days))
    span_lookup = {}
    for i, (code, *_rest) in enumerate(CATEGORIES):
        months = SEASONS.get(code)
        weights = [
            w * (months[(first_day + timedelta(days=d)).month - 1] if months else 1)
            for d, w in enumerate(day_weights)
        ]
        span_lookup[i] = _lookup(weights, 4000)
    day_table = [span_lookup[i] for i in range(len(CATEGORIES))]
    hours = _lookup(HOUR_WEIGHTS, 500)
    category_table = _lookup([c[4] for c in CATEGORIES], 1000)
    channel_table = _lookup([w for _c, w in CHANNELS], 100)
    hotspots = [
        (rng.uniform(south + 0.01, north - 0.01), rng.uniform(west + 0.01, east - 0.01))
        for _ in range(60)
    ]
    hotspot_table = _lookup([rng.paretovariate(1.2) for _ in hotspots], 1000)

    params = {
        "cat_table": category_table,
        "cat_ids": [c.pk for c in categories],
        "cat_depts": [c.department_id for c in categories],
        "cat_dept_index": [c[3] for c in CATEGORIES],
        "cat_sla": [c[5] for c in CATEGORIES],
        "cat_median": [c[6] for c in CATEGORIES],
        "day_table": day_table,
        "hours": hours,
        "channels": [CHANNELS[i][0] for i in channel_table],
        "hot_lat": [hotspots[i][0] for i in hotspot_table],
        "hot_lng": [hotspots[i][1] for i in hotspot_table],
        "district_ids": [d.pk for d in districts],
        "crew_ids": [c.pk for c in crews],
        "open_states": OPEN_STATES,
        "close_reasons": CLOSE_REASONS,
        "first_day": datetime.combine(first_day, datetime.min.time(), tzinfo=now.tzinfo),
        "now": now,
        "west": west,
        "south": south,
        "east": east,
        "north": north,
        "rows": DISTRICT_ROWS,
        "cols": DISTRICT_COLS,
    }
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit = off")
        cursor.execute("SET maintenance_work_mem = '512MB'")
        cursor.execute("SET max_parallel_maintenance_workers = 2")
        cursor.execute(f"SELECT setseed({(seed % 1000) / 1000})")
        indexes, foreign_keys = _index_definitions(cursor, TABLE)
        for name, _definition in foreign_keys:
            cursor.execute(f'ALTER TABLE {TABLE} DROP CONSTRAINT "{name}"')
        for name, _definition in indexes:
            cursor.execute(f'DROP INDEX "{name}"')
        chunk = 1_000_000
        for lo in range(1, size + 1, chunk):
            hi = min(size, lo + chunk - 1)
            cursor.execute(INSERT_REQUESTS, {**params, "lo": lo, "hi": hi})
            log(f"    {hi:>11,} requests ({time.perf_counter() - started:.0f}s)")
        cursor.execute(INSERT_WORK_ORDERS, {"crew_ids": params["crew_ids"]})
        cursor.execute(INSERT_SURVEYS, {"now": now})
        for seq_table in (TABLE, "requests_app_workorder", "surveys_survey"):
            cursor.execute(
                f"SELECT setval(pg_get_serial_sequence('{seq_table}', 'id'), "
                f"(SELECT coalesce(max(id), 1) FROM {seq_table}))"
            )
        log(f"    work orders and surveys ({time.perf_counter() - started:.0f}s)")
        for _name, definition in indexes:
            cursor.execute(definition)
        for name, definition in foreign_keys:
            cursor.execute(f'ALTER TABLE {TABLE} ADD CONSTRAINT "{name}" {definition}')
        log(f"    indexes and foreign keys ({time.perf_counter() - started:.0f}s)")
        cursor.execute(f"VACUUM (ANALYZE) {TABLE}")
        cursor.execute("ANALYZE requests_app_workorder")
        cursor.execute("ANALYZE surveys_survey")
    log(f"  loaded {size:,} requests over {days} days in {time.perf_counter() - started:.0f}s")
    return {
        "departments": departments,
        "categories": categories,
        "districts": districts,
        "crews": crews,
        "first_day": first_day,
    }


# u(k) is a uniform draw that depends only on the row number and k, so that a duplicate
# can tell whether its primary got a work order. The rest is random() (seeded).
INSERT_REQUESTS = """
WITH draws AS (
    SELECT i,
           1 + (%(cat_table)s::int[])[1 + floor(random() * 1000)::int] AS c,
           random() AS u_day, random() AS u_hour, random() AS u_sec,
           random() AS u_place, random() AS u1, random() AS u2, random() AS u3, random() AS u4,
           random() AS u_res1, random() AS u_res2, random() AS u_resp1, random() AS u_resp2,
           random() AS u_fate, random() AS u_state, random() AS u_chan, random() AS u_fwd,
           random() AS u_dup, random() AS u_crew
    FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS i
), placed AS (
    SELECT d.*,
           %(first_day)s::timestamptz
             + make_interval(days => (%(day_table)s::int[])[c][1 + floor(u_day * 4000)::int])
             + make_interval(hours => (%(hours)s::int[])[1 + floor(u_hour * 500)::int])
             + make_interval(secs => floor(u_sec * 3600)) AS created,
           CASE WHEN u_place < 0.7 THEN
                  (%(hot_lat)s::float8[])[1 + floor(u1 * 1000)::int]
                    + 0.006 * sqrt(-2 * ln(1 - u2)) * cos(2 * pi() * u3)
                ELSE %(south)s + u2 * (%(north)s - %(south)s) END AS lat0,
           CASE WHEN u_place < 0.7 THEN
                  (%(hot_lng)s::float8[])[1 + floor(u1 * 1000)::int]
                    + 0.008 * sqrt(-2 * ln(1 - u2)) * sin(2 * pi() * u3)
                ELSE %(west)s + u4 * (%(east)s - %(west)s) END AS lng0,
           (%(cat_median)s::int[])[c]
             * exp(0.9 * sqrt(-2 * ln(1 - u_res1)) * cos(2 * pi() * u_res2)) AS res_hours,
           1.5 * exp(1.3 * sqrt(-2 * ln(1 - u_resp1)) * cos(2 * pi() * u_resp2)) AS resp_hours,
           ((hashint8(i) & 2147483647) / 2147483648.0) AS u_wo
    FROM draws d
), fated AS (
    SELECT p.*,
           least(greatest(lat0, %(south)s), %(north)s - 1e-9) AS lat,
           least(greatest(lng0, %(west)s), %(east)s - 1e-9) AS lng,
           CASE WHEN u_fate < 0.004 THEN NULL  -- never finished
                ELSE created + make_interval(secs => res_hours * 3600) END AS end_at,
           created + make_interval(secs => resp_hours * 3600) AS resp_at
    FROM placed p
), shaped AS (
    SELECT f.*,
           end_at IS NOT NULL AND end_at <= %(now)s AS finished,
           u_fate >= 0.004 AND u_fate < 0.07 AS no_fix
    FROM fated f
)
INSERT INTO requests_app_servicerequest (
    id, tracking_number, category_id, department_id, district_id, crew_id, work_order_id,
    duplicate_of_id, description, lat, lng, address, channel, status, priority,
    forward_count, close_reason, is_public, reporter_name, reporter_email, reporter_phone,
    reporter_device_id, reporter_account_id, address_id, import_source, external_id,
    language, created_at, updated_at, first_response_at, resolved_at, due_at,
    sla_paused_seconds, duplicate_confirmed, intake_processed_at
)
SELECT i,
       'B-' || i,
       (%(cat_ids)s::int[])[c],
       (%(cat_depts)s::int[])[c],
       (%(district_ids)s::int[])[
           1 + least(%(rows)s - 1,
                     floor((lat - %(south)s) / (%(north)s - %(south)s) * %(rows)s))::int
             * %(cols)s
             + least(%(cols)s - 1,
                     floor((lng - %(west)s) / (%(east)s - %(west)s) * %(cols)s))::int
       ],
       CASE WHEN u_crew < 0.75 AND (finished OR resp_at <= %(now)s)
            THEN (%(crew_ids)s::int[])[1 + 3 * (%(cat_dept_index)s::int[])[c]
                                       + floor(u_crew * 4)::int %% 3] END,
       CASE WHEN u_dup < 0.04 AND i > 100
                 AND ((hashint8(i - 1 - floor(u_dup * 1000)::bigint %% 50) & 2147483647)
                      / 2147483648.0) < 0.55
                 THEN i - 1 - floor(u_dup * 1000)::bigint %% 50
            WHEN u_dup >= 0.04 AND u_wo < 0.55 THEN i END,
       CASE WHEN u_dup < 0.04 AND i > 100 THEN i - 1 - floor(u_dup * 1000)::bigint %% 50 END,
       'synthetic', lat, lng, '',
       (%(channels)s::text[])[1 + floor(u_chan * 100)::int],
       CASE WHEN finished AND no_fix THEN 'closed'
            WHEN finished THEN 'completed'
            WHEN resp_at > %(now)s THEN 'received'
            ELSE (%(open_states)s::text[])[1 + floor(u_state * 5)::int] END,
       2,
       CASE WHEN u_fwd < 0.05 THEN 1 WHEN u_fwd < 0.06 THEN 2 ELSE 0 END,
       CASE WHEN finished AND no_fix
            THEN (%(close_reasons)s::text[])[1 + floor(u_state * 6)::int] ELSE '' END,
       true, '', '', '', '', '', '', '', '', 'en',
       created,
       greatest(created, least(resp_at, %(now)s), CASE WHEN finished THEN end_at END),
       CASE WHEN resp_at <= %(now)s THEN least(resp_at, CASE WHEN finished THEN end_at END) END,
       CASE WHEN finished THEN end_at END,
       created + make_interval(hours => (%(cat_sla)s::int[])[c]),
       0, false, created
FROM shaped
"""

INSERT_WORK_ORDERS = """
INSERT INTO requests_app_workorder (
    id, department_id, crew_id, status, priority, cost, resolution_note, created_at,
    completed_at, labour_hours
)
SELECT r.id, r.department_id, r.crew_id,
       CASE WHEN r.status IN ('completed', 'closed') THEN 'completed' ELSE 'open' END,
       2,
       CASE WHEN r.status = 'completed'
            THEN round((60 + 400 * power(random(), 2.5))::numeric, 2) END,
       '', coalesce(r.first_response_at, r.created_at), r.resolved_at, NULL
FROM requests_app_servicerequest r
WHERE r.id IN (SELECT work_order_id FROM requests_app_servicerequest)
"""

INSERT_SURVEYS = """
INSERT INTO surveys_survey (
    request_id, recipient, language, created_at, rating, is_fixed, comment, answered_at,
    answer_count
)
SELECT r.id, '', 'en', r.resolved_at + interval '2 hours',
       CASE WHEN answered THEN 1 + floor(power(random(), 0.6) * 5)::int END,
       CASE WHEN answered AND u < 0.85 THEN random() < 0.78 END,
       '',
       CASE WHEN answered THEN least(%(now)s, r.resolved_at + interval '2 hours'
                                     + make_interval(secs => random() * 3 * 86400)) END,
       CASE WHEN answered THEN 1 ELSE 0 END
FROM (
    SELECT *, random() < 0.4 AS answered, random() AS u
    FROM requests_app_servicerequest
    WHERE status = 'completed' AND random() < 0.3
) r
"""
