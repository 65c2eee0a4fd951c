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

import logging
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

from inference import imaging
from inference.contract import CLASSIFICATION, DETECTION
from inference.model_files import how_to_get, read_metadata, resolve_model
from inference.repository import ModelRepository, VersionPolicy
from inference.runtimes.choice import plans
from service import shutdown
from service.auth import ApiKeys, RequireApiKey, warn_if_exposed
from service.bentoml_adapter import RequestInput, cancel_request_timers, serve_host
from service.classifier import Classifier
from service.detector import Detector
from service.errors import JsonErrors, RequestRejected, error_body, error_response
from service.limits import BodySizeLimit
from service.registry import Registry, Served
from service.settings import Settings
from service.uploads import DetectRequestOptions, UploadReader, classify_options
from service.v2_models import ClassifierModel, DetectorModel, V2Models, version_of
from service.web import web_app

logger = logging.getLogger("bentoml.resnet_lab")
SERVICE_NAME = "resnet_lab"


def no_detector(settings: Settings) -> RequestRejected:
    """/detect on a server without a detector: a 404 that says how to serve one."""
    variable = settings.env_name("detector")
    return RequestRejected(
        f"this server has no detector: {how_to_get(DETECTION)} and start with {variable}=detector.onnx",
        HTTPStatus.NOT_FOUND,
    )


@dataclass(frozen=True)
class ModelFiles:
    """The files the settings name and the repository's, checked before any worker starts: a missing file, a file
    of the wrong kind or a runtime setting this machine cannot honour stops the server at once.

    The classifier file is served when ``RESNET_LAB_MODEL`` names one, or when no repository classifier is served
    (the embedded default then)."""

    classifier: Path | None
    detector: Path | None
    repository: ModelRepository | None
    policy: VersionPolicy
    num_labels: int  # the most classes of any classifier served at start: /classify's top_k bound

    @classmethod
    def find(cls, settings: Settings) -> ModelFiles:
        """Resolve and check every file (``ModelNotFound``, ``RuntimeUnavailable``, ``RepositoryError``)."""
        policy = VersionPolicy.parse(settings.version_policy)
        repository = ModelRepository.open(settings.model_repository) if settings.model_repository else None
        found = [read_metadata(path) for path in cls._repository_files(repository, policy)]
        classifier = None
        if settings.model or not any(metadata.task == CLASSIFICATION for metadata in found):
            classifier = resolve_model(settings.model, CLASSIFICATION, settings.env_name("model"))
            found.append(read_metadata(classifier, CLASSIFICATION))
        detector = None
        if settings.detector:
            detector = resolve_model(settings.detector, DETECTION, settings.env_name("detector"))
            found.append(read_metadata(detector, DETECTION))
        for metadata in found:
            plans(metadata, settings)
        labels = [len(metadata.labels) for metadata in found if metadata.task == CLASSIFICATION]
        return cls(classifier, detector, repository, policy, max(labels, default=1))

    @staticmethod
    def _repository_files(repository: ModelRepository | None, policy: VersionPolicy) -> list[Path]:
        if repository is None:
            return []
        return [path for name in repository.names() for path in repository.select(name, policy).values()]


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
        self.registry = Registry(settings, files.repository, files.policy)
        for path, kind in ((files.classifier, CLASSIFICATION), (files.detector, DETECTION)):
            if path is not None:
                metadata = read_metadata(path, kind)
                self.registry.pin(path, kind, metadata.model_name, version_of(metadata))
        self.registry.load_all()
        self._decode_limiter: anyio.CapacityLimiter | None = None
        self.v2 = V2Models(self.registry, self._v2_model)

    def _v2_model(self, served: Served) -> ClassifierModel | DetectorModel:
        """A served version as a v2 model."""
        runner, limit = served.runner, self.settings.max_images
        if isinstance(runner, Classifier):
            options = classify_options(len(runner.labels))

            async def decode(files: Sequence[bytes]) -> np.ndarray:
                return await runner.decode_all(files, self.decode_limiter)

            return ClassifierModel(runner.model, runner.name, runner.version, options, runner.logits, decode, limit)

        async def decode_one(data: bytes) -> np.ndarray:
            return await runner.decode(data, self.decode_limiter)

        return DetectorModel(runner.model, runner.name, runner.version, runner.detections, decode_one, limit)

    async def __is_ready__(self) -> bool:
        """BentoML's /readyz: 503 once SIGTERM has started the shutdown (``service.shutdown``)."""
        return not shutdown.draining()

    def describe(self) -> dict[str, Any]:
        """What /info shows: the default classifier's details at the top, every served model in ``models``."""
        settings = self.settings
        classifier = self.registry.default(CLASSIFICATION)
        detector = self.registry.default(DETECTION)
        return {
            **(classifier.runner.describe() if classifier else {"model": None}),
            "batching": {"max_batch_size": settings.max_batch_size, "max_latency_ms": settings.max_latency_ms},
            "limits": {
                "max_upload_bytes": settings.max_upload_bytes,
                "max_image_pixels": settings.max_image_pixels,
                "max_images": settings.max_images,
                "max_loaded_models": settings.max_loaded_models,
                "max_loaded_mb": settings.max_loaded_mb,
            },
            "api_keys": self.parts.keys.enabled,
            "detector": detector.runner.describe() if detector else None,
            "repository": None
            if self.registry.repository is None
            else {
                "path": str(self.registry.repository.root),
                "version_policy": str(self.registry.policy),
            },  # fmt: skip
            "models": [entry.describe() for entry in self.registry.versions()],
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
        """``/classify``: one image's answer (or error), or ``{"model", "model_version", "results"}`` for several."""
        try:
            asked = await self.parts.classify.read(request)
            served = self.registry.pick(asked.options.model, CLASSIFICATION)
            classifier = served.runner
            top_k = _top_k(asked.options, classifier)
            with self.registry.using(served), classifier.stats.request():
                results = await classifier.answer(asked.images, top_k, self.decode_limiter)
        except RequestRejected as rejected:
            return error_response(rejected)
        return self._answer(classifier, results, asked.single)

    async def answer_detect(self, request: Request) -> JSONResponse:
        """``/detect``: one image's answer (or error), or ``{"model", "model_version", "results"}`` for several."""
        try:
            asked = await self.parts.detect.read(request)
            if asked.options.model is None and self.registry.default(DETECTION) is None:
                raise no_detector(self.settings)
            served = self.registry.pick(asked.options.model, DETECTION)
            detector = served.runner
            results: list[dict[str, Any] | RequestRejected] = []
            with self.registry.using(served), detector.stats.request():
                for data in asked.images:
                    try:
                        results.append(await detector.answer(data, asked.options, self.decode_limiter))
                    except RequestRejected as rejected:
                        if rejected.status >= 500:
                            raise
                        results.append(rejected)
        except RequestRejected as rejected:
            return error_response(rejected)
        return self._answer(detector, results, asked.single)

    @staticmethod
    def _answer(
        runner: Classifier | Detector, results: Sequence[dict[str, Any] | RequestRejected], single: bool
    ) -> JSONResponse:
        if single:
            (only,) = results
            return error_response(only) if isinstance(only, RequestRejected) else JSONResponse(only)
        shown = [error_body(str(item)) if isinstance(item, RequestRejected) else item for item in results]
        return JSONResponse({"model": runner.name, "model_version": runner.version, "results": shown})

    @property
    def decode_limiter(self) -> anyio.CapacityLimiter:
        """How many uploads decode at once (made in the event loop, on first use)."""
        if self._decode_limiter is None:
            self._decode_limiter = anyio.CapacityLimiter(self.settings.decode_threads)
        return self._decode_limiter


def _top_k(options: Any, classifier: Classifier) -> int:
    """The classes to return: as asked, within the model's own (the default: at most all of them)."""
    classes = len(classifier.labels)
    if "top_k" not in options.model_fields_set:
        return min(options.top_k, classes)
    if options.top_k > classes:
        raise RequestRejected(
            f"top_k must be an integer between 1 and {classes} for model {classifier.name!r}, got {options.top_k}"
        )
    return options.top_k


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
        classify=UploadReader(classify_options(files.num_labels, model_option=True), settings.max_images),
        detect=UploadReader(DetectRequestOptions, settings.max_images),
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
