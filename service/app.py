"""The service: ``POST /classify`` and ``POST /detect`` with exported ResNets (no torch), and the same models over the
Open Inference Protocol v2 (``/v2``), built by ``build_service`` from typed settings (``service.settings``).

Each image is decoded in a thread (PIL releases the GIL), then waits in BentoML's adaptive batching queue
(``service.bentoml_adapter``), which merges concurrent requests, and the images of one request, into one run of the
model on the runtime ``inference.runtimes.choice`` picked for it (OpenVINO or ONNX Runtime, fp32, bf16 or int8).
Nothing here reads the environment or opens a model at import: ``service.service``, the module ``bentofile.yaml``
names, reads the settings and calls ``build_service``; tests build services in-process the same way.

    RESNET_LAB_MODEL=model.onnx RESNET_LAB_DETECTOR=detector.onnx bentoml serve   # from the repo root
    curl -F image=@cat.jpg -F image=@dog.jpg -F top_k=3 http://127.0.0.1:3000/classify
    curl -F image=@street.jpg -F score_threshold=0.5 http://127.0.0.1:3000/detect
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

import anyio
import bentoml
import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse

from inference import answers, imaging
from inference.contract import CLASSIFICATION, DETECTION, Key, ModelMetadata
from inference.model import LoadedModel
from inference.model_files import how_to_get, read_metadata, resolve_model
from inference.runtimes.choice import plans
from service import shutdown
from service.auth import ApiKeys, RequireApiKey, warn_if_exposed
from service.bentoml_adapter import RequestInput, batching_queue, cancel_request_timers, serve_host
from service.detector import Detector
from service.errors import JsonErrors, RequestRejected, error_body, error_response
from service.limits import BodySizeLimit
from service.settings import Settings
from service.uploads import DetectOptions, UploadReader, classify_options
from service.v2_models import ClassifierModel, DetectorModel, V2Models
from service.web import web_app

logger = logging.getLogger("bentoml.resnet_lab")
SERVICE_NAME = "resnet_lab"
BATCH_SIZE_HISTOGRAM = bentoml.metrics.Histogram(
    name="resnet_lab_batch_size",
    documentation="Images per model run (adaptive batching)",
    labelnames=["endpoint"],
    buckets=[1, 2, 4, 8, 16, 32, 64, 128, 256],
)


@dataclass(frozen=True)
class ModelFiles:
    """The files the settings name, their metadata, checked before any worker starts: a missing file, a file of
    the wrong kind or a runtime setting this machine cannot honour stops the server at once."""

    classifier: Path
    classifier_metadata: ModelMetadata
    detector: Path | None

    @classmethod
    def find(cls, settings: Settings) -> ModelFiles:
        """Resolve and check the classifier and the detector (``ModelNotFound``, ``RuntimeUnavailable``)."""
        classifier = resolve_model(settings.model, CLASSIFICATION, settings.env_name("model"))
        metadata = read_metadata(classifier, CLASSIFICATION)
        plans(metadata, settings)
        detector = (
            resolve_model(settings.detector, DETECTION, settings.env_name("detector")) if settings.detector else None
        )
        if detector is not None:
            plans(read_metadata(detector, DETECTION), settings)
        return cls(classifier, metadata, detector)


def no_detector(settings: Settings) -> RequestRejected:
    """/detect on a server without a detector: a 404 that says how to serve one."""
    variable = settings.env_name("detector")
    return RequestRejected(
        f"this server has no detector: {how_to_get(DETECTION)} and start with {variable}=detector.onnx",
        HTTPStatus.NOT_FOUND,
    )


class Overloaded(RuntimeError):
    """The batching queue dropped a request that could not be answered within ``max_latency_ms``."""


def _reply(ctx: bentoml.Context, response: JSONResponse) -> JSONResponse:
    """A response from a BentoML API with a context (BentoML sets the status from the context's)."""
    ctx.response.status_code = response.status_code
    return response


@dataclass(frozen=True)
class Parts:
    """What ``build_service`` prepares for the instance that a worker makes: settings, keys, files, request readers."""

    settings: Settings
    keys: ApiKeys
    files: ModelFiles
    classify: UploadReader
    detect: UploadReader


class Vision:
    """Image classification and object detection with exported resnet-lab models (``build_service`` makes the
    BentoML service of a subclass that knows its ``Parts``)."""

    def __init__(self, parts: Parts) -> None:
        settings, files = parts.settings, parts.files
        self.settings, self.parts = settings, parts
        imaging.set_pixel_limit(settings.max_image_pixels)
        self.model = LoadedModel.load(files.classifier, settings, CLASSIFICATION)
        self.detector = Detector(files.detector, settings) if files.detector else None
        self.labels = self.model.metadata.labels
        crop_size = self.model.metadata.crop_size
        self.fast_decode = not settings.exact_decode and imaging.fast_decode_keeps_answers(crop_size)
        self._decode_limiter: anyio.CapacityLimiter | None = None
        self._enqueue = batching_queue(
            self._run_queued_batch, settings.max_batch_size, settings.max_latency_ms, self._overloaded, batch_size=len
        )
        self._stats_lock = threading.Lock()
        self.batch_sizes: dict[int, int] = {}
        self.seconds = {"decode": 0.0, "infer_call": 0.0, "run": 0.0}  # totals, for the means in /info
        self.requests = 0
        served = [
            ClassifierModel(self.model, parts.classify.options, self.logits, self.decode_all, settings.max_images)
        ]
        if self.detector is not None:
            detector = self.detector
            served.append(
                DetectorModel(detector.model, detector.detections, self._detector_decode, settings.max_images)
            )
        self.v2 = V2Models(served)
        self._log_start("classifier", self.model)
        if self.detector is not None:
            self._log_start("detector", self.detector.model)

    @staticmethod
    def _log_start(kind: str, model: LoadedModel) -> None:
        runs = model.describe()
        logger.info(
            "resnet-lab %s %s from %s: %s %s on %s in %s (%s)",
            kind,
            model.metadata.model_name,
            model.path,
            runs["runtime"],
            runs["version"],
            runs["device"],
            runs["precision"],
            runs["reason"],
        )

    def _overloaded(self) -> np.ndarray:
        limit = self.settings.max_latency_ms
        raise Overloaded(f"server overloaded: no answer within max_latency_ms={limit}; retry later")

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
            "weights": metadata.json_value(Key.WEIGHTS),
            "num_labels": len(self.labels),
            "resize_size": metadata.resize_size,
            "crop_size": metadata.crop_size,
            "runtime": self.model.describe(),
            "batching": {"max_batch_size": settings.max_batch_size, "max_latency_ms": settings.max_latency_ms},
            "limits": {
                "max_upload_bytes": settings.max_upload_bytes,
                "max_image_pixels": settings.max_image_pixels,
                "max_images": settings.max_images,
            },
            "decode": "fast" if self.fast_decode else "exact",
            "api_keys": self.parts.keys.enabled,
            "detector": self.detector.describe() if self.detector else None,
            "batches": {
                "count": sum(sizes.values()),
                "images": sum(size * count for size, count in sizes.items()),
                "max_size": max(sizes, default=0),
                "sizes": {str(size): count for size, count in sizes.items()},
            },
            "mean_ms": {  # where an image's time goes: decode+resize, the batched call (queue + run), run per batch
                "decode": round(1000 * seconds["decode"] / max(requests, 1), 2),
                "infer_call": round(1000 * seconds["infer_call"] / max(requests, 1), 2),
                "run_per_batch": round(1000 * seconds["run"] / max(batches, 1), 2),
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
            asked = await self.parts.classify.read(request)
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
            return error_response(no_detector(self.settings))
        try:
            asked = await self.parts.detect.read(request)
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
        """The dispatcher's callback: one run for the queued items (each ``[n, 3, crop, crop]``), off the loop."""
        # the dispatcher runs one batch at a time, so one thread at a time runs the classifier
        logits = await anyio.to_thread.run_sync(self._logits, np.concatenate(items), "classify")
        bounds = np.cumsum([len(item) for item in items])[:-1]
        return np.split(logits, bounds)

    def _logits(self, images: np.ndarray, endpoint: str) -> np.ndarray:
        """The classifier on uint8 ``[N, 3, crop, crop]``, timed and counted for /info and /metrics."""
        started = time.perf_counter()
        logits = self.model.logits(images).astype(np.float32, copy=False)
        with self._stats_lock:
            self.seconds["run"] += time.perf_counter() - started
            self.batch_sizes[len(images)] = self.batch_sizes.get(len(images), 0) + 1
        BATCH_SIZE_HISTOGRAM.labels(endpoint=endpoint).observe(len(images))
        return logits


def build_service(settings: Settings) -> bentoml.Service:
    """The BentoML service for ``settings``: files and runtime settings checked now (``ModelNotFound``,
    ``RuntimeUnavailable``, ``OSError`` for an unreadable key file), the models loaded by each worker."""
    keys = ApiKeys(settings.api_keys)
    warn_if_exposed(serve_host(), keys)
    files = ModelFiles.find(settings)
    cancel_request_timers()  # else BentoML's request timeout timer keeps each answered request in memory for 120 s
    parts = Parts(
        settings=settings,
        keys=keys,
        files=files,
        classify=UploadReader(classify_options(len(files.classifier_metadata.labels)), settings.max_images),
        detect=UploadReader(DetectOptions, settings.max_images),
    )

    class VisionService(Vision):
        __doc__ = Vision.__doc__

        def __init__(self) -> None:
            super().__init__(parts)

    web = web_app(parts.classify, parts.detect, keys_enabled=keys.enabled)
    service = bentoml.service(
        name=SERVICE_NAME,
        workers=1,  # one process: every request reaches the same batching queue and model session
        traffic={"timeout": 120},
    )(bentoml.asgi_app(web, path="/")(VisionService))
    # The service's own ASGI middleware, outermost first (BentoML's run outside them).
    service.add_asgi_middleware(shutdown.GracefulShutdown, lame_duck_seconds=settings.lame_duck_seconds)
    service.add_asgi_middleware(JsonErrors)  # every error leaves as {"error": "<sentence>"}
    service.add_asgi_middleware(RequireApiKey, keys=keys)  # before a body is read
    service.add_asgi_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes)
    return service
