"""Signed, expiring survey links (TimestampSigner): the token names the survey only."""

from datetime import timedelta

from django.conf import settings
from django.core import signing

SALT = "surveys.answer"


def link_max_age() -> timedelta:
    return timedelta(days=getattr(settings, "SURVEY_LINK_MAX_AGE_DAYS", 30))


def survey_token(survey_id: int) -> str:
    return signing.TimestampSigner(salt=SALT).sign_object({"s": survey_id})


def read_survey_token(token: str) -> int:
    """The survey id; raises signing.SignatureExpired or signing.BadSignature."""
    data = signing.TimestampSigner(salt=SALT).unsign_object(token, max_age=link_max_age())
    try:
        return int(data["s"])
    except (KeyError, TypeError, ValueError) as error:
        raise signing.BadSignature(str(error)) from None
