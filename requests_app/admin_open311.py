"""Admin for Open311: API clients and their keys, and the per-category questions."""

from django import forms
from django.contrib import admin, messages
from django.db import transaction
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.translation import gettext_lazy as _

from .access import staff_role
from .models import ApiClient, ServiceAttribute, StaffRole
from .open311 import api_client_issue_key, api_client_revoke


def _is_administrator(request):
    return staff_role(request.user) == StaffRole.ADMINISTRATOR


@admin.register(ApiClient)
class ApiClientAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "key_prefix",
        "contact_email",
        "requests_per_minute",
        "is_active",
        "created_at",
        "revoked_at",
    ]
    list_filter = ["is_active"]
    search_fields = ["name", "contact_email", "key_prefix"]
    # The list and the autocomplete page through clients in a stable order.
    ordering = ["name", "pk"]
    fields = ["name", "contact_email", "requests_per_minute", "is_active", "key_prefix"]
    readonly_fields = ["key_prefix", "created_at", "revoked_at"]
    actions = ["issue_new_key", "revoke_keys"]

    # Keys let outside systems file requests in the city's name: administrators only.
    def has_module_permission(self, request):
        return _is_administrator(request)

    def has_view_permission(self, request, obj=None):
        return _is_administrator(request)

    def has_add_permission(self, request):
        return _is_administrator(request)

    def has_change_permission(self, request, obj=None):
        return _is_administrator(request)

    def has_delete_permission(self, request, obj=None):
        return False  # revoke instead: the client's requests keep pointing at it

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["name", "contact_email", "requests_per_minute"]
        return [*self.fields, "created_at", "revoked_at"]

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        # The key exists only in this response; nothing else (not even a message in the
        # session or a cookie) ever holds it.
        request._open311_issued_key = api_client_issue_key(obj)

    def response_add(self, request, obj, post_url_continue=None):
        key = getattr(request, "_open311_issued_key", None)
        if key is None:
            return super().response_add(request, obj, post_url_continue)
        return self._show_key(request, obj, key)

    def _show_key(self, request, client, key):
        response = TemplateResponse(
            request,
            "admin/requests_app/apiclient/key_issued.html",
            {
                **self.admin_site.each_context(request),
                "client": client,
                "key": key,
                "change_url": reverse("admin:requests_app_apiclient_change", args=[client.pk]),
                "title": _("API key for %(name)s") % {"name": client.name},
            },
        )
        response["Cache-Control"] = "no-store"
        return response

    @admin.action(description=_("Issue a new key (the old one stops working)"))
    def issue_new_key(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(
                request, _("Choose exactly one client to issue a key for."), messages.ERROR
            )
            return None
        with transaction.atomic():
            client = queryset.select_for_update().get()
            key = api_client_issue_key(client)
        return self._show_key(request, client, key)

    @admin.action(description=_("Revoke the keys of the selected clients"))
    def revoke_keys(self, request, queryset):
        clients = list(queryset.filter(revoked_at__isnull=True))
        for client in clients:
            api_client_revoke(client)
        self.message_user(
            request, _("Revoked %(count)d key(s).") % {"count": len(clients)}, messages.SUCCESS
        )


class ServiceAttributeForm(forms.ModelForm):
    values = forms.JSONField(
        required=False,
        initial=list,
        help_text=_('For the choice types: [{"key": "small", "name": "Smaller than a plate"}, …]'),
    )

    class Meta:
        model = ServiceAttribute
        fields = [
            "category",
            "order",
            "code",
            "description",
            "datatype",
            "datatype_description",
            "required",
            "variable",
            "values",
        ]

    def clean_values(self):
        values = self.cleaned_data.get("values") or []
        if not isinstance(values, list) or not all(
            isinstance(v, dict)
            and set(v) == {"key", "name"}
            and str(v["key"]).strip()
            and str(v["name"]).strip()
            for v in values
        ):
            raise forms.ValidationError(
                _('Give a list of choices, each {"key": …, "name": …}, none empty.')
            )
        keys = [str(v["key"]).strip() for v in values]
        if len(set(keys)) != len(keys):
            raise forms.ValidationError(_("Each choice needs its own key."))
        return [{"key": str(v["key"]).strip(), "name": str(v["name"]).strip()} for v in values]

    def clean(self):
        cleaned = super().clean()
        lists = {ServiceAttribute.Datatype.SINGLE, ServiceAttribute.Datatype.MULTI}
        datatype, values = cleaned.get("datatype"), cleaned.get("values") or []
        if datatype in lists and not values:
            self.add_error("values", _("A question with choices needs at least one choice."))
        if datatype and datatype not in lists and values:
            self.add_error("values", _("Only the choice types have choices."))
        if cleaned.get("required") and cleaned.get("variable") is False:
            self.add_error("required", _("Informational text cannot be required."))
        return cleaned


@admin.register(ServiceAttribute)
class ServiceAttributeAdmin(admin.ModelAdmin):
    form = ServiceAttributeForm
    list_display = ["category", "order", "code", "description", "datatype", "required"]
    list_display_links = ["code", "description"]
    list_filter = ["category", "datatype", "required"]
    search_fields = ["code", "description", "category__name"]
    list_select_related = ["category"]
    ordering = ["category__name", "order", "pk"]


class ServiceAttributeInline(admin.StackedInline):
    """For ServiceCategoryAdmin.inlines: the category's questions on its own page."""

    model = ServiceAttribute
    form = ServiceAttributeForm
    extra = 0
    ordering = ["order", "pk"]
