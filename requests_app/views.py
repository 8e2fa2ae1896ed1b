import ipaddress
from datetime import timedelta
from itertools import groupby

from django.conf import settings
from django.db.models import Count, F
from django.db.models.functions import Round
from django.http import FileResponse
from django.shortcuts import redirect, render
from django.utils.translation import get_language
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods

from . import service_area
from .access import photo_for_viewer_or_404, public_request_or_404
from .forms import ReportForm, TrackingLookupForm
from .models import Channel, IntakeThrottle, ServiceCategory, ServiceRequest
from .services import Intake, request_submit

# About 550 m north-south: coarse enough that the home map never draws thousands of markers.
MAP_CELLS_PER_DEGREE = 200


def _open_request_cells():
    cells = (
        ServiceRequest.objects.open()
        .public()
        .filter(lat__isnull=False, lng__isnull=False)
        .annotate(
            cell_lat=Round(F("lat") * MAP_CELLS_PER_DEGREE),
            cell_lng=Round(F("lng") * MAP_CELLS_PER_DEGREE),
        )
        .values("cell_lat", "cell_lng")
        .annotate(count=Count("pk"))
        .order_by()
    )
    return [
        {
            "lat": cell["cell_lat"] / MAP_CELLS_PER_DEGREE,
            "lng": cell["cell_lng"] / MAP_CELLS_PER_DEGREE,
            "count": cell["count"],
        }
        for cell in cells
    ]


def _map_settings():
    min_lng, min_lat, max_lng, max_lat = service_area.bounds()
    return {"bounds": [[min_lat, min_lng], [max_lat, max_lng]]}


@require_GET
def home(request):
    categories = ServiceCategory.objects.active().order_by("group", "name")
    return render(
        request,
        "requests_app/home.html",
        {
            "category_groups": [(g, list(cs)) for g, cs in groupby(categories, lambda c: c.group)],
            "lookup_form": TrackingLookupForm(),
            "map_cells": _open_request_cells(),
            "map_settings": _map_settings(),
            "open_count": ServiceRequest.objects.open().public().count(),
        },
    )


@require_GET
def lookup(request):
    if "number" not in request.GET:
        return render(request, "requests_app/lookup.html", {"lookup_form": TrackingLookupForm()})
    form = TrackingLookupForm(request.GET)
    if form.is_valid():
        number = form.cleaned_data["number"]
        if ServiceRequest.objects.public().filter(tracking_number=number).exists():
            return redirect("requests_app:status", number)
        form.add_error("number", _("We found no request with the number %(number)s.") % {
            "number": number
        })
    return render(request, "requests_app/lookup.html", {"lookup_form": form}, status=404)


def _client_ip(request):
    if settings.USE_X_FORWARDED_FOR:
        # Our proxy appends the address it saw to whatever the client sent, so only the last
        # entry is trustworthy; the first is the client's to choose, and choosing a new one
        # per request would escape the rate limit.
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")[-1].strip()
        try:
            return str(ipaddress.ip_address(forwarded))
        except ValueError:
            pass
    return request.META.get("REMOTE_ADDR", "")


@require_http_methods(["GET", "POST"])
def report(request):
    if request.method == "POST":
        form = ReportForm(request.POST, request.FILES)
        within_limit = request.user.is_staff or IntakeThrottle.hit(
            f"report:{_client_ip(request)}",
            limit=settings.REPORTS_PER_IP_PER_HOUR,
            window=timedelta(hours=1),
        )
        if not within_limit:
            form.is_valid()  # keep the typed answers and show any other errors as well
            form.add_error(
                None,
                _("Too many reports have come from your connection in the last hour. Please "
                  "try again later, or call 311 if it is urgent."),
            )
            return render(request, "requests_app/report.html", _report_context(form), status=429)
        if form.is_valid():
            data = form.cleaned_data
            service_request = request_submit(
                Intake(
                    category=data["category"],
                    description=data["description"],
                    channel=Channel.WEB,
                    lat=data.get("lat"),
                    lng=data.get("lng"),
                    address=data.get("address", ""),
                    reporter_name=data.get("name", ""),
                    reporter_email=data.get("email", ""),
                    reporter_phone=data.get("phone", ""),
                    language=get_language(),
                    photos=form.processed_photos,
                )
            )
            request.session["submitted"] = service_request.tracking_number
            return redirect("requests_app:confirmation", service_request.tracking_number)
        return render(request, "requests_app/report.html", _report_context(form), status=400)

    initial = {}
    category = ServiceCategory.objects.active().filter(code=request.GET.get("category")).first()
    if category:
        initial["category"] = category.pk
    return render(request, "requests_app/report.html", _report_context(ReportForm(initial=initial)))


def _report_context(form):
    return {"form": form, "map_settings": _map_settings()}


@require_GET
def confirmation(request, tracking_number):
    service_request = public_request_or_404(tracking_number)
    return render(
        request,
        "requests_app/confirmation.html",
        {
            "service_request": service_request,
            "just_submitted": request.session.get("submitted") == tracking_number,
        },
    )


@require_GET
def status(request, tracking_number):
    service_request = public_request_or_404(tracking_number)
    photos = service_request.public_photos()
    marker = (
        {"lat": service_request.lat, "lng": service_request.lng}
        if service_request.has_location
        else None
    )
    return render(
        request,
        "requests_app/status.html",
        {
            "service_request": service_request,
            "timeline": service_request.public_timeline(),
            "photos": photos,
            "marker": marker,
            "map_settings": _map_settings(),
        },
    )


@require_GET
def photo(request, photo_id, size):
    found = photo_for_viewer_or_404(request.user, photo_id)
    file = found.thumbnail if size == "thumb" else found.image
    response = FileResponse(file.open("rb"), content_type="image/jpeg")
    response["Cache-Control"] = "public, max-age=3600" if found.is_public else "private, no-store"
    response["X-Content-Type-Options"] = "nosniff"
    return response

