from django.urls import path, register_converter

from . import views, withdraw_views


class TrackingNumberConverter:
    regex = r"CD-[A-Z0-9]{4}-[A-Z0-9]{4}"

    def to_python(self, value):
        return value

    def to_url(self, value):
        return value


register_converter(TrackingNumberConverter, "tracking")

app_name = "requests_app"
urlpatterns = [
    path("", views.home, name="home"),
    path("report/", views.report, name="report"),
    path("report/nearby/", views.nearby, name="nearby"),
    path("report/done/<tracking:tracking_number>/", views.confirmation, name="confirmation"),
    path("track/", views.lookup, name="lookup"),
    path("requests/<tracking:tracking_number>/", views.status, name="status"),
    path("photos/<uuid:photo_id>/<str:size>/", views.photo, name="photo"),
    path("requests/withdraw/<str:token>/", withdraw_views.withdraw, name="withdraw"),
]
