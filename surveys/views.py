from django.core import signing
from django.shortcuts import render
from django.views.decorators.http import require_http_methods

from notifications.resident import reporter_request_path

from .forms import SurveyForm
from .links import read_survey_token
from .models import Survey
from .services import survey_answer


@require_http_methods(["GET", "POST"])
def answer(request, token):
    """GET shows the form (prefilled from the email's link); only the POST records, so
    mail scanners that open every link answer nothing."""
    try:
        survey_id = read_survey_token(token)
    except signing.SignatureExpired:
        return render(request, "surveys/expired.html", status=410)
    except signing.BadSignature:
        return render(request, "surveys/invalid.html", status=400)
    survey = Survey.objects.select_related("request__category").filter(pk=survey_id).first()
    if survey is None:
        return render(request, "surveys/invalid.html", status=400)
    if request.method == "POST":
        form = SurveyForm(request.POST)
        if form.is_valid():
            survey = survey_answer(
                survey.pk,
                rating=form.cleaned_data["rating"],
                is_fixed=form.is_fixed,
                comment=form.cleaned_data["comment"],
            )
            return render(
                request,
                "surveys/thanks.html",
                {"survey": survey, "report_url": reporter_request_path(survey.request)},
            )
    else:
        fixed = {True: "yes", False: "no"}.get(survey.is_fixed)
        initial = {
            "rating": request.GET.get("rating") or survey.rating,
            "fixed": request.GET.get("fixed") or fixed,
            "comment": survey.comment,
        }
        form = SurveyForm(initial=initial)
    return render(
        request, "surveys/answer.html", {"survey": survey, "form": form, "req": survey.request}
    )
