from django.contrib import admin, messages
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .models import ReviewTask, Survey


@admin.register(Survey)
class SurveyAdmin(admin.ModelAdmin):
    list_display = ["request", "created_at", "rating", "is_fixed", "answered_at"]
    list_filter = ["rating", "is_fixed"]
    search_fields = ["request__tracking_number"]
    readonly_fields = [f.name for f in Survey._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(ReviewTask)
class ReviewTaskAdmin(admin.ModelAdmin):
    list_display = ["request", "rating", "is_fixed", "comment", "created_at", "closed_at"]
    list_filter = [("closed_at", admin.EmptyFieldListFilter), "is_fixed", "rating"]
    search_fields = ["request__tracking_number", "comment"]
    readonly_fields = [
        "survey",
        "request",
        "rating",
        "is_fixed",
        "comment",
        "created_at",
        "closed_at",
        "closed_by",
    ]
    fields = readonly_fields + ["outcome"]
    actions = ["close"]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.action(description=_("Mark the selected reviews done"))
    def close(self, request, queryset):
        done = queryset.open().update(closed_at=timezone.now(), closed_by=request.user)
        messages.success(request, _("%(count)d reviews closed.") % {"count": done})
