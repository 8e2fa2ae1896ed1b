"""Deciding who handles a request, and explaining why.

`decide()` is pure: the routing simulator in the admin and intake use the same function,
so what the simulator shows is what intake will do.
"""

from dataclasses import dataclass, field
from threading import Lock

from django.db.models import Count, Max, Q
from django.utils.translation import gettext as _
from shapely.geometry import Point
from shapely.prepared import prep

from requests_app.models import HistoryEntry, Priority, Status
from requests_app.sla import expected_resolution

from .models import District, RoutingRule

_district_cache = {"version": None, "shapes": []}
_district_lock = Lock()
_rule_cache = {"version": None, "rules": []}
_rule_lock = Lock()


def _prepared_districts():
    """Prepared shapes of the active districts, rebuilt when any district changes."""
    version = District.objects.aggregate(changed=Max("updated_at"), count=Count("pk"))
    version = (version["changed"], version["count"])
    with _district_lock:
        if _district_cache["version"] != version:
            _district_cache["shapes"] = [
                (district, prep(district.geometry()))
                for district in District.objects.filter(is_active=True)
            ]
            _district_cache["version"] = version
        return _district_cache["shapes"]


def district_for(lat, lng):
    if lat is None or lng is None:
        return None
    point = Point(lng, lat)
    for district, shape in _prepared_districts():
        if shape.covers(point):
            return district
    return None


@dataclass
class Decision:
    district: object = None
    rule: RoutingRule | None = None
    reasons: list = field(default_factory=list)
    department: object = None
    crew: object = None
    assignee: object = None
    priority: int | None = None
    # Rules that set only a priority, noted for the explanation.
    adjustments: list = field(default_factory=list)

    @property
    def priority_label(self):
        return Priority(self.priority).label if self.priority else ""

    @property
    def to_triage(self):
        return self.department is None

    def explain(self):
        target = " / ".join(
            str(p) for p in (self.department, self.crew and self.crew.name, self.assignee) if p
        )
        if self.rule:
            text = _("Routed to %(target)s by rule ‘%(rule)s’ (%(why)s)") % {
                "target": target or _("no change"),
                "rule": self.rule.name,
                "why": " + ".join(self.reasons),
            }
        elif self.department:
            text = _(
                "Routed to %(target)s: no rule matched, default department of the category"
            ) % {"target": target}
        else:
            text = _(
                "No rule matched and the category has no active department: left in the "
                "triage queue"
            )
        for rule, reasons in self.adjustments:
            if rule != self.rule:
                text += "; " + _("priority %(priority)s by rule ‘%(rule)s’ (%(why)s)") % {
                    "priority": Priority(rule.priority).label,
                    "rule": rule.name,
                    "why": " + ".join(reasons),
                }
        return text


def _active_rules():
    """The active rules, loaded once per change rather than on every decision.

    The version is one aggregate query; rule edits in the admin (including their categories
    and districts) touch updated_at, so any change reloads the list.
    """
    version = RoutingRule.objects.aggregate(
        changed=Max("updated_at"), count=Count("pk"), active=Count("pk", filter=Q(is_active=True))
    )
    version = tuple(version.values())
    with _rule_lock:
        if _rule_cache["version"] != version:
            rules = (
                RoutingRule.objects.filter(is_active=True)
                .select_related("department", "crew__department", "assignee")
                .prefetch_related("categories", "districts")
            )
            _rule_cache["rules"] = [
                (
                    rule,
                    frozenset(c.pk for c in rule.categories.all()),
                    frozenset(d.pk for d in rule.districts.all()),
                )
                for rule in rules
            ]
            _rule_cache["version"] = version
        return _rule_cache["rules"]


def decide(category, lat, lng, text, *, district=None) -> Decision:
    """Rules in order; the first that names a department (or crew) decides where the request
    goes. Rules that only set a priority or a person add that and let the search go on."""
    district = district if district is not None else district_for(lat, lng)
    decision = Decision(district=district)
    for rule, category_ids, district_ids in _active_rules():
        reasons = rule.match(
            category, district, text, category_ids=category_ids, district_ids=district_ids
        )
        if reasons is None:
            continue
        reasons = reasons or [_("matches everything")]
        target = rule.department or (rule.crew.department if rule.crew else None)
        if target is not None and not target.is_active:
            continue  # a rule pointing at a closed department must not swallow requests
        if decision.priority is None and rule.priority:
            decision.priority = rule.priority
            decision.adjustments.append((rule, reasons))
        if decision.assignee is None and rule.assignee:
            decision.assignee = rule.assignee
        if target is not None:
            decision.rule, decision.reasons = rule, reasons
            decision.department, decision.crew = target, rule.crew
            break
    if decision.department is None:
        default = category.department
        if default is not None and default.is_active:
            decision.department = default
    return decision


def request_route(request):
    """Route a freshly received request. The caller holds the row lock."""
    decision = decide(request.category, request.lat, request.lng, request.description)
    if decision.district is not None:
        request._set("district", decision.district, actor="Routing")
        # The district may know better how long this kind of problem takes there.
        expected = expected_resolution(request.category, decision.district)
        if expected:
            request._set("expected_at", expected, actor="Routing")
    explanation = decision.explain()
    if decision.to_triage:
        request.record(HistoryEntry.Action.ROUTING, actor="Routing", note=explanation)
        return decision
    request.record(
        HistoryEntry.Action.ROUTING,
        actor="Routing",
        note=explanation,
        new=decision.rule.name if decision.rule else "",
    )
    request.assign_department(decision.department, actor="Routing", why=explanation)
    if decision.priority and decision.priority != request.priority:
        request._set("priority", decision.priority, actor="Routing", note=explanation)
    if decision.crew or decision.assignee:
        request.assign(
            crew=decision.crew, assignee=decision.assignee, actor="Routing", why=explanation
        )
    if request.status == Status.RECEIVED:
        request.change_status(Status.ASSIGNED, actor="Routing")
    return decision
