from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.translation import gettext_lazy as _

from requests_app.access import can_edit_requests, staff_role
from requests_app.models import ServiceCategory

from .models import District, RoutingRule, RoutingRuleChange
from .services import decide
from .widgets import ADMIN_MAP_MEDIA, GeoJSONMapWidget, map_div


class DistrictForm(forms.ModelForm):
    class Meta:
        model = District
        fields = ["name", "code", "boundary", "is_active"]
        widgets = {"boundary": GeoJSONMapWidget}


@admin.register(District)
class DistrictAdmin(admin.ModelAdmin):
    form = DistrictForm
    list_display = ["name", "code", "is_active", "updated_at"]
    prepopulated_fields = {"code": ["name"]}


class SimulatorForm(forms.Form):
    category = forms.ModelChoiceField(ServiceCategory.objects.active(), label=_("Category"))
    lat = forms.FloatField(label=_("Latitude"), required=False)
    lng = forms.FloatField(label=_("Longitude"), required=False)
    text = forms.CharField(
        label=_("Description"), required=False, widget=forms.Textarea(attrs={"rows": 3})
    )


def _describe(rule):
    parts = []
    if rule.pk:
        parts.append(f"categories: {', '.join(c.name for c in rule.categories.all()) or 'any'}")
        parts.append(f"districts: {', '.join(d.name for d in rule.districts.all()) or 'any'}")
    parts += [
        f"groups: {rule.category_groups or 'any'}",
        f"keywords: {rule.keywords or 'any'}",
        f"→ department: {rule.department or '—'}",
        f"crew: {rule.crew or '—'}",
        f"person: {rule.assignee or '—'}",
        f"priority: {rule.get_priority_display() if rule.priority else '—'}",
        "active" if rule.is_active else "switched off",
        f"order {rule.position}",
    ]
    return "; ".join(parts)


@admin.register(RoutingRule)
class RoutingRuleAdmin(admin.ModelAdmin):
    list_display = ["position", "name", "is_active", "department", "crew", "priority", "updated_at"]
    list_display_links = ["name"]
    list_editable = ["position", "is_active"]
    list_filter = ["is_active", "department"]
    filter_horizontal = ["categories", "districts"]
    search_fields = ["name", "keywords", "category_groups"]
    change_list_template = "routing/admin/rule_changelist.html"

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        # Category and district edits do not touch the rule row; routing's cache watches it.
        form.instance.save(update_fields=["updated_at"])
        # After the many-to-many fields are saved, so the summary shows the rule as it is.
        RoutingRuleChange.objects.create(
            rule=form.instance,
            rule_name=form.instance.name,
            user=request.user,
            action="changed" if change else "created",
            summary=(
                f"Changed {', '.join(form.changed_data) or 'nothing'}. "
                f"Now: {_describe(form.instance)}"
            ),
        )

    def log_change(self, request, obj, message):
        # Inline list edits (order, on/off) bypass save_related; record them here too.
        if request.resolver_match and request.resolver_match.url_name.endswith("changelist"):
            RoutingRuleChange.objects.create(
                rule=obj,
                rule_name=obj.name,
                user=request.user,
                action="changed",
                summary=f"From the list. Now: {_describe(obj)}",
            )
        return super().log_change(request, obj, message)

    def delete_model(self, request, obj):
        RoutingRuleChange.objects.create(
            rule=None,
            rule_name=obj.name,
            user=request.user,
            action="deleted",
            summary=_describe(obj),
        )
        super().delete_model(request, obj)

    def get_urls(self):
        return [
            path("simulate/", self.admin_site.admin_view(self.simulate), name="routing_simulate"),
            *super().get_urls(),
        ]

    def simulate(self, request):
        """Which rule would fire for a category, a place and a text — creating nothing."""
        if staff_role(request.user) is None:
            raise PermissionDenied
        form = SimulatorForm(request.GET or None)
        decision = None
        if form.is_valid():
            data = form.cleaned_data
            decision = decide(
                data["category"], data.get("lat"), data.get("lng"), data.get("text", "")
            )
        context = {
            **self.admin_site.each_context(request),
            "title": _("Routing simulator"),
            "form": form,
            "decision": decision,
            "map": map_div("point-picker", lat="id_lat", lng="id_lng"),
            "media": self.media + ADMIN_MAP_MEDIA,
            "opts": self.model._meta,
            "can_edit": can_edit_requests(request.user),
        }
        return TemplateResponse(request, "routing/admin/simulate.html", context)


@admin.register(RoutingRuleChange)
class RoutingRuleChangeAdmin(admin.ModelAdmin):
    list_display = ["at", "rule_name", "action", "user", "summary"]
    list_filter = ["action"]
    readonly_fields = ["rule", "rule_name", "at", "user", "action", "summary"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
