"""The crew's phone-sized pages: their work, and one work order to start and complete."""

from django import forms
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Min
from django.shortcuts import redirect, render
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_GET, require_POST

from .access import can_edit_requests, visible_work_orders, work_order_for_crew_member_or_404
from .models import Photo
from .photos import PhotoRejected, process_photo
from .services import work_order_add_photo


class PhotoForm(forms.Form):
    kind = forms.ChoiceField(
        label=_("Photo of"),
        choices=[(Photo.Kind.BEFORE, _("Before work")), (Photo.Kind.AFTER, _("After work"))],
        initial=Photo.Kind.AFTER,
    )
    photo = forms.FileField(
        label=_("Photo"),
        widget=forms.ClearableFileInput(attrs={"accept": "image/*", "capture": "environment"}),
    )

    def clean_photo(self):
        try:
            self.processed = process_photo(self.cleaned_data["photo"])
        except PhotoRejected as rejected:
            raise ValidationError(rejected.message) from None
        return self.cleaned_data["photo"]


class CompleteForm(forms.Form):
    resolution_note = forms.CharField(
        label=_("What was done"), widget=forms.Textarea(attrs={"rows": 3}), max_length=4000
    )
    labour_hours = forms.DecimalField(
        label=_("Labour hours"), required=False, min_value=0, max_digits=7, decimal_places=2
    )


def _may_act(user, order):
    return (
        order.crew is not None
        and order.crew.members.filter(pk=user.pk).exists()
        or (can_edit_requests(user))
    )


@login_required
@require_GET
def my_work(request):
    orders = (
        visible_work_orders(request.user)
        .active()
        .select_related("crew", "department")
        .annotate(due=Min("requests__due_at"))
        .order_by("-priority", "due", "scheduled_for")
    )
    markers = []
    for order in orders:
        first = order.requests.exclude(lat=None).first()
        if first:
            markers.append(
                {
                    "lat": first.lat,
                    "lng": first.lng,
                    "label": str(order),
                    "url": order.get_absolute_url(),
                }
            )
    return render(request, "requests_app/crew/my_work.html", {"orders": orders, "markers": markers})


def _order_page(request, order, *, photo_form=None, complete_form=None, error=None, status=200):
    requests = order.requests.select_related("category").order_by("-priority", "due_at")
    first = next((r for r in requests if r.has_location), None)
    return render(
        request,
        "requests_app/crew/work_order.html",
        {
            "order": order,
            "requests": requests,
            "photos": Photo.objects.filter(request__in=requests) | order.photos.all(),
            "destination": first,
            "may_act": _may_act(request.user, order),
            "photo_form": photo_form or PhotoForm(),
            "complete_form": complete_form or CompleteForm(),
            "error": error,
        },
        status=status,
    )


@login_required
@require_GET
def work_order(request, pk):
    return _order_page(request, work_order_for_crew_member_or_404(request.user, pk))


def _acting_on(request, pk):
    order = work_order_for_crew_member_or_404(request.user, pk)
    if not _may_act(request.user, order):
        raise PermissionDenied
    return order


@login_required
@require_POST
def work_order_start(request, pk):
    order = _acting_on(request, pk)
    try:
        order.start(by=request.user)
    except ValidationError as error:
        return _order_page(request, order, error=" ".join(error.messages), status=409)
    return redirect(order)


@login_required
@require_POST
def work_order_photo(request, pk):
    order = _acting_on(request, pk)
    form = PhotoForm(request.POST, request.FILES)
    if not form.is_valid():
        return _order_page(request, order, photo_form=form, status=400)
    work_order_add_photo(order, form.processed, kind=form.cleaned_data["kind"], by=request.user)
    return redirect(order)


@login_required
@require_POST
def work_order_complete(request, pk):
    order = _acting_on(request, pk)
    form = CompleteForm(request.POST)
    if not form.is_valid():
        return _order_page(request, order, complete_form=form, status=400)
    try:
        order.complete(
            form.cleaned_data["resolution_note"],
            labour_hours=form.cleaned_data.get("labour_hours"),
            by=request.user,
        )
    except ValidationError as error:
        return _order_page(
            request, order, complete_form=form, error=" ".join(error.messages), status=409
        )
    return redirect(order)
