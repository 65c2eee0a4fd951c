"""BentoML service: ``POST /classify`` and ``POST /detect`` with exported ResNets on ONNX Runtime (no torch), and the
same models over the Open Inference Protocol v2 (``/v2``).

Each image is decoded in a thread (PIL releases the GIL), then waits in BentoML's adaptive batching queue
(``service.bentoml_adapter``), which merges concurrent requests, and the images of one request, into one session
run. Settings come from ``RESNET_LAB_*`` variables (``service.settings``).

    RESNET_LAB_MODEL=model.onnx RESNET_LAB_DETECTOR=detector.onnx bentoml serve   # from the repo root
    curl -F image=@cat.jpg -F image=@dog.jpg -F top_k=3 http://127.0.0.1:3000/classify
    curl -F image=@street.jpg -F score_threshold=0.5 http://127.0.0.1:3000/detect
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

import anyio
import bentoml
import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse

from service import answers, imaging, shutdown
from service.auth import ApiKeys, RequireApiKey, warn_if_exposed
from service.bentoml_adapter import RequestInput, batching_queue, cancel_request_timers, serve_host
from service.contract import DETECTION, FP32, Key
from service.detector import Detector
from service.errors import JsonErrors, RequestRejected, error_body, error_response
from service.limits import BodySizeLimit
from service.runtime import HOW_TO_GET, ModelNotFound, OnnxModel, logger, read_metadata, resolve_model
from service.settings import Settings, SettingsError
from service.uploads import DetectOptions, UploadReader, classify_options
from service.v2_models import ClassifierModel, DetectorModel, V2Models
from service.web import web_app

try:  # checked at import so `bentoml serve` stops at once with the reason, instead of restarting workers
    SETTINGS = Settings.from_env()
    API_KEYS = ApiKeys(SETTINGS.api_keys)
except (SettingsError, OSError) as problem:
    raise SystemExit(f"resnet-lab service: {problem}") from None
warn_if_exposed(serve_host(), API_KEYS)
try:
    MODEL_PATH = resolve_model(SETTINGS.model)
    DETECTOR_PATH = resolve_model(SETTINGS.detector, DETECTION) if SETTINGS.detector else None
    CLASSES = len(read_metadata(MODEL_PATH).labels)  # /classify's top_k range, in the OpenAPI document too
except ModelNotFound as missing:
    raise SystemExit(f"resnet-lab service: {missing}") from None
imaging.set_pixel_limit(SETTINGS.max_image_pixels)
cancel_request_timers()  # else BentoML's request timeout timer keeps each answered request in memory for 120 s
CLASSIFY = UploadReader(classify_options(CLASSES), SETTINGS.max_images)
DETECT = UploadReader(DetectOptions, SETTINGS.max_images)

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


def _reply(ctx: bentoml.Context, response: JSONResponse) -> JSONResponse:
    """A response from a BentoML API with a context (BentoML sets the status from the context's)."""
    ctx.response.status_code = response.status_code
    return response


@bentoml.asgi_app(web_app(CLASSIFY, DETECT, keys_enabled=API_KEYS.enabled), path="/")
@bentoml.service(
    name="resnet_lab",
    workers=1,  # one process: every request reaches the same batching queue and ORT session
    traffic={"timeout": 120},
)
class VisionService:
    """Image classification and object detection with exported resnet-lab ONNX models."""

    def __init__(self) -> None:
        self.settings = SETTINGS
        self.model = OnnxModel.load(MODEL_PATH, SETTINGS)
        self.detector = Detector(DETECTOR_PATH, SETTINGS) if DETECTOR_PATH else None
        self.labels = self.model.metadata.labels
        crop_size = self.model.metadata.crop_size
        self.fast_decode = not SETTINGS.exact_decode and imaging.fast_decode_keeps_answers(crop_size)
        self._decode_limiter: anyio.CapacityLimiter | None = None
        self._enqueue = batching_queue(
            self._run_queued_batch, SETTINGS.max_batch_size, SETTINGS.max_latency_ms, _overloaded, batch_size=len
        )
        self._stats_lock = threading.Lock()
        self.batch_sizes: dict[int, int] = {}
        self.seconds = {"decode": 0.0, "infer_call": 0.0, "ort": 0.0}  # totals, for the means in /info
        self.requests = 0
        served = [
            ClassifierModel(self.model.metadata, CLASSIFY.options, self.logits, self.decode_all, SETTINGS.max_images)
        ]
        if self.detector is not None:
            detector = self.detector
            served.append(
                DetectorModel(detector.model.metadata, detector.detections, self._detector_decode, SETTINGS.max_images)
            )
        self.v2 = V2Models(served)
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
            "limits": {
                "max_upload_bytes": settings.max_upload_bytes,
                "max_image_pixels": settings.max_image_pixels,
                "max_images": settings.max_images,
            },
            "decode": "fast" if self.fast_decode else "exact",
            "api_keys": API_KEYS.enabled,
            "detector": self.detector.describe() if self.detector else None,
            "batches": {
                "count": sum(sizes.values()),
                "images": sum(size * count for size, count in sizes.items()),
                "max_size": max(sizes, default=0),
                "sizes": {str(size): count for size, count in sizes.items()},
            },
            "mean_ms": {  # where an image's time goes: decode+resize, the batched call (queue + ORT), ORT per batch
                "decode": round(1000 * seconds["decode"] / max(requests, 1), 2),
                "infer_call": round(1000 * seconds["infer_call"] / max(requests, 1), 2),
                "ort_per_batch": round(1000 * seconds["ort"] / max(batches, 1), 2),
            },
        }

    @bentoml.api(route="/classify", input_spec=RequestInput)  # the body is read by answer_classify
    async def classify(self, ctx: bentoml.Context) -> dict[str, Any]:
        """Classify images (multipart field ``image``, repeated; or JSON ``images``); the ``top_k`` best classes."""
        return _reply(ctx, await self.answer_classify(ctx.request))

    @bentoml.api(route="/detect", input_spec=RequestInput)  # the body is read by answer_detect
    async def detect(self, ctx: bentoml.Context) -> dict[str, Any]:
        """Objects in images: boxes in their pixels (as displayed), COCO category ids, labels, scores; at most
        ``min(max_detections, the graph's cap)`` per image (``max_detections_in_graph`` in /info)."""
        return _reply(ctx, await self.answer_detect(ctx.request))

    async def answer_classify(self, request: Request) -> JSONResponse:
        """``/classify``: one image's answer (or error), or ``{"model", "results"}`` for several."""
        try:
            asked = await CLASSIFY.read(request)
            started = time.perf_counter()
            decoded = await self._decode_each(asked.images)
            pixels = [image for image in decoded if not isinstance(image, RequestRejected)]
            finished = time.perf_counter()
            logits = iter(await self.logits(np.stack(pixels)) if pixels else [])
        except RequestRejected as rejected:
            return error_response(rejected)
        with self._stats_lock:
            self.requests += len(pixels)
            self.seconds["decode"] += (finished - started) * len(pixels)
            self.seconds["infer_call"] += (time.perf_counter() - finished) * len(pixels)
        model, top_k = self.model.metadata.model_name, asked.options.top_k
        results = [
            image
            if isinstance(image, RequestRejected)
            else answers.classification(model, self.labels, next(logits), top_k)
            for image in decoded
        ]
        return self._answer(model, results, asked.single)

    async def answer_detect(self, request: Request) -> JSONResponse:
        """``/detect``: one image's answer (or error), or ``{"model", "results"}`` for several."""
        if self.detector is None:
            return error_response(RequestRejected(f"no detector configured: {HOW_TO_GET[DETECTION]}", 503))
        try:
            asked = await DETECT.read(request)
            results: list[dict[str, Any] | RequestRejected] = []
            for data in asked.images:
                try:
                    results.append(await self.detector.answer(data, asked.options, self.decode_limiter))
                except RequestRejected as rejected:
                    if rejected.status >= 500:
                        raise
                    results.append(rejected)
        except RequestRejected as rejected:
            return error_response(rejected)
        return self._answer(self.detector.model.metadata.model_name, results, asked.single)

    @staticmethod
    def _answer(model: str, results: Sequence[dict[str, Any] | RequestRejected], single: bool) -> JSONResponse:
        if single:
            (only,) = results
            return error_response(only) if isinstance(only, RequestRejected) else JSONResponse(only)
        shown = [error_body(str(item)) if isinstance(item, RequestRejected) else item for item in results]
        return JSONResponse({"model": model, "results": shown})

    @property
    def decode_limiter(self) -> anyio.CapacityLimiter:
        """How many uploads decode at once (made in the event loop, on first use)."""
        if self._decode_limiter is None:
            self._decode_limiter = anyio.CapacityLimiter(self.settings.decode_threads)
        return self._decode_limiter

    def _decode(self, data: bytes) -> np.ndarray:
        metadata = self.model.metadata
        return imaging.preprocess(data, metadata.resize_size, metadata.crop_size, fast=self.fast_decode)

    async def _decode_one(self, data: bytes) -> np.ndarray | RequestRejected:
        try:
            return await anyio.to_thread.run_sync(self._decode, data, limiter=self.decode_limiter)
        except imaging.ImageRejected as rejected:
            return RequestRejected(str(rejected), rejected.status)

    async def _decode_each(self, images: Sequence[bytes]) -> list[np.ndarray | RequestRejected]:
        """Each image file as uint8 ``[3, crop, crop]``, or why it is refused; decoded concurrently."""
        decoded: list[np.ndarray | RequestRejected] = [RequestRejected("not decoded")] * len(images)

        async def one(index: int, data: bytes) -> None:
            decoded[index] = await self._decode_one(data)

        async with anyio.create_task_group() as group:
            for index, data in enumerate(images):
                group.start_soon(one, index, data)
        return decoded

    async def decode_all(self, images: Sequence[bytes]) -> np.ndarray:
        """Image files as uint8 ``[N, 3, crop, crop]``; the first that fails refuses the whole request."""
        decoded = await self._decode_each(images)
        for index, image in enumerate(decoded):
            if isinstance(image, RequestRejected):
                raise RequestRejected(f'input "image" element {index}: {image}', image.status)
        return np.stack(decoded)

    async def _detector_decode(self, data: bytes) -> np.ndarray:
        assert self.detector is not None
        return await self.detector.decode(data, self.decode_limiter)

    async def logits(self, pixels: np.ndarray) -> np.ndarray:
        """Logits of uint8 ``[N, 3, crop, crop]`` through the batching queue (a 503 when it is overloaded)."""
        step = self.settings.max_batch_size
        chunks = [pixels[start : start + step] for start in range(0, len(pixels), step)]
        try:
            return np.concatenate(await asyncio.gather(*(self._enqueue(chunk) for chunk in chunks)))
        except Overloaded as overloaded:
            raise RequestRejected(str(overloaded), HTTPStatus.SERVICE_UNAVAILABLE) from None

    async def _run_queued_batch(self, items: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The dispatcher's callback: one ORT run for the queued items (each ``[n, 3, crop, crop]``), off the loop."""
        # the dispatcher runs one batch at a time, so one thread at a time calls ORT
        logits = await anyio.to_thread.run_sync(self._logits, np.concatenate(items), "classify")
        bounds = np.cumsum([len(item) for item in items])[:-1]
        return np.split(logits, bounds)

    def _logits(self, images: np.ndarray, endpoint: str) -> np.ndarray:
        """ORT on uint8 ``[N, 3, crop, crop]``, timed and counted for /info and /metrics."""
        started = time.perf_counter()
        logits = self.model.logits(images).astype(np.float32, copy=False)
        with self._stats_lock:
            self.seconds["ort"] += time.perf_counter() - started
            self.batch_sizes[len(images)] = self.batch_sizes.get(len(images), 0) + 1
        BATCH_SIZE_HISTOGRAM.labels(endpoint=endpoint).observe(len(images))
        return logits


# The service's own ASGI middleware, outermost first: the one place they are added (BentoML's run outside them).
VisionService.add_asgi_middleware(shutdown.GracefulShutdown, lame_duck_seconds=SETTINGS.lame_duck_seconds)
VisionService.add_asgi_middleware(JsonErrors)  # every error leaves as {"error": "<sentence>"}
VisionService.add_asgi_middleware(RequireApiKey, keys=API_KEYS)  # before a body is read
VisionService.add_asgi_middleware(BodySizeLimit, max_bytes=SETTINGS.max_upload_bytes)
