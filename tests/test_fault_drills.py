"""The fault drills of issue 8 ("Production readiness") that fit in CI time.

Already proven elsewhere, and not repeated here:

- tests/test_worker.py: Redis *stopped* (nothing listening) while a request is submitted,
  processed once Redis returns; a worker SIGKILLed *mid-routing* routes exactly once.
- tests/test_intake.py: a dead broker never fails intake; a send retried or run twice
  sends once; provider failures back off.
- tests/test_sla.py: four SLA sweeps at once take each rung once.

Here:

1. Redis *frozen* (SIGSTOP: connections are accepted, nothing is answered) while residents
   submit through the portal: each answer comes in under 3 s with a tracking number, and
   a real worker finishes every submission, each email once, after SIGCONT.
2. A worker SIGKILLed *mid-email*, before and after the provider accepted the message.
3. The email provider down for an hour of the test's clock while requests keep changing:
   nothing lost, nothing doubled, the backlog visible in the admin.
4. Two beats at once (SLA escalation, survey dispatch, department digest): each effect once.

A known gap, marked xfail(strict=True) with an exception of its own, so that any other
failure still fails and a fix shows up as an unexpected pass:

- 2, killed after the provider accepted: the row's transaction dies with the worker, the
  row is still pending, the sweep sends the email again. Delivery is at-least-once.

Fixed since these drills were written: a frozen Redis costs a submission one 0.5 s publish
timeout, after which enqueues pause for a few seconds (civicdesk/celery.py); and an email
is given up only after both 8 attempts and 24 hours, however short the provider's
Retry-After.

PostgreSQL restarted under load cannot run here (the test database lives on that server):
see bench/fault_drills.py, which also stops Redis under gunicorn.
"""

import importlib.util
import re
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.apps import apps
from django.conf import settings
from django.db import connection
from django.utils import timezone

from notifications.models import DigestRun, Notification
from notifications.services import outbox_sweep
from notifications.tasks import send_department_digests, sweep_outbox
from requests_app import sla
from requests_app.models import (
    Department,
    EscalationClock,
    HistoryEntry,
    ServiceRequest,
    StaffRole,
    Status,
)
from requests_app.services import Intake, request_process_intake, request_submit
from requests_app.tasks import sweep_intake, sweep_sla
from surveys.models import Survey
from surveys.tasks import dispatch_surveys

from . import fake_esp
from .conftest import WorkerProcess, redis_server_binary, use_broker, wait_for
from .factories import (
    CITY_CENTER,
    CategoryFactory,
    DepartmentFactory,
    ServiceRequestFactory,
    staff_user,
)

FAKE_ESP = "tests.fake_esp.EmailBackend"


def submit(category, email="maria@example.org", km_north=0, **extra):
    return request_submit(
        Intake(
            category=category,
            description="Pothole by the school",
            lat=CITY_CENTER[0] + km_north / 111,
            lng=CITY_CENTER[1],
            reporter_email=email,
            **extra,
        )
    )


def deliveries(esp_dir) -> Counter:
    """How often the provider accepted each (recipient, subject)."""
    return Counter((message["to"][0], message["subject"]) for message in fake_esp.sent(esp_dir))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _accepts(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


# --- 1. Redis frozen while residents submit -----------------------------------------------


@dataclass
class PrivateRedis:
    process: subprocess.Popen
    port: int

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    def freeze(self):
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self):
        self.process.send_signal(signal.SIGCONT)


@pytest.fixture
def private_redis():
    """A redis-server of the test's own on a spare port, stopped afterwards even if frozen."""
    if not redis_server_binary():
        pytest.skip("needs redis-server to freeze a Redis")
    port = _free_port()
    process = subprocess.Popen(
        [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1"]
        + ["--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_for(lambda: _accepts(port), timeout=10), "redis-server did not start"
        yield PrivateRedis(process, port)
    finally:
        process.send_signal(signal.SIGCONT)  # a stopped process would not act on SIGTERM
        process.terminate()
        process.wait(timeout=10)


def redis_transport_options(monkeypatch) -> dict:
    """The broker options civicdesk/settings.py gives a Redis broker, from that module.

    Without REDIS_URL (the SQLite run) this process has the filesystem broker's options,
    so the settings module is evaluated once more, under another name, with REDIS_URL set.
    """
    if settings.REDIS_URL:
        return dict(settings.CELERY_BROKER_TRANSPORT_OPTIONS)
    import civicdesk.settings

    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:9/0")
    spec = importlib.util.spec_from_file_location(
        "_settings_with_redis", civicdesk.settings.__file__
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return dict(module.CELERY_BROKER_TRANSPORT_OPTIONS)


def portal_report(category, n):
    lat, lng = CITY_CENTER
    return {
        "category": category.pk,
        "description": f"Pothole number {n} by the bus stop",
        "address": f"{n} Main St",
        "lat": f"{lat + n / 111_000:.6f}",
        "lng": f"{lng:.6f}",
        "name": "Maria Lopez",
        "email": f"resident{n}@example.org",
        "website": "",
        # Seen the "already reported nearby?" step: file it anyway (as nearby.js does).
        "file_anyway": "1",
    }


class AnsweredTooSlowly(AssertionError):
    """A portal submission took 3 s or more while Redis was frozen."""


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_portal_answers_within_3s_while_redis_is_frozen_and_all_is_done_after_it_thaws(
    pothole, celery_worker_env, private_redis, client, tmp_path, monkeypatch
):
    use_broker(private_redis.url, redis_transport_options(monkeypatch))
    # A web process that has been serving holds an open broker connection: warm the pool so
    # that the freeze catches an established connection as well as new ones.
    sweep_outbox.apply_async()
    private_redis.freeze()

    answers = []
    for n in range(1, 4):
        started = time.monotonic()
        response = client.post("/report/", portal_report(pothole, n), REMOTE_ADDR=f"192.0.2.{n}")
        took = time.monotonic() - started
        assert response.status_code == 302, response.content.decode()[:2000]
        number = re.fullmatch(r"/report/done/([^/]+)/", response["Location"]).group(1)
        assert ServiceRequest.objects.filter(tracking_number=number).exists()
        # Whatever the bound, a frozen broker must never hang the portal.
        assert took < 30, f"submission {n} waited {took:.1f} s"
        answers.append((number, took))

    private_redis.thaw()
    esp = tmp_path / "esp"
    worker = WorkerProcess(
        {
            **celery_worker_env,
            "REDIS_URL": private_redis.url,
            "EMAIL_BACKEND": FAKE_ESP,
            "FAKE_ESP_DIR": str(esp),
        },
        tmp_path / "worker.log",
    )
    requests = ServiceRequest.objects.filter(tracking_number__in=[n for n, _ in answers])
    try:
        worker.start().wait_ready()
        # The sweep takes requests older than its grace (1 s with the test worker's settings);
        # on a fast machine the worker is ready sooner, so wait as beat's next run would.
        time.sleep(max(0, 1.5 - (time.monotonic() - started)))
        # What beat sends every 30 s; the enqueues the freeze swallowed are redone by these.
        sweep_intake.apply_async()
        sweep_outbox.apply_async()
        assert wait_for(
            lambda: requests.filter(intake_processed_at__isnull=False).count() == 3, timeout=40
        ), worker.output()
        # Received and "assigned" for each: six emails, sent by tasks and the sweep.
        notifications = Notification.objects.filter(request__in=requests)
        assert wait_for(lambda: notifications.filter(status="sent").count() == 6, timeout=40), (
            worker.output()
        )
        time.sleep(1)  # a late duplicate task, if any, has had its chance
    finally:
        worker.stop()

    assert set(requests.values_list("status", flat=True)) == {Status.ASSIGNED}
    for request in requests:
        assert request.history.filter(action=HistoryEntry.Action.ROUTING).count() == 1
    received = notifications.filter(kind=Notification.Kind.RECEIVED)
    assert sorted(received.values_list("status", "attempts")) == [("sent", 1)] * 3
    delivered = deliveries(esp)
    assert len(delivered) == 6 and set(delivered.values()) == {1}, delivered

    slow = [f"{number}: {took:.1f} s" for number, took in answers if took >= 3]
    if slow:
        raise AnsweredTooSlowly(f"answers while Redis was frozen: {', '.join(slow)}")


# --- 2. A worker killed mid-email ---------------------------------------------------------


class DeliveredTwice(AssertionError):
    """The provider accepted the same email twice."""


def redeliver_unacked():
    """What kombu does for a dead worker's unacknowledged message once visibility_timeout
    (600 s in settings) has passed: put it back in the queue. Here, at once."""
    from kombu import Connection

    with Connection(settings.REDIS_URL, transport_options={"visibility_timeout": 0}) as conn:
        conn.default_channel.qos.restore_visible(num=100)


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "stage",
    [
        "before",
        pytest.param(
            "after",
            marks=pytest.mark.xfail(
                strict=True,
                raises=DeliveredTwice,
                reason=(
                    "at-least-once: killed after the provider accepted the email but before "
                    "the row's commit, the row is still pending and the sweep sends it again; "
                    "only a provider-side idempotency key could make that exactly once"
                ),
            ),
        ),
    ],
    ids=["before-provider-accepts", "after-provider-accepts"],
)
def test_worker_killed_mid_email_delivers_it_once(pothole, celery_worker_env, tmp_path, stage):
    esp = tmp_path / "esp"
    env = {**celery_worker_env, "EMAIL_BACKEND": FAKE_ESP, "FAKE_ESP_DIR": str(esp)}
    request = submit(pothole)  # intake, which sends the confirmation before routing emails
    email = Notification.objects.get(request=request, kind=Notification.Kind.RECEIVED)

    first = WorkerProcess({**env, "FAKE_ESP_HOLD": stage}, tmp_path / "worker1.log").start()
    try:
        assert wait_for(lambda: (esp / "holding").exists(), timeout=60), first.output()
        first.stop(signal.SIGKILL)
    finally:
        first.stop()
    killed_task = re.search(r"send_notification\[([0-9a-f-]+)\] received", first.output())
    assert killed_task, first.output()

    # The killed attempt's transaction died with it: the row is as it was.
    email.refresh_from_db()
    assert (email.status, email.attempts) == ("pending", 0)
    assert len(fake_esp.sent(esp)) == (1 if stage == "after" else 0)

    second = WorkerProcess(env, tmp_path / "worker2.log")
    try:
        second.start().wait_ready()
        sweep_outbox.apply_async()  # beat, every 30 s
        sweep_intake.apply_async()
        rows = Notification.objects.filter(request=request)
        assert wait_for(
            lambda: rows.count() == 2 and not rows.exclude(status="sent").exists(), timeout=40
        ), second.output()
        if settings.REDIS_URL:
            # acks_late kept the killed task's message; its redelivery must change nothing.
            # (The filesystem broker has no acknowledgements: the message died with the
            # worker, and only the sweep finished the work.)
            redeliver_unacked()
            line = wait_for(
                lambda: re.search(
                    rf"send_notification\[{killed_task.group(1)}\] succeeded.*", second.output()
                ),
                timeout=30,
            )
            assert line and "'skipped'" in line.group(0), second.output()
    finally:
        second.stop()

    email.refresh_from_db()
    assert (email.status, email.attempts) == ("sent", 1)
    assert email.sent_at is not None
    copies = deliveries(esp)[(request.reporter_email, email.subject)]
    if copies != 1:
        raise DeliveredTwice(f"the confirmation email was delivered {copies} times")


# --- 3. The email provider down for an hour -----------------------------------------------


@pytest.fixture
def frozen(monkeypatch):
    """A clock the test moves by hand, for timezone.now() and for model defaults.

    Field defaults such as Notification.next_attempt_at captured the real timezone.now when
    the models were defined; Django caches them per field, so that cache is patched too.
    """

    class Clock:
        now = timezone.now().replace(microsecond=0)

        def tick(self, **delta):
            self.now += timedelta(**delta)

    clock = Clock()
    real_now = timezone.now
    monkeypatch.setattr(timezone, "now", lambda: clock.now)
    for model in apps.get_models():
        for field in model._meta.concrete_fields:
            if field.default is real_now:
                monkeypatch.setattr(field, "_get_default", lambda: clock.now)
    return clock


class GaveUp(AssertionError):
    """Notifications were marked failed while the provider was only down for a while."""


@pytest.mark.parametrize(
    "retry_after",
    [
        "none",
        "60",
    ],
    ids=["no-retry-after", "retry-after-60s"],
)
def test_provider_down_for_an_hour_loses_nothing_doubles_nothing_and_shows_the_backlog(
    pothole, frozen, settings, monkeypatch, tmp_path, client, retry_after
):
    esp = tmp_path / "esp"
    settings.EMAIL_BACKEND = FAKE_ESP
    monkeypatch.setenv("FAKE_ESP_DIR", str(esp))
    monkeypatch.setenv("FAKE_ESP_RETRY_AFTER", retry_after)
    outage_ends = frozen.now + timedelta(hours=1)
    monkeypatch.setenv("FAKE_ESP_DOWN_UNTIL", str(outage_ends.timestamp()))
    # No task is enqueued in this (non-transactional) test: beat's outbox sweep, every 30 s,
    # does all the sending, which is also what happens when the send tasks themselves fail.

    def beat(until):
        while frozen.now < until:
            outbox_sweep()
            failed = Notification.objects.filter(status="failed")
            if failed.exists():
                minutes = (frozen.now - start).total_seconds() / 60
                raise GaveUp(
                    f"{failed.count()} notifications failed {minutes:.0f} minutes into the "
                    f"outage, after {failed.first().attempts} attempts"
                )
            frozen.tick(seconds=30)

    start = frozen.now
    # Half a kilometre apart: five problems, not one group of duplicates.
    requests = [submit(pothole, email=f"resident{n}@example.org", km_north=n / 2) for n in range(5)]
    beat(start + timedelta(minutes=5))
    for request in requests:
        request_process_intake(request.pk)  # routed: "assigned" emails
    beat(start + timedelta(minutes=20))
    for request in requests[:3]:
        request.refresh_from_db()
        request.change_status(Status.IN_PROGRESS)
    beat(start + timedelta(minutes=40))
    for request in requests[:2]:
        request.refresh_from_db()
        request.change_status(Status.COMPLETED, note="Filled the hole")
    beat(outage_ends - timedelta(minutes=1))

    # An hour in: every email is still waiting, none given up, none sent.
    rows = Notification.objects.order_by("pk")
    assert rows.count() == 5 + 5 + 3 + 2
    assert set(rows.values_list("status", flat=True)) == {"pending"}
    assert fake_esp.sent(esp) == []
    # The oldest email of each resident is the one being tried (later ones keep their
    # order behind it, untried): it shows its attempts and the provider's answer.
    heads = rows.filter(kind=Notification.Kind.RECEIVED)
    for head in heads:
        assert head.attempts >= 2 and "503 provider unavailable" in head.last_error, head
    assert not rows.exclude(kind=Notification.Kind.RECEIVED).filter(attempts__gt=0).exists()

    # Staff see the backlog in the admin.
    client.force_login(staff_user("admin", StaffRole.ADMINISTRATOR))
    changelist = "/admin/notifications/notification/"
    pending = client.get(changelist, {"status__exact": "pending"})
    assert pending.status_code == 200
    assert pending.context["cl"].result_count == 15
    assert client.get(changelist, {"status__exact": "failed"}).context["cl"].result_count == 0
    assert client.get(changelist, {"status__exact": "sent"}).context["cl"].result_count == 0
    detail = client.get(f"{changelist}{heads[0].pk}/change/")
    assert "503 provider unavailable" in detail.content.decode()

    # The provider is back: the sweeps send everything, each once, each resident's in order.
    beat(outage_ends + timedelta(minutes=30))
    assert set(rows.values_list("status", flat=True)) == {"sent"}
    delivered = deliveries(esp)
    assert set(delivered.values()) == {1}
    assert set(delivered) == set(rows.values_list("recipient", "subject"))
    for request in requests:
        sent_order = [
            m["subject"] for m in fake_esp.sent(esp) if m["to"] == [request.reporter_email]
        ]
        assert sent_order == list(rows.filter(request=request).values_list("subject", flat=True))


# --- 4. Two beats at once -----------------------------------------------------------------


@pytest.fixture
def quiet_broker(settings):
    """Tasks the sweeps enqueue after commit go to an in-process queue nobody reads."""
    use_broker("memory://", {})
    yield
    use_broker(settings.CELERY_BROKER_URL, settings.CELERY_BROKER_TRANSPORT_OPTIONS)


def run_twice_at_once(task) -> list:
    """`task`'s body in two threads (two beats), each with its own database connection,
    released together."""
    barrier = threading.Barrier(2)
    results, errors = [], []

    def beat():
        try:
            barrier.wait(timeout=10)
            results.append(task())
        except Exception as error:  # reported below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=beat) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert len(results) == 2
    return results


def two_beats(test):
    """PostgreSQL only, with real commits, and with the sweeps' enqueues kept in-process."""
    test = pytest.mark.django_db(transaction=True)(test)
    test = pytest.mark.skipif(
        connection.vendor == "sqlite",
        reason="SQLite has no row locks and serialises writers: two beats cannot overlap",
    )(test)
    return pytest.mark.usefixtures("quiet_broker")(test)


@two_beats
def test_two_beats_escalate_each_request_once(pothole):
    requests = [submit(pothole, email="") for _ in range(30)]
    ServiceRequest.objects.filter(pk__in=[r.pk for r in requests]).update(
        department=pothole.department,  # as routing would: its address hears of the rung
    )
    for request in requests:
        sla.clock_set(request)  # as intake would
    EscalationClock.objects.filter(request__in=requests).update(
        next_at=timezone.now() - timedelta(minutes=1)
    )
    assert sum(run_twice_at_once(sweep_sla)) == 30
    assert set(EscalationClock.objects.values_list("level", flat=True)) == {1}
    steps = Counter(
        HistoryEntry.objects.filter(action=HistoryEntry.Action.SLA).values_list(
            "request_id", flat=True
        )
    )
    assert steps == Counter({r.pk: 1 for r in requests})
    emails = Counter(
        (step["request"], email.recipient)
        for email in Notification.objects.filter(kind=Notification.Kind.SLA)
        for step in sla.queued_steps(email)
    )
    assert emails == Counter({(r.pk, "streets@city.example"): 1 for r in requests})


@two_beats
def test_two_beats_survey_each_request_once(pothole):
    requests = []
    for n in range(30):
        request = ServiceRequestFactory(
            category=pothole, department=pothole.department, reporter_email=f"r{n}@example.org"
        )
        request.change_status(Status.COMPLETED, note="Filled the hole")
        requests.append(request)
    ServiceRequest.objects.update(resolved_at=timezone.now() - timedelta(hours=49))
    assert sum(run_twice_at_once(dispatch_surveys)) == 30
    assert Counter(Survey.objects.values_list("request_id", flat=True)) == Counter(
        {r.pk: 1 for r in requests}
    )
    emails = Notification.objects.filter(kind=Notification.Kind.SURVEY)
    assert Counter(emails.values_list("request_id", "recipient")) == Counter(
        {(r.pk, r.reporter_email): 1 for r in requests}
    )


@two_beats
def test_two_beats_send_each_department_one_digest(pothole):
    for n in range(6):
        department = DepartmentFactory(slug=f"dept{n}", name=f"Digest department {n}")
        department.supervisor = staff_user(f"super{n}", StaffRole.DEPARTMENT_STAFF, department)
        department.save()
        ServiceRequestFactory(
            category=CategoryFactory(code=f"c{n}", department=department), department=department
        )
    # Streets, with no supervisor: its own address only.
    ServiceRequestFactory(category=pothole, department=pothole.department)
    departments = Department.objects.filter(is_active=True)
    assert sum(run_twice_at_once(send_department_digests)) == departments.count()
    assert Counter(DigestRun.objects.values_list("department_id", flat=True)) == Counter(
        {d.pk: 1 for d in departments}
    )
    emails = Notification.objects.filter(kind=Notification.Kind.DIGEST)
    expected = Counter()
    for department in departments:
        recipients = {department.email}
        if department.supervisor:
            recipients.add(department.supervisor.email)
        expected.update(recipients)
    assert Counter(emails.values_list("recipient", flat=True)) == expected
