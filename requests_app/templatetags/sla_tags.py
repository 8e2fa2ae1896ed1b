from django import template
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext as _

from requests_app import sla

register = template.Library()

COLOURS = {"on_track": "#15803d", "at_risk": "#b45309", "breached": "#b91c1c"}


def _duration(seconds):
    seconds = abs(int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    if days:
        return f"{days} d {hours} h"
    return f"{hours} h {rest // 60} min"


@register.simple_tag
def sla_badge(request):
    """“3 h 20 min left” or “overdue 2 d 4 h”, coloured by the SLA state."""
    state = sla.state(request)
    if not state:
        return _("paused") if request.sla_paused_at else "—"
    left = (request.due_at - timezone.now()).total_seconds()
    text = (_("%(t)s left") if left > 0 else _("overdue %(t)s")) % {"t": _duration(left)}
    return format_html(
        '<span class="sla sla-{}" style="color:{};font-weight:600">{}</span>',
        state,
        COLOURS[state],
        text,
    )
