"""Export a classifier to one self-contained ONNX file that carries everything serving needs.

The graph takes ``images``: uint8 ``[N, 3, H, W]`` RGB at the crop size and returns ``logits``: float32
``[N, num_classes]``; normalisation is inside the graph. Metadata (``task=classification``, labels, sizes, recipe,
metrics, source hash; see ``service.contract``) rides in ``metadata_props``. Before anything is written, ONNX
Runtime is checked against PyTorch on real images; a mismatch exits without writing. The file is then registered
in the BentoML model store.

    python -m export --checkpoint runs/r20/checkpoints/last.pt --output model.onnx
    python -m export --torchvision-state-dict resnet50.pth --arch resnet50 --output resnet50.onnx
"""

from __future__ import annotations

import argparse
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

from models import create_model, model_info
from models.preprocess import NormalizedClassifier
from service import imaging
from service.contract import (
    BENTO_MODEL_NAMES,
    CLASSIFICATION,
    FP32,
    INPUT_NAMES,
    INT8,
    OUTPUT_NAMES,
    Key,
    ModelMetadata,
)
from training import cli, data_folder, imagenet
from training.checkpoint import read_torch_state
from training.classifier import classifier_from_checkpoint, load_classifier_checkpoint
from training.errors import UsageError

from .int8 import add_arguments as add_int8_arguments
from .int8 import quantized_and_verified
from .onnx_file import register_in_store, sha256_of, to_jsonable, with_metadata, write_model

OPSET = 18
(LOGITS,) = OUTPUT_NAMES[CLASSIFICATION]
IMAGES = INPUT_NAMES[CLASSIFICATION]


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

    def metadata(self) -> ModelMetadata:
        """What the file will carry (``service.contract``)."""
        return ModelMetadata(
            task=CLASSIFICATION,
            model_name=self.model_name,
            source_sha256=self.source_sha256,
            labels=self.labels,
            resize_size=self.resize_size,
            crop_size=self.crop_size,
            extra={Key.RECIPE: json.dumps(self.recipe), Key.METRICS: json.dumps(self.metrics)},
        )


def spec_from_checkpoint(path: str | os.PathLike) -> ExportSpec:
    """Read a resnet-lab checkpoint (weights_only) into an export spec."""
    state = load_classifier_checkpoint(path)
    preprocess = state["preprocess"]
    labels = [str(label) for label in state["labels"]]
    classifier = classifier_from_checkpoint(state)
    num_classes = classifier.model.fc.out_features
    if len(labels) != num_classes:
        raise SystemExit(f"checkpoint {path} has {len(labels)} labels but the model has {num_classes} outputs")
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


def spec_from_torchvision(path: str | os.PathLike, arch: str, classes_file: str | os.PathLike | None) -> ExportSpec:
    """torchvision ImageNet weights in the v1.5 layout, with the standard ImageNet eval preprocessing."""
    path = Path(path)
    if not path.is_file():
        raise SystemExit(f"state dict not found: {path}")
    try:
        info = model_info(arch)
    except ValueError as error:
        raise SystemExit(str(error)) from None
    if info.family != "imagenet":
        raise SystemExit(f"--torchvision-state-dict needs an ImageNet architecture, not {arch}")
    state_dict = read_torch_state(path, "state dict", "pass torchvision's ImageNet weights file (.pth)")
    if isinstance(state_dict, dict) and isinstance(state_dict.get("state_dict"), dict):
        state_dict = state_dict["state_dict"]
    model = create_model(arch, stride_in_1x1=False)
    try:
        model.load_state_dict(state_dict, strict=True)
    except (RuntimeError, TypeError, AttributeError) as error:
        raise SystemExit(f"{path} does not fit {arch} (torchvision v1.5 layout): {str(error)[:500]}") from None
    classes_file = Path(classes_file) if classes_file else imagenet.CLASSES_FILE
    if not classes_file.is_file():
        raise SystemExit(f"class names not found at {classes_file}; pass --classes FILE (index<TAB>wnid<TAB>name)")
    labels = list(imagenet.read_classes(classes_file)[1])
    if len(labels) != model.fc.out_features:
        raise SystemExit(f"{classes_file} has {len(labels)} classes but {arch} has {model.fc.out_features} outputs")
    inputs = info.inputs
    return ExportSpec(
        classifier=NormalizedClassifier(model, torch.tensor(inputs.mean), torch.tensor(inputs.std)),
        model_name=arch,
        labels=labels,
        resize_size=inputs.resize_size,
        crop_size=inputs.crop_size,
        source_sha256=sha256_of(path),
        recipe={"source": "torchvision state dict", "file": path.name, "layout": "v1.5 (stride_in_1x1=False)"},
        metrics=[],
    )


def verification_images(spec: ExportSpec, verify_dir: str | os.PathLike | None, count: int) -> list[Image.Image]:
    """Real RGB images to compare the runtimes on: --verify-images, else shared ImageNet or CIFAR-10 samples."""
    if verify_dir is not None:
        files = data_folder.image_files(verify_dir, count)
        if not files:
            raise SystemExit(f"no images (*.jpg, *.png, ...) under --verify-images {verify_dir}")
        return [imaging.load_rgb(path) for path in files]
    imagenet_like = len(spec.labels) == 1000 or spec.crop_size > 64
    finders = [
        lambda: data_folder.imagenet_sample_files(count),
        lambda: [data for data, _ in data_folder.cifar_images(count)],
    ]
    problems = []
    for find in finders if imagenet_like else finders[::-1]:
        try:
            sources = find()
            break
        except data_folder.DataMissing as missing:
            problems.append(str(missing))
    else:
        raise UsageError(
            "no real images to verify the export with: pass --verify-images DIR (a folder of photos of the kind the "
            f"model classifies); looked for: {'; '.join(problems)}"
        )
    return [imaging.load_rgb(source) for source in sources]


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


def verify(model_bytes: bytes, classifier: nn.Module, batch: torch.Tensor) -> dict[str, float]:
    """Compare ONNX Runtime (CPU) with PyTorch on ``batch``; SystemExit on any mismatch."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = classifier.eval()(batch).numpy()
    got = session.run([LOGITS], {IMAGES: batch.numpy()})[0]
    single = session.run([LOGITS], {IMAGES: batch[:1].numpy()})[0]  # the batch dimension really is dynamic
    max_diff = max(float(np.abs(got - expected).max()), float(np.abs(single - expected[:1]).max()))
    tolerance = 1e-4 * (1.0 + float(np.abs(expected).max()))
    same_top1 = bool((got.argmax(1) == expected.argmax(1)).all() and single.argmax(1)[0] == expected.argmax(1)[0])
    report = {"images": int(batch.shape[0]), "max_abs_diff": max_diff, "tolerance": tolerance}
    if got.shape != expected.shape or max_diff > tolerance or not same_top1:
        raise SystemExit(
            f"ONNX verification FAILED on {batch.shape[0]} real images: max |logit diff| {max_diff:.3g} "
            f"(tolerance {tolerance:.3g}), identical top-1: {same_top1}. Nothing was written."
        )
    return report


def export(
    spec: ExportSpec,
    output: str | os.PathLike,
    verify_dir: str | os.PathLike | None = None,
    verify_count: int = 8,
    register: bool = True,
    bento_name: str | None = None,
    int8: argparse.Namespace | None = None,
) -> dict[str, Any]:
    """Export, verify on real images (and, with ``int8`` options, quantize and verify again), write atomically,
    register; returns a small report."""
    metadata = spec.metadata()
    model_bytes = with_metadata(export_onnx_bytes(spec.classifier, spec.crop_size), metadata)
    images = verification_images(spec, verify_dir, verify_count)
    report: dict[str, Any] = {
        "verify": verify(model_bytes, spec.classifier, image_batch(images, spec.resize_size, spec.crop_size))
    }
    if int8 is not None:
        model_bytes, report["verify_int8"] = quantized_and_verified(model_bytes, int8)
        metadata = ModelMetadata.from_props(metadata_props(model_bytes))
    output = write_model(model_bytes, output)
    report |= {"output": str(output), "bytes": len(model_bytes), "precision": INT8 if int8 else FP32}
    if register:
        report["bento_model"] = register_in_store(output, metadata, bento_name)
    return report


def metadata_props(model_bytes: bytes) -> dict[str, str]:
    """A serialized model's ``metadata_props``."""
    import onnx

    return {entry.key: entry.value for entry in onnx.load_from_string(model_bytes).metadata_props}


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__, formatter_class=cli.HelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="resnet-lab checkpoint written by training.train")
    source.add_argument("--torchvision-state-dict", help="torchvision ImageNet weights (.pth), v1.5 layout")
    parser.add_argument("--arch", default="resnet50", help="architecture for --torchvision-state-dict")
    parser.add_argument(
        "--classes",
        help="index<TAB>wnid<TAB>name file for --torchvision-state-dict (default: the ImageNet classes shipped in "
        "training/imagenet_classes.tsv)",
    )
    parser.add_argument("--output", required=True, help="where to write the .onnx file")
    parser.add_argument(
        "--verify-images",
        help="folder of real images for the ORT-vs-PyTorch check (default: shared ImageNet or CIFAR-10 samples)",
    )
    parser.add_argument("--verify-count", type=int, default=8, help="how many real images to verify on")
    parser.add_argument("--no-register", action="store_true", help="skip the BentoML model store")
    parser.add_argument("--bento-name", default=BENTO_MODEL_NAMES[CLASSIFICATION], help="name in the model store")
    parser.add_argument("--quantize", choices=[INT8], help="write an int8 model (ONNX Runtime static quantization)")
    int8_options = parser.add_argument_group("int8 (with --quantize int8; see python -m export.int8)")
    add_int8_arguments(int8_options)
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """CLI: export a checkpoint (or torchvision weights) to a verified, self-contained ONNX file."""
    args = build_parser().parse_args(argv)
    torch.set_flush_denormal(True)
    if args.checkpoint:
        spec = spec_from_checkpoint(args.checkpoint)
    else:
        spec = spec_from_torchvision(args.torchvision_state_dict, args.arch, args.classes)
    int8 = args if args.quantize == INT8 else None
    report = export(
        spec, args.output, args.verify_images, args.verify_count, not args.no_register, args.bento_name, int8
    )
    check = report["verify"]
    print(
        f"wrote {report['output']} ({report['bytes'] / 1e6:.1f} MB, {report['precision']}, {spec.model_name}, "
        f"{len(spec.labels)} classes); ORT vs PyTorch on {check['images']} real images: max |diff| "
        f"{check['max_abs_diff']:.2e} <= {check['tolerance']:.2e}, same top-1"
    )
    if int8:
        agreement = report["verify_int8"]
        print(f"int8 vs fp32: top-1 agreement {100 * agreement['agreement']:.1f}% on {agreement['images']} real images")
    if "bento_model" in report:
        print(f"registered in the BentoML model store as {report['bento_model']} (see `bentoml models list`)")
    return report
