"""Satisfaction surveys: one email per completed request, answered on a signed page."""

import logging
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from notifications.models import Notification
from notifications.services import (
    absolute_url,
    link_path,
    notification_queue,
    resident_recipients,
)

from .links import survey_token
from .models import ReviewTask, Survey

logger = logging.getLogger(__name__)


def survey_delay() -> timedelta:
    return timedelta(hours=getattr(settings, "SURVEY_DELAY_HOURS", 48))


def survey_window() -> timedelta:
    # Completions older than this are not surveyed: turning surveys on must not mail
    # everyone whose pothole was filled last year.
    return timedelta(days=getattr(settings, "SURVEY_MAX_AGE_DAYS", 14))


def survey_url(survey, **params) -> str:
    token = survey_token(survey.pk)
    url = absolute_url(link_path("surveys:answer", token, f"/surveys/{token}/"))
    if params:
        url += "?" + "&".join(f"{key}={value}" for key, value in params.items())
    return url


def survey_dispatch(now=None, batch=200) -> int:
    """Survey the reporters of requests completed SURVEY_DELAY_HOURS ago or more."""
    from requests_app.models import ServiceRequest, Status

    now = now or timezone.now()
    due = now - survey_delay()
    candidates = (
        ServiceRequest.objects.filter(
            status=Status.COMPLETED,
            resolved_at__lte=due,
            resolved_at__gt=due - survey_window(),
            survey__isnull=True,
        )
        .order_by("resolved_at")
        .values_list("pk", flat=True)[:batch]
    )
    return sum(survey_send(pk) is not None for pk in candidates)


def survey_send(request_id: int) -> Survey | None:
    """Claim the request's survey and queue its email; None if already claimed."""
    from requests_app.models import ServiceRequest, Status

    with transaction.atomic():
        request = (
            ServiceRequest.objects.select_for_update()
            .filter(pk=request_id, status=Status.COMPLETED)
            .select_related("category")
            .first()
        )
        if request is None:
            return None
        try:
            with transaction.atomic():
                survey = Survey.objects.create(request=request, language=request.language)
        except IntegrityError:
            return None
        # The reporter only, and only while they still want our email.
        reporter = [r for r in resident_recipients(request) if r.is_reporter]
        if reporter:
            links = {
                "survey_url": survey_url(survey),
                "rating_urls": [(n, survey_url(survey, rating=n)) for n in range(1, 6)],
                "fixed_url": survey_url(survey, fixed="yes"),
                "not_fixed_url": survey_url(survey, fixed="no"),
                "link_days": getattr(settings, "SURVEY_LINK_MAX_AGE_DAYS", 30),
            }
            (notification,) = notification_queue(
                request, Notification.Kind.SURVEY, "survey", links, recipients=reporter
            )
            survey.recipient = reporter[0].email
            survey.notification = notification
            survey.save(update_fields=["recipient", "notification"])
    return survey


def survey_answer(survey_id: int, *, rating=None, is_fixed=None, comment="") -> Survey:
    """Record (or update) an answer; a poor one opens a review, "not fixed" reopens."""
    from requests_app.models import ConcurrentChange, InvalidTransition, Status

    with transaction.atomic():
        survey = Survey.objects.select_for_update().select_related("request").get(pk=survey_id)
        survey.rating = rating
        survey.is_fixed = is_fixed
        survey.comment = (comment or "").strip()
        survey.answered_at = timezone.now()
        survey.answer_count += 1
        survey.save()
        if not survey.needs_review:
            return survey
        review, created = ReviewTask.objects.get_or_create(
            survey=survey,
            defaults={
                "request": survey.request,
                "rating": survey.rating,
                "is_fixed": survey.is_fixed,
                "comment": survey.comment,
            },
        )
        if not created:
            ReviewTask.objects.filter(pk=review.pk).update(
                rating=survey.rating,
                is_fixed=survey.is_fixed,
                comment=survey.comment,
                closed_at=None,  # a new poor answer needs a new look
            )
        request = survey.request
        if survey.is_fixed is False and request.status == Status.COMPLETED:
            try:
                # The note is public (timeline and emails): it must not quote the resident.
                request.change_status(
                    Status.RECEIVED,
                    note=_("Reopened: the resident says the problem is not fixed."),
                    actor="Resident (survey)",
                )
            except (ConcurrentChange, InvalidTransition) as error:
                logger.info("Survey %s could not reopen %s: %s", survey.pk, request, error)
    return survey
