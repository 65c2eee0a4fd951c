"""Real images the exporters verify against, from the shared data folder (``RESNET_LAB_DATA``)."""

from __future__ import annotations

import io
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


PHONE_SIZE = (4032, 3024)  # a 12-megapixel phone photo


def phone_photo(source: Path | bytes, orientation: int = 1, quality: int = 90) -> bytes:
    """A real photo as a phone would upload it: upscaled to 12 Mpx (bicubic), JPEG quality 90, EXIF orientation
    ``orientation`` (1: none; 6: rotate 90 degrees to display, the usual portrait shot)."""
    from PIL import Image

    from service import imaging

    image = imaging.load_rgb(source)
    width, height = PHONE_SIZE if image.width >= image.height else PHONE_SIZE[::-1]
    if orientation in (5, 6, 7, 8):  # stored sideways; the EXIF tag turns it upright on display
        image, (width, height) = image.transpose(Image.Transpose.ROTATE_90), (height, width)
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.resize((width, height), Image.Resampling.BICUBIC).save(buffer, "JPEG", quality=quality, exif=exif.tobytes())
    return buffer.getvalue()
