"""Request ids in every log line, private pages kept out of caches, 403s and unverified
staff sessions dealt with.

Loaded by the LOGGING setting (RequestIdFilter) before the app registry is ready: nothing
here may import models at module level.
"""

import logging
import re
import time
import uuid
from contextvars import ContextVar

from django.conf import settings
from django.contrib.auth import logout
from django.core.signals import request_finished
from django.dispatch import receiver

logger = logging.getLogger(__name__)

# The id of the HTTP request (or of the request that enqueued a Celery task) being handled.
request_id: ContextVar[str] = ContextVar("request_id", default="")

# What a proxy may hand us: its own ids are usually UUIDs or hex. Anything else (too long,
# spaces, quotes) is replaced, so that a client cannot forge log lines through the header.
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")


def new_request_id() -> str:
    return uuid.uuid4().hex


class RequestIdFilter(logging.Filter):
    """Puts the current request id on every record (a dash outside a request)."""

    def filter(self, record):
        record.request_id = request_id.get() or "-"
        return True


class RequestIdMiddleware:
    """Takes X-Request-ID from the proxy or makes one, and returns it on the response."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        incoming = request.META.get("HTTP_X_REQUEST_ID", "")
        request.id = incoming if _VALID_ID.match(incoming) else new_request_id()
        # Not reset on the way out: Django logs 4xx/5xx responses ("django.request") after
        # the middleware has returned. request_finished clears it once the response is sent.
        request_id.set(request.id)
        response = self.get_response(request)
        response["X-Request-ID"] = request.id
        return response


@receiver(request_finished, dispatch_uid="civicdesk_clear_request_id")
def _clear_request_id(**kwargs):
    request_id.set("")


access_logger = logging.getLogger("requests_app.access")


class AccessLogMiddleware:
    """One log line per request (ACCESS_LOG, on in production instead of gunicorn's).

    It names the URL pattern rather than the path where there is one, so that the one-time
    tokens of sign-in, unsubscribe and withdraw links never reach the logs.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not settings.ACCESS_LOG:
            return self.get_response(request)
        started = time.monotonic()
        response = self.get_response(request)
        duration_ms = round(1000 * (time.monotonic() - started))
        match = getattr(request, "resolver_match", None)
        where = f"/{match.route}" if match is not None and match.route else request.path
        access_logger.info(
            "%s %s %s %sms",
            request.method,
            where,
            response.status_code,
            duration_ms,
            extra={
                "method": request.method,
                "route": where,
                "status": response.status_code,
                "duration_ms": duration_ms,
            },
        )
        return response


# Pages with reporters' names, addresses and photos, or a resident's own requests.
PRIVATE_PREFIXES = ("/admin/", "/crew/", "/dashboard/", "/my/")


class PrivateResponseMiddleware:
    """Keeps personal data out of shared and browser caches, and logs refusals.

    Every response to a signed-in staff member, and every response under the private
    prefixes, gets `Cache-Control: no-store` unless the view chose its own caching (a public
    photo may be cached). A 403 is logged with the path and who asked.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        user = getattr(request, "user", None)
        is_staff = bool(user is not None and user.is_authenticated and user.is_staff)
        if not response.has_header("Cache-Control") and (
            is_staff or request.path.startswith(PRIVATE_PREFIXES)
        ):
            response["Cache-Control"] = "no-store"
        if response.status_code == 403:
            username = user.get_username() if user is not None and user.is_authenticated else ""
            logger.warning(
                "Forbidden: %s %s for %s",
                request.method,
                request.path,
                username or "anonymous",
                extra={
                    "event": "forbidden",
                    "path": request.path,
                    "method": request.method,
                    "username": username,
                },
            )
        return response


class StaffTwoFactorMiddleware:
    """With REQUIRE_STAFF_2FA, a staff session not verified by a device is ended.

    The admin login already refuses staff without a device; this catches sessions opened
    before the setting was switched on. Comes after django_otp's OTPMiddleware.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if settings.REQUIRE_STAFF_2FA:
            user = request.user
            if user.is_authenticated and user.is_staff and not user.is_verified():
                logger.warning(
                    "Ended the unverified session of %s: two-factor sign-in is required",
                    user.get_username(),
                    extra={"event": "session_ended_2fa", "username": user.get_username()},
                )
                from django.contrib.auth.views import redirect_to_login
                from django.urls import reverse

                logout(request)
                if request.path != reverse("admin:login"):
                    return redirect_to_login(request.get_full_path())
        return self.get_response(request)
