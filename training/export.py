"""Export a classifier to one self-contained ONNX file that carries everything serving needs.

The graph takes ``images``: uint8 ``[N, 3, H, W]`` RGB at the crop size and returns ``logits``: float32
``[N, num_classes]``; normalisation is inside the graph. Metadata (labels, sizes, recipe, metrics, source
hash) rides in ``metadata_props``. Before anything is written, ONNX Runtime is checked against PyTorch on real
images; a mismatch exits without writing. The file is then registered in the BentoML model store.

    python -m training.export --checkpoint runs/cifar_resnet20/last.pt --output model.onnx
    python -m training.export --torchvision-state-dict resnet50.pth --arch resnet50 --output resnet50.onnx
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import tarfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import nn

from models import create_model, model_info
from models.preprocess import NormalizedClassifier
from training.checkpoint import atomic_write, classifier_from_checkpoint, load_checkpoint, read_torch_state

REPO_ROOT = Path(__file__).resolve().parents[1]
OPSET = 18
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BENTO_MODEL_NAME = "resnet-classifier"
ONNX_FILE_NAME = "model.onnx"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


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


def sha256_of(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def shared_data_dir() -> Path:
    """The real datasets folder: ``RESNET_LAB_DATA`` or ``../shared/data`` beside the repo."""
    return Path(os.environ.get("RESNET_LAB_DATA", REPO_ROOT.parent / "shared" / "data"))


def _to_jsonable(value: Any) -> Any:
    """Tensors and numpy values inside recipes/metrics become plain JSON values."""
    if isinstance(value, torch.Tensor | np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(key): _to_jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_to_jsonable(item) for item in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def spec_from_checkpoint(path: str | os.PathLike) -> ExportSpec:
    """Read a resnet-lab checkpoint (weights_only) into an export spec."""
    state = load_checkpoint(path)
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
        recipe=_to_jsonable(state.get("recipe") or {}),
        metrics=_to_jsonable(state.get("metrics") or []),
    )


def read_class_names(path: str | os.PathLike) -> list[str]:
    """Class names from an ``index<TAB>wnid<TAB>name`` file (header optional), in index order."""
    names: dict[int, str] = {}
    for line in Path(path).read_text().splitlines():
        parts = line.rstrip("\n").split("\t")
        if len(parts) < 3 or not parts[0].strip().isdigit():
            continue  # header or blank line
        names[int(parts[0])] = parts[2]
    if sorted(names) != list(range(len(names))):
        raise SystemExit(f"{path}: class indices are not 0..N-1; expected lines 'index<TAB>wnid<TAB>name'")
    return [names[index] for index in range(len(names))]


def default_imagenet_classes() -> Path:
    """The project's class list if present, else the one beside the shared ImageNet samples."""
    project_file = REPO_ROOT / "training" / "imagenet_classes.tsv"
    if project_file.is_file():
        return project_file
    return shared_data_dir() / "imagenet_samples" / "imagenet_classes.tsv"


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
    classes_file = Path(classes_file) if classes_file else default_imagenet_classes()
    if not classes_file.is_file():
        raise SystemExit(f"class names not found at {classes_file}; pass --classes FILE (index<TAB>wnid<TAB>name)")
    labels = read_class_names(classes_file)
    if len(labels) != model.fc.out_features:
        raise SystemExit(f"{classes_file} has {len(labels)} classes but {arch} has {model.fc.out_features} outputs")
    classifier = NormalizedClassifier(model, torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD))
    return ExportSpec(
        classifier=classifier,
        model_name=arch,
        labels=labels,
        resize_size=256,
        crop_size=224,
        source_sha256=sha256_of(path),
        recipe={"source": "torchvision state dict", "file": path.name, "layout": "v1.5 (stride_in_1x1=False)"},
        metrics=[],
    )


# --- real images for verification -------------------------------------------------------------------------------


def load_rgb(source: str | os.PathLike | bytes) -> Image.Image:
    """Decode like serving does: EXIF orientation applied, converted to RGB."""
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    with Image.open(stream) as image:
        image = ImageOps.exif_transpose(image)
        return image.convert("RGB")


def eval_transform(resize_size: int, crop_size: int):
    """The training eval transform on PIL images: shorter side to resize_size, centre crop, uint8 CHW tensor."""
    from torchvision.transforms import v2

    return v2.Compose(
        [
            v2.Resize(resize_size, interpolation=v2.InterpolationMode.BILINEAR, antialias=True),
            v2.CenterCrop(crop_size),
            v2.PILToTensor(),
        ]
    )


def imagenet_sample_files(data_dir: Path, count: int) -> list[Path]:
    """Real ImageNet photos from the shared samples folder, in a stable order."""
    return sorted((data_dir / "imagenet_samples").rglob("*.JPEG"))[:count]


def cifar_test_jpegs(data_dir: Path, count: int) -> list[bytes]:
    """Encoded CIFAR-10 test images read straight from the shared JPEG archive (no extraction)."""
    archive = data_dir / "cifar10" / "cifar-10-jpeg.tar.gz"
    if not archive.is_file():
        return []
    found: list[bytes] = []
    per_class: dict[str, int] = {}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            parts = Path(member.name).parts
            if not member.isfile() or "test" not in parts or not member.name.lower().endswith(".jpg"):
                continue
            label = parts[-2]
            if per_class.get(label, 0) >= max(1, count // 10):
                continue
            per_class[label] = per_class.get(label, 0) + 1
            found.append(tar.extractfile(member).read())
            if len(found) >= count:
                break
    return found


def verification_images(spec: ExportSpec, verify_dir: str | os.PathLike | None, count: int) -> list[Image.Image]:
    """Real RGB images to compare the runtimes on: --verify-images, else shared ImageNet or CIFAR samples."""
    if verify_dir is not None:
        folder = Path(verify_dir)
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:count]
        if not files:
            raise SystemExit(f"no images (*.jpg, *.png, ...) under --verify-images {folder}")
        return [load_rgb(path) for path in files]
    data_dir = shared_data_dir()
    sources: list[Any] = []
    if len(spec.labels) == 1000 or spec.crop_size > 64:
        sources = imagenet_sample_files(data_dir, count)
    if not sources:
        sources = cifar_test_jpegs(data_dir, count)
    if not sources:
        sources = imagenet_sample_files(data_dir, count)
    if not sources:
        raise SystemExit(
            f"no real images to verify the export with under {data_dir}; set RESNET_LAB_DATA to the shared/data "
            "folder or pass --verify-images DIR"
        )
    return [load_rgb(source) for source in sources]


def image_batch(images: Sequence[Image.Image], resize_size: int, crop_size: int) -> torch.Tensor:
    """uint8 ``[N, 3, crop, crop]`` batch through the eval transform."""
    transform = eval_transform(resize_size, crop_size)
    return torch.stack([transform(image) for image in images])


# --- export, verify, write --------------------------------------------------------------------------------------


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
            input_names=["images"],
            output_names=["logits"],
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


def with_metadata(model_bytes: bytes, spec: ExportSpec) -> bytes:
    """Attach the serving metadata to ``metadata_props`` and re-check the model."""
    import onnx

    proto = onnx.load_from_string(model_bytes)
    props = {
        "labels": json.dumps(spec.labels),
        "resize_size": str(spec.resize_size),
        "crop_size": str(spec.crop_size),
        "model_name": spec.model_name,
        "recipe": json.dumps(spec.recipe),
        "metrics": json.dumps(spec.metrics),
        "source_sha256": spec.source_sha256,
    }
    del proto.metadata_props[:]
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "resnet-lab"
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
    got = session.run(["logits"], {"images": batch.numpy()})[0]
    single = session.run(["logits"], {"images": batch[:1].numpy()})[0]  # the dynamic batch dim really is dynamic
    got_single_diff = float(np.abs(single - expected[:1]).max())
    max_diff = max(float(np.abs(got - expected).max()), got_single_diff)
    tolerance = 1e-4 * (1.0 + float(np.abs(expected).max()))
    same_top1 = bool((got.argmax(1) == expected.argmax(1)).all() and single.argmax(1)[0] == expected.argmax(1)[0])
    report = {"images": int(batch.shape[0]), "max_abs_diff": max_diff, "tolerance": tolerance}
    if got.shape != expected.shape or max_diff > tolerance or not same_top1:
        raise SystemExit(
            f"ONNX verification FAILED on {batch.shape[0]} real images: max |logit diff| {max_diff:.3g} "
            f"(tolerance {tolerance:.3g}), identical top-1: {same_top1}. Nothing was written."
        )
    return report


def register_bento_model(onnx_path: Path, spec: ExportSpec, name: str = BENTO_MODEL_NAME) -> str:
    """Copy the ONNX file into the BentoML model store; returns the tag (``name:version``)."""
    import bentoml

    metadata = {
        "model_name": spec.model_name,
        "num_classes": len(spec.labels),
        "resize_size": spec.resize_size,
        "crop_size": spec.crop_size,
        "source_sha256": spec.source_sha256,
        "file": ONNX_FILE_NAME,
    }
    labels = {"project": "resnet-lab", "arch": spec.model_name, "format": "onnx"}
    with bentoml.models.create(name, labels=labels, metadata=metadata, module="resnet_lab.onnx") as model:
        shutil.copyfile(onnx_path, model.path_of(ONNX_FILE_NAME))
    return str(model.tag)


def export(
    spec: ExportSpec,
    output: str | os.PathLike,
    verify_dir: str | os.PathLike | None = None,
    verify_count: int = 8,
    register: bool = True,
    bento_name: str = BENTO_MODEL_NAME,
) -> dict[str, Any]:
    """Export, verify on real images, write atomically, register; returns a small report."""
    output = Path(output)
    model_bytes = with_metadata(export_onnx_bytes(spec.classifier, spec.crop_size), spec)
    images = verification_images(spec, verify_dir, verify_count)
    check = verify(model_bytes, spec.classifier, image_batch(images, spec.resize_size, spec.crop_size))
    atomic_write(output, lambda stream: stream.write(model_bytes))
    report: dict[str, Any] = {"output": str(output), "bytes": len(model_bytes), "verify": check}
    if register:
        report["bento_model"] = register_bento_model(output, spec, bento_name)
    return report


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """CLI: export a checkpoint (or torchvision weights) to a verified, self-contained ONNX file."""
    parser = argparse.ArgumentParser(
        prog="python -m training.export", description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="resnet-lab checkpoint written by training.train")
    source.add_argument("--torchvision-state-dict", help="torchvision ImageNet weights (.pth), v1.5 layout")
    parser.add_argument("--arch", default="resnet50", help="architecture for --torchvision-state-dict")
    parser.add_argument(
        "--classes",
        default=None,
        help="index<TAB>wnid<TAB>name file for --torchvision-state-dict "
        "(default: training/imagenet_classes.tsv, else $RESNET_LAB_DATA/imagenet_samples/imagenet_classes.tsv)",
    )
    parser.add_argument("--output", required=True, help="where to write the .onnx file")
    parser.add_argument(
        "--verify-images",
        default=None,
        help="folder of real images for the ORT-vs-PyTorch check (default: shared ImageNet or CIFAR-10 samples)",
    )
    parser.add_argument("--verify-count", type=int, default=8, help="how many real images to verify on")
    parser.add_argument("--no-register", action="store_true", help="skip the BentoML model store")
    parser.add_argument("--bento-name", default=BENTO_MODEL_NAME, help="name in the BentoML model store")
    args = parser.parse_args(argv)

    torch.set_flush_denormal(True)
    if args.checkpoint:
        spec = spec_from_checkpoint(args.checkpoint)
    else:
        spec = spec_from_torchvision(args.torchvision_state_dict, args.arch, args.classes)
    report = export(spec, args.output, args.verify_images, args.verify_count, not args.no_register, args.bento_name)
    check = report["verify"]
    print(
        f"wrote {report['output']} ({report['bytes'] / 1e6:.1f} MB, {spec.model_name}, {len(spec.labels)} classes); "
        f"ORT vs PyTorch on {check['images']} real images: max |diff| {check['max_abs_diff']:.2e} "
        f"<= {check['tolerance']:.2e}, same top-1"
    )
    if "bento_model" in report:
        print(f"registered in the BentoML model store as {report['bento_model']} (see `bentoml models list`)")
    return report


if __name__ == "__main__":
    main()
