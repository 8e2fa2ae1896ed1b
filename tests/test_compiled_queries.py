"""Queries compiled once and run with each caller's values (requests_app/compiled.py)."""

import gc
import threading
import weakref

import psycopg
import pytest
from django.db import connection, connections
from django.test import override_settings

from notifications.models import Notification
from requests_app.compiled import CompiledQuery, _compiled, insert_new, statements_prepared
from requests_app.models import (
    _PUBLIC_STATUS_CHANGES,
    Follower,
    HistoryEntry,
    ServiceRequest,
    Status,
)

from .factories import ServiceRequestFactory

BY_NUMBER = CompiledQuery(
    lambda number: (
        ServiceRequest.objects.filter(tracking_number=number)
        .select_related("category")
        .only("tracking_number", "description", "category__name")
    ),
    number=("\x1fstand-in", ServiceRequest._meta.get_field("tracking_number")),
)


def test_each_run_finds_its_own_callers_row(pothole):
    requests = [
        ServiceRequestFactory(category=pothole, description=f"Hole number {n}") for n in range(8)
    ]

    # More runs than the prepare threshold, so PostgreSQL runs a prepared statement too.
    for _round in range(2):
        for request in requests:
            with statements_prepared():
                (found,) = BY_NUMBER.objects(number=request.tracking_number)
            assert found.pk == request.pk
            assert found.description == request.description
            assert found.category.name == pothole.name  # select_related, no further query
            assert found._state.db == found.category._state.db == "default"

    assert BY_NUMBER.first(number="CD-2345-6789") is None


def test_stand_in_must_reach_the_sql_exactly_once(db):
    twice = CompiledQuery(
        lambda number: (
            ServiceRequest.objects.filter(tracking_number=number)
            | ServiceRequest.objects.filter(address=number)
        ),
        number=("\x1fstand-in", ServiceRequest._meta.get_field("tracking_number")),
    )

    with pytest.raises(AssertionError, match="2 places"):
        twice.objects(number="CD-2345-6789")


def test_status_page_timeline_follows_each_request(client, pothole, dispatcher):
    first, second = ServiceRequestFactory(category=pothole), ServiceRequestFactory(category=pothole)
    first.change_status(Status.IN_PROGRESS, by=dispatcher, note="Crew on the way")

    for _ in range(6):
        first_page = client.get(first.get_absolute_url()).content.decode()
        second_page = client.get(second.get_absolute_url()).content.decode()
        assert "Crew on the way" in first_page
        assert "Crew on the way" not in second_page
        assert 'data-testid="status">Received<' in second_page


@pytest.mark.skipif(connection.vendor != "postgresql", reason="prepared statements: PostgreSQL")
def test_postgresql_keeps_the_statement_prepared(pothole):
    request = ServiceRequestFactory(category=pothole)
    threshold = connection.settings_dict["OPTIONS"]["prepare_threshold"]
    if threshold is None:
        pytest.skip("prepared statements are turned off (DATABASE_PREPARE_THRESHOLD)")

    for _ in range(threshold + 1):
        with statements_prepared():
            assert BY_NUMBER.first(number=request.tracking_number).pk == request.pk

    sql = _compiled(BY_NUMBER, connections["default"]).sql
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement = %s",
            [sql.replace("%s", "$1")],  # its only parameter, as psycopg sends it
        )
        assert cursor.fetchone()[0] == 1


def _other_connection():
    settings = connection.settings_dict
    return psycopg.connect(
        f"postgresql://{settings['USER']}@{settings['HOST']}:{settings['PORT']}/{settings['NAME']}",
        autocommit=True,
    )


@pytest.mark.skipif(connection.vendor != "postgresql", reason="prepared statements: PostgreSQL")
@pytest.mark.django_db(transaction=True)
def test_status_page_keeps_working_when_a_migration_changes_a_column_it_shows(client, pothole):
    request = ServiceRequestFactory(category=pothole, address="12 Main St")
    for _ in range(7):  # prepared by now
        assert client.get(request.get_absolute_url()).status_code == 200
    # As `manage.py migrate` in another process would: the address grows to 300 characters.
    with _other_connection() as other:
        other.execute(
            "ALTER TABLE requests_app_servicerequest ALTER COLUMN address TYPE varchar(300)"
        )
    try:
        for _ in range(3):
            page = client.get(request.get_absolute_url())
            assert page.status_code == 200 and "12 Main St" in page.content.decode()
    finally:
        connection.close()
        with _other_connection() as other:
            other.execute(
                "ALTER TABLE requests_app_servicerequest ALTER COLUMN address TYPE varchar(255)"
            )


def test_rows_follow_the_time_zone_setting_as_the_orm_does(pothole, dispatcher):
    request = ServiceRequestFactory(category=pothole)
    request.change_status(Status.IN_PROGRESS, by=dispatcher, note="Crew on the way")

    for use_tz in (True, False):
        with override_settings(USE_TZ=use_tz):
            orm = HistoryEntry.objects.get(request=request, action=HistoryEntry.Action.STATUS)
            with statements_prepared():
                (compiled,) = _PUBLIC_STATUS_CHANGES.objects(request=request.pk)
            assert compiled.at == orm.at and compiled.at.tzinfo == orm.at.tzinfo


@pytest.mark.django_db(transaction=True)
def test_what_is_compiled_for_a_thread_goes_with_its_connection(pothole):
    request = ServiceRequestFactory(category=pothole)
    seen = []

    def visit():
        seen.append(weakref.ref(connections["default"]))
        assert BY_NUMBER.first(number=request.tracking_number).pk == request.pk
        connections["default"].close()

    for _ in range(3):
        thread = threading.Thread(target=visit)
        thread.start()
        thread.join()
    gc.collect()

    assert [ref() for ref in seen] == [None, None, None]


def test_inserted_rows_are_held_as_the_database_stores_them(pothole):
    request = ServiceRequestFactory(category=pothole)
    rows = [
        insert_new(
            Follower(request=request, email="ana@example.org", language="es", source="reporter")
        ),
        insert_new(
            Notification(
                request=request,
                recipient="ana@example.org",
                kind=Notification.Kind.RECEIVED,
                language="es",
                subject="Recibimos su reporte",
                body_text="Gracias",
                headers={"List-Unsubscribe": "<https://311.example/u/1/>"},
                render_context={"steps": [{"request": request.pk, "overdue": False}]},
            )
        ),
    ]

    for held in rows:
        stored = type(held).objects.get(pk=held.pk)
        assert not held._state.adding and held._state.db == "default"
        for field in type(held)._meta.concrete_fields:
            assert getattr(held, field.attname) == getattr(stored, field.attname), field.name


def test_insert_new_takes_only_new_rows(pothole):
    request = ServiceRequestFactory(category=pothole)

    with pytest.raises(ValueError, match="new ServiceRequest"):
        insert_new(request)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="prepared statements: PostgreSQL")
def test_postgresql_keeps_a_submissions_statements_prepared(client, pothole):
    threshold = connection.settings_dict["OPTIONS"]["prepare_threshold"]
    if threshold is None:
        pytest.skip("prepared statements are turned off (DATABASE_PREPARE_THRESHOLD)")
    for n in range(threshold + 1):
        report = {
            "category": pothole.pk,
            "description": "Deep pothole by the bus stop",
            "address": f"{n} Main St",
            "name": "Maria Lopez",
            "email": f"maria{n}@example.org",
            "website": "",
        }
        assert client.post("/report/", report, REMOTE_ADDR=f"10.0.0.{n + 1}").status_code == 302

    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        prepared = [row[0] for row in cursor.fetchall()]
    for table in (
        "requests_app_servicerequest",
        "requests_app_history",
        "notifications_notification",
    ):
        assert any(s.startswith(f'INSERT INTO "{table}"') for s in prepared), table
