"""Signed links for reporters, who have no account: withdraw a report from public view.

The token names the request only and expires (WITHDRAW_LINK_MAX_AGE_DAYS, 90 days by
default): it is in the "we received your report" email, which is the reporter's alone, and
what it allows is mild — the request leaves the public site but stays in the city's queue.
"""

from datetime import timedelta

from django.conf import settings
from django.core import signing
from django.urls import NoReverseMatch, reverse

WITHDRAW_SALT = "requests_app.withdraw"
# Where requests_app/urls.py mounts the view; used until it does (see withdraw_url).
WITHDRAW_FALLBACK_PATH = "/requests/withdraw/{token}/"


def withdraw_link_max_age() -> timedelta:
    return timedelta(days=getattr(settings, "WITHDRAW_LINK_MAX_AGE_DAYS", 90))


def withdraw_token(request_id: int) -> str:
    return signing.TimestampSigner(salt=WITHDRAW_SALT).sign_object({"w": request_id})


def read_withdraw_token(token: str) -> int:
    """The request id; raises signing.SignatureExpired or signing.BadSignature."""
    data = signing.TimestampSigner(salt=WITHDRAW_SALT).unsign_object(
        token, max_age=withdraw_link_max_age()
    )
    try:
        return int(data["w"])
    except (KeyError, TypeError, ValueError) as error:
        raise signing.BadSignature(str(error)) from None


def withdraw_url(request_id: int) -> str:
    token = withdraw_token(request_id)
    try:
        path = reverse("requests_app:withdraw", args=[token])
    except NoReverseMatch:
        # An email rendered before the URL is mounted must not fail the intake that sends it.
        path = WITHDRAW_FALLBACK_PATH.format(token=token)
    return f"{settings.SITE_URL}{path}"
