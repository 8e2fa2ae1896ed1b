"""Duplicate groups in the dispatch admin: confirm, merge and split, plus what shows them.

Add to ServiceRequestAdmin (requests_app/admin.py):

    actions = [..., *GROUPING_ACTIONS]
    list_filter = [..., DuplicateGroupFilter]
    readonly_fields = [..., "duplicate_group"]   with  duplicate_group = duplicate_group
    inlines / get_inlines: DuplicatesInline
"""

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _

from . import grouping
from .access import can_edit_requests, visible_requests
from .models import ServiceRequest


def _check(request):
    if not can_edit_requests(request.user):
        raise PermissionDenied


def _primary(service_request):
    return service_request.duplicate_of or service_request


@admin.action(description=_("Confirm the duplicate groups of the selected requests"))
def confirm_duplicate_groups(modeladmin, request, queryset):
    _check(request)
    primaries = {_primary(r) for r in queryset.select_related("duplicate_of")}
    confirmed = sum(len(grouping.group_confirm(p, by=request.user)) for p in primaries)
    messages.success(
        request,
        _("%(n)d grouped requests confirmed in %(groups)d groups.")
        % {"n": confirmed, "groups": len(primaries)},
    )


@admin.action(description=_("Merge the selected requests into one group (the oldest leads)"))
def merge_duplicate_groups(modeladmin, request, queryset):
    _check(request)
    selected = list(queryset.select_related("duplicate_of").order_by("created_at", "pk"))
    if len(selected) < 2:
        messages.error(request, _("Select at least two requests to merge."))
        return
    # The oldest first report among the selection leads the merged group.
    into = min((_primary(r) for r in selected), key=lambda r: (r.created_at, r.pk))
    if not visible_requests(request.user).filter(pk=into.pk).exists():
        messages.error(request, _("You cannot see the request that would lead this group."))
        return
    try:
        merged = grouping.group_merge(selected, into, by=request.user)
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
        return
    messages.success(
        request,
        _("%(n)d requests merged into the group of %(primary)s.")
        % {"n": len(merged), "primary": into},
    )


@admin.action(description=_("Split the selected requests from their groups"))
def split_from_duplicate_groups(modeladmin, request, queryset):
    _check(request)
    split = 0
    for service_request in queryset:
        try:
            grouping.group_split(service_request, by=request.user)
            split += 1
        except ValidationError as error:
            messages.error(request, f"{service_request}: {' '.join(error.messages)}")
    messages.success(request, _("%(n)d requests split from their groups.") % {"n": split})


GROUPING_ACTIONS = (
    confirm_duplicate_groups,
    merge_duplicate_groups,
    split_from_duplicate_groups,
)


class DuplicateGroupFilter(admin.SimpleListFilter):
    title = _("duplicate group")
    parameter_name = "grouping"

    def lookups(self, request, model_admin):
        return [
            ("primary", _("Leads a group")),
            ("member", _("Grouped duplicate")),
            ("unconfirmed", _("Grouped, not yet confirmed")),
        ]

    def queryset(self, request, queryset):
        if self.value() == "primary":
            return queryset.annotate(n_duplicates=Count("duplicates")).filter(n_duplicates__gt=0)
        if self.value() == "member":
            return queryset.filter(duplicate_of__isnull=False)
        if self.value() == "unconfirmed":
            return queryset.filter(duplicate_of__isnull=False, duplicate_confirmed=False)
        return queryset


def _link(service_request):
    return reverse("admin:requests_app_servicerequest_change", args=[service_request.pk])


@admin.display(description=_("duplicate group"))
def duplicate_group(obj):
    """For a readonly field: the group's primary, or this request's duplicates."""
    if obj is None or obj.pk is None:
        return "—"
    if obj.duplicate_of_id:
        primary = obj.duplicate_of
        state = _("confirmed") if obj.duplicate_confirmed else _("not yet confirmed")
        return format_html(
            '{} <a href="{}">{}</a> ({})', _("Duplicate of"), _link(primary), primary, state
        )
    members = list(obj.duplicates.order_by("created_at"))
    if not members:
        return "—"
    return format_html(
        "{} {}",
        _("Leads a group with"),
        format_html_join(", ", '<a href="{}">{}</a>', ((_link(m), m) for m in members)),
    )


class DuplicatesInline(admin.TabularInline):
    """The requests grouped under this one, read-only."""

    model = ServiceRequest
    fk_name = "duplicate_of"
    fields = ["tracking_number", "status", "created_at", "address", "duplicate_confirmed"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True
    verbose_name = _("grouped duplicate")
    verbose_name_plural = _("grouped duplicates")

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_view_permission(self, request, obj=None):
        return True
