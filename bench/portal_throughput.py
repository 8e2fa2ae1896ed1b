"""Portal throughput against gunicorn + PostgreSQL, compared with floor views.

    .venv/bin/python bench/portal_throughput.py [--duration 6] [--rounds 2] [--workers 4]

Creates a throwaway database, seeds the demo city, starts gunicorn on a free loopback
port and drives it from this process for a bounded time, then stops gunicorn and drops
the database. Prints requests/s, latency and errors for:

  portal submit   POST /report/ without a photo, CSRF on, as a browser sends it
  floor insert    POST of the same body to a view that only INSERTs one row
  status page     GET /requests/<tracking number>/
  floor detail    GET of a view that runs two queries for the same request

and the ratios portal/floor insert (target >= 0.5) and status/floor detail (>= 0.7).
See bench/README.md. Figures, not a pass/fail test.
"""

import argparse
import http.client
import itertools
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))
HOST = "127.0.0.1"
TARGETS = {"portal": 0.5, "status": 0.7}
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- Setup ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def admin_connection(pg_url):
    return psycopg.connect(f"{pg_url}/postgres", autocommit=True)


def recreate_database(pg_url, name, template=None):
    with admin_connection(pg_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))


def drop_database(pg_url, name):
    with admin_connection(pg_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def bench_environment(args, var_dir: Path, database_url: str) -> dict:
    """Production-shaped settings; every variable the project reads is set explicitly so
    that a developer's .env (DEBUG=1, SQLite, ...) cannot leak into the figures."""
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="bench.settings",
        PYTHONPATH=str(ROOT),
        DEBUG="0",
        SECRET_KEY=secrets.token_urlsafe(40),
        ALLOWED_HOSTS=HOST,
        DATABASE_URL=database_url,
        CIVICDESK_VAR_DIR=str(var_dir),
        MEDIA_ROOT=str(var_dir / "media"),
        CELERY_FILESYSTEM_BROKER_DIR=str(var_dir / "celery-broker"),
        REDIS_URL=args.redis_url or "",
        EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend",
        # Plain HTTP on loopback: a browser would not send back a Secure cookie.
        SECURE_COOKIES="0",
        SECURE_SSL_REDIRECT="0",
        # Each submission comes from its own address, as behind the production proxy;
        # the limit is lifted anyway so a long run can never trip it.
        USE_X_FORWARDED_FOR="1",
        REPORTS_PER_IP_PER_HOUR="1000000000",
        LOG_LEVEL="WARNING",
    )
    return env


def check_redis_empty(url):
    import redis

    client = redis.Redis.from_url(url)
    if client.dbsize():
        raise SystemExit(f"{url} is not empty; give --redis-url a database nobody uses.")
    return client


def manage(env, *command, timeout=180):
    done = subprocess.run(
        [PYTHON, str(ROOT / "manage.py"), *command],
        env=env,
        cwd=ROOT,
        timeout=timeout,
        capture_output=True,
        text=True,
    )
    if done.returncode:
        sys.stderr.write(done.stdout + done.stderr)
        raise RuntimeError(f"manage.py {' '.join(command)} failed ({done.returncode})")


BENCH_REQUESTS = (
    "SELECT count(*) FROM requests_app_servicerequest WHERE reporter_email LIKE '%@bench.example'"
)
BENCH_EMAILS = (
    "SELECT count(*) FROM notifications_notification WHERE recipient LIKE '%@bench.example'"
)


def bench_rows(database_url):
    """(requests, queued emails) that bench submissions made, this run's or a template's."""
    with psycopg.connect(database_url) as conn:
        return tuple(conn.execute(q).fetchone()[0] for q in (BENCH_REQUESTS, BENCH_EMAILS))


def prepare_database(args, env, database_url):
    manage(env, "migrate", "--no-input", "-v", "0")
    if not args.template_db:
        manage(env, "seed_demo", "--requests", str(args.seed_requests))
    manage(env, "collectstatic", "--no-input", "-v", "0")
    with psycopg.connect(database_url, autocommit=True) as conn:
        # The seeded requests: a template may also hold an earlier run's submissions.
        numbers = [
            row[0]
            for row in conn.execute(
                "SELECT tracking_number FROM requests_app_servicerequest "
                "WHERE is_public AND reporter_email NOT LIKE '%@bench.example'"
            )
        ]
        pg_info = {
            "version": conn.execute("SHOW server_version").fetchone()[0],
            "synchronous_commit": conn.execute("SHOW synchronous_commit").fetchone()[0],
        }
    return numbers, pg_info


def start_gunicorn(args, env, port, log_path):
    log = open(log_path, "ab")
    process = subprocess.Popen(
        [
            GUNICORN,
            "civicdesk.wsgi:application",
            "--bind",
            f"{HOST}:{port}",
            "--workers",
            str(args.workers),
            "--worker-class",
            "sync",
            "--chdir",
            str(ROOT),
            "--timeout",
            "30",
            "--graceful-timeout",
            "5",
            "--error-logfile",
            "-",
            # Production recycles each worker after so many requests (docker-compose.yml);
            # the throughput bench does not, so that no worker restarts mid-measurement.
            *(
                [
                    "--max-requests",
                    str(max_requests),
                    "--max-requests-jitter",
                    str(max_requests // 10),
                ]
                if (max_requests := getattr(args, "max_requests", 0))
                else []
            ),
        ],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=log,
        start_new_session=True,  # its own process group, so a stop takes the workers too
    )
    deadline = time.monotonic() + 30
    last = "no answer"
    while time.monotonic() < deadline and process.poll() is None:
        try:
            conn = http.client.HTTPConnection(HOST, port, timeout=2)
            conn.request("GET", "/report/")
            response = conn.getresponse()
            response.read()
            if response.status == 200:
                return process
            last = f"GET /report/ answered {response.status}"
        except OSError as error:
            last = repr(error)
        time.sleep(0.2)
    tail = "\n".join(Path(log_path).read_text(errors="replace").splitlines()[-30:])
    stop_gunicorn(process)
    raise RuntimeError(f"gunicorn is not serving the portal ({last}); its log ends:\n{tail}")


def stop_gunicorn(process):
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


# --- CPU accounting ---------------------------------------------------------------------


def cpu_seconds(pid) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def gunicorn_workers(master_pid):
    try:
        return Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
    except FileNotFoundError:
        return []


def postgres_backends(database_url, db_name):
    with psycopg.connect(database_url, autocommit=True) as conn:
        me = conn.info.backend_pid
        return [
            row[0]
            for row in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> %s",
                [db_name, me],
            )
        ]


class CpuMeter:
    """CPU seconds used by gunicorn workers, PostgreSQL backends and this client."""

    def __init__(self, master_pid, database_url, db_name):
        self.master_pid, self.database_url, self.db_name = master_pid, database_url, db_name

    def sample(self):
        workers = gunicorn_workers(self.master_pid)
        backends = postgres_backends(self.database_url, self.db_name)
        return {
            "server": {pid: cpu_seconds(pid) for pid in workers},
            "db": {pid: cpu_seconds(pid) for pid in backends},
            "client": time.process_time(),
        }

    @staticmethod
    def delta(before, after):
        def used(kind):
            # Only processes present at both ends: a worker or backend that appeared in
            # between would be counted from zero (CONN_MAX_AGE keeps them after warm-up).
            return sum(
                after[kind][pid] - before[kind][pid] for pid in after[kind] if pid in before[kind]
            )

        return {
            "server": used("server"),
            "db": used("db"),
            "client": after["client"] - before["client"],
        }


# --- Load client ------------------------------------------------------------------------


@dataclass
class Result:
    latencies: list = field(default_factory=list)
    errors: int = 0
    error_samples: list = field(default_factory=list)
    elapsed: float = 0.0
    cpu: dict = field(default_factory=lambda: {"server": 0.0, "db": 0.0, "client": 0.0})

    def merge(self, other):
        self.latencies += other.latencies
        self.errors += other.errors
        self.error_samples = (self.error_samples + other.error_samples)[:5]
        self.elapsed += other.elapsed
        for key in self.cpu:
            self.cpu[key] += other.cpu[key]


class PortalForm:
    """What a browser learns from GET /report/: the CSRF cookie and token, the
    categories on offer and the map bounds."""

    def __init__(self, port):
        conn = http.client.HTTPConnection(HOST, port, timeout=10)
        conn.request("GET", "/report/", headers={"Accept-Language": "en-US,en;q=0.9"})
        response = conn.getresponse()
        page = response.read().decode()
        conn.close()
        cookie = re.search(r"csrftoken=([^;]+)", response.getheader("Set-Cookie") or "")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        select = re.search(r'<select name="category".*?</select>', page, re.S)
        settings = re.search(
            r'<script id="map-settings" type="application/json">(.*?)</script>', page, re.S
        )
        if not (response.status == 200 and cookie and token and select and settings):
            raise RuntimeError("GET /report/ did not look like the report form")
        self.cookie = cookie.group(1)
        self.token = token.group(1)
        self.categories = [v for v in re.findall(r'<option value="(\d+)"', select.group(0))]
        (self.min_lat, self.min_lng), (self.max_lat, self.max_lng) = json.loads(settings.group(1))[
            "bounds"
        ]


DESCRIPTIONS = [
    "Deep pothole in the right lane, cars swerving around it",
    "Streetlight out, the whole block is dark at night",
    "Trash not picked up on our street this week",
    "Water bubbling up from the street by the hydrant",
    "Graffiti on the underpass wall",
]
_address_counter = itertools.count(1)


def multipart(fields, boundary):
    """A multipart body as a browser sends the report form with no photo chosen."""
    parts = []
    for name, value in fields:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        )
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="photos"; filename=""\r\n'
        "Content-Type: application/octet-stream\r\n\r\n\r\n"
    )
    parts.append(f"--{boundary}--\r\n")
    return "".join(parts).encode()


def submission(form, rng, port):
    """One resident's report: its own address and no session cookie, as a surge of
    different residents would send it (each creates its own session and throttle row)."""
    n = next(_address_counter)
    lat = rng.uniform(form.min_lat + 0.01, form.max_lat - 0.01)
    lng = rng.uniform(form.min_lng + 0.01, form.max_lng - 0.01)
    boundary = f"----civicdeskbench{secrets.token_hex(8)}"
    body = multipart(
        [
            ("csrfmiddlewaretoken", form.token),
            ("category", rng.choice(form.categories)),
            ("description", rng.choice(DESCRIPTIONS)),
            ("address", f"{rng.randint(1, 400)} Main St"),
            ("lat", f"{lat:.6f}"),
            ("lng", f"{lng:.6f}"),
            ("name", "Bench Resident"),
            ("email", f"resident{n}@bench.example"),
            ("phone", "555-0100"),
            ("website", ""),
            # The map pin is placed with JavaScript, whose live nearby lookup sets this
            # before "Send report" (see static/portal/nearby.js); without it the portal
            # may answer with its "already reported nearby?" step instead of filing.
            ("file_anyway", "1"),
        ],
        boundary,
    )
    headers = {
        "Content-Type": f"multipart/form-data; boundary={boundary}",
        "Cookie": f"csrftoken={form.cookie}",
        "Origin": f"http://{HOST}:{port}",
        "Accept-Language": "en-US,en;q=0.9",
        "X-Forwarded-For": f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}",
    }
    return body, headers


SUBMISSION_PATHS = {
    "portal": "/report/",
    "floor_insert": "/bench/floor/insert/",
    "required": "/bench/floor/required/",
}


def make_request(kind, form, numbers, rng, port):
    """(method, path, body, headers, expected status)."""
    if kind in SUBMISSION_PATHS:
        body, headers = submission(form, rng, port)
        return "POST", SUBMISSION_PATHS[kind], body, headers, 200 if kind == "floor_insert" else 302
    number = rng.choice(numbers)
    path = f"/requests/{number}/" if kind == "status" else f"/bench/floor/requests/{number}/"
    return "GET", path, None, {"Accept-Language": "en-US,en;q=0.9"}, 200


def form_errors(page: bytes) -> str:
    """The messages of a re-shown form, for error samples."""
    found = re.findall(
        rb'class="(?:errorlist[^"]*|form-errors)"[^>]*>(.*?)</(?:ul|div)>', page, re.S
    )
    text = " | ".join(
        re.sub(rb"<[^>]+>|\s+", b" ", f).decode(errors="replace").strip() for f in found
    )
    return f" ({text[:300]})" if text else ""


def client_thread(kind, port, forms, numbers, stop_at, result, seed, record):
    rng = random.Random(seed)
    form = forms[seed % len(forms)]
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    while time.monotonic() < stop_at:
        method, path, body, headers, expected = make_request(kind, form, numbers, rng, port)
        started = time.perf_counter()
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            page = response.read()
            ok = response.status == expected
            problem = f"{method} {path} -> {response.status}{form_errors(page)}"
            if ok and kind in ("portal", "required"):
                ok = (response.getheader("Location") or "").startswith("/report/done/")
                problem = f"{method} {path} -> 302 to {response.getheader('Location')}"
        except (OSError, http.client.HTTPException) as error:
            conn.close()
            ok, problem = False, f"{method} {path} -> {error!r}"
        latency = time.perf_counter() - started
        if not record:
            continue
        if ok:
            result.latencies.append(latency)
        else:
            result.errors += 1
            if len(result.error_samples) < 5:
                result.error_samples.append(problem)
    conn.close()


def run_phase(kind, seconds, args, port, forms, numbers, meter=None, record=True):
    results = [Result() for _ in range(args.clients)]
    before = meter.sample() if meter else None
    started = time.monotonic()
    stop_at = started + seconds
    threads = [
        threading.Thread(
            target=client_thread,
            args=(
                kind,
                port,
                forms,
                numbers,
                stop_at,
                results[i],
                random.randrange(1 << 30) + i,
                record,
            ),
            daemon=True,
        )
        for i in range(args.clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 35)
    total = Result()
    for result in results:
        total.merge(result)
    total.elapsed = time.monotonic() - started
    if meter:
        total.cpu = CpuMeter.delta(before, meter.sample())
    return total


# --- Report -----------------------------------------------------------------------------

LABELS = {
    "portal": "portal submit (POST /report/, no photo)",
    "floor_insert": "floor: view that INSERTs one row",
    "status": "status page (GET /requests/<n>/)",
    "floor_detail": "floor: two-query detail view",
    "required": "reference: only the required work, bare",
}


def percentile(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def per_request(seconds, count):
    return 1000 * seconds / count if count else float("nan")


def cpu_per_request(result):
    return per_request(sum(result.cpu.values()), len(result.latencies))


def print_report(args, results, pg_info, broker, created, notifications):
    print()
    print(
        f"CivicDesk portal throughput — gunicorn {args.workers} sync workers, "
        f"{args.clients} client threads, {args.rounds} x {args.duration:g} s per endpoint"
    )
    print(
        f"PostgreSQL {pg_info['version']} (synchronous_commit={pg_info['synchronous_commit']}), "
        f"Celery broker: {broker}, DEBUG off"
    )
    print(
        f"Client and server share this machine's {os.cpu_count()} cores "
        "(loopback 127.0.0.1); absolute figures are lower than on a dedicated server."
    )
    print()
    header = (
        f"{'endpoint':<42} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'ok':>7} "
        f"{'errors':>6}  {'CPU ms/req: web':>15} {'db':>5} {'client':>6}"
    )
    print(header)
    print("-" * len(header))
    rates = {}
    for kind in ("portal", "floor_insert", "status", "floor_detail", "required"):
        r = results[kind]
        ok = len(r.latencies)
        rates[kind] = ok / r.elapsed if r.elapsed else 0.0
        print(
            f"{LABELS[kind]:<42} {rates[kind]:>8.1f} "
            f"{1000 * percentile(r.latencies, 50):>8.1f} "
            f"{1000 * percentile(r.latencies, 95):>8.1f} {ok:>7} {r.errors:>6}  "
            f"{per_request(r.cpu['server'], ok):>15.2f} {per_request(r.cpu['db'], ok):>5.2f} "
            f"{per_request(r.cpu['client'], ok):>6.2f}"
        )
    print()
    for page, floor in (("portal", "floor_insert"), ("status", "floor_detail")):
        ratio = rates[page] / rates[floor] if rates[floor] else float("nan")
        target = TARGETS[page]
        verdict = "meets target" if ratio >= target else "BELOW target"
        print(f"{page:>6} / {floor:<13} = {ratio:.2f}x   (target >= {target:.1f}x: {verdict})")
    required = rates["required"] / rates["floor_insert"] if rates["floor_insert"] else float("nan")
    print(
        f"Reference: a view doing only the work the spec requires of every submission "
        f"(CSRF, the parsed form, the per-IP count, the request and its history entry in "
        f"one transaction, the intake task after commit; raw SQL, no validation) reaches "
        f"{required:.2f}x floor_insert."
    )
    print()
    print("CPU per request (web + db + client), which busy neighbours and disk waits move less:")
    for page, floor in (
        ("portal", "floor_insert"),
        ("required", "floor_insert"),
        ("status", "floor_detail"),
    ):
        page_ms, floor_ms = cpu_per_request(results[page]), cpu_per_request(results[floor])
        print(
            f"{page:>8} {page_ms:.1f} ms vs {floor} {floor_ms:.1f} ms: at most "
            f"{floor_ms / page_ms:.2f}x the floor's rate if the CPU is the limit"
        )
    print()
    submitted = len(results["portal"].latencies)
    print(
        f"Sanity: {submitted} accepted submissions measured; the database holds {created} "
        f"bench requests and {notifications} queued confirmation emails "
        "(warm-up included)."
    )
    for kind, r in results.items():
        for sample in r.error_samples:
            print(f"  error sample [{kind}]: {sample}")


def print_server_errors(log_path):
    """The number of errors gunicorn logged and the first one in full."""
    lines = Path(log_path).read_text(errors="replace").splitlines()
    starts = [i for i, line in enumerate(lines) if " ERROR " in line or " CRITICAL " in line]
    if not starts:
        return
    print(f"\nThe server logged {len(starts)} errors; the first:")
    end = starts[1] if len(starts) > 1 else len(lines)
    print("\n".join(lines[starts[0] : min(end, starts[0] + 60)]))


# --- Main -------------------------------------------------------------------------------


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--duration", type=float, default=6.0, help="seconds per endpoint per round (default 6)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="rounds over the four endpoints, interleaved (default 2)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=2.0,
        help="unrecorded seconds per endpoint first (default 2)",
    )
    parser.add_argument("--workers", type=int, default=4, help="gunicorn sync workers")
    parser.add_argument("--clients", type=int, default=6, help="concurrent client threads")
    parser.add_argument(
        "--seed-requests",
        type=int,
        default=300,
        help="demo requests seed_demo creates (default 300)",
    )
    parser.add_argument(
        "--postgres",
        default="postgresql://postgres@127.0.0.1:5432",
        help="server URL without a database name",
    )
    parser.add_argument("--db-name", default="civicdesk_bench")
    parser.add_argument(
        "--template-db",
        default="",
        help="copy this seeded database (migrate runs on the copy; no seed_demo) "
        "instead of seeding a new one; nobody may be connected to it",
    )
    parser.add_argument("--keep-db", action="store_true", help="leave the database afterwards")
    parser.add_argument(
        "--redis-url",
        default="",
        help="Celery broker as in production, e.g. redis://127.0.0.1:6379/9; "
        "the database must be empty and is emptied again afterwards "
        "(default: the filesystem broker in a temporary directory)",
    )
    parser.add_argument(
        "--max-seconds", type=float, default=300, help="hard stop for the whole run (default 300)"
    )
    return parser.parse_args()


def main():
    args = parse_args()
    var_dir = Path(tempfile.mkdtemp(prefix="civicdesk-bench-"))
    database_url = f"{args.postgres}/{args.db_name}"
    env = bench_environment(args, var_dir, database_url)
    gunicorn = None
    state = {"db_created": False}

    redis_client = check_redis_empty(args.redis_url) if args.redis_url else None

    def cleanup():
        stop_gunicorn(gunicorn)
        if redis_client is not None:
            # It was empty at the start: what is there now are the bench's queued tasks.
            keys = list(redis_client.scan_iter(count=1000))
            if keys:
                redis_client.delete(*keys)
        if state["db_created"] and not args.keep_db:
            try:
                drop_database(args.postgres, args.db_name)
            except psycopg.Error as error:
                print(f"Could not drop {args.db_name}: {error}", file=sys.stderr)
        shutil.rmtree(var_dir, ignore_errors=True)

    def watchdog():
        print(f"\nAborting: the run took longer than {args.max_seconds:g} s.", file=sys.stderr)
        cleanup()
        os._exit(2)

    def interrupted(signum, frame):
        raise SystemExit(f"Stopped by signal {signum}.")

    # SIGTERM too, so that `timeout` or a CI runner stopping the script still takes
    # gunicorn and the database down with it.
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)
    timer = threading.Timer(args.max_seconds, watchdog)
    timer.daemon = True
    timer.start()
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    try:
        print(
            f"Creating database {args.db_name} as a copy of {args.template_db}, migrating ..."
            if args.template_db
            else f"Creating database {args.db_name}, migrating, seeding "
            f"{args.seed_requests} requests ...",
            flush=True,
        )
        recreate_database(args.postgres, args.db_name, args.template_db)
        state["db_created"] = True
        numbers, pg_info = prepare_database(args, env, database_url)
        rows_before = bench_rows(database_url)

        setup_seconds = time.monotonic() - started
        port = free_port()
        print(f"Starting gunicorn on {HOST}:{port} ({args.workers} sync workers) ...", flush=True)
        log_path = var_dir / "gunicorn.log"
        gunicorn = start_gunicorn(args, env, port, log_path)
        # One browser per client thread; each fetches the form once for its CSRF cookie.
        forms = [PortalForm(port) for _ in range(args.clients)]

        kinds = ["floor_insert", "portal", "floor_detail", "status", "required"]
        print("Warming up ...", flush=True)
        for kind in kinds:
            run_phase(kind, args.warmup, args, port, forms, numbers, record=False)

        meter = CpuMeter(gunicorn.pid, database_url, args.db_name)
        results = {kind: Result() for kind in kinds}
        for round_number in range(1, args.rounds + 1):
            for kind in kinds:
                print(
                    f"Round {round_number}/{args.rounds}: {kind} for {args.duration:g} s",
                    flush=True,
                )
                results[kind].merge(
                    run_phase(kind, args.duration, args, port, forms, numbers, meter)
                )

        rows_after = bench_rows(database_url)
        created, notifications = (rows_after[i] - rows_before[i] for i in (0, 1))
        broker = "Redis" if args.redis_url else "filesystem (temporary directory)"
        print_report(args, results, pg_info, broker, created, notifications)
        print(
            f"Load average (1 min) {load_before:.1f} at the start, "
            f"{os.getloadavg()[0]:.1f} at the end; setup took {setup_seconds:.0f} s. "
            "Other work on the machine moves all the figures; the ratios, measured "
            "interleaved, move less."
        )
        print_server_errors(log_path)
    finally:
        timer.cancel()
        cleanup()


if __name__ == "__main__":
    main()
