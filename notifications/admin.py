from django.contrib import admin, messages
from django.utils.translation import gettext_lazy as _

from .models import Notification
from .services import notification_resend


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ["created_at", "kind", "recipient", "status", "attempts", "sent_at", "request"]
    list_filter = ["status", "kind"]
    search_fields = ["recipient", "subject", "request__tracking_number"]
    readonly_fields = [f.name for f in Notification._meta.fields]
    actions = ["resend"]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.action(description=_("Send the selected failed notifications again"))
    def resend(self, request, queryset):
        failed = queryset.filter(status=Notification.Status.FAILED)
        for notification in failed:
            notification_resend(notification)
        messages.success(
            request, _("%(count)d notifications queued again.") % {"count": len(failed)}
        )
