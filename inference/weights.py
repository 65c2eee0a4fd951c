"""Published weight files as data: what each of torchvision's ResNet and Faster R-CNN files is, as torchvision's own
``Weights`` enums describe it (architecture, eval transform, categories, published metrics, source).

``python -m export --torchvision-state-dict resnet50-11ad3fa6.pth --output resnet50.onnx`` finds the file here by its
name and needs no ``--arch`` or ``--resize-size`` (flags still override); the exported file records the entry
(``Key.WEIGHTS``), so ``/info`` and model cards name the weights; docs/pretrained.md's table is generated from
``WEIGHTS``. A file is the published one when its SHA-256 starts with the hash in its name, as torchvision checks
downloads. ``tests/test_weights_table.py`` holds the table to torchvision's enums.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from inference.contract import CLASSIFICATION, DETECTION

SOURCE = "https://download.pytorch.org/models/"  # where torchvision publishes them (nothing here downloads)
HASH_IN_NAME = re.compile(r"-(?P<hash>[0-9a-f]{8,})\.pth$")


@dataclass(frozen=True)
class PublishedWeights:
    """One published weight file."""

    file: str  # its published name, the hash prefix included
    weights: str  # torchvision's enum member
    arch: str  # what it holds (``--arch``)
    task: str
    transform: str  # the eval transform it was measured with
    categories: str
    metrics: dict[str, float] = field(default_factory=dict)  # as published (not measured here)
    resize_size: int = 0  # classifiers: the shorter side before the centre crop
    crop_size: int = 0

    @property
    def hash_prefix(self) -> str:
        """The SHA-256 prefix in the file's name."""
        found = HASH_IN_NAME.search(self.file)
        return found["hash"] if found else ""

    @property
    def source(self) -> str:
        """Where it is published."""
        return SOURCE + self.file

    def record(self, sha256: str) -> dict[str, Any]:
        """What an exported file keeps of it (``Key.WEIGHTS``), ``published``: whether the file is byte for byte
        the published one (its SHA-256 starts with the name's hash)."""
        return {**asdict(self), "source": self.source, "published": sha256.startswith(self.hash_prefix)}


def _resnet(file: str, weights: str, top1: float, top5: float, resize: int = 256) -> PublishedWeights:
    arch = file.split("-", 1)[0]
    return PublishedWeights(
        file=file,
        weights=weights,
        arch=arch,
        task=CLASSIFICATION,
        transform=f"resize {resize} (bilinear), centre crop 224",
        categories="ImageNet-1k: 1000 classes",
        metrics={"ImageNet-1k top-1": top1, "ImageNet-1k top-5": top5},
        resize_size=resize,
        crop_size=224,
    )


def _faster_rcnn(file: str, weights: str, arch: str, box_ap: float) -> PublishedWeights:
    return PublishedWeights(
        file=file,
        weights=weights,
        arch=arch,
        task=DETECTION,
        transform="shorter side 800, longer at most 1333",
        categories="COCO: 91 slots (80 used), label = COCO category id",
        metrics={"COCO val2017 box AP": box_ap},
    )


WEIGHTS = (
    _faster_rcnn(
        "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth",
        "FasterRCNN_ResNet50_FPN_Weights.COCO_V1",
        "fasterrcnn_resnet50_fpn",
        37.0,
    ),
    _faster_rcnn(
        "fasterrcnn_resnet50_fpn_v2_coco-dd69338a.pth",
        "FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1",
        "fasterrcnn_resnet50_fpn_v2",
        46.7,
    ),
    _resnet("resnet18-f37072fd.pth", "ResNet18_Weights.IMAGENET1K_V1", 69.758, 89.078),
    _resnet("resnet34-b627a593.pth", "ResNet34_Weights.IMAGENET1K_V1", 73.314, 91.42),
    _resnet("resnet50-0676ba61.pth", "ResNet50_Weights.IMAGENET1K_V1", 76.13, 92.862),
    _resnet("resnet50-11ad3fa6.pth", "ResNet50_Weights.IMAGENET1K_V2", 80.858, 95.434, resize=232),
    _resnet("resnet101-63fe2227.pth", "ResNet101_Weights.IMAGENET1K_V1", 77.374, 93.546),
    _resnet("resnet101-cd907fc2.pth", "ResNet101_Weights.IMAGENET1K_V2", 81.886, 95.78, resize=232),
    _resnet("resnet152-394f9c45.pth", "ResNet152_Weights.IMAGENET1K_V1", 78.312, 94.046),
    _resnet("resnet152-f82ba261.pth", "ResNet152_Weights.IMAGENET1K_V2", 82.284, 96.002, resize=232),
)
BY_FILE = {entry.file: entry for entry in WEIGHTS}


def find(path: str | os.PathLike) -> PublishedWeights | None:
    """The table's entry for a file of that name, or None (any other file name)."""
    return BY_FILE.get(Path(path).name)


def markdown_table() -> str:
    """docs/pretrained.md's table of every published file."""
    lines = [
        "| file | weights (torchvision) | `--arch` (implied) | eval transform | published |",
        "| --- | --- | --- | --- | --- |",
    ]
    for entry in WEIGHTS:
        published = ", ".join(f"{name} {value}" for name, value in entry.metrics.items())
        lines.append(f"| `{entry.file}` | `{entry.weights}` | `{entry.arch}` | {entry.transform} | {published} |")
    return "\n".join(lines)
