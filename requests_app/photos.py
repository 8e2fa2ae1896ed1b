"""Turning an uploaded file into a photo we are willing to store and show.

Only what Pillow fully decodes as JPEG, PNG, WebP or HEIC is accepted. The stored file is
a fresh JPEG: orientation applied, at most PHOTO_MAX_EDGE pixels, and none of the
original's metadata (EXIF, XMP, GPS), so a resident's home coordinates never leak
through a photo. GPS is read before stripping, to place a report that has no pin.
"""

import io
import warnings
from dataclasses import dataclass

from django.conf import settings
from django.utils.translation import gettext as _
from PIL import Image, ImageOps, UnidentifiedImageError

try:
    from pillow_heif import register_heif_opener

    register_heif_opener()
    ACCEPTED_FORMATS = {"JPEG", "PNG", "WEBP", "HEIF"}
except ImportError:  # pragma: no cover - pillow-heif is a dependency, but optional at heart
    ACCEPTED_FORMATS = {"JPEG", "PNG", "WEBP"}

GPS_IFD = 0x8825


class PhotoRejected(Exception):
    def __init__(self, message):
        super().__init__(message)
        self.message = message


@dataclass
class ProcessedPhoto:
    image: bytes
    thumbnail: bytes
    width: int
    height: int
    gps: tuple[float, float] | None = None


def process_photo(upload) -> ProcessedPhoto:
    name = getattr(upload, "name", "photo")
    if upload.size > settings.PHOTO_MAX_BYTES:
        raise PhotoRejected(
            _("%(name)s is larger than %(limit)d MB.")
            % {"name": name, "limit": settings.PHOTO_MAX_BYTES // (1024 * 1024)}
        )
    not_a_photo = _("%(name)s is not a photo we can read (JPEG, PNG, WebP or HEIC).") % {
        "name": name
    }
    upload.seek(0)
    data = upload.read()
    with warnings.catch_warnings():
        # Pillow only warns between MAX_IMAGE_PIXELS and twice that; we refuse both ranges.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
            if image.format not in ACCEPTED_FORMATS:
                raise PhotoRejected(not_a_photo)
            if image.width * image.height > settings.PHOTO_MAX_PIXELS:
                raise PhotoRejected(
                    _("%(name)s has too many pixels (%(w)d × %(h)d).")
                    % {"name": name, "w": image.width, "h": image.height}
                )
            gps = _gps_coordinates(image)
            image.load()  # decodes every byte: truncated or corrupt files fail here
        except PhotoRejected:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise PhotoRejected(
                _("%(name)s has too many pixels.") % {"name": name}
            ) from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
            raise PhotoRejected(not_a_photo) from None

    image = ImageOps.exif_transpose(image)
    image = _flatten(image)
    image.thumbnail((settings.PHOTO_MAX_EDGE, settings.PHOTO_MAX_EDGE))
    full = _jpeg_bytes(image, quality=85)
    thumb_image = image.copy()
    thumb_image.thumbnail((settings.PHOTO_THUMB_EDGE, settings.PHOTO_THUMB_EDGE))
    return ProcessedPhoto(
        image=full,
        thumbnail=_jpeg_bytes(thumb_image, quality=80),
        width=image.width,
        height=image.height,
        gps=gps,
    )


def _flatten(image):
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGB", image.size, "white")
        background.paste(image, mask=image.getchannel("A"))
        return background
    return image.convert("RGB")


def _jpeg_bytes(image, *, quality):
    out = io.BytesIO()
    # A new Image carries no EXIF/XMP/ICC unless passed explicitly, and we pass none.
    image.save(out, format="JPEG", quality=quality, optimize=True)
    return out.getvalue()


def _gps_coordinates(image) -> tuple[float, float] | None:
    try:
        gps = image.getexif().get_ifd(GPS_IFD)
        lat = _degrees(gps[2], gps.get(1, "N"), "S")
        lng = _degrees(gps[4], gps.get(3, "E"), "W")
    except (KeyError, TypeError, ValueError, ZeroDivisionError, IndexError, AttributeError):
        return None
    if not (-90 <= lat <= 90 and -180 <= lng <= 180) or (lat == 0 and lng == 0):
        return None
    return lat, lng


def _degrees(dms, ref, negative_ref):
    degrees, minutes, seconds = (float(part) for part in dms)
    value = degrees + minutes / 60 + seconds / 3600
    if isinstance(ref, bytes):
        ref = ref.decode(errors="ignore")
    return -value if ref.strip().upper() == negative_ref else value

