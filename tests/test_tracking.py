"""Public tracking numbers: their shape, their uniqueness, and looking a request up by one."""

import re

import pytest
from django.urls import reverse

from requests_app import models
from requests_app.tracking import ALPHABET, new_tracking_number, normalize_tracking_number

from .factories import ServiceRequestFactory

SHAPE = re.compile(r"^CD-[A-Z2-9]{4}-[A-Z2-9]{4}$")
CONFUSABLE = set("0O1IL")


def test_tracking_numbers_are_well_formed_and_avoid_confusable_characters():
    for _ in range(2000):
        number = new_tracking_number()
        assert SHAPE.match(number), number
        assert not CONFUSABLE & set(number[3:]), number


def test_alphabet_has_no_confusable_characters():
    assert not CONFUSABLE & set(ALPHABET)
    assert len(set(ALPHABET)) == len(ALPHABET)


def test_tracking_numbers_are_unique_over_many_draws():
    draws = [new_tracking_number() for _ in range(20_000)]
    assert len(set(draws)) == len(draws)


def test_tracking_numbers_use_the_whole_alphabet():
    seen = set("".join(new_tracking_number()[3:].replace("-", "") for _ in range(2000)))
    assert seen == set(ALPHABET)


def test_new_requests_get_distinct_valid_numbers(pothole):
    numbers = {ServiceRequestFactory(category=pothole).tracking_number for _ in range(25)}
    assert len(numbers) == 25
    assert all(SHAPE.match(number) for number in numbers)


def test_a_clashing_number_is_replaced_by_a_fresh_one(pothole, monkeypatch):
    first = ServiceRequestFactory(category=pothole)
    draws = iter([first.tracking_number, "CD-2345-6789"])
    monkeypatch.setattr(models, "new_tracking_number", lambda: next(draws))

    second = ServiceRequestFactory(category=pothole)

    assert second.tracking_number == "CD-2345-6789"
    assert models.ServiceRequest.objects.count() == 2


@pytest.mark.parametrize(
    "typed",
    [
        "CD-7K4M-9Q2X",
        "cd-7k4m-9q2x",
        "cd7k4m9q2x",
        "CD 7K4M 9Q2X",
        "  cd-7k4m9q2x ",
        "7K4M-9Q2X",
        "7k4m9q2x",
        "CD\u20137K4M\u20139Q2X",  # en dashes, as a word processor or email client writes them
        "CD\u20117K4M\u20119Q2X",  # non-breaking hyphens
    ],
)
def test_typed_numbers_are_normalized(typed):
    assert normalize_tracking_number(typed) == "CD-7K4M-9Q2X"


def test_number_whose_body_starts_with_cd_is_found_without_its_prefix():
    assert normalize_tracking_number("CD-CD7K-9Q2X") == "CD-CD7K-9Q2X"
    assert normalize_tracking_number("cdcd7k9q2x") == "CD-CD7K-9Q2X"
    assert normalize_tracking_number("CD7K-9Q2X") == "CD-CD7K-9Q2X"


@pytest.mark.parametrize(
    "typed",
    [
        "",
        None,
        "CD",
        "CD-7K4M",
        "CD-7K4M-9Q2X-1",
        "CD-7K4M-9Q2",
        "XX-7K4M-9Q2X",
        "CD-0K4M-9Q2X",
        "CD-7K4M-9Q2I",
        "CD-7K4M-9Q2!",
        "CD-7K4M-9Q2L",
    ],
)
def test_malformed_numbers_are_refused(typed):
    assert normalize_tracking_number(typed) is None


# --- Looking a request up ------------------------------------------------------------------

LOOKUP = "/track/"


@pytest.fixture
def known(pothole):
    return ServiceRequestFactory(category=pothole, tracking_number="CD-7K4M-9Q2X")


@pytest.mark.parametrize("typed", ["CD-7K4M-9Q2X", "cd-7k4m-9q2x", "cd7k4m9q2x", "7k4m 9q2x"])
def test_lookup_accepts_lower_case_and_missing_dashes(client, known, typed):
    response = client.get(LOOKUP, {"number": typed})

    assert response.status_code == 302
    assert response["Location"] == reverse("requests_app:status", args=["CD-7K4M-9Q2X"])


def test_lookup_explains_what_a_tracking_number_looks_like(client, db):
    response = client.get(LOOKUP, {"number": "hello"})

    assert response.status_code in (400, 404)
    html = response.content.decode()
    assert "A tracking number looks like CD-7K4M-9Q2X" in html
    assert 'value="hello"' in html


def test_lookup_of_an_unknown_number_says_so(client, known):
    response = client.get(LOOKUP, {"number": "cd-2345-6789"})

    assert response.status_code == 404
    assert "We found no request with the number CD-2345-6789." in response.content.decode()


def test_lookup_page_without_a_number_shows_an_empty_form(client, db):
    response = client.get(LOOKUP)

    assert response.status_code == 200
    html = response.content.decode()
    assert 'name="number"' in html
    assert "This field is required" not in html


def test_lookup_does_not_find_hidden_requests(client, known):
    models.ServiceRequest.objects.filter(pk=known.pk).update(is_public=False)

    response = client.get(LOOKUP, {"number": "CD-7K4M-9Q2X"})

    assert response.status_code == 404
    assert "We found no request" in response.content.decode()


def test_home_page_offers_the_lookup_form(client, db):
    html = client.get("/").content.decode()
    assert f'action="{LOOKUP}"' in html
    assert 'name="number"' in html
