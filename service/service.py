"""BentoML service: ``POST /classify`` and ``POST /detect`` with exported ResNets on ONNX Runtime (no torch).

Each request is decoded in its own handler (threads, PIL releases the GIL), then waits in BentoML's adaptive
batching queue (``service.bentoml_adapter``), which merges concurrent requests into one session run. Settings come from
``RESNET_LAB_*`` variables (``service.settings``).

    RESNET_LAB_MODEL=model.onnx RESNET_LAB_DETECTOR=detector.onnx bentoml serve   # from the repo root
    curl -F image=@cat.jpg -F top_k=3 http://127.0.0.1:3000/classify
    curl -F image=@street.jpg -F score_threshold=0.5 http://127.0.0.1:3000/detect
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import bentoml
import numpy as np
from starlette.responses import JSONResponse

from service import answers, imaging, shutdown
from service.bentoml_adapter import batching_queue, cancel_request_timers
from service.contract import DETECTION, FP32, Key
from service.detector import DetectionRefused, Detector
from service.errors import ErrorBodyShape, QuietRejections
from service.inputs import ClassifyInput, DetectInput
from service.limits import BodySizeLimit
from service.runtime import HOW_TO_GET, ModelNotFound, OnnxModel, logger, resolve_model
from service.settings import Settings
from service.web import web_app

SETTINGS = Settings.from_env()
try:  # resolved at import so `bentoml serve` stops at once with the reason, instead of restarting workers
    MODEL_PATH = resolve_model(SETTINGS.model)
    DETECTOR_PATH = resolve_model(SETTINGS.detector, DETECTION) if SETTINGS.detector else None
except ModelNotFound as missing:
    raise SystemExit(f"resnet-lab service: {missing}") from None
imaging.set_pixel_limit(SETTINGS.max_image_pixels)
cancel_request_timers()  # else BentoML's request timeout timer keeps each answered request in memory for 120 s

_current: VisionService | None = None
BATCH_SIZE_HISTOGRAM = bentoml.metrics.Histogram(
    name="resnet_lab_batch_size",
    documentation="Images per ONNX Runtime call (adaptive batching)",
    labelnames=["endpoint"],
    buckets=[1, 2, 4, 8, 16, 32, 64, 128, 256],
)


class Overloaded(RuntimeError):
    """The batching queue dropped a request that could not be answered within ``max_latency_ms``."""


def _overloaded() -> np.ndarray:
    raise Overloaded(f"server overloaded: no answer within max_latency_ms={SETTINGS.max_latency_ms}; retry later")


def error(status: int, message: str) -> JSONResponse:
    """The service's error body: ``{"error": message}`` with a 4xx status."""
    return JSONResponse({"error": message}, status_code=status)


@bentoml.asgi_app(web_app(lambda: _current.describe() if _current is not None else None), path="/")
@bentoml.service(
    name="resnet_lab",
    workers=1,  # one process: every request reaches the same batching queue and ORT session
    traffic={"timeout": 120},
)
class VisionService:
    """Image classification and object detection with exported resnet-lab ONNX models."""

    def __init__(self) -> None:
        global _current
        self.settings = SETTINGS
        self.model = OnnxModel.load(MODEL_PATH, SETTINGS)
        self.detector = Detector(DETECTOR_PATH, SETTINGS) if DETECTOR_PATH else None
        self.labels = self.model.metadata.labels
        crop_size = self.model.metadata.crop_size
        self.fast_decode = not SETTINGS.exact_decode and imaging.fast_decode_keeps_answers(crop_size)
        self._decode_limiter: anyio.CapacityLimiter | None = None
        self._enqueue = batching_queue(
            self._run_queued_batch, SETTINGS.max_batch_size, SETTINGS.max_latency_ms, _overloaded
        )
        self._stats_lock = threading.Lock()
        self.batch_sizes: dict[int, int] = {}
        self.seconds = {"decode": 0.0, "infer_call": 0.0, "ort": 0.0}  # totals, for the means in /info
        self.requests = 0
        metadata = self.model.metadata
        logger.info(
            "resnet-lab serving %s from %s: %d labels, resize %d, crop %d, ONNX Runtime providers in use %s",
            metadata.model_name,
            MODEL_PATH,
            len(self.labels),
            metadata.resize_size,
            metadata.crop_size,
            self.model.providers,
        )
        _current = self

    async def __is_ready__(self) -> bool:
        """BentoML's /readyz: 503 once SIGTERM has started the shutdown (``service.shutdown``)."""
        return not shutdown.draining()

    def describe(self) -> dict[str, Any]:
        """What /info shows."""
        with self._stats_lock:
            sizes = dict(sorted(self.batch_sizes.items()))
            seconds, requests = dict(self.seconds), self.requests
        batches = sum(sizes.values())
        metadata, settings = self.model.metadata, self.settings
        return {
            "model": metadata.model_name,
            "model_path": str(self.model.path),
            "source_sha256": metadata.source_sha256,
            "num_labels": len(self.labels),
            "resize_size": metadata.resize_size,
            "crop_size": metadata.crop_size,
            "precision": metadata.extra.get(Key.PRECISION, FP32),
            "providers": self.model.providers,
            "batching": {"max_batch_size": settings.max_batch_size, "max_latency_ms": settings.max_latency_ms},
            "limits": {"max_upload_bytes": settings.max_upload_bytes, "max_image_pixels": settings.max_image_pixels},
            "decode": "fast" if self.fast_decode else "exact",
            "detector": self.detector.describe() if self.detector else None,
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
        metadata = self.model.metadata
        return imaging.preprocess(upload.read_bytes(), metadata.resize_size, metadata.crop_size, fast=self.fast_decode)

    @bentoml.api(route="/classify", input_spec=ClassifyInput)  # client mistakes -> JSON 400 before this runs
    async def classify(self, image: Path, top_k: int = 5) -> dict[str, Any]:
        """Classify one uploaded image (multipart field ``image``); the ``top_k`` most likely classes."""
        num_labels = len(self.labels)
        if not 1 <= top_k <= num_labels:
            return error(400, f"top_k must be an integer between 1 and {num_labels}, got {top_k}")
        if (too_large := self._too_large(image)) is not None:
            return too_large
        started = time.perf_counter()
        try:
            pixels = await anyio.to_thread.run_sync(self._decode, image, limiter=self.decode_limiter)
        except imaging.ImageRejected as rejected:
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
        return answers.classification(self.model.metadata.model_name, self.labels, logits, top_k)

    @bentoml.api(route="/detect", input_spec=DetectInput)  # client mistakes -> JSON 400 before this runs
    async def detect(self, image: Path, score_threshold: float = 0.5, max_detections: int = 100) -> dict[str, Any]:
        """Objects in one uploaded image: boxes in its pixels (as displayed), COCO category ids, labels, scores; at
        most ``min(max_detections, the graph's cap)`` (``max_detections_in_graph`` in /info)."""
        if self.detector is None:
            return error(503, f"no detector configured: {HOW_TO_GET[DETECTION]}")
        if (too_large := self._too_large(image)) is not None:
            return too_large
        try:
            self.detector.check(score_threshold, max_detections)
            data = await anyio.to_thread.run_sync(image.read_bytes)
            return await self.detector.answer(data, score_threshold, max_detections, self.decode_limiter)
        except DetectionRefused as refused:
            return error(refused.status, str(refused))

    @property
    def decode_limiter(self) -> anyio.CapacityLimiter:
        """How many uploads decode at once (made in the event loop, on first use)."""
        if self._decode_limiter is None:
            self._decode_limiter = anyio.CapacityLimiter(self.settings.decode_threads)
        return self._decode_limiter

    def _too_large(self, upload: Path) -> JSONResponse | None:
        size, limit = upload.stat().st_size, self.settings.max_upload_bytes
        return error(413, f"upload too large: {size:,} bytes, the limit is {limit:,}") if size > limit else None

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


VisionService.add_asgi_middleware(shutdown.GracefulShutdown, lame_duck_seconds=SETTINGS.lame_duck_seconds)  # outermost
VisionService.add_asgi_middleware(BodySizeLimit, max_bytes=SETTINGS.max_upload_bytes)
VisionService.add_asgi_middleware(ErrorBodyShape)  # BentoML's 4xx bodies -> {"error": "<sentence>"}
logging.getLogger("bentoml._internal.server.http_app").addFilter(QuietRejections())  # where BentoML logs API errors
