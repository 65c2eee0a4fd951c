"""The one image loader of resnet-lab, with PIL and numpy only: serving, evaluation and export checks all use it.

``load_rgb`` decodes the first frame, applies the EXIF orientation and converts any mode to RGB, so the same file
gives the same pixels everywhere. ``preprocess`` then resizes the shorter side to ``resize_size`` (bilinear with
antialiasing: PIL's resize, which is what torchvision v2 ``Resize`` runs on PIL images) and centre-crops
``crop_size`` (torchvision's anchor rounding and zero padding): the classifiers' eval transform. Bad uploads raise
``ImageRejected`` with the HTTP status to answer; nothing here allocates more than the pixel limit allows.
"""

from __future__ import annotations

import io
import math
import os
import struct
import warnings
import zlib

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}
# Beyond this many pixels after the resize, resize only the region the centre crop keeps (1x4000 strips).
MAX_RESIZED_PIXELS = 16_000_000
# The fast path keeps a large JPEG's shorter side at least this many times the resize target when it decodes it at
# reduced scale; the antialiased resize does the rest. Measured on 3,000 CIFAR-10 test images upscaled 8x (JPEG q90):
# the default model's top-1 moved on 5.3% of them at 1x (libjpeg straight to the target), 2.3% at 2x, 0.3% at 4x.
FAST_DECODE_MARGIN = 4
# Smaller model inputs always take the exact path: on the same 8x-upscaled CIFAR-10 images, the 32x32 default model's
# error moved by 0.15 points through the fast path (docs/bench/fast_decode.json), while 224x224 inputs of phone
# photos differ by about 0.1 grey levels on average.
FAST_DECODE_MIN_INPUT = 64


def fast_decode_keeps_answers(crop_size: int) -> bool:
    """Whether the fast path is the default for a model whose input is ``crop_size`` square."""
    return crop_size >= FAST_DECODE_MIN_INPUT


# What PIL's decoders raise on broken or hostile files (plugins use all of these). Anything else is our bug or
# the machine's (MemoryError) and must surface as a server error, not as the client's fault.
DECODER_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error)
Source = bytes | str | os.PathLike


class ImageRejected(ValueError):
    """An image we refuse, with the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def set_pixel_limit(max_pixels: int) -> None:
    """Make PIL's own decompression-bomb limit ours, so neither caps the other (call once per process)."""
    Image.MAX_IMAGE_PIXELS = max_pixels


def load_rgb(source: Source, max_pixels: int | None = None, min_side: int | None = None) -> Image.Image:
    """Decode the first frame of ``source`` (bytes or a path) as RGB after EXIF orientation.

    Images over ``max_pixels`` (default: PIL's limit) are refused from their header, before any pixel is decoded.
    With ``min_side``, a JPEG at least twice that on its shorter side is decoded at 1/2, 1/4 or 1/8 scale in the
    DCT domain (libjpeg's scaling, never below ``min_side``): a phone photo costs a fraction of a full decode.
    """
    limit = max_pixels or Image.MAX_IMAGE_PIXELS or 0
    if isinstance(source, bytes) and not source:
        raise ImageRejected("empty upload: the `image` field holds no bytes")
    stream = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")  # noqa: SIM115
    with stream:
        image = _open(stream, limit)
        width, height = image.size
        if width < 1 or height < 1:
            raise ImageRejected(f"image has no pixels ({width}x{height})")
        if limit and width * height > limit:
            pixels = f"{width}x{height} = {width * height:,} pixels"
            raise ImageRejected(f"image is {pixels}, over the limit of {limit:,}", 413)
        try:
            image.seek(0)  # animated formats: the first frame
            if min_side:
                reduce_in_decoder(image, min_side)
            image.load()
            return to_rgb(ImageOps.exif_transpose(image))
        except DECODER_ERRORS as error:  # truncated data, bad EXIF, unsupported sub-formats
            raise ImageRejected(f"cannot decode the image: {error.__class__.__name__}: {str(error)[:200]}") from None


def reduce_in_decoder(image: Image.Image, min_side: int) -> None:
    """Ask the JPEG decoder for the smallest power-of-two reduction that keeps the shorter side >= ``min_side``."""
    width, height = image.size
    if image.format != "JPEG" or min(width, height) < 2 * min_side:
        return
    scale = min_side / min(width, height)
    image.draft(image.mode, (math.ceil(width * scale), math.ceil(height * scale)))


def _open(stream: io.IOBase, limit: int) -> Image.Image:
    """``Image.open`` (reads the header only), its errors mapped to ``ImageRejected``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit is checked next
            return Image.open(stream)
    except Image.DecompressionBombError:
        raise ImageRejected(f"image declares more than {limit:,} pixels; refused", 413) from None
    except UnidentifiedImageError:
        raise ImageRejected("not an image: expected JPEG, PNG, GIF, WebP, BMP or TIFF bytes") from None
    except DECODER_ERRORS as error:  # corrupt headers raise assorted types
        raise ImageRejected(f"cannot read the image header ({error.__class__.__name__})") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB view of any PIL mode; 16/32-bit greyscale is scaled to 8 bits (PIL's convert would clip it)."""
    if image.mode == "RGB":
        return image
    if image.mode in SIXTEEN_BIT_MODES:
        values = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if values.max(initial=0) > 255 or image.mode != "I" else 255.0
        image = Image.fromarray(np.clip(np.rint(values * (255.0 / peak)), 0, 255).astype(np.uint8), "L")
    elif image.mode == "F":
        image = Image.fromarray(np.clip(np.rint(np.asarray(image)), 0, 255).astype(np.uint8), "L")
    elif image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # PIL's recommended path for palette transparency
    return image.convert("RGB")


def resized_size(width: int, height: int, size: int) -> tuple[int, int]:
    """torchvision's rule: the shorter side becomes ``size``, the longer keeps the aspect ratio (truncated)."""
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def crop_box(width: int, height: int, crop: int) -> tuple[int, int]:
    """Top-left of torchvision's centre crop, padding included (negative when the image is smaller)."""
    left = -((crop - width) // 2) if crop > width else int(round((width - crop) / 2.0))
    top = -((crop - height) // 2) if crop > height else int(round((height - crop) / 2.0))
    return left, top


def resize_and_crop(image: Image.Image, resize_size: int, crop_size: int) -> Image.Image:
    """Shorter side to ``resize_size`` (bilinear, antialiased), then the centre ``crop_size`` square."""
    width, height = image.size
    new_width, new_height = resized_size(width, height, resize_size)
    left, top = crop_box(new_width, new_height, crop_size)
    if new_width * new_height > MAX_RESIZED_PIXELS and left >= 0 and top >= 0:
        # Resize only the part the crop keeps: same scale, so the same filter, without a gigapixel buffer.
        scale_x, scale_y = width / new_width, height / new_height
        box = (left * scale_x, top * scale_y, (left + crop_size) * scale_x, (top + crop_size) * scale_y)
        return image.resize((crop_size, crop_size), Image.Resampling.BILINEAR, box=box)
    if (new_width, new_height) != (width, height):
        image = image.resize((new_width, new_height), Image.Resampling.BILINEAR)
    if (left, top, new_width, new_height) == (0, 0, crop_size, crop_size):
        return image
    return image.crop((left, top, left + crop_size, top + crop_size))  # PIL fills outside with zeros


def to_chw(image: Image.Image) -> np.ndarray:
    """uint8 ``[3, H, W]`` contiguous array from an RGB image."""
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1))


def preprocess(
    source: Source, resize_size: int, crop_size: int, max_pixels: int | None = None, fast: bool = False
) -> np.ndarray:
    """Image bytes or file -> uint8 ``[3, crop, crop]``, the classifiers' eval transform.

    ``fast``: JPEGs over 2 x ``FAST_DECODE_MARGIN`` times ``resize_size`` on their shorter side are decoded at a
    reduced scale first (``load_rgb``'s ``min_side``); the exact path decodes every pixel, as training's evaluation.
    """
    image = load_rgb(source, max_pixels, min_side=FAST_DECODE_MARGIN * resize_size if fast else None)
    return to_chw(resize_and_crop(image, resize_size, crop_size))
