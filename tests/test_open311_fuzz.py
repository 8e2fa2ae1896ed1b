"""Schemathesis fuzzes the Open311 API from its own OpenAPI description: whatever a client
sends, the answer is never a server error and always has the documented shape."""

import pytest

schemathesis = pytest.importorskip("schemathesis")

from django.core.signals import request_finished, request_started  # noqa: E402
from django.db import close_old_connections  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402  (after the importorskip)
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from civicdesk.wsgi import application  # noqa: E402
from requests_app.models import ApiClient, ServiceAttribute  # noqa: E402
from requests_app.open311 import api_client_issue_key  # noqa: E402

from .factories import ServiceRequestFactory  # noqa: E402

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture
def fuzz_key(db):
    return api_client_issue_key(ApiClient(name="Fuzzer", requests_per_minute=1_000_000))


@pytest.fixture
def in_process():
    """Keep the test's database connection open across calls into the WSGI app, as Django's
    test client does (the handler would close it at the end of each request)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def city(pothole, in_process):
    ServiceAttribute.objects.create(
        category=pothole,
        code="size",
        description="How big is it?",
        datatype=ServiceAttribute.Datatype.SINGLE,
        required=True,
        values=[{"key": "small", "name": "Small"}],
    )
    ServiceRequestFactory.create_batch(3, category=pothole, department=pothole.department)
    return pothole


# Read through the app itself, as a client would; the view needs no database.
schema = schemathesis.openapi.from_wsgi("/open311/v2/openapi.json", application)


@schema.parametrize()
@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_open311_never_fails_and_answers_as_documented(case, fuzz_key, city):
    if case.method == "POST" and isinstance(case.body, dict):
        # Half the examples get through authentication, to reach validation and intake.
        if len(str(case.body)) % 2:
            case.body["api_key"] = fuzz_key
            case.body.setdefault("service_code", city.code)
    response = case.call()
    case.validate_response(response, checks=CHECKS)
