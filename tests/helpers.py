"""Helpers the tests call (fixtures live in conftest.py): a real ``bentoml serve``, image encoding, the shapes
dataset generator, and BatchNorm calibration of random networks."""

from __future__ import annotations

import io
import json
import os
import struct
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from prometheus_client.parser import text_string_to_metric_families

from inference import imaging
from inference.contract import FP32
from inference.model import LoadedModel
from inference.settings import InferenceSettings
from tests.server import BIN, REPO_ROOT, bentoml_serve
from toolkit import data_folder

__all__ = ["BIN", "REPO_ROOT"]

REQUIRE_ENV = "RESNET_LAB_REQUIRE_DATA"  # 1: a test whose dataset is missing fails instead of skipping (CI)
SHIPPED_COCO = REPO_ROOT / "tests" / "data" / "coco"  # 13 real COCO val2017 photos and annotations (README there)

# A real-COCO detector small enough for CPU CI: short side 160, RoIAlign 7x7 and 16 sampled RoIs per image keep
# conv5_x per region cheap; the per-epoch evaluation sees 4 val2017 images with 50 proposals each.
COCO_SMALL_FLAGS = [
    "--batch-size", "2", "--min-size-train", "160", "--min-size-test", "160", "--max-size", "256",
    "--max-train-samples", "4", "--warmup-iters", "2", "--workers", "0", "--roi-output-size", "7",
    "--box-batch-size-per-image", "16", "--rpn-post-nms-top-n-test", "50", "--max-eval-samples", "4",
    "--log-every", "1", "--max-iters", "8",
]  # fmt: skip
# A small C4 detector on cifar_resnet20 that learns the shapes dataset in a few CPU minutes (AP50 ~0.9).
SHAPES_FLAGS = [
    "--from-scratch", "--arch", "cifar_resnet20", "--max-iters", "120", "--batch-size", "4", "--lr", "0.02",
    "--warmup-iters", "20", "--min-size-train", "64", "--min-size-test", "64", "--max-size", "64", "--workers", "0",
    "--norm", "batch", "--trainable-stages", "4", "--anchor-sizes", "16", "24", "32",
    "--rpn-pre-nms-top-n-train", "1000", "--rpn-post-nms-top-n-train", "200", "--box-batch-size-per-image", "16",
    "--rpn-post-nms-top-n-test", "50",
]  # fmt: skip


def dataset(name: str) -> Path:
    """Dataset ``name`` of the data folder (``toolkit.data_folder.DATASETS``). Without it the test is skipped with
    one line naming the dataset and how to get it; under ``RESNET_LAB_REQUIRE_DATA=1`` (CI) it fails instead."""
    try:
        return data_folder.locate(name)
    except data_folder.DataMissing as missing:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{missing} ({REQUIRE_ENV}=1: nothing may be skipped)", pytrace=False)
        pytest.skip(str(missing))


def image_batch(files: Sequence[Path], resize: int, crop: int) -> torch.Tensor:
    """uint8 ``[N, 3, crop, crop]`` through the project's loader, resize and centre crop."""
    return torch.stack([torch.from_numpy(imaging.preprocess(path, resize, crop)) for path in files])


def calibrate(model: torch.nn.Module, batch: torch.Tensor, fc_scale: float) -> torch.nn.Module:
    """BatchNorm running stats from real images (cumulative average), then a scaled classifier."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    model.train()
    with torch.no_grad():
        model(batch)
        model.fc.weight.mul_(fc_scale)
    return model.eval()


def tiny_png_declaring(width: int, height: int) -> bytes:
    """A ~100-byte PNG whose header claims width x height RGB pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (1 + 3 * 64) * 4)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


UPLOAD_LIMIT = 3_000_000  # RESNET_LAB_MAX_UPLOAD_BYTES of the servers that get BAD_INPUTS
# Uploads every endpoint must refuse with a JSON 4xx: name -> (make(files, photo) -> bytes, form fields, status);
# ``files`` are real JPEG files, ``photo(index)`` a decoded real photo. /classify and /detect both get them.
BAD_INPUTS = {
    "random bytes": (lambda files, photo: os.urandom(5000), {}, 400),
    "text file": (lambda files, photo: b"name,score\ncat,0.9\n" * 20, {}, 400),
    "empty upload": (lambda files, photo: b"", {}, 400),
    "truncated jpeg": (lambda files, photo: files[0].read_bytes()[:4000], {}, 400),
    "over the size limit": (lambda files, photo: os.urandom(UPLOAD_LIMIT + 10), {}, 413),
    "decompression bomb": (lambda files, photo: tiny_png_declaring(20000, 20000), {}, 413),
    "top_k not a number": (lambda files, photo: encode(photo(), "PNG"), {"top_k": "five"}, 400),
    "top_k zero": (lambda files, photo: encode(photo(), "PNG"), {"top_k": "0"}, 400),
    "top_k negative": (lambda files, photo: encode(photo(), "PNG"), {"top_k": "-3"}, 400),
    "top_k above the classes": (lambda files, photo: encode(photo(), "PNG"), {"top_k": "1001"}, 400),
}


# Sparse category ids on purpose: the detector must map them to labels 1..K and back.
SHAPE_CATEGORIES = [
    {"id": 3, "name": "red_square", "supercategory": "shape"},
    {"id": 7, "name": "green_disc", "supercategory": "shape"},
    {"id": 11, "name": "blue_bar", "supercategory": "shape"},
]
COLORS = {3: (230, 40, 40), 7: (40, 210, 60), 11: (50, 80, 235)}


def draw_shape(draw: ImageDraw.ImageDraw, category_id: int, box: tuple[int, int, int, int]) -> None:
    """Square, disc or bar filling ``box`` (x1, y1, x2, y2)."""
    if category_id == 7:
        draw.ellipse(box, fill=COLORS[category_id])
    else:
        draw.rectangle(box, fill=COLORS[category_id])


def make_shapes_split(root: Path, split: str, num_images: int, seed: int, size: int = 64) -> Path:
    """Write ``root/<split>/*.png`` and ``root/annotations/instances_<split>.json``; every 10th image is empty."""
    rng = np.random.default_rng(seed)
    (root / split).mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in range(num_images):
        image_id = 1000 + index
        pixels = rng.integers(70, 150, size=(size, size, 3), dtype=np.uint8)
        image = Image.fromarray(pixels)
        draw = ImageDraw.Draw(image)
        placed: list[tuple[int, int, int, int]] = []
        count = 0 if index % 10 == 9 else int(rng.integers(1, 3))
        for _ in range(count):
            category_id = int(rng.choice(list(COLORS)))
            for _attempt in range(20):
                if category_id == 11:  # a bar: wide and low
                    w, h = int(rng.integers(24, 36)), int(rng.integers(10, 14))
                else:
                    w = h = int(rng.integers(16, 28))
                x, y = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
                box = (x, y, x + w, y + h)
                if all(box[2] <= b[0] or b[2] <= box[0] or box[3] <= b[1] or b[3] <= box[1] for b in placed):
                    break
            else:
                continue
            placed.append(box)
            draw_shape(draw, category_id, (box[0], box[1], box[2] - 1, box[3] - 1))
            annotations.append(
                {
                    "id": len(annotations) + 1 + image_id * 10,
                    "image_id": image_id,
                    "category_id": category_id,
                    "bbox": [float(x), float(y), float(w), float(h)],
                    "area": float(w * h),
                    "iscrowd": 0,
                }
            )
        file_name = f"{image_id:012d}.png"
        image.save(root / split / file_name)
        images.append({"id": image_id, "file_name": file_name, "width": size, "height": size})
    ann_file = root / "annotations" / f"instances_{split}.json"
    ann_file.write_text(json.dumps({"images": images, "annotations": annotations, "categories": SHAPE_CATEGORIES}))
    return ann_file


# The test session answers in fp32 on every CPU (the default is bf16 on CPUs with bf16 units for files whose bf16 check
# passed): conftest sets it for every process the tests start, and ``offline`` loads files the same way. Tests of bf16
# and of the runtime choice set their own settings.
TEST_RUNTIME = InferenceSettings(precision=FP32)
TEST_ENV = {TEST_RUNTIME.env_name("precision"): TEST_RUNTIME.precision}


def offline(path: str | Path, task: str | None = None, **settings: str) -> LoadedModel:
    """The file loaded in this process as a test server with the same runtime settings would load it."""
    return LoadedModel.load(path, replace(TEST_RUNTIME, **settings), task)


@contextmanager
def bentoml_server(model: str | Path, logs: Path, bentoml_home: Path, **env: str) -> Iterator[httpx.Client]:
    """A real ``bentoml serve`` from the repo root; yields a client once /readyz answers; stopped at the end."""
    server_env = {"RESNET_LAB_MODEL": str(model), "BENTOML_HOME": str(bentoml_home), **env}
    with (
        bentoml_serve(server_env, logs / f"serve-{len(list(logs.iterdir()))}.log") as server,
        httpx.Client(base_url=server.url, timeout=120.0) as client,
    ):
        client.server = server  # type: ignore[attr-defined]
        client.log_path = server.log  # type: ignore[attr-defined]
        yield client


def encode(image: Image.Image, format: str, **options: object) -> bytes:
    """PIL image -> encoded bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def burst(send: Callable[[bytes], httpx.Response], payloads: Sequence[bytes]) -> list[httpx.Response]:
    """Send every payload at once (one thread each, released together by a barrier); the responses in order."""
    barrier = threading.Barrier(len(payloads))

    def released(data: bytes) -> httpx.Response:
        barrier.wait()
        return send(data)

    with ThreadPoolExecutor(max_workers=len(payloads)) as pool:
        return list(pool.map(released, payloads))


def metric(text: str, name: str, **labels: str) -> float:
    """One sample of ``/metrics`` (Prometheus text) whose labels include ``labels``; 0 before its first observation."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                return sample.value
    return 0.0
