"""Residents signed in by an emailed link: who they are, and which requests they may see.

A resident is not a Django user. Using a sign-in link stores the address it was sent to in
the session; every "My requests" page asks `resident_requests` what that address may see,
as staff pages ask requests_app.access.
"""

from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.db.models import Q
from django.urls import reverse

if TYPE_CHECKING:
    from requests_app.models import ServiceRequest

SESSION_KEY = "resident_email"


def resident_email(request) -> str:
    """The verified address of the signed-in resident, or "" for everyone else."""
    return request.session.get(SESSION_KEY, "")


def resident_sign_in(request, email: str):
    # A new session key: one planted in the browser before sign-in must not carry over.
    request.session.cycle_key()
    request.session[SESSION_KEY] = email.strip().lower()


def resident_sign_out(request):
    # Only the resident's part of the session: a staff login in the same browser stays.
    request.session.pop(SESSION_KEY, None)
    request.session.cycle_key()


def resident_requests(email: str):
    """The requests the resident at `email` may see: those they reported, and the public
    ones they follow (unsubscribing is unfollowing).

    A request they reported stays theirs even when it is off the public pages (withdrawn
    by them, or hidden by staff); the page then shows its timeline itself, since its
    status page answers 404.
    """
    from requests_app.models import Follower, ServiceRequest

    email = (email or "").strip()
    if not email:
        return ServiceRequest.objects.none()
    followed = Follower.objects.filter(email__iexact=email, unsubscribed_at__isnull=True)
    return ServiceRequest.objects.filter(
        Q(reporter_email__iexact=email) | Q(is_public=True, pk__in=followed.values("request_id"))
    )


def withdrawn_by_reporter(request_ids) -> set[int]:
    """Of these requests, the ones off the public pages because their reporter withdrew
    them (the signed link in the receipt), rather than because staff hid them.

    Only the latest change of the request's visibility counts: staff may have shown a
    withdrawn request again, or hidden one after that.
    """
    from requests_app.models import WITHDRAWN_BY_REPORTER, HistoryEntry

    latest = {}
    for request_id, actor_id, actor_label in (
        HistoryEntry.objects.filter(
            request_id__in=request_ids, action=HistoryEntry.Action.MODERATION, field="is_public"
        )
        .order_by("at", "pk")
        .values_list("request_id", "actor_id", "actor_label")
    ):
        latest[request_id] = actor_id is None and actor_label == WITHDRAWN_BY_REPORTER
    return {request_id for request_id, withdrawn in latest.items() if withdrawn}


def reporter_request_path(service_request) -> str:
    """Where its reporter follows `service_request`: its status page while it is public,
    else its place in "My requests"."""
    if service_request.is_public:
        return service_request.get_absolute_url()
    return my_request_path(service_request)


def my_request_path(service_request) -> str:
    """The request's place in "My requests": where its reporter follows it once it is off
    the public pages (its status page answers 404 then)."""
    return f"{reverse('resident:my_requests')}#{service_request.tracking_number}"


@dataclass(frozen=True)
class MyRequest:
    """One row of "My requests"."""

    request: "ServiceRequest"
    reported: bool
    # Off the public pages because the resident withdrew it (else, if off them, staff hid it).
    withdrawn: bool
    # Only for a request off the public pages, whose status page answers 404.
    timeline: list


def my_requests_rows(email: str) -> list[MyRequest]:
    """What "My requests" lists for the signed-in resident at `email`, newest first."""
    email = email.strip().lower()
    service_requests = list(
        resident_requests(email).select_related("category").order_by("-created_at", "-pk")
    )
    # resident_requests gives a request off the public pages to its reporter only.
    off_public = [r.pk for r in service_requests if not r.is_public]
    withdrawn = withdrawn_by_reporter(off_public) if off_public else set()
    return [
        MyRequest(
            request=r,
            reported=r.reporter_email.strip().lower() == email,
            withdrawn=r.pk in withdrawn,
            timeline=[] if r.is_public else r.public_timeline(),
        )
        for r in service_requests
    ]
