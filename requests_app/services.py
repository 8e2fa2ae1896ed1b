"""Workflows that span several models: intake, and the work that follows it."""

import logging
from dataclasses import dataclass, field

from django.core.files.base import ContentFile
from django.db import transaction
from django.utils import timezone

from civicdesk.celery import enqueue_on_commit

from . import sla
from .grouping import reporter_follow, request_group_duplicates
from .models import (
    AttributeAnswer,
    Channel,
    HistoryEntry,
    Photo,
    ServiceAttribute,
    ServiceCategory,
    ServiceRequest,
)
from .photos import ProcessedPhoto

logger = logging.getLogger(__name__)


@dataclass
class Intake:
    """Everything a channel knows about a new request, before it becomes one."""

    category: ServiceCategory
    description: str
    channel: str = Channel.WEB
    lat: float | None = None
    lng: float | None = None
    address: str = ""
    reporter_name: str = ""
    reporter_email: str = ""
    reporter_phone: str = ""
    language: str = "en"
    photos: list[ProcessedPhoto] = field(default_factory=list)
    entered_by: object = None
    # Answers to the category's questions, already checked: {question: value}, the value a
    # list for multivaluelist and a string otherwise, as Open311 stores them.
    answers: dict[ServiceAttribute, object] = field(default_factory=dict)


def request_submit(intake: Intake) -> ServiceRequest:
    """Store a new request with its photos and history, and schedule what follows.

    Nothing here talks to Redis or the mail provider: the request, its photos, its
    history and the confirmation email row commit together; routing and sending happen
    in the worker, and a periodic sweep redoes whatever an unreachable broker dropped.
    """
    category = intake.category
    # No savepoint inside a caller's transaction (the portal counts the attempt in it): a
    # failure here fails the caller's whole transaction, which every caller lets propagate.
    with transaction.atomic(savepoint=False):
        request = ServiceRequest(
            created_at=timezone.now(),
            category=category,
            description=intake.description.strip(),
            channel=intake.channel,
            lat=intake.lat,
            lng=intake.lng,
            address=intake.address.strip(),
            priority=category.default_priority,
            reporter_name=intake.reporter_name.strip(),
            reporter_email=intake.reporter_email.strip(),
            reporter_phone=intake.reporter_phone.strip(),
            language=intake.language,
            entered_by=intake.entered_by,
        )
        for name, value in sla.schedule(request).items():
            setattr(request, name, value)
        request.expected_at = sla.expected_resolution(category) or request.due_at
        request.insert()
        request.record(
            HistoryEntry.Action.CREATED,
            by=intake.entered_by,
            actor="" if intake.entered_by else "Resident",
            note=f"Received via {Channel(intake.channel).label}",
        )
        for processed in intake.photos:
            photo_attach(request, processed, by=intake.entered_by)
        if intake.answers:
            AttributeAnswer.objects.bulk_create(
                AttributeAnswer(request=request, attribute=attribute, value=value)
                for attribute, value in intake.answers.items()
            )
        reporter_follow(request)

        from notifications.services import notify_request_received

        notify_request_received(request)

    # One message for everything that follows: the intake task also sends the
    # confirmation email (see request_process_intake).
    from .tasks import process_intake

    enqueue_on_commit(process_intake, request.pk)
    return request


def _store_photo(photo, processed: ProcessedPhoto):
    """Write the re-encoded files under names we choose, never the uploader's."""
    photo.image.save(f"{photo.id.hex}.jpg", ContentFile(processed.image), save=False)
    photo.thumbnail.save(f"{photo.id.hex}-thumb.jpg", ContentFile(processed.thumbnail), save=False)
    # Set after the files: assigning a file makes ImageField re-read the dimensions.
    photo.width, photo.height = processed.width, processed.height
    photo.save()
    return photo


def photo_attach(request, processed: ProcessedPhoto, *, kind=Photo.Kind.CITIZEN, by=None):
    public = Photo.starts_public(kind=kind, by=by)
    photo = _store_photo(
        Photo(request=request, kind=kind, uploaded_by=by, is_public=public), processed
    )
    request.record(
        HistoryEntry.Action.PHOTO,
        by=by,
        actor="" if by else "Resident",
        new=photo.get_kind_display(),
    )
    return photo


def work_order_add_photo(order, processed: ProcessedPhoto, *, kind, by=None):
    """A crew's before/after photo: it belongs to the work order and shows on its requests."""
    with transaction.atomic():
        photo = _store_photo(Photo(work_order=order, kind=kind, uploaded_by=by), processed)
        for request in order.requests.all():
            request.record(
                HistoryEntry.Action.PHOTO, by=by, new=photo.get_kind_display(), note=str(order)
            )
    return photo


def request_process_intake(request_id: int) -> bool:
    """Route a new request (locating it first if it came without a pin) and mark its intake
    done; safe to call any number of times.

    The row is locked for the duration so that a task and a sweep running at the same
    moment cannot both route it. Returns False when there was nothing to do.
    """
    from routing.services import request_route

    # Before the lock: finding the place may wait on an outside geocoder.
    located = _place_for_typed_address(request_id)
    with transaction.atomic():
        request = (
            # Only the request's row: the category and department are read, not changed,
            # and locking them would serialise a department's whole intake.
            ServiceRequest.objects.select_for_update(of=("self",))
            .filter(pk=request_id, intake_processed_at__isnull=True)
            .select_related("category__department")
            .first()
        )
        if request is None:
            return False
        from notifications.services import received_email_send

        # First, so that its message leaves before those of routing's "assigned" email.
        received_email_send(request)
        if located is not None and not request.has_location:
            request_locate(request, located)
        elif request.has_location and not request.address_id:
            request_address_from_pin(request)
        # The escalation clock starts here rather than in the resident's request: its
        # first rung is hours away, and intake is done within seconds (or by the sweep).
        sla.clock_set(request)
        request_route(request)
        request_group_duplicates(request)
        request.intake_processed_at = timezone.now()
        ServiceRequest.objects.filter(pk=request.pk).update(
            intake_processed_at=request.intake_processed_at
        )
    return True


@dataclass
class Located:
    """Where a request given without a pin is, and how that was found."""

    place: object  # routing.geocoding.Place
    found_by: str
    address: str = ""  # the address, when it was found in the description


def _place_for_typed_address(request_id) -> Located | None:
    """A position for a request that came with an address but no pin, by every channel.

    The city's gazetteer first: the source's address id, or the typed address when it
    matches exactly or clearly (see routing.geocoding.address_geocode); with no address,
    one written in the description (an email). Then, if configured, the outside geocoder
    — only here, in the worker, with a short timeout. Nothing found: the request keeps no
    position, for staff to confirm.
    """
    from routing.geocoding import address_geocode, address_in_text, geocoder_lookup

    request = (
        ServiceRequest.objects.filter(
            pk=request_id, intake_processed_at__isnull=True, lat__isnull=True
        )
        .only("address", "address_id", "description")
        .first()
    )
    if request is None:
        return None
    if request.address or request.address_id:
        place = address_geocode(request.address, address_id=request.address_id)
        if place is not None:
            return Located(place, "the address gazetteer")
    elif found := address_in_text(request.description):
        return Located(found[1], "the address gazetteer", address=found[0])
    if request.address:
        place = geocoder_lookup(request.address)
        if place is not None:
            return Located(place, "the outside geocoder")
    return None


def request_locate(request, located: Located):
    """Give the request the position found for its address. The caller holds the row lock."""
    place = located.place
    changes = {"lat": place.lat, "lng": place.lng}
    if located.address and not request.address:
        changes["address"] = located.address[:255]
    if place.address_id and not request.address_id:
        changes["address_id"] = place.address_id
    if place.zipcode and not request.zipcode:
        changes["zipcode"] = place.zipcode
    for name, value in changes.items():
        setattr(request, name, value)
    ServiceRequest.objects.filter(pk=request.pk).update(**changes, updated_at=timezone.now())
    request.record(
        HistoryEntry.Action.FIELD,
        actor="Geocoding",
        field="location",
        new=f"{place.lat:.6f}, {place.lng:.6f}",
        note=f"Located from the address “{request.address}”: {place.label}, "
        f"found by {located.found_by}",
    )


def request_address_from_pin(request):
    """Complete a pinned request from the nearest gazetteer address: its id and ZIP code
    always (Open311 and staff read them), its text only when the resident typed none.
    The caller holds the row lock."""
    from routing.geocoding import address_nearest

    place = address_nearest(request.lat, request.lng)
    if place is None:
        return
    changes = {"address_id": place.address_id, "zipcode": place.zipcode}
    if not request.address:
        changes["address"] = place.label[:255]
    changes = {name: value for name, value in changes.items() if value}
    if not changes:
        return
    for name, value in changes.items():
        setattr(request, name, value)
    ServiceRequest.objects.filter(pk=request.pk).update(**changes, updated_at=timezone.now())
    if "address" in changes:
        request.record(
            HistoryEntry.Action.FIELD,
            actor="Geocoding",
            field="address",
            new=request.address,
            note=f"The nearest address to the pin ({place.distance_m:.0f} m)",
        )


def intake_sweep(older_than, batch=200) -> int:
    """Finish intake for requests whose task never ran (broker down, worker killed).

    Runs in the worker, so it processes the stragglers itself instead of enqueueing them
    through the broker that may just have lost them.
    """
    pending = ServiceRequest.objects.awaiting_intake(older_than).order_by("created_at")
    done = 0
    for pk in pending.values_list("pk", flat=True)[:batch]:
        done += request_process_intake(pk)
    if done:
        logger.info("Intake sweep finished %d requests", done)
    return done
