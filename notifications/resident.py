"""Residents signed in by an emailed link: who they are, and which requests they may see.

A resident is not a Django user. Using a sign-in link stores the address it was sent to in
the session; every "My requests" page asks `resident_requests` what that address may see,
as staff pages ask requests_app.access.
"""

from django.db.models import Q

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

    A request they reported stays theirs even when staff hide it from the public; the page
    then shows it without a link to its (public) status page.
    """
    from requests_app.models import Follower, ServiceRequest

    email = (email or "").strip()
    if not email:
        return ServiceRequest.objects.none()
    followed = Follower.objects.filter(email__iexact=email, unsubscribed_at__isnull=True)
    return ServiceRequest.objects.filter(
        Q(reporter_email__iexact=email) | Q(is_public=True, pk__in=followed.values("request_id"))
    )
