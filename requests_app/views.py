import ipaddress
from datetime import timedelta

from django.conf import settings
from django.contrib import messages
from django.db import transaction
from django.db.models import Count, Exists, F, OuterRef, Q
from django.db.models.functions import Now, Round
from django.http import FileResponse, Http404, JsonResponse
from django.shortcuts import redirect, render
from django.template.defaultfilters import truncatechars
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.translation import get_language
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods

from notifications.models import ServiceNotice
from notifications.services import notices_for
from routing.geocoding import address_search, place_get

from . import grouping, service_area
from .access import photo_for_viewer_or_404, public_request_or_404
from .compiled import CompiledQuery, statements_prepared
from .forms import (
    FollowForm,
    MapPositionForm,
    NearbyQueryForm,
    ReportForm,
    TrackingLookupForm,
    category_groups,
)
from .models import Channel, Comment, IntakeThrottle, Photo, ServiceCategory, ServiceRequest
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
    return {
        "bounds": [[min_lat, min_lng], [max_lat, max_lng]],
        # Words static/portal/maps.js shows, in the resident's language.
        "text": {
            "openRequest": _("open request"),
            "openRequests": _("open requests"),
            "pinPlaced": _("Pin placed at"),
            "finding": _("Finding your location…"),
            "unavailable": _("Your location is not available. Tap the map or type an address."),
        },
    }


def _report_map_settings():
    """The map settings, and what the report form's map needs to tell a resident at once
    that a place is outside the area served: the bounds only say so for a box, so a
    configured polygon comes too. The form checks the position again when it is sent."""
    report_settings = _map_settings()
    report_settings["area"] = service_area.polygon_geojson()
    city = {"city": settings.CITY_NAME}
    report_settings["text"].update(
        outside=_(
            "That place is outside the area %(city)s serves. Please choose a location "
            "inside the city."
        )
        % city,
        outsideYou=_(
            "You seem to be outside the area %(city)s serves. Tap the map where the problem "
            "is, or type an address."
        )
        % city,
        pinKept=_("The pin stays where it was."),
    )
    return report_settings


@require_GET
def home(request):
    categories = ServiceCategory.objects.active().order_by("group", "name")
    current_notices = list(ServiceNotice.objects.current().order_by("-starts_at")[:5])
    return render(
        request,
        "requests_app/home.html",
        {
            "category_groups": category_groups(categories),
            "lookup_form": TrackingLookupForm(),
            "service_notices": current_notices,
            "map_cells": _open_request_cells(),
            "map_settings": _map_settings(),
            "open_count": ServiceRequest.objects.open().public().count(),
            "address_text": _address_text(),
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
        form.add_error(
            "number", _("We found no request with the number %(number)s.") % {"number": number}
        )
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


def _within_rate_limit(request) -> bool:
    return request.user.is_staff or IntakeThrottle.hit(
        f"report:{_client_ip(request)}",
        limit=settings.REPORTS_PER_IP_PER_HOUR,
        window=timedelta(hours=1),
    )


def _too_many_reports(request, form):
    form.is_valid()  # keep the typed answers and show any other errors as well
    form.add_error(
        None,
        _(
            "Too many reports have come from your connection in the last hour. Please "
            "try again later, or call 311 if it is urgent."
        ),
    )
    return render(request, "requests_app/report.html", _report_context(form), status=429)


def _second_step(request, form):
    """The second step without JavaScript, or None: the same problem may be reported nearby,
    or the city already knows and says so in a service notice."""
    data = form.cleaned_data
    if "1" in request.POST.getlist("file_anyway") or data.get("lat") is None:
        return None
    nearby = grouping.nearby_for_portal(data["category"], data["lat"], data["lng"])
    notices = notices_for(data["lat"], data["lng"], data["category"])
    if not (nearby or notices):
        return None
    return _report_context(
        form, nearby=nearby, notices=notices, photos_dropped=bool(data["photos"])
    )


def _intake(form) -> Intake:
    data = form.cleaned_data
    return Intake(
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
        answers=form.answers,
    )


@require_http_methods(["GET", "POST"])
def report(request):
    if request.method == "POST":
        if "find_address" in request.POST or "pick_address" in request.POST:
            return _address_step(request)
        if "follow" in request.POST:
            return _follow(request)
        form = ReportForm(request.POST, request.FILES)
        valid = form.is_valid()
        # Only a report that would be filed or shown the second step counts against the
        # per-IP limit: a resident correcting a mistyped email or an unreadable photo has
        # not reported anything yet. A bot that filled the honeypot is counted all the same.
        if not (valid or form.filled_the_honeypot):
            return render(request, "requests_app/report.html", _report_context(form), status=400)
        service_request = step_two = None
        # The attempt is counted in the transaction that files the report: one commit, and
        # so one wait for the disk, instead of two. Counted attempts that file nothing
        # (refused, shown the second step, the honeypot's) commit their count alone. Every
        # submission runs the same few statements, which the database may keep prepared;
        # the second step's nearby lookup is left to plans made for its own values.
        with transaction.atomic():
            with statements_prepared():
                within_limit = _within_rate_limit(request)
            if within_limit and valid:
                step_two = _second_step(request, form)
                if step_two is None:
                    with statements_prepared():
                        service_request = request_submit(_intake(form))
        if not within_limit:
            return _too_many_reports(request, form)
        if step_two is not None:
            return render(request, "requests_app/report.html", step_two)
        if service_request is None:  # the honeypot
            return render(request, "requests_app/report.html", _report_context(form), status=400)
        response = redirect("requests_app:confirmation", service_request.tracking_number)
        # A signed cookie rather than the session: an anonymous resident needs no
        # session row just to be thanked on the next page.
        response.set_signed_cookie(
            SUBMITTED_COOKIE,
            service_request.tracking_number,
            salt=SUBMITTED_COOKIE,
            max_age=3600,
            secure=request.is_secure(),
            httponly=True,
            samesite="Lax",
        )
        return response

    initial = {}
    category = ServiceCategory.objects.active().filter(code=request.GET.get("category")).first()
    if category:
        initial["category"] = category.pk
    # From the home page: a place picked on its map, or an address to look up.
    address = request.GET.get("address", "").strip()[:255]
    if address:
        initial["address"] = address
    matches = None
    position = MapPositionForm(request.GET)
    if position.is_valid():
        initial.update({k: f"{v:.6f}" for k, v in position.cleaned_data.items()})
    elif address:
        matches = address_search(address)
    context = _report_context(ReportForm(initial=initial), address_matches=matches)
    return render(request, "requests_app/report.html", context)


def _address_step(request):
    """Finding the address without JavaScript: the matches for what was typed, as buttons;
    picking one puts its position on the form. Nothing is filed, so the report's own fields
    are not judged yet: an unbound form keeps what was typed, without errors."""
    skip = {"website", "csrfmiddlewaretoken", "find_address", "pick_address", "file_anyway"}
    values = {k: v for k, v in _typed(request).items() if k not in skip}
    picked = place_get(request.POST.get("pick_address", ""))
    matches = None
    if picked is not None:
        values.update(address=picked.label, lat=f"{picked.lat:.6f}", lng=f"{picked.lng:.6f}")
    else:
        matches = address_search(values.get("address", ""))
    context = _report_context(
        ReportForm(initial=values),
        address_matches=matches,
        address_picked=picked,
        photos_dropped=bool(request.FILES),
    )
    return render(request, "requests_app/report.html", context)


def _typed(request) -> dict:
    """What was typed into the report form, as initial values for showing it again
    unjudged; a question answered with several checkboxes keeps all of them."""
    return {k: v if len(v) > 1 else v[0] for k, v in request.POST.lists()}


def _follow(request):
    """ "This is my problem — follow it": subscribe the resident, file nothing."""
    follow = FollowForm(request.POST)
    if follow.is_valid():
        # Counted like a report, but only once it would subscribe someone.
        if not _within_rate_limit(request):
            return _too_many_reports(request, ReportForm(request.POST, request.FILES))
        followed, _follower = grouping.request_follow(
            follow.cleaned_data["follow"], follow.cleaned_data["email"], get_language()
        )
        messages.success(
            request,
            _(
                "You are now following %(number)s. We will email you when it changes; "
                "no new report was filed."
            )
            % {"number": followed.tracking_number},
        )
        return redirect("requests_app:status", followed.tracking_number)
    # Show the step again with the reason. Only following was asked for, so the report's
    # own fields are not judged yet: an unbound form keeps what was typed, without errors.
    form = ReportForm(initial={k: v for k, v in _typed(request).items() if k != "website"})
    where = NearbyQueryForm(request.POST)
    nearby = []
    if where.is_valid():
        data = where.cleaned_data
        nearby = grouping.nearby_for_portal(data["category"], data["lat"], data["lng"])
    context = _report_context(
        form,
        nearby=nearby,
        photos_dropped=bool(request.FILES),
        follow_errors=[e for errors in follow.errors.values() for e in errors],
    )
    return render(request, "requests_app/report.html", context, status=400)


def _nearby_rows(nearby):
    """What a resident may see of each nearby request: public facts and photos only."""
    requests = [n.request for n in nearby]
    photos = Photo.objects.filter(is_public=True).filter(
        Q(request__in=requests)
        | Q(work_order__in=[r.work_order_id for r in requests if r.work_order_id])
    )
    thumbnails = {}
    for photo in photos.order_by("uploaded_at"):
        for r in requests:
            if photo.request_id == r.pk or (
                photo.work_order_id and photo.work_order_id == r.work_order_id
            ):
                thumbnails.setdefault(r.pk, []).append(photo.get_thumbnail_url())
    return [
        {
            "tracking_number": n.request.tracking_number,
            "url": n.request.get_absolute_url(),
            "category": n.request.category.display_name,
            "status": n.request.status,
            "status_label": str(n.request.get_status_display()),
            "distance_m": round(n.distance_m),
            "reported": n.request.created_at.isoformat(),
            "reported_label": date_format(
                timezone.localtime(n.request.created_at), "SHORT_DATETIME_FORMAT"
            ),
            "address": n.request.address,
            "description": truncatechars(n.request.public_description, 140),
            "thumbnails": thumbnails.get(n.request.pk, [])[:3],
        }
        for n in nearby
    ]


@require_GET
def nearby(request):
    """Open requests near the pin, for the report form's script (JSON, public facts)."""
    query = NearbyQueryForm(request.GET)
    if not query.is_valid():
        return JsonResponse({"results": [], "errors": query.errors.get_json_data()}, status=400)
    category, lat, lng = (query.cleaned_data[k] for k in ("category", "lat", "lng"))
    rows = _nearby_rows(grouping.nearby_for_portal(category, lat, lng))
    notices = [{"title": n.title, "message": n.message} for n in notices_for(lat, lng, category)]
    return JsonResponse(
        {"radius_m": category.duplicate_radius_m, "results": rows, "notices": notices}
    )


def _address_text():
    """Words for static/portal/address.js, in the resident's language."""
    return {
        "count": _("%(count)s matches. Use the up and down arrows to choose one."),
        "one": _("1 match. Press the down arrow to choose it."),
        "none": _(
            "No address found. You can send the address as you typed it, or place the pin "
            "on the map."
        ),
        "picked": _("The pin is now at %(label)s."),
        "picked_street": _(
            "The pin is now in the middle of %(label)s. Move it to where the problem is."
        ),
        "filled": _("Address filled in from the pin: %(label)s."),
        "street": _("whole street"),
    }


def _report_context(
    form,
    *,
    nearby=(),
    notices=(),
    photos_dropped=False,
    follow_errors=(),
    address_matches=None,
    address_picked=None,
):
    return {
        "form": form,
        "map_settings": _report_map_settings(),
        # The no-JS address step: None when no search was made, else the matches.
        "address_matches": address_matches,
        "address_picked": address_picked,
        "address_text": _address_text(),
        "nearby": _nearby_rows(nearby) if nearby else [],
        "service_notices": list(notices),
        "step_two": bool(nearby or notices or follow_errors),
        "follow_errors": list(follow_errors),
        "photos_dropped": photos_dropped,
        # For static/portal/nearby.js, which builds the live list in the resident's language.
        "nearby_text": {
            "follow": _("This is my problem — follow it"),
            "away": _("%(distance)s m away · reported %(reported)s"),
            "photo": _("Photo of this request"),
            "needs_email": _("To follow a request we need your email: that is where updates go."),
        },
    }


SUBMITTED_COOKIE = "submitted"


@require_GET
def confirmation(request, tracking_number):
    service_request = public_request_or_404(tracking_number)
    return render(
        request,
        "requests_app/confirmation.html",
        {
            "service_request": service_request,
            "just_submitted": request.get_signed_cookie(
                SUBMITTED_COOKIE, default=None, salt=SUBMITTED_COOKIE, max_age=3600
            )
            == tracking_number,
        },
    )


# The public request, only the columns the page shows, with whether it has public photos
# or comments and whether any notice is current: most requests have neither and notices
# are rare, so the status page skips those queries unless there is something to show.
# Compiled once, because composing and compiling it costs more than running it (see
# compiled.py). Now() keeps "current" a question for the database.
_STATUS_PAGE_REQUEST = CompiledQuery(
    lambda tracking_number: (
        ServiceRequest.objects.public()
        .filter(tracking_number=tracking_number)
        .select_related("category", "department")
        .only(
            "tracking_number",
            "status",
            "created_at",
            "due_at",
            "resolved_at",
            "close_reason",
            "address",
            "lat",
            "lng",
            "work_order",
            "description",
            "public_description_override",
            "description_approved",
            "category__name",
            "category__name_es",
            "category__group",
            "category__group_es",
            "department__name",
            "department__name_es",
        )
        .annotate(
            any_public_photos=Exists(
                Photo.objects.filter(
                    Q(request=OuterRef("pk")) | Q(work_order=OuterRef("work_order")),
                    is_public=True,
                )
            ),
            any_public_comments=Exists(
                Comment.objects.filter(request=OuterRef("pk"), is_public=True)
            ),
            any_current_notices=Exists(ServiceNotice.objects.current(Now())),
        )
        .order_by()
    ),
    tracking_number=("\x1fstand-in", ServiceRequest._meta.get_field("tracking_number")),
)


@require_GET
def status(request, tracking_number):
    # Every visitor's page runs the same statements, which the database may keep prepared.
    with statements_prepared():
        service_request = _STATUS_PAGE_REQUEST.first(tracking_number=tracking_number)
        if service_request is None:
            raise Http404
        timeline = service_request.public_timeline(comments=service_request.any_public_comments)
    photos = service_request.public_photos() if service_request.any_public_photos else []
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
            "timeline": timeline,
            "photos": photos,
            "marker": marker,
            "map_settings": _map_settings(),
            "service_notices": notices_for(
                service_request.lat, service_request.lng, service_request.category
            )
            if service_request.any_current_notices
            else [],
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
