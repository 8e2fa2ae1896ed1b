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
from django.template.defaultfilters import filesizeformat
from django.utils.translation import gettext as _
from PIL import Image, UnidentifiedImageError

try:
    from pillow_heif import register_heif_opener

    register_heif_opener()
    ACCEPTED_FORMATS = {"JPEG", "PNG", "WEBP", "HEIF"}
except ImportError:  # pragma: no cover - pillow-heif is a dependency, but optional at heart
    ACCEPTED_FORMATS = {"JPEG", "PNG", "WEBP"}

GPS_IFD = 0x8825
ORIENTATION = 0x0112
# EXIF orientation → the transposition that shows the picture upright (as ImageOps uses).
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


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
        # filesizeformat, not whole megabytes: a limit below 1 MB must not read "0 MB".
        raise PhotoRejected(
            _("%(name)s is larger than %(limit)s.")
            % {"name": name, "limit": filesizeformat(settings.PHOTO_MAX_BYTES)}
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
            # Checked here as well as by the warning filter above: catch_warnings changes
            # process-wide state, so another thread leaving its own catch_warnings block can
            # quietly drop our filter, and the bomb would then be decoded after all.
            if image.width * image.height > _pixel_limit():
                raise PhotoRejected(
                    _("%(name)s has too many pixels (%(w)d × %(h)d).")
                    % {"name": name, "w": image.width, "h": image.height}
                )
            exif = _exif(image)
            image.load()  # decodes every byte: truncated or corrupt files fail here
        except PhotoRejected:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise PhotoRejected(_("%(name)s has too many pixels.") % {"name": name}) from None
        # pillow-heif reports undecodable HEIC (e.g. a corrupt parameter set claiming a huge
        # picture) as RuntimeError, where Pillow's own decoders use OSError.
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, RuntimeError):
            raise PhotoRejected(not_a_photo) from None

    gps = _gps_coordinates(exif)
    # Not ImageOps.exif_transpose: it writes the remaining EXIF back into the image, and
    # a malformed tag (which the camera's firmware or an editor may well produce) makes
    # that raise. We throw the EXIF away, so only the orientation is needed.
    transpose = _TRANSPOSE.get(_orientation(exif))
    if transpose is not None:
        image = image.transpose(transpose)
    image = _flatten(image)
    # convert() and copy() carry `info` along, and the JPEG encoder writes info["comment"]
    # (a JPEG COM segment, free text that cameras and apps fill) unless told otherwise.
    image.info = {}
    image.thumbnail((settings.PHOTO_MAX_EDGE, settings.PHOTO_MAX_EDGE))
    # Huffman optimisation would triple the encoder's time for a few per cent of bytes;
    # the full image is encoded while the resident waits, the small thumbnail is cheap.
    full = _jpeg_bytes(image, quality=85, optimize=False)
    # Resized from the image rather than from a copy of it: copying a phone photo's
    # pixels costs as much as making the thumbnail.
    thumb_image = image.resize(_contained(image.size, settings.PHOTO_THUMB_EDGE), reducing_gap=2.0)
    return ProcessedPhoto(
        image=full,
        thumbnail=_jpeg_bytes(thumb_image, quality=80, optimize=True),
        width=image.width,
        height=image.height,
        gps=gps,
    )


def _contained(size, edge) -> tuple[int, int]:
    """`size` scaled to fit within edge × edge, keeping its proportions.

    Not Image.thumbnail(): where a side comes to a half pixel, it rounds towards the
    closer aspect ratio and round() to even, so about one stored size in 500 (203 × 800,
    say) would get a thumbnail 1 px different from the ones made so far.
    """
    width, height = size
    scale = min(1.0, edge / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _flatten(image):
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGB", image.size, "white")
        background.paste(image, mask=image.getchannel("A"))
        return background
    # convert() copies every pixel even when there is nothing to convert.
    return image if image.mode == "RGB" else image.convert("RGB")


def _jpeg_bytes(image, *, quality, optimize):
    out = io.BytesIO()
    # EXIF/XMP/ICC are only written when passed explicitly, and we pass none; `info` was
    # emptied in process_photo, so no comment is copied either.
    image.save(out, format="JPEG", quality=quality, optimize=optimize)
    return out.getvalue()


def _pixel_limit():
    pillow_limit = Image.MAX_IMAGE_PIXELS
    if pillow_limit is None:
        return settings.PHOTO_MAX_PIXELS
    return min(settings.PHOTO_MAX_PIXELS, pillow_limit)


def _exif(image):
    # EXIF is optional and written by all sorts of firmware and apps: when it does not
    # parse, the photo is still a photo, just one without orientation or location.
    try:
        return image.getexif()
    except Exception:
        return Image.Exif()


def _orientation(exif) -> int:
    try:
        return int(exif.get(ORIENTATION, 1))
    except (TypeError, ValueError):
        return 1


def _gps_coordinates(exif) -> tuple[float, float] | None:
    try:
        gps = exif.get_ifd(GPS_IFD)
        lat = _degrees(gps[2], gps.get(1, "N"), "S")
        lng = _degrees(gps[4], gps.get(3, "E"), "W")
    except Exception:  # same reasoning as in _exif: a bad GPS block means no location
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
