import json

from django import forms
from django.conf import settings
from django.forms.utils import flatatt
from django.utils.html import format_html

from requests_app import service_area

ADMIN_MAP_MEDIA = forms.Media(
    css={"all": ["leaflet/leaflet.css", "leaflet/draw/leaflet.draw.css"]},
    js=["leaflet/leaflet.js", "leaflet/draw/leaflet.draw.js", "routing/admin-maps.js"],
)


def map_attributes():
    min_lng, min_lat, max_lng, max_lat = service_area.bounds()
    return {
        "data-tiles": settings.LEAFLET_CONFIG["TILES"][0][1],
        "data-bounds": json.dumps([[min_lat, min_lng], [max_lat, max_lng]]),
    }


def map_div(css_class, **data):
    attributes = {**map_attributes(), **{f"data-{k.replace('_', '-')}": v for k, v in data.items()}}
    return format_html(
        # A fixed width: the admin's read-only cells shrink to their content.
        '<div class="{}" style="height:360px;width:min(720px, 70vw);margin:8px 0;'
        'background:#e5e7eb"{}></div>',
        css_class,
        flatatt(attributes),
    )


class GeoJSONMapWidget(forms.Textarea):
    """A textarea holding GeoJSON, with a Leaflet map to draw it on."""

    media = ADMIN_MAP_MEDIA

    def __init__(self, attrs=None):
        super().__init__(
            attrs={"rows": 4, "style": "width:100%;font-family:monospace", **(attrs or {})}
        )

    def format_value(self, value):
        if isinstance(value, dict | list):
            return json.dumps(value)
        return super().format_value(value)

    def render(self, name, value, attrs=None, renderer=None):
        textarea = super().render(name, value, attrs, renderer)
        textarea_id = (attrs or {}).get("id", f"id_{name}")
        return format_html("{}{}", map_div("district-map", textarea=textarea_id), textarea)
