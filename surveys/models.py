from django.conf import settings
from django.db import models
from django.db.models import Avg, Count, Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class SurveyQuerySet(models.QuerySet):
    def answered(self):
        return self.filter(answered_at__isnull=False)

    def summary(self) -> dict:
        """Figures for the dashboard: answers, average rating, share fixed, per rating."""
        answered = self.answered()
        figures = answered.aggregate(
            answers=Count("pk"),
            average_rating=Avg("rating"),
            rated=Count("pk", filter=Q(rating__isnull=False)),
            fixed=Count("pk", filter=Q(is_fixed=True)),
            not_fixed=Count("pk", filter=Q(is_fixed=False)),
        )
        judged = figures["fixed"] + figures["not_fixed"]
        figures["fixed_pct"] = round(100 * figures["fixed"] / judged, 1) if judged else None
        figures["sent"] = self.filter(notification__isnull=False).count()
        figures["by_rating"] = {
            row["rating"]: row["count"]
            for row in answered.filter(rating__isnull=False)
            .values("rating")
            .annotate(count=Count("pk"))
            .order_by("rating")
        }
        return figures


class Survey(models.Model):
    """The one satisfaction survey of a completed request. Creating the row claims it:
    the unique request is what keeps two beats from surveying a resident twice."""

    request = models.OneToOneField(
        "requests_app.ServiceRequest", on_delete=models.PROTECT, related_name="survey"
    )
    recipient = models.EmailField(_("sent to"), blank=True)
    language = models.CharField(max_length=8, default="en")
    created_at = models.DateTimeField(default=timezone.now)
    notification = models.ForeignKey(
        "notifications.Notification",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    rating = models.PositiveSmallIntegerField(_("rating"), null=True, blank=True)
    is_fixed = models.BooleanField(_("fixed"), null=True, blank=True)
    comment = models.TextField(_("comment"), blank=True)
    answered_at = models.DateTimeField(_("answered"), null=True, blank=True)
    answer_count = models.PositiveSmallIntegerField(default=0)

    objects = SurveyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(rating__isnull=True) | Q(rating__gte=1, rating__lte=5),
                name="survey_rating_1_to_5",
            )
        ]
        verbose_name = _("survey")
        verbose_name_plural = _("surveys")
        # The dashboard's rollups look for surveys answered since their last refresh.
        indexes = [models.Index(fields=["answered_at"], name="survey_answered")]

    def __str__(self):
        return f"Survey of {self.request}"

    @property
    def needs_review(self) -> bool:
        return (self.rating is not None and self.rating <= 2) or self.is_fixed is False


class ReviewTaskQuerySet(models.QuerySet):
    def open(self):
        return self.filter(closed_at__isnull=True)


class ReviewTask(models.Model):
    """A poor rating or "not fixed" for a manager to look into."""

    survey = models.OneToOneField(Survey, on_delete=models.PROTECT, related_name="review")
    request = models.ForeignKey(
        "requests_app.ServiceRequest", on_delete=models.PROTECT, related_name="+"
    )
    rating = models.PositiveSmallIntegerField(_("rating"), null=True, blank=True)
    is_fixed = models.BooleanField(_("fixed"), null=True, blank=True)
    comment = models.TextField(_("resident's comment"), blank=True)
    created_at = models.DateTimeField(_("opened"), default=timezone.now)
    closed_at = models.DateTimeField(_("closed"), null=True, blank=True)
    closed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    outcome = models.TextField(_("what was done"), blank=True)

    objects = ReviewTaskQuerySet.as_manager()

    class Meta:
        ordering = ["closed_at", "-created_at"]
        indexes = [
            models.Index(
                fields=["created_at"], condition=Q(closed_at__isnull=True), name="review_open"
            )
        ]
        verbose_name = _("review task")
        verbose_name_plural = _("review tasks")

    def __str__(self):
        return f"Review of {self.request}"
