"""Address search as residents type, over 1,000,000 address points (PostgreSQL).

    .venv/bin/python bench/address_search.py [--size 1000000] [--queries 200] [--keep-db]

Builds a throwaway database (civicdesk_bench_addresses), loads generated address points with
COPY (about 2,600 streets — believable names and types, some with a direction — with up to
~800 house numbers each, over the default service area, 25 ZIP codes), derives the street
list, then times:

- routing.geocoding.address_search for ~200 realistic queries: street prefixes as they are
  typed ("ma", "maple s"), house numbers with a partial street ("12 maple st"), typos with
  and without a house number ("12 mapel st", "washingtn") and a few with a ZIP code;
- the same queries through the HTTP endpoint (/addresses/search/, Django's test client);
- routing.geocoding.address_nearest (the address at a pin) for 200 random points.

Prints p50/p95/p99 (target: search p95 under 30 ms) and the slowest queries; asserts
nothing. Client and server share this machine's two cores.
"""

import argparse
import importlib
import math
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DB = "civicdesk_bench_addresses"
PSQL = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc"]
BBOX = (-71.19, 42.23, -70.99, 42.40)  # the default SERVICE_AREA_BBOX

NAMES = (
    "Maple Oak Elm Cedar Pine Birch Walnut Chestnut Willow Spruce Hickory Magnolia Poplar "
    "Sycamore Linden Ash Hawthorn Juniper Laurel Cypress Washington Adams Jefferson Madison "
    "Monroe Jackson Lincoln Grant Garfield Cleveland Harrison Franklin Hamilton Hancock Revere "
    "Warren Putnam Knox Greene Wayne Lafayette Main Church School Mill River Lake Park Spring "
    "Summer Winter High Center Union Prospect Pleasant Water Bridge Highland Ridge Valley "
    "Meadow Forest Orchard Brook Hillside Sunset Harbor Bay Beacon Commonwealth Atlantic "
    "Columbus Lexington Concord Cambridge Harvard Dartmouth Hudson Charles Boylston Tremont "
    "Dorchester Quincy Medford Salem Newbury Marlborough Exeter Gloucester Fairmount Glenwood "
    "Brookside Riverside Lakeview Woodland Greenwood Kingston Princeton Oxford Stratford "
    "Carver Bradford Standish Alden Winthrop Endicott Saltonstall Otis Bowdoin Shawmut "
    "Berkeley Clarendon Dartmouth Fairfield Gloucester Hereford Ipswich Jersey Kilmarnock "
    "Lansdowne Manor Norfolk Orange Peabody Queen Rutland Sterling Thornton Upland Vernon "
    "Wendell Yarmouth Zenith Amherst Belmont Chatham Dover Everett Framingham Georgetown "
    "Holbrook Ipswich Jamaica Kenmore Leyden Milton Natick Oakland Pembroke Quarry Randolph"
).split()
TYPES = [
    ("Street", 40),
    ("Avenue", 15),
    ("Road", 12),
    ("Lane", 6),
    ("Drive", 6),
    ("Place", 5),
    ("Court", 5),
    ("Terrace", 4),
    ("Way", 4),
    ("Boulevard", 2),
    ("Square", 1),
]
ABBREVIATED = {"Street": "St", "Avenue": "Ave", "Road": "Rd", "Lane": "Ln", "Drive": "Dr"}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--keep-db", action="store_true")
    args = parser.parse_args()

    subprocess.run([*PSQL, f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)"], check=True)
    subprocess.run([*PSQL, f"CREATE DATABASE {DB}"], check=True)
    os.environ.update(
        DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{DB}",
        DEBUG="1",
        CIVICDESK_VAR_DIR="/tmp/civicdesk-bench-var",
        LOG_LEVEL="WARNING",
        GEOCODER_URL="",
        SERVICE_AREA_GEOJSON="",
        SERVICE_AREA_BBOX=",".join(map(str, BBOX)),
        ALLOWED_HOSTS="testserver",
    )
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "civicdesk.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client

    from routing.gazetteer import streets_rebuild
    from routing.geocoding import address_nearest, address_search
    from routing.models import Address, Street

    try:
        call_command("migrate", verbosity=0)
        migration = importlib.import_module("routing.migrations.0002_address_gazetteer")

        class Editor:  # what the migration's functions need of a schema editor
            def __init__(self, connection):
                self.connection = connection

            def execute(self, sql):
                with connection.cursor() as cursor:
                    cursor.execute(sql)

        # A bulk load, as a city would do it: the text indexes are built after the rows.
        migration.drop_search_indexes(None, Editor(connection))
        streets = _copy(connection, args.size)
        started = time.perf_counter()
        migration.create_search_indexes(None, Editor(connection))
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE routing_address")
        print(f"  (built the search indexes in {time.perf_counter() - started:.1f}s)")
        started = time.perf_counter()
        count = streets_rebuild()
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE routing_street")
        print(f"  (derived {count:,} streets in {time.perf_counter() - started:.1f}s)")
        print(f"{Address.objects.count():,} addresses, {Street.objects.count():,} streets\n")

        queries = _queries(random.Random(7), streets, args.queries)
        for query in queries:  # warm the caches, as a running server's are
            address_search(query)
        search_ms, slowest, empty = [], [], 0
        for _round in range(3):
            for query in queries:
                started = time.perf_counter()
                found = address_search(query)
                elapsed = (time.perf_counter() - started) * 1000
                search_ms.append(elapsed)
                slowest.append((elapsed, query, len(found)))
                empty += not found
        client = Client()
        client.get("/addresses/search/", {"q": queries[0]})  # URL and view modules loaded
        http_ms = []
        for query in queries:
            started = time.perf_counter()
            response = client.get("/addresses/search/", {"q": query})
            http_ms.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, response.content
        rng = random.Random(11)
        reverse_ms, hits = [], 0
        for _ in range(200):
            lat, lng = rng.uniform(BBOX[1], BBOX[3]), rng.uniform(BBOX[0], BBOX[2])
            started = time.perf_counter()
            hits += address_nearest(lat, lng) is not None
            reverse_ms.append((time.perf_counter() - started) * 1000)

        print(f"{'':32} {'p50':>8} {'p95':>8} {'p99':>8} {'max':>8}")
        _line(f"search ({len(queries)} queries × 3)", search_ms)
        _line("search over HTTP (test client)", http_ms)
        _line("address at a pin (200 points)", reverse_ms)
        print(f"\nsearch p95 target: under 30 ms → {_pct(search_ms, 95):.1f} ms")
        print(
            f"queries with no suggestion: {empty // 3} of {len(queries)}; pins near an "
            f"address (75 m): {hits} of 200"
        )
        print("\nslowest searches:")
        for elapsed, query, found in sorted(slowest, reverse=True)[:8]:
            print(f"  {elapsed:7.1f} ms  {query!r} ({found} suggestions)")
        print("\nexamples:")
        for query in queries[:: max(1, len(queries) // 10)]:
            labels = [p.label for p in address_search(query)][:3]
            print(f"  {query!r:28} → {labels}")
        _explain(connection)
    finally:
        connection.close()
        if not args.keep_db:
            subprocess.run([*PSQL, f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)"], check=True)


def _pct(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def _line(label, values):
    print(
        f"{label:32} {statistics.median(values):>6.1f}ms {_pct(values, 95):>6.1f}ms"
        f" {_pct(values, 99):>6.1f}ms {max(values):>6.1f}ms"
    )


def _streets(rng):
    """(name, house count, start lat/lng, direction) for about 2,600 distinct streets."""
    seen, streets = set(), []
    types, weights = zip(*TYPES, strict=True)
    for name in NAMES:
        for _ in range(12):
            street = f"{name} {rng.choices(types, weights)[0]}"
            if rng.random() < 0.15:
                street = f"{rng.choice(['North', 'South', 'East', 'West'])} {street}"
            if street in seen:
                continue
            seen.add(street)
            streets.append(street)
    return streets


def _copy(connection, size):
    """Address points along straight streets, streamed into the table with COPY."""
    from django.utils import timezone

    from routing.gazetteer import normalize
    from routing.models import METRES_PER_DEGREE

    rng = random.Random(311)
    names = _streets(rng)
    per_street = max(1, size // len(names))
    mid_lat = (BBOX[1] + BBOX[3]) / 2
    metre_lat = 1 / METRES_PER_DEGREE
    metre_lng = 1 / (METRES_PER_DEGREE * math.cos(math.radians(mid_lat)))
    now = timezone.now()
    columns = (
        "address, street, search_text, street_search, lat, lng, address_id, zipcode, source,"
        " import_key, updated_at"
    )
    started = time.perf_counter()
    written = 0
    with connection.cursor() as cursor:
        with cursor.connection.cursor().copy(
            f"COPY routing_address ({columns}) FROM STDIN"
        ) as copy:
            for index, street in enumerate(names):
                search_street = normalize(street)
                count = per_street + (1 if index < size - per_street * len(names) else 0)
                lat = rng.uniform(BBOX[1] + 0.01, BBOX[3] - 0.01)
                lng = rng.uniform(BBOX[0] + 0.01, BBOX[2] - 0.01)
                angle = rng.uniform(0, math.pi)
                step = rng.uniform(8, 15)  # metres between house numbers
                for n in range(count):
                    number = n + 1
                    along = step * n - step * count / 2
                    point_lat = lat + along * math.sin(angle) * metre_lat
                    point_lng = lng + along * math.cos(angle) * metre_lng
                    point_lat = min(max(point_lat, BBOX[1]), BBOX[3])
                    point_lng = min(max(point_lng, BBOX[0]), BBOX[2])
                    row = int(5 * (point_lat - BBOX[1]) / (BBOX[3] - BBOX[1] + 1e-9))
                    col = int(5 * (point_lng - BBOX[0]) / (BBOX[2] - BBOX[0] + 1e-9))
                    address_id = f"B-{written}"
                    copy.write_row(
                        (
                            f"{number} {street}",
                            street,
                            f"{number} {search_street}",
                            search_street,
                            round(point_lat, 6),
                            round(point_lng, 6),
                            address_id,
                            f"021{row * 5 + col:02d}",
                            "bench",
                            f"id:{address_id}",
                            now,
                        )
                    )
                    written += 1
    print(f"  (copied {written:,} address points in {time.perf_counter() - started:.1f}s)")
    return names


def _typo(rng, word):
    if len(word) < 5:
        return word
    i = rng.randrange(1, len(word) - 1)
    kind = rng.choice(["drop", "swap", "replace", "double"])
    if kind == "drop":
        return word[:i] + word[i + 1 :]
    if kind == "swap":
        return word[: i - 1] + word[i] + word[i - 1] + word[i + 1 :]
    if kind == "replace":
        return word[:i] + rng.choice("aeioulnrst") + word[i + 1 :]
    return word[:i] + word[i] + word[i:]


def _queries(rng, streets, count):
    """What residents type, in a realistic mix."""
    queries = []
    while len(queries) < count:
        street = rng.choice(streets)
        words = street.split()
        typed = " ".join(ABBREVIATED.get(w, w) if rng.random() < 0.6 else w for w in words)
        kind = rng.random()
        if kind < 0.3:  # a street name, partly typed
            queries.append(typed[: rng.randint(2, len(typed))].lower())
        elif kind < 0.65:  # a house number and the beginning of the street
            number = rng.randint(1, 300)
            queries.append(f"{number} {typed[: rng.randint(3, len(typed))]}")
        elif kind < 0.85:  # a house number and a typo
            number = rng.randint(1, 300)
            name = " ".join(
                _typo(rng, w) if i == len(words) - 2 else w for i, w in enumerate(typed.split())
            )
            queries.append(f"{number} {name}")
        elif kind < 0.95:  # a typo in a street name alone
            queries.append(_typo(rng, words[-2] if len(words) > 1 else words[0]).lower())
        else:  # with the ZIP code after a comma
            queries.append(f"{rng.randint(1, 300)} {typed}, 021{rng.randint(0, 24):02d}")
    return queries


def _explain(connection):
    print("\nPlans (EXPLAIN ANALYZE) of the main statements:")
    statements = {
        "address prefix": (
            "SELECT id FROM routing_address WHERE (search_text COLLATE \"C\") >= '12 maple' "
            "AND (search_text COLLATE \"C\") < '12 maple' || chr(1114111) "
            'ORDER BY (search_text COLLATE "C") LIMIT 12'
        ),
        "word inside a street name": (
            "SELECT id FROM routing_street WHERE search_text LIKE '% maple%' "
            "ORDER BY length(search_text), search_text LIMIT 8"
        ),
        "the houses of a street": (
            "SELECT id FROM routing_address WHERE street_search = 'maple street' "
            "ORDER BY length(search_text), search_text LIMIT 12"
        ),
        "typo in a street name": (
            "SELECT id, word_similarity('mapel street', search_text) AS s FROM routing_street "
            "WHERE search_text % 'mapel street' "
            "AND word_similarity('mapel street', search_text) >= 0.5 ORDER BY s DESC LIMIT 24"
        ),
    }
    with connection.cursor() as cursor:
        for label, sql in statements.items():
            cursor.execute("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY ON) " + sql)
            lines = [row[0] for row in cursor.fetchall()]
            print(f"  {label}:\n    " + "\n    ".join(lines))


if __name__ == "__main__":
    main()
