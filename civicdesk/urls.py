# Admin modules, imported explicitly (see SimpleAdminConfig in settings).
import django.contrib.auth.admin  # noqa: F401, I001
import axes.admin  # noqa: F401  (attempts and lockouts; delete an attempt to unlock)
import django_otp.plugins.otp_totp.admin  # noqa: F401  (staff authenticator devices)
from django.contrib import admin
from django.urls import include, path
from django.utils.translation import gettext_lazy as _

import notifications.admin  # noqa: F401
import requests_app.admin  # noqa: F401
import requests_app.admin_open311  # noqa: F401
import routing.admin  # noqa: F401
import surveys.admin  # noqa: F401
from requests_app.dashboard_urls import transparency_urls
from requests_app.csp_report import csp_report
from requests_app.health import health
from requests_app.staff_auth import StaffLoginForm

admin.site.site_header = _("CivicDesk dispatch")
admin.site.site_title = _("CivicDesk")
admin.site.index_title = _("Requests, crews and settings")
# Password plus, for staff with an authenticator device, its code (templates/admin/login.html).
admin.site.login_form = StaffLoginForm

urlpatterns = [
    path("health/", health, name="health"),
    path("csp-report/", csp_report, name="csp_report"),
    path("i18n/", include("django.conf.urls.i18n")),
    path("admin/", admin.site.urls),
    path("crew/", include("requests_app.crew_urls")),
    path("dashboard/", include("requests_app.dashboard_urls")),
    path("transparency/", include(transparency_urls)),
    path("open311/", include("requests_app.open311_urls")),
    path("notifications/", include("notifications.urls")),
    path("my/", include("notifications.resident_urls")),
    path("surveys/", include("surveys.urls")),
    path("addresses/", include("routing.urls")),
    path("anymail/", include("anymail.urls")),
    path("", include("requests_app.urls")),
]
