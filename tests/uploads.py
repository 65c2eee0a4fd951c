"""Uploads as people send them, made from real photos: 12-megapixel phone photos with EXIF orientation."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from inference import imaging

PHONE_SIZE = (4032, 3024)  # a 12-megapixel phone photo


def phone_photo(source: Path | bytes, orientation: int = 1, quality: int = 90) -> bytes:
    """A real photo as a phone would upload it: upscaled to 12 Mpx (bicubic), JPEG quality 90, EXIF orientation
    ``orientation`` (1: none; 6: rotate 90 degrees to display, the usual portrait shot)."""
    image = imaging.load_rgb(source)
    width, height = PHONE_SIZE if image.width >= image.height else PHONE_SIZE[::-1]
    if orientation in (5, 6, 7, 8):  # stored sideways; the EXIF tag turns it upright on display
        image, (width, height) = image.transpose(Image.Transpose.ROTATE_90), (height, width)
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.resize((width, height), Image.Resampling.BICUBIC).save(buffer, "JPEG", quality=quality, exif=exif.tobytes())
    return buffer.getvalue()
