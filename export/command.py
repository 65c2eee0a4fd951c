"""``python -m export``: a checkpoint (classifier or detector) or torchvision weights -> one verified ONNX file.

A checkpoint's own ``format`` says whether it is a classifier (``export.classifier``) or a detector
(``export.detector``); for torchvision weights ``--arch`` says which (ResNet-18..152, or Faster R-CNN).

    python -m export --checkpoint runs/r20/checkpoints/last.pt --output model.onnx
    python -m export --checkpoint runs/det/checkpoints/last.pt --output detector.onnx
    python -m export --torchvision-state-dict resnet50-11ad3fa6.pth --output resnet50.onnx
    python -m export --torchvision-state-dict fasterrcnn_resnet50_fpn_coco-258fb6c6.pth --output detector.onnx
    python -m export --torchvision-state-dict my-finetuned.pth --arch resnet50 --output mine.onnx

A published torchvision file is known by its name (``inference.weights``): its architecture and eval transform come
from there, and the exported file names it. The file is written to ``--output`` only; ``--register`` also adds it to
the machine-wide BentoML model store.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import torch

from detection.checkpoint import load_detection_checkpoint
from detection.recipes import TORCHVISION_RECIPES
from export import classifier, detector
from export.int8 import Int8Options
from export.int8 import add_arguments as add_int8_arguments
from export.onnx_file import VERIFY_COUNT, Destination, Verification
from export.torchvision_detector import is_torchvision_detector, state_from_torchvision
from inference import weights
from inference.contract import BENTO_MODEL_NAMES, CLASSIFICATION, DETECTION, INT8
from models import list_models
from toolkit import cli
from toolkit.errors import UsageError

CLASSIFIER_FLAGS = {"classes": "--classes", "resize_size": "--resize-size", "crop_size": "--crop-size",
                    "quantize": "--quantize"}  # fmt: skip
DETECTOR_FLAGS = {"score_threshold": "--score-threshold", "min_size_test": "--min-size-test",
                  "max_size": "--max-size", "no_fold_batchnorm": "--no-fold-batchnorm"}  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The one command line of both exporters, its options grouped by the kind of model they apply to."""
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__, formatter_class=cli.HelpFormatter)
    sources = parser.add_argument_group("source: --checkpoint or --torchvision-state-dict")
    source = sources.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--checkpoint",
        type=Path,
        metavar="FILE",
        help="resnet-lab checkpoint written by training.train or detection.train",
    )
    source.add_argument(
        "--torchvision-state-dict",
        type=Path,
        metavar="FILE",
        help="torchvision weights (.pth): an ImageNet ResNet or a COCO Faster R-CNN",
    )
    imagenet = ", ".join(name for name in list_models("imagenet") if name.startswith("resnet"))
    sources.add_argument(
        "--arch",
        help=f"what --torchvision-state-dict holds: {imagenet} (a classifier) or {', '.join(TORCHVISION_RECIPES)} "
        "(a detector) (default: the published file's, known by its name; another file needs it)",
    )
    output = parser.add_argument_group("output and verification (both kinds)")
    output.add_argument("--output", required=True, type=Path, help="where to write the .onnx file")
    output.add_argument(
        "--verify-images",
        type=Path,
        help="folder of real images for the ORT-vs-PyTorch check (default: the data folder's ImageNet or CIFAR-10 "
        "images for a classifier, its COCO val2017 photos for a detector; without one, the photos in tests/data)",
    )
    output.add_argument("--verify-count", type=int, default=VERIFY_COUNT, help="how many real images to verify on")
    output.add_argument(
        "--register", action="store_true", help="also add the file to the BentoML model store ($BENTOML_HOME)"
    )
    names = " or ".join(BENTO_MODEL_NAMES[task] for task in (CLASSIFICATION, DETECTION))
    output.add_argument(
        "--bento-name", help=f"name in the model store, with --register (default: {names}, by the model's task)"
    )
    classify = parser.add_argument_group("classifier")
    classify.add_argument(
        "--classes",
        type=Path,
        help="index<TAB>wnid<TAB>name file for --torchvision-state-dict (default: the ImageNet classes shipped in "
        "training/imagenet_classes.tsv)",
    )
    classify.add_argument(
        "--resize-size",
        type=int,
        help="shorter side before the centre crop, written into the file for the service (default: the checkpoint's; "
        "for torchvision weights the published file's, 232 for the V2 files, else 256)",
    )
    classify.add_argument(
        "--crop-size", type=int, help="the graph's input side (default: the checkpoint's; 224 for torchvision weights)"
    )
    classify.add_argument("--quantize", choices=[INT8], help="write an int8 model (ONNX Runtime static quantization)")
    add_int8_arguments(parser.add_argument_group("int8 (with --quantize int8; see python -m export.int8)"))
    detect = parser.add_argument_group("detector")
    detect.add_argument(
        "--score-threshold",
        type=float,
        help=f"the graph drops detections scoring less (default: {detector.SCORE_THRESHOLD})",
    )
    detect.add_argument("--min-size-test", type=int, help="shorter side the graph resizes to (default: the recipe's)")
    detect.add_argument("--max-size", type=int, help="longest side cap (default: the recipe's)")
    detect.add_argument(
        "--no-fold-batchnorm",
        action="store_true",
        help="keep each BatchNorm as its own multiply and add instead of folding it into the convolution before it",
    )
    return parser


def torchvision_arch(args: argparse.Namespace) -> str:
    """``--arch``, else the architecture of the published file ``--torchvision-state-dict`` names."""
    if args.arch:
        return args.arch
    published = weights.find(args.torchvision_state_dict)
    if published is None:
        known = ", ".join(entry.file for entry in weights.WEIGHTS[:3])
        raise UsageError(
            f"{args.torchvision_state_dict.name} is not a published torchvision file known by name ({known}, ...; "
            "docs/pretrained.md lists them): pass --arch"
        )
    return published.arch


def task_of(args: argparse.Namespace) -> str:
    """Which exporter runs: a checkpoint's format decides, torchvision weights go by their architecture."""
    if args.checkpoint is not None:
        if args.arch is not None:
            raise UsageError("--arch applies to --torchvision-state-dict; a checkpoint names its own architecture")
        return DETECTION if detector.is_detection_checkpoint(args.checkpoint) else CLASSIFICATION
    return DETECTION if is_torchvision_detector(torchvision_arch(args)) else CLASSIFICATION


def refuse_other_kinds_flags(args: argparse.Namespace, task: str) -> None:
    """A flag of the other kind of model is a mistake worth naming, not something to ignore."""
    others = DETECTOR_FLAGS if task == CLASSIFICATION else CLASSIFIER_FLAGS
    given = [flag for name, flag in others.items() if getattr(args, name) not in (None, False)]
    if given:
        kind = "detector" if task == CLASSIFICATION else "classifier"
        raise UsageError(f"{', '.join(given)} applies to a {kind}, and this source is a {task} model")
    for name in ("verify_count", "resize_size", "crop_size", "min_size_test", "max_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")


def classifier_route(args: argparse.Namespace, destination: Destination, verification: Verification) -> dict:
    """The classifier route: read the source, export, print what was written."""
    if args.checkpoint is not None:
        spec = classifier.spec_from_checkpoint(args.checkpoint)
        resize, crop = args.resize_size or spec.resize_size, args.crop_size or spec.crop_size
        spec = dataclasses.replace(spec, resize_size=resize, crop_size=crop)
    else:
        spec = classifier.spec_from_torchvision(
            args.torchvision_state_dict, torchvision_arch(args), args.classes, args.resize_size, args.crop_size
        )
    int8 = Int8Options.from_args(args) if args.quantize == INT8 else None
    report = classifier.export_classifier(spec, destination, verification, int8)
    print(classifier.summary(spec, report))
    return report


def detector_route(args: argparse.Namespace, destination: Destination, verification: Verification) -> dict:
    """The detector route: read the source, export, print what was written."""
    if args.checkpoint is not None:
        source, state = args.checkpoint, load_detection_checkpoint(args.checkpoint)
    else:
        source = args.torchvision_state_dict
        state = state_from_torchvision(source, torchvision_arch(args))
    options = detector.DetectorOptions(
        score_threshold=detector.SCORE_THRESHOLD if args.score_threshold is None else args.score_threshold,
        min_size_test=args.min_size_test,
        max_size=args.max_size,
        fold_batchnorm=not args.no_fold_batchnorm,
    )
    report = detector.export_detector(state, source, destination, verification, options)
    print(detector.summary(report))
    return report


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """CLI: export a checkpoint or torchvision weights to a verified, self-contained ONNX file; returns the report."""
    args = build_parser().parse_args(argv)
    task = task_of(args)
    refuse_other_kinds_flags(args, task)
    torch.set_flush_denormal(True)
    if args.bento_name and not args.register:
        raise UsageError("--bento-name names the file in the model store: give it with --register")
    destination = Destination(args.output, register=args.register, bento_name=args.bento_name)
    verification = Verification(args.verify_images, args.verify_count)
    route = detector_route if task == DETECTION else classifier_route
    report = route(args, destination, verification)
    if "bento_model" in report:
        print(f"registered in the BentoML model store as {report['bento_model']} (see `bentoml models list`)")
    return report
