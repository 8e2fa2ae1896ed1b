"""Load and soak: the storm profile against gunicorn + PostgreSQL + Redis + worker + beat.

    .venv/bin/python bench/load.py [--duration 600] [--submit-rate 10] [--status-rate 50]

Creates a throwaway database, seeds the demo city, starts gunicorn, a Celery worker and
beat on this machine with Redis as the broker, and drives them with Locust
(bench/locustfile.py): residents submitting reports with a 1 MB photo, status lookups,
portal browsing, Open311 GETs and POSTs and a dispatcher's admin lists, each at a fixed
rate. Prints throughput, p50/p95/p99 and errors per endpoint, how long each submission
took to be routed, and the memory of web and worker processes over the run. Figures, not
a pass/fail test; the targets of issue 8 are printed beside them.
"""

import argparse
import csv
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.portal_throughput import (  # noqa: E402
    HOST,
    PYTHON,
    ROOT,
    bench_environment,
    check_redis_empty,
    drop_database,
    free_port,
    gunicorn_workers,
    prepare_database,
    recreate_database,
    start_gunicorn,
    stop_gunicorn,
)

LOCUST = str(Path(sys.executable).with_name("locust"))
CLK_TCK = os.sysconf("SC_CLK_TCK")
ROUTED_WITHIN_S = 10


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=600, help="seconds of load (600)")
    parser.add_argument("--submit-rate", type=int, default=10, help="submissions/s (10)")
    parser.add_argument("--status-rate", type=int, default=50, help="status lookups/s (50)")
    parser.add_argument(
        "--other-rate", type=int, default=1, help="per second, of each other kind (1)"
    )
    parser.add_argument("--workers", type=int, default=4, help="gunicorn sync workers (4)")
    parser.add_argument(
        "--worker-nice",
        type=int,
        default=10,
        help="Celery worker and beat run at this lower CPU priority, as docker-compose.yml "
        "gives them a smaller CPU share: residents waiting on a page come first (10; 0: same "
        "priority as the web)",
    )
    parser.add_argument(
        "--max-requests",
        type=int,
        default=2000,
        help="gunicorn recycles a worker after this many requests, as in production (2000; "
        "0: never)",
    )
    parser.add_argument("--seed-requests", type=int, default=300)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--db-name", default="civicdesk_load")
    parser.add_argument(
        "--template-db",
        default="",
        help="copy this seeded database instead of seeding a new one (portal_throughput.py)",
    )
    parser.add_argument(
        "--redis-url",
        default="redis://127.0.0.1:6379/12",
        help="an empty Redis database for the broker (emptied again afterwards)",
    )
    return parser.parse_args()


def start(command, env, log_path, *, nice=0):
    return subprocess.Popen(
        ["nice", "-n", str(nice), *command] if nice else command,
        env=env,
        cwd=ROOT,
        stdout=open(log_path, "ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop(process):
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def rss_mb(pid) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0.0


def children(pid) -> list[str]:
    try:
        return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except FileNotFoundError:
        return []


def cpu_seconds(pid) -> float:
    """CPU time of a process, of its children that ended (recycled gunicorn workers,
    replaced Celery processes) and of those still running."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    own = sum(int(f) for f in fields[11:15]) / CLK_TCK  # utime stime cutime cstime
    return own + sum(cpu_seconds(child) for child in children(pid))


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent on anything but idling, since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    return (sum(values[:8]) - idle) / CLK_TCK


class CpuUse:
    """CPU seconds per second of load, by part: what the storm costs, and where."""

    def __init__(self, parts):
        self.parts = parts  # name: pid
        self.start = self._sample()

    def _sample(self):
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return (
            time.monotonic(),
            machine_busy_seconds(),
            {name: cpu_seconds(pid) for name, pid in self.parts.items()},
            usage.ru_utime + usage.ru_stime,  # Locust, once it has ended
        )

    def report(self) -> str:
        then, busy0, parts0, children0 = self.start
        now, busy1, parts1, children1 = self._sample()
        seconds = now - then
        used = {name: (parts1[name] - parts0[name]) / seconds for name in self.parts}
        used["locust"] = (children1 - children0) / seconds
        used["PostgreSQL, Redis, rest"] = (busy1 - busy0) / seconds - sum(used.values())
        shares = ", ".join(f"{name} {value:.2f}" for name, value in used.items())
        busy = (busy1 - busy0) / seconds
        return f"CPU (cores busy on average): {busy:.2f} of {os.cpu_count()}: {shares}"


class MemorySampler(threading.Thread):
    """RSS of every gunicorn worker and of the Celery worker's processes, every 10 s."""

    def __init__(self, gunicorn_pid, worker_pid):
        super().__init__(daemon=True)
        self.gunicorn_pid, self.worker_pid = gunicorn_pid, worker_pid
        self.samples = []  # (seconds, web MB per worker, worker MB total)
        self.stopped = threading.Event()
        self.started = time.monotonic()

    def run(self):
        while not self.stopped.wait(10):
            web = [rss_mb(pid) for pid in gunicorn_workers(self.gunicorn_pid)]
            worker = rss_mb(self.worker_pid) + sum(rss_mb(p) for p in children(self.worker_pid))
            self.samples.append((time.monotonic() - self.started, max(web or [0]), worker))


def api_key(env) -> str:
    done = subprocess.run(
        [
            PYTHON,
            "manage.py",
            "shell",
            "-c",
            "from requests_app.models import ApiClient;"
            "from requests_app.open311 import api_client_issue_key;"
            "print(api_client_issue_key("
            "ApiClient(name='Load test', requests_per_minute=100000)))",
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1]


def locust_rows(csv_prefix):
    with open(f"{csv_prefix}_stats.csv") as f:
        return list(csv.DictReader(f))


def routing_delays(database_url, numbers, wait_s=60):
    """Seconds from submission to routing for every number, waiting for the queue to drain."""
    deadline = time.monotonic() + wait_s
    while True:
        with psycopg.connect(database_url) as conn:
            rows = conn.execute(
                "SELECT tracking_number, EXTRACT(EPOCH FROM intake_processed_at - created_at) "
                "FROM requests_app_servicerequest WHERE tracking_number = ANY(%s)",
                [numbers],
            ).fetchall()
        pending = [n for n, delay in rows if delay is None]
        if not pending or time.monotonic() > deadline:
            return rows
        time.sleep(2)


def print_report(args, rows, delays, submitted, memory, pg_errors):
    print(
        f"\n{'endpoint':<42} {'requests':>9} {'req/s':>7} {'errors':>7} "
        f"{'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7}"
    )
    for row in rows:
        print(
            f"{row['Name'][:42]:<42} {int(row['Request Count']):>9,} "
            f"{float(row['Requests/s']):>7.1f} {int(row['Failure Count']):>7} "
            f"{row['50%']:>7} {row['95%']:>7} {row['99%']:>7}"
        )
    found = {n: d for n, d in delays}
    routed = [float(d) for d in found.values() if d is not None]
    missing = [n for n in submitted if n not in found]
    unrouted = [n for n, d in found.items() if d is None]
    late = sum(1 for d in routed if d > ROUTED_WITHIN_S)
    print(
        f"\nSubmissions that got a tracking number: {len(submitted):,}; in the database: "
        f"{len(found):,}; missing: {len(missing)}; not routed: {len(unrouted)}"
    )
    if routed:
        routed.sort()
        print(
            f"Routed after p50 {statistics.median(routed):.2f} s, "
            f"p95 {routed[int(0.95 * (len(routed) - 1))]:.2f} s, max {routed[-1]:.2f} s; "
            f"later than {ROUTED_WITHIN_S} s: {late}"
        )
    if memory:
        first, last = memory[: max(1, len(memory) // 10)], memory[-max(1, len(memory) // 10) :]
        print(
            "Memory (RSS): largest web worker "
            f"{statistics.mean(s[1] for s in first):.0f} MB over the first tenth of the run, "
            f"{statistics.mean(s[1] for s in last):.0f} MB over the last; Celery worker "
            f"{statistics.mean(s[2] for s in first):.0f} MB, then "
            f"{statistics.mean(s[2] for s in last):.0f} MB"
        )
    submit = next((r for r in rows if r["Name"].startswith("POST /report/")), None)
    total_errors = sum(int(r["Failure Count"]) for r in rows)
    print(
        "\nTargets (issue 8): zero errors (seen "
        f"{total_errors}), p95 submit < 500 ms (seen {submit['95%'] if submit else '-'} ms), "
        f"every submission routed within {ROUTED_WITHIN_S} s (late: {late}, "
        f"unrouted: {len(unrouted) + len(missing)}), memory flat (above). "
        f"Server log errors: {pg_errors}."
    )


def main():
    args = parse_args()
    var_dir = Path(tempfile.mkdtemp(prefix="civicdesk-load-"))
    database_url = f"{args.postgres}/{args.db_name}"
    env = bench_environment(args, var_dir, database_url)
    redis_client = check_redis_empty(args.redis_url)
    gunicorn = worker = beat = None
    try:
        print(f"Creating {args.db_name}, migrating, seeding ...", flush=True)
        recreate_database(args.postgres, args.db_name)
        numbers, _pg_info = prepare_database(args, env, database_url)
        numbers_file = var_dir / "numbers.txt"
        numbers_file.write_text("\n".join(numbers))
        key = api_key(env)
        port = free_port()
        gunicorn = start_gunicorn(args, env, port, var_dir / "gunicorn.log")
        celery = [PYTHON, "-m", "celery", "-A", "civicdesk"]
        worker = start(
            [*celery, "worker", "--loglevel=WARNING", "--concurrency=2", "-Q", "celery,email"],
            env,
            var_dir / "worker.log",
            nice=args.worker_nice,
        )
        beat = start(
            [*celery, "beat", "--loglevel=WARNING", "-s", str(var_dir / "beat-schedule")],
            env,
            var_dir / "beat.log",
            nice=args.worker_nice,
        )
        time.sleep(5)
        sampler = MemorySampler(gunicorn.pid, worker.pid)
        sampler.start()
        cpu = CpuUse({"web": gunicorn.pid, "worker": worker.pid, "beat": beat.pid})
        submitted_log = var_dir / "submitted.txt"
        users = args.submit_rate + args.status_rate + 4 * args.other_rate
        print(
            f"Load for {args.duration} s: {args.submit_rate} submissions/s with a photo, "
            f"{args.status_rate} status lookups/s, {args.other_rate}/s each of browsing, "
            f"Open311 GET, Open311 POST and admin lists ({users} Locust users) ...",
            flush=True,
        )
        subprocess.run(
            [
                LOCUST,
                "-f",
                str(ROOT / "bench" / "locustfile.py"),
                "--headless",
                "--host",
                f"http://{HOST}:{port}",
                "--users",
                str(users),
                "--spawn-rate",
                str(users),
                "--run-time",
                f"{args.duration}s",
                "--csv",
                str(var_dir / "locust"),
                "--only-summary",
                "--loglevel",
                "WARNING",
            ],
            env={
                **env,
                "LOAD_SUBMIT_RATE": str(args.submit_rate),
                "LOAD_STATUS_RATE": str(args.status_rate),
                "LOAD_OTHER_RATE": str(args.other_rate),
                "LOAD_NUMBERS": str(numbers_file),
                "LOAD_API_KEY": key,
                "LOAD_SUBMITTED": str(submitted_log),
            },
            cwd=ROOT,
            check=False,
            stdout=subprocess.DEVNULL,
        )
        sampler.stopped.set()
        cpu_report = cpu.report()
        submitted = submitted_log.read_text().split() if submitted_log.exists() else []
        delays = routing_delays(database_url, submitted)
        log = (var_dir / "gunicorn.log").read_text(errors="replace")
        server_errors = log.count("Traceback") + log.count("[CRITICAL]")
        print_report(
            args, locust_rows(var_dir / "locust"), delays, submitted, sampler.samples, server_errors
        )
        print(cpu_report)
    finally:
        stop_gunicorn(gunicorn)
        stop(worker)
        stop(beat)
        keys = list(redis_client.scan_iter(count=1000))
        if keys:
            redis_client.delete(*keys)
        drop_database(args.postgres, args.db_name)
        print(f"Logs were in {var_dir} (removed).")
        import shutil

        shutil.rmtree(var_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
