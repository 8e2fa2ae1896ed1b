from django.urls import path

from . import dashboard_views

app_name = "dashboard"
urlpatterns = [
    path("", dashboard_views.dashboard_page, name="home"),
    path("grid.json", dashboard_views.grid_json, name="grid"),
    path("cell.json", dashboard_views.cell_json, name="cell"),
    path("export.csv", dashboard_views.export_csv, name="export_csv"),
    path("export.geojson", dashboard_views.export_geojson, name="export_geojson"),
    path("exports/<int:pk>/", dashboard_views.export_job, name="export_job"),
    path("exports/<int:pk>/download/", dashboard_views.export_download, name="export_download"),
    path(
        "requests/<str:tracking_number>/record.zip",
        dashboard_views.audit_package,
        name="audit_package",
    ),
]

# The public page, mounted separately: path("transparency/", include(transparency_urls)).
transparency_urls = (
    [
        path("", dashboard_views.transparency, name="page"),
        path("data.csv", dashboard_views.transparency_csv, name="csv"),
    ],
    "transparency",
)
