"""Fault drills against gunicorn and a Celery worker: PostgreSQL restarted, Redis stopped and
Redis frozen, each while residents submit reports and look up their status.

    .venv/bin/python bench/fault_drills.py [--drills redis-stop,redis-freeze]
    .venv/bin/python bench/fault_drills.py --drills postgres,redis-stop,redis-freeze

Issue 8 asks for these drills; tests/test_fault_drills.py runs the ones that fit in CI.
Restarting PostgreSQL cannot run there: the test database lives on the same server, and a
restart breaks whatever else is using it. So the `postgres` drill only runs when named.

Creates a throwaway database, seeds the demo city, starts a private redis-server on a free
port (the Celery broker and shared cache, as in production), gunicorn and a Celery worker
with embedded beat (the intake and outbox sweeps), then for each drill:

  drive submissions (POST /report/) and status lookups (GET /requests/<n>/) from threads,
  apply the fault, keep driving --after seconds (20), stop, and wait for the work to finish.

It prints, per drill, the requests and errors before the fault, while it lasted (a request
in flight at any moment of it) and after it was over (which must have no errors), latency,
what /health/ answered, and whether every submission that got a tracking number ends
routed. Everything is torn down afterwards. Figures, not a pass/fail test.
"""

import argparse
import http.client
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

# Run as a script, bench/ is on the path but the checkout is not.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.portal_throughput import (  # noqa: E402
    HOST,
    PYTHON,
    ROOT,
    PortalForm,
    bench_environment,
    drop_database,
    form_errors,
    free_port,
    percentile,
    prepare_database,
    recreate_database,
    start_gunicorn,
    stop_gunicorn,
    submission,
)

DRILLS = ("postgres", "redis-stop", "redis-freeze")
# A log line at ERROR or above, as plain text ("... ERROR/MainProcess]") or JSON.
ERROR_LINE = re.compile(r'[ "](?:ERROR|CRITICAL)[ /:"]')


def postgres_restart_command() -> list[str]:
    (version,) = os.listdir("/etc/postgresql")  # one cluster on this machine
    return ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"]


# --- Processes ----------------------------------------------------------------------------


class PrivateRedis:
    """A redis-server of our own, without persistence: a restart comes back empty, as a
    Redis without a volume would, so queued tasks are lost and the sweeps must redo them."""

    def __init__(self, port, log_path):
        self.port, self.log_path, self.process = port, log_path, None

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self):
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", HOST]
            + ["--save", "", "--appendonly", "no"],
            stdout=open(self.log_path, "ab"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                import redis

                redis.Redis(host=HOST, port=self.port, socket_timeout=1).ping()
                return self
            except Exception:
                time.sleep(0.1)
        raise RuntimeError("redis-server did not start")

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a stopped process ignores SIGTERM
            self.process.terminate()
            self.process.wait(timeout=10)

    def freeze(self):
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self):
        self.process.send_signal(signal.SIGCONT)


def start_worker(env, log_path):
    """A worker with embedded beat, so that the sweeps run as in production."""
    log = open(log_path, "ab")
    process = subprocess.Popen(
        [PYTHON, "-m", "celery", "-A", "civicdesk", "worker", "--beat"]
        + ["--loglevel=INFO", "--concurrency=2", "--without-mingle", "--without-gossip"]
        + ["--schedule", str(Path(env["CIVICDESK_VAR_DIR"]) / "beat-schedule")],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if " ready." in Path(log_path).read_text(errors="replace"):
            return process
        time.sleep(0.2)
    stop_group(process)
    raise RuntimeError(f"the worker did not start; see {log_path}")


def stop_group(process):
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


# --- Load ---------------------------------------------------------------------------------


@dataclass
class Sample:
    kind: str  # submit, status, health
    started: float
    ended: float
    ok: bool
    detail: str = ""
    number: str = ""


@dataclass
class Load:
    """Client threads: residents submitting, residents looking up a status, a health probe."""

    port: int
    forms: list
    numbers: list
    submitters: int
    readers: int
    samples: list = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    threads: list = field(default_factory=list)

    def request(self, method, path, body=None, headers=None):
        conn = http.client.HTTPConnection(HOST, self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.getheader("Location") or "", response.read()
        finally:
            conn.close()

    def record(self, sample):
        with self.lock:
            self.samples.append(sample)

    def submitter(self, seed):
        rng, form = random.Random(seed), self.forms[seed % len(self.forms)]
        while not self.stop.is_set():
            body, headers = submission(form, rng, self.port)
            started = time.monotonic()
            try:
                status, location, page = self.request("POST", "/report/", body, headers)
                found = re.fullmatch(r"/report/done/([^/]+)/", location)
                ok = status == 302 and found is not None
                detail = "" if ok else f"POST /report/ -> {status}{form_errors(page)}"
                number = found.group(1) if found else ""
            except (OSError, http.client.HTTPException) as error:
                ok, detail, number = False, f"POST /report/ -> {error!r}", ""
            self.record(Sample("submit", started, time.monotonic(), ok, detail, number))

    def reader(self, seed):
        rng = random.Random(seed)
        while not self.stop.is_set():
            path = f"/requests/{rng.choice(self.numbers)}/"
            started = time.monotonic()
            try:
                status, _location, _page = self.request("GET", path)
                ok, detail = status == 200, f"GET {path} -> {status}"
            except (OSError, http.client.HTTPException) as error:
                ok, detail = False, f"GET {path} -> {error!r}"
            self.record(Sample("status", started, time.monotonic(), ok, detail))

    def health(self):
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                status, _location, _page = self.request("GET", "/health/")
                detail = str(status)
            except (OSError, http.client.HTTPException) as error:
                detail = type(error).__name__
            self.record(Sample("health", started, time.monotonic(), detail == "200", detail))
            self.stop.wait(0.5)

    def start(self):
        targets = [self.submitter] * self.submitters + [self.reader] * self.readers
        self.threads = [
            threading.Thread(target=target, args=(i,), daemon=True)
            for i, target in enumerate(targets)
        ] + [threading.Thread(target=self.health, daemon=True)]
        for thread in self.threads:
            thread.start()

    def finish(self):
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=40)


# --- Reporting ----------------------------------------------------------------------------


def summarise(samples, kind):
    chosen = [s for s in samples if s.kind == kind]
    latencies = [s.ended - s.started for s in chosen if s.ok]
    return {
        "count": len(chosen),
        "errors": sum(not s.ok for s in chosen),
        "p50": 1000 * percentile(latencies, 50),
        "max": 1000 * max(latencies, default=float("nan")),
    }


def print_drill(title, fault_note, samples, fault_started, fault_ended, outcome):
    before = [s for s in samples if s.ended < fault_started]
    during = [s for s in samples if s.started < fault_ended and s.ended >= fault_started]
    after = [s for s in samples if s.started >= fault_ended]
    print(f"\n== {title}")
    print(f"   {fault_note}")
    print(
        f"   {'window':<34} {'kind':<7} {'requests':>8} {'errors':>6} {'p50 ms':>8} {'max ms':>8}"
    )
    for label, window in (
        ("before the fault", before),
        (f"during it ({fault_ended - fault_started:.1f} s, in flight)", during),
        (f"after it ({outcome['after_seconds']:.0f} s; errors must be 0)", after),
    ):
        for kind in ("submit", "status"):
            s = summarise(window, kind)
            print(
                f"   {label:<34} {kind:<7} {s['count']:>8} {s['errors']:>6} "
                f"{s['p50']:>8.0f} {s['max']:>8.0f}"
            )
            label = ""
        health = sorted({s.detail for s in window if s.kind == "health"})
        counts = ", ".join(
            f"{d} x{sum(s.detail == d for s in window if s.kind == 'health')}" for d in health
        )
        print(f"   {'':<34} /health/ {counts or '-'}")
    errors = [s for s in samples if not s.ok and s.kind != "health"]
    if errors:
        first = min(s.started for s in errors) - fault_started
        last = max(s.ended for s in errors) - fault_started
        print(f"   errors from {first:+.2f} s to {last:+.2f} s after the fault started")
        for detail in sorted({s.detail[:160] for s in errors})[:5]:
            print(f"     sample: {detail}")
    print(
        f"   submissions with a tracking number: {outcome['numbers']}; "
        f"routed: {outcome['routed']} ({outcome['verdict']}); "
        f"their emails: {outcome['emails_sent']} sent, {outcome['emails_pending']} pending, "
        f"{outcome['emails_failed']} failed"
    )


def wait_until_processed(database_url, numbers, timeout):
    """Poll until every submission is routed and its emails are sent (or time runs out)."""
    started = time.monotonic()
    query = """
        WITH mine AS (
            SELECT id, intake_processed_at FROM requests_app_servicerequest
            WHERE tracking_number = ANY(%s)
        )
        SELECT (SELECT count(*) FROM mine WHERE intake_processed_at IS NOT NULL),
               count(*) FILTER (WHERE n.status = 'sent'),
               count(*) FILTER (WHERE n.status = 'pending'),
               count(*) FILTER (WHERE n.status = 'failed')
        FROM notifications_notification n WHERE n.request_id IN (SELECT id FROM mine)
    """
    while True:
        try:
            with psycopg.connect(database_url, autocommit=True, connect_timeout=5) as conn:
                routed, sent, pending, failed = conn.execute(query, [numbers]).fetchone()
        except psycopg.Error:
            routed = sent = pending = failed = -1
        waited = time.monotonic() - started
        if (routed == len(numbers) and pending == 0) or waited > timeout:
            verdict = (
                f"all, {waited:.0f} s after the load stopped"
                if routed == len(numbers)
                else f"NOT ALL after {waited:.0f} s"
            )
            return {
                "numbers": len(numbers),
                "routed": routed,
                "verdict": verdict,
                "emails_sent": sent,
                "emails_pending": pending,
                "emails_failed": failed,
            }
        time.sleep(1)


# --- Drills -------------------------------------------------------------------------------


def run_drill(name, args, stack):
    load = Load(stack["port"], stack["forms"], stack["numbers"], args.submitters, args.readers)
    load.start()
    time.sleep(args.before)
    fault_started = time.monotonic()
    if name == "postgres":
        command = postgres_restart_command()
        print(f"[{time.strftime('%H:%M:%S')}] restarting PostgreSQL: {' '.join(command)}")
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        fault_ended = time.monotonic()
        print(f"[{time.strftime('%H:%M:%S')}] PostgreSQL is back (exit {done.returncode})")
        note = (
            f"{' '.join(command)} took {fault_ended - fault_started:.1f} s "
            f"(exit {done.returncode}{': ' + done.stderr.strip() if done.returncode else ''})"
        )
        title = "PostgreSQL restarted under load"
    elif name == "redis-stop":
        stack["redis"].stop()
        time.sleep(args.outage)
        stack["redis"].start()
        fault_ended = time.monotonic()
        note = f"redis-server stopped (SIGTERM) for {args.outage:g} s, then started empty"
        title = "Redis stopped under load"
    else:
        stack["redis"].freeze()
        time.sleep(args.outage)
        stack["redis"].thaw()
        fault_ended = time.monotonic()
        note = f"redis-server frozen (SIGSTOP) for {args.outage:g} s, then SIGCONT"
        title = "Redis frozen under load"
    time.sleep(args.after)
    load.finish()
    numbers = [s.number for s in load.samples if s.kind == "submit" and s.number]
    outcome = wait_until_processed(stack["database_url"], numbers, args.settle)
    outcome["after_seconds"] = args.after
    print_drill(title, note, load.samples, fault_started, fault_ended, outcome)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--drills",
        default="redis-stop,redis-freeze",
        help=f"comma-separated, from {', '.join(DRILLS)}; postgres only when named "
        "(it restarts the server everybody on this machine uses)",
    )
    parser.add_argument("--before", type=float, default=5, help="seconds of load before")
    parser.add_argument("--after", type=float, default=20, help="seconds of load after")
    parser.add_argument("--outage", type=float, default=10, help="seconds Redis stays down")
    parser.add_argument(
        "--settle", type=float, default=120, help="seconds to wait for the work to finish"
    )
    parser.add_argument("--workers", type=int, default=3, help="gunicorn sync workers")
    parser.add_argument("--submitters", type=int, default=2, help="submitting threads")
    parser.add_argument("--readers", type=int, default=2, help="status-lookup threads")
    parser.add_argument("--seed-requests", type=int, default=50)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--db-name", default="civicdesk_fault_drills")
    parser.add_argument("--max-seconds", type=float, default=900, help="hard stop")
    parser.add_argument("--keep-logs", default="", help="copy the process logs to this folder")
    args = parser.parse_args()
    args.drills = [d.strip() for d in args.drills.split(",") if d.strip()]
    unknown = set(args.drills) - set(DRILLS)
    if unknown:
        parser.error(f"unknown drills: {', '.join(sorted(unknown))}")
    return args


def main():
    args = parse_args()
    var_dir = Path(tempfile.mkdtemp(prefix="civicdesk-faults-"))
    redis = PrivateRedis(free_port(), var_dir / "redis.log")
    args.redis_url = redis.url  # read by bench_environment
    database_url = f"{args.postgres}/{args.db_name}"
    env = bench_environment(args, var_dir, database_url)
    # The sweeps treat unfinished intake as lost after this long (production: 60 s).
    env["INTAKE_SWEEP_GRACE_SECONDS"] = "5"
    # Plain HTTP on loopback, like SECURE_COOKIES=0 in bench_environment.
    env["SECURE_SSL_REDIRECT"] = "0"
    procs = {"gunicorn": None, "worker": None, "db": False}

    def cleanup():
        stop_gunicorn(procs["gunicorn"])
        stop_group(procs["worker"])
        redis.stop()
        if args.keep_logs:
            Path(args.keep_logs).mkdir(parents=True, exist_ok=True)
            for log in var_dir.glob("*.log"):
                shutil.copy(log, args.keep_logs)
        if procs["db"]:
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

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)
    timer = threading.Timer(args.max_seconds, watchdog)
    timer.daemon = True
    timer.start()
    try:
        print(f"Creating {args.db_name}, migrating, seeding {args.seed_requests} ...", flush=True)
        recreate_database(args.postgres, args.db_name)
        procs["db"] = True
        numbers, pg_info = prepare_database(args, env, database_url)
        redis.start()
        port = free_port()
        procs["gunicorn"] = start_gunicorn(args, env, port, var_dir / "gunicorn.log")
        procs["worker"] = start_worker(env, var_dir / "worker.log")
        stack = {
            "port": port,
            "forms": [PortalForm(port) for _ in range(args.submitters)],
            "numbers": numbers,
            "database_url": database_url,
            "redis": redis,
        }
        print(
            f"gunicorn ({args.workers} sync workers) on {HOST}:{port}, a Celery worker with "
            f"beat, PostgreSQL {pg_info['version']}, Redis on port {redis.port}; "
            f"{args.submitters} submitting and {args.readers} reading threads, DEBUG off.",
            flush=True,
        )
        # A fresh worker has no heartbeat until beat's first one (30 s): wait for it, so that
        # what /health/ answers during the drills is about the faults.
        started, status = time.monotonic(), None
        while time.monotonic() - started < 60 and status != 200:
            time.sleep(1)
            status = Load(port, [], [], 0, 0).request("GET", "/health/")[0]
        print(f"/health/ answered {status} after {time.monotonic() - started:.0f} s of waiting.")
        for name in args.drills:
            print(f"Drill {name}: {args.before:g} s of load, the fault, {args.after:g} s more")
            run_drill(name, args, stack)
        if "postgres" not in args.drills:
            print("\n(PostgreSQL restart not run: add it with --drills postgres,...)")
        for name in ("gunicorn.log", "worker.log"):
            text = (var_dir / name).read_text(errors="replace")
            errors = len(ERROR_LINE.findall(text))
            lost = text.count("Connection to broker lost")
            print(f"{name}: {errors} ERROR lines, {lost} lost broker connections")
    finally:
        timer.cancel()
        cleanup()


if __name__ == "__main__":
    main()
