"""Where the real datasets are, what each one is, how to get it, and the image files in them.

The data folder is ``$RESNET_LAB_DATA``, else ``../shared/data`` beside the repository. It holds some of these
datasets (``DATASETS``); ``python -m training.download_data`` (``make data``) writes a folder of the same layout from
the public originals. A dataset that is not there is a ``DataMissing`` error naming it and how to get it.
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path

from training.errors import UsageError

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_ENV = "RESNET_LAB_DATA"  # the data folder
REQUIRE_ENV = "RESNET_LAB_REQUIRE_DATA"  # 1: the test suite fails, rather than skips, where a dataset is missing
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
CIFAR_JPEG_ARCHIVE = "cifar10/cifar-10-jpeg.tar.gz"  # the shared folder's JPEG copies (MANIFEST.md there)
CIFAR_PYTHON_FOLDER = "cifar10/cifar-10-batches-py"  # the official python layout (``make data``)
MAKE_DATA = "`make data` (needs a network) and set RESNET_LAB_DATA to the folder it prints"


class DataMissing(UsageError):
    """A dataset that is not in the data folder; the message names it, the path looked at and how to get it."""


@dataclass(frozen=True)
class Dataset:
    """One dataset of the data folder: any one of ``paths`` (relative to the folder) means it is there."""

    title: str
    paths: tuple[str, ...]
    how_to_get: str


DATASETS = {
    "cifar10": Dataset("CIFAR-10", (CIFAR_PYTHON_FOLDER, CIFAR_JPEG_ARCHIVE), MAKE_DATA),
    "coco_val": Dataset("COCO 2017 val images", ("coco/annotations/instances_val2017.json",), MAKE_DATA),
    "coco_train": Dataset(
        "COCO 2017 train images",
        ("coco/annotations/instances_train2017.json",),
        "a COCO folder with train2017/ and annotations/instances_train2017.json (the full set from cocodataset.org "
        "or a subset of it) as RESNET_LAB_DATA/coco",
    ),
    "imagenet_samples": Dataset(
        "ImageNet sample photos",
        ("imagenet_samples",),
        "class folders of ImageNet validation photos as RESNET_LAB_DATA/imagenet_samples/val/<wnid>/ (ImageNet is "
        "not downloadable without an account at image-net.org)",
    ),
}


def data_dir() -> Path:
    """The data folder: ``$RESNET_LAB_DATA``, else ``../shared/data`` beside the repository."""
    return Path(os.environ.get(DATA_ENV) or REPO_ROOT.parent / "shared" / "data")


def locate(name: str, root: Path | None = None) -> Path:
    """The first path of dataset ``name`` present in the data folder; ``DataMissing`` when none is."""
    dataset, root = DATASETS[name], root or data_dir()
    for relative in dataset.paths:
        if (root / relative).exists():
            return root / relative
    where = f"no data folder at {root}" if not root.is_dir() else f"not in the data folder {root}"
    raise DataMissing(f"{dataset.title}: {where} (${DATA_ENV}); to get it: {dataset.how_to_get}")


def image_files(folder: str | os.PathLike, count: int | None = None) -> list[Path]:
    """Image files under ``folder`` (recursively), in a stable order."""
    files = sorted(path for path in Path(folder).rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES)
    return files[:count] if count else files


def imagenet_sample_files(count: int | None = None, root: Path | None = None) -> list[Path]:
    """Real ImageNet photos of the data folder (the shared one: 269 classes, grayscale ones included)."""
    return image_files(locate("imagenet_samples", root), count)


def coco_val_files(count: int | None = None, root: Path | None = None) -> list[Path]:
    """Real COCO val2017 photos of the data folder."""
    return image_files(locate("coco_val", root).parents[1] / "val2017", count)


def cifar_images(count: int, root: Path | None = None, split: str = "test") -> list[tuple[bytes, str]]:
    """``(encoded image, class name)`` of ``count`` real CIFAR-10 images of ``split`` ("test" or "train"), evenly over
    the classes: the JPEG copies as they are, or the official arrays as PNG (lossless)."""
    found = locate("cifar10", root)
    if found.name.endswith(".tar.gz"):
        return _archive_jpegs(found, count, split)
    return _batch_pngs(found, count, split)


def _even_share(count: int) -> int:
    return -(-count // 10)  # images per class, rounded up


def _archive_jpegs(archive: Path, count: int, split: str) -> list[tuple[bytes, str]]:
    found: list[tuple[bytes, str]] = []
    per_class: dict[str, int] = {}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            parts = Path(member.name).parts
            if not member.isfile() or split not in parts or not member.name.lower().endswith(".jpg"):
                continue
            label = parts[-2]
            if per_class.get(label, 0) >= _even_share(count):
                continue
            per_class[label] = per_class.get(label, 0) + 1
            found.append((tar.extractfile(member).read(), label))
            if len(found) >= count:
                break
    return found


def _batch_pngs(folder: Path, count: int, split: str) -> list[tuple[bytes, str]]:
    from PIL import Image

    with open(folder / "batches.meta", "rb") as stream:
        names = pickle.load(stream, encoding="latin1")["label_names"]
    files = ["test_batch"] if split == "test" else [f"data_batch_{index}" for index in range(1, 6)]
    found: list[tuple[bytes, str]] = []
    per_class: dict[int, int] = {}
    for name in files:
        with open(folder / name, "rb") as stream:
            batch = pickle.load(stream, encoding="latin1")
        for row, label in zip(batch["data"], batch["labels"], strict=True):
            if per_class.get(label, 0) >= _even_share(count):
                continue
            per_class[label] = per_class.get(label, 0) + 1
            buffer = io.BytesIO()
            Image.fromarray(row.reshape(3, 32, 32).transpose(1, 2, 0)).save(buffer, "PNG")
            found.append((buffer.getvalue(), names[label]))
            if len(found) >= count:
                return found
    return found
