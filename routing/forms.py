from django import forms


class AddressSearchForm(forms.Form):
    q = forms.CharField(max_length=200, strip=True)


class ReverseGeocodeForm(forms.Form):
    lat = forms.FloatField(min_value=-90, max_value=90)
    lng = forms.FloatField(min_value=-180, max_value=180)
