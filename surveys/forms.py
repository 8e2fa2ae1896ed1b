from django import forms
from django.utils.translation import gettext_lazy as _

RATINGS = [(n, str(n)) for n in range(1, 6)]


class SurveyForm(forms.Form):
    rating = forms.TypedChoiceField(
        label=_("How satisfied are you with how we handled it? (1 = not at all, 5 = very)"),
        choices=RATINGS,
        coerce=int,
        empty_value=None,
        required=False,
        widget=forms.RadioSelect,
    )
    fixed = forms.ChoiceField(
        label=_("Is the problem fixed?"),
        choices=[("yes", _("Yes")), ("no", _("No"))],
        required=False,
        widget=forms.RadioSelect,
    )
    comment = forms.CharField(
        label=_("Anything else? (optional)"),
        required=False,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 4}),
    )

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("rating") is None and not cleaned.get("fixed"):
            raise forms.ValidationError(_("Choose a rating or tell us whether it is fixed."))
        return cleaned

    @property
    def is_fixed(self):
        return {"yes": True, "no": False}.get(self.cleaned_data.get("fixed"))
