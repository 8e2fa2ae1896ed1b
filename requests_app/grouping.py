"""Likely duplicates: finding open requests nearby, grouping them, and following one.

A group is a primary request and the requests whose `duplicate_of` points at it; the
pointer always names the primary itself, never another duplicate. Members share the
primary's work order, so completing that order completes the whole group.

Nearby search never scans the table: a bounding box on lat/lng around the point (an
index on category, lat and lng) narrows it to a handful of rows, and the exact
great-circle distance is computed here, so SQLite and PostgreSQL behave the same.
"""

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from django.core.exceptions import ValidationError
from django.db import IntegrityError, router, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from .compiled import CompiledQuery, insert_new
from .models import Follower, HistoryEntry, ServiceCategory, ServiceRequest

EARTH_RADIUS_M = 6_371_008.8  # mean radius (IUGG)
METRES_PER_DEGREE_LAT = math.pi * EARTH_RADIUS_M / 180
NEARBY_LIMIT = 5
DUPLICATE_CANDIDATES = 50

# Weights of the grouping score, which orders candidates and is recorded as a reason.
# Distance and time decide; category and wording only break ties between candidates
# that are all within the category's radius and window.
WEIGHT_DISTANCE = 0.5
WEIGHT_TIME = 0.25
WEIGHT_SAME_CATEGORY = 0.15
WEIGHT_TEXT = 0.10


# --- Geometry ------------------------------------------------------------------------------


def haversine_m(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi = phi2 - phi1
    dlambda = math.radians(lng2 - lng1)
    a = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlambda / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def bounding_box(lat: float, lng: float, radius_m: float):
    """(min_lat, max_lat, min_lng, max_lng) containing every point within radius_m."""
    dlat = radius_m / METRES_PER_DEGREE_LAT
    # Longitude degrees shrink towards the poles; take the widest edge of the box.
    widest = max(math.cos(math.radians(min(89.9, abs(lat) + dlat))), 1e-6)
    dlng = min(180.0, radius_m / (METRES_PER_DEGREE_LAT * widest))
    return lat - dlat, lat + dlat, lng - dlng, lng + dlng


# --- Finding candidates ------------------------------------------------------------------


@dataclass(frozen=True)
class Nearby:
    request: ServiceRequest
    distance_m: float


CANDIDATE_FIELDS = (
    "tracking_number",
    "category",
    "description",
    # What public_description reads: the report form's nearby list shows it.
    "public_description_override",
    "description_approved",
    "lat",
    "lng",
    "address",
    "status",
    "is_public",
    "work_order",
    "duplicate_of",
    "created_at",
    "category__name",
    "category__name_es",
    "category__group",
    "category__group_es",
)


def nearby_open_requests(
    category: ServiceCategory,
    lat: float,
    lng: float,
    *,
    radius_m: float | None = None,
    since=None,
    until=None,
    exclude_pk: int | None = None,
    public_only: bool = False,
    limit: int | None = NEARBY_LIMIT,
    one_per_group: bool = False,
) -> list[Nearby]:
    """Open requests of the category or its group within radius_m, nearest first (the
    earlier first at the same distance); with one_per_group, only the nearest request of
    each duplicate group."""
    radius_m = category.duplicate_radius_m if radius_m is None else radius_m
    min_lat, max_lat, min_lng, max_lng = bounding_box(lat, lng, radius_m)
    using = router.db_for_read(ServiceRequest)
    lookup = _nearby_lookup(
        since=since is not None,
        until=until is not None,
        exclude_pk=exclude_pk is not None,
        public_only=public_only,
    )
    optional = {"since": since, "until": until, "exclude_pk": exclude_pk}
    rows = lookup.rows(
        using,
        group=category.group,
        min_lat=min_lat,
        max_lat=max_lat,
        min_lng=min_lng,
        max_lng=max_lng,
        **{name: value for name, value in optional.items() if value is not None},
    )
    within = []
    for row in rows:
        distance = haversine_m(lat, lng, row[_LAT], row[_LNG])
        # The box's corners are not within the circle.
        if distance <= radius_m:
            within.append((distance, row))
    within.sort(key=lambda pair: (pair[0], pair[1][_CREATED_AT]))
    if one_per_group:
        nearest_of_group = {}
        for distance, row in within:
            nearest_of_group.setdefault(row[_DUPLICATE_OF] or row[_PK], (distance, row))
        within = list(nearest_of_group.values())  # in the order they were first seen
    # Instances only for the rows returned: where a problem drew hundreds of reports,
    # building them all would cost each new report there a tenth of a second.
    return [
        Nearby(_candidate(using, row), distance)
        for distance, row in (within[:limit] if limit else within)
    ]


# Only what the callers read: the table is wide. Requests' columns in the model's order, as
# Model.from_db takes them, then their categories'.
_REQUEST_COLUMNS = tuple(
    f.attname
    for f in ServiceRequest._meta.concrete_fields
    if f.primary_key or f.name in CANDIDATE_FIELDS
)
_CATEGORY_COLUMNS = tuple(
    f.attname
    for f in ServiceCategory._meta.concrete_fields
    if f.primary_key or f"category__{f.name}" in CANDIDATE_FIELDS
)
_LAT, _LNG, _CREATED_AT, _DUPLICATE_OF, _PK = (
    _REQUEST_COLUMNS.index(name) for name in ("lat", "lng", "created_at", "duplicate_of_id", "id")
)


def _candidate(using, row) -> ServiceRequest:
    """The request of a nearby lookup's row, as select_related("category").only(...)
    would build it."""
    n = len(_REQUEST_COLUMNS)
    request = ServiceRequest.from_db(using, _REQUEST_COLUMNS, row[:n])
    category = ServiceCategory.from_db(using, _CATEGORY_COLUMNS, (request.category_id, *row[n:]))
    ServiceRequest._meta.get_field("category").set_cached_value(request, category)
    return request


@lru_cache(maxsize=16)
def _nearby_lookup(*, since, until, exclude_pk, public_only) -> CompiledQuery:
    """The nearby lookup's query for one set of optional filters.

    The lookup runs for every new report and for every pin placed on the report form,
    and building and compiling its queryset takes the ORM longer (0.4-0.8 ms) than
    PostgreSQL takes to plan and run it (about 0.3 ms): it is compiled once (see
    compiled.py).
    """

    def candidates(
        group, min_lat, max_lat, min_lng, max_lng, since=None, until=None, exclude_pk=None
    ):
        found = ServiceRequest.objects.open().filter(
            # A subquery, not a list: one round trip, and the planner still probes the
            # (category, lat, lng) index once per category of the group. A list kept in
            # memory would plan faster (about 0.2 ms) but go stale in the other processes
            # when staff move or rename a category.
            category_id__in=ServiceCategory.objects.filter(group=group).values("pk"),
            lat__gte=min_lat,
            lat__lte=max_lat,
            lng__gte=min_lng,
            lng__lte=max_lng,
        )
        if since is not None:
            found = found.filter(created_at__gte=since)
        if until is not None:
            found = found.filter(created_at__lte=until)
        if exclude_pk is not None:
            found = found.exclude(pk=exclude_pk)
        if public_only:
            found = found.public()
        # No ORDER BY (the model's default): the exact distance orders them.
        return found.values_list(
            *_REQUEST_COLUMNS, *(f"category__{c}" for c in _CATEGORY_COLUMNS[1:])
        ).order_by()

    lat = ServiceRequest._meta.get_field("lat")
    lng = ServiceRequest._meta.get_field("lng")
    created_at = ServiceRequest._meta.get_field("created_at")
    stand_ins = {
        "group": ("\x1fnearby group", ServiceCategory._meta.get_field("group")),
        "min_lat": (1001.5, lat),
        "max_lat": (1002.5, lat),
        "min_lng": (1003.5, lng),
        "max_lng": (1004.5, lng),
    }
    if since:
        stand_ins["since"] = (datetime(2, 1, 1, tzinfo=UTC), created_at)
    if until:
        stand_ins["until"] = (datetime(3, 1, 1, tzinfo=UTC), created_at)
    if exclude_pk:
        stand_ins["exclude_pk"] = (-31_101, ServiceRequest._meta.pk)
    return CompiledQuery(candidates, **stand_ins)


def nearby_for_portal(category: ServiceCategory, lat: float, lng: float) -> list[Nearby]:
    """What the report form offers to follow: open, public groups near the pin.

    A grouped duplicate stands for its group, so it is shown as the group's primary
    (when the public may see that), at the distance of the nearest member.
    """
    since = timezone.now() - timedelta(hours=category.duplicate_window_hours)
    nearby = nearby_open_requests(
        category, lat, lng, since=since, public_only=True, one_per_group=True
    )
    primary_ids = {n.request.duplicate_of_id for n in nearby if n.request.duplicate_of_id}
    primaries = {}
    if primary_ids:
        primaries = {
            p.pk: p
            for p in ServiceRequest.objects.open()
            .public()
            .filter(pk__in=primary_ids)
            .select_related("category")
        }
    shown, seen = [], set()
    for near in nearby:
        request = primaries.get(near.request.duplicate_of_id, near.request)
        if request.pk not in seen:
            seen.add(request.pk)
            shown.append(Nearby(request, near.distance_m))
    return shown[:NEARBY_LIMIT]


# --- Scoring -------------------------------------------------------------------------------

_WORD = re.compile(r"\w{3,}")
_STOPWORDS = {"the", "and", "for", "with", "there", "this", "that", "from", "near", "has", "have"}


def _words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS}


def text_similarity(a: str, b: str) -> float:
    """Jaccard similarity of the descriptions' words: weak, but cheap and language-blind."""
    wa, wb = _words(a), _words(b)
    if not wa or not wb:
        return 0.0
    return len(wa & wb) / len(wa | wb)


@dataclass(frozen=True)
class Match:
    candidate: ServiceRequest
    distance_m: float
    apart: timedelta
    same_category: bool
    text: float
    score: float

    def reasons(self) -> str:
        # The city's own names (as its group is): a staff note, whatever the reporter's language.
        category = (
            _("same category (%(c)s)") % {"c": self.candidate.category.name}
            if self.same_category
            else _("same group (%(g)s: %(c)s)")
            % {"g": self.candidate.category.group, "c": self.candidate.category.name}
        )
        return _(
            "%(distance)d m from %(other)s, reported %(apart)s later, %(category)s, "
            "wording similarity %(text).2f, score %(score).2f"
        ) % {
            "distance": round(self.distance_m),
            "other": self.candidate.tracking_number,
            "apart": _duration(self.apart),
            "category": category,
            "text": self.text,
            "score": self.score,
        }


def _duration(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min"


def best_match(request: ServiceRequest) -> Match | None:
    """The existing open request `request` most likely repeats, or None."""
    if not request.has_location:
        return None
    category = request.category
    window = timedelta(hours=category.duplicate_window_hours)
    radius = category.duplicate_radius_m
    nearby = nearby_open_requests(
        category,
        request.lat,
        request.lng,
        since=request.created_at - window,
        # Only older requests: the group's primary is the first report of the problem.
        until=request.created_at,
        exclude_pk=request.pk,
        # The nearest few are where the best match is: distance weighs most, and further
        # reports of one problem are mostly members of the same group.
        limit=DUPLICATE_CANDIDATES,
    )
    best = None
    for near in nearby:
        candidate = near.request
        apart = request.created_at - candidate.created_at
        same_category = candidate.category_id == request.category_id
        text = text_similarity(request.description, candidate.description)
        score = (
            WEIGHT_DISTANCE * (1 - near.distance_m / radius if radius else 1)
            + WEIGHT_TIME * (1 - apart / window if window else 1)
            + WEIGHT_SAME_CATEGORY * same_category
            + WEIGHT_TEXT * text
        )
        match = Match(candidate, near.distance_m, apart, same_category, text, round(score, 2))
        if best is None or (match.score, -match.distance_m) > (best.score, -best.distance_m):
            best = match
    return best


# --- Followers -----------------------------------------------------------------------------


def reporter_follow(request) -> Follower | None:
    """The reporter of a request being created follows it. Nobody can follow a request
    that is not stored yet, so there is no earlier subscription to look for; its
    subscription is part of the request's CREATED entry."""
    email = request.reporter_email.strip().lower()
    if not email:
        return None
    return insert_new(
        Follower(
            request=request,
            email=email,
            language=request.language or "en",
            source=Follower.Source.REPORTER,
        )
    )


def follower_add(request, email, language="en", source=Follower.Source.REPORTER, *, by=None):
    """Subscribe `email` to `request`; returns (follower, created). Safe to repeat.

    Writes one FOLLOW history entry when the follower is new, except for the reporter of
    the request, whose subscription is part of its CREATED entry. A resident who chooses
    to follow again after unsubscribing is subscribed again; an automatic subscription
    (reporter, duplicate) never overrides an unsubscribe.
    """
    email = (email or "").strip().lower()
    if not email:
        return None, False
    try:
        with transaction.atomic():
            follower = Follower.objects.create(
                request=request, email=email, language=language or "en", source=source
            )
    except IntegrityError:
        follower = Follower.objects.get(request=request, email=email)
        if follower.unsubscribed_at and source == Follower.Source.FOLLOW:
            Follower.objects.filter(pk=follower.pk).update(unsubscribed_at=None)
            follower.unsubscribed_at = None
            request.record(
                HistoryEntry.Action.FOLLOW,
                by=by,
                actor="" if by else "Resident",
                new=Follower.Source(source).label,
                note=_("Subscribed again"),
            )
        return follower, False
    if source != Follower.Source.REPORTER:
        request.record(
            HistoryEntry.Action.FOLLOW,
            by=by,
            actor="" if by or source != Follower.Source.FOLLOW else "Resident",
            new=Follower.Source(source).label,
        )
    return follower, True


def request_follow(request, email, language="en"):
    """A resident's "this is my problem — follow it": no new request, one follower.

    Following a grouped duplicate follows its group's primary, whose status is the one
    that moves.
    """
    target = request.duplicate_of if request.duplicate_of_id else request
    return target, follower_add(target, email, language, Follower.Source.FOLLOW)[0]


# --- Groups --------------------------------------------------------------------------------


def group_members(primary):
    """The open duplicates grouped under `primary` (not the primary itself)."""
    return ServiceRequest.objects.open().filter(duplicate_of=primary)


def _lock(pk):
    return ServiceRequest.objects.select_for_update().select_related("category").get(pk=pk)


def _share_work_order(member, primary, *, by=None):
    """Put `member` on the primary's work order, if it has an active one."""
    order = primary.work_order
    if order is None or member.work_order_id == order.pk or not member.is_open:
        return
    if not order.is_active:
        return
    try:
        order.attach(member, by=by)
    except ValidationError as refused:
        member.record(HistoryEntry.Action.DUPLICATE, by=by, note=" ".join(refused.messages))


def _join(member, primary, *, by=None, note="", confirmed=False):
    """Make `member` (locked) a duplicate of `primary` (locked, a primary)."""
    with transaction.atomic():
        member._set("duplicate_of", primary, by=by, note=note, action=HistoryEntry.Action.DUPLICATE)
        if member.duplicate_confirmed != confirmed:
            member._set(
                "duplicate_confirmed", confirmed, by=by, action=HistoryEntry.Action.DUPLICATE
            )
        primary.record(
            HistoryEntry.Action.DUPLICATE,
            by=by,
            field="duplicates",
            new=member.tracking_number,
            note=note,
        )
        _share_work_order(member, primary, by=by)
        follower_add(
            primary, member.reporter_email, member.language, Follower.Source.DUPLICATE, by=by
        )
        # A request that already led a group (intake ran out of order) brings its members.
        for former in ServiceRequest.objects.select_for_update().filter(duplicate_of=member):
            _join(former, primary, by=by, note=note, confirmed=confirmed)


def request_group_duplicates(request) -> Match | None:
    """Join a new request to the group of the open request it most likely repeats.

    Called during intake with `request` locked. Records the reasons (distance, time
    apart, category, wording, score) in the request's history; returns the match or None.
    """
    if request.duplicate_of_id:
        return None
    match = best_match(request)
    if match is None:
        return None
    # Lock and re-read: another intake may have grouped the candidate meanwhile.
    candidate = _lock(match.candidate.pk)
    primary = _lock(candidate.duplicate_of_id) if candidate.duplicate_of_id else candidate
    if not primary.is_open or primary.pk == request.pk:
        return None
    note = _("Likely duplicate: %(reasons)s") % {"reasons": match.reasons()}
    _join(request, primary, note=note)
    return match


def group_confirm(primary, *, by):
    """Staff agree the group is one problem: its members are marked confirmed."""
    with transaction.atomic():
        primary = _lock(primary.duplicate_of_id or primary.pk)
        confirmed = []
        for member in ServiceRequest.objects.select_for_update().filter(
            duplicate_of=primary, duplicate_confirmed=False
        ):
            member._set(
                "duplicate_confirmed",
                True,
                by=by,
                action=HistoryEntry.Action.DUPLICATE,
                note=_("Grouping with %(p)s confirmed") % {"p": primary},
            )
            confirmed.append(member)
    return confirmed


def group_merge(requests, into, *, by):
    """Staff put `requests` (and their groups) into the group of `into`, confirmed."""
    with transaction.atomic():
        primary = _lock(into.duplicate_of_id or into.pk)
        merged = []
        for request in requests:
            member = _lock(request.pk)
            if member.pk == primary.pk or member.duplicate_of_id == primary.pk:
                continue
            if member.duplicate_of_id:
                # Leaving another group: that group's primary keeps its other members.
                _leave(member, by=by, note=_("Merged into %(p)s") % {"p": primary})
            _join(
                member,
                primary,
                by=by,
                note=_("Merged by staff into %(p)s") % {"p": primary},
                confirmed=True,
            )
            merged.append(member)
    return merged


def _leave(member, *, by=None, note=""):
    old_primary = member.duplicate_of
    member._set("duplicate_of", None, by=by, note=note, action=HistoryEntry.Action.DUPLICATE)
    if member.duplicate_confirmed:
        member._set("duplicate_confirmed", False, by=by, action=HistoryEntry.Action.DUPLICATE)
    old_primary.record(
        HistoryEntry.Action.DUPLICATE, by=by, field="duplicates", old=member.tracking_number
    )
    # The reporter followed the group because of this request; they go with it unless
    # another member of that group is theirs too.
    email = (member.reporter_email or "").strip().lower()
    still_theirs = (
        ServiceRequest.objects.filter(duplicate_of=old_primary, reporter_email__iexact=email)
        .exclude(pk=member.pk)
        .exists()
    )
    if email and not still_theirs:
        Follower.objects.filter(
            request=old_primary, email=email, source=Follower.Source.DUPLICATE
        ).delete()
    return old_primary


def group_split(request, *, by):
    """Take `request` out of its group: it becomes a request of its own again.

    It leaves the group's work order too, so completing that order no longer completes
    it. Split out a primary and its oldest duplicate leads the rest of the group.
    """
    with transaction.atomic():
        member = _lock(request.pk)
        note = _("Split from its group by staff")
        if member.duplicate_of_id:
            primary = _lock(member.duplicate_of_id)
            _leave(member, by=by, note=note)
        else:
            rest = list(
                ServiceRequest.objects.select_for_update()
                .filter(duplicate_of=member)
                .order_by("created_at", "pk")
            )
            if not rest:
                return member
            primary, *others = rest
            _leave(primary, by=by, note=note)
            for other in others:
                _leave(other, by=by, note=note)
                _join(other, primary, by=by, note=note, confirmed=other.duplicate_confirmed)
        if member.work_order_id and member.work_order_id == primary.work_order_id:
            member._set("work_order", None, by=by, note=note, action=HistoryEntry.Action.WORK_ORDER)
    return member


def group_attach_members(order, request, *, by=None):
    """When a group's primary joins a work order, its open duplicates join it too.

    Call from WorkOrder.attach after attaching `request`; does nothing for a request
    that is not a primary.
    """
    if request.duplicate_of_id:
        return []
    attached = []
    for member in group_members(request).select_for_update().exclude(work_order=order):
        order.attach(member, by=by)
        attached.append(member)
    return attached
