"""The area the city serves: a bounding box, or a GeoJSON (Multi)Polygon when configured."""

import json
from functools import lru_cache

from django.conf import settings
from shapely.geometry import Point, box, mapping, shape
from shapely.prepared import prep


@lru_cache(maxsize=1)
def _area():
    if settings.SERVICE_AREA_GEOJSON:
        with open(settings.SERVICE_AREA_GEOJSON, encoding="utf-8") as f:
            data = json.load(f)
        if data.get("type") == "FeatureCollection":
            data = data["features"][0]["geometry"]
        elif data.get("type") == "Feature":
            data = data["geometry"]
        geometry = shape(data)
    else:
        geometry = box(*settings.SERVICE_AREA_BBOX)
    return geometry, prep(geometry)


def contains(lat: float, lng: float) -> bool:
    return _area()[1].covers(Point(lng, lat))


def bounds() -> tuple[float, float, float, float]:
    """(min_lng, min_lat, max_lng, max_lat), for fitting maps and generating demo data."""
    return _area()[0].bounds


@lru_cache(maxsize=1)
def polygon_geojson() -> dict | None:
    """The configured polygon as GeoJSON, for a map that checks places itself; None when
    the area is the bounding box, which bounds() already gives."""
    return mapping(_area()[0]) if settings.SERVICE_AREA_GEOJSON else None


def clear_cache():
    _area.cache_clear()
    polygon_geojson.cache_clear()
