"""The staff admin's site: Django's own, with "view on site" scoped like the object."""

from django.contrib import admin
from django.contrib.admin.apps import SimpleAdminConfig
from django.core.exceptions import ValidationError
from django.http import Http404
from django.urls import path


class CivicDeskAdminSite(admin.AdminSite):
    def get_urls(self):
        checked = path(
            "r/<path:content_type_id>/<path:object_id>/",
            self.admin_view(self.view_on_site),
            name="view_on_site",
        )
        return [
            checked if getattr(url, "name", None) == "view_on_site" else url
            for url in super().get_urls()
        ]

    def view_on_site(self, request, content_type_id, object_id):
        """Django's shortcut redirects any staff member to any object's public page, which
        tells Parks staff the tracking number of a hidden Streets request. Here it answers
        only for objects the user can see in this admin, and 404 for the rest."""
        from django.contrib.contenttypes.models import ContentType
        from django.contrib.contenttypes.views import shortcut

        try:
            model = ContentType.objects.get_for_id(int(content_type_id)).model_class()
        except (ValueError, ContentType.DoesNotExist):
            raise Http404 from None
        model_admin = self._registry.get(model)
        if model_admin is None or not model_admin.has_view_permission(request):
            raise Http404
        try:
            visible = model_admin.get_queryset(request).filter(pk=object_id).exists()
        except (ValueError, TypeError, ValidationError):
            visible = False
        if not visible:
            raise Http404
        return shortcut(request, content_type_id, object_id)


class CivicDeskAdminConfig(SimpleAdminConfig):
    # SimpleAdminConfig: django-leaflet's admin module needs GDAL, which CivicDesk does not
    # use, so civicdesk/urls.py imports the admin modules instead of autodiscovery.
    default_site = "requests_app.admin_site.CivicDeskAdminSite"
