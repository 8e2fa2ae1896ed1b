"""Deciding who handles a request.

For now every request goes to its category's department; rules by area and keywords
build on this entry point.
"""

from django.utils.translation import gettext as _

from requests_app.models import HistoryEntry, Status


def request_route(request):
    """Route a freshly received request. The caller holds the row lock."""
    department = request.category.department
    if department is None or not department.is_active:
        request.record(
            HistoryEntry.Action.ROUTING,
            actor="Routing",
            note=_("No active department for this category: left in the triage queue."),
        )
        return None
    request.assign_department(
        department,
        actor="Routing",
        why=_("Routed to %(department)s: default department for %(category)s")
        % {"department": department, "category": request.category},
    )
    if request.status == Status.RECEIVED:
        request.change_status(Status.ASSIGNED, actor="Routing")
    return department
