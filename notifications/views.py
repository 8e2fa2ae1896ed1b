from datetime import timedelta

from django.contrib import messages
from django.core import signing
from django.shortcuts import redirect, render
from django.utils.translation import get_language
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_POST

from requests_app.models import IntakeThrottle

# The portal's own reading of the client address (and of X-Forwarded-For behind a proxy):
# the sign-in form must be limited exactly as the report form is.
from requests_app.views import _client_ip

from .forms import SignInLinkForm
from .links import address_key, read_unsubscribe_token, signin_token_hash
from .models import ResidentSignInLink
from .resident import my_requests_rows, resident_email, resident_sign_in, resident_sign_out
from .services import (
    SIGN_IN_LINK_LIFETIME,
    follower_unsubscribe,
    is_unsubscribed,
    signin_link_send,
    unsubscribe_target,
)

SIGN_IN_LINKS_PER_EMAIL_PER_HOUR = 5
SIGN_IN_ASKS_PER_IP_PER_HOUR = 20


# Mail clients send the one-click unsubscribe (RFC 8058) as a bare POST without our CSRF
# token; the signed token in the URL is what authorises it.
@csrf_exempt
@require_http_methods(["GET", "POST"])
def unsubscribe(request, token):
    try:
        request_id, key = read_unsubscribe_token(token)
    except signing.BadSignature:
        return render(request, "notifications/unsubscribe_invalid.html", status=400)
    service_request, email = unsubscribe_target(request_id, key)
    if service_request is None:
        return render(request, "notifications/unsubscribe_invalid.html", status=400)
    context = {"service_request": service_request}
    if request.method == "POST":
        changed = follower_unsubscribe(service_request, email)
        return render(
            request, "notifications/unsubscribe_done.html", {**context, "already": not changed}
        )
    if is_unsubscribed(service_request, email):
        return render(request, "notifications/unsubscribe_done.html", {**context, "already": True})
    # A GET only asks: link scanners and previews must not unsubscribe anyone.
    return render(request, "notifications/unsubscribe_confirm.html", context)


# --- My requests ------------------------------------------------------------------------


@never_cache
@require_http_methods(["GET", "POST"])
def my_requests(request):
    """Signed in: the resident's requests. Otherwise: ask for a sign-in link (the POST)."""
    if request.method == "POST":
        return _ask_for_link(request)
    email = resident_email(request)
    if not email:
        return render(request, "notifications/my_requests_ask.html", {"form": SignInLinkForm()})
    return render(
        request,
        "notifications/my_requests.html",
        {"email": email, "rows": my_requests_rows(email)},
    )


def _ask_for_link(request):
    form = SignInLinkForm(request.POST)
    hour = timedelta(hours=1)
    within_limit = IntakeThrottle.hit(
        f"signin-ip:{_client_ip(request)}", limit=SIGN_IN_ASKS_PER_IP_PER_HOUR, window=hour
    )
    if within_limit and form.is_valid():
        # Counted for every address, known or not, so the limit itself tells nothing.
        within_limit = IntakeThrottle.hit(
            f"signin-email:{address_key(form.cleaned_data['email'])}",
            limit=SIGN_IN_LINKS_PER_EMAIL_PER_HOUR,
            window=hour,
        )
    if not within_limit:
        form.is_valid()
        form.add_error(
            None,
            _(
                "Too many sign-in links were asked for from here or for this address. "
                "Please use the last link we sent, or try again in an hour."
            ),
        )
        return render(request, "notifications/my_requests_ask.html", {"form": form}, status=429)
    if not form.is_valid():
        return render(request, "notifications/my_requests_ask.html", {"form": form}, status=400)
    email = form.cleaned_data["email"]
    signin_link_send(email, get_language())
    return render(
        request,
        "notifications/signin_link_sent.html",
        {"email": email, "link_minutes": int(SIGN_IN_LINK_LIFETIME.total_seconds() // 60)},
    )


@never_cache
@require_http_methods(["GET", "POST"])
def sign_in(request, token):
    """GET shows a "Sign in" button; only its POST spends the link, so mail scanners that
    open every link sign nobody in and spend nothing."""
    link = ResidentSignInLink.objects.filter(token_hash=signin_token_hash(token)).first()
    if link is None:
        return _link_refused(request, "invalid", status=400)
    if request.method == "POST":
        if link.use():
            resident_sign_in(request, link.email)
            return redirect("resident:my_requests")
        link.refresh_from_db()
    if link.used_at is not None:
        return _link_refused(request, "used", status=410)
    if link.is_expired():
        return _link_refused(request, "expired", status=410)
    return render(request, "notifications/signin_confirm.html")


def _link_refused(request, reason, status):
    return render(
        request,
        "notifications/signin_link_invalid.html",
        {"reason": reason, "signed_in": bool(resident_email(request))},
        status=status,
    )


@never_cache
@require_POST
def sign_out(request):
    resident_sign_out(request)
    messages.success(request, _("You are signed out."))
    return redirect("resident:my_requests")
