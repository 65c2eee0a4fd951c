"""Where the real datasets are, what each one is, how to get it, and the image files in them.

The data folder is ``$RESNET_LAB_DATA``, else ``../shared/data`` beside the repository. It holds some of these
datasets (``DATASETS``); ``python -m training.download_data`` (``make data``) writes a folder of the same layout from
the public originals. A dataset that is not there is a ``DataMissing`` error naming it and how to get it. Every clone
also has 13 real photos of its own (``SHIPPED_PHOTOS``), which checks fall back to without a data folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from toolkit.errors import UsageError

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_ENV = "RESNET_LAB_DATA"  # the data folder
SHIPPED_PHOTOS = REPO_ROOT / "tests" / "data" / "coco" / "val2017"  # real COCO photos in git (tests/data/README.md)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
CIFAR_JPEG_ARCHIVE = "cifar10/cifar-10-jpeg.tar.gz"  # the shared folder's JPEG copies (MANIFEST.md there)
CIFAR_PYTHON_FOLDER = "cifar10/cifar-10-batches-py"  # the official python layout (``make data``)
CIFAR_PYTHON_ARCHIVE = "cifar10/cifar-10-python.tar.gz"  # the official download, as it comes
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
    "cifar10": Dataset("CIFAR-10", (CIFAR_PYTHON_FOLDER, CIFAR_PYTHON_ARCHIVE, CIFAR_JPEG_ARCHIVE), MAKE_DATA),
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


def real_photos(dataset: str, count: int | None = None) -> tuple[list[Path], str]:
    """Real photos to check a model on: the data folder's ``dataset`` (``imagenet_samples`` or ``coco_val``), else
    the photos shipped in ``tests/data``; (files, where they came from, in words)."""
    finders = {"imagenet_samples": imagenet_sample_files, "coco_val": coco_val_files}
    try:
        files = finders[dataset](count)
        return files, f"{len(files)} {DATASETS[dataset].title} of the data folder"
    except DataMissing:
        files = image_files(SHIPPED_PHOTOS, count)
        return files, f"{len(files)} photos shipped in tests/data (no {DATASETS[dataset].title} in a data folder)"


def cifar_images(count: int, root: Path | None = None, split: str = "test") -> list[tuple[bytes, str]]:
    """``(encoded image, class name)`` of ``count`` real CIFAR-10 images of ``split`` ("test" or "train"), evenly over
    the classes: the JPEG copies as they are, or the official arrays as PNG (lossless)."""
    from toolkit import cifar10

    share = -(-count // len(cifar10.CLASSES))  # images per class, rounded up
    found: list[tuple[bytes, str]] = []
    per_class = dict.fromkeys(range(len(cifar10.CLASSES)), 0)
    for data, label in cifar10.encoded(locate("cifar10", root), split):
        if per_class[label] < share and len(found) < count:
            per_class[label] += 1
            found.append((data, cifar10.CLASSES[label]))
    return found
