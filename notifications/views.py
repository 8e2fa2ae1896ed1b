from django.core import signing
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from .links import read_unsubscribe_token
from .services import follower_unsubscribe, unsubscribe_target


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
        follower_unsubscribe(service_request, email)
        return render(request, "notifications/unsubscribe_done.html", context)
    # A GET only asks: link scanners and previews must not unsubscribe anyone.
    return render(request, "notifications/unsubscribe_confirm.html", context)
