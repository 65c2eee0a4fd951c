"""Where the real datasets are (``RESNET_LAB_DATA``, else ``../shared/data``) and the image files in them."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def shared_data_dir() -> Path:
    """The real datasets folder: ``RESNET_LAB_DATA``, else ``../shared/data`` beside the repository."""
    return Path(os.environ.get("RESNET_LAB_DATA", REPO_ROOT.parent / "shared" / "data"))


def image_files(folder: str | os.PathLike, count: int | None = None) -> list[Path]:
    """Image files under ``folder`` (recursively), in a stable order."""
    files = sorted(path for path in Path(folder).rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES)
    return files[:count] if count else files


def imagenet_sample_files(count: int | None = None, data_dir: Path | None = None) -> list[Path]:
    """Real ImageNet photos from the shared samples (269 classes, grayscale ones included)."""
    return image_files((data_dir or shared_data_dir()) / "imagenet_samples", count)


def coco_val_files(count: int | None = None, data_dir: Path | None = None) -> list[Path]:
    """Real COCO val2017 photos from the shared subset."""
    return image_files((data_dir or shared_data_dir()) / "coco" / "val2017", count)


def cifar_jpegs(count: int, data_dir: Path | None = None, split: str = "test") -> list[tuple[bytes, str]]:
    """``(JPEG bytes, class name)`` of real CIFAR-10 images of ``split`` ("test" or "train"), evenly over the
    classes, read from the shared archive without extracting it."""
    archive = (data_dir or shared_data_dir()) / "cifar10" / "cifar-10-jpeg.tar.gz"
    if not archive.is_file():
        return []
    found: list[tuple[bytes, str]] = []
    per_class: dict[str, int] = {}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            parts = Path(member.name).parts
            if not member.isfile() or split not in parts or not member.name.lower().endswith(".jpg"):
                continue
            label = parts[-2]
            if per_class.get(label, 0) >= -(-count // 10):  # an even share per class, rounded up
                continue
            per_class[label] = per_class.get(label, 0) + 1
            found.append((tar.extractfile(member).read(), label))
            if len(found) >= count:
                break
    return found
