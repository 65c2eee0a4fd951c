"""What an offline job runs on the Ray cluster: image decoding as tasks, the model in an actor pool. No torch.

Both stages use the inference core, as the server does: ``inference.imaging`` decodes exactly as ``/classify`` and
``/detect`` do, ``inference.model.LoadedModel`` runs the file on the runtime the same settings pick (on each actor's
own hardware), and ``inference.answers`` shapes the same JSON answers. A file that cannot be read or decoded becomes
its row's ``error``; it never fails the task.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import ray

from batch import inputs
from inference import answers, imaging
from inference.contract import CLASSIFICATION
from inference.model import LoadedModel
from inference.settings import InferenceSettings

logger = logging.getLogger("resnet_lab.batch")

# The job's rows: one per input file; ``answer`` is /classify's or /detect's JSON, ``error`` why there is none.
SCHEMA = pa.schema([("path", pa.string()), ("answer", pa.string()), ("error", pa.string())])
DECODED = ""  # the decode stage's ``error`` for a file that decoded (the output has null there)


@dataclass(frozen=True)
class Decoding:
    """How the decode tasks turn a file into the model's input, as the service does."""

    task: str
    max_file_bytes: int
    max_image_pixels: int
    resize_size: int = 0  # classification: the service's resize and centre crop, its fast-decode rule
    crop_size: int = 0
    fast: bool = False


@dataclass(frozen=True)
class Answering:
    """The options of the service's answer: ``top_k`` for /classify, ``score_threshold``, ``max_detections`` for
    /detect (the same defaults)."""

    top_k: int = answers.DEFAULT_TOP_K
    score_threshold: float = answers.DEFAULT_SCORE_THRESHOLD
    max_detections: int = answers.DEFAULT_MAX_DETECTIONS


def _decode_one(path: str, decoding: Decoding) -> tuple[np.ndarray, tuple[int, int]]:
    """One file -> the model's uint8 input and the image's (width, height) as displayed."""
    data = inputs.read_bytes(path, decoding.max_file_bytes)
    if not data:
        raise inputs.FileRefused("empty file: it holds no bytes")
    if decoding.task == CLASSIFICATION:
        pixels = imaging.preprocess(
            data, decoding.resize_size, decoding.crop_size, decoding.max_image_pixels, fast=decoding.fast
        )
        return pixels, (0, 0)  # /classify's answer holds no size
    image = imaging.load_rgb(data, decoding.max_image_pixels)
    return imaging.to_chw(image), (image.width, image.height)


def decode_batch(batch: dict[str, np.ndarray], decoding: Decoding) -> dict[str, np.ndarray]:
    """The decode task: ``path`` -> ``pixels`` (placeholder zeros where it failed), ``width``, ``height``,
    ``error`` (``DECODED`` or the reason)."""
    imaging.set_pixel_limit(decoding.max_image_pixels)  # PIL's own bomb check must not undercut ours
    placeholder = (
        np.zeros((3, decoding.crop_size, decoding.crop_size), np.uint8)
        if decoding.task == CLASSIFICATION
        else np.zeros((3, 1, 1), np.uint8)
    )
    pixels, sizes, errors = [], [], []
    for path in batch["path"]:
        try:
            array, size = _decode_one(str(path), decoding)
            error = DECODED
        except (inputs.FileRefused, imaging.ImageRejected) as refused:
            array, size, error = placeholder, (0, 0), str(refused)
        except MemoryError:
            raise
        except Exception as failure:  # a decoder bug on one hostile file must not end a job of millions
            array, size = placeholder, (0, 0)
            error = f"cannot decode the image: {failure.__class__.__name__}: {str(failure)[:200]}"
        pixels.append(array)
        sizes.append(size)
        errors.append(error)
    if decoding.task == CLASSIFICATION:
        column = np.stack(pixels)
    else:  # images differ in size: a variable-shaped tensor column
        column = np.empty(len(pixels), dtype=object)
        column[:] = pixels
    widths, heights = (np.array(values, dtype=np.int64) for values in zip(*sizes, strict=True))
    return {"path": batch["path"], "pixels": column, "width": widths, "height": heights, "error": np.array(errors)}


class Answerer:
    """One model session per actor; each call answers a decoded batch as the service would."""

    def __init__(
        self, model: bytes | ray.ObjectRef, task: str, answering: Answering, inference: InferenceSettings, gpu: bool
    ) -> None:
        data = ray.get(model) if isinstance(model, ray.ObjectRef) else model
        with tempfile.TemporaryDirectory(prefix="resnet-lab-batch-") as folder:  # the runtime keeps it in memory
            path = Path(folder) / "model.onnx"
            path.write_bytes(data)
            # a GPU actor takes CUDA where the GPU works, a CPU actor never touches one
            self.model = LoadedModel.load(path, inference, task, use_gpu=gpu)
        runs = self.model.describe()
        if gpu and runs["device"] != "CUDA":
            logger.warning("asked for a GPU, but the model runs on %s %s", runs["runtime"], runs["device"])
        self.task, self.answering = task, answering
        metadata = self.model.metadata
        self.names = {int(category["id"]): str(category["name"]) for category in metadata.categories}

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        """Decoded rows -> (path, answer JSON, error) rows."""
        errors = [str(error) for error in batch["error"]]
        good = [index for index, error in enumerate(errors) if error == DECODED]
        shaped = self._classify(batch, good) if self.task == CLASSIFICATION else self._detect(batch, good)
        found = dict(zip(good, shaped, strict=True))
        return pa.table(
            {
                "path": [str(path) for path in batch["path"]],
                "answer": [json.dumps(found[index]) if index in found else None for index in range(len(errors))],
                "error": [None if error == DECODED else error for error in errors],
            },
            schema=SCHEMA,
        )

    def _classify(self, batch: dict[str, np.ndarray], good: list[int]) -> list[dict]:
        if not good:
            return []
        pixels = np.ascontiguousarray(batch["pixels"][good])
        logits = self.model.logits(pixels).astype(np.float32, copy=False)  # as the service's batched call
        metadata, top_k = self.model.metadata, self.answering.top_k
        return [answers.classification(metadata.model_name, metadata.labels, row, top_k) for row in logits]

    def _detect(self, batch: dict[str, np.ndarray], good: list[int]) -> list[dict]:
        shaped = []
        for index in good:  # images differ in size: one ORT run each, as /detect does
            boxes, scores, labels = self.model.detect(np.ascontiguousarray(batch["pixels"][index], dtype=np.uint8))
            found = answers.detections(
                boxes, scores, labels, self.names, self.answering.score_threshold, self.answering.max_detections
            )
            size = (int(batch["width"][index]), int(batch["height"][index]))
            shaped.append(answers.detection(self.model.metadata.model_name, size, found))
        return shaped
