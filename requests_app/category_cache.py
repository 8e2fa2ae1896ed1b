"""The active categories as intake needs them, kept in each process for a minute.

Every report names its category, its deadlines are worked out from the category's SLA
policy, ladder and calendar, and its answers are checked against the category's questions.
Reading those from the database on every submission cost queries a report for data that
staff change a few times a year. An edit saved in this process clears its copy at once;
other processes see it within CACHE_SECONDS.
"""

import math
import time

from django.db.models.signals import post_delete, post_save

CACHE_SECONDS = 60


class _Cache:
    loaded_at = -math.inf
    by_pk: dict = {}


def _loaded() -> dict:
    from .models import ServiceCategory

    now = time.monotonic()
    if now - _Cache.loaded_at > CACHE_SECONDS:
        categories = ServiceCategory.objects.active().with_service_level()
        _Cache.by_pk = {c.pk: c for c in categories.prefetch_related("attributes")}
        _Cache.loaded_at = now
    return _Cache.by_pk


def active_category(pk):
    """The active category `pk`, with its service level and its questions (`attributes`,
    in their order) loaded, or None."""
    return _loaded().get(pk)


def active_categories() -> list:
    """Every active category, loaded as active_category loads one, in the category order."""
    return list(_loaded().values())


def forget(**kwargs):
    _Cache.loaded_at = -math.inf


def connect_signals():
    from .models import (
        EscalationStep,
        Holiday,
        ServiceAttribute,
        ServiceCategory,
        SLAPolicy,
        WorkingCalendar,
    )

    for model in (
        ServiceCategory,
        ServiceAttribute,
        SLAPolicy,
        EscalationStep,
        WorkingCalendar,
        Holiday,
    ):
        for signal in (post_save, post_delete):
            signal.connect(forget, sender=model, dispatch_uid=f"category_cache_{model.__name__}")
