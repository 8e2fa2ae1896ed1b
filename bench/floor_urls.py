"""The portal's URLs plus the floor views: the least a Django view does for each page.

The floors run in the same gunicorn workers, settings and middleware as the portal and
use the ORM the ordinary way, without templates, so the ratio measures what the portal's
own code costs on top of serving a request at all.

A third view, `required_work`, is not a floor the spec names: it does only what the spec
requires of every submission, as cheaply as we can write it, to show how much of the
portal's cost is that work rather than the portal's own code.
"""

import secrets
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models.sql import InsertQuery
from django.http import Http404, HttpResponse, HttpResponseRedirect
from django.urls import path
from django.utils import timezone
from django.utils.html import escape
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from civicdesk.celery import enqueue_on_commit
from civicdesk.urls import urlpatterns as project_urlpatterns
from requests_app.compiled import statements_prepared
from requests_app.models import HistoryEntry, IntakeThrottle, ServiceRequest
from requests_app.tasks import process_intake
from requests_app.views import _client_ip


@csrf_exempt  # a floor measures one INSERT, not the token check the portal keeps on
@require_POST
def floor_insert(request):
    # Any small table does; the throttle's is the simplest, and a unique key per call
    # makes this one plain INSERT in autocommit.
    IntakeThrottle.objects.create(key=f"bench:{uuid.uuid4().hex}", window_start=timezone.now())
    return HttpResponse("ok", content_type="text/plain")


@require_GET
def floor_detail(request, tracking_number):
    try:
        found = ServiceRequest.objects.get(tracking_number=tracking_number, is_public=True)
    except ServiceRequest.DoesNotExist:
        raise Http404 from None
    history = found.history.filter(is_public=True)
    items = "".join(
        f"<li>{entry.at:%Y-%m-%d %H:%M} {escape(entry.new_value)} {escape(entry.note)}</li>"
        for entry in history
    )
    return HttpResponse(
        f"<!DOCTYPE html><title>{escape(found.tracking_number)}</title>"
        f"<h1>{escape(found.tracking_number)}</h1><p>{escape(found.get_status_display())}</p>"
        f"<p>{escape(found.description)}</p><p>{found.created_at:%Y-%m-%d %H:%M}</p>"
        f"<ol>{items}</ol>"
    )


def _insert(model, values):
    """Raw SQL and parameters for one INSERT of `model`, as the ORM writes it, with the
    remaining columns at their field's default; built on every call, which `_INSERTS`
    below avoids."""
    row = model(**values)
    query = InsertQuery(model)
    fields = [f for f in model._meta.local_concrete_fields if not f.primary_key]
    query.insert_values(fields, [row])
    compiler = query.get_compiler(connection=connection)
    compiler.returning_fields = [model._meta.pk]
    [(sql, params)] = compiler.as_sql()
    return sql, list(params), {f.attname: i for i, f in enumerate(fields)}


_INSERTS = {}


def _insert_sql(model, **values):
    """`_insert` compiled once per process with stand-in values, then given `values`."""
    if model not in _INSERTS:
        _INSERTS[model] = _insert(model, values)
    sql, params, position = _INSERTS[model]
    params = list(params)
    for name, value in values.items():
        params[position[name]] = value
    return sql, params


@require_POST
def required_work(request):
    """What the spec asks of every submission and nothing else, in raw SQL compiled once.

    CSRF (the middleware, on as for the portal), the parsed form, the per-IP count, the
    request and its history entry in one transaction, and the intake task enqueued after
    commit. No validation, tracking-number check, SLA, follower or email row, or thanks
    cookie.
    """
    now = timezone.now()
    number = "CD-{}-{}".format(*(secrets.token_hex(2).upper() for _ in range(2)))
    # One transaction, one commit and prepared statements, as the portal's submission has.
    with statements_prepared(), transaction.atomic(), connection.cursor() as cursor:
        if not IntakeThrottle.hit(
            f"report:{_client_ip(request)}",
            limit=settings.REPORTS_PER_IP_PER_HOUR,
            window=timedelta(hours=1),
        ):
            return HttpResponse(status=429)
        cursor.execute(
            *_insert_sql(
                ServiceRequest,
                tracking_number=number,
                category_id=int(request.POST["category"]),
                description=request.POST["description"],
                address=request.POST["address"],
                reporter_email=request.POST["email"],
                created_at=now,
                updated_at=now,
            )
        )
        [request_id] = cursor.fetchone()
        cursor.execute(
            *_insert_sql(
                HistoryEntry,
                request_id=request_id,
                at=now,
                action=HistoryEntry.Action.CREATED,
                actor_label="Resident",
            )
        )
        enqueue_on_commit(process_intake, request_id)
    return HttpResponseRedirect(f"/report/done/{number}/")


urlpatterns = [
    path("bench/floor/insert/", floor_insert),
    path("bench/floor/required/", required_work),
    path("bench/floor/requests/<str:tracking_number>/", floor_detail),
    *project_urlpatterns,
]
