"""The portal's URLs plus two floor views: the least a Django view does for each page.

Both floors run in the same gunicorn workers, settings and middleware as the portal and
use the ORM the ordinary way, without templates, so the ratio measures what the portal's
own code costs on top of serving a request at all.
"""

import uuid

from django.http import Http404, HttpResponse
from django.urls import path
from django.utils import timezone
from django.utils.html import escape
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from civicdesk.urls import urlpatterns as project_urlpatterns
from requests_app.models import IntakeThrottle, ServiceRequest


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


urlpatterns = [
    path("bench/floor/insert/", floor_insert),
    path("bench/floor/requests/<str:tracking_number>/", floor_detail),
    *project_urlpatterns,
]
