from datetime import timedelta

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

# A notification is given up only when both are true: a provider outage of hours must not
# lose email, and an address that never works must not be tried for ever.
MAX_ATTEMPTS = 8
GIVE_UP_AFTER = timedelta(hours=24)


class NotificationQuerySet(models.QuerySet):
    def due(self, now=None):
        now = now or timezone.now()
        return self.filter(status=Notification.Status.PENDING, next_attempt_at__lte=now)


class Notification(models.Model):
    """One email that must go out: written in the same transaction as its cause."""

    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        SENT = "sent", _("Sent")
        FAILED = "failed", _("Failed")

    class Kind(models.TextChoices):
        RECEIVED = "received", _("Request received")
        STATUS = "status", _("Status changed")
        COMMENT = "comment", _("Public comment")
        SURVEY = "survey", _("Satisfaction survey")
        CREW = "crew", _("Assigned to a crew (staff)")
        DIGEST = "digest", _("Daily digest (staff)")
        SLA = "sla", _("Service level (staff)")
        SIGN_IN = "sign_in", _("Sign-in link")
        NOTICE = "notice", _("Service notice")

    request = models.ForeignKey(
        "requests_app.ServiceRequest",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="notifications",
    )
    recipient = models.EmailField(_("recipient"))
    kind = models.CharField(_("kind"), max_length=20, choices=Kind.choices)
    # Which email it is within its kind (status_completed, status_closed, …).
    template = models.CharField(_("email"), max_length=50, blank=True)
    language = models.CharField(_("language"), max_length=8)
    subject = models.CharField(_("subject"), max_length=255)
    body_text = models.TextField()
    body_html = models.TextField(blank=True)
    headers = models.JSONField(default=dict, blank=True)
    # An email may be written when it is sent rather than when it is queued (the receipt:
    # writing it would slow every submission down). Until then its subject and bodies are
    # empty, and this holds what they are written from besides the request.
    render_context = models.JSONField(default=dict, blank=True)
    status = models.CharField(
        _("status"), max_length=10, choices=Status.choices, default=Status.PENDING
    )
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    last_error = models.TextField(_("last error"), blank=True)
    provider_message_id = models.CharField(max_length=255, blank=True)  # indexed in Meta
    created_at = models.DateTimeField(default=timezone.now)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)

    objects = NotificationQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name = _("notification")
        verbose_name_plural = _("notifications")
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                condition=Q(status="pending"),
                name="notification_due",
            ),
            # A provider's delivery event finds its email by the id the provider gave it
            # (an equality: no LIKE index). Emails not sent yet have none, and are left
            # out, so that queuing one — a thousand at a time by the SLA sweep — does not
            # touch this index.
            models.Index(
                fields=["provider_message_id"],
                condition=~Q(provider_message_id=""),
                name="notification_by_provider_id",
            ),
        ]

    def __str__(self):
        return f"{self.get_kind_display()} to {self.recipient}"

    @property
    def is_written(self) -> bool:
        return bool(self.body_text)

    def should_give_up(self, now=None) -> bool:
        now = now or timezone.now()
        return self.attempts >= MAX_ATTEMPTS and now - self.created_at >= GIVE_UP_AFTER

    def backoff(self) -> timedelta:
        return timedelta(seconds=min(30 * 2 ** max(self.attempts - 1, 0), 3600))


class SuppressedAddress(models.Model):
    """An address we must not email: it bounced, complained, or the provider refused it.

    Addresses are stored lower-cased; delete the row in the admin to allow email again.
    """

    class Reason(models.TextChoices):
        BOUNCED = "bounced", _("Bounced")
        COMPLAINED = "complained", _("Marked as spam")
        REFUSED = "refused", _("Refused by the provider")
        MANUAL = "manual", _("Added by staff")

    email = models.EmailField(_("email"), unique=True)
    reason = models.CharField(_("reason"), max_length=12, choices=Reason.choices)
    detail = models.TextField(_("detail"), blank=True)
    created_at = models.DateTimeField(_("since"), default=timezone.now)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = _("undeliverable address")
        verbose_name_plural = _("undeliverable addresses")

    def __str__(self):
        return f"{self.email} ({self.get_reason_display()})"

    def save(self, *args, **kwargs):
        self.email = self.email.strip().lower()
        super().save(*args, **kwargs)

    @classmethod
    def is_suppressed(cls, email: str) -> bool:
        return cls.objects.filter(email=email.strip().lower()).exists()

    @classmethod
    def suppress(cls, email: str, reason, detail: str = ""):
        row, _created = cls.objects.get_or_create(
            email=email.strip().lower(), defaults={"reason": reason, "detail": detail[:2000]}
        )
        return row


class DigestRun(models.Model):
    """Claims one department's daily digest: the unique row is what stops a second beat."""

    department = models.ForeignKey(
        "requests_app.Department", on_delete=models.CASCADE, related_name="+"
    )
    date = models.DateField()
    created_at = models.DateTimeField(default=timezone.now)
    new_count = models.PositiveIntegerField(default=0)
    overdue_count = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["department", "date"], name="one_digest_per_day")
        ]
        verbose_name = _("daily digest")
        verbose_name_plural = _("daily digests")

    def __str__(self):
        return f"{self.department} {self.date}"


class InboundEmail(models.Model):
    """One email received through the provider's inbound webhook, once.

    Providers retry webhooks; the unique Message-ID makes a redelivery a no-op.
    """

    class Outcome(models.TextChoices):
        NEW_REQUEST = "new_request", _("New request")
        COMMENT = "comment", _("Comment on a request")
        NOTE = "note", _("Internal note on a request")
        IGNORED = "ignored", _("Ignored")

    message_id = models.CharField(max_length=255, unique=True)
    sender = models.EmailField(_("from"), blank=True)
    subject = models.CharField(_("subject"), max_length=255, blank=True)
    received_at = models.DateTimeField(default=timezone.now)
    outcome = models.CharField(_("outcome"), max_length=12, choices=Outcome.choices)
    detail = models.CharField(_("detail"), max_length=255, blank=True)
    request = models.ForeignKey(
        "requests_app.ServiceRequest",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
    )

    class Meta:
        ordering = ["-received_at"]
        verbose_name = _("inbound email")
        verbose_name_plural = _("inbound emails")

    def __str__(self):
        return f"{self.sender}: {self.subject}"


class ServiceNoticeQuerySet(models.QuerySet):
    def current(self, now=None):
        now = now or timezone.now()
        return self.filter(starts_at__lte=now).filter(Q(ends_at__isnull=True) | Q(ends_at__gt=now))


class ServiceNotice(models.Model):
    """A known problem or planned work shown to residents near it, e.g. "Water main work
    on Elm St until Friday: no need to report low pressure"."""

    title = models.CharField(_("title"), max_length=150)
    message = models.TextField(_("message"))
    area = models.JSONField(
        _("area (GeoJSON)"),
        null=True,
        blank=True,
        help_text=_("A GeoJSON Polygon or MultiPolygon (lng, lat). Or give a point and radius."),
    )
    center_lat = models.FloatField(_("centre latitude"), null=True, blank=True)
    center_lng = models.FloatField(_("centre longitude"), null=True, blank=True)
    radius_m = models.PositiveIntegerField(_("radius (m)"), null=True, blank=True)
    categories = models.ManyToManyField(
        "requests_app.ServiceCategory",
        blank=True,
        related_name="+",
        verbose_name=_("categories"),
        help_text=_("Leave empty to show it for every category."),
    )
    starts_at = models.DateTimeField(_("shown from"), default=timezone.now)
    ends_at = models.DateTimeField(_("shown until"), null=True, blank=True)
    email_residents = models.BooleanField(
        _("may be emailed to residents"),
        default=False,
        help_text=_(
            "Allows the action “Email this notice to residents with open requests in its "
            "area”: their reporters and followers get it once."
        ),
    )
    created_at = models.DateTimeField(default=timezone.now)

    objects = ServiceNoticeQuerySet.as_manager()

    class Meta:
        ordering = ["-starts_at"]
        indexes = [models.Index(fields=["starts_at", "ends_at"], name="notice_window")]
        verbose_name = _("service notice")
        verbose_name_plural = _("service notices")

    def __str__(self):
        return self.title

    def clean(self):
        point = (self.center_lat, self.center_lng, self.radius_m)
        if self.area is None and None in point:
            raise ValidationError(_("Give an area, or a centre point and a radius."))
        if self.area is not None:
            from shapely.geometry import shape

            try:
                geometry = shape(self.area)
            except Exception as error:
                raise ValidationError({"area": _("Not a GeoJSON geometry: %s") % error}) from None
            if geometry.geom_type not in ("Polygon", "MultiPolygon") or not geometry.is_valid:
                raise ValidationError({"area": _("The area must be a valid (Multi)Polygon.")})
        if self.ends_at and self.ends_at <= self.starts_at:
            raise ValidationError({"ends_at": _("The notice must end after it starts.")})


class NoticeEmail(models.Model):
    """One address a service notice was emailed to: the unique row is what stops a second
    run (or a second admin pressing at once) from emailing anyone twice."""

    notice = models.ForeignKey(ServiceNotice, on_delete=models.CASCADE, related_name="emails")
    # Lower-cased.
    email = models.EmailField(_("email"))
    notification = models.ForeignKey(
        Notification, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["notice", "email"], name="notice_emailed_once")
        ]
        verbose_name = _("notice email")
        verbose_name_plural = _("notice emails")

    def __str__(self):
        return f"{self.notice} → {self.email}"


class ResidentSignInLink(models.Model):
    """A one-time link emailed to a resident to see "My requests".

    Only a hash of the link's secret is stored, so the table (or a backup of it) does not
    let anyone sign in.
    """

    # Lower-cased.
    email = models.EmailField(_("email"))
    token_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(db_index=True)
    used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("sign-in link")
        verbose_name_plural = _("sign-in links")

    def __str__(self):
        return f"{self.email} until {self.expires_at:%Y-%m-%d %H:%M}"

    def is_expired(self, now=None) -> bool:
        return self.expires_at <= (now or timezone.now())

    def use(self, now=None) -> bool:
        """Spend the link; False when it was already used or has expired.

        Conditional on the row still being unused, so two clicks at once sign in once.
        """
        now = now or timezone.now()
        used = (
            type(self)
            .objects.filter(pk=self.pk, used_at__isnull=True, expires_at__gt=now)
            .update(used_at=now)
        )
        if used:
            self.used_at = now
        return bool(used)
