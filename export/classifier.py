"""Export a classifier to one self-contained ONNX file that carries everything serving needs.

The graph takes ``images``: uint8 ``[N, 3, H, W]`` RGB at the crop size and returns ``logits``: float32
``[N, num_classes]``; normalisation is inside the graph. Metadata (``task=classification``, labels, the eval resize
and crop, recipe, metrics, source hash; see ``service.contract``) rides in ``metadata_props``. Before anything is
written, ONNX Runtime is checked against PyTorch on real images; a mismatch raises without writing. The file is then
registered in the BentoML model store.

Sources: a resnet-lab checkpoint (``spec_from_checkpoint``) or torchvision's ImageNet ResNet weights
(``spec_from_torchvision``; V1 and V2 files are the same architecture, V2's eval transform is resize 232, crop 224).
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from inference import imaging, weights
from inference.contract import (
    CLASSIFICATION,
    FP32,
    INPUT_NAMES,
    INT8,
    OUTPUT_NAMES,
    Key,
    ModelMetadata,
)
from models import create_model, model_info
from models.preprocess import NormalizedClassifier
from toolkit import data_folder
from toolkit.errors import UsageError
from training import imagenet
from training.checkpoint import read_torch_state
from training.classifier import classifier_from_checkpoint, load_classifier_checkpoint

from .int8 import Int8Options, quantized_and_verified
from .onnx_file import Destination, Verification, sha256_of, to_jsonable, with_metadata, write_and_register
from .precision_check import bf16_checked, bf16_summary

OPSET = 18
BF16_IMAGES = 256  # real images bf16's answers are compared with fp32's on (fewer where fewer are there)
(LOGITS,) = OUTPUT_NAMES[CLASSIFICATION]
IMAGES = INPUT_NAMES[CLASSIFICATION]
DETECTOR_KEY_PREFIXES = ("backbone.", "rpn.", "roi_heads.")  # a torchvision detector's state dict


@dataclass
class ExportSpec:
    """Everything the exporter needs, whatever the source (checkpoint or torchvision state dict)."""

    classifier: nn.Module  # uint8 images in, logits out
    model_name: str
    labels: list[str]
    resize_size: int
    crop_size: int
    source_sha256: str
    recipe: dict[str, Any] = field(default_factory=dict)
    metrics: list[Any] = field(default_factory=list)
    weights: dict[str, Any] | None = None  # the published file it comes from (``inference.weights``)

    def metadata(self) -> ModelMetadata:
        """What the file will carry (``inference.contract``)."""
        extra = {Key.RECIPE: json.dumps(self.recipe), Key.METRICS: json.dumps(self.metrics)}
        if self.weights is not None:
            extra[Key.WEIGHTS] = json.dumps(self.weights)
        return ModelMetadata(
            task=CLASSIFICATION,
            model_name=self.model_name,
            source_sha256=self.source_sha256,
            labels=self.labels,
            resize_size=self.resize_size,
            crop_size=self.crop_size,
            extra=extra,
        )


def spec_from_checkpoint(path: str | os.PathLike) -> ExportSpec:
    """Read a resnet-lab checkpoint (weights_only) into an export spec."""
    state = load_classifier_checkpoint(path)
    preprocess = state["preprocess"]
    labels = [str(label) for label in state["labels"]]
    classifier = classifier_from_checkpoint(state)
    num_classes = classifier.model.fc.out_features
    if len(labels) != num_classes:
        raise UsageError(f"checkpoint {path} has {len(labels)} labels but the model has {num_classes} outputs")
    return ExportSpec(
        classifier=classifier,
        model_name=str(state["model_name"]),
        labels=labels,
        resize_size=int(preprocess["resize_size"]),
        crop_size=int(preprocess["crop_size"]),
        source_sha256=sha256_of(path),
        recipe=to_jsonable(state.get("recipe") or {}),
        metrics=to_jsonable(state.get("metrics") or []),
    )


def spec_from_torchvision(
    path: str | os.PathLike,
    arch: str,
    classes_file: str | os.PathLike | None = None,
    resize_size: int | None = None,
    crop_size: int | None = None,
) -> ExportSpec:
    """torchvision ImageNet weights in the v1.5 layout. Eval transform: resize ``resize_size`` and centre crop
    ``crop_size``; None: what torchvision documents for a published file (``inference.weights``: 232 for the V2
    files), else 256 and 224."""
    path = Path(path)
    published = weights.find(path)
    if published is not None and published.arch != arch:
        published = None  # the file named like one model, told to be another: nothing of the table applies
    if not path.is_file():
        raise UsageError(f"state dict not found: {path}")
    try:
        info = model_info(arch)
    except ValueError as error:
        raise UsageError(str(error)) from None
    if info.family != "imagenet":
        raise UsageError(f"--torchvision-state-dict needs an ImageNet architecture, not {arch}")
    state_dict = read_torch_state(path, "state dict", "pass torchvision's ImageNet weights file (.pth)")
    if isinstance(state_dict, dict) and isinstance(state_dict.get("state_dict"), dict):
        state_dict = state_dict["state_dict"]
    model = create_model(arch, stride_in_1x1=False)
    try:
        model.load_state_dict(state_dict, strict=True)
    except (RuntimeError, TypeError, AttributeError) as error:
        hint = ""
        if isinstance(state_dict, dict) and any(str(key).startswith(DETECTOR_KEY_PREFIXES) for key in state_dict):
            hint = " It holds a detector: pass --arch fasterrcnn_resnet50_fpn or fasterrcnn_resnet50_fpn_v2."
        raise UsageError(f"{path} does not fit {arch} (torchvision v1.5 layout): {str(error)[:500]}{hint}") from None
    classes_file = Path(classes_file) if classes_file else imagenet.CLASSES_FILE
    if not classes_file.is_file():
        raise UsageError(f"class names not found at {classes_file}; pass --classes FILE (index<TAB>wnid<TAB>name)")
    labels = list(imagenet.read_classes(classes_file)[1])
    if len(labels) != model.fc.out_features:
        raise UsageError(f"{classes_file} has {len(labels)} classes but {arch} has {model.fc.out_features} outputs")
    inputs = info.inputs
    resize_size = resize_size or (published.resize_size if published else inputs.resize_size)
    crop_size = crop_size or (published.crop_size if published else inputs.crop_size)
    sha256 = sha256_of(path)
    return ExportSpec(
        classifier=NormalizedClassifier(model, torch.tensor(inputs.mean), torch.tensor(inputs.std)),
        model_name=arch,
        labels=labels,
        resize_size=resize_size,
        crop_size=crop_size,
        source_sha256=sha256,
        recipe={
            "source": "torchvision state dict",
            "file": path.name,
            "layout": "v1.5 (stride_in_1x1=False)",
            "eval_transform": f"resize {resize_size} (bilinear), centre crop {crop_size}",
        },
        metrics=[],
        weights=published.record(sha256) if published else None,
    )


def verification_images(
    spec: ExportSpec, verify_dir: str | os.PathLike | None, count: int
) -> tuple[list[Image.Image], str]:
    """Real RGB images to compare the runtimes on, and where they came from: --verify-images, else the data
    folder's CIFAR-10 test images (a CIFAR-sized model) or ImageNet photos, else the photos shipped in tests/data."""
    if verify_dir is not None:
        files = data_folder.image_files(verify_dir, count)
        if not files:
            raise UsageError(f"no images (*.jpg, *.png, ...) under --verify-images {verify_dir}")
        return [imaging.load_rgb(path) for path in files], f"{len(files)} images of {verify_dir}"
    if len(spec.labels) != 1000 and spec.crop_size <= 64:
        try:
            sources = [data for data, _ in data_folder.cifar_images(count)]
            return [imaging.load_rgb(data) for data in sources], f"{len(sources)} CIFAR-10 test images"
        except data_folder.DataMissing:
            pass
    files, where = data_folder.real_photos("imagenet_samples", count)
    return [imaging.load_rgb(path) for path in files], where


def image_batch(images: Sequence[Image.Image], resize_size: int, crop_size: int) -> torch.Tensor:
    """uint8 ``[N, 3, crop, crop]``: the service's own resize and centre crop of each image."""
    return torch.stack(
        [torch.from_numpy(imaging.to_chw(imaging.resize_and_crop(image, resize_size, crop_size))) for image in images]
    )


def export_onnx_bytes(classifier: nn.Module, crop_size: int) -> bytes:
    """Trace the uint8 classifier to ONNX (dynamic batch, opset 18) and return the serialized model."""
    import onnx

    classifier = classifier.eval()
    example = torch.randint(0, 256, (2, 3, crop_size, crop_size), dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            classifier,
            (example,),
            input_names=[IMAGES],
            output_names=[LOGITS],
            opset_version=OPSET,
            dynamic_shapes=({0: batch},),
            dynamo=True,
            external_data=False,
            optimize=True,
            verbose=False,
        )
    proto = program.model_proto
    onnx.checker.check_model(proto, full_check=True)
    return proto.SerializeToString()


def float32_error(classifier: nn.Module, batch: torch.Tensor) -> float:
    """PyTorch float32's own error on ``batch``: the largest logit difference from a float64 copy of the model."""
    with torch.no_grad():
        single = classifier.eval()(batch).double()
        double = copy.deepcopy(classifier).double().eval()(batch)
    return float((single - double).abs().max())


def verify(model_bytes: bytes, classifier: nn.Module, batch: torch.Tensor) -> dict[str, float]:
    """Compare ONNX Runtime (CPU) with PyTorch on ``batch``; UsageError on any mismatch. The tolerance is 1e-4 of
    the largest logit, or twice float32's own error where that is larger (deep nets: ResNet-152 with test weights
    here errs 1.9e-3 in float32 against float64, as much as ORT differs from PyTorch)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = classifier.eval()(batch).numpy()
    got = session.run([LOGITS], {IMAGES: batch.numpy()})[0]
    single = session.run([LOGITS], {IMAGES: batch[:1].numpy()})[0]  # the batch dimension really is dynamic
    max_diff = max(float(np.abs(got - expected).max()), float(np.abs(single - expected[:1]).max()))
    own_error = float32_error(classifier, batch)
    tolerance = max(1e-4 * (1.0 + float(np.abs(expected).max())), 2 * own_error)
    same_top1 = bool((got.argmax(1) == expected.argmax(1)).all() and single.argmax(1)[0] == expected.argmax(1)[0])
    report = {
        "images": int(batch.shape[0]),
        "max_abs_diff": max_diff,
        "tolerance": tolerance,
        "float32_error": own_error,
    }
    if got.shape != expected.shape or max_diff > tolerance or not same_top1:
        raise UsageError(
            f"ONNX verification FAILED on {batch.shape[0]} real images: max |logit diff| {max_diff:.3g} "
            f"(tolerance {tolerance:.3g}), identical top-1: {same_top1}. Nothing was written."
        )
    return report


def export_classifier(
    spec: ExportSpec,
    destination: Destination,
    verification: Verification | None = None,
    int8: Int8Options | None = None,
) -> dict[str, Any]:
    """Export, verify on real images (with ``int8``, quantize and verify again; else record bf16's answers against
    fp32's where this CPU has bf16 units), write atomically, register if asked; returns a small report.
    ``verification`` None: ``Verification()``."""
    verification = verification or Verification()
    metadata = spec.metadata()
    model_bytes = export_onnx_bytes(spec.classifier, spec.crop_size)
    images, images_from = verification_images(spec, verification.images, verification.count)
    batch = image_batch(images, spec.resize_size, spec.crop_size)
    report: dict[str, Any] = {"verify": {**verify(model_bytes, spec.classifier, batch), "images_from": images_from}}
    if int8 is None:
        checks, checks_from = verification_images(spec, verification.images, max(BF16_IMAGES, verification.count))
        pixels = image_batch(checks, spec.resize_size, spec.crop_size).numpy()
        metadata, report["bf16_check"] = bf16_checked(model_bytes, metadata, pixels, checks_from)
    model_bytes = with_metadata(model_bytes, metadata)
    if int8 is not None:
        model_bytes, report["verify_int8"] = quantized_and_verified(model_bytes, int8)
        metadata = ModelMetadata.from_props(metadata_props(model_bytes))
    report |= write_and_register(model_bytes, metadata, destination)
    report["precision"] = INT8 if int8 else FP32
    return report


def metadata_props(model_bytes: bytes) -> dict[str, str]:
    """A serialized model's ``metadata_props``."""
    import onnx

    return {entry.key: entry.value for entry in onnx.load_from_string(model_bytes).metadata_props}


def summary(spec: ExportSpec, report: dict[str, Any]) -> str:
    """What ``python -m export`` prints after a classifier export."""
    check = report["verify"]
    lines = [
        f"wrote {report['output']} ({report['bytes'] / 1e6:.1f} MB, {report['precision']}, {spec.model_name}, "
        f"{len(spec.labels)} classes, resize {spec.resize_size} crop {spec.crop_size}); ORT vs PyTorch on "
        f"{check['images_from']}: max |diff| {check['max_abs_diff']:.2e} <= {check['tolerance']:.2e}, same top-1"
    ]
    if "bf16_check" in report:
        lines.append(bf16_summary(report["bf16_check"], CLASSIFICATION))
    if "verify_int8" in report:
        agreement = report["verify_int8"]
        lines.append(
            f"int8 vs fp32: top-1 agreement {100 * agreement['agreement']:.1f}% on {agreement['images']} real images"
        )
    return "\n".join(lines)
