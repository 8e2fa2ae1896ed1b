from itertools import groupby

from django import forms
from django.conf import settings
from django.core.exceptions import NON_FIELD_ERRORS
from django.utils.choices import CallableChoiceIterator
from django.utils.translation import gettext_lazy as _

from . import service_area
from .category_cache import active_categories, active_category
from .models import ServiceAttribute, ServiceCategory, ServiceRequest
from .open311 import MAX_DESCRIPTION
from .photos import PhotoRejected, process_photo
from .tracking import normalize_tracking_number


class MultiplePhotoInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultiplePhotoField(forms.FileField):
    widget = MultiplePhotoInput

    def clean(self, data, initial=None):
        files = data if isinstance(data, list | tuple) else ([data] if data else [])
        return [super(MultiplePhotoField, self).clean(f, initial) for f in files]


def category_groups(categories) -> list[tuple[str, list]]:
    """[(group name, its categories)] of categories listed by group, the group named in
    the reader's language. Grouped by the group the city lists them by, so that a Spanish
    group name left empty or spelled otherwise on one category cannot split its group."""
    groups = []
    for _group, members in groupby(categories, key=lambda c: c.group):
        members = list(members)
        translated = (m.display_group for m in members if m.display_group != m.group)
        groups.append((next(translated, members[0].group), members))
    return groups


def grouped_category_choices():
    """Categories in <optgroup>s by their group, as residents look for them."""
    return [("", _("Choose what the problem is"))] + [
        (group, [(c.pk, c.display_name) for c in members])
        for group, members in category_groups(active_categories())
    ]


class ActiveCategoryField(forms.ModelChoiceField):
    """A category chosen by a resident, read from the per-process cache (category_cache)."""

    def to_python(self, value):
        if value in self.empty_values:
            return None
        try:
            category = active_category(int(value))
        except (TypeError, ValueError):
            category = None
        if category is None:
            raise forms.ValidationError(
                self.error_messages["invalid_choice"],
                code="invalid_choice",
                params={"value": value},
            )
        return category


# --- A category's own questions (its ServiceAttributes) ---------------------------------------

Datatype = ServiceAttribute.Datatype

# The checks Open311 shares (ServiceAttribute.answer_value) say what is wrong in English,
# for API clients; a resident is told in their own language.
ANSWER_PROBLEMS = {
    Datatype.NUMBER: _("Please give a number, e.g. 3 or 2.5."),
    Datatype.DATETIME: _("Please give a date and time, e.g. 2026-05-31 14:30."),
}


class DateTimeLocalInput(forms.DateTimeInput):
    input_type = "datetime-local"


def questions_of_active_categories() -> list:
    """[(category, questions)] for every active category that has any, in the order of
    the category list: what the report form shows (all of them, for the resident without
    JavaScript who may still change the category)."""
    return [
        (category, list(category.attributes.all()))
        for category in active_categories()
        if category.attributes.all()
    ]


def question_field_name(attribute) -> str:
    # The category's id in the name: every category's questions share the page without
    # JavaScript, and their codes are only unique within their category.
    return f"q{attribute.category_id}-{attribute.code}"


def question_field(attribute) -> forms.Field:
    """The form field that asks `attribute`, shaped by its datatype. The answer itself is
    checked and stored as the Open311 API does (ReportForm.clean_answers)."""
    options = {
        "label": attribute.display_question,
        "help_text": attribute.display_hint,
        "required": attribute.required,
        "error_messages": {"required": _("Please answer this question.")},
    }
    choices = attribute.display_choices()
    datatype = attribute.datatype
    if datatype == Datatype.SINGLE:
        return forms.ChoiceField(choices=choices, widget=forms.RadioSelect, **options)
    if datatype == Datatype.MULTI:
        return forms.MultipleChoiceField(
            choices=choices, widget=forms.CheckboxSelectMultiple, **options
        )
    if datatype == Datatype.NUMBER:
        # Text with a number pad rather than type=number, which hands the server an empty
        # value for anything it cannot parse: the resident would lose what they typed.
        widget = forms.TextInput(attrs={"inputmode": "decimal"})
        return forms.CharField(max_length=50, widget=widget, **options)
    if datatype == Datatype.DATETIME:
        return forms.CharField(max_length=50, widget=DateTimeLocalInput, **options)
    if datatype == Datatype.TEXT:
        widget = forms.Textarea(attrs={"rows": 3})
        return forms.CharField(max_length=MAX_DESCRIPTION, widget=widget, **options)
    return forms.CharField(max_length=255, **options)


class LocationFormMixin:
    """lat/lng from the map (optional) and an address, checked against the service area."""

    def clean_location(self, cleaned):
        lat, lng = cleaned.get("lat"), cleaned.get("lng")
        if (lat is None) != (lng is None):
            self.add_error("address", _("The map position was incomplete; please pick it again."))
            return
        if lat is not None and not service_area.contains(lat, lng):
            self.add_error(
                "address",
                _(
                    "That place is outside the area %(city)s serves. Please choose a location "
                    "inside the city."
                )
                % {"city": settings.CITY_NAME},
            )


class ReportForm(LocationFormMixin, forms.Form):
    category = ActiveCategoryField(
        queryset=ServiceCategory.objects.active(),
        label=_("What is the problem?"),
    )
    description = forms.CharField(
        label=_("Describe it"),
        max_length=4000,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text=_("What and where exactly, e.g. “Deep pothole in the bike lane by no. 12”."),
    )
    address = forms.CharField(
        label=_("Address or place"),
        max_length=255,
        required=False,
        help_text=_("Type an address, or pick the spot on the map."),
    )
    lat = forms.FloatField(required=False, widget=forms.HiddenInput, min_value=-90, max_value=90)
    lng = forms.FloatField(required=False, widget=forms.HiddenInput, min_value=-180, max_value=180)
    photos = MultiplePhotoField(
        label=_("Photos"),
        required=False,
        widget=MultiplePhotoInput(attrs={"accept": "image/jpeg,image/png,image/webp,image/heic"}),
        help_text=_("Up to 5 photos, 10 MB each (JPEG, PNG, WebP or HEIC)."),
    )
    name = forms.CharField(label=_("Your name"), max_length=120, required=False)
    email = forms.EmailField(
        label=_("Your email"),
        required=False,
        help_text=_("To send you the tracking number and updates."),
    )
    phone = forms.CharField(label=_("Your phone"), max_length=40, required=False)
    # Hidden from people by CSS and aria; bots that fill every field give themselves away.
    website = forms.CharField(required=False, label=_("Leave this field empty"))

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Built when the form is rendered, not on every POST that is valid.
        self.fields["category"].widget.choices = CallableChoiceIterator(grouped_category_choices)
        self.processed_photos = []
        self.located_by_photo = False
        # The chosen category's questions are fields of this form, checked with the rest;
        # the other categories' are only shown (question_groups).
        self.questions = {}
        if self.is_bound:
            for attribute in self._chosen_category_questions():
                name = question_field_name(attribute)
                self.fields[name] = question_field(attribute)
                self.questions[name] = attribute
        self.answers = {}

    def _chosen_category_questions(self):
        try:
            category = active_category(int(self.data.get("category")))
        except (TypeError, ValueError):
            return []
        if category is None:
            return []
        # Loaded with the category by the per-process cache: asking them costs no query.
        return [a for a in category.attributes.all() if a.variable]

    def clean_photos(self):
        files = self.cleaned_data.get("photos") or []
        if len(files) > settings.PHOTOS_PER_REPORT:
            raise forms.ValidationError(
                _("Please attach at most %(max)d photos; you chose %(count)d.")
                % {"max": settings.PHOTOS_PER_REPORT, "count": len(files)}
            )
        errors = []
        for upload in files:
            try:
                self.processed_photos.append(process_photo(upload))
            except PhotoRejected as rejected:
                errors.append(rejected.message)
        if errors:
            raise forms.ValidationError(
                [*errors, _("Your other answers are kept; please choose the photos again.")]
            )
        return files

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("website"):
            raise forms.ValidationError(_("Your report could not be accepted."), code="honeypot")
        if cleaned.get("lat") is None and cleaned.get("lng") is None:
            # No pin: a photo's GPS position is the next best thing. A photo taken elsewhere
            # (or with a wrong clock/GPS) is only a bad guess, never a reason to refuse the
            # report, so positions outside the area are passed over, not reported as errors.
            for photo in self.processed_photos:
                if photo.gps and service_area.contains(*photo.gps):
                    cleaned["lat"], cleaned["lng"] = photo.gps
                    self.located_by_photo = True
                    # Keep the position if the form is shown again (e.g. the nearby step),
                    # where the photo itself is not resent.
                    self.data = self.data.copy()
                    self.data["lat"], self.data["lng"] = (f"{v:.6f}" for v in photo.gps)
                    break
        self.clean_location(cleaned)
        if cleaned.get("lat") is None and not cleaned.get("address", "").strip():
            self.add_error(
                "address", _("Please tell us where: type an address or pick the spot on the map.")
            )
        self.clean_answers(cleaned)
        return cleaned

    @property
    def filled_the_honeypot(self):
        return self.has_error(NON_FIELD_ERRORS, "honeypot")

    def clean_answers(self, cleaned):
        """The answers to the chosen category's questions, checked and written as the
        Open311 API does (ServiceAttribute.answer_value), in self.answers: {question:
        value}."""
        for name, attribute in self.questions.items():
            value = cleaned.get(name)
            values = value if isinstance(value, list) else [value] if value else []
            if not values:
                continue
            try:
                self.answers[attribute] = attribute.answer_value(values)
            except ValueError:
                self.add_error(
                    name, ANSWER_PROBLEMS.get(attribute.datatype, _("Please check this answer."))
                )

    def question_groups(self):
        """Every active category's questions as the page shows them: [{category, notes,
        fields}], the fields bound to what was typed. The chosen category's are this
        form's own, with their errors; the others' only keep what was typed, and are not
        judged (the resident may have changed the category after typing)."""
        groups = []
        for category, attributes in questions_of_active_categories():
            fields = []
            for attribute in attributes:
                if not attribute.variable:
                    continue
                name = question_field_name(attribute)
                if name in self.fields:
                    fields.append(self[name])
                else:
                    fields.append(question_field(attribute).get_bound_field(self, name))
            notes = [a.display_question for a in attributes if not a.variable]
            groups.append({"category": category, "notes": notes, "fields": fields})
        return groups


class FollowForm(forms.Form):
    """ "This is my problem — follow it": which open request, and where to send updates."""

    follow = forms.CharField(max_length=30)
    email = forms.EmailField(
        error_messages={
            "required": _("To follow a request we need your email: that is where updates go.")
        }
    )

    def clean_follow(self):
        number = normalize_tracking_number(self.cleaned_data["follow"])
        found = (
            ServiceRequest.objects.open().public().filter(tracking_number=number).first()
            if number
            else None
        )
        if found is None:
            raise forms.ValidationError(
                _("That request is no longer open. Please send your report instead.")
            )
        return found


class NearbyQueryForm(forms.Form):
    """The report form's live question: what is already reported around this pin?"""

    category = ActiveCategoryField(queryset=ServiceCategory.objects.active())
    lat = forms.FloatField(min_value=-90, max_value=90)
    lng = forms.FloatField(min_value=-180, max_value=180)

    def clean(self):
        cleaned = super().clean()
        lat, lng = cleaned.get("lat"), cleaned.get("lng")
        if lat is not None and lng is not None and not service_area.contains(lat, lng):
            raise forms.ValidationError(_("That place is outside the area we serve."))
        return cleaned


class MapPositionForm(forms.Form):
    """A place handed to the report form by a link (?lat=…&lng=…), e.g. from the home map."""

    lat = forms.FloatField(min_value=-90, max_value=90)
    lng = forms.FloatField(min_value=-180, max_value=180)

    def clean(self):
        cleaned = super().clean()
        lat, lng = cleaned.get("lat"), cleaned.get("lng")
        if lat is not None and lng is not None and not service_area.contains(lat, lng):
            raise forms.ValidationError(_("That place is outside the area we serve."))
        return cleaned


class TrackingLookupForm(forms.Form):
    number = forms.CharField(
        label=_("Tracking number"),
        max_length=30,
        widget=forms.TextInput(
            attrs={"placeholder": "CD-XXXX-XXXX", "autocapitalize": "characters"}
        ),
    )

    def clean_number(self):
        number = normalize_tracking_number(self.cleaned_data["number"])
        if number is None:
            raise forms.ValidationError(
                _("A tracking number looks like CD-7K4M-9Q2X. Please check it and try again.")
            )
        return number
