"""The served models as Open Inference Protocol v2 models: their metadata from the ONNX file's contract, and
inference on v2 tensors.

Classifier (inputs: exactly one of)
  ``images``  UINT8 ``[N, 3, crop, crop]``: the graph's own input (pixels already resized and cropped)
  ``image``   BYTES ``[N]``: encoded image files, decoded by the service's image loader (in JSON: base64 strings)
Classifier outputs
  ``logits``  FP32 ``[N, C]``
  ``labels``  BYTES ``[N, k]`` and ``scores`` FP32 ``[N, k]``: the top ``k`` classes and their softmax
              probabilities, best first, when the request sets ``parameters.top_k`` or asks for them by name
Detector (input ``image``: BYTES ``[N]`` encoded files, or UINT8 ``[3, H, W]``, the graph's own input)
  ``boxes`` FP32 ``[N, K, 4]`` (x1, y1, x2, y2 in the image's pixels as displayed), ``scores`` FP32 ``[N, K]``,
  ``labels`` INT64 ``[N, K]`` (COCO category ids), best first; ``counts`` INT32 ``[N]``: how many of the K rows of
  each image are detections; the rest is padding (boxes and scores 0, labels -1). K is the largest count in the
  answer. ``image_sizes`` INT32 ``[N, 2]``: each image's (width, height). Request parameters ``score_threshold``
  and ``max_detections`` as for ``/detect``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import numpy as np
from pydantic import ValidationError

from inference import answers
from inference.contract import CLASSIFICATION, DETECTION, INPUT_NAMES, OUTPUT_NAMES
from inference.contract import ModelMetadata as FileMetadata
from inference.model import LoadedModel
from inference.settings import OPENVINO
from service.errors import RequestRejected, describe_errors
from service.uploads import URL, URL_REFUSED, DetectOptions, Options
from service.v2_wire import BYTES, InferenceRequest, MetadataTensor, ModelMetadata, Tensor, refused_count

PLATFORMS = {OPENVINO: "openvino"}  # Triton's platform names; any other runtime runs the ONNX file: onnxruntime_onnx
FILES_INPUT = "image"  # BYTES [N]: encoded image files, for both models
PADDING_LABEL = -1
Decode = Callable[[Sequence[bytes]], Awaitable[np.ndarray]]  # files -> uint8 [N, 3, crop, crop]


def version_of(metadata: FileMetadata) -> str:
    """A served model's one version: the first 12 hex digits of the hash of the weights it was exported from."""
    return metadata.source_sha256[:12] or "1"


def platform_of(model: LoadedModel) -> str:
    """The v2 ``platform`` of what runs the model (Triton's names)."""
    return PLATFORMS.get(model.session.runtime, "onnxruntime_onnx")


def runtime_parameters(model: LoadedModel) -> dict[str, Any]:
    """The v2 metadata's ``parameters``: the runtime, the precision it runs in and why, the recorded bf16 check."""
    runs = model.describe()
    check = runs["bf16_check"]
    return {
        "runtime": f"{runs['runtime']} {runs['version']}",
        "device": runs["device"],
        "precision": runs["precision"],
        "reason": runs["reason"],
        "bf16_check": check["verdict"] if check else "none recorded",
    }


def _options(options: type[Options], request: InferenceRequest) -> Any:
    given = {name: value for name, value in request.parameters.items() if name in options.model_fields}
    try:
        return options.model_validate(given, strict=True)
    except ValidationError as error:
        message = describe_errors(error.errors(include_url=False), options.bounds())
        raise RequestRejected(message.replace("field ", "parameter ")) from None


def _one_input(tensors: Sequence[Tensor], accepted: dict[str, set[str]]) -> Tensor:
    names = " or ".join(f'"{name}" ({"/".join(sorted(kinds))})' for name, kinds in accepted.items())
    if len(tensors) != 1:
        raise RequestRejected(f"{len(tensors)} inputs given; send exactly one: {names}")
    (tensor,) = tensors
    if tensor.datatype not in accepted.get(tensor.name, set()):
        raise RequestRejected(f'input "{tensor.name}" ({tensor.datatype}) is not one this model takes: {names}')
    return tensor


def file_bytes(element: Any, index: int) -> bytes:
    """A BYTES element as an image file: raw bytes, or a base64 string from JSON (never a URL)."""
    if isinstance(element, bytes):
        return element
    if URL.match(element):
        raise RequestRejected(f'input "{FILES_INPUT}" element {index} {URL_REFUSED}')
    try:
        return base64.b64decode(element, validate=True)
    except binascii.Error:
        raise RequestRejected(
            f'input "{FILES_INPUT}" element {index}: in JSON, image files are base64 strings'
        ) from None


def _requested(request: InferenceRequest, known: Sequence[str]) -> list[str]:
    names = [output.name for output in request.outputs]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise RequestRejected(f"unknown outputs {unknown}; this model gives {list(known)}")
    return names


class ClassifierModel:
    """A classifier as a v2 model."""

    def __init__(
        self,
        model: LoadedModel,
        name: str,
        version: str,
        options: type[Options],
        logits: Callable[[np.ndarray], Awaitable[np.ndarray]],
        decode: Decode,
        max_images: int,
    ) -> None:
        self.model, self.file = model, model.metadata
        self.name, self.version = name, version
        self.options, self.logits, self.decode, self.max_images = options, logits, decode, max_images
        self.crop = self.file.crop_size
        self.outputs = (OUTPUT_NAMES[CLASSIFICATION][0], "labels", "scores")

    def metadata(self) -> ModelMetadata:
        """Inputs and outputs with datatypes and shapes (``-1``: any size)."""
        classes, pixels = len(self.file.labels), INPUT_NAMES[CLASSIFICATION]
        return ModelMetadata(
            name=self.name,
            versions=[self.version],
            platform=platform_of(self.model),
            parameters=runtime_parameters(self.model),
            inputs=[
                MetadataTensor(name=pixels, datatype="UINT8", shape=[-1, 3, self.crop, self.crop]),
                MetadataTensor(name=FILES_INPUT, datatype=BYTES, shape=[-1]),
            ],
            outputs=[
                MetadataTensor(name=self.outputs[0], datatype="FP32", shape=[-1, classes]),
                MetadataTensor(name="labels", datatype=BYTES, shape=[-1, -1]),
                MetadataTensor(name="scores", datatype="FP32", shape=[-1, -1]),
            ],
        )

    async def pixels(self, tensor: Tensor) -> np.ndarray:
        """The request's images as uint8 ``[N, 3, crop, crop]``."""
        count = tensor.array.shape[0] if tensor.array.ndim else 0
        if count > self.max_images:
            raise refused_count(tensor.name, count, self.max_images)
        if tensor.datatype == BYTES:
            if tensor.array.ndim != 1 or count == 0:
                raise RequestRejected(
                    f'input "{tensor.name}" must have shape [N] with N >= 1, got {list(tensor.array.shape)}'
                )
            return await self.decode([file_bytes(element, index) for index, element in enumerate(tensor.array)])
        expected = [3, self.crop, self.crop]
        if tensor.array.ndim != 4 or list(tensor.array.shape[1:]) != expected or count == 0:
            raise RequestRejected(
                f'input "{tensor.name}" must have shape [N, {", ".join(map(str, expected))}] with N >= 1, '
                f"got {list(tensor.array.shape)}"
            )
        return np.ascontiguousarray(tensor.array)

    async def infer(self, request: InferenceRequest, tensors: Sequence[Tensor]) -> list[Tensor]:
        """Run the request: the outputs asked for (all but the top-k ones unless ``top_k`` is set)."""
        accepted = {INPUT_NAMES[CLASSIFICATION]: {"UINT8"}, FILES_INPUT: {BYTES}}
        tensor = _one_input(tensors, accepted)
        options = _options(self.options, request)
        names = _requested(request, self.outputs) or [
            self.outputs[0], *(("labels", "scores") if "top_k" in request.parameters else ())
        ]  # fmt: skip
        logits = await self.logits(await self.pixels(tensor))
        out = {self.outputs[0]: Tensor(self.outputs[0], "FP32", logits.astype(np.float32, copy=False))}
        if {"labels", "scores"} & set(names):
            best = [answers.softmax_top_k(row, options.top_k) for row in logits]
            labels = np.array([[self.file.labels[index].encode() for index, _ in row] for row in best], dtype=object)
            scores = np.array([[score for _, score in row] for row in best], dtype=np.float32)
            out["labels"] = Tensor("labels", BYTES, labels.reshape(len(best), options.top_k))
            out["scores"] = Tensor("scores", "FP32", scores.reshape(len(best), options.top_k))
        return [out[name] for name in names]


Detect = Callable[[np.ndarray, Any], Awaitable[list[dict[str, Any]]]]  # uint8 [3, H, W], options -> detections
DecodeOne = Callable[[bytes], Awaitable[np.ndarray]]  # file -> uint8 [3, H, W] as displayed


class DetectorModel:
    """A detector as a v2 model."""

    def __init__(
        self, model: LoadedModel, name: str, version: str, detect: Detect, decode: DecodeOne, max_images: int
    ) -> None:
        self.model, self.file = model, model.metadata
        self.name, self.version = name, version
        self.detect, self.decode, self.max_images = detect, decode, max_images
        self.outputs = ("boxes", "scores", "labels", "counts", "image_sizes")

    def metadata(self) -> ModelMetadata:
        """Inputs and outputs with datatypes and shapes (``-1``: any size)."""
        return ModelMetadata(
            name=self.name,
            versions=[self.version],
            platform=platform_of(self.model),
            parameters=runtime_parameters(self.model),
            inputs=[MetadataTensor(name=FILES_INPUT, datatype=BYTES, shape=[-1])],
            outputs=[
                MetadataTensor(name="boxes", datatype="FP32", shape=[-1, -1, 4]),
                MetadataTensor(name="scores", datatype="FP32", shape=[-1, -1]),
                MetadataTensor(name="labels", datatype="INT64", shape=[-1, -1]),
                MetadataTensor(name="counts", datatype="INT32", shape=[-1]),
                MetadataTensor(name="image_sizes", datatype="INT32", shape=[-1, 2]),
            ],
        )

    async def images(self, tensor: Tensor) -> list[np.ndarray]:
        """The request's images, each uint8 ``[3, H, W]``."""
        shape = list(tensor.array.shape)
        if tensor.datatype != BYTES:
            if len(shape) != 3 or shape[0] != 3 or 0 in shape:
                raise RequestRejected(f'input "{tensor.name}" (UINT8) must have shape [3, H, W], got {shape}')
            return [np.ascontiguousarray(tensor.array)]
        if len(shape) != 1 or shape[0] == 0:
            raise RequestRejected(f'input "{tensor.name}" must have shape [N] with N >= 1, got {shape}')
        if shape[0] > self.max_images:
            raise refused_count(tensor.name, shape[0], self.max_images)
        return [await self.decode(file_bytes(element, index)) for index, element in enumerate(tensor.array)]

    async def infer(self, request: InferenceRequest, tensors: Sequence[Tensor]) -> list[Tensor]:
        """Run the request: padded detections per image, with their counts."""
        tensor = _one_input(tensors, {INPUT_NAMES[DETECTION]: {BYTES, "UINT8"}})
        options = _options(DetectOptions, request)
        names = _requested(request, self.outputs) or list(self.outputs)
        images = await self.images(tensor)
        found = [await self.detect(image, options) for image in images]
        width = max((len(detections) for detections in found), default=0)
        boxes = np.zeros((len(found), width, 4), dtype=np.float32)
        scores = np.zeros((len(found), width), dtype=np.float32)
        labels = np.full((len(found), width), PADDING_LABEL, dtype=np.int64)
        for row, detections in enumerate(found):
            for column, detection in enumerate(detections):
                boxes[row, column] = detection["box"]
                scores[row, column] = detection["score"]
                labels[row, column] = detection["category_id"]
        out = {
            "boxes": Tensor("boxes", "FP32", boxes),
            "scores": Tensor("scores", "FP32", scores),
            "labels": Tensor("labels", "INT64", labels),
            "counts": Tensor("counts", "INT32", np.array([len(d) for d in found], dtype=np.int32)),
            "image_sizes": Tensor("image_sizes", "INT32", np.array([i.shape[:0:-1] for i in images], dtype=np.int32)),
        }
        return [out[name] for name in names]


V2Model = ClassifierModel | DetectorModel


class V2Models:
    """The served models as v2 models: ``find(name, version)`` or a 404; ``serving(model)`` holds one for a request.

    ``registry`` is the service's ``service.registry.Registry``; ``adapt(served)`` makes a served version's v2 model.
    """

    def __init__(self, registry: Any, adapt: Callable[[Any], V2Model]) -> None:
        self.registry, self._adapt = registry, adapt

    def find(self, name: str, version: str | None = None) -> V2Model:
        """The model called ``name`` (at ``version`` when given; else its highest served), else a 404."""
        served = self.registry.find(name, version)
        if getattr(served, "v2", None) is None:
            served.v2 = self._adapt(served)
            served.v2.served = served
        return served.v2

    def versions(self, name: str) -> list[str]:
        """The served versions of ``name``."""
        return [entry.runner.version for entry in self.registry.versions() if entry.runner.name == name]

    def metadata(self, name: str, version: str | None = None) -> ModelMetadata:
        """A model's v2 metadata, listing every served version of its name."""
        metadata = self.find(name, version).metadata()
        return metadata.model_copy(update={"versions": self.versions(name)})

    def serving(self, model: V2Model) -> AbstractContextManager[None]:
        """Hold ``model`` for one request, counted in its statistics."""
        return _serving(self.registry, model.served)


@contextmanager
def _serving(registry: Any, served: Any) -> Iterator[None]:
    with registry.using(served), served.runner.stats.request():
        yield
