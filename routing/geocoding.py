"""Finding places: address search as residents type, the address nearest a pin, and turning
a typed address into a position at intake (the gazetteer, then an outside geocoder if set).

The search runs from the indexes the migration makes: on PostgreSQL a byte-ordered B-tree
on the normalized text (prefixes) and a trigram GIN index on the street names (words inside
them, typos); on SQLite a plain index, with containment instead of similarity.
"""

import json
import logging
import re
import time
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass

from django.conf import settings
from django.db import connection
from django.db.models import F
from django.db.models.functions import Length

from requests_app import service_area

from .gazetteer import COMMON_WORDS, STREET_TYPES, is_common, metres_between, normalize, query_forms
from .models import Address, Street

logger = logging.getLogger(__name__)

SEARCH_LIMIT = 8
STREETS_SHOWN = 4
REVERSE_RADIUS_M = 75
# Word similarity of the street part a fuzzy suggestion needs ("washingtn" and
# "washington street": 0.8; "sprnig place" and "spring place": 0.53)...
FUZZY_SUGGEST = 0.5
# ...and what intake needs to take a typed address's position on its own, clear of the
# runner-up ("elm stret": "elm street" 0.8, "elm court" 0.4).
FUZZY_CONFIDENT = 0.7
FUZZY_MARGIN = 0.15
# What the name without its street type needs ("mapel" and "maple street": 0.33).
NAME_SIMILARITY = 0.25
# Points of one address this far apart are one place (the rows of several sources).
SAME_PLACE_M = 100

NUMBERED = re.compile(r"^\d")
ZIPCODE = re.compile(r"\b(\d{5})(?:-\d{4})?\b")


@dataclass(frozen=True)
class Place:
    """A suggestion, a reverse-geocoded address or an intake match."""

    kind: str  # "address", "street" or "geocoder" (an outside geocoder's answer)
    pk: int
    label: str
    lat: float
    lng: float
    zipcode: str = ""
    address_id: str = ""
    distance_m: float | None = None

    @property
    def id(self):
        return f"{self.kind[0]}{self.pk}"

    def as_json(self):
        data = {
            "id": self.id,
            "kind": self.kind,
            "label": self.label,
            "lat": self.lat,
            "lng": self.lng,
            "zipcode": self.zipcode,
        }
        if self.address_id:
            data["address_id"] = self.address_id
        if self.distance_m is not None:
            data["distance_m"] = round(self.distance_m)
        return data


ADDRESS_VALUES = ["pk", "address", "lat", "lng", "zipcode", "address_id"]
STREET_VALUES = ["pk", "name", "lat", "lng", "zipcode"]


def _address(row, distance_m=None):
    pk, label, lat, lng, zipcode, address_id = row[:6]
    return Place("address", pk, label, lat, lng, zipcode, address_id, distance_m)


def _street(row):
    pk, label, lat, lng, zipcode = row[:5]
    return Place("street", pk, label, lat, lng, zipcode)


def place_get(place_id: str) -> Place | None:
    """A suggestion again from its id ("a123", "s45"), e.g. picked in the no-JS list."""
    kind, pk = (place_id or "")[:1], (place_id or "")[1:]
    if not pk.isdigit() or len(pk) > 18:  # beyond a 64-bit key
        return None
    if kind == "a":
        row = Address.objects.filter(pk=pk).values_list(*ADDRESS_VALUES).first()
        return _address(row) if row else None
    if kind == "s":
        row = Street.objects.filter(pk=pk).values_list(*STREET_VALUES).first()
        return _street(row) if row else None
    return None


def _postgres():
    return connection.vendor == "postgresql"


# --- Search as you type ----------------------------------------------------------------------


def address_search(query: str, *, limit: int = SEARCH_LIMIT) -> list[Place]:
    """Suggestions for what a resident has typed so far, best first.

    Without a house number: streets whose name begins with it, then streets with a word
    that begins with it ("elm" in "Old Elm Court"), then the houses of those streets. With
    one: the addresses that begin with it. When none of these match, on PostgreSQL, near
    misses by trigram similarity ("washingtn", "12 elm stret"), always with the very house
    number typed; on SQLite, streets with the text anywhere in their name.

    Every step is an index lookup on one of the two tables, so a city of a million
    addresses answers as fast as a small one: word and typo searches run on the streets,
    a few thousand rows, and reach the addresses by exact keys.
    """
    text, zipcode = _split(query)
    if zipcode:
        # Within the ZIP code as typed; a wrong one should not hide the address, though.
        found = _search(text, zipcode, limit, near_misses=False)
        if found:
            return found
    return _search(text, "", limit)


def _search(text, zipcode, limit, *, near_misses=True):
    forms = query_forms(text)
    if not forms or len(forms[-1]) < 2:
        return []
    number, _space, rest = forms[0].partition(" ") if NUMBERED.match(forms[0]) else ("", "", "")
    found = _Found(limit)

    def in_zipcode(queryset):
        return queryset.filter(zipcode=zipcode) if zipcode else queryset

    if not number:
        streets = []  # rows: the search text, then STREET_VALUES; best first
        for form in forms:
            beginning = Street.objects.with_prefix(form).order_by("key", "zipcode")
            streets += in_zipcode(beginning).values_list("search_text", *STREET_VALUES)[:limit]
        if not is_common(forms[-1]):  # "st" is a word of half the streets
            for form in forms:
                inside = Street.objects.filter(search_text__contains=f" {form}")
                inside = inside.order_by(Length("search_text"), "search_text")
                streets += in_zipcode(inside).values_list("search_text", *STREET_VALUES)[:limit]
        found.add((_street(row[1:]) for row in streets), cap=STREETS_SHOWN)
    for form in forms:
        if not found.full:
            beginning = in_zipcode(Address.objects.with_prefix(form).order_by("key"))
            # A few spare rows: the same address from two sources is shown once.
            found.add(map(_address, beginning.values_list(*ADDRESS_VALUES)[: limit + 4]))
    if not number:
        for street in dict.fromkeys(row[0] for row in streets):
            if found.full:
                break
            houses = in_zipcode(Address.objects.filter(street_search=street))
            houses = houses.order_by(Length("search_text"), "search_text")
            found.add(map(_address, houses.values_list(*ADDRESS_VALUES)[: limit + 4]))
    # Near misses only when nothing matches as typed: a resident whose text is the start of
    # an address is not misspelling it, and "54 Bay Rd" should not offer "54 Ash Road".
    typo = rest if number else forms[0]
    if near_misses and not found.places and len(typo) >= 3 and not is_common(typo):
        if _postgres():
            found.add(place for place, _ in _fuzzy(number, typo, zipcode, FUZZY_SUGGEST))
        elif not number:
            # SQLite has no similarity; a word anywhere is the next best thing.
            anywhere = Street.objects.filter(search_text__contains=forms[-1])
            found.add(map(_street, in_zipcode(anywhere).values_list(*STREET_VALUES)[:limit]))
    return found.places


class _Found:
    """Suggestions gathered tier by tier: no place twice, at most `limit`."""

    def __init__(self, limit):
        self.limit = limit
        self.places = []
        self.seen = set()
        self.kinds = Counter()

    @property
    def full(self):
        return len(self.places) >= self.limit

    def add(self, places, cap=None):
        """Add in order; `cap` limits how many of this kind the whole list may hold."""
        for place in places:
            if self.full or (cap is not None and self.kinds[place.kind] >= cap):
                return
            # The same address from two sources, or twice in one, is shown once.
            key = (place.kind, place.label.lower(), place.zipcode)
            if key in self.seen:
                continue
            self.seen.add(key)
            self.places.append(place)
            self.kinds[place.kind] += 1


def _fuzzy(number, street, zipcode, threshold):
    """Near misses as (place, similarity), most similar first (PostgreSQL's pg_trgm).

    The streets' trigram index finds the candidates (similarity above pg_trgm's threshold,
    0.3 by default); word similarity ranks them, which does not count the letters a
    resident has yet to type against them. With a house number, the addresses are then
    that number on those streets, found by key.
    """
    from django.contrib.postgres.lookups import TrigramSimilar
    from django.contrib.postgres.search import TrigramWordSimilarity

    candidates = (
        Street.objects.filter(TrigramSimilar(F("search_text"), street))
        .annotate(similarity=TrigramWordSimilarity(street, "search_text"))
        .filter(similarity__gte=threshold)
        .order_by("-similarity", Length("search_text"))
    )
    # The name itself must be alike too, not only "road" in "bay road" and "ash road".
    name = " ".join(word for word in street.split() if word not in COMMON_WORDS)
    if name and name != street:
        candidates = candidates.annotate(
            name_similarity=TrigramWordSimilarity(name, "search_text")
        ).filter(name_similarity__gte=NAME_SIMILARITY)
    if not number:
        streets = candidates.filter(zipcode=zipcode) if zipcode else candidates
        rows = streets.values_list(*STREET_VALUES, "similarity")[:SEARCH_LIMIT]
        return [(_street(row), row[-1]) for row in rows]
    # Several ZIP codes share a street name: a few more names than suggestions shown.
    names = candidates.values_list("search_text", "similarity")[: SEARCH_LIMIT * 3]
    similarity = {}
    for name, score in names:
        similarity.setdefault(name, score)
    houses = Address.objects.keyed().filter(key__in=[f"{number} {n}" for n in similarity])
    if zipcode:
        houses = houses.filter(zipcode=zipcode)
    rows = houses.values_list(*ADDRESS_VALUES, "street_search")[: SEARCH_LIMIT * 3]
    scored = [(_address(row), similarity[row[-1]]) for row in rows]
    return sorted(scored, key=lambda pair: -pair[1])[:SEARCH_LIMIT]


def _split(query):
    """'12 Elm St, Demo City, MA 02110' → ('12 Elm St', '02110'): the address before the
    first comma, and a ZIP code if one was written after it."""
    text, _comma, rest = (query or "").strip()[:200].partition(",")
    zipcode = ZIPCODE.search(rest)
    return text, zipcode.group(1) if zipcode else ""


# --- The address at a pin ----------------------------------------------------------------------


def address_nearest(lat: float, lng: float, *, within_m: float = REVERSE_RADIUS_M) -> Place | None:
    """The address point nearest to (lat, lng), if one is within `within_m` metres.

    The box comes from the (lat, lng) index; only the few points in it are measured.
    """
    rows = Address.objects.within(lat, lng, within_m).values_list(*ADDRESS_VALUES)
    best, best_m = None, within_m
    for row in rows:
        metres = metres_between(lat, lng, row[2], row[3])
        if metres <= best_m:
            best, best_m = row, metres
    return _address(best, distance_m=best_m) if best else None


# --- A typed address at intake ------------------------------------------------------------------


def address_geocode(text: str, *, address_id: str = "") -> Place | None:
    """The gazetteer's position for an address typed without a pin, when it is sure.

    Sure means: the source's address id is known; or the normalized text (before any comma)
    is one place in the gazetteer — several rows are fine if they lie together, and a ZIP
    code written after the comma picks among them; or exactly one address begins with it;
    or, on PostgreSQL, one address with the same house number is clearly the most similar.
    """
    if address_id:
        rows = list(Address.objects.filter(address_id=address_id).values_list(*ADDRESS_VALUES))
        if rows and _together(rows):
            return _address(rows[0])
    main, zipcode = _split(text)
    wanted = normalize(main)
    if len(wanted) < 3:
        return None
    candidates = Address.objects.keyed().filter(key=wanted)
    if zipcode and candidates.filter(zipcode=zipcode).exists():
        candidates = candidates.filter(zipcode=zipcode)
    rows = list(candidates.values_list(*ADDRESS_VALUES)[:20])
    if rows:
        return _address(rows[0]) if _together(rows) else None
    rows = list(Address.objects.with_prefix(wanted).values_list(*ADDRESS_VALUES)[:20])
    if rows:
        return _address(rows[0]) if _together(rows) else None
    number, _space, street = wanted.partition(" ")
    if _postgres() and number.isdigit() and len(street) >= 3:
        scored = _fuzzy(number, street, zipcode, FUZZY_CONFIDENT)
        if len(scored) == 1 or (scored and scored[0][1] - scored[1][1] >= FUZZY_MARGIN):
            return scored[0][0]
    return None


def _together(rows):
    first = rows[0]
    return all(metres_between(first[2], first[3], r[2], r[3]) <= SAME_PLACE_M for r in rows)


ADDRESS_IN_TEXT = re.compile(
    r"\b\d{1,5}[A-Za-z]?\s+(?:[A-Za-z][\w'’.-]*\s+){0,4}?(?:%s)\b"
    % "|".join(sorted(STREET_TYPES, key=len, reverse=True)),
    re.IGNORECASE,
)


def address_in_text(text: str) -> tuple[str, Place] | None:
    """An address written in free text (an email), when the gazetteer has it exactly:
    a house number, up to four words and a street type ("at 12 Elm St. by the school")."""
    for found in ADDRESS_IN_TEXT.finditer(text or ""):
        rows = list(
            Address.objects.keyed()
            .filter(key=normalize(found.group(0)))
            .values_list(*ADDRESS_VALUES)[:20]
        )
        if rows and _together(rows):
            return found.group(0), _address(rows[0])
    return None


# --- An outside geocoder ------------------------------------------------------------------------

GEOCODER_TIMEOUT_SECONDS = 2
# After a failure the geocoder is left alone for a while, so that a sweep over many
# requests does not wait out the timeout on each of them.
GEOCODER_PAUSE_SECONDS = 60
_geocoder = {"paused_until": 0.0}


class GeocoderUnavailable(Exception):
    pass


def geocoder_lookup(text: str) -> Place | None:
    """Ask the configured Nominatim-compatible search (settings.GEOCODER_URL) for an address
    inside the service area. None when not configured, nothing was found or it is down;
    never raises. Runs in the worker (intake processing), never in a resident's request."""
    url = settings.GEOCODER_URL
    if not url or not (text or "").strip():
        return None
    if time.monotonic() < _geocoder["paused_until"]:
        return None
    try:
        results = _geocoder_get(url, text)
    except GeocoderUnavailable as error:
        _geocoder["paused_until"] = time.monotonic() + GEOCODER_PAUSE_SECONDS
        logger.warning("Geocoder unavailable, paused for %ss: %s", GEOCODER_PAUSE_SECONDS, error)
        return None
    for result in results if isinstance(results, list) else []:
        try:
            lat, lng = float(result["lat"]), float(result["lon"])
        except (KeyError, TypeError, ValueError):
            continue
        if service_area.contains(lat, lng):
            label = str(result.get("display_name") or text)[:255]
            return Place("geocoder", 0, label, lat, lng)
    return None


def geocoder_reset():
    _geocoder["paused_until"] = 0.0


def _geocoder_get(url, text):
    min_lng, min_lat, max_lng, max_lat = service_area.bounds()
    params = urllib.parse.urlencode(
        {
            "q": text.strip()[:255],
            "format": "jsonv2",
            "limit": 3,
            # Nominatim's viewbox is left,top,right,bottom; bounded keeps results inside.
            "viewbox": f"{min_lng},{max_lat},{max_lng},{min_lat}",
            "bounded": 1,
        }
    )
    request = urllib.request.Request(
        f"{url}{'&' if '?' in url else '?'}{params}",
        headers={
            "Accept": "application/json",
            # Nominatim's usage policy asks every application to name itself.
            "User-Agent": f"CivicDesk 311 ({settings.SITE_URL})",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=GEOCODER_TIMEOUT_SECONDS) as response:
            return json.loads(response.read(1_000_000))
    except (OSError, ValueError) as error:  # URLError, timeouts and bad JSON alike
        raise GeocoderUnavailable(error) from error
