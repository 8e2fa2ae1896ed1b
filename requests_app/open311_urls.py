"""Open311 GeoReport v2 under /open311/ (see requests_app/open311.py)."""

from django.urls import path, re_path, register_converter

from . import open311


class FormatConverter:
    regex = "json|xml"

    def to_python(self, value):
        return value

    def to_url(self, value):
        return value


register_converter(FormatConverter, "open311_format")

app_name = "open311"
urlpatterns = [
    path("discovery.<open311_format:format>", open311.discovery, name="discovery"),
    path("v2/openapi.json", open311.openapi, name="openapi"),
    path("v2/services.<open311_format:format>", open311.services, name="services"),
    path(
        "v2/services/<str:service_code>.<open311_format:format>",
        open311.service_definition,
        name="service_definition",
    ),
    path("v2/requests.<open311_format:format>", open311.requests_list, name="requests"),
    path(
        "v2/requests/<str:service_request_id>.<open311_format:format>",
        open311.request_detail,
        name="request",
    ),
    path("v2/tokens/<str:token>.<open311_format:format>", open311.token_detail, name="token"),
    path(
        "v2/servicerequestupdates.<open311_format:format>",
        open311.service_request_updates,
        name="updates",
    ),
    # Anything else under /open311/ answers with the spec's error list, not an HTML page.
    re_path(r"^(?P<path>[\s\S]*)$", open311.not_found),
]
