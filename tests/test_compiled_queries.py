"""Queries compiled once and run with each caller's values (requests_app/compiled.py)."""

import pytest
from django.db import connection, connections

from requests_app.compiled import CompiledQuery, _compiled, statements_prepared
from requests_app.models import ServiceRequest, Status

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
