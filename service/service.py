"""BentoML service: ``POST /classify`` an image upload with an exported ResNet on ONNX Runtime (no torch).

Each request is decoded in its own handler (threads, PIL releases the GIL), then waits in BentoML's adaptive
batching queue (its ``CorkDispatcher``, with the batchable ``infer`` API's settings), which merges concurrent
requests into one session run. The queue is fed in-process: calling ``infer`` through ``self.to_async`` would
serialise every image to JSON and pass it through the whole ASGI stack a second time (~5 ms CPU per request).

    RESNET_LAB_MODEL=model.onnx bentoml serve            # from the repo root; bentofile.yaml names this service
    curl -F image=@cat.jpg -F top_k=3 http://127.0.0.1:3000/classify
"""

from __future__ import annotations

import base64
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import bentoml
import numpy as np
from bentoml._internal.marshal.dispatcher import CorkDispatcher  # BentoML's adaptive batching (bentoml<1.5 pinned)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from service.imaging import ImageRejected, preprocess
from service.limits import BodySizeLimit
from service.runtime import ModelNotFound, OnnxClassifier, logger, resolve_model, softmax_top_k


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError:
        raise SystemExit(f"{name}={value!r} must be an integer") from None


MAX_BATCH_SIZE = _env_int("RESNET_LAB_MAX_BATCH_SIZE", 32)
MAX_LATENCY_MS = _env_int("RESNET_LAB_MAX_LATENCY_MS", 20_000)
MAX_UPLOAD_BYTES = _env_int("RESNET_LAB_MAX_UPLOAD_BYTES", 20 * 1024 * 1024)
MAX_IMAGE_PIXELS = _env_int("RESNET_LAB_MAX_IMAGE_PIXELS", 50_000_000)
DECODE_THREADS = _env_int("RESNET_LAB_DECODE_THREADS", os.cpu_count() or 1)
try:  # resolved at import so `bentoml serve` stops at once with the reason, instead of restarting workers
    MODEL_PATH = resolve_model()
except ModelNotFound as missing:
    raise SystemExit(f"resnet-lab service: {missing}") from None

_current: ResNetClassifier | None = None
BATCH_SIZE_HISTOGRAM = bentoml.metrics.Histogram(
    name="resnet_lab_batch_size",
    documentation="Images per ONNX Runtime call (adaptive batching)",
    labelnames=["endpoint"],
    buckets=[1, 2, 4, 8, 16, 32, 64, 128, 256],
)


class Overloaded(RuntimeError):
    """The batching queue dropped a request that could not be answered within ``max_latency_ms``."""


def _overloaded() -> np.ndarray:
    raise Overloaded(f"server overloaded: no answer within max_latency_ms={MAX_LATENCY_MS}; retry later")


def error(status: int, message: str) -> JSONResponse:
    """The service's error body: ``{"error": message}`` with a 4xx status."""
    return JSONResponse({"error": message}, status_code=status)


async def info_endpoint(_: Request) -> JSONResponse:
    """GET/POST /info: model, sizes, providers really in use, batching settings and observed batch sizes."""
    if _current is None:
        return error(503, "model not loaded yet")
    return JSONResponse(_current.describe())


info_app = Starlette(routes=[Route("/info", info_endpoint, methods=["GET", "POST"])])


@bentoml.asgi_app(info_app, path="/")
@bentoml.service(
    name="resnet_classifier",
    workers=1,  # one process: every request reaches the same batching queue and ORT session
    traffic={"timeout": 120},
)
class ResNetClassifier:
    """Image classification with an exported resnet-lab ONNX model."""

    def __init__(self) -> None:
        global _current
        path = MODEL_PATH
        self.model = OnnxClassifier.load(path)
        self._decode_limiter: anyio.CapacityLimiter | None = None
        self._enqueue = CorkDispatcher(
            max_latency_in_ms=MAX_LATENCY_MS,
            max_batch_size=MAX_BATCH_SIZE,
            fallback=_overloaded,
            get_batch_size=lambda _: 1,  # one image per queued request
        )(self._run_queued_batch)
        self._stats_lock = threading.Lock()
        self.batch_sizes: dict[int, int] = {}
        self.seconds = {"decode": 0.0, "infer_call": 0.0, "ort": 0.0}  # totals, for the means in /info
        self.requests = 0
        logger.info(
            "resnet-lab serving %s from %s: %d labels, resize %d, crop %d, ONNX Runtime providers in use %s",
            self.model.model_name,
            path,
            len(self.model.labels),
            self.model.resize_size,
            self.model.crop_size,
            self.model.providers,
        )
        _current = self

    def describe(self) -> dict[str, Any]:
        """What /info shows."""
        with self._stats_lock:
            sizes = dict(sorted(self.batch_sizes.items()))
            seconds, requests = dict(self.seconds), self.requests
        batches = sum(sizes.values())
        return {
            "model": self.model.model_name,
            "model_path": str(self.model.path),
            "source_sha256": self.model.source_sha256,
            "num_labels": len(self.model.labels),
            "resize_size": self.model.resize_size,
            "crop_size": self.model.crop_size,
            "providers": self.model.providers,
            "batching": {"max_batch_size": MAX_BATCH_SIZE, "max_latency_ms": MAX_LATENCY_MS},
            "limits": {"max_upload_bytes": MAX_UPLOAD_BYTES, "max_image_pixels": MAX_IMAGE_PIXELS},
            "batches": {
                "count": sum(sizes.values()),
                "images": sum(size * count for size, count in sizes.items()),
                "max_size": max(sizes, default=0),
                "sizes": {str(size): count for size, count in sizes.items()},
            },
            "mean_ms": {  # where a request's time goes: decode+resize, the batched call (queue + ORT), ORT per batch
                "decode": round(1000 * seconds["decode"] / max(requests, 1), 2),
                "infer_call": round(1000 * seconds["infer_call"] / max(requests, 1), 2),
                "ort_per_batch": round(1000 * seconds["ort"] / max(batches, 1), 2),
            },
        }

    def _decode(self, upload: Path) -> np.ndarray:
        return preprocess(upload.read_bytes(), self.model.resize_size, self.model.crop_size, MAX_IMAGE_PIXELS)

    @bentoml.api(route="/classify")
    async def classify(self, image: Path, top_k: int = 5) -> dict[str, Any]:
        """Classify one uploaded image (multipart field ``image``); the ``top_k`` most likely classes."""
        num_labels = len(self.model.labels)
        if not 1 <= top_k <= num_labels:
            return error(400, f"top_k must be between 1 and {num_labels}, got {top_k}")
        size = image.stat().st_size
        if size > MAX_UPLOAD_BYTES:
            return error(413, f"upload too large: {size:,} bytes, the limit is {MAX_UPLOAD_BYTES:,}")
        started = time.perf_counter()
        if self._decode_limiter is None:
            self._decode_limiter = anyio.CapacityLimiter(DECODE_THREADS)
        try:
            pixels = await anyio.to_thread.run_sync(self._decode, image, limiter=self._decode_limiter)
        except ImageRejected as rejected:
            return error(rejected.status, str(rejected))
        decoded = time.perf_counter()
        try:
            logits = await self._enqueue(pixels)
        except Overloaded as overloaded:
            return error(503, str(overloaded))
        with self._stats_lock:
            self.requests += 1
            self.seconds["decode"] += decoded - started
            self.seconds["infer_call"] += time.perf_counter() - decoded
        predictions = [
            {"index": index, "label": self.model.labels[index], "score": score}
            for index, score in softmax_top_k(logits, top_k)
        ]
        return {"model": self.model.model_name, "predictions": predictions}

    async def _run_queued_batch(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The dispatcher's callback: one ORT run for the queued images, off the event loop."""
        # the dispatcher runs one batch at a time, so one thread at a time calls ORT
        return list(await anyio.to_thread.run_sync(self._logits, np.stack(images), "classify"))

    def _logits(self, images: np.ndarray, endpoint: str) -> np.ndarray:
        """ORT on uint8 ``[N, 3, crop, crop]``, timed and counted for /info and /metrics."""
        started = time.perf_counter()
        logits = self.model.logits(images).astype(np.float32, copy=False)
        with self._stats_lock:
            self.seconds["ort"] += time.perf_counter() - started
            self.batch_sizes[len(images)] = self.batch_sizes.get(len(images), 0) + 1
        BATCH_SIZE_HISTOGRAM.labels(endpoint=endpoint).observe(len(images))
        return logits

    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH_SIZE, max_latency_ms=MAX_LATENCY_MS)
    def infer(self, pixels: list[str]) -> list[str]:
        """Batched ORT for clients that preprocess themselves: base64 uint8 ``[3, crop, crop]`` RGB per image ->
        base64 float32 logits ("" for an item of the wrong size)."""
        crop = self.model.crop_size
        expected = 3 * crop * crop
        arrays: list[np.ndarray] = []
        valid: list[bool] = []
        for item in pixels:
            try:
                raw = base64.b64decode(item)
            except ValueError:
                raw = b""
            valid.append(len(raw) == expected)
            if valid[-1]:
                arrays.append(np.frombuffer(raw, dtype=np.uint8))
        logits = self._logits(np.stack(arrays).reshape(-1, 3, crop, crop), "infer") if arrays else np.empty((0, 0))
        rows = iter(logits)
        return [base64.b64encode(next(rows).tobytes()).decode("ascii") if ok else "" for ok in valid]


ResNetClassifier.add_asgi_middleware(BodySizeLimit, max_bytes=MAX_UPLOAD_BYTES)
