"""The reporter's signed link: take a report off the public site (it stays in the queue)."""

from django.core import signing
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from notifications.resident import my_request_path
from notifications.services import reply_address

from .links import read_withdraw_token
from .models import ServiceRequest


def _invalid(request, *, expired=False):
    return render(
        request,
        "requests_app/withdraw/invalid.html",
        {"expired": expired, "replies_reach_us": bool(reply_address())},
        status=400,
    )


@never_cache
@require_http_methods(["GET", "POST"])
def withdraw(request, token):
    try:
        request_id = read_withdraw_token(token)
    except signing.SignatureExpired:
        return _invalid(request, expired=True)
    except signing.BadSignature:
        return _invalid(request)
    service_request = (
        ServiceRequest.objects.select_related("category").filter(pk=request_id).first()
    )
    if service_request is None:
        return _invalid(request)
    if request.method == "POST":
        service_request.withdraw_by_reporter()
        return render(
            request,
            "requests_app/withdraw/done.html",
            {
                "service_request": service_request,
                "my_requests_url": my_request_path(service_request),
            },
        )
    # A GET only asks: link scanners and mail previews must not withdraw anything.
    return render(
        request,
        "requests_app/withdraw/confirm.html",
        {
            "service_request": service_request,
            "already_hidden": not service_request.is_public,
            "my_requests_url": my_request_path(service_request),
        },
    )
