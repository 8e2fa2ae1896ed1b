"""The director's dashboard, its map data, exports and the public transparency page."""

import csv
from datetime import timedelta
from functools import wraps

from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import (
    FileResponse,
    Http404,
    HttpResponse,
    HttpResponseBadRequest,
    JsonResponse,
    StreamingHttpResponse,
)
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.http import require_GET, require_http_methods

from . import dashboard, exports, service_area
from .access import can_export, can_see_dashboard, visible_requests
from .dashboard import DashboardFilterForm, Filters
from .export_tasks import export_start
from .models import ExportJob

# Above this many rows an export is written by the worker instead of streamed.
STREAM_MAX_ROWS = 50_000
# The rollups are refreshed every minute; older figures mean the refresh is not running.
AS_OF_LATE = timedelta(minutes=3)


def _staff_only(may):
    """Signed-in users for whom `may(user)` (requests_app.access); 404 for the others."""

    def decorator(view):
        @login_required
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            if not may(request.user):
                raise Http404
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


def _map_text():
    """Words static/dashboard/dashboard.js shows, in the reader's language. The script fills
    in %(name)s, and picks a count's form: one or other, which is all English and Spanish
    have."""

    def forms(translate):
        return {"one": translate(1), "other": translate(2)}

    # Spelled out per string, since makemessages only finds ngettext() with literal text.
    requests = forms(lambda n: ngettext("%(count)s request", "%(count)s requests", n))
    return {
        "cells": forms(lambda n: ngettext("%(count)s cell", "%(count)s cells", n)),
        "requests": requests,
        "asOf": _("as of %(time)s"),
        "values": {
            "count": requests,
            "median_resolution": _("%(value)s h median to resolution"),
            "overdue": _("%(value)s %% overdue"),
        },
        "hours": _("%(value)s h"),
        "medianResponse": _("Median to first response: %(value)s"),
        "medianResolution": _("Median to resolution: %(value)s"),
        "openInAdmin": _("Open these requests in the admin"),
        "loading": _("Loading…"),
        "mapUnavailable": _("Map data unavailable."),
        "detailUnavailable": _("Could not load the details."),
    }


def _filters(request):
    form = DashboardFilterForm(request.GET or None)
    return form, Filters.from_query(request.GET)


@require_GET
@_staff_only(can_see_dashboard)
def dashboard_page(request):
    form, filters = _filters(request)
    if not request.GET:
        form = DashboardFilterForm(initial={"start": filters.start, "end": filters.end})
    requests = visible_requests(request.user)
    state = dashboard.rollup_state(requests)
    trend = dashboard.weekly_trend(requests, filters)
    breakdowns = [
        (label, dashboard.breakdown(requests, filters, key))
        for key, (label, _model, _param) in dashboard.DIMENSIONS.items()
    ]
    min_lng, min_lat, max_lng, max_lat = service_area.bounds()
    return render(
        request,
        "dashboard/dashboard.html",
        {
            "form": form,
            "filters": filters,
            "previous": filters.previous(),
            "kpis": dashboard.kpis(requests, filters),
            "breakdowns": breakdowns,
            "trend": trend,
            "received_chart": dashboard.svg_chart(trend, "received", "bar", counts=True),
            "resolution_chart": dashboard.svg_chart(trend, "median_resolution_hours", "line"),
            "hotspots": dashboard.hotspots(requests, filters),
            "admin_url": filters.admin_url(),
            "query": filters.query_string(),
            "as_of": state.refreshed_at if state else None,
            "as_of_late": bool(state and timezone.now() - state.refreshed_at > AS_OF_LATE),
            "map_settings": {
                "bounds": [[min_lat, min_lng], [max_lat, max_lng]],
                "query": filters.query_string(),
                "grid_url": reverse("dashboard:grid"),
                "cell_url": reverse("dashboard:cell"),
                # The script shows times on the city's clock, as the page does, whatever
                # the browser's, and numbers as the reader writes them.
                "time_zone": timezone.get_current_timezone_name(),
                "language": translation.get_language(),
                "text": _map_text(),
            },
        },
    )


def _int(request, name, default=None):
    try:
        return int(request.GET[name])
    except (KeyError, ValueError):
        if default is None:
            raise
        return default


@require_GET
@_staff_only(can_see_dashboard)
def grid_json(request):
    _form, filters = _filters(request)
    try:
        bbox = [float(v) for v in request.GET["bbox"].split(",")]
        zoom = _int(request, "zoom")
    except (KeyError, ValueError):
        return HttpResponseBadRequest("bbox=west,south,east,north and zoom are required")
    if len(bbox) != 4:
        return HttpResponseBadRequest("bbox=west,south,east,north")
    metric = request.GET.get("metric", "count")
    if metric not in dashboard.METRICS:
        metric = "count"
    data = dashboard.grid(
        visible_requests(request.user), filters, bbox=bbox, zoom=zoom, metric=metric
    )
    return JsonResponse(data)


@require_GET
@_staff_only(can_see_dashboard)
def cell_json(request):
    _form, filters = _filters(request)
    try:
        zoom, gy, gx = _int(request, "zoom"), _int(request, "gy"), _int(request, "gx")
    except (KeyError, ValueError):
        return HttpResponseBadRequest("zoom, gy and gx are required")
    data = dashboard.cell_detail(visible_requests(request.user), filters, zoom=zoom, gy=gy, gx=gx)
    return JsonResponse(data)


# --- Exports -----------------------------------------------------------------------------------


def _export(request, fmt):
    _form, filters = _filters(request)
    requests = filters.apply(visible_requests(request.user))
    if request.GET.get("background") or requests.count() > STREAM_MAX_ROWS:
        with transaction.atomic():
            job = ExportJob.objects.create(
                requested_by=request.user, format=fmt, filters=filters.as_dict()
            )
            export_start(job)
        return redirect("dashboard:export_job", pk=job.pk)
    stamp = timezone.localtime().strftime("%Y%m%d-%H%M%S")
    if fmt == ExportJob.Format.CSV:
        body = exports.csv_lines(requests, exports.columns_for(request.user))
        response = StreamingHttpResponse(body, content_type="text/csv; charset=utf-8")
        name = f"requests-{stamp}.csv"
    else:
        body = exports.geojson_chunks(requests)
        response = StreamingHttpResponse(body, content_type="application/geo+json")
        name = f"requests-{stamp}.geojson"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


@require_GET
@_staff_only(can_export)
def export_csv(request):
    return _export(request, ExportJob.Format.CSV)


@require_GET
@_staff_only(can_export)
def export_geojson(request):
    return _export(request, ExportJob.Format.GEOJSON)


def _own_job(request, pk):
    return get_object_or_404(ExportJob, pk=pk, requested_by=request.user)


@require_GET
@_staff_only(can_export)
def export_job(request, pk):
    job = _own_job(request, pk)
    percent = None
    if job.rows_total:
        percent = min(100, round(100 * job.rows_done / job.rows_total))
    elif job.status == ExportJob.Status.DONE:
        percent = 100
    return render(
        request,
        "dashboard/export_job.html",
        {
            "job": job,
            "percent": percent,
            "filters": Filters.from_dict(job.filters),
            "working": job.status in (ExportJob.Status.PENDING, ExportJob.Status.RUNNING),
        },
    )


@require_GET
@_staff_only(can_export)
def export_download(request, pk):
    job = _own_job(request, pk)
    if job.status != ExportJob.Status.DONE or not job.file:
        raise Http404
    return FileResponse(
        job.file.open("rb"), as_attachment=True, filename=job.file.name.split("/")[-1]
    )


@require_http_methods(["GET"])
@_staff_only(can_export)
def audit_package(request, tracking_number):
    service_request = (
        visible_requests(request.user)
        .select_related("category", "department", "district", "crew", "work_order", "duplicate_of")
        .filter(tracking_number=tracking_number)
        .first()
    )
    if service_request is None:
        raise Http404
    staff = request.GET.get("version") != "public"
    archive = exports.audit_package(
        service_request, staff=staff, generated_by=request.user.get_username()
    )
    suffix = "staff" if staff else "public"
    return FileResponse(
        archive,
        as_attachment=True,
        filename=f"{tracking_number}-record-{suffix}.zip",
        content_type="application/zip",
    )


# --- The public transparency page -------------------------------------------------------------


def _public_filters(request):
    periods = dashboard.TRANSPARENCY_PERIODS
    asked = request.GET.get("days", "")
    days = int(asked) if asked.isdigit() and int(asked) in periods else periods[0]
    return days, dashboard.transparency_filters(days)


@require_GET
def transparency(request):
    days, filters = _public_filters(request)
    return render(
        request,
        "dashboard/transparency.html",
        {
            "days": days,
            "periods": sorted(dashboard.TRANSPARENCY_PERIODS),
            "filters": filters,
            "min_cell": dashboard.transparency_min_cell(),
            "tables": dashboard.transparency_tables(filters),
        },
    )


@require_GET
def transparency_csv(request):
    days, filters = _public_filters(request)
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="transparency-{days}-days.csv"'
    writer = csv.writer(response)
    writer.writerow(
        [
            "by",
            "name",
            "received",
            "on_time_pct",
            "median_hours_to_first_response",
            "median_hours_to_resolution",
        ]
    )
    for dimension, rows in dashboard.transparency_tables(filters):
        for row in rows:
            writer.writerow(
                [
                    dimension,
                    row.label,
                    "" if row.received is None else row.received,
                    "" if row.on_time_pct is None else row.on_time_pct,
                    "" if row.median_response_hours is None else row.median_response_hours,
                    "" if row.median_resolution_hours is None else row.median_resolution_hours,
                ]
            )
    return response
