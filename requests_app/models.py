import uuid
from datetime import time, timedelta
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, models, transaction
from django.db.models import Exists, F, OuterRef, Q
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import get_language
from django.utils.translation import gettext_lazy as _

from . import moderation
from .compiled import CompiledQuery, insert_new
from .tracking import new_tracking_number


def _language() -> str:
    return (get_language() or settings.LANGUAGE_CODE).split("-")[0]


def in_language(obj, field: str) -> str:
    """`field` of `obj` in the active language: its `<field>_<language>` column when the
    city filled it in (e.g. name_es), else the field itself, which is in English.

    What residents read of the city's own set-up (categories, their groups, departments,
    the categories' questions) has one such column for each language the site offers
    besides English.
    """
    return getattr(obj, f"{field}_{_language()}", "") or getattr(obj, field)


TRANSLATION_HELP = _("As residents who chose Spanish read it; left empty, they read the English.")


class Department(models.Model):
    name = models.CharField(_("name"), max_length=100, unique=True)
    name_es = models.CharField(
        _("name in Spanish"), max_length=100, blank=True, help_text=TRANSLATION_HELP
    )
    slug = models.SlugField(unique=True)
    email = models.EmailField(_("team email"), blank=True)
    supervisor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="supervised_departments",
        verbose_name=_("supervisor"),
        help_text=_("Told when a request of the department breaches its SLA."),
    )
    is_active = models.BooleanField(_("active"), default=True)

    class Meta:
        ordering = ["name"]
        verbose_name = _("department")
        verbose_name_plural = _("departments")

    def __str__(self):
        return self.display_name

    @property
    def display_name(self) -> str:
        return in_language(self, "name")


class Crew(models.Model):
    name = models.CharField(_("name"), max_length=100)
    department = models.ForeignKey(
        Department, on_delete=models.PROTECT, related_name="crews", verbose_name=_("department")
    )
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, related_name="crews", blank=True, verbose_name=_("members")
    )
    is_active = models.BooleanField(_("active"), default=True)

    class Meta:
        ordering = ["department__name", "name"]
        verbose_name = _("crew")
        verbose_name_plural = _("crews")

    def __str__(self):
        return f"{self.department} / {self.name}"


class Priority(models.IntegerChoices):
    LOW = 1, _("Low")
    NORMAL = 2, _("Normal")
    HIGH = 3, _("High")
    URGENT = 4, _("Urgent")


class WorkingCalendar(models.Model):
    """When the clock runs for business-hours SLAs: weekdays, hours, holidays, time zone."""

    name = models.CharField(_("name"), max_length=100, unique=True)
    time_zone = models.CharField(_("time zone"), max_length=50, default="America/New_York")
    weekdays = models.CharField(
        _("working days"),
        max_length=20,
        default="0,1,2,3,4",
        help_text=_("Monday is 0, Sunday is 6."),
    )
    day_starts = models.TimeField(_("day starts"), default=time(8, 0))
    day_ends = models.TimeField(_("day ends"), default=time(17, 0))

    class Meta:
        verbose_name = _("working calendar")
        verbose_name_plural = _("working calendars")

    def __str__(self):
        return self.name

    def clean(self):
        if self.day_ends <= self.day_starts:
            raise ValidationError(_("The working day must end after it starts."))

    @property
    def working_weekdays(self) -> set[int]:
        return {int(d) for d in self.weekdays.split(",") if d.strip()}


class Holiday(models.Model):
    calendar = models.ForeignKey(WorkingCalendar, on_delete=models.CASCADE, related_name="holidays")
    date = models.DateField(_("date"))
    name = models.CharField(_("name"), max_length=100)

    class Meta:
        ordering = ["date"]
        constraints = [
            models.UniqueConstraint(fields=["calendar", "date"], name="holiday_once_per_calendar")
        ]

    def __str__(self):
        return f"{self.date} {self.name}"


class SLAPolicy(models.Model):
    class Clock(models.TextChoices):
        ALWAYS = "always", _("Around the clock")
        BUSINESS = "business", _("Business hours")

    name = models.CharField(_("name"), max_length=100, unique=True)
    acknowledge_hours = models.DecimalField(
        _("acknowledge within (hours)"), max_digits=7, decimal_places=2
    )
    resolve_hours = models.DecimalField(_("resolve within (hours)"), max_digits=7, decimal_places=2)
    clock = models.CharField(_("clock"), max_length=10, choices=Clock.choices, default=Clock.ALWAYS)
    calendar = models.ForeignKey(
        WorkingCalendar,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        verbose_name=_("working calendar"),
    )
    high_priority_factor = models.DecimalField(
        _("high priority: share of the time"),
        max_digits=4,
        decimal_places=2,
        default=Decimal("0.75"),
    )
    urgent_priority_factor = models.DecimalField(
        _("urgent: share of the time"), max_digits=4, decimal_places=2, default=Decimal("0.50")
    )

    class Meta:
        verbose_name = _("SLA policy")
        verbose_name_plural = _("SLA policies")

    def __str__(self):
        return self.name

    def clean(self):
        if self.clock == self.Clock.BUSINESS and not self.calendar:
            raise ValidationError({"calendar": _("Business hours need a working calendar.")})

    def factor(self, priority) -> Decimal:
        if priority >= Priority.URGENT:
            return self.urgent_priority_factor
        if priority >= Priority.HIGH:
            return self.high_priority_factor
        return Decimal(1)


class EscalationStep(models.Model):
    """At a share of the resolve time, tell someone and perhaps raise the priority."""

    class Notify(models.TextChoices):
        ASSIGNEE = "assignee", _("The assignee (or crew, or department)")
        SUPERVISOR = "supervisor", _("The department supervisor")
        DIRECTOR = "director", _("The director")

    policy = models.ForeignKey(SLAPolicy, on_delete=models.CASCADE, related_name="steps")
    at_share = models.DecimalField(
        _("at share of the time"),
        max_digits=4,
        decimal_places=2,
        help_text=_("0.75 is three quarters of the time, 1 the deadline, 2 twice the time."),
    )
    notify = models.CharField(_("notify"), max_length=12, choices=Notify.choices)
    raise_priority = models.BooleanField(_("raise priority"), default=False)

    class Meta:
        ordering = ["policy", "at_share"]
        constraints = [
            models.UniqueConstraint(fields=["policy", "at_share"], name="one_step_per_share")
        ]
        verbose_name = _("escalation step")
        verbose_name_plural = _("escalation ladder")

    def __str__(self):
        return f"{self.at_share:g}× → {self.get_notify_display()}"


class ServiceCategoryQuerySet(models.QuerySet):
    def active(self):
        return self.filter(is_active=True)

    def with_service_level(self):
        """Categories with their SLA policy, ladder and calendar loaded (see sla.targets_for)."""
        return self.select_related("sla_policy__calendar").prefetch_related(
            "sla_policy__steps", "sla_policy__calendar__holidays"
        )


class ServiceCategory(models.Model):
    code = models.SlugField(_("code"), max_length=50, unique=True)
    name = models.CharField(_("name"), max_length=100)
    name_es = models.CharField(
        _("name in Spanish"), max_length=100, blank=True, help_text=TRANSLATION_HELP
    )
    group = models.CharField(_("group"), max_length=100)
    group_es = models.CharField(
        _("group in Spanish"), max_length=100, blank=True, help_text=TRANSLATION_HELP
    )
    description = models.TextField(_("description"), blank=True)
    department = models.ForeignKey(
        Department,
        on_delete=models.PROTECT,
        related_name="categories",
        verbose_name=_("department"),
    )
    default_priority = models.IntegerField(
        _("default priority"), choices=Priority.choices, default=Priority.NORMAL
    )
    sla_hours = models.PositiveIntegerField(
        _("resolve within (hours)"), help_text=_("Service level target, counted from intake.")
    )
    keywords = models.CharField(
        _("keywords"), max_length=300, blank=True, help_text=_("Comma-separated, used by routing.")
    )
    sla_policy = models.ForeignKey(
        SLAPolicy,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="categories",
        verbose_name=_("SLA policy"),
        help_text=_("Without a policy, the resolve target above runs around the clock."),
    )
    duplicate_radius_m = models.PositiveIntegerField(
        _("duplicate radius (m)"),
        default=250,
        help_text=_("Open requests of this category this close are likely the same problem."),
    )
    duplicate_window_hours = models.PositiveIntegerField(
        _("duplicate window (hours)"),
        default=24 * 14,
        help_text=_("…and reported at most this long before."),
    )
    service_notice = models.CharField(
        _("notice to reporters"),
        max_length=300,
        blank=True,
        help_text=_(
            "What residents should expect, e.g. “Potholes are usually filled within "
            "3 working days.” (Open311 service_notice)"
        ),
    )
    requires_after_photo = models.BooleanField(
        _("completion needs an after photo"),
        default=True,
        help_text=_("Crews must add an “after” photo before they can complete the work."),
    )
    is_active = models.BooleanField(_("active"), default=True)

    objects = ServiceCategoryQuerySet.as_manager()

    class Meta:
        ordering = ["group", "name"]
        verbose_name = _("service category")
        verbose_name_plural = _("service categories")

    def __str__(self):
        return self.display_name

    @property
    def display_name(self) -> str:
        return in_language(self, "name")

    @property
    def display_group(self) -> str:
        return in_language(self, "group")

    @property
    def sla(self) -> timedelta:
        return timedelta(hours=self.sla_hours)


class Channel(models.TextChoices):
    WEB = "web", _("Web portal")
    PHONE = "phone", _("Phone")
    WALK_IN = "walk_in", _("Walk-in")
    EMAIL = "email", _("Email")
    API = "api", _("Open311 API")
    SOCIAL = "social", _("Social media")


class Status(models.TextChoices):
    RECEIVED = "received", _("Received")
    ASSIGNED = "assigned", _("Assigned")
    SCHEDULED = "scheduled", _("Scheduled")
    IN_PROGRESS = "in_progress", _("In progress")
    WAITING = "waiting", _("Waiting for information")
    COMPLETED = "completed", _("Completed")
    CLOSED = "closed", _("Closed without fix")


OPEN_STATUSES = {
    Status.RECEIVED,
    Status.ASSIGNED,
    Status.SCHEDULED,
    Status.IN_PROGRESS,
    Status.WAITING,
}
# Completed and closed requests can only be reopened, which puts them back in the queue.
TRANSITIONS = {
    Status.RECEIVED: OPEN_STATUSES - {Status.RECEIVED} | {Status.COMPLETED, Status.CLOSED},
    Status.ASSIGNED: OPEN_STATUSES - {Status.ASSIGNED} | {Status.COMPLETED, Status.CLOSED},
    Status.SCHEDULED: OPEN_STATUSES - {Status.SCHEDULED} | {Status.COMPLETED, Status.CLOSED},
    Status.IN_PROGRESS: OPEN_STATUSES - {Status.IN_PROGRESS} | {Status.COMPLETED, Status.CLOSED},
    Status.WAITING: OPEN_STATUSES - {Status.WAITING} | {Status.CLOSED},
    Status.COMPLETED: {Status.RECEIVED},
    Status.CLOSED: {Status.RECEIVED},
}


class CloseReason(models.TextChoices):
    DUPLICATE = "duplicate", _("Duplicate of another request")
    NOT_CITY = "not_city", _("Not the city's responsibility")
    NOT_FOUND = "not_found", _("Could not find the problem")
    NO_ACTION = "no_action", _("No action needed")
    REFERRED = "referred", _("Referred to another agency")
    RESIDENT_WITHDREW = "withdrawn", _("Withdrawn by the resident")


class InvalidTransition(ValidationError):
    pass


class ConcurrentChange(ValidationError):
    """Somebody else changed the request between reading and writing it."""


class ServiceRequestQuerySet(models.QuerySet):
    def open(self):
        return self.filter(status__in=OPEN_STATUSES)

    def public(self):
        return self.filter(is_public=True)

    def without_location(self):
        """Requests with no map position yet: the address did not match, say."""
        return self.filter(Q(lat__isnull=True) | Q(lng__isnull=True))

    def awaiting_review(self):
        """Requests whose description or a resident's public comment the public cannot see
        yet because of the word list (see moderation.py)."""
        pattern = moderation.blocked_pattern()
        if pattern is None:
            return self.none()
        comments = Comment.objects.filter(
            request=OuterRef("pk"),
            is_public=True,
            author__isnull=True,
            text_approved=False,
            public_text_override="",
            text__iregex=pattern,
        )
        return self.filter(
            Q(
                description__iregex=pattern,
                description_approved=False,
                public_description_override="",
            )
            | Q(Exists(comments))
        )

    def with_photos_awaiting_approval(self):
        held = Photo.objects.awaiting_approval()
        return self.filter(
            Q(Exists(held.filter(request=OuterRef("pk"))))
            | Q(Exists(held.filter(work_order=OuterRef("work_order"))))
        )

    def awaiting_intake(self, older_than: timedelta):
        return self.filter(
            intake_processed_at__isnull=True, created_at__lte=timezone.now() - older_than
        )

    def needing_triage(self):
        return self.open().filter(department__isnull=True)

    def sla_compliance(self, by):
        """Resolved requests and the share resolved on time, grouped by a field such as
        "department__name", "category__name", "district__name" or "crew__name"."""
        resolved = self.filter(status=Status.COMPLETED, resolved_at__isnull=False)
        rows = (
            resolved.values(by)
            .annotate(
                resolved=models.Count("pk"),
                on_time=models.Count("pk", filter=Q(resolved_at__lte=F("due_at"))),
            )
            .order_by(by)
        )
        return [
            {**row, "on_time_pct": round(100 * row["on_time"] / row["resolved"], 1)} for row in rows
        ]

    def by_urgency(self):
        return self.order_by("-priority", F("due_at").asc(nulls_last=True), "created_at")


# The actor of the history entry withdraw_by_reporter writes: it has no user to name, and
# "My requests" tells a withdrawal from staff hiding a request by it.
WITHDRAWN_BY_REPORTER = "Reporter"


class ServiceRequest(models.Model):
    tracking_number = models.CharField(_("tracking number"), max_length=12, unique=True)
    category = models.ForeignKey(
        ServiceCategory,
        on_delete=models.PROTECT,
        related_name="requests",
        verbose_name=_("category"),
    )
    description = models.TextField(_("description"))
    lat = models.FloatField(_("latitude"), null=True, blank=True)
    lng = models.FloatField(_("longitude"), null=True, blank=True)
    address = models.CharField(_("address or place"), max_length=255, blank=True)
    channel = models.CharField(_("channel"), max_length=10, choices=Channel.choices)
    status = models.CharField(
        _("status"), max_length=12, choices=Status.choices, default=Status.RECEIVED
    )
    priority = models.IntegerField(_("priority"), choices=Priority.choices, default=Priority.NORMAL)
    department = models.ForeignKey(
        Department,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="requests",
        verbose_name=_("department"),
    )
    district = models.ForeignKey(
        "routing.District",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="requests",
        verbose_name=_("district"),
    )
    crew = models.ForeignKey(
        Crew,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="requests",
        verbose_name=_("crew"),
    )
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="assigned_requests",
        verbose_name=_("assignee"),
    )
    work_order = models.ForeignKey(
        "WorkOrder",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="requests",
        verbose_name=_("work order"),
    )
    # Grouped duplicates point at the group's primary request (which shares its work order).
    duplicate_of = models.ForeignKey(
        "self",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="duplicates",
        verbose_name=_("duplicate of"),
    )
    duplicate_confirmed = models.BooleanField(_("grouping confirmed by staff"), default=False)
    # How often the request was sent on to another department (the forwarding rate).
    forward_count = models.PositiveIntegerField(_("times forwarded"), default=0)
    close_reason = models.CharField(
        _("reason for closing"), max_length=12, choices=CloseReason.choices, blank=True
    )
    is_public = models.BooleanField(
        _("shown to the public"), default=True, help_text=_("Staff can hide a request.")
    )
    # Moderation: the description stays as the resident wrote it; the public sees this
    # wording instead when staff give one (see moderation.py and public_description).
    # db_default as well, so rows written by COPY and raw INSERTs (imports, benches) get it.
    public_description_override = models.TextField(
        _("public wording of the description"),
        blank=True,
        db_default="",
        help_text=_("Shown to the public instead of the description, which is kept as written."),
    )
    description_approved = models.BooleanField(
        _("description approved for the public"),
        default=False,
        db_default=False,
        help_text=_("Staff let a description the word list held back be shown as written."),
    )

    # Private: never rendered on a public page, feed or API response.
    reporter_name = models.CharField(_("reporter name"), max_length=120, blank=True)
    reporter_email = models.EmailField(_("reporter email"), blank=True)
    reporter_phone = models.CharField(_("reporter phone"), max_length=40, blank=True)
    reporter_device_id = models.CharField(_("reporter device id"), max_length=100, blank=True)
    reporter_account_id = models.CharField(_("reporter account id"), max_length=100, blank=True)
    address_id = models.CharField(_("address id"), max_length=100, blank=True)
    # From the address gazetteer (routing.Address), like address_id: see services.py.
    zipcode = models.CharField(_("ZIP code"), max_length=10, blank=True, default="", db_default="")
    api_client = models.ForeignKey(
        "ApiClient",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="requests",
        verbose_name=_("submitted by API client"),
    )
    # Set on requests brought in by the historic import, so that a re-run updates them.
    import_source = models.CharField(_("imported from"), max_length=50, blank=True)
    external_id = models.CharField(_("id in the source system"), max_length=100, blank=True)
    language = models.CharField(_("language"), max_length=8, default="en")
    entered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("entered by"),
    )

    created_at = models.DateTimeField(_("received"), default=timezone.now, db_index=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)
    first_response_at = models.DateTimeField(_("first response"), null=True, blank=True)
    resolved_at = models.DateTimeField(_("resolved"), null=True, blank=True)
    due_at = models.DateTimeField(_("due"), null=True, blank=True)
    # The SLA deadlines: acknowledge and resolve, the at-risk point, and pauses while we
    # wait for the resident. The escalation ladder's progress is in EscalationClock.
    acknowledge_due_at = models.DateTimeField(_("acknowledge by"), null=True, blank=True)
    at_risk_at = models.DateTimeField(_("at risk from"), null=True, blank=True)
    sla_paused_at = models.DateTimeField(null=True, blank=True, editable=False)
    sla_paused_seconds = models.PositiveIntegerField(default=0, editable=False)
    expected_at = models.DateTimeField(
        _("expected by (told to the resident)"), null=True, blank=True
    )
    # Set once routing and the other after-intake steps are done; the sweep looks for NULLs.
    intake_processed_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = ServiceRequestQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name = _("service request")
        verbose_name_plural = _("service requests")
        indexes = [
            models.Index(
                fields=["created_at"],
                condition=Q(intake_processed_at__isnull=True),
                name="request_awaiting_intake",
            ),
            models.Index(fields=["category", "lat", "lng"], name="request_category_location"),
            # What changed since: the rollups' refresh each minute, Open311's updated_after.
            models.Index(fields=["updated_at"], name="request_updated"),
            # The nearby-duplicate lookup: sized by the open backlog, not by years of history.
            models.Index(
                fields=["category", "lat", "lng"],
                condition=Q(status__in=sorted(OPEN_STATUSES)),
                name="request_open_location",
            ),
            models.Index(fields=["status", "due_at"], name="request_status_due"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["import_source", "external_id"],
                condition=~Q(external_id=""),
                name="imported_once",
            )
        ]

    def __str__(self):
        return self.tracking_number

    def get_absolute_url(self):
        return reverse("requests_app:status", args=[self.tracking_number])

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def has_location(self) -> bool:
        return self.lat is not None and self.lng is not None

    @property
    def public_description(self) -> str:
        """The description as every public page, feed and export shows it."""
        return moderation.public_text(
            self.description,
            override=self.public_description_override,
            approved=self.description_approved,
        )

    @property
    def description_awaiting_review(self) -> bool:
        return moderation.needs_review(
            self.description,
            override=self.public_description_override,
            approved=self.description_approved,
        )

    @property
    def withdraw_url(self) -> str:
        """The reporter's signed link to take the report off the public site."""
        from .links import withdraw_url

        return withdraw_url(self.pk)

    def save(self, *args, **kwargs):
        self._number_if_new()
        return super().save(*args, **kwargs)

    def insert(self):
        """Store this new request as save() does, with one compiled INSERT (insert_new)."""
        self._number_if_new()
        return insert_new(self)

    def _number_if_new(self):
        if not self.tracking_number:
            self.tracking_number = _unused_tracking_number()

    # --- History -----------------------------------------------------------------------
    def record(self, action, *, by=None, actor="", field="", old="", new="", note="", public=False):
        # Append-only: every entry is a new row (insert_new refuses one that has an id).
        entry = HistoryEntry(
            request=self,
            action=action,
            actor=by,
            actor_label=actor or _actor_label(by),
            field=field,
            old_value="" if old is None else str(old),
            new_value="" if new is None else str(new),
            note=note,
            is_public=public,
        )
        return insert_new(entry)

    # --- State changes -----------------------------------------------------------------
    def change_status(self, new_status, *, by=None, note="", close_reason="", actor=""):
        """Move to `new_status`, refusing transitions the lifecycle does not allow.

        The update is conditional on the status we read, so two staff members acting at
        once cannot both win: the second gets ConcurrentChange and changes nothing.
        """
        new_status = Status(new_status)
        old_status = Status(self.status)
        if new_status not in TRANSITIONS[old_status]:
            raise InvalidTransition(
                _("A request that is %(old)s cannot become %(new)s.")
                % {"old": old_status.label, "new": new_status.label}
            )
        if new_status == Status.CLOSED and not close_reason:
            raise InvalidTransition(_("Closing without a fix needs a reason."))
        if new_status == Status.RECEIVED and not note:
            raise InvalidTransition(_("Reopening a request needs a note saying why."))

        now = timezone.now()
        changes = {"status": new_status, "updated_at": now}
        if self.first_response_at is None and new_status != Status.RECEIVED:
            changes["first_response_at"] = now
        if new_status in (Status.COMPLETED, Status.CLOSED):
            changes["resolved_at"] = now
            changes["close_reason"] = close_reason if new_status == Status.CLOSED else ""
        elif new_status == Status.RECEIVED:
            changes["resolved_at"] = None
            changes["close_reason"] = ""

        from . import sla

        was_running = sla.is_running(self)
        changes.update(sla.on_status_change(self, old_status, new_status, now))
        self.status = old_status  # until the update below succeeds
        with transaction.atomic():
            updated = type(self).objects.filter(pk=self.pk, status=old_status).update(**changes)
            if not updated:
                raise ConcurrentChange(
                    _("This request was changed by someone else. Reload it and try again.")
                )
            for name, value in changes.items():
                setattr(self, name, value)
            if sla.is_running(self) != was_running:  # paused, resumed, closed or reopened
                sla.clock_set(self)
            reason_label = CloseReason(close_reason).label if close_reason else ""
            self.record(
                HistoryEntry.Action.STATUS,
                by=by,
                actor=actor,
                field="status",
                old=old_status.value,
                new=new_status.value,
                note=" — ".join(str(part) for part in (reason_label, note) if part),
                public=True,
            )
            from notifications.services import notify_status_changed

            notify_status_changed(self)
        return self

    def assign_department(self, department, *, by=None, why="", actor=""):
        old = self.department
        if old == department:
            return self
        with transaction.atomic():
            self.department = department
            type(self).objects.filter(pk=self.pk).update(
                department=department, updated_at=timezone.now()
            )
            self.record(
                HistoryEntry.Action.DEPARTMENT,
                by=by,
                actor=actor,
                field="department",
                old=old or "",
                new=department,
                note=why,
            )
        return self

    def _set(self, field, value, *, by=None, actor="", note="", action=None):
        """Change one field with a history entry; returns False when nothing changed."""
        old = getattr(self, field)
        if old == value:
            return False
        setattr(self, field, value)
        changes = {field: value, "updated_at": timezone.now()}
        rescheduled = field in ("priority", "category")
        if rescheduled:
            from . import sla

            changes.update(sla.schedule(self))  # targets depend on both
            for name, new in changes.items():
                setattr(self, name, new)
        type(self).objects.filter(pk=self.pk).update(**changes)
        if rescheduled:
            sla.clock_set(self)
        self.record(
            action or HistoryEntry.Action.FIELD,
            by=by,
            actor=actor,
            field=field,
            old="" if old is None else old,
            new="" if value is None else value,
            note=note,
        )
        return True

    def assign(self, *, crew=None, assignee=None, by=None, actor="", why=""):
        """Give the request to a crew and/or a person, and mark it assigned."""
        with transaction.atomic():
            if crew is not None:
                if self.department_id != crew.department_id:
                    self.assign_department(crew.department, by=by, actor=actor, why=why)
                if self._set(
                    "crew",
                    crew,
                    by=by,
                    actor=actor,
                    note=why,
                    action=HistoryEntry.Action.ASSIGNMENT,
                ):
                    from notifications.services import notify_crew_assigned

                    notify_crew_assigned(self, crew)
            if assignee is not None:
                self._set(
                    "assignee",
                    assignee,
                    by=by,
                    actor=actor,
                    note=why,
                    action=HistoryEntry.Action.ASSIGNMENT,
                )
            if self.status == Status.RECEIVED:
                self.change_status(Status.ASSIGNED, by=by, actor=actor)
        return self

    def forward(self, department, *, by=None, reason=""):
        """Send the request to another department: a reroute, counted for the dashboard.

        Taking a request out of the triage queue is its first routing, not a forward.
        """
        if department == self.department:
            raise ValidationError(_("The request is already with %(d)s.") % {"d": department})
        from_triage = self.department_id is None
        with transaction.atomic():
            if not from_triage:
                type(self).objects.filter(pk=self.pk).update(forward_count=F("forward_count") + 1)
                self.forward_count += 1
            self._set("crew", None, by=by, note=reason)
            self._set("assignee", None, by=by, note=reason)
            template = (
                _("Sent from the triage queue: %(reason)s")
                if from_triage
                else _("Forwarded: %(reason)s")
            )
            self.assign_department(department, by=by, why=template % {"reason": reason or "—"})
            if self.status == Status.RECEIVED:
                self.change_status(Status.ASSIGNED, by=by)
        return self

    def add_comment(self, text, *, by=None, public, author_label=""):
        with transaction.atomic():
            comment = Comment.objects.create(
                request=self,
                author=by,
                author_label=author_label or _actor_label(by),
                text=text,
                is_public=public,
            )
            self.record(
                HistoryEntry.Action.COMMENT if public else HistoryEntry.Action.NOTE,
                by=by,
                actor=author_label,
                note=text,
                public=False,  # the comment itself is what the public timeline shows
            )
            if public:
                from notifications.services import notify_public_comment

                notify_public_comment(self, comment)
        return comment

    # --- Moderation ----------------------------------------------------------------------
    def set_public(self, public: bool, *, by=None, reason, actor=""):
        """Show or hide the request on every public surface; it stays in the queue."""
        reason = _moderation_reason(reason)
        with transaction.atomic():
            return self._set(
                "is_public",
                bool(public),
                by=by,
                actor=actor,
                note=reason,
                action=HistoryEntry.Action.MODERATION,
            )

    def set_public_wording(self, text, *, by=None, reason):
        """Give the description a public wording (empty: show the original, masked)."""
        reason = _moderation_reason(reason)
        with transaction.atomic():
            return self._set(
                "public_description_override",
                (text or "").strip(),
                by=by,
                note=reason,
                action=HistoryEntry.Action.MODERATION,
            )

    def approve_description(self, *, by=None, reason):
        """Publish a description the word list held back, as written (contacts masked)."""
        reason = _moderation_reason(reason)
        with transaction.atomic():
            return self._set(
                "description_approved",
                True,
                by=by,
                note=reason,
                action=HistoryEntry.Action.MODERATION,
            )

    def withdraw_by_reporter(self) -> bool:
        """The reporter's signed link: off the public site, still in the city's queue.

        Conditional on the request being public, so a second click (or a double POST)
        writes no second history entry. Returns False when it was already hidden.
        """
        with transaction.atomic():
            updated = (
                type(self)
                .objects.filter(pk=self.pk, is_public=True)
                .update(is_public=False, updated_at=timezone.now())
            )
            self.is_public = False
            if not updated:
                return False
            self.record(
                HistoryEntry.Action.MODERATION,
                actor=WITHDRAWN_BY_REPORTER,
                field="is_public",
                old=True,
                new=False,
                note="Withdrawn by the reporter from public view (signed link in the email)",
            )
        return True

    def public_photos(self):
        mine = Q(request=self)
        if self.work_order_id:
            mine |= Q(work_order_id=self.work_order_id)
        return Photo.objects.filter(mine, is_public=True).order_by("uploaded_at")

    def public_timeline(self, *, comments=True):
        """What a resident may see: status changes and public comments, oldest first.

        comments=False skips looking for comments, for a caller that knows there are none.
        """
        entries = [
            {"at": e.at, "kind": "status", "status": Status(e.new_value), "note": e.public_note}
            for e in _PUBLIC_STATUS_CHANGES.objects(request=self.pk)
        ]
        entries += [
            {
                "at": c.created_at,
                "kind": "comment",
                "text": c.public_text,
                "author": c.author_label,
            }
            for c in (self.comments.filter(is_public=True) if comments else ())
        ]
        entries.insert(0, {"at": self.created_at, "kind": "status", "status": Status.RECEIVED})
        return sorted(entries, key=lambda entry: entry["at"])


# The tracking-number check of every new request: compiled once (see compiled.py).
_TRACKING_NUMBER_TAKEN = CompiledQuery(
    lambda number: ServiceRequest.objects.filter(tracking_number=number).values_list("pk")[:1],
    number=("\x1fstand-in", ServiceRequest._meta.get_field("tracking_number")),
)


def _unused_tracking_number() -> str:
    # 29^8 numbers: a clash with a stored one is rare but, over millions of requests, not
    # negligible, so it is looked for first. Two new requests drawing the same number at
    # the same moment is left to the unique index. (A savepoint around the INSERT instead
    # costs two round trips on every request, not one.)
    for _attempt in range(5):
        number = new_tracking_number()
        if not _TRACKING_NUMBER_TAKEN.rows(number=number):
            return number
    raise IntegrityError("Could not allocate a unique tracking number")


def _actor_label(user):
    if user is None:
        return "System"
    return user.get_full_name() or user.get_username()


def _moderation_reason(reason) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError(_("Say why: every moderation change needs a reason."))
    return reason


class ServiceAttribute(models.Model):
    """A per-category question (Open311 service definition attribute), asked on the
    portal's report form and accepted through the API."""

    class Datatype(models.TextChoices):
        STRING = "string", _("Short text")
        NUMBER = "number", _("Number")
        DATETIME = "datetime", _("Date and time")
        TEXT = "text", _("Long text")
        SINGLE = "singlevaluelist", _("Choose one")
        MULTI = "multivaluelist", _("Choose any")

    category = models.ForeignKey(
        ServiceCategory, on_delete=models.CASCADE, related_name="attributes"
    )
    code = models.SlugField(_("code"), max_length=50)
    description = models.CharField(_("question"), max_length=300)
    description_es = models.CharField(
        _("question in Spanish"), max_length=300, blank=True, help_text=TRANSLATION_HELP
    )
    datatype = models.CharField(_("answer type"), max_length=16, choices=Datatype.choices)
    datatype_description = models.CharField(_("answer hint"), max_length=200, blank=True)
    datatype_description_es = models.CharField(
        _("answer hint in Spanish"), max_length=200, blank=True, help_text=TRANSLATION_HELP
    )
    required = models.BooleanField(_("required"), default=False)
    variable = models.BooleanField(
        _("asks the reporter"),
        default=True,
        help_text=_("Off for informational text that needs no answer."),
    )
    order = models.PositiveSmallIntegerField(_("order"), default=1)
    # [{"key": "small", "name": "Smaller than a plate", "name_es": "Más pequeño que un
    # plato"}, ...] for the list datatypes; "name_<language>" as in_language reads columns.
    values = models.JSONField(_("choices"), default=list, blank=True)

    class Meta:
        ordering = ["category", "order", "pk"]
        constraints = [
            models.UniqueConstraint(fields=["category", "code"], name="attribute_code_per_category")
        ]
        verbose_name = _("question")
        verbose_name_plural = _("questions")

    def __str__(self):
        return f"{self.category}: {self.description}"

    @property
    def display_question(self) -> str:
        return in_language(self, "description")

    @property
    def display_hint(self) -> str:
        return in_language(self, "datatype_description")

    def _choices(self) -> list[dict]:
        """A list question's choices that have a key (values is edited as free JSON)."""
        choices = self.values if isinstance(self.values, list) else []
        return [c for c in choices if isinstance(c, dict) and c.get("key") is not None]

    def display_choices(self) -> list[tuple[str, str]]:
        """(key, name) of a list question's choices, named in the active language."""
        return [
            (str(c["key"]), str(c.get(f"name_{_language()}") or c.get("name") or c["key"]))
            for c in self._choices()
        ]

    def answer_value(self, values: list[str]):
        """What is stored for the reporter's answer `values` (each as typed): the chosen
        keys of a multivaluelist, in order and without repeats; otherwise the one value,
        trimmed, a date-time rewritten as a W3C one on the city's clock. Raises ValueError
        saying, in English for API clients, what is wrong with it."""
        from decimal import InvalidOperation

        # Imported here: open311 imports this module. Its date-time reading is the one the
        # API applies to every date-time it is given.
        from .open311 import MAX_DESCRIPTION, Open311Error, parse_datetime, w3c

        Datatype = self.Datatype
        if any("\x00" in v for v in values):
            raise ValueError("must not contain null characters.")
        values = [v.strip() for v in values]
        if self.datatype == Datatype.MULTI:
            keys = self.choice_names().keys()
            unknown = [v for v in values if v not in keys]
            if unknown:
                raise ValueError(f"has no choice {unknown[0]!r}.")
            return list(dict.fromkeys(values))
        if len(values) > 1:
            raise ValueError("takes one value.")
        value = values[0]
        if self.datatype == Datatype.SINGLE:
            if value not in self.choice_names():
                raise ValueError(f"has no choice {value!r}.")
        elif self.datatype == Datatype.NUMBER:
            try:
                if not Decimal(value).is_finite():
                    raise InvalidOperation
            except InvalidOperation:
                raise ValueError("must be a number.") from None
        elif self.datatype == Datatype.DATETIME:
            try:
                value = w3c(parse_datetime(value, "it"))
            except Open311Error:
                raise ValueError("must be a W3C date-time.") from None
        limit = 255 if self.datatype == Datatype.STRING else MAX_DESCRIPTION
        if len(value) > limit:
            raise ValueError(f"must be at most {limit} characters long.")
        return value

    def choice_names(self) -> dict[str, str]:
        """{key: name} of a list question's choices (the key where a choice has no name)."""
        return {str(c["key"]): str(c.get("name") or c["key"]) for c in self._choices()}

    def answer_text(self, value) -> str:
        """A stored answer as staff read it: choices by their names, all of a multivaluelist's
        in the order chosen."""
        if self.datatype not in (self.Datatype.SINGLE, self.Datatype.MULTI):
            return str(value)
        names = self.choice_names()
        keys = value if isinstance(value, list) else [value]
        # A choice removed since the answer was given still shows, by its key.
        return ", ".join(names.get(str(key), str(key)) for key in keys)


class AttributeAnswer(models.Model):
    request = models.ForeignKey(ServiceRequest, on_delete=models.PROTECT, related_name="answers")
    attribute = models.ForeignKey(ServiceAttribute, on_delete=models.PROTECT, related_name="+")
    # A JSON list for multivaluelist, a string otherwise.
    value = models.JSONField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["request", "attribute"], name="one_answer_per_question")
        ]

    def __str__(self):
        return f"{self.attribute.code}={self.value}"


class ApiClient(models.Model):
    """An Open311 client (a resident app, another city system) with its own key."""

    name = models.CharField(_("name"), max_length=100)
    contact_email = models.EmailField(_("contact"), blank=True)
    key_prefix = models.CharField(max_length=12, unique=True, editable=False)
    key_hash = models.CharField(max_length=128, editable=False)
    requests_per_minute = models.PositiveIntegerField(_("requests per minute"), default=60)
    is_active = models.BooleanField(_("active"), default=True)
    created_at = models.DateTimeField(default=timezone.now)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("API client")
        verbose_name_plural = _("API clients")

    def __str__(self):
        return self.name


class ExportJob(models.Model):
    """A large export, written by the worker while the requester watches its progress."""

    class Format(models.TextChoices):
        CSV = "csv", "CSV"
        GEOJSON = "geojson", "GeoJSON"

    class Status(models.TextChoices):
        PENDING = "pending", _("Waiting")
        RUNNING = "running", _("Running")
        DONE = "done", _("Ready")
        FAILED = "failed", _("Failed")

    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="export_jobs"
    )
    format = models.CharField(max_length=10, choices=Format.choices, default=Format.CSV)
    filters = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    rows_total = models.PositiveIntegerField(null=True, blank=True)
    rows_done = models.PositiveIntegerField(default=0)
    file = models.FileField(upload_to="exports/%Y/%m/", blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = _("export")
        verbose_name_plural = _("exports")

    def __str__(self):
        return f"{self.get_format_display()} export {self.pk} ({self.get_status_display()})"


class Follower(models.Model):
    """Someone who is emailed about a request: its reporter, reporters of grouped
    duplicates, and residents who chose "this is my problem — follow it"."""

    class Source(models.TextChoices):
        REPORTER = "reporter", _("Reporter")
        FOLLOW = "follow", _("Chose to follow")
        DUPLICATE = "duplicate", _("Reported a duplicate")

    request = models.ForeignKey(ServiceRequest, on_delete=models.PROTECT, related_name="followers")
    email = models.EmailField(_("email"))
    language = models.CharField(_("language"), max_length=8, default="en")
    source = models.CharField(_("why"), max_length=10, choices=Source.choices)
    created_at = models.DateTimeField(default=timezone.now)
    unsubscribed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["request", "email"], name="follower_once_per_request")
        ]
        verbose_name = _("follower")
        verbose_name_plural = _("followers")

    def __str__(self):
        return f"{self.email} → {self.request}"


class EscalationClock(models.Model):
    """How far up its SLA ladder a request is, and when the sweep takes the next rung.

    Kept apart from the request: every rung the sweep takes rewrites this row, and this
    narrow table has two small indexes where the request row has about twenty, all of
    which a rewrite of the request would touch (see sla.sla_sweep). `next_at` is empty
    while the clock is stopped: paused, closed, or at the top of the ladder.
    """

    request = models.OneToOneField(
        ServiceRequest,
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="escalation_clock",
    )
    level = models.PositiveSmallIntegerField(_("escalation steps taken"), default=0)
    next_at = models.DateTimeField(_("next escalation step"), null=True, blank=True)

    class Meta:
        verbose_name = _("escalation clock")
        verbose_name_plural = _("escalation clocks")
        indexes = [
            models.Index(
                fields=["next_at"],
                condition=Q(next_at__isnull=False),
                name="escalation_clock_due",
            )
        ]

    def __str__(self):
        return f"{self.request_id}: {self.level}"


class HistoryEntry(models.Model):
    """Append-only: the database itself refuses UPDATE and DELETE (see history_guard)."""

    class Action(models.TextChoices):
        CREATED = "created", _("Created")
        STATUS = "status", _("Status changed")
        DEPARTMENT = "department", _("Department changed")
        FIELD = "field", _("Field changed")
        COMMENT = "comment", _("Public comment")
        NOTE = "note", _("Internal note")
        PHOTO = "photo", _("Photo added")
        ROUTING = "routing", _("Routing")
        ASSIGNMENT = "assignment", _("Assignment")
        WORK_ORDER = "work_order", _("Work order")
        DUPLICATE = "duplicate", _("Duplicate grouping")
        FOLLOW = "follow", _("Follower added")
        SLA = "sla", _("Service level")
        MODERATION = "moderation", _("Moderation")

    request = models.ForeignKey(ServiceRequest, on_delete=models.PROTECT, related_name="history")
    at = models.DateTimeField(default=timezone.now)
    # Indexed in Meta, for the entries that have one.
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
    )
    actor_label = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=12, choices=Action.choices)
    field = models.CharField(max_length=50, blank=True)
    old_value = models.TextField(blank=True)
    new_value = models.TextField(blank=True)
    note = models.TextField(blank=True)
    is_public = models.BooleanField(default=False)

    class Meta:
        db_table = "requests_app_history"
        ordering = ["at", "pk"]
        verbose_name = _("history entry")
        verbose_name_plural = _("history")
        indexes = [
            # Most entries are written by the system (the SLA sweep, routing, residents),
            # with no actor: they need no entry here. Looking up a user's entries (and
            # the check before a user is deleted) implies a user, so this serves them.
            models.Index(
                fields=["actor"], condition=Q(actor__isnull=False), name="history_by_actor"
            ),
        ]

    def __str__(self):
        return f"{timezone.localtime(self.at):%Y-%m-%d %H:%M} {self.get_action_display()}"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise ValidationError("History entries cannot be changed.")
        return super().save(*args, **kwargs)

    @property
    def public_note(self) -> str:
        """A public status note as residents see it (staff wrote it: no word list)."""
        return moderation.public_text(self.note, review=False)


# The status page's timeline, for every visitor: compiled once (see compiled.py).
_PUBLIC_STATUS_CHANGES = CompiledQuery(
    lambda request: HistoryEntry.objects.filter(
        request=request, is_public=True, action=HistoryEntry.Action.STATUS
    ).only("at", "new_value", "note"),
    request=(-31_101, HistoryEntry._meta.get_field("request")),
)


class Comment(models.Model):
    request = models.ForeignKey(ServiceRequest, on_delete=models.PROTECT, related_name="comments")
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    author_label = models.CharField(max_length=150, blank=True)
    text = models.TextField(_("text"))
    is_public = models.BooleanField(
        _("public"), help_text=_("Public comments are shown to residents; notes stay internal.")
    )
    created_at = models.DateTimeField(default=timezone.now)
    # Moderation, as for a request's description: the text is kept as written.
    public_text_override = models.TextField(
        _("public wording"),
        blank=True,
        db_default="",
        help_text=_("Shown to the public instead of the text, which is kept as written."),
    )
    text_approved = models.BooleanField(
        _("approved for the public"), default=False, db_default=False
    )

    class Meta:
        ordering = ["created_at"]
        verbose_name = _("comment")
        verbose_name_plural = _("comments and notes")

    def __str__(self):
        return self.text[:60]

    @property
    def by_resident(self) -> bool:
        # Staff comments carry their author; residents' (emailed replies) have none.
        return self.author_id is None

    @property
    def public_text(self) -> str:
        return moderation.public_text(
            self.text,
            override=self.public_text_override,
            approved=self.text_approved,
            review=self.by_resident,
            kind="comment",
        )

    @property
    def awaiting_review(self) -> bool:
        return (
            self.is_public
            and self.by_resident
            and moderation.needs_review(
                self.text, override=self.public_text_override, approved=self.text_approved
            )
        )

    def _moderate(self, field, value, *, by, reason):
        reason = _moderation_reason(reason)
        old = getattr(self, field)
        if old == value:
            return False
        with transaction.atomic():
            type(self).objects.filter(pk=self.pk).update(**{field: value})
            setattr(self, field, value)
            self.request.record(
                HistoryEntry.Action.MODERATION,
                by=by,
                field=f"comment {self.pk} {field}",
                old=old,
                new=value,
                note=reason,
            )
        return True

    def set_public_wording(self, text, *, by=None, reason):
        return self._moderate("public_text_override", (text or "").strip(), by=by, reason=reason)

    def approve(self, *, by=None, reason):
        return self._moderate("text_approved", True, by=by, reason=reason)


def _photo_path(photo, filename):
    return f"photos/{photo.uploaded_at:%Y/%m}/{filename}"


class PhotoQuerySet(models.QuerySet):
    def awaiting_approval(self):
        """Residents' photos held back on upload (see Photo.starts_public) that no one has
        looked at yet; photos staff hid on purpose have a reviewed_at."""
        return self.filter(is_public=False, reviewed_at__isnull=True, kind=Photo.Kind.CITIZEN)


class Photo(models.Model):
    class Kind(models.TextChoices):
        CITIZEN = "citizen", _("Resident's photo")
        BEFORE = "before", _("Before work")
        AFTER = "after", _("After work")

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # A resident's photo belongs to their request; a crew's before/after photo to the work
    # order, and so to every request grouped under it.
    request = models.ForeignKey(
        ServiceRequest, on_delete=models.PROTECT, null=True, blank=True, related_name="photos"
    )
    work_order = models.ForeignKey(
        "WorkOrder", on_delete=models.PROTECT, null=True, blank=True, related_name="photos"
    )
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.CITIZEN)
    image = models.ImageField(upload_to=_photo_path, width_field="width", height_field="height")
    thumbnail = models.ImageField(upload_to=_photo_path)
    width = models.PositiveIntegerField(default=0)
    height = models.PositiveIntegerField(default=0)
    is_public = models.BooleanField(_("shown to the public"), default=True)
    uploaded_at = models.DateTimeField(default=timezone.now)
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    # When staff last showed or hid it: a hidden photo without one is still waiting.
    reviewed_at = models.DateTimeField(_("reviewed"), null=True, blank=True, editable=False)

    objects = PhotoQuerySet.as_manager()

    class Meta:
        ordering = ["uploaded_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(request__isnull=False) | Q(work_order__isnull=False),
                name="photo_belongs_somewhere",
            )
        ]
        verbose_name = _("photo")
        verbose_name_plural = _("photos")

    def __str__(self):
        return f"{self.get_kind_display()} {self.id}"

    def get_absolute_url(self):
        return reverse("requests_app:photo", args=[self.id, "full"])

    def get_thumbnail_url(self):
        return reverse("requests_app:photo", args=[self.id, "thumb"])

    @classmethod
    def starts_public(cls, *, kind=Kind.CITIZEN, by=None) -> bool:
        """Whether a new photo is public from the start.

        With MODERATION_HOLD_PHOTOS_FROM_UNVERIFIED, a resident's photo that came in without
        a staff member (portal, email, Open311) waits until staff show it; crews' photos and
        those staff add are public at once, as before.
        """
        if kind != cls.Kind.CITIZEN or by is not None:
            return True
        return not moderation.hold_photos_from_unverified()

    @property
    def awaiting_approval(self) -> bool:
        return not self.is_public and self.reviewed_at is None and self.kind == self.Kind.CITIZEN

    def requests_concerned(self):
        """Its request, or every request of its work order."""
        if self.request_id:
            return ServiceRequest.objects.filter(pk=self.request_id)
        return ServiceRequest.objects.filter(work_order_id=self.work_order_id)

    def set_public(self, public: bool, *, by=None, reason):
        """Show (approve) or hide the photo, with a history entry on each request it shows
        on. Returns False when it already was so (it still counts as reviewed)."""
        reason = _moderation_reason(reason)
        public = bool(public)
        old = self.is_public
        now = timezone.now()
        with transaction.atomic():
            type(self).objects.filter(pk=self.pk).update(is_public=public, reviewed_at=now)
            self.is_public, self.reviewed_at = public, now
            if old == public:
                return False
            for request in self.requests_concerned():
                request.record(
                    HistoryEntry.Action.MODERATION,
                    by=by,
                    field=f"photo {str(self.pk)[:8]} is_public",
                    old=old,
                    new=public,
                    note=reason,
                )
        return True


class IntakeThrottle(models.Model):
    """Fixed-window counters for anonymous intake, kept in the database so that the limit
    still holds while Redis is down."""

    key = models.CharField(max_length=128)
    window_start = models.DateTimeField()
    hits = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["key", "window_start"], name="throttle_key_window")
        ]

    def __str__(self):
        return f"{self.key} @ {self.window_start:%Y-%m-%d %H:%M}: {self.hits}"

    @classmethod
    def hit(cls, key: str, *, limit: int, window: timedelta) -> bool:
        """Count one attempt for `key`; True while it is within `limit` per `window`."""
        now = timezone.now()
        seconds = int(window.total_seconds())
        start = now - timedelta(
            seconds=int(now.timestamp()) % seconds, microseconds=now.microsecond
        )
        # One statement on the hot path of every anonymous report: insert the window's
        # counter or add one to it (PostgreSQL and SQLite 3.35+ both speak this dialect).
        table = connection.ops.quote_name(cls._meta.db_table)
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {table} (key, window_start, hits) VALUES (%s, %s, 1) "
                f"ON CONFLICT (key, window_start) DO UPDATE SET hits = {table}.hits + 1 "
                "RETURNING hits",
                [key, connection.ops.adapt_datetimefield_value(start)],
            )
            hits = cursor.fetchone()[0]
        return hits <= limit


class StaffRole(models.TextChoices):
    DISPATCHER = "dispatcher", _("Dispatcher")
    DEPARTMENT_STAFF = "department", _("Department staff")
    CREW = "crew", _("Crew member")
    DIRECTOR = "director", _("Director")
    ADMINISTRATOR = "admin", _("Administrator")


class StaffProfile(models.Model):
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="staff_profile"
    )
    role = models.CharField(_("role"), max_length=12, choices=StaffRole.choices)
    department = models.ForeignKey(
        Department,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="staff",
        verbose_name=_("department"),
    )

    class Meta:
        verbose_name = _("staff profile")
        verbose_name_plural = _("staff profiles")

    def __str__(self):
        return f"{self.user} ({self.get_role_display()})"

    def clean(self):
        if self.role in (StaffRole.DEPARTMENT_STAFF, StaffRole.CREW) and not self.department:
            raise ValidationError(
                {"department": _("Department staff and crews need a department.")}
            )


class WorkOrderStatus(models.TextChoices):
    OPEN = "open", _("Open")
    SCHEDULED = "scheduled", _("Scheduled")
    IN_PROGRESS = "in_progress", _("In progress")
    ON_HOLD = "on_hold", _("On hold")
    COMPLETED = "completed", _("Completed")
    CANCELLED = "cancelled", _("Cancelled")


ACTIVE_WORK = {
    WorkOrderStatus.OPEN,
    WorkOrderStatus.SCHEDULED,
    WorkOrderStatus.IN_PROGRESS,
    WorkOrderStatus.ON_HOLD,
}
WORK_ORDER_TRANSITIONS = {
    WorkOrderStatus.OPEN: ACTIVE_WORK - {WorkOrderStatus.OPEN} | {WorkOrderStatus.CANCELLED},
    WorkOrderStatus.SCHEDULED: ACTIVE_WORK - {WorkOrderStatus.SCHEDULED}
    | {WorkOrderStatus.CANCELLED},
    WorkOrderStatus.IN_PROGRESS: {
        WorkOrderStatus.ON_HOLD,
        WorkOrderStatus.COMPLETED,
        WorkOrderStatus.CANCELLED,
    },
    WorkOrderStatus.ON_HOLD: {
        WorkOrderStatus.SCHEDULED,
        WorkOrderStatus.IN_PROGRESS,
        WorkOrderStatus.CANCELLED,
    },
    WorkOrderStatus.COMPLETED: set(),
    WorkOrderStatus.CANCELLED: set(),
}
# What the requests of a work order become when the order moves.
REQUEST_STATUS_FOR_WORK = {
    WorkOrderStatus.SCHEDULED: Status.SCHEDULED,
    WorkOrderStatus.IN_PROGRESS: Status.IN_PROGRESS,
    WorkOrderStatus.COMPLETED: Status.COMPLETED,
}


class WorkOrderQuerySet(models.QuerySet):
    def active(self):
        return self.filter(status__in=ACTIVE_WORK)

    def for_member(self, user):
        return self.filter(crew__members=user)


class WorkOrder(models.Model):
    """The crew's job: one or more requests fixed in one visit."""

    department = models.ForeignKey(
        Department,
        on_delete=models.PROTECT,
        related_name="work_orders",
        verbose_name=_("department"),
    )
    crew = models.ForeignKey(
        Crew,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="work_orders",
        verbose_name=_("crew"),
    )
    status = models.CharField(
        _("status"), max_length=12, choices=WorkOrderStatus.choices, default=WorkOrderStatus.OPEN
    )
    priority = models.IntegerField(_("priority"), choices=Priority.choices, default=Priority.NORMAL)
    scheduled_for = models.DateField(_("scheduled for"), null=True, blank=True)
    labour_hours = models.DecimalField(
        _("labour hours"), max_digits=7, decimal_places=2, null=True, blank=True
    )
    cost = models.DecimalField(_("cost"), max_digits=10, decimal_places=2, null=True, blank=True)
    resolution_note = models.TextField(_("resolution note"), blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    objects = WorkOrderQuerySet.as_manager()

    class Meta:
        ordering = ["-priority", "scheduled_for", "created_at"]
        verbose_name = _("work order")
        verbose_name_plural = _("work orders")
        # The dashboard's rollups look for work orders completed since their last refresh.
        indexes = [models.Index(fields=["completed_at"], name="work_order_completed")]

    def __str__(self):
        return f"WO-{self.pk}"

    @property
    def is_active(self):
        return self.status in ACTIVE_WORK

    def get_absolute_url(self):
        return reverse("crew:work_order", args=[self.pk])

    @classmethod
    def create_for(cls, requests, *, crew=None, by=None, scheduled_for=None):
        requests = list(requests)
        if not requests:
            raise ValidationError(_("A work order needs at least one request."))
        department = crew.department if crew else requests[0].department
        if department is None:
            raise ValidationError(_("Route the request to a department first."))
        with transaction.atomic():
            order = cls.objects.create(
                department=department,
                crew=crew,
                created_by=by,
                scheduled_for=scheduled_for,
                priority=max(r.priority for r in requests),
                status=WorkOrderStatus.SCHEDULED if scheduled_for else WorkOrderStatus.OPEN,
            )
            for request in requests:
                order.attach(request, by=by)
        return order

    def attach(self, request, *, by=None):
        if not self.is_active:
            raise ValidationError(
                _("%(order)s is closed; requests cannot join it.") % {"order": self}
            )
        if not request.is_open:
            raise ValidationError(_("%(request)s is no longer open.") % {"request": request})
        with transaction.atomic():
            request._set("work_order", self, by=by, action=HistoryEntry.Action.WORK_ORDER)
            if self.crew and request.crew_id != self.crew_id:
                request.assign(crew=self.crew, by=by)
            target = REQUEST_STATUS_FOR_WORK.get(self.status)
            if target and request.status != target and target in TRANSITIONS[request.status]:
                request.change_status(target, by=by)
            elif request.status == Status.RECEIVED:
                request.change_status(Status.ASSIGNED, by=by)
            # Duplicates grouped under the request come along to the same work order.
            from .grouping import group_attach_members

            group_attach_members(self, request, by=by)

    def _move(self, new_status, *, by=None, note="", **changes):
        """Conditional on the status we read: two people pressing at once cannot both win."""
        new_status = WorkOrderStatus(new_status)
        old_status = WorkOrderStatus(self.status)
        if new_status not in WORK_ORDER_TRANSITIONS[old_status]:
            raise InvalidTransition(
                _("A work order that is %(old)s cannot become %(new)s.")
                % {"old": old_status.label, "new": new_status.label}
            )
        with transaction.atomic():
            updated = (
                type(self)
                .objects.filter(pk=self.pk, status=old_status)
                .update(status=new_status, **changes)
            )
            if not updated:
                raise ConcurrentChange(
                    _("This work order was changed by someone else. Reload it and try again.")
                )
            self.status = new_status
            for name, value in changes.items():
                setattr(self, name, value)
            target = REQUEST_STATUS_FOR_WORK.get(new_status)
            for request in self.requests.select_for_update().filter(status__in=OPEN_STATUSES):
                request.record(
                    HistoryEntry.Action.WORK_ORDER,
                    by=by,
                    field="work_order_status",
                    old=old_status.label,
                    new=new_status.label,
                    note=note,
                )
                if target and request.status != target and target in TRANSITIONS[request.status]:
                    request.change_status(
                        target, by=by, note=note if target == Status.COMPLETED else ""
                    )
        return self

    def schedule(self, scheduled_for, *, crew=None, by=None):
        changes = {"scheduled_for": scheduled_for}
        if crew is not None:
            changes["crew"] = crew
        return self._move(WorkOrderStatus.SCHEDULED, by=by, **changes)

    def start(self, *, by=None):
        return self._move(WorkOrderStatus.IN_PROGRESS, by=by, started_at=timezone.now())

    def hold(self, *, by=None, note=""):
        return self._move(WorkOrderStatus.ON_HOLD, by=by, note=note)

    def cancel(self, *, by=None, note=""):
        return self._move(WorkOrderStatus.CANCELLED, by=by, note=note)

    def needs_after_photo(self) -> bool:
        return self.requests.filter(category__requires_after_photo=True).exists()

    def complete(self, note, *, by=None, labour_hours=None, cost=None):
        note = (note or "").strip()
        if not note:
            raise InvalidTransition(_("Write a resolution note before completing the work."))
        if self.needs_after_photo() and not self.photos.filter(kind=Photo.Kind.AFTER).exists():
            raise InvalidTransition(_("Add an “after” photo before completing the work."))
        changes = {"resolution_note": note, "completed_at": timezone.now()}
        if labour_hours is not None:
            changes["labour_hours"] = labour_hours
        if cost is not None:
            changes["cost"] = cost
        return self._move(WorkOrderStatus.COMPLETED, by=by, note=note, **changes)


from .rollups import *  # noqa: E402, F403
