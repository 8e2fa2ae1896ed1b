"""The nearby lookup's compiled query: the same answers as the ORM queryset it stands for."""

import random
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from requests_app import grouping
from requests_app.models import ServiceCategory, ServiceRequest, Status

from .factories import CITY_CENTER, CategoryFactory, ServiceRequestFactory

# About 600 m either way of the centre, so that radii of 100-700 m cut through them.
SPREAD = 0.006


@pytest.fixture
def scattered(db):
    """Requests of two groups around the centre: open and closed, public and hidden,
    recent and old, some grouped as duplicates."""
    rng = random.Random(4)
    streets = [CategoryFactory(group="Streets and sidewalks") for _ in range(3)]
    parks = CategoryFactory(group="Parks")
    now = timezone.now()
    made = []
    for n in range(120):
        made.append(
            ServiceRequestFactory(
                category=rng.choice([*streets, parks]),
                lat=CITY_CENTER[0] + rng.uniform(-SPREAD, SPREAD),
                lng=CITY_CENTER[1] + rng.uniform(-SPREAD, SPREAD),
                status=rng.choice([Status.RECEIVED, Status.ASSIGNED, Status.COMPLETED]),
                is_public=rng.random() > 0.2,
                created_at=now - timedelta(hours=rng.uniform(0, 24 * 30)),
                description=f"Request {n}",
                duplicate_of=rng.choice(made) if made and rng.random() < 0.2 else None,
            )
        )
    return streets, now


def orm_lookup(category, lat, lng, *, radius_m, since, until, exclude_pk, public_only, limit):
    """The lookup as a plain queryset, as it was written before it was compiled once."""
    min_lat, max_lat, min_lng, max_lng = grouping.bounding_box(lat, lng, radius_m)
    candidates = ServiceRequest.objects.open().filter(
        category_id__in=ServiceCategory.objects.filter(group=category.group).values("pk"),
        lat__gte=min_lat,
        lat__lte=max_lat,
        lng__gte=min_lng,
        lng__lte=max_lng,
    )
    if since is not None:
        candidates = candidates.filter(created_at__gte=since)
    if until is not None:
        candidates = candidates.filter(created_at__lte=until)
    if exclude_pk is not None:
        candidates = candidates.exclude(pk=exclude_pk)
    if public_only:
        candidates = candidates.public()
    candidates = candidates.select_related("category").only(*grouping.CANDIDATE_FIELDS)
    found = []
    for candidate in candidates.order_by():
        distance = grouping.haversine_m(lat, lng, candidate.lat, candidate.lng)
        if distance <= radius_m:
            found.append(grouping.Nearby(candidate, distance))
    found.sort(key=lambda n: (n.distance_m, n.request.created_at))
    return found[:limit] if limit else found


def read(request):
    """The request's own CANDIDATE_FIELDS (foreign keys as ids)."""
    fields = [f for f in grouping.CANDIDATE_FIELDS if "__" not in f]
    return [getattr(request, ServiceRequest._meta.get_field(f).attname) for f in fields]


def described(found):
    """What callers can read of each result, and what they would have to load later."""
    return [
        (
            near.distance_m,
            near.request.pk,
            *read(near.request),
            near.request.category.name,
            near.request.category.group,
            near.request.get_deferred_fields(),
            near.request.category.get_deferred_fields(),
            near.request._state.db,
            near.request._state.adding,
        )
        for near in found
    ]


def test_compiled_lookup_answers_as_the_orm_queryset_for_every_set_of_options(scattered):
    streets, now = scattered
    rng = random.Random(9)
    compared = 0
    for _ in range(60):
        options = {
            "radius_m": rng.choice([100, 250, 700]),
            "since": rng.choice([None, now - timedelta(days=rng.uniform(1, 20))]),
            "until": rng.choice([None, now - timedelta(days=rng.uniform(0, 5))]),
            "exclude_pk": rng.choice([None, rng.choice(ServiceRequest.objects.all()).pk]),
            "public_only": rng.choice([False, True]),
            "limit": rng.choice([None, 3, grouping.NEARBY_LIMIT]),
        }
        category = rng.choice(streets)
        lat = CITY_CENTER[0] + rng.uniform(-SPREAD, SPREAD)
        lng = CITY_CENTER[1] + rng.uniform(-SPREAD, SPREAD)

        found = grouping.nearby_open_requests(category, lat, lng, **options)

        assert described(found) == described(orm_lookup(category, lat, lng, **options))
        compared += len(found)
    assert compared > 100  # the comparisons were not all of empty lists


def test_reading_what_callers_read_needs_no_further_query(scattered, django_assert_num_queries):
    streets, _now = scattered

    with django_assert_num_queries(1):
        found = grouping.nearby_open_requests(streets[0], *CITY_CENTER, radius_m=700, limit=None)
        for near in found:
            read(near.request), near.request.category.name, near.request.category.group

    assert found


def test_portal_lookup_asks_for_primaries_only_when_a_duplicate_is_nearer(
    pothole, django_assert_num_queries
):
    lat, lng = CITY_CENTER
    primary = ServiceRequestFactory(category=pothole, lat=lat + 0.0005, lng=lng)  # 56 m
    with django_assert_num_queries(1):
        assert [n.request for n in grouping.nearby_for_portal(pothole, lat, lng)] == [primary]

    # Further away than its primary: the group is already known by its primary.
    ServiceRequestFactory(category=pothole, duplicate_of=primary, lat=lat + 0.001, lng=lng)
    with django_assert_num_queries(1):
        assert [n.request for n in grouping.nearby_for_portal(pothole, lat, lng)] == [primary]

    # Nearer: it stands for its group, which is shown as its primary.
    ServiceRequestFactory(category=pothole, duplicate_of=primary, lat=lat, lng=lng)
    with django_assert_num_queries(2):
        (shown,) = grouping.nearby_for_portal(pothole, lat, lng)
    assert shown.request == primary and shown.distance_m < 1


def test_a_problem_reported_hundreds_of_times_is_one_entry_and_few_candidates(pothole):
    lat, lng = CITY_CENTER
    primary = ServiceRequestFactory(category=pothole, lat=lat, lng=lng)
    for _ in range(120):
        ServiceRequestFactory(category=pothole, duplicate_of=primary, lat=lat, lng=lng)
    other = ServiceRequestFactory(category=pothole, lat=lat + 0.0005, lng=lng)

    shown = grouping.nearby_for_portal(pothole, lat, lng)
    assert [n.request for n in shown] == [primary, other]

    candidates = grouping.nearby_open_requests(
        pothole, lat, lng, limit=grouping.DUPLICATE_CANDIDATES
    )
    assert len(candidates) == grouping.DUPLICATE_CANDIDATES
    assert candidates[0].request == primary  # the earliest at the same distance


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's planner")
def test_open_location_index_serves_the_lookup_when_the_model_has_it(pothole):
    if not any(i.name == "request_open_location" for i in ServiceRequest._meta.indexes):
        pytest.skip("request_open_location is not in ServiceRequest.Meta.indexes yet")
    ServiceRequestFactory(category=pothole)
    with CaptureQueriesContext(connection) as queries:
        grouping.nearby_open_requests(pothole, *CITY_CENTER, since=timezone.now())

    with connection.cursor() as cursor:
        # A handful of rows: without this the planner rightly prefers reading the table.
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN " + queries[-1]["sql"])
        plan = "\n".join(row[0] for row in cursor.fetchall())
    # The index's predicate is implied by the query's status filter, which is then dropped.
    assert "request_open_location" in plan and "status" not in plan
