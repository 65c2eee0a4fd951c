"""What an exported resnet-lab ONNX file is: its tensors, its metadata keys, its tasks. No torch.

The exporters write files to this contract and the service reads them through it, so the two cannot drift.
Every file takes uint8 RGB ``images`` (normalisation is inside the graph) and carries its serving metadata in
``metadata_props`` (string values; lists and dicts as JSON).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ONNX_FILE_NAME = "model.onnx"  # a classifier's file name in a BentoML model-store entry and the default-model folder
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default_model"  # the classifier shipped with the project
DEFAULT_MODEL = DEFAULT_MODEL_DIR / ONNX_FILE_NAME
PRODUCER = "resnet-lab"
CLASSIFICATION = "classification"
DETECTION = "detection"
TASKS = (CLASSIFICATION, DETECTION)
BENTO_MODEL_NAMES = {CLASSIFICATION: "resnet-classifier", DETECTION: "resnet-detector"}
INPUT_NAMES = {CLASSIFICATION: "images", DETECTION: "image"}  # uint8 RGB [N, 3, H, W] / one image [3, H, W]
OUTPUT_NAMES = {CLASSIFICATION: ("logits",), DETECTION: ("boxes", "scores", "labels")}  # labels: COCO category ids
FP32 = "fp32"  # ``Key.PRECISION`` of a file as exported from PyTorch (also what its absence means)
INT8 = "int8"  # ``Key.PRECISION`` of a statically quantized file (``export.int8``)
BF16 = "bf16"  # a precision an fp32 file may run in (OpenVINO on bf16 units), once ``Key.CHECKS`` records it


class Key:
    """``metadata_props`` keys."""

    TASK = "task"
    MODEL_NAME = "model_name"
    LABELS = "labels"  # classification: JSON list of class names, index order
    RESIZE_SIZE = "resize_size"  # classification: shorter side before the centre crop
    CROP_SIZE = "crop_size"  # classification: the graph's input side
    CATEGORIES = "categories"  # detection: JSON list of {"id", "name"}
    TEST_SCALE = "test_scale"  # detection: JSON {"min_size", "max_size"}, the shorter side the graph resizes to
    SCORE_THRESHOLD = "score_threshold"  # detection: the graph drops detections scoring less
    NMS = "nms"  # detection: JSON of the NMS settings baked into the graph
    RECIPE = "recipe"  # JSON: the training recipe
    METRICS = "metrics"  # JSON: what the source checkpoint measured
    SOURCE_SHA256 = "source_sha256"  # hash of the checkpoint or weights file exported
    PRECISION = "precision"  # INT8 for a quantized file; absent: FP32
    QUANTIZATION = "quantization"  # JSON: how it was quantized and calibrated
    CHECKS = "precision_checks"  # JSON {"bf16": record}: the file's answers in that precision against fp32's
    WEIGHTS = "weights"  # JSON: the published weights file it was exported from (``inference.weights``)


PARSED_KEYS = (Key.TASK, Key.MODEL_NAME, Key.SOURCE_SHA256, Key.LABELS, Key.RESIZE_SIZE, Key.CROP_SIZE, Key.CATEGORIES)
REQUIRED_KEYS = {CLASSIFICATION: (Key.LABELS, Key.RESIZE_SIZE, Key.CROP_SIZE), DETECTION: (Key.CATEGORIES,)}


class ContractError(ValueError):
    """A file that does not follow the contract; the message says how to make one that does."""


@dataclass(frozen=True)
class ModelMetadata:
    """The serving side of an exported file's ``metadata_props``."""

    task: str
    model_name: str
    source_sha256: str = ""
    labels: list[str] = field(default_factory=list)
    resize_size: int = 0
    crop_size: int = 0
    categories: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, str] = field(default_factory=dict)  # recipe, metrics and any other key, as stored

    @classmethod
    def from_props(cls, props: Mapping[str, str], where: str = "the model") -> ModelMetadata:
        """Parse ``metadata_props``; files exported before ``task`` existed are classifiers."""
        task = props.get(Key.TASK, CLASSIFICATION)
        if task not in TASKS:
            raise ContractError(f"{where} has task={task!r}; expected one of {', '.join(TASKS)}")
        missing = [key for key in REQUIRED_KEYS[task] if key not in props]
        if missing:
            raise ContractError(
                f"{where} lacks metadata {missing}: it was not exported by resnet-lab "
                "(export it with `python -m export --checkpoint FILE --output model.onnx`)"
            )
        return cls(
            task=task,
            model_name=props.get(Key.MODEL_NAME, "unnamed"),
            source_sha256=props.get(Key.SOURCE_SHA256, ""),
            labels=[str(label) for label in json.loads(props.get(Key.LABELS, "[]"))],
            resize_size=int(props.get(Key.RESIZE_SIZE, 0)),
            crop_size=int(props.get(Key.CROP_SIZE, 0)),
            categories=list(json.loads(props.get(Key.CATEGORIES, "[]"))),
            extra={key: value for key, value in props.items() if key not in PARSED_KEYS},
        )

    def to_props(self) -> dict[str, str]:
        """The ``metadata_props`` to write (the inverse of ``from_props``)."""
        props = {Key.TASK: self.task, Key.MODEL_NAME: self.model_name, Key.SOURCE_SHA256: self.source_sha256}
        if self.task == CLASSIFICATION:
            props |= {
                Key.LABELS: json.dumps(self.labels),
                Key.RESIZE_SIZE: str(self.resize_size),
                Key.CROP_SIZE: str(self.crop_size),
            }
        else:
            props[Key.CATEGORIES] = json.dumps(self.categories)
        return {**props, **self.extra}

    def json_value(self, key: str, default: Any = None) -> Any:
        """An extra key's JSON value (``recipe``, ``metrics``), ``default`` when absent."""
        return json.loads(self.extra[key]) if key in self.extra else default

    @property
    def precision(self) -> str:
        """The file's own precision: ``INT8`` for a quantized file, else ``FP32``."""
        return self.extra.get(Key.PRECISION, FP32)

    def check(self, precision: str) -> dict[str, Any] | None:
        """The recorded comparison of this file's answers in ``precision`` with fp32's (``Key.CHECKS``), or None."""
        return self.json_value(Key.CHECKS, {}).get(precision)
