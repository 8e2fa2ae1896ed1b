"""Moderation in the dispatch admin: what the public sees of a request, and staff's say in it.

ServiceRequestAdmin (admin.py) uses:

    list_filter = [..., ModerationFilter, LocationToConfirmFilter]
    readonly_fields = [..., "public_view"]   with  public_view = public_view
    RequestWorkForm: ModerationFields (hide/show, public wording, approve, photos, reason),
    applied by apply_moderation

Comments are moderated on their own page (CommentAdmin), linked from the request's.
Every change goes through a model method that needs a reason and writes the history.
"""

from django import forms
from django.contrib import admin
from django.db.models import Q
from django.template.defaultfilters import linebreaksbr
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.text import Truncator
from django.utils.translation import gettext_lazy as _

from . import moderation
from .access import can_edit_requests, staff_role, visible_requests
from .models import Comment, Photo

REASON_NEEDED = _("Say why: hiding, showing, approving and rewording all need a reason.")


class ModerationFilter(admin.SimpleListFilter):
    title = _("public view")
    parameter_name = "moderation"

    def lookups(self, request, model_admin):
        return [
            ("review", _("Awaiting review (word list)")),
            ("photos", _("Photos awaiting approval")),
            ("hidden", _("Hidden from the public")),
            ("reworded", _("Public wording edited")),
        ]

    def queryset(self, request, queryset):
        if self.value() == "review":
            return queryset.awaiting_review()
        if self.value() == "photos":
            return queryset.with_photos_awaiting_approval()
        if self.value() == "hidden":
            return queryset.filter(is_public=False)
        if self.value() == "reworded":
            return queryset.exclude(public_description_override="")
        return queryset


class LocationToConfirmFilter(admin.SimpleListFilter):
    """Requests without a map position: the address did not match at intake."""

    title = _("location")
    parameter_name = "location"

    def lookups(self, request, model_admin):
        return [("to_confirm", _("Location to confirm"))]

    def queryset(self, request, queryset):
        if self.value() == "to_confirm":
            return queryset.without_location()
        return queryset


def _flags(pairs):
    colours = {"hidden": "#b91c1c", "review": "#b45309", "ok": "#15803d", "info": "#1d4ed8"}
    return format_html_join(
        " ",
        '<strong class="moderation-flag" style="color:{}">⚑ {}</strong>',
        ((colours[kind], text) for kind, text in pairs),
    )


def request_flags(obj) -> list[tuple[str, str]]:
    flags = []
    if not obj.is_public:
        flags.append(("hidden", _("Hidden from the public")))
    if obj.description_awaiting_review:
        word = moderation.blocked_word_in(obj.description)
        flags.append(("review", _("Awaiting review: contains “%(word)s”") % {"word": word}))
    elif obj.description_approved and not obj.public_description_override:
        flags.append(("ok", _("Approved as written")))
    if obj.public_description_override:
        flags.append(("info", _("Public wording edited")))
    elif obj.public_description != obj.description and not obj.description_awaiting_review:
        flags.append(("info", _("Contact details masked")))
    return flags


@admin.display(description=_("What the public sees"))
def public_view(obj):
    # linebreaksbr escapes: the text is the resident's.
    return format_html(
        '<div class="public-description" style="white-space:normal">{}</div><div>{}</div>',
        linebreaksbr(obj.public_description),
        _flags(request_flags(obj)),
    )


@admin.display(description=_("Public"))
def public_flags(obj):
    flags = []
    if not obj.is_public:
        flags.append(("hidden", _("Hidden")))
    if obj.description_awaiting_review:
        flags.append(("review", _("Review")))
    return _flags(flags) or "—"


class PhotoChoiceField(forms.ModelMultipleChoiceField):
    widget = forms.CheckboxSelectMultiple

    def label_from_instance(self, photo):
        waiting = _(" · awaiting approval") if photo.awaiting_approval else ""
        return format_html(
            '<img src="{}" alt="" style="max-height:60px;vertical-align:middle"> {} · {}{}',
            photo.get_thumbnail_url(),
            photo.get_kind_display(),
            str(photo.pk)[:8],
            waiting,
        )


def photos_of(service_request):
    mine = Q(request=service_request)
    if service_request.work_order_id:
        mine |= Q(work_order_id=service_request.work_order_id)
    return Photo.objects.filter(mine).order_by("uploaded_at")


class ModerationFields(forms.Form):
    """Mixed into the request's change form (RequestWorkForm)."""

    public_wording = forms.CharField(
        label=_("Public wording of the description"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text=_(
            "Shown to the public instead of the description, which is kept as written. Leave "
            "empty to show the description itself (contact details are masked either way)."
        ),
    )
    approve_description = forms.BooleanField(
        label=_("Approve the description as written"),
        required=False,
        help_text=_("The word list holds it back; tick to publish it (contacts stay masked)."),
    )
    hide_photos = PhotoChoiceField(
        Photo.objects.none(), label=_("Hide these photos from the public"), required=False
    )
    show_photos = PhotoChoiceField(
        Photo.objects.none(),
        label=_("Show these photos to the public (approve)"),
        required=False,
    )
    moderation_reason = forms.CharField(
        label=_("Why (hiding, showing, approving or rewording)"),
        required=False,
        help_text=_("Kept in the history with your name."),
    )

    def init_moderation(self, service_request):
        self.fields["public_wording"].initial = service_request.public_description_override
        photos = photos_of(service_request)
        self.fields["hide_photos"].queryset = photos.filter(is_public=True)
        self.fields["show_photos"].queryset = photos.filter(is_public=False)

    def clean_moderation(self, cleaned, service_request):
        wording = (cleaned.get("public_wording") or "").strip()
        changes = (
            "is_public" in self.changed_data
            or wording != service_request.public_description_override
            or cleaned.get("approve_description")
            or cleaned.get("hide_photos")
            or cleaned.get("show_photos")
        )
        if changes and not (cleaned.get("moderation_reason") or "").strip():
            self.add_error("moderation_reason", REASON_NEEDED)


def moderation_fields(obj) -> list[str]:
    """The moderation fields worth showing on `obj`'s change page."""
    fields = ["is_public", "public_wording"]
    if obj.description_awaiting_review:
        fields.append("approve_description")
    photos = photos_of(obj)
    if photos.filter(is_public=True).exists():
        fields.append("hide_photos")
    if photos.filter(is_public=False).exists():
        fields.append("show_photos")
    return [*fields, "moderation_reason"]


def apply_moderation(stored, form, user):
    """Carry out what the change form asked, each step with the reason and a history entry."""
    data = form.cleaned_data
    reason = data.get("moderation_reason", "")
    if "is_public" in form.changed_data:
        stored.set_public(data["is_public"], by=user, reason=reason)
    wording = (data.get("public_wording") or "").strip()
    if wording != stored.public_description_override:
        stored.set_public_wording(wording, by=user, reason=reason)
    if data.get("approve_description"):
        stored.approve_description(by=user, reason=reason)
    for photo in data.get("hide_photos") or []:
        photo.set_public(False, by=user, reason=reason)
    for photo in data.get("show_photos") or []:
        photo.set_public(True, by=user, reason=reason)


# --- Comments --------------------------------------------------------------------------------


def comment_flags(comment) -> list[tuple[str, str]]:
    if not comment.is_public:
        return []
    flags = []
    if comment.awaiting_review:
        word = moderation.blocked_word_in(comment.text)
        flags.append(("review", _("Awaiting review: contains “%(word)s”") % {"word": word}))
    elif comment.text_approved and not comment.public_text_override:
        flags.append(("ok", _("Approved as written")))
    if comment.public_text_override:
        flags.append(("info", _("Public wording edited")))
    elif comment.public_text != comment.text and not comment.awaiting_review:
        flags.append(("info", _("Contact details masked")))
    return flags


@admin.display(description=_("What the public sees"))
def comment_public_view(comment):
    if not comment.is_public:
        return _("Nothing: an internal note")
    return format_html(
        "<div>{}</div><div>{}</div>",
        linebreaksbr(comment.public_text),
        _flags(comment_flags(comment)),
    )


@admin.display(description=_("Moderation"))
def comment_moderation_link(comment):
    if not comment.is_public:
        return "—"
    return format_html(
        '{} <a href="{}">{}</a>',
        _flags(comment_flags(comment)),
        reverse("admin:requests_app_comment_change", args=[comment.pk]),
        _("Review or reword"),
    )


class CommentReviewFilter(admin.SimpleListFilter):
    title = _("public view")
    parameter_name = "moderation"

    def lookups(self, request, model_admin):
        return [
            ("review", _("Awaiting review (word list)")),
            ("reworded", _("Public wording edited")),
        ]

    def queryset(self, request, queryset):
        if self.value() == "review":
            pattern = moderation.blocked_pattern()
            if pattern is None:
                return queryset.none()
            return queryset.filter(
                is_public=True,
                author__isnull=True,
                text_approved=False,
                public_text_override="",
                text__iregex=pattern,
            )
        if self.value() == "reworded":
            return queryset.exclude(public_text_override="")
        return queryset


class CommentModerationForm(forms.ModelForm):
    public_wording = forms.CharField(
        label=_("Public wording"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text=_(
            "Shown to the public instead of the comment, which is kept as written. Leave empty "
            "to show the comment itself (contact details are masked either way)."
        ),
    )
    approve = forms.BooleanField(
        label=_("Approve the comment as written"),
        required=False,
        help_text=_("The word list holds it back; tick to publish it (contacts stay masked)."),
    )
    reason = forms.CharField(label=_("Why"), required=False)

    class Meta:
        model = Comment
        fields = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["public_wording"].initial = self.instance.public_text_override

    def clean(self):
        cleaned = super().clean()
        wording = (cleaned.get("public_wording") or "").strip()
        changes = wording != self.instance.public_text_override or cleaned.get("approve")
        if changes and not (cleaned.get("reason") or "").strip():
            self.add_error("reason", REASON_NEEDED)
        return cleaned


@admin.register(Comment)
class CommentAdmin(admin.ModelAdmin):
    """Public comments and internal notes, for reviewing what residents wrote."""

    form = CommentModerationForm
    list_display = [
        "created_at",
        "request",
        "author_label",
        "is_public",
        "written",
        "public_preview",
    ]
    list_filter = [CommentReviewFilter, "is_public"]
    list_select_related = ["request"]
    search_fields = ["request__tracking_number", "text"]
    readonly_fields = [
        "request_link",
        "created_at",
        "author_label",
        "is_public",
        "text",
        "comment_public_view",
    ]
    comment_public_view = staticmethod(comment_public_view)

    def get_queryset(self, request):
        return Comment.objects.filter(
            request__in=visible_requests(request.user).values("pk")
        ).select_related("request")

    def get_fields(self, request, obj=None):
        editable = ["public_wording", "approve", "reason"]
        if obj is None or not obj.is_public or not can_edit_requests(request.user):
            return self.readonly_fields
        if not obj.awaiting_review:
            editable.remove("approve")
        return [*self.readonly_fields, *editable]

    def has_module_permission(self, request):
        return staff_role(request.user) is not None

    def has_view_permission(self, request, obj=None):
        return staff_role(request.user) is not None

    def has_change_permission(self, request, obj=None):
        return can_edit_requests(request.user)

    def has_add_permission(self, request):
        return False  # comments are written on the request's page

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description=_("Request"))
    def request_link(self, comment):
        return format_html(
            '<a href="{}">{}</a>',
            reverse("admin:requests_app_servicerequest_change", args=[comment.request_id]),
            comment.request,
        )

    @admin.display(description=_("As written"))
    def written(self, comment):
        return Truncator(comment.text).chars(80)

    @admin.display(description=_("What the public sees"))
    def public_preview(self, comment):
        if not comment.is_public:
            return "—"
        return format_html(
            "{} {}", _flags(comment_flags(comment)), Truncator(comment.public_text).chars(80)
        )

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        wording = (data.get("public_wording") or "").strip()
        if wording != obj.public_text_override:
            obj.set_public_wording(wording, by=request.user, reason=data["reason"])
        if data.get("approve"):
            obj.approve(by=request.user, reason=data["reason"])
