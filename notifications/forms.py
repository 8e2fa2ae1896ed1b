from django import forms
from django.utils.translation import gettext_lazy as _


class SignInLinkForm(forms.Form):
    email = forms.EmailField(
        label=_("Your email"),
        max_length=254,
        help_text=_("The address you gave when you reported or followed a problem."),
        widget=forms.EmailInput(attrs={"autocomplete": "email"}),
    )
