"""With a real Celery worker process: what a resident's report sets in motion."""

import signal
import socket
import subprocess
import time

import pytest

from notifications.models import Notification
from requests_app.models import HistoryEntry, ServiceRequest, Status
from requests_app.services import Intake, request_submit
from requests_app.tasks import sweep_intake

from .conftest import WorkerProcess, redis_server_binary, use_broker, wait_for
from .factories import CITY_CENTER

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def submit(category, **extra):
    return request_submit(
        Intake(
            category=category,
            description="Streetlight out on the corner",
            lat=CITY_CENTER[0],
            lng=CITY_CENTER[1],
            reporter_email="maria@example.org",
            **extra,
        )
    )


def processed(pk):
    return ServiceRequest.objects.filter(pk=pk, intake_processed_at__isnull=False).first()


def test_worker_routes_a_new_request_and_sends_its_emails(pothole, celery_worker):
    request = submit(pothole)
    routed = wait_for(lambda: processed(request.pk), timeout=30)
    assert routed, celery_worker.output()
    assert routed.status == Status.ASSIGNED and routed.department == pothole.department
    assert "Routed to Streets" in routed.history.get(action=HistoryEntry.Action.DEPARTMENT).note
    assert wait_for(
        lambda: Notification.objects.filter(request=request, status="sent").count() == 2,
        timeout=30,
    ), celery_worker.output()
    kinds = list(
        Notification.objects.filter(request=request)
        .order_by("pk")
        .values_list("kind", "status", "attempts")
    )
    assert kinds == [("received", "sent", 1), ("status", "sent", 1)]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not redis_server_binary(), reason="needs redis-server to stage an outage")
def test_request_submitted_while_redis_is_down_is_processed_after_it_returns(
    pothole, celery_worker_env, tmp_path
):
    """A Redis of our own, on a spare port, that is down at intake and comes back later."""
    port = _free_port()
    redis_url = f"redis://127.0.0.1:{port}/0"
    use_broker(redis_url, {"socket_connect_timeout": 1, "socket_timeout": 2, "max_retries": 0})

    started = time.monotonic()
    request = submit(pothole)
    elapsed = time.monotonic() - started
    assert ServiceRequest.objects.filter(tracking_number=request.tracking_number).exists()
    assert elapsed < 5, f"intake waited {elapsed:.1f}s on a broker that is down"

    redis = subprocess.Popen(
        [
            redis_server_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    worker = None
    try:
        assert wait_for(lambda: _accepts(port), timeout=10)
        worker = WorkerProcess(
            {**celery_worker_env, "REDIS_URL": redis_url}, tmp_path / "worker.log"
        ).start()
        time.sleep(1)
        sweep_intake.apply_async()  # what beat sends every 30 seconds
        routed = wait_for(lambda: processed(request.pk), timeout=40)
        assert routed, worker.output()
        assert routed.status == Status.ASSIGNED
    finally:
        if worker:
            worker.stop()
        redis.terminate()
        redis.wait()


def _accepts(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _with_rule(pothole):
    from routing.models import RoutingRule

    rule = RoutingRule.objects.create(name="All potholes to Streets", department=pothole.department)
    rule.categories.add(pothole)
    return rule


def test_a_request_from_every_channel_is_routed_within_seconds(pothole, celery_worker):
    from requests_app.models import Channel

    _with_rule(pothole)
    requests = [submit(pothole, channel=channel) for channel in Channel.values]
    assert wait_for(lambda: all(processed(r.pk) for r in requests), timeout=60), (
        celery_worker.output()
    )
    for request in requests:
        request.refresh_from_db()
        took = (request.intake_processed_at - request.created_at).total_seconds()
        assert took < 5, f"{request.channel} took {took:.1f}s"
        routing = request.history.get(action=HistoryEntry.Action.ROUTING).note
        assert "by rule ‘All potholes to Streets’ (category)" in routing


def test_worker_killed_mid_routing_routes_the_request_exactly_once(
    pothole, celery_worker_env, tmp_path
):
    from django.db import transaction

    _with_rule(pothole)
    request = submit(pothole)  # enqueued; no worker is running yet
    worker = WorkerProcess(celery_worker_env, tmp_path / "worker.log")
    try:
        with transaction.atomic():
            # Hold the row, then start the worker: its routing blocks on the lock
            # (PostgreSQL row lock, SQLite write lock) and is killed half-way through.
            ServiceRequest.objects.select_for_update().get(pk=request.pk)
            ServiceRequest.objects.filter(pk=request.pk).update(address="12 Main St")
            worker.start()
            assert wait_for(lambda: "process_intake" in worker.output(), timeout=30), (
                worker.output()
            )
            time.sleep(0.5)
            worker.stop(signal.SIGKILL)
        assert processed(request.pk) is None

        worker = WorkerProcess(celery_worker_env, tmp_path / "worker2.log").start()
        worker.wait_ready()
        sweep_intake.apply_async()  # beat's periodic sweep
        assert wait_for(lambda: processed(request.pk), timeout=40), worker.output()
        time.sleep(2)  # a redelivered copy of the task, if any, has had its chance
        request.refresh_from_db()
        assert request.history.filter(action=HistoryEntry.Action.ROUTING).count() == 1
        assert request.history.filter(action="status", new_value="assigned").count() == 1
    finally:
        worker.stop()


def test_three_reports_of_one_streetlight_become_one_group_completed_together(
    streets, celery_worker
):
    from requests_app.models import Crew, Photo, WorkOrder
    from requests_app.photos import process_photo
    from requests_app.services import work_order_add_photo

    from .conftest import upload
    from .factories import CategoryFactory

    light = CategoryFactory(code="streetlight", name="Streetlight out", department=streets)
    reports = []
    for metres_north in (0, 15, 30):
        reports.append(
            request_submit(
                Intake(
                    category=light,
                    description="Streetlight out at the corner",
                    lat=CITY_CENTER[0] + metres_north / 111_000,
                    lng=CITY_CENTER[1],
                    reporter_email=f"resident{metres_north}@example.org",
                )
            )
        )
        assert wait_for(lambda r=reports[-1]: processed(r.pk), timeout=30), celery_worker.output()
    for report in reports:
        report.refresh_from_db()  # routed by the worker meanwhile
    first, *others = reports
    for other in others:
        other.refresh_from_db()
        assert other.duplicate_of_id == first.pk
        assert other.history.filter(action=HistoryEntry.Action.DUPLICATE).exists()

    crew = Crew.objects.create(name="Lights", department=streets)
    order = WorkOrder.create_for([first], crew=crew)
    assert set(order.requests.values_list("pk", flat=True)) == {r.pk for r in reports}
    order.start()
    work_order_add_photo(order, process_photo(upload()), kind=Photo.Kind.AFTER)
    order.complete("Replaced the lamp")
    assert set(
        ServiceRequest.objects.filter(pk__in=[r.pk for r in reports]).values_list(
            "status", flat=True
        )
    ) == {Status.COMPLETED}
    # Every reporter hears that it is fixed.
    assert wait_for(
        lambda: (
            {
                n.recipient
                for n in Notification.objects.filter(template="status_completed", status="sent")
            }
            >= {"resident0@example.org", "resident15@example.org", "resident30@example.org"}
        ),
        timeout=40,
    ), celery_worker.output()
