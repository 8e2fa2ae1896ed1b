from itertools import groupby
from operator import attrgetter

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ERROR_FLAG, PAGE_VAR
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Case, Count, Max, Min, Prefetch, Q, Value, When
from django.http import Http404, HttpRequest, QueryDict, StreamingHttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import formats, timezone
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _

from routing.widgets import ADMIN_MAP_MEDIA, map_div  # noqa: I001  (routing builds on this app)

from . import dashboard_views, exports, service_area
from .access import (
    assignable_crews,
    can_edit_requests,
    can_export,
    can_see_dashboard,
    staff_role,
    visible_requests,
    visible_work_orders,
)
from .admin_grouping import (
    GROUPING_ACTIONS,
    DuplicateGroupFilter,
    DuplicatesInline,
    duplicate_group,
)
from .admin_moderation import (
    LocationToConfirmFilter,
    ModerationFields,
    ModerationFilter,
    apply_moderation,
    comment_moderation_link,
    moderation_fields,
    public_flags,
    public_view,
)
from .admin_open311 import ServiceAttributeInline
from .dashboard import Filters
from .export_tasks import ADMIN_LIST, export_start
from .models import (
    OPEN_STATUSES,
    TRANSITIONS,
    Channel,
    CloseReason,
    Comment,
    ConcurrentChange,
    Crew,
    Department,
    EscalationStep,
    ExportJob,
    HistoryEntry,
    Holiday,
    Photo,
    Priority,
    ServiceCategory,
    ServiceRequest,
    SLAPolicy,
    StaffProfile,
    Status,
    WorkingCalendar,
    WorkOrder,
    WorkOrderStatus,
)
from .services import Intake, request_submit
from .templatetags.sla_tags import sla_badge

STAFF_CHANNELS = [
    (c.value, c.label) for c in (Channel.PHONE, Channel.WALK_IN, Channel.EMAIL, Channel.SOCIAL)
]


@admin.register(Department)
class DepartmentAdmin(admin.ModelAdmin):
    list_display = ["name", "email", "is_active"]
    prepopulated_fields = {"slug": ["name"]}


@admin.register(ServiceCategory)
class ServiceCategoryAdmin(admin.ModelAdmin):
    inlines = [ServiceAttributeInline]
    list_display = [
        "name",
        "code",
        "group",
        "department",
        "sla_hours",
        "default_priority",
        "is_active",
    ]
    list_filter = ["group", "department", "is_active"]
    search_fields = ["name", "code", "keywords"]
    prepopulated_fields = {"code": ["name"]}


class HolidayInline(admin.TabularInline):
    model = Holiday
    extra = 1


@admin.register(WorkingCalendar)
class WorkingCalendarAdmin(admin.ModelAdmin):
    list_display = ["name", "time_zone", "weekdays", "day_starts", "day_ends"]
    inlines = [HolidayInline]


class EscalationStepInline(admin.TabularInline):
    model = EscalationStep
    extra = 1


@admin.register(SLAPolicy)
class SLAPolicyAdmin(admin.ModelAdmin):
    list_display = ["name", "acknowledge_hours", "resolve_hours", "clock", "calendar"]
    inlines = [EscalationStepInline]


@admin.register(StaffProfile)
class StaffProfileAdmin(admin.ModelAdmin):
    list_display = ["user", "role", "department"]
    list_filter = ["role", "department"]


class StaffIntakeForm(forms.ModelForm):
    """A phone call or a visit at the counter, entered by staff."""

    channel = forms.ChoiceField(choices=STAFF_CHANNELS, initial=Channel.PHONE)

    class Meta:
        model = ServiceRequest
        fields = [
            "channel",
            "category",
            "description",
            "address",
            "lat",
            "lng",
            "reporter_name",
            "reporter_email",
            "reporter_phone",
            "language",
        ]
        widgets = {"language": forms.Select(choices=[("en", "English"), ("es", "Español")])}

    def clean(self):
        cleaned = super().clean()
        lat, lng = cleaned.get("lat"), cleaned.get("lng")
        if (lat is None) != (lng is None):
            raise ValidationError(_("Give both latitude and longitude, or neither."))
        if lat is not None and not service_area.contains(lat, lng):
            self.add_error("lat", _("This location is outside the service area."))
        if lat is None and not (cleaned.get("address") or "").strip():
            self.add_error("address", _("Give an address or a map position."))
        return cleaned


def attachable_work_orders(user, service_request):
    """Active work orders `user` may add `service_request` to: its own department's first,
    then the others by department, newest first within each."""
    own_department_first = Case(
        When(department_id=service_request.department_id, then=Value(0)), default=Value(1)
    )
    orders = visible_work_orders(user).active()
    if service_request.work_order_id:
        orders = orders.exclude(pk=service_request.work_order_id)
    return (
        orders.select_related("department", "crew")
        .prefetch_related(
            Prefetch(
                "requests",
                ServiceRequest.objects.select_related("category")
                .only("work_order", "address", "created_at", "category__name")
                .order_by("created_at", "pk"),
            )
        )
        .order_by(own_department_first, "department__name", "department_id", "-pk")
    )


class _GroupedByDepartment(forms.models.ModelChoiceIterator):
    def __iter__(self):
        if self.field.empty_label is not None:
            yield ("", self.field.empty_label)
        for department, orders in groupby(self.queryset, key=attrgetter("department")):
            yield (self.field.group_label(department), [self.choice(o) for o in orders])


class WorkOrderChoiceField(forms.ModelChoiceField):
    """Work orders said in words — what and where, status, crew — grouped by department,
    since "WO-133" alone means nothing to whoever picks one."""

    iterator = _GroupedByDepartment
    # The department of the request being worked on; its work orders come first.
    home_department = None

    def group_label(self, department):
        if department == self.home_department:
            return _("%(department)s (this request's department)") % {"department": department}
        return str(department)

    def label_from_instance(self, order):
        requests = order.requests.all()  # prefetched by attachable_work_orders
        if requests:
            first = requests[0]
            what = f"{first.category.name}, {first.address or '—'}"
            if len(requests) > 1:
                what = _("%(request)s and %(n)d more") % {"request": what, "n": len(requests) - 1}
        else:
            what = "—"
        status = order.get_status_display()
        if order.status == WorkOrderStatus.SCHEDULED and order.scheduled_for:
            status = f"{status} {formats.date_format(order.scheduled_for, 'SHORT_DATE_FORMAT')}"
        crew = order.crew.name if order.crew else _("no crew")
        return f"{order} · {what} · {status} · {crew}"


class RequestWorkForm(ModerationFields, forms.ModelForm):
    """The change page: status, priority, department, comments and what the public sees,
    each with history."""

    new_status = forms.ChoiceField(label=_("Change status to"), required=False)
    status_note = forms.CharField(
        label=_("Note shown to the resident with the status"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
    )
    close_reason_choice = forms.ChoiceField(
        label=_("Reason (when closing without fix)"),
        choices=[("", "—"), *CloseReason.choices],
        required=False,
    )
    assign_crew = forms.ModelChoiceField(
        Crew.objects.none(), label=_("Assign to crew"), required=False
    )
    forward_to = forms.ModelChoiceField(
        Department.objects.filter(is_active=True),
        label=_("Send to department (forward)"),
        required=False,
    )
    forward_reason = forms.CharField(label=_("Why forward"), required=False)
    work_order_action = forms.ChoiceField(
        label=_("Work order"),
        required=False,
        choices=[
            ("", "—"),
            ("new", _("Create a work order for this request")),
            ("attach", _("Attach to the work order chosen below")),
        ],
    )
    attach_to = WorkOrderChoiceField(
        WorkOrder.objects.none(), label=_("Existing work order"), required=False
    )
    comment = forms.CharField(
        label=_("Add a comment"), required=False, widget=forms.Textarea(attrs={"rows": 3})
    )
    comment_is_public = forms.BooleanField(
        label=_("Public (shown to the resident and emailed); leave unticked for an internal note"),
        required=False,
    )
    # The row's updated_at when the page was loaded, to the microsecond: a save based on a
    # stale page is refused instead of silently undoing someone else's change.
    loaded_at = forms.CharField(widget=forms.HiddenInput, required=False)

    class Meta:
        model = ServiceRequest
        fields = ["priority", "is_public"]

    def __init__(self, *args, user=None, **kwargs):
        super().__init__(*args, **kwargs)
        if user is not None:
            self.fields["assign_crew"].queryset = assignable_crews(user)
            self.fields["attach_to"].queryset = attachable_work_orders(user, self.instance)
            self.fields["attach_to"].home_department = self.instance.department
        current = Status(self.instance.status)
        self.fields["new_status"].choices = [("", "—")] + [
            (s.value, s.label) for s in Status if s in TRANSITIONS[current]
        ]
        self.fields["loaded_at"].initial = self.instance.updated_at.isoformat()
        self.init_moderation(self.instance)

    def clean(self):
        cleaned = super().clean()
        stored = (
            ServiceRequest.objects.filter(pk=self.instance.pk)
            .values_list("updated_at", flat=True)
            .first()
        )
        if stored and cleaned.get("loaded_at") != stored.isoformat():
            raise ValidationError(
                _(
                    "Someone else changed this request while you had it open. Reload the page "
                    "to see their change, then make yours."
                )
            )
        if cleaned.get("new_status") == Status.CLOSED and not cleaned.get("close_reason_choice"):
            self.add_error("close_reason_choice", _("Closing without a fix needs a reason."))
        if cleaned.get("new_status") == Status.RECEIVED and not cleaned.get("status_note"):
            self.add_error("status_note", _("Say why the request is reopened."))
        if cleaned.get("work_order_action") == "attach" and not cleaned.get("attach_to"):
            self.add_error("attach_to", _("Choose the work order to attach to."))
        if cleaned.get("forward_to") and not cleaned.get("forward_reason"):
            self.add_error("forward_reason", _("Say why the request goes to another department."))
        self.clean_moderation(cleaned, self.instance)
        return cleaned


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False

    def has_view_permission(self, request, obj=None):
        return staff_role(request.user) is not None

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class HistoryInline(ReadOnlyInline):
    model = HistoryEntry
    fields = ["at", "actor_label", "action", "field", "old_value", "new_value", "note", "public"]
    readonly_fields = fields
    verbose_name_plural = _("History (append-only)")

    @admin.display(description=_("Public"), boolean=True)
    def public(self, entry):
        # A public comment's entry is stored with is_public False, because the public
        # timeline shows the comment itself, not the entry (ServiceRequest.add_comment);
        # staff reading the history want to know whether the public saw it.
        return entry.is_public or entry.action == HistoryEntry.Action.COMMENT


class CommentInline(ReadOnlyInline):
    model = Comment
    fields = ["created_at", "author_label", "visibility", "text", "moderation"]
    readonly_fields = fields
    verbose_name_plural = _("Public comments and internal notes")
    moderation = staticmethod(comment_moderation_link)

    @admin.display(description=_("Visibility"))
    def visibility(self, comment):
        if comment.is_public:
            return format_html('<strong style="color:#15803d">{}</strong>', _("Public comment"))
        return format_html('<strong style="color:#b45309">{}</strong>', _("Internal note"))


class PhotoInline(ReadOnlyInline):
    model = Photo
    fields = ["preview", "kind", "short_id", "is_public", "awaiting_approval", "uploaded_at"]
    readonly_fields = fields

    @admin.display(description=_("Id"))
    def short_id(self, photo):
        return str(photo.pk)[:8]

    @admin.display(description=_("Awaiting approval"), boolean=True)
    def awaiting_approval(self, photo):
        return photo.awaiting_approval

    @admin.display(description=_("Photo"))
    def preview(self, photo):
        return format_html(
            '<a href="{}"><img src="{}" style="max-height:120px" alt=""></a>',
            photo.get_absolute_url(),
            photo.get_thumbnail_url(),
        )


class BulkAssignForm(forms.Form):
    crew = forms.ModelChoiceField(Crew.objects.none(), label=_("Crew"))

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["crew"].queryset = assignable_crews(user)


class SLAFilter(admin.SimpleListFilter):
    title = _("service level")
    parameter_name = "sla"

    def lookups(self, request, model_admin):
        return [("on_track", _("On track")), ("at_risk", _("At risk")), ("breached", _("Breached"))]

    def queryset(self, request, queryset):
        now = timezone.now()
        open_requests = queryset.open().filter(sla_paused_at__isnull=True)
        if self.value() == "on_track":
            return open_requests.filter(
                Q(at_risk_at__gt=now) | Q(at_risk_at__isnull=True), due_at__gt=now
            )
        if self.value() == "at_risk":
            return open_requests.filter(at_risk_at__lte=now, due_at__gt=now)
        if self.value() == "breached":
            return open_requests.filter(due_at__lte=now)
        return queryset


class AssignmentFilter(admin.SimpleListFilter):
    title = _("assignment")
    parameter_name = "assignment"

    def lookups(self, request, model_admin):
        return [("triage", _("Triage queue (no department)")), ("no_crew", _("No crew yet"))]

    def queryset(self, request, queryset):
        if self.value() == "triage":
            return queryset.needing_triage()
        if self.value() == "no_crew":
            return queryset.open().filter(crew__isnull=True)
        return queryset


def listed_requests(user, query: str):
    """The requests the admin's request list shows `user` for the query string `query` (its
    filters, search and date drill-down), for an export the worker writes later."""
    request = HttpRequest()
    request.method = "GET"
    request.user = user
    request.GET = QueryDict(query)
    model_admin = admin.site.get_model_admin(ServiceRequest)
    return model_admin.get_changelist_instance(request).queryset


def _csv_download(requests, user):
    stamp = timezone.localtime().strftime("%Y%m%d-%H%M%S")
    response = StreamingHttpResponse(
        exports.csv_lines(requests, exports.columns_for(user)),
        content_type="text/csv; charset=utf-8",
    )
    response["Content-Disposition"] = f'attachment; filename="requests-{stamp}.csv"'
    return response


def _export_in_background(user, query: str, requests) -> ExportJob:
    # The job page describes a job by its period: here, the days the rows were received.
    span = requests.aggregate(first=Min("created_at"), last=Max("created_at"))
    today = timezone.localdate()
    period = Filters(
        start=timezone.localdate(span["first"]) if span["first"] else today,
        end=timezone.localdate(span["last"]) if span["last"] else today,
    )
    with transaction.atomic():
        job = ExportJob.objects.create(
            requested_by=user,
            format=ExportJob.Format.CSV,
            filters={**period.as_dict(), ADMIN_LIST: query},
        )
        export_start(job)
    return job


@admin.register(ServiceRequest)
class ServiceRequestAdmin(admin.ModelAdmin):
    list_display = [
        "tracking_number",
        "category",
        "status",
        "priority",
        "department",
        "channel",
        "address",
        "created_at",
        "time_left",
        "public_flags",
    ]
    list_filter = [
        SLAFilter,
        ModerationFilter,
        LocationToConfirmFilter,
        "status",
        "priority",
        "department",
        "category",
        "district",
        "channel",
        AssignmentFilter,
        DuplicateGroupFilter,
        "crew",
    ]
    search_fields = ["tracking_number", "address", "description"]
    list_select_related = ["category", "department", "crew"]
    actions = ["assign_to_crew", "create_work_order", *GROUPING_ACTIONS]
    duplicate_group = staticmethod(duplicate_group)
    public_view = staticmethod(public_view)
    public_flags = staticmethod(public_flags)
    change_list_template = "admin/requests_app/servicerequest_changelist.html"
    date_hierarchy = "created_at"
    readonly_fields = [
        "tracking_number",
        "category",
        "description",
        "answers",
        "public_view",
        "address",
        "location",
        "map",
        "channel",
        "status",
        "district",
        "crew",
        "assignee",
        "work_order_link",
        "forward_count",
        "reporter",
        "language",
        "created_at",
        "first_response_at",
        "resolved_at",
        "due_at",
        "close_reason",
        "duplicate_group",
        "records",
    ]

    def get_queryset(self, request):
        return visible_requests(request.user).select_related("category", "department")

    def get_ordering(self, request):
        # Open requests first, most urgent at the top; completed and closed ones after them
        # rather than among them. A column's header still sorts by that column alone.
        closed_last = Case(When(status__in=OPEN_STATUSES, then=Value(0)), default=Value(1))
        return [closed_last.asc(), "-priority", "due_at"]

    def get_urls(self):
        export = path(
            "export.csv",
            self.admin_site.admin_view(self.export_view),
            name="requests_app_servicerequest_export",
        )
        return [export, *super().get_urls()]

    def export_view(self, request):
        """The list's "Export these as CSV": exactly its rows for the same query string, in
        the dashboard export's columns and privacy rules; a large one is written by the
        worker like the dashboard's."""
        if not can_export(request.user):
            raise Http404
        query = request.GET.copy()
        query.pop(PAGE_VAR, None)  # every page, not the one the list was on
        request.GET = query
        try:
            listed = self.get_changelist_instance(request)
        except IncorrectLookupParameters:
            changelist = reverse("admin:requests_app_servicerequest_changelist")
            return redirect(f"{changelist}?{ERROR_FLAG}=1")
        if listed.result_count > dashboard_views.STREAM_MAX_ROWS:
            job = _export_in_background(request.user, query.urlencode(), listed.queryset)
            return redirect("dashboard:export_job", pk=job.pk)
        return _csv_download(listed.queryset, request.user)

    def has_add_permission(self, request):
        return can_edit_requests(request.user)

    def has_change_permission(self, request, obj=None):
        # Directors and crews look; dispatch and department staff act.
        return can_edit_requests(request.user)

    def has_view_permission(self, request, obj=None):
        return staff_role(request.user) is not None

    def has_delete_permission(self, request, obj=None):
        return False  # requests are never deleted; close them instead

    def has_module_permission(self, request):
        return staff_role(request.user) is not None

    def get_form(self, request, obj=None, change=False, **kwargs):
        kwargs["form"] = RequestWorkForm if obj else StaffIntakeForm
        form = super().get_form(request, obj, change=change, **kwargs)
        if obj is None:
            return form

        class FormForUser(form):
            def __init__(self, *args, **inner):
                super().__init__(*args, user=request.user, **inner)

        return FormForUser

    def get_fields(self, request, obj=None):
        if obj is None:
            return StaffIntakeForm.Meta.fields
        editable = (
            [
                "new_status",
                "status_note",
                "close_reason_choice",
                "assign_crew",
                "priority",
                "work_order_action",
                "attach_to",
                "forward_to",
                "forward_reason",
                *moderation_fields(obj),
                "comment",
                "comment_is_public",
                "loaded_at",
            ]
            if can_edit_requests(request.user)
            else []
        )
        return [*self.readonly_fields, *editable]

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.readonly_fields

    def get_inlines(self, request, obj):
        return [HistoryInline, CommentInline, PhotoInline, DuplicatesInline] if obj else []

    @admin.display(description=_("Location"))
    def location(self, obj):
        if not obj.has_location:
            return "—"
        return format_html(
            '{}, {} · <a href="https://www.openstreetmap.org/?mlat={}&mlon={}#map=18/{}/{}" '
            'target="_blank" rel="noopener">{}</a>',
            obj.lat,
            obj.lng,
            obj.lat,
            obj.lng,
            obj.lat,
            obj.lng,
            _("open map"),
        )

    @admin.display(description=_("Answers"))
    def answers(self, obj):
        """The reporter's answers to the category's questions, from the portal or Open311,
        in the questions' order, with choices by name: one query however many there are."""
        given = obj.answers.select_related("attribute").order_by("attribute__order", "attribute_id")
        return (
            format_html_join(
                "",
                "<p><strong>{}</strong><br>{}</p>",
                ((a.attribute.description, a.attribute.answer_text(a.value)) for a in given),
            )
            or "—"
        )

    @admin.display(description=_("Records"))
    def records(self, obj):
        url = reverse("dashboard:audit_package", args=[obj.tracking_number])
        return format_html(
            '<a href="{}">{}</a> · <a href="{}?version=public">{}</a>',
            url,
            _("Audit package (staff)"),
            url,
            _("Public version (FOIA)"),
        )

    def changelist_view(self, request, extra_context=None):
        # Links only for those the pages behind them answer.
        tools = {}
        if can_export(request.user):
            query = request.GET.urlencode()
            export = reverse("admin:requests_app_servicerequest_export")
            tools["export_url"] = f"{export}?{query}" if query else export
        if can_see_dashboard(request.user):
            tools["dashboard_url"] = reverse("dashboard:home")
        return super().changelist_view(request, {**(extra_context or {}), **tools})

    @admin.display(description=_("Time left"), ordering="due_at")
    def time_left(self, obj):
        return sla_badge(obj)

    @admin.display(description=_("Map"))
    def map(self, obj):
        if not obj.has_location:
            return "—"
        return map_div("point-view", point_lat=obj.lat, point_lng=obj.lng)

    @admin.display(description=_("Work order"))
    def work_order_link(self, obj):
        if not obj.work_order_id:
            return "—"
        order = obj.work_order
        return format_html(
            '<a href="{}">{} · {}</a>',
            reverse("admin:requests_app_workorder_change", args=[order.pk]),
            order,
            order.get_status_display(),
        )

    @property
    def media(self):
        return super().media + ADMIN_MAP_MEDIA

    @admin.display(description=_("Reporter (private)"))
    def reporter(self, obj):
        parts = [p for p in (obj.reporter_name, obj.reporter_email, obj.reporter_phone) if p]
        return format_html_join(" · ", "{}", ((p,) for p in parts)) or "—"

    def save_model(self, request, obj, form, change):
        if not change:
            data = form.cleaned_data
            created = request_submit(
                Intake(
                    category=data["category"],
                    description=data["description"],
                    channel=data["channel"],
                    lat=data.get("lat"),
                    lng=data.get("lng"),
                    address=data.get("address") or "",
                    reporter_name=data.get("reporter_name") or "",
                    reporter_email=data.get("reporter_email") or "",
                    reporter_phone=data.get("reporter_phone") or "",
                    language=data.get("language") or "en",
                    entered_by=request.user,
                )
            )
            obj.pk = created.pk
            obj.tracking_number = created.tracking_number
            return
        self._apply_work(request, obj, form)

    def _apply_work(self, request, obj, form):
        data = form.cleaned_data
        stored = ServiceRequest.objects.get(pk=obj.pk)
        try:
            with transaction.atomic():
                if "priority" in form.changed_data:
                    ServiceRequest.objects.filter(pk=obj.pk).update(priority=data["priority"])
                    stored.record(
                        HistoryEntry.Action.FIELD,
                        by=request.user,
                        field="priority",
                        old=Priority(stored.priority).label,
                        new=Priority(data["priority"]).label,
                    )
                apply_moderation(stored, form, request.user)
                if data.get("new_status"):
                    stored.change_status(
                        data["new_status"],
                        by=request.user,
                        note=data.get("status_note", ""),
                        close_reason=data.get("close_reason_choice", ""),
                    )
                if data.get("assign_crew"):
                    stored.assign(crew=data["assign_crew"], by=request.user)
                if data.get("forward_to"):
                    stored.forward(
                        data["forward_to"], by=request.user, reason=data["forward_reason"]
                    )
                if data.get("work_order_action") == "new":
                    WorkOrder.create_for([stored], crew=stored.crew, by=request.user)
                elif data.get("work_order_action") == "attach":
                    data["attach_to"].attach(stored, by=request.user)
                if data.get("comment"):
                    stored.add_comment(
                        data["comment"],
                        by=request.user,
                        public=data.get("comment_is_public", False),
                    )
        except (ConcurrentChange, ValidationError) as error:
            messages.error(request, " ".join(error.messages))

    @admin.action(description=_("Assign the selected requests to a crew…"))
    def assign_to_crew(self, request, queryset):
        if not can_edit_requests(request.user):
            raise PermissionDenied
        form = BulkAssignForm(request.POST if "apply" in request.POST else None, user=request.user)
        if form.is_valid():
            assigned, refused = 0, []
            for service_request in queryset:
                try:
                    service_request.assign(crew=form.cleaned_data["crew"], by=request.user)
                    assigned += 1
                except ValidationError as error:
                    refused.append(f"{service_request}: {' '.join(error.messages)}")
            messages.success(
                request,
                _("%(n)d requests assigned to %(crew)s.")
                % {"n": assigned, "crew": form.cleaned_data["crew"]},
            )
            for problem in refused:
                messages.error(request, problem)
            return None
        return TemplateResponse(
            request,
            "admin/requests_app/bulk_assign.html",
            {
                **self.admin_site.each_context(request),
                "title": _("Assign to a crew"),
                "form": form,
                "requests": queryset,
                "opts": self.model._meta,
                "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
            },
        )

    @admin.action(description=_("Create one work order for the selected requests"))
    def create_work_order(self, request, queryset):
        if not can_edit_requests(request.user):
            raise PermissionDenied
        selected = list(queryset.select_related("crew__department", "department"))
        try:
            crew = next((r.crew for r in selected if r.crew), None)
            order = WorkOrder.create_for(selected, crew=crew, by=request.user)
        except ValidationError as error:
            messages.error(request, " ".join(error.messages))
            return None
        messages.success(
            request,
            _("%(order)s created with %(n)d requests.")
            % {"order": order, "n": order.requests.count()},
        )
        return None


@admin.register(Crew)
class CrewAdmin(admin.ModelAdmin):
    list_display = ["name", "department", "is_active"]
    list_filter = ["department", "is_active"]
    filter_horizontal = ["members"]


class WorkOrderRequestInline(ReadOnlyInline):
    model = ServiceRequest
    fk_name = "work_order"
    fields = ["tracking_number", "category", "status", "address"]
    readonly_fields = fields
    verbose_name_plural = _("Requests in this work order")


class WorkOrderPhotoInline(PhotoInline):
    fk_name = "work_order"


@admin.register(WorkOrder)
class WorkOrderAdmin(admin.ModelAdmin):
    list_display = [
        "__str__",
        "department",
        "crew",
        "status",
        "priority",
        "scheduled_for",
        "request_count",
        "completed_at",
    ]
    list_filter = ["status", "department", "crew"]
    fields = [
        "department",
        "crew",
        "status",
        "priority",
        "scheduled_for",
        "labour_hours",
        "cost",
        "resolution_note",
        "created_at",
        "started_at",
        "completed_at",
    ]
    readonly_fields = [
        "department",
        "status",
        "created_at",
        "started_at",
        "completed_at",
        "resolution_note",
    ]
    inlines = [WorkOrderRequestInline, WorkOrderPhotoInline]

    def get_queryset(self, request):
        return (
            visible_work_orders(request.user)
            .select_related("department", "crew")
            .annotate(n_requests=Count("requests"))
        )

    @admin.display(description=_("requests"), ordering="n_requests")
    def request_count(self, order):
        return order.n_requests

    def has_module_permission(self, request):
        return staff_role(request.user) is not None

    def has_view_permission(self, request, obj=None):
        return staff_role(request.user) is not None

    def has_change_permission(self, request, obj=None):
        return can_edit_requests(request.user)

    def has_add_permission(self, request):
        return False  # created from requests, so they are never empty

    def has_delete_permission(self, request, obj=None):
        return False
