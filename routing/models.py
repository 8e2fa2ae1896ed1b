import math
import re

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connections, models
from django.db.models import F
from django.db.models.functions import Collate
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from shapely.geometry import shape

from requests_app.models import Crew, Department, Priority, ServiceCategory


class District(models.Model):
    name = models.CharField(_("name"), max_length=100, unique=True)
    code = models.SlugField(_("code"), max_length=30, unique=True)
    # GeoJSON Polygon or MultiPolygon in WGS84 (lng, lat), as GIS tools export it.
    boundary = models.JSONField(_("boundary (GeoJSON)"))
    is_active = models.BooleanField(_("active"), default=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = _("district")
        verbose_name_plural = _("districts")

    def __str__(self):
        return self.name

    def geometry(self):
        return shape(self.boundary)

    def clean(self):
        try:
            geometry = self.geometry()
        except Exception as error:
            raise ValidationError({"boundary": _("Not a GeoJSON geometry: %s") % error}) from None
        if geometry.geom_type not in ("Polygon", "MultiPolygon"):
            raise ValidationError({"boundary": _("A district is a Polygon or MultiPolygon.")})
        if not geometry.is_valid:
            raise ValidationError({"boundary": _("The boundary crosses itself; please redraw it.")})


def _words(text):
    return [w.strip().lower() for w in (text or "").split(",") if w.strip()]


class RoutingRule(models.Model):
    """If a request matches every condition given, it goes where the rule says.

    Rules are tried in order; the first match wins. Conditions left empty match anything.
    """

    name = models.CharField(_("name"), max_length=120)
    position = models.PositiveIntegerField(_("order"), default=100, db_index=True)
    is_active = models.BooleanField(_("active"), default=True)
    categories = models.ManyToManyField(
        ServiceCategory, blank=True, related_name="routing_rules", verbose_name=_("categories")
    )
    category_groups = models.CharField(
        _("category groups"),
        max_length=300,
        blank=True,
        help_text=_("Comma-separated group names, e.g. “Water and sewer”."),
    )
    districts = models.ManyToManyField(
        District, blank=True, related_name="routing_rules", verbose_name=_("districts")
    )
    keywords = models.CharField(
        _("keywords in the description"),
        max_length=300,
        blank=True,
        help_text=_("Comma-separated; any one of them matches, e.g. “gas, flooding, injured”."),
    )
    department = models.ForeignKey(
        Department,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("route to department"),
    )
    crew = models.ForeignKey(
        Crew,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("assign to crew"),
    )
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("assign to person"),
    )
    priority = models.IntegerField(
        _("set priority"), choices=Priority.choices, null=True, blank=True
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["position", "pk"]
        verbose_name = _("routing rule")
        verbose_name_plural = _("routing rules")

    def __str__(self):
        return self.name

    def clean(self):
        if not (self.department or self.crew or self.assignee or self.priority):
            raise ValidationError(
                _("A rule must do something: a department, crew, person or priority.")
            )
        if self.crew and self.department and self.crew.department_id != self.department_id:
            raise ValidationError({"crew": _("The crew belongs to another department.")})

    def match(self, category, district, text, *, category_ids, district_ids):
        """The reasons this rule matches, or None. Ids are prefetched by the caller."""
        reasons = []
        if category_ids:
            if category.pk not in category_ids:
                return None
            reasons.append("category")
        groups = _words(self.category_groups)
        if groups:
            if category.group.lower() not in groups:
                return None
            reasons.append("category group")
        if district_ids:
            if district is None or district.pk not in district_ids:
                return None
            reasons.append("district")
        keywords = _words(self.keywords)
        if keywords:
            lowered = (text or "").lower()
            found = [k for k in keywords if re.search(rf"\b{re.escape(k)}\b", lowered)]
            if not found:
                return None
            reasons.append("keyword “%s”" % found[0])
        return reasons


class RoutingRuleChange(models.Model):
    """Who changed which rule when, and how: kept even when the rule is deleted."""

    rule = models.ForeignKey(
        RoutingRule, on_delete=models.SET_NULL, null=True, blank=True, related_name="changes"
    )
    rule_name = models.CharField(max_length=120)
    at = models.DateTimeField(default=timezone.now)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    action = models.CharField(max_length=20)
    summary = models.TextField(blank=True)

    class Meta:
        ordering = ["-at"]
        verbose_name = _("routing rule change")
        verbose_name_plural = _("routing rule changes")

    def __str__(self):
        return f"{self.rule_name} {self.action}"


METRES_PER_DEGREE = 111_320  # of latitude; of longitude times cos(latitude)


class AddressQuerySet(models.QuerySet):
    def keyed(self):
        """Annotate `key`: the normalized text under the index that serves prefix searches.

        On PostgreSQL that index is on `search_text COLLATE "C"` (made in the migration), so
        prefix ranges and their order are byte order whatever the database's collation; a
        filter on the bare column would not use it. SQLite compares bytes already.
        """
        if connections[self.db].vendor == "postgresql":
            return self.annotate(key=Collate("search_text", "C"))
        return self.annotate(key=F("search_text"))

    def with_prefix(self, prefix):
        # A range rather than LIKE: both databases answer it from the index, in order.
        return self.keyed().filter(key__gte=prefix, key__lt=prefix + "\U0010ffff")

    def within(self, lat, lng, metres):
        """A box around the point, from the (lat, lng) index; callers measure exactly."""
        dlat = metres / METRES_PER_DEGREE
        dlng = metres / (METRES_PER_DEGREE * max(math.cos(math.radians(lat)), 0.01))
        return self.filter(
            lat__gte=lat - dlat, lat__lte=lat + dlat, lng__gte=lng - dlng, lng__lte=lng + dlng
        )


class Address(models.Model):
    """One address point of the city's gazetteer, as a source (an import, the demo) gave it.

    Searched by `search_text` (see routing.gazetteer.normalize). A row is identified within
    its source by the source's id, or by its normalized text when the source has no ids;
    `import_key` holds whichever it is, so that one plain unique index lets both databases
    upsert (partial unique indexes would need an ON CONFLICT predicate the ORM cannot give).
    """

    address = models.CharField(_("address"), max_length=255)
    street = models.CharField(_("street"), max_length=200, blank=True)
    search_text = models.CharField(_("search text"), max_length=255, editable=False)
    # The street part of search_text: how a street's houses are found, and streets derived.
    street_search = models.CharField(max_length=200, blank=True, editable=False)
    lat = models.FloatField(_("latitude"))
    lng = models.FloatField(_("longitude"))
    address_id = models.CharField(_("address id"), max_length=100, blank=True)
    zipcode = models.CharField(_("ZIP code"), max_length=10, blank=True)
    source = models.CharField(_("source"), max_length=50)
    import_key = models.CharField(max_length=300, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    objects = AddressQuerySet.as_manager()

    class Meta:
        verbose_name = _("address")
        verbose_name_plural = _("addresses")
        constraints = [
            models.UniqueConstraint(
                fields=["source", "import_key"], name="routing_address_unique_in_source"
            )
        ]
        # Equality only: Meta indexes, as db_index would add a LIKE index on PostgreSQL. The
        # prefix-search index differs by database and is made in the migration.
        indexes = [
            models.Index(fields=["lat", "lng"], name="routing_address_lat_lng"),
            models.Index(fields=["street_search"], name="routing_address_street"),
            models.Index(fields=["address_id"], name="routing_address_address_id"),
        ]

    def __str__(self):
        return self.label

    @property
    def label(self):
        return self.address


class Street(models.Model):
    """A street name within a ZIP code, centred on its address points, so that typing "Elm"
    can offer "Elm Street". Derived from Address by routing.gazetteer.streets_rebuild()."""

    name = models.CharField(_("name"), max_length=200)
    search_text = models.CharField(max_length=200, editable=False)
    zipcode = models.CharField(_("ZIP code"), max_length=10, blank=True)
    lat = models.FloatField(_("latitude"))
    lng = models.FloatField(_("longitude"))
    address_count = models.PositiveIntegerField(_("addresses"), default=0)

    objects = AddressQuerySet.as_manager()

    class Meta:
        ordering = ["search_text", "zipcode"]
        verbose_name = _("street")
        verbose_name_plural = _("streets")
        constraints = [
            models.UniqueConstraint(
                fields=["search_text", "zipcode"], name="routing_street_unique_in_zipcode"
            )
        ]

    def __str__(self):
        return self.label

    @property
    def label(self):
        return self.name
