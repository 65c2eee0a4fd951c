"""What the fast decode of large JPEGs changes, measured the same way by its tests and by ``bench.decode_check``:
the default model's answers on upscaled CIFAR-10 images, and the model inputs' pixels on phone-sized photos."""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from inference import imaging
from inference.contract import CLASSIFICATION, DEFAULT_MODEL, INPUT_NAMES, OUTPUT_NAMES
from tests import uploads

UPSCALE = 8


def upscaled_jpeg(pixels: np.ndarray, factor: int = UPSCALE, quality: int = 90) -> bytes:
    """A uint8 ``[3, H, W]`` image upscaled ``factor`` times (bicubic) and saved as JPEG."""
    image = Image.fromarray(pixels.transpose(1, 2, 0))
    buffer = io.BytesIO()
    image.resize((image.width * factor, image.height * factor), Image.Resampling.BICUBIC).save(
        buffer, "JPEG", quality=quality
    )
    return buffer.getvalue()


def answers(uploads: Iterable[bytes], labels: np.ndarray, model: Path = DEFAULT_MODEL) -> dict[str, float]:
    """Error of both paths and their top-1 agreement, for a 32x32 CIFAR-10 model."""
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    uploads = list(uploads)
    top1, images, outputs = {}, INPUT_NAMES[CLASSIFICATION], list(OUTPUT_NAMES[CLASSIFICATION])
    for fast in (False, True):
        batch = np.stack([imaging.preprocess(data, 32, 32, fast=fast) for data in uploads])  # the service's decode
        top1[fast] = np.concatenate(
            [session.run(outputs, {images: batch[i : i + 1000]})[0].argmax(1) for i in range(0, len(batch), 1000)]
        )
    return {
        "images": len(uploads),
        "exact_error": float((top1[False] != labels).mean()),
        "fast_error": float((top1[True] != labels).mean()),
        "agreement": float((top1[False] == top1[True]).mean()),
    }


def pixel_differences(photos: Iterable[bytes], resize: int = 256, crop: int = 224) -> list[float]:
    """Mean absolute difference (grey levels) between the exact and fast model inputs of each photo."""
    return [
        float(
            np.abs(
                imaging.preprocess(data, resize, crop).astype(np.int16)
                - imaging.preprocess(data, resize, crop, fast=True)
            ).mean()
        )
        for data in photos
    ]


def phone_photos(files: list[Path]) -> list[bytes]:
    """Real photos made phone-sized, every other one stored sideways with EXIF orientation 6."""
    return [uploads.phone_photo(path, orientation=6 if index % 2 else 1) for index, path in enumerate(files)]
