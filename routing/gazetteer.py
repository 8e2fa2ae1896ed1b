"""The city's address gazetteer: how addresses are compared, stored and generated for the demo.

Every address and every query goes through `normalize()`, so "12 ELM ST.", "12 Elm St" and
"12 elm street" are the same text to the search. Loading is batch upserts keyed per source
(`addresses_save`); streets are derived from the addresses afterwards (`streets_rebuild`).
"""

import math
import random
import re
import unicodedata
from collections import Counter
from collections.abc import Iterator

from django.db import transaction
from django.db.models import Avg, Count

from requests_app import service_area

from .models import METRES_PER_DEGREE, Address, Street

# Both sides of every comparison are normalized, so what matters is that the forms people
# type end up the same, not that the long form is right: "St James" becomes "street james"
# in the gazetteer and in the query alike.
ABBREVIATIONS = {
    "st": "street",
    "str": "street",
    "ave": "avenue",
    "av": "avenue",
    "rd": "road",
    "dr": "drive",
    "ln": "lane",
    "blvd": "boulevard",
    "pl": "place",
    "ct": "court",
    "sq": "square",
    "ter": "terrace",
    "terr": "terrace",
    "pkwy": "parkway",
    "hwy": "highway",
    "cir": "circle",
    "wy": "way",
    "hts": "heights",
    "n": "north",
    "s": "south",
    "e": "east",
    "w": "west",
    "ne": "northeast",
    "nw": "northwest",
    "se": "southeast",
    "sw": "southwest",
}
# Words too common to search addresses by on their own ("st" is in most of them).
COMMON_WORDS = frozenset(ABBREVIATIONS) | frozenset(ABBREVIATIONS.values())
# What ends the street part of an address written in a sentence ("at 12 Elm St by...").
STREET_TYPES = frozenset(
    word
    for short, long in ABBREVIATIONS.items()
    if long not in ("north", "south", "east", "west") and not long.startswith(("north", "south"))
    for word in (short, long)
)

HOUSE_NUMBER = re.compile(r"^\s*\d+[A-Za-z]?(?:\s*[-–/]\s*\d+[A-Za-z]?)?\s*,?\s+")


def _tokens(text: str) -> list[str]:
    text = unicodedata.normalize("NFKD", text or "")
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    text = re.sub(r"['’]", "", text)  # O'Brien, not O Brien
    return re.sub(r"[\W_]+", " ", text).split()


def normalize(text: str) -> str:
    return " ".join(ABBREVIATIONS.get(t, t) for t in _tokens(text))


def query_forms(text: str) -> list[str]:
    """The normalized texts a partly typed query may be the beginning of, best first.

    Every word but the last is complete, so it takes its long form. The last may still be
    growing: "12 elm st" can become "12 elm street" or "12 elm stone road", while "12 elm rd"
    can only be "12 elm road" — so both the long form and the form as typed are tried.
    """
    tokens = _tokens(text)
    if not tokens:
        return []
    head = [ABBREVIATIONS.get(t, t) for t in tokens[:-1]]
    forms = []
    if tokens[-1] in ABBREVIATIONS:
        forms.append(" ".join([*head, ABBREVIATIONS[tokens[-1]]]))
    as_typed = " ".join([*head, tokens[-1]])
    if as_typed not in forms:
        forms.append(as_typed)
    return forms


def is_common(form: str) -> bool:
    """True when every word is a street type or direction, or the start of one ("stre")."""
    return all(
        word in COMMON_WORDS or any(common.startswith(word) for common in COMMON_WORDS)
        for word in form.split()
    )


def street_of(address: str) -> str:
    """The street part of "12-14 Elm Street": everything after the house number."""
    found = HOUSE_NUMBER.match(address)
    return address[found.end() :].strip() if found else ""


def tidy(text: str) -> str:
    """Collapse spaces; titlecase what a source wrote in capitals ("12 ELM ST", "1ST AVE")."""
    text = " ".join((text or "").split())
    if text.isupper():
        text = " ".join(
            w[:1] + w[1:].lower() if w[:1].isalpha() else w.lower() for w in text.split()
        )
    return text


def metres_between(lat1, lng1, lat2, lng2) -> float:
    """Equirectangular distance: exact enough within a city, and cheap."""
    x = math.radians(lng2 - lng1) * math.cos(math.radians((lat1 + lat2) / 2))
    y = math.radians(lat2 - lat1)
    return math.hypot(x, y) * 6_371_000


# --- Loading ---------------------------------------------------------------------------------

UPDATED_FIELDS = [
    "address",
    "street",
    "search_text",
    "street_search",
    "lat",
    "lng",
    "address_id",
    "zipcode",
]


def address_build(source: str, address: str, lat: float, lng: float, address_id="", zipcode=""):
    """An unsaved Address with its derived fields, or None when the text has no words."""
    address = tidy(address)[:255]
    search_text = normalize(address)[:255]
    if not search_text:
        return None
    address_id = (address_id or "").strip()[:100]
    street = street_of(address)[:200]
    return Address(
        address=address,
        street=street,
        search_text=search_text,
        street_search=normalize(street)[:200],
        lat=lat,
        lng=lng,
        address_id=address_id,
        zipcode=(zipcode or "").strip()[:10],
        source=source,
        import_key=f"id:{address_id}" if address_id else f"text:{search_text}",
    )


def addresses_save(addresses: list[Address], source: str) -> Counter:
    """Insert or update one batch of a source's addresses; counts created/updated/unchanged.

    A batch may name the same address twice (a file with repeated rows): the last wins, as
    one upsert statement cannot touch a row twice.
    """
    by_key = {a.import_key: a for a in addresses}
    existing = {
        row[0]: row[1:]
        for row in Address.objects.filter(source=source, import_key__in=list(by_key)).values_list(
            "import_key", *UPDATED_FIELDS
        )
    }
    counts = Counter()
    changed = []
    for key, address in by_key.items():
        if key not in existing:
            counts["created"] += 1
        elif existing[key] == tuple(getattr(address, f) for f in UPDATED_FIELDS):
            counts["unchanged"] += 1
            continue
        else:
            counts["updated"] += 1
        changed.append(address)
    if changed:
        Address.objects.bulk_create(
            changed,
            update_conflicts=True,
            unique_fields=["source", "import_key"],
            update_fields=[*UPDATED_FIELDS, "updated_at"],
        )
    return counts


def streets_rebuild() -> int:
    """Derive the street list from the addresses: one entry per street and ZIP code,
    centred on the street's address points. Run after every load."""
    groups = (
        Address.objects.exclude(street_search="")
        .values("street_search", "street", "zipcode")
        .annotate(count=Count("pk"), lat=Avg("lat"), lng=Avg("lng"))
        .order_by()
    )
    merged = {}
    for group in groups:
        # "Elm St" and "ELM STREET" from two sources are one street, named as most say.
        entry = merged.setdefault(
            (group["street_search"], group["zipcode"]),
            {"names": Counter(), "count": 0, "lat": 0.0, "lng": 0.0},
        )
        entry["names"][group["street"]] += group["count"]
        entry["count"] += group["count"]
        entry["lat"] += group["lat"] * group["count"]
        entry["lng"] += group["lng"] * group["count"]
    streets = [
        Street(
            name=entry["names"].most_common(1)[0][0],
            search_text=search_text,
            zipcode=zipcode,
            lat=entry["lat"] / entry["count"],
            lng=entry["lng"] / entry["count"],
            address_count=entry["count"],
        )
        for (search_text, zipcode), entry in merged.items()
    ]
    with transaction.atomic():
        Street.objects.all().delete()
        Street.objects.bulk_create(streets, batch_size=1000)
    return len(streets)


# --- The demo city ------------------------------------------------------------------------------

# East-west and north-south streets of the demo grid. The first ones are the streets
# seed_demo writes on its requests, so those addresses are found too.
DEMO_CROSS_STREETS = [
    "Maple Street",
    "Elm Street",
    "Cedar Lane",
    "River Street",
    "Summer Street",
    "Beacon Street",
    "Hill Road",
    "Pine Street",
    "School Street",
    "Lake Street",
    "Mill Road",
    "Church Street",
    "Chestnut Street",
    "Harbor Road",
    "Walnut Street",
    "Birch Street",
    "Willow Lane",
    "Spring Street",
    "Prospect Street",
    "Pleasant Street",
    "High Street",
    "Water Street",
    "Bridge Street",
    "Franklin Street",
    "Academy Street",
    "Winter Street",
]
DEMO_LONG_STREETS = [
    "Washington Street",
    "Main Street",
    "Oak Avenue",
    "Park Drive",
    "Central Avenue",
    "Adams Street",
    "Jefferson Avenue",
    "Madison Avenue",
    "Lincoln Street",
    "Grant Avenue",
    "Atlantic Avenue",
    "Columbus Avenue",
    "Hancock Street",
    "Revere Street",
    "Warren Street",
    "Lexington Avenue",
    "Concord Avenue",
    "Harvard Street",
]
# One ZIP code per cell of the 2 × 3 grid that seed_demo lays its districts on.
DEMO_ZIPCODES = ["02108", "02109", "02110", "02113", "02114", "02116"]
DEMO_SOURCE = "demo"


def generate_demo_addresses(bbox=None, *, spacing_m=50, seed=311) -> Iterator[Address]:
    """Address points on a grid of named streets over the demo city (the service area).

    Streets run east-west and north-south, each over a stretch of the city, with a lot every
    `spacing_m` metres: odd numbers on the north or west side, even on the other, 12 m off
    the centre line. ZIP codes follow seed_demo's 2 × 3 district grid, so an address's ZIP
    and district agree. Deterministic for a given box, spacing and seed.
    """
    min_lng, min_lat, max_lng, max_lat = bbox or service_area.bounds()
    rng = random.Random(seed)
    mid_lat = (min_lat + max_lat) / 2
    metre_lat = 1 / METRES_PER_DEGREE
    metre_lng = 1 / (METRES_PER_DEGREE * math.cos(math.radians(mid_lat)))
    margin_lat, margin_lng = (max_lat - min_lat) * 0.04, (max_lng - min_lng) * 0.04

    def zipcode(lat, lng):
        row = 0 if lat >= (min_lat + max_lat) / 2 else 1
        col = min(2, max(0, int(3 * (lng - min_lng) / (max_lng - min_lng))))
        return DEMO_ZIPCODES[row * 3 + col]

    def street(name, fixed, start, end, along_lng):
        """Lots along one street; `fixed` is its latitude (east-west) or longitude."""
        span = end - start
        first, last = start + span * rng.uniform(0, 0.3), start + span * rng.uniform(0.7, 1)
        step = spacing_m * (metre_lng if along_lng else metre_lat)
        side = 12 * (metre_lat if along_lng else metre_lng)
        for lot in range(int((last - first) / step) + 1):
            position = first + lot * step
            for number, offset in ((2 * lot + 1, side), (2 * lot + 2, -side)):
                if along_lng:  # odd numbers on the north side
                    lat, lng = fixed + offset, position
                else:  # odd numbers on the west side
                    lat, lng = position, fixed - offset
                if service_area.contains(lat, lng):
                    yield f"{number} {name}", round(lat, 6), round(lng, 6), zipcode(lat, lng)

    rows = len(DEMO_CROSS_STREETS)
    for index, name in enumerate(DEMO_CROSS_STREETS):
        lat = min_lat + margin_lat + (max_lat - min_lat - 2 * margin_lat) * (index + 0.5) / rows
        yield from _demo(street(name, lat, min_lng + margin_lng, max_lng - margin_lng, True))
    cols = len(DEMO_LONG_STREETS)
    for index, name in enumerate(DEMO_LONG_STREETS):
        lng = min_lng + margin_lng + (max_lng - min_lng - 2 * margin_lng) * (index + 0.5) / cols
        yield from _demo(street(name, lng, min_lat + margin_lat, max_lat - margin_lat, False))
    # City hall, on a square of its own downtown (seed_demo's district 2).
    centre_lat, centre_lng = mid_lat + (max_lat - min_lat) / 8, (min_lng + max_lng) / 2
    for number in range(1, 9):
        angle = 2 * math.pi * number / 8
        lat = centre_lat + 40 * metre_lat * math.sin(angle)
        lng = centre_lng + 40 * metre_lng * math.cos(angle)
        if service_area.contains(lat, lng):
            yield from _demo(
                [(f"{number} City Hall Square", round(lat, 6), round(lng, 6), zipcode(lat, lng))]
            )


def _demo(points):
    for address, lat, lng, zipcode in points:
        yield address_build(DEMO_SOURCE, address, lat, lng, zipcode=zipcode)


def demo_addresses_seed(bbox=None, *, batch=2000) -> Counter:
    """Load the demo city's addresses (again: a re-run changes nothing) and its streets."""
    counts = Counter()
    pending = []
    for address in generate_demo_addresses(bbox):
        pending.append(address)
        if len(pending) >= batch:
            counts += addresses_save(pending, DEMO_SOURCE)
            pending = []
    if pending:
        counts += addresses_save(pending, DEMO_SOURCE)
    counts["streets"] = streets_rebuild()
    return counts
