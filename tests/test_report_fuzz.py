"""The report form under arbitrary input: never a server error, always either a request
filed (302 to its confirmation) or the form again with what is wrong (400).

Hypothesis makes up the fields: any unicode, control characters, text far over the limits,
numbers that are not numbers (NaN, infinities, 1e999, hex, commas), out-of-range and
negative positions, unknown categories. The Open311 POST has its own fuzzing
(test_open311_fuzz.py). The uploads missing from test_photos.py follow: a photo with a web
page hidden in it, real decompression bombs (a few hundred bytes declaring billions of
pixels) with the default limits, and a file name made of markup.
"""

import re
import struct
import zlib
from collections import Counter

import pytest
from django.urls import reverse
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from requests_app.models import Photo, ServiceAttribute, ServiceRequest

from .conftest import upload
from .photos import make_image

pytestmark = pytest.mark.django_db

TRACKING = re.compile(r"^/report/done/(CD-[A-Z0-9]{4}-[A-Z0-9]{4})/$")

NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(min_value=42.25, max_value=42.38).map(str),  # inside the service area
    st.floats(min_value=-71.18, max_value=-71.0).map(str),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.sampled_from(["nan", "NaN", "-inf", "Infinity", "1e999", "-1e-999", "0x2A", "42,35"]),
    st.sampled_from(["", " ", "-0", "٤٢٫٣", "4２", "42.35 ", "\x00", "1_000"]),
)
TEXT = st.one_of(
    st.text(max_size=120),
    st.text(st.characters(codec="utf-8", categories=["Cc", "Cf", "Zs", "Mn", "So"]), max_size=60),
    st.sampled_from(
        [
            "",
            "   ",
            "Deep pothole by the bus stop",
            "\x00",
            "<script>alert(1)</script>",
            "'; DROP TABLE requests_app_servicerequest; --",
            "\u202eevil\u202c",
            "🕳️" * 50,
        ]
    ),
    st.integers(min_value=200, max_value=20_000).map(lambda n: "x" * n),
)


VALID = {
    "description": "Deep pothole by the bus stop",
    "address": "12 Main St",
    "lat": "42.355",
    "lng": "-71.065",
    "name": "Maria Lopez",
    "email": "maria@example.org",
    "phone": "617-555-0142",
}
FUZZED = {
    "category": st.one_of(TEXT, NUMBERS),
    "description": TEXT,
    "address": TEXT,
    "lat": NUMBERS,
    "lng": NUMBERS,
    "name": TEXT,
    "email": st.one_of(TEXT, st.emails().map(str)),
    "phone": st.one_of(TEXT, NUMBERS),
}


@st.composite
def report_posts(draw, category_pk):
    """A sound report with any number of its fields (none, one, all) replaced."""
    data = {"category": str(category_pk), **VALID}
    for field in draw(st.sets(st.sampled_from(sorted(FUZZED)))):
        data[field] = draw(FUZZED[field])
    # Nearby requests were shown already: no second step, the form files or refuses.
    data["file_anyway"] = "1"
    return data


def test_report_form_answers_anything_with_a_request_or_its_errors(client, pothole, settings):
    settings.REPORTS_PER_IP_PER_HOUR = 10**9  # the throttle is not what is being fuzzed
    outcomes = Counter()

    @hypothesis_settings(
        max_examples=150,
        deadline=None,
        database=None,  # nothing written into the checkout
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(data=report_posts(pothole.pk))
    def post(data):
        filed = ServiceRequest.objects.count()
        # The test client raises any exception the view lets out: a 500 fails here.
        response = client.post(reverse("requests_app:report"), data)
        outcomes[response.status_code] += 1
        if response.status_code == 302:
            number = TRACKING.match(response["Location"])
            assert number, response["Location"]
            assert ServiceRequest.objects.filter(tracking_number=number.group(1)).exists()
        else:
            assert response.status_code == 400, (response.status_code, data)
            html = response.content.decode()
            assert 'class="form-errors"' in html and 'class="field-errors"' in html, data
            assert ServiceRequest.objects.count() == filed

    post()
    # Both answers were reached, so neither assertion above was vacuous.
    assert outcomes[302] and outcomes[400], outcomes


def test_answers_to_a_categorys_questions_answer_anything_with_a_request_or_their_errors(
    client, pothole, settings
):
    """The category's own questions, of every datatype, answered with anything."""
    settings.REPORTS_PER_IP_PER_HOUR = 10**9
    Datatype = ServiceAttribute.Datatype
    choices = [{"key": "small", "name": "Small"}, {"key": "large", "name": "Large"}]
    names = []
    for order, datatype in enumerate(Datatype, 1):
        ServiceAttribute.objects.create(
            category=pothole,
            code=datatype.value,
            description=f"A {datatype.label} question",
            datatype=datatype,
            required=datatype == Datatype.SINGLE,
            order=order,
            values=choices if datatype in (Datatype.SINGLE, Datatype.MULTI) else [],
        )
        names.append(f"q{pothole.pk}-{datatype.value}")
    answers = st.one_of(
        TEXT, NUMBERS, st.sampled_from(["small", "large", "2026-01-02T08:00", "12.5", "1e3"])
    )
    outcomes = Counter()

    @hypothesis_settings(
        max_examples=100,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(given_answers=st.dictionaries(st.sampled_from(names), st.lists(answers, max_size=3)))
    def post(given_answers):
        sound = {f"q{pothole.pk}-{Datatype.SINGLE.value}": "small"}
        data = {"category": str(pothole.pk), **VALID, "file_anyway": "1"}
        data.update({**sound, **given_answers})
        filed = ServiceRequest.objects.count()
        response = client.post(reverse("requests_app:report"), data)
        outcomes[response.status_code] += 1
        if response.status_code == 302:
            request = ServiceRequest.objects.latest("pk")
            for answer in request.answers.all():
                assert answer.value not in ("", [], None)
        else:
            assert response.status_code == 400, (response.status_code, data)
            assert 'class="field-errors"' in response.content.decode(), data
            assert ServiceRequest.objects.count() == filed

    post()
    assert outcomes[302] and outcomes[400], outcomes


# --- Uploads test_photos.py does not try --------------------------------------------------


def report(pothole, photos, **overrides):
    return {
        "category": pothole.pk,
        "description": "Deep pothole by the bus stop",
        "address": "12 Main St",
        "photos": photos,
        **overrides,
    }


HTML_PAYLOAD = b"<html><body><script>alert(document.domain)</script></body></html>"


def test_photo_with_a_web_page_appended_is_stored_as_a_fresh_jpeg_without_it(client, pothole):
    """A polyglot: a real JPEG that is also a web page. Pillow reads the picture; what is
    stored and served is re-encoded, so the page is gone and could never be sniffed."""
    polyglot = make_image(size=(64, 48)) + HTML_PAYLOAD
    response = client.post(
        reverse("requests_app:report"), report(pothole, [upload("both.jpg", polyglot)])
    )
    assert response.status_code == 302
    photo = Photo.objects.get()
    for field in (photo.image, photo.thumbnail):
        with field.open("rb") as stored:
            data = stored.read()
        assert data.startswith(b"\xff\xd8") and b"<script" not in data and b"<html" not in data
    served = client.get(photo.get_absolute_url())
    assert served["Content-Type"] == "image/jpeg"
    assert served["X-Content-Type-Options"] == "nosniff"


def _png_header_only(width, height):
    """A PNG of a few hundred bytes that declares width × height pixels."""

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    idat = zlib.compress(b"\0" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "width, height",
    [
        (7_000, 7_000),  # 49 MP: over PHOTO_MAX_PIXELS (40 MP), under Pillow's limit
        (10_000, 10_000),  # 100 MP: Pillow only warns
        (100_000, 100_000),  # 10 GP: Pillow refuses to open it
    ],
)
def test_decompression_bomb_is_refused_before_it_is_decoded(client, pothole, width, height):
    bomb = _png_header_only(width, height)
    assert len(bomb) < 1000
    response = client.post(
        reverse("requests_app:report"),
        report(pothole, [upload("bomb.png", bomb, content_type="image/png")]),
    )
    assert response.status_code == 400
    assert "bomb.png has too many pixels" in response.content.decode()
    assert not ServiceRequest.objects.exists()


def test_a_file_name_made_of_markup_is_shown_as_text(client, pothole):
    name = '"><img src=x onerror=alert(1)>.jpg'
    response = client.post(
        reverse("requests_app:report"), report(pothole, [upload(name, HTML_PAYLOAD)])
    )
    assert response.status_code == 400
    html = response.content.decode()
    assert "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;.jpg is not a photo we can read" in html
    assert "<img src=x" not in html
