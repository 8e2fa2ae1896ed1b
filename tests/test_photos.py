"""What happens to a resident's photo: what we refuse, and what we store and serve."""

import io

import pytest
from django.urls import reverse
from PIL import Image

from requests_app.models import Photo, ServiceRequest
from requests_app.photos import PhotoRejected, process_photo
from requests_app.services import photo_attach

from .conftest import upload
from .factories import CITY_CENTER, ServiceRequestFactory
from .photos import GPS_IFD, make_image

MAKE = 0x010F
ORIENTATION = 0x0112


def report_data(pothole, **overrides):
    data = {
        "category": pothole.pk,
        "description": "Deep pothole by the bus stop",
        "address": "12 Main St",
        "name": "Maria Lopez",
        "email": "maria@example.org",
        "phone": "617-555-0142",
    }
    data.update(overrides)
    return data


def submit_with_photos(client, pothole, photos, **overrides):
    return client.post(
        reverse("requests_app:report"), {**report_data(pothole, **overrides), "photos": photos}
    )


def stored_photo(client, pothole, photo, **overrides):
    response = submit_with_photos(client, pothole, [photo], **overrides)
    assert response.status_code == 302, response.content.decode()[:2000]
    return ServiceRequest.objects.get().photos.get()


def open_stored(field):
    with field.open("rb") as f:
        image = Image.open(io.BytesIO(f.read()))
        image.load()
    return image


def split_image(size, orientation, fmt="JPEG"):
    """Red left half, blue right half, with an EXIF orientation tag."""
    width, height = size
    image = Image.new("RGB", size, (255, 0, 0))
    image.paste((0, 0, 255), (width // 2, 0, width, height))
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    out = io.BytesIO()
    image.save(out, format=fmt, exif=exif, quality=95)
    return out.getvalue()


def is_red(pixel):
    r, g, b = pixel[:3]
    return r > 200 and g < 60 and b < 60


def is_blue(pixel):
    r, g, b = pixel[:3]
    return b > 200 and r < 60 and g < 60


# --- Photos we refuse --------------------------------------------------------------------

SVG = (
    b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
    b"<script>alert(1)</script></svg>"
)
HTML = b"<!DOCTYPE html><html><body><script>alert(document.cookie)</script></body></html>"


def truncated(fmt):
    data = make_image(fmt, size=(200, 150))
    return data[: len(data) // 2]


BAD_PHOTOS = {
    "renamed_svg": lambda: upload("drawing.jpg", SVG),
    "renamed_html": lambda: upload("page.png", HTML, content_type="image/png"),
    "truncated_jpeg": lambda: upload("cut-off.jpg", truncated("JPEG")),
    "truncated_png": lambda: upload("cut-off.png", truncated("PNG"), content_type="image/png"),
    "truncated_webp": lambda: upload("cut-off.webp", truncated("WEBP"), content_type="image/webp"),
    "gif": lambda: upload("anim.gif", make_image("GIF", size=(20, 20)), content_type="image/gif"),
    "tiff": lambda: upload("scan.jpg", make_image("TIFF", size=(20, 20))),
    "empty": lambda: upload("empty.jpg", b""),
}


@pytest.mark.parametrize("kind", [k for k in BAD_PHOTOS if k != "empty"])
def test_process_photo_refuses_what_is_not_a_fully_readable_photo(kind):
    with pytest.raises(PhotoRejected) as rejected:
        process_photo(BAD_PHOTOS[kind]())
    assert "is not a photo we can read (JPEG, PNG, WebP or HEIC)" in rejected.value.message


@pytest.mark.parametrize("kind", list(BAD_PHOTOS))
def test_bad_photo_is_rejected_and_form_keeps_what_was_typed(client, pothole, kind):
    response = submit_with_photos(client, pothole, [BAD_PHOTOS[kind]()])

    assert response.status_code == 400
    html = response.content.decode()
    assert "Deep pothole by the bus stop" in html
    assert 'value="12 Main St"' in html
    assert 'value="Maria Lopez"' in html
    assert 'value="maria@example.org"' in html
    assert "please choose the photos again" in html or "The submitted file is empty" in html
    assert not ServiceRequest.objects.exists()
    assert not Photo.objects.exists()


def test_truncated_jpeg_is_rejected_and_form_keeps_description(client, pothole):
    response = submit_with_photos(client, pothole, [BAD_PHOTOS["truncated_jpeg"]()])

    assert response.status_code == 400
    html = response.content.decode()
    assert "cut-off.jpg is not a photo we can read" in html
    assert "Deep pothole by the bus stop" in html
    assert not ServiceRequest.objects.exists()


def test_renamed_svg_is_rejected_with_its_name_and_never_echoed_as_markup(client, pothole):
    response = submit_with_photos(client, pothole, [BAD_PHOTOS["renamed_svg"]()])

    assert response.status_code == 400
    html = response.content.decode()
    assert "drawing.jpg is not a photo we can read" in html
    assert "<svg" not in html and "alert(1)" not in html


def test_oversize_photo_is_rejected_with_a_readable_limit(client, pothole, settings):
    settings.PHOTO_MAX_BYTES = 2048
    big = upload("big.jpg", make_image(size=(400, 300)) + b"\0" * 4096)

    response = submit_with_photos(client, pothole, [big])

    assert response.status_code == 400
    html = response.content.decode()
    assert "big.jpg is larger than 2.0\xa0KB" in html
    assert "than 0 MB" not in html
    assert "Deep pothole by the bus stop" in html
    assert 'value="maria@example.org"' in html
    assert not ServiceRequest.objects.exists()


def test_photo_exactly_at_the_size_limit_is_accepted(settings):
    data = make_image(size=(40, 30))
    settings.PHOTO_MAX_BYTES = len(data)
    assert process_photo(upload("edge.jpg", data)).width == 40


def test_sixth_photo_is_refused_and_nothing_is_stored(client, pothole):
    photos = [upload(f"p{i}.jpg", make_image(size=(40, 30))) for i in range(6)]

    response = submit_with_photos(client, pothole, photos)

    assert response.status_code == 400
    html = response.content.decode()
    assert "Please attach at most 5 photos; you chose 6." in html
    assert "Deep pothole by the bus stop" in html
    assert 'value="Maria Lopez"' in html
    assert not ServiceRequest.objects.exists()
    assert not Photo.objects.exists()


def test_five_photos_are_all_stored(client, pothole):
    photos = [upload(f"p{i}.jpg", make_image(size=(40, 30))) for i in range(5)]

    response = submit_with_photos(client, pothole, photos)

    assert response.status_code == 302
    assert ServiceRequest.objects.get().photos.count() == 5


def test_one_bad_photo_among_good_ones_names_the_bad_one_and_stores_nothing(client, pothole):
    photos = [upload("good.jpg", make_image(size=(40, 30))), upload("bad.jpg", HTML)]

    response = submit_with_photos(client, pothole, photos)

    assert response.status_code == 400
    html = response.content.decode()
    assert "bad.jpg is not a photo we can read" in html
    assert "good.jpg" not in html
    assert not Photo.objects.exists()


def test_photo_above_photo_max_pixels_is_rejected(client, pothole, settings, monkeypatch):
    settings.PHOTO_MAX_PIXELS = 10_000
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)
    bomb = upload("bomb.png", make_image("PNG", size=(200, 100)), content_type="image/png")

    response = submit_with_photos(client, pothole, [bomb])

    assert response.status_code == 400
    html = response.content.decode()
    assert "bomb.png has too many pixels" in html
    assert "Deep pothole by the bus stop" in html
    assert 'value="12 Main St"' in html
    assert not ServiceRequest.objects.exists()


def test_photo_in_pillows_warning_only_range_is_rejected(client, pothole, settings, monkeypatch):
    # Pillow only warns between MAX_IMAGE_PIXELS and twice that; our own limit is out of the way.
    settings.PHOTO_MAX_PIXELS = 10**9
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    bomb = upload("bomb.jpg", make_image(size=(150, 100)))  # 15,000 pixels

    response = submit_with_photos(client, pothole, [bomb])

    assert response.status_code == 400
    html = response.content.decode()
    assert "bomb.jpg has too many pixels" in html
    assert 'value="Maria Lopez"' in html
    assert not ServiceRequest.objects.exists()


def test_photo_in_pillows_error_range_is_rejected(settings, monkeypatch):
    settings.PHOTO_MAX_PIXELS = 10**9
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    with pytest.raises(PhotoRejected, match="has too many pixels"):
        process_photo(upload("bomb.jpg", make_image(size=(300, 100))))


def test_photo_just_within_both_pixel_limits_is_accepted(settings, monkeypatch):
    settings.PHOTO_MAX_PIXELS = 10_000
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    assert process_photo(upload("ok.jpg", make_image(size=(100, 100)))).width == 100


def test_pixel_limit_holds_even_if_the_warning_filter_is_lost(settings, monkeypatch):
    # catch_warnings is process-wide: another thread can reset the filters mid-upload.
    import warnings

    from requests_app import photos

    settings.PHOTO_MAX_PIXELS = 10**9
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
        # photos.warnings is the warnings module itself: patch only inside this block.
        monkeypatch.setattr(photos.warnings, "simplefilter", lambda *args, **kwargs: None)
        with pytest.raises(PhotoRejected, match="has too many pixels"):
            process_photo(upload("bomb.jpg", make_image(size=(150, 100))))


def mangled_exif_photo():
    """A turned photo whose Make tag has been renumbered into a numeric tag, as buggy
    firmware and editors produce: Pillow reads it, but cannot write that EXIF back."""
    data = make_image(size=(40, 20), gps=CITY_CENTER, orientation=6)
    make_entry = b"\x01\x0f\x00\x02"  # tag 0x010F (Make), type ASCII, big-endian
    assert data.count(make_entry) == 1
    return data.replace(make_entry, b"\x01\x25\x00\x02")


def test_photo_with_malformed_exif_is_accepted_upright_and_without_metadata(client, pothole):
    photo = stored_photo(client, pothole, upload("odd.jpg", mangled_exif_photo()))

    image = open_stored(photo.image)
    assert image.size == (20, 40)
    assert not image.getexif()
    raw = photo.image.open("rb").read()
    photo.image.close()
    assert b"TestCam" not in raw


@pytest.mark.parametrize("orientation", [0, 9, 99])
def test_unknown_orientation_values_leave_the_photo_as_it_is(orientation):
    image = Image.new("RGB", (40, 20))
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    source = io.BytesIO()
    image.save(source, format="JPEG", exif=exif)

    processed = process_photo(upload("o.jpg", source.getvalue()))

    assert (processed.width, processed.height) == (40, 20)


# --- What we store -------------------------------------------------------------------------


def test_stored_photo_has_no_gps_no_camera_make_and_no_metadata(client, pothole):
    photo = stored_photo(
        client,
        pothole,
        upload("gps.jpg", make_image(size=(300, 200), gps=CITY_CENTER, orientation=1)),
    )

    for field in (photo.image, photo.thumbnail):
        image = open_stored(field)
        assert image.format == "JPEG"
        exif = image.getexif()
        assert GPS_IFD not in exif
        assert not exif.get_ifd(GPS_IFD)
        assert MAKE not in exif
        assert "exif" not in image.info
        assert "xmp" not in image.info
        assert b"TestCam" not in field.open("rb").read()
        field.close()


def test_stored_photo_drops_xmp_and_jpeg_comments(client, pothole):
    source = io.BytesIO()
    Image.new("RGB", (60, 40), (10, 120, 10)).save(
        source,
        format="JPEG",
        xmp=b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><exif:GPSLatitude>42,21.3N'
        b"</exif:GPSLatitude></x:xmpmeta>",
        comment=b"Taken at home, 7 Elm Street",
    )
    photo = stored_photo(client, pothole, upload("meta.jpg", source.getvalue()))

    image = open_stored(photo.image)
    assert "xmp" not in image.info
    assert "comment" not in image.info
    raw = photo.image.open("rb").read()
    photo.image.close()
    assert b"Elm Street" not in raw
    assert b"GPSLatitude" not in raw


def test_png_text_chunks_are_not_carried_into_the_stored_photo():
    from PIL import PngImagePlugin

    text = PngImagePlugin.PngInfo()
    text.add_text("Comment", "Taken at home, 7 Elm Street")
    source = io.BytesIO()
    Image.new("RGB", (60, 40)).save(source, format="PNG", pnginfo=text)

    processed = process_photo(upload("text.png", source.getvalue(), content_type="image/png"))

    assert b"Elm Street" not in processed.image
    assert b"Elm Street" not in processed.thumbnail


def test_exif_orientation_is_applied_to_the_pixels(client, pothole):
    # Orientation 6: the camera was turned; the picture must be turned 90° clockwise.
    photo = stored_photo(client, pothole, upload("turned.jpg", split_image((80, 40), 6)))

    image = open_stored(photo.image)
    assert image.size == (40, 80)
    assert (photo.width, photo.height) == (40, 80)
    assert ORIENTATION not in image.getexif()
    assert is_red(image.getpixel((20, 10)))  # what was the left is now on top
    assert is_blue(image.getpixel((20, 70)))


def test_large_photo_is_scaled_to_2048_on_the_long_edge_and_thumbnail_is_small(client, pothole):
    photo = stored_photo(client, pothole, upload("wide.jpg", make_image(size=(3000, 1500))))

    image = open_stored(photo.image)
    assert image.size == (2048, 1024)
    assert (photo.width, photo.height) == (2048, 1024)
    thumb = open_stored(photo.thumbnail)
    assert max(thumb.size) <= 400


def test_tall_photo_is_capped_on_its_height():
    processed = process_photo(upload("tall.jpg", make_image(size=(500, 2500))))
    assert (processed.width, processed.height) == (410, 2048)


def test_small_photo_is_not_enlarged():
    processed = process_photo(upload("small.jpg", make_image(size=(120, 80))))
    assert (processed.width, processed.height) == (120, 80)


def test_png_with_transparency_is_stored_as_jpeg_on_white(client, pothole):
    image = Image.new("RGBA", (60, 40), (0, 0, 0, 0))
    image.paste((200, 0, 0, 255), (0, 0, 30, 40))
    source = io.BytesIO()
    image.save(source, format="PNG")

    photo = stored_photo(
        client, pothole, upload("alpha.png", source.getvalue(), content_type="image/png")
    )

    stored = open_stored(photo.image)
    assert stored.format == "JPEG"
    assert stored.mode == "RGB"
    assert all(channel > 240 for channel in stored.getpixel((50, 20)))  # was transparent
    r, g, b = stored.getpixel((10, 20))
    assert r > 180 and g < 40 and b < 40


def test_webp_photo_is_accepted_and_stored_as_jpeg(client, pothole):
    photo = stored_photo(
        client,
        pothole,
        upload("shot.webp", make_image("WEBP", size=(60, 40)), content_type="image/webp"),
    )
    assert open_stored(photo.image).format == "JPEG"


def test_heic_photo_is_accepted_and_stored_as_jpeg(client, pothole):
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    source = io.BytesIO()
    try:
        Image.new("RGB", (64, 48), (30, 60, 200)).save(source, format="HEIF")
    except (KeyError, OSError, ValueError) as error:
        pytest.skip(f"pillow_heif cannot encode HEIC here: {error}")

    photo = stored_photo(
        client, pothole, upload("phone.heic", source.getvalue(), content_type="image/heic")
    )

    stored = open_stored(photo.image)
    assert stored.format == "JPEG"
    assert stored.size == (64, 48)


def test_corrupt_heic_is_rejected_not_a_server_error():
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    source = io.BytesIO()
    try:
        Image.new("RGB", (32, 24), (30, 60, 200)).save(source, format="HEIF")
    except (KeyError, OSError, ValueError) as error:
        pytest.skip(f"pillow_heif cannot encode HEIC here: {error}")
    heic = source.getvalue()
    # Zero one byte of the HEVC parameter sets at a time until the decoder fails on its own
    # (which byte does it depends on the encoder's version).
    start = heic.find(b"hvcC")
    for position in range(start + 4, start + 120):
        corrupt = heic[:position] + b"\0" + heic[position + 1 :]
        try:
            Image.open(io.BytesIO(corrupt)).load()
        except RuntimeError:
            break
        except Exception:  # any other failure is handled already
            continue
    else:
        pytest.skip("no single-byte corruption makes this libheif raise RuntimeError")

    with pytest.raises(PhotoRejected, match="is not a photo we can read"):
        process_photo(upload("broken.heic", corrupt, content_type="image/heic"))


def test_gps_is_read_from_the_photo_before_it_is_stripped():
    processed = process_photo(upload("gps.jpg", make_image(size=(40, 30), gps=(42.3601, -71.0589))))
    assert processed.gps == pytest.approx((42.3601, -71.0589), abs=1e-4)
    assert b"TestCam" not in processed.image


def test_southern_and_western_gps_references_give_negative_coordinates():
    sydney = (-33.8688, 151.2093)
    processed = process_photo(upload("gps.jpg", make_image(size=(40, 30), gps=sydney)))
    assert processed.gps == pytest.approx(sydney, abs=1e-4)


def test_photo_without_gps_has_no_location():
    assert process_photo(upload("plain.jpg", make_image(size=(40, 30)))).gps is None


# --- Serving photos --------------------------------------------------------------------------


def small_photo(name):
    return process_photo(upload(name, make_image(size=(60, 40))))


@pytest.fixture
def request_with_photos(pothole):
    service_request = ServiceRequestFactory(category=pothole)
    shown = photo_attach(service_request, small_photo("a.jpg"))
    hidden = photo_attach(service_request, small_photo("b.jpg"))
    hidden.is_public = False
    hidden.save()
    return service_request, shown, hidden


def fetch(client, url):
    # Exhausting streaming_content closes the file; calling response.close() ourselves would
    # send request_finished again and close the test's database connection.
    response = client.get(url)
    body = b"".join(response.streaming_content) if response.streaming else b""
    return response, body


def test_public_photo_is_served_as_jpeg_to_anyone(client, request_with_photos):
    _request, shown, _hidden = request_with_photos

    for url in (shown.get_absolute_url(), shown.get_thumbnail_url()):
        response, body = fetch(client, url)
        assert response.status_code == 200
        assert response["Content-Type"] == "image/jpeg"
        assert response["X-Content-Type-Options"] == "nosniff"
        assert Image.open(io.BytesIO(body)).format == "JPEG"


def test_hidden_photo_is_404_for_the_public(client, request_with_photos):
    _request, _shown, hidden = request_with_photos

    assert fetch(client, hidden.get_absolute_url())[0].status_code == 404
    assert fetch(client, hidden.get_thumbnail_url())[0].status_code == 404


def test_photo_of_a_hidden_request_is_404_for_the_public(client, request_with_photos):
    service_request, shown, _hidden = request_with_photos
    ServiceRequest.objects.filter(pk=service_request.pk).update(is_public=False)

    assert fetch(client, shown.get_absolute_url())[0].status_code == 404


def test_dispatcher_can_see_a_hidden_photo_and_it_is_not_cached_publicly(
    client, request_with_photos, dispatcher
):
    _request, _shown, hidden = request_with_photos
    client.force_login(dispatcher)

    response, _body = fetch(client, hidden.get_absolute_url())

    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    assert "public" not in response["Cache-Control"]


def test_unknown_photo_is_404(client, db):
    url = reverse("requests_app:photo", args=["00000000-0000-0000-0000-000000000000", "full"])
    assert fetch(client, url)[0].status_code == 404
