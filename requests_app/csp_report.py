"""Where browsers report what the Content-Security-Policy blocked (its report-uri).

A blocked script or map tile is otherwise seen only by the resident whose page broke: a
report is one log line (logger `civicdesk.csp`) with the page, the directive and what was
blocked, so that a tile server changed in settings, or an injection attempt, shows up in
the logs. URLs lose their query and fragment (a sign-in link's token, a search) before they
are logged. Anyone can post here, so reports are capped per process and minute and bodies
are small; nothing is stored.
"""

import json
import logging
import time
from urllib.parse import urlsplit, urlunsplit

from django.http import HttpResponse, HttpResponseBadRequest
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

logger = logging.getLogger("civicdesk.csp")

MAX_BODY_BYTES = 16 * 1024
REPORTS_LOGGED_PER_MINUTE = 60
_minute = [0, 0]  # [minute number, reports logged in it], for this process


def _without_query(uri) -> str:
    """A URL without its query and fragment; keywords such as 'inline' stay as they are."""
    uri = str(uri or "")[:500]
    parts = urlsplit(uri)
    if not parts.scheme:
        return uri.split("?", 1)[0].split("#", 1)[0]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _violation(payload) -> dict:
    """The violation in a report-uri body: {"csp-report": {...}}."""
    if not (isinstance(payload, dict) and isinstance(payload.get("csp-report"), dict)):
        raise ValueError("not a CSP report")
    report = payload["csp-report"]
    return {
        "page": report.get("document-uri"),
        "directive": report.get("effective-directive") or report.get("violated-directive"),
        "blocked": report.get("blocked-uri"),
        "source": report.get("source-file"),
        "line": report.get("line-number"),
    }


def _may_log() -> bool:
    minute = int(time.monotonic() // 60)
    if _minute[0] != minute:
        _minute[:] = [minute, 0]
    _minute[1] += 1
    return _minute[1] <= REPORTS_LOGGED_PER_MINUTE


@csrf_exempt  # browsers post reports without a token, and nothing here acts for anyone
@require_POST
def csp_report(request):
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = MAX_BODY_BYTES + 1
    if declared > MAX_BODY_BYTES:
        return HttpResponse(status=413)
    try:
        violation = _violation(json.loads(request.body))
    except (ValueError, RecursionError):
        return HttpResponseBadRequest("Expected a CSP violation report (JSON).")
    if _may_log():
        logger.warning(
            "CSP blocked %s (%s) on %s, from %s line %s",
            _without_query(violation["blocked"]) or "?",
            str(violation["directive"] or "?")[:100],
            _without_query(violation["page"]) or "?",
            _without_query(violation["source"]) or "?",
            violation["line"] if isinstance(violation["line"], int) else "?",
        )
    return HttpResponse(status=204)
