import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import kombu.pools
import pytest
from django.conf import settings as django_settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.utils import translation

from requests_app import history_guard
from requests_app.models import Priority, StaffRole

from .factories import CategoryFactory, DepartmentFactory, staff_user
from .photos import make_image

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data" / "311"


@pytest.fixture(autouse=True)
def _media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture(autouse=True)
def _default_language():
    """Each test starts in English: a test client request in Spanish leaves Spanish active
    in this thread, and text written outside a request (history notes) would follow it."""
    translation.activate(django_settings.LANGUAGE_CODE)
    yield
    translation.activate(django_settings.LANGUAGE_CODE)


@pytest.fixture(autouse=True)
def _history_guard(request):
    """Keep the append-only triggers in place on SQLite around flushes.

    PostgreSQL's test flush is a TRUNCATE, which row triggers do not see. SQLite's is a
    DELETE, which the triggers refuse, so for transactional tests they are lifted just for
    the flush and put back by the next test.
    """
    marker = request.node.get_closest_marker("django_db")
    transactional = (
        (marker is not None and marker.kwargs.get("transaction"))
        or "transactional_db" in request.fixturenames
        or "live_server" in request.fixturenames
    )
    uses_db = marker is not None or "db" in request.fixturenames or transactional
    if not uses_db or connection.vendor != "sqlite":
        yield
        return
    request.getfixturevalue("transactional_db" if transactional else "db")
    history_guard.install(connection)
    yield
    if transactional:
        history_guard.uninstall(connection)


@pytest.fixture
def streets(db):
    return DepartmentFactory(slug="streets", name="Streets")


@pytest.fixture
def pothole(streets):
    return CategoryFactory(
        code="pothole",
        name="Pothole",
        group="Streets and sidewalks",
        department=streets,
        sla_hours=72,
        default_priority=Priority.NORMAL,
    )


@pytest.fixture
def dispatcher(db):
    return staff_user("dispatcher", StaffRole.DISPATCHER)


def upload(name="photo.jpg", data=None, content_type="image/jpeg", **image_options):
    return SimpleUploadedFile(
        name, data if data is not None else make_image(**image_options), content_type=content_type
    )


@pytest.fixture
def photo_upload():
    return upload


# --- A real Celery worker ----------------------------------------------------------------


def _database_url():
    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{Path(s['NAME']).resolve()}"
    auth = s["USER"] + (f":{s['PASSWORD']}" if s.get("PASSWORD") else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


class WorkerProcess:
    def __init__(self, env, log_path):
        self.env = env
        self.log_path = log_path
        self.process = None

    def start(self):
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "civicdesk",
                "worker",
                "--loglevel=INFO",
                "--concurrency=1",
                "--without-mingle",
                "--without-gossip",
                "--pool=prefork",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def wait_ready(self, timeout=30):
        assert wait_for(lambda: " ready." in self.output(), timeout=timeout), self.output()
        return self

    def stop(self, sig=signal.SIGTERM):
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()

    def output(self):
        return Path(self.log_path).read_text(errors="replace")


@pytest.fixture
def celery_worker_env(transactional_db, settings, tmp_path):
    """Environment for a worker process that shares this test's database and broker."""

    env = {
        **os.environ,
        "DATABASE_URL": _database_url(),
        "DEBUG": "1",
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "INTAKE_SWEEP_GRACE_SECONDS": "1",
    }
    if not settings.REDIS_URL:
        # Filesystem broker: a folder of its own, so no other local worker takes the tasks.
        broker_dir = tmp_path / "broker"
        broker_dir.mkdir()
        env["CELERY_FILESYSTEM_BROKER_DIR"] = str(broker_dir)
        use_broker(
            "filesystem://",
            {
                "data_folder_in": str(broker_dir),
                "data_folder_out": str(broker_dir),
                "control_folder": str(broker_dir / "control"),
                "store_processed": False,
                "polling_interval": 0.2,
            },
        )
    else:
        # Tasks left in the broker by an earlier run would name rows of another database.
        import redis

        redis.Redis.from_url(settings.REDIS_URL).flushdb()
    yield env
    use_broker(settings.CELERY_BROKER_URL, settings.CELERY_BROKER_TRANSPORT_OPTIONS)


def use_broker(url, transport_options):
    """Point this test process's Celery producer at another broker."""
    from civicdesk import celery
    from civicdesk.celery import app

    celery._broker_down_until = 0.0  # a new broker: forget the last one's failure
    app.conf.broker_url = url
    app.conf.broker_transport_options = transport_options
    # Forget the pooled connections (kombu keeps producer pools globally too).
    app._pool = None
    app.amqp._producer_pool = None
    kombu.pools.reset()


@pytest.fixture
def own_broker(settings, tmp_path):
    """Reports sent through a live server enqueue intake after commit; without Redis keep
    those tasks in a folder of this test's own, away from any developer's worker."""
    if settings.REDIS_URL:
        yield
        return
    folder = tmp_path / "broker"
    folder.mkdir()
    use_broker(
        "filesystem://",
        {
            "data_folder_in": str(folder),
            "data_folder_out": str(folder),
            "control_folder": str(folder / "control"),
            "store_processed": False,
        },
    )
    yield
    use_broker(settings.CELERY_BROKER_URL, settings.CELERY_BROKER_TRANSPORT_OPTIONS)


@pytest.fixture
def celery_worker(celery_worker_env, tmp_path):
    worker = WorkerProcess(celery_worker_env, tmp_path / "worker.log").start().wait_ready()
    yield worker
    worker.stop()


def wait_for(predicate, timeout=15.0, interval=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    return predicate()


def redis_server_binary():
    return shutil.which("redis-server")


# --- Headless Chromium ---------------------------------------------------------------------

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / "tests" / "artifacts"


@pytest.fixture(scope="session")
def chromium():
    """Debian's Chromium driven by Playwright (which cannot download its own here)."""
    executable = os.environ.get("PLAYWRIGHT_CHROMIUM", "/usr/bin/chromium")
    if not Path(executable).exists():
        pytest.skip(f"no Chromium at {executable}")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; Django must still allow ORM use.
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
