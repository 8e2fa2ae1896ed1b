"""Photo files made on the fly for tests: real encoders, real EXIF."""

import io

from PIL import Image

GPS_IFD = 0x8825


def _dms(value):
    value = abs(value)
    degrees = int(value)
    minutes = int((value - degrees) * 60)
    seconds = round(((value - degrees) * 60 - minutes) * 60, 4)
    return (degrees, minutes, seconds)


def make_image(fmt="JPEG", size=(800, 600), color=(200, 80, 40), gps=None, orientation=None):
    image = Image.new("RGB", size, color)
    exif = Image.Exif()
    if gps:
        lat, lng = gps
        exif[0x010F] = "TestCam"  # Make
        exif.get_ifd(GPS_IFD).update(
            {1: "N" if lat >= 0 else "S", 2: _dms(lat), 3: "E" if lng >= 0 else "W", 4: _dms(lng)}
        )
    if orientation:
        exif[0x0112] = orientation
    out = io.BytesIO()
    kwargs = {"exif": exif} if (gps or orientation) else {}
    image.save(out, format=fmt, **kwargs)
    return out.getvalue()
