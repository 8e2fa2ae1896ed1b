"""The address search's JSON endpoints, for the portal's scripts (public facts only)."""

from django.http import JsonResponse
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_GET

from .forms import AddressSearchForm, ReverseGeocodeForm
from .geocoding import address_nearest, address_search

# The gazetteer changes when a city imports a new file, not between two keystrokes.
CACHE_SECONDS = 300


@require_GET
@cache_control(public=True, max_age=CACHE_SECONDS)
def search(request):
    """Suggestions for what has been typed: ?q=12 elm."""
    form = AddressSearchForm(request.GET)
    if not form.is_valid():
        return JsonResponse({"results": [], "errors": form.errors.get_json_data()}, status=400)
    return JsonResponse({"results": [p.as_json() for p in address_search(form.cleaned_data["q"])]})


@require_GET
@cache_control(public=True, max_age=CACHE_SECONDS)
def reverse(request):
    """The address nearest a pin, if one is close enough: ?lat=…&lng=…"""
    form = ReverseGeocodeForm(request.GET)
    if not form.is_valid():
        return JsonResponse({"result": None, "errors": form.errors.get_json_data()}, status=400)
    found = address_nearest(form.cleaned_data["lat"], form.cleaned_data["lng"])
    return JsonResponse({"result": found.as_json() if found else None})
