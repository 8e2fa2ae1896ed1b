from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import Count
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from requests_app.access import staff_role
from requests_app.models import StaffRole

from .models import DigestRun, InboundEmail, Notification, ServiceNotice, SuppressedAddress
from .services import notice_email_send, notification_resend


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = [
        "created_at",
        "kind",
        "template",
        "recipient",
        "status",
        "attempts",
        "next_attempt_at",
        "last_error",
        "sent_at",
        "request",
    ]
    list_filter = ["status", "kind"]
    search_fields = ["recipient", "subject", "request__tracking_number"]
    readonly_fields = [f.name for f in Notification._meta.fields]
    actions = ["resend"]

    # Dispatch watches the backlog during a provider outage and sends failed ones again;
    # directors may look. Nobody edits an email.
    OUTBOX_READERS = {StaffRole.DISPATCHER, StaffRole.DIRECTOR, StaffRole.ADMINISTRATOR}
    OUTBOX_SENDERS = {StaffRole.DISPATCHER, StaffRole.ADMINISTRATOR}

    def has_module_permission(self, request):
        return staff_role(request.user) in self.OUTBOX_READERS

    def has_view_permission(self, request, obj=None):
        return staff_role(request.user) in self.OUTBOX_READERS

    def has_change_permission(self, request, obj=None):
        # Read-only fields throughout: "change" only lets the resend action run.
        return staff_role(request.user) in self.OUTBOX_SENDERS

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.action(
        description=_("Send the selected failed notifications again"), permissions=["change"]
    )
    def resend(self, request, queryset):
        failed = queryset.filter(status=Notification.Status.FAILED)
        for notification in failed:
            notification_resend(notification)
        messages.success(
            request, _("%(count)d notifications queued again.") % {"count": len(failed)}
        )


@admin.register(SuppressedAddress)
class SuppressedAddressAdmin(admin.ModelAdmin):
    """Deleting a row lets email go to the address again."""

    list_display = ["email", "reason", "created_at"]
    list_filter = ["reason"]
    search_fields = ["email"]


@admin.register(InboundEmail)
class InboundEmailAdmin(admin.ModelAdmin):
    list_display = ["received_at", "sender", "subject", "outcome", "request"]
    list_filter = ["outcome"]
    search_fields = ["sender", "subject", "request__tracking_number"]
    readonly_fields = [f.name for f in InboundEmail._meta.fields]

    def has_add_permission(self, request):
        return False


@admin.register(DigestRun)
class DigestRunAdmin(admin.ModelAdmin):
    list_display = ["date", "department", "new_count", "overdue_count", "created_at"]
    list_filter = ["department"]
    readonly_fields = [f.name for f in DigestRun._meta.fields]

    def has_add_permission(self, request):
        return False


@admin.register(ServiceNotice)
class ServiceNoticeAdmin(admin.ModelAdmin):
    list_display = ["title", "starts_at", "ends_at", "email_residents", "emailed_to"]
    search_fields = ["title", "message"]
    filter_horizontal = ["categories"]
    actions = ["email_residents_action"]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "title",
                    "message",
                    "starts_at",
                    "ends_at",
                    "categories",
                    "email_residents",
                ]
            },
        ),
        (
            _("Where"),
            {
                "fields": ["area", "center_lat", "center_lng", "radius_m"],
                "description": _(
                    "A GeoJSON Polygon (coordinates as [longitude, latitude]), "
                    "or a centre point and a radius."
                ),
            },
        ),
    ]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(emailed_count=Count("emails"))

    @admin.display(description=_("emailed to"), ordering="emailed_count")
    def emailed_to(self, notice):
        return notice.emailed_count

    @admin.action(
        description=_("Email this notice to residents with open requests in its area"),
        permissions=["change"],
    )
    def email_residents_action(self, request, queryset):
        for notice in queryset:
            try:
                count = notice_email_send(notice)
            except ValidationError as error:
                messages.error(request, " ".join(error.messages))
                continue
            messages.success(
                request,
                ngettext(
                    "“%(notice)s”: %(count)d email queued (nobody is emailed twice).",
                    "“%(notice)s”: %(count)d emails queued (nobody is emailed twice).",
                    count,
                )
                % {"notice": notice, "count": count},
            )
