from django import template
from django.urls import reverse
from django.utils.translation import gettext as _

from requests_app.access import can_edit_requests, can_see_dashboard, staff_role
from requests_app.models import StaffRole

register = template.Library()


@register.inclusion_tag("includes/staff_header.html", takes_context=True)
def staff_header(context):
    """The header of staff pages (the dashboard, the crew's phone pages) in place of the
    residents' links: the pages this person works from, and a way to sign out, which a
    shared phone or office screen needs. Signing out comes back to their first page, which
    asks the next person to sign in."""
    request = context["request"]
    user = request.user
    links = []
    if staff_role(user) == StaffRole.CREW:
        links.append((reverse("crew:my_work"), _("My work")))
    if can_edit_requests(user) or can_see_dashboard(user):
        links.append((reverse("admin:requests_app_servicerequest_changelist"), _("Requests")))
    if can_see_dashboard(user):
        links.append((reverse("dashboard:home"), _("Dashboard")))
    return {
        "request": request,
        "user": user,
        "city_name": context.get("city_name"),
        "home": links[0][0] if links else reverse("requests_app:home"),
        "links": [
            {"url": url, "label": label, "current": url == request.path} for url, label in links
        ],
        "csrf_token": context.get("csrf_token"),
    }
