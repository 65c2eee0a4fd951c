"""Record an exported file's bf16 check: OpenVINO's bf16 answers against its fp32 answers on real images, written into
the file's metadata (``inference.precision``), so the service may run it in bf16 under ``RESNET_LAB_PRECISION=auto``
(only on a CPU with bf16 units, and only where the check clears the bar).

    python -m export.check_bf16 --model model.onnx                          # the data folder's images, or tests/data's
    python -m export.check_bf16 --model model.onnx --images photos/ --count 500
    python -m export.check_bf16 --model inference/default_model/model.onnx --count 10000   # all CIFAR-10 test images

A CIFAR-sized classifier is checked on the data folder's CIFAR-10 test images (with their labels, so both errors are
recorded too), another classifier on its ImageNet photos, a detector on its COCO val2017 photos; without a data
folder, on the photos shipped in tests/data. The file is rewritten atomically (``--output`` writes a copy instead).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from export.onnx_file import with_metadata, write_model
from export.precision_check import bf16_checked, bf16_summary
from inference import imaging
from inference.contract import CLASSIFICATION, INT8, ModelMetadata
from inference.model_files import read_metadata
from inference.runtimes.hardware import cpu_capabilities, cpu_has_bf16
from toolkit import cli, data_folder
from toolkit.errors import UsageError

DEFAULT_COUNT = 1000  # images compared unless --count says otherwise


def classifier_images(
    metadata: ModelMetadata, folder: Path | None, count: int
) -> tuple[np.ndarray, str, list[int] | None]:
    """uint8 ``[N, 3, crop, crop]`` real images for a classifier, where they came from, and their labels (CIFAR-10)."""
    size = (metadata.resize_size, metadata.crop_size)
    if folder is None and len(metadata.labels) == 10 and metadata.crop_size <= 64:
        try:
            found = data_folder.cifar_images(count)
            labels = [metadata.labels.index(name) for _, name in found]
            pixels = np.stack([imaging.preprocess(data, *size) for data, _ in found])
            return pixels, f"{len(found):,} CIFAR-10 test images", labels
        except data_folder.DataMissing:
            pass
    files, where = _files(folder, "imagenet_samples", count)
    return np.stack([imaging.preprocess(path, *size) for path in files]), where, None


def _files(folder: Path | None, dataset: str, count: int) -> tuple[list[Path], str]:
    if folder is None:
        return data_folder.real_photos(dataset, count)
    files = data_folder.image_files(folder, count)
    if not files:
        raise UsageError(f"no images (*.jpg, *.png, ...) under --images {folder}")
    return files, f"{len(files):,} images of {folder}"


def check(model: Path, folder: Path | None, count: int) -> tuple[bytes, dict[str, Any]]:
    """The file's bytes with its bf16 record, and the record."""
    if not cpu_has_bf16():
        raise UsageError(
            f"this CPU has no bf16 units (OpenVINO reports {', '.join(cpu_capabilities()) or 'nothing'}): run this "
            "on one that has them (AVX-512 BF16 or AMX)"
        )
    metadata = read_metadata(model)
    if metadata.precision == INT8:
        raise UsageError(f"{model} is an int8 file: it runs as int8, bf16 does not apply")
    data = model.read_bytes()
    if metadata.task == CLASSIFICATION:
        pixels, where, labels = classifier_images(metadata, folder, count)
        checked, _ = bf16_checked(data, metadata, pixels, where, labels)
    else:
        files, where = _files(folder, "coco_val", count)
        images = [imaging.to_chw(imaging.load_rgb(path)) for path in files]
        checked, _ = bf16_checked(data, metadata, images, where)
    return with_metadata(data, checked, full_check=False), checked.check("bf16")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """CLI: compare, record, print the verdict; returns the record."""
    parser = argparse.ArgumentParser(
        prog="python -m export.check_bf16", description=__doc__, formatter_class=cli.HelpFormatter
    )
    parser.add_argument("--model", required=True, type=Path, help="an exported fp32 file (.onnx)")
    parser.add_argument("--images", type=Path, help="a folder of real images (default: see above)")
    parser.add_argument("--count", type=int, default=DEFAULT_COUNT, help="how many images to compare on")
    parser.add_argument("--output", type=Path, help="write the checked file here (default: rewrite --model)")
    args = parser.parse_args(argv)
    if not args.model.is_file():
        raise UsageError(f"--model {args.model}: no such file")
    if args.count < 1:
        raise UsageError(f"--count must be at least 1, got {args.count}")
    data, entry = check(args.model, args.images, args.count)
    output = write_model(data, args.output or args.model)
    print(f"wrote {output}: {bf16_summary(entry, read_metadata(output).task)}")
    return entry


if __name__ == "__main__":
    cli.entry_point(main)
