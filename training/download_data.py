"""Fetch the public originals into a data folder: ``python -m training.download_data`` (``make data``).

- CIFAR-10: the official python archive (``cifar-10-python.tar.gz``, checked against the md5 torchvision publishes
  for it), unpacked to ``cifar10/cifar-10-batches-py``.
- COCO 2017 val: the official annotation archive (checked against its published md5), cut to the first
  ``--coco-val-images`` images by id (``coco/annotations/instances_val2017.json``), and those images
  (``coco/val2017/``), each checked to decode at the size its annotation states.

Everything is downloaded with torchvision's download utilities into a staging folder inside the output folder and
moved into place only when complete and verified: an interrupted or corrupt download leaves nothing behind, and a
second run downloads nothing. ``--mirror URL`` (or ``$RESNET_LAB_DATA_MIRROR``) fetches the same paths from another
host. Then point the project at the folder: ``export RESNET_LAB_DATA=$PWD/data``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import tempfile
import urllib.error
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from torchvision.datasets import CIFAR10
from torchvision.datasets.utils import download_url, extract_archive
from tqdm import tqdm

from toolkit import cli
from toolkit.atomic import atomic_write_text
from toolkit.cifar10 import META_FILE, TEST_FILE, TRAIN_FILES
from toolkit.cifar10 import PYTHON_FOLDER as CIFAR_FOLDER
from toolkit.data_folder import DATA_ENV
from toolkit.errors import UsageError
from training.settings import MIRROR_ENV, mirror_from_env

DEFAULT_COCO_VAL_IMAGES = 100  # about 16 MB of photos; the annotation archive itself is 242 MB
COCO_VAL_ANNOTATIONS = "annotations/instances_val2017.json"  # inside the archive and in the data folder's coco/


@dataclass(frozen=True)
class Source:
    """A file to download: its URL and the md5 it must have (None: checked otherwise)."""

    url: str
    md5: str | None = None


@dataclass(frozen=True)
class Sources:
    """Where each dataset comes from."""

    cifar10: Source = Source(CIFAR10.url, CIFAR10.tgz_md5)
    coco_annotations: Source = Source(
        "http://images.cocodataset.org/annotations/annotations_trainval2017.zip", "f4bbac642086de4f52a3fdda2de5fa2c"
    )
    coco_val_images: str = "http://images.cocodataset.org/val2017/"  # + file_name


def mirrored(url: str, mirror: str | None) -> str:
    """``url`` fetched from ``mirror`` (scheme and host replaced, path kept); ``url`` itself without one."""
    if not mirror:
        return url
    return mirror.rstrip("/") + urlsplit(url).path


def fetch(source: Source, folder: Path, mirror: str | None = None) -> Path:
    """Download ``source`` into ``folder`` and check it; a failure is a ``UsageError`` naming the URL and the fix."""
    url = mirrored(source.url, mirror)
    try:
        download_url(url, str(folder), md5=source.md5)
    except RuntimeError:  # torchvision's verdict on a checksum mismatch
        raise UsageError(
            f"{url} is not the published file (its md5 is not {source.md5}: cut short or corrupt); nothing was "
            f"written. Retry, or check the mirror (--mirror, ${MIRROR_ENV})"
        ) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", None) or error
        raise UsageError(
            f"cannot download {url} ({reason}); nothing was written. Downloading needs a network (or --mirror URL); "
            f"without one, set {DATA_ENV} to a data folder that exists"
        ) from None
    return folder / os.path.basename(url)


def staged(output_dir: Path, build: Callable[[Path], None]) -> None:
    """Run ``build(staging)`` in a fresh staging folder inside ``output_dir``; the folder is removed afterwards,
    whatever happened, so only what ``build`` moved into place remains."""
    output_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".download-", dir=output_dir))
    try:
        build(staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def cifar10_complete(folder: Path) -> bool:
    """Whether ``folder`` holds every file of the python layout."""
    return all((folder / name).is_file() for name in (*TRAIN_FILES, TEST_FILE, META_FILE))


def download_cifar10(output_dir: Path, sources: Sources = Sources(), mirror: str | None = None) -> Path:
    """``output_dir/cifar10/cifar-10-batches-py`` from the official archive (nothing is fetched if it is there)."""
    final = output_dir / "cifar10" / CIFAR_FOLDER
    if cifar10_complete(final):
        return final

    def build(staging: Path) -> None:
        archive = fetch(sources.cifar10, staging, mirror)
        extract_archive(str(archive), str(staging / "unpacked"))
        unpacked = staging / "unpacked" / CIFAR_FOLDER
        if not cifar10_complete(unpacked):
            raise UsageError(f"{sources.cifar10.url} does not hold the CIFAR-10 python layout; nothing was written")
        final.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(unpacked, final)

    staged(output_dir, build)
    return final


def coco_val_subset(annotations: dict, count: int) -> dict:
    """The official val2017 annotations cut to the first ``count`` images by id (every category kept)."""
    images = sorted(annotations["images"], key=lambda image: image["id"])[:count]
    ids = {image["id"] for image in images}
    kept = [annotation for annotation in annotations["annotations"] if annotation["image_id"] in ids]
    return {**annotations, "images": images, "annotations": kept}


def coco_val_complete(coco: Path) -> bool:
    """Whether ``coco`` holds an annotation file and every image it names."""
    annotation_file = coco / COCO_VAL_ANNOTATIONS
    if not annotation_file.is_file():
        return False
    images = json.loads(annotation_file.read_text())["images"]
    return all((coco / "val2017" / image["file_name"]).is_file() for image in images)


def check_photo(path: Path, image: dict) -> None:
    """The downloaded photo decodes at the size its annotation states."""
    from PIL import Image

    try:
        with Image.open(path) as photo:
            photo.load()
            size = photo.size
    except OSError as error:
        raise UsageError(f"{path.name} from the COCO mirror does not decode ({error}); nothing was written") from None
    if size != (image["width"], image["height"]):
        raise UsageError(f"{path.name} is {size[0]}x{size[1]}, its annotation says {image['width']}x{image['height']}")


def download_coco_val(
    output_dir: Path, count: int = DEFAULT_COCO_VAL_IMAGES, sources: Sources = Sources(), mirror: str | None = None
) -> Path:
    """``output_dir/coco``: the first ``count`` val2017 images and their annotations (nothing is fetched if there)."""
    coco = output_dir / "coco"
    annotation_file = coco / COCO_VAL_ANNOTATIONS
    if coco_val_complete(coco) and len(json.loads(annotation_file.read_text())["images"]) == count:
        return coco

    def build(staging: Path) -> None:
        archive = fetch(sources.coco_annotations, staging, mirror)
        with zipfile.ZipFile(archive) as members:
            subset = coco_val_subset(json.loads(members.read(COCO_VAL_ANNOTATIONS)), count)
        (staging / "val2017").mkdir()
        for image in tqdm(subset["images"], desc="COCO val2017 images", unit="image"):
            if (coco / "val2017" / image["file_name"]).is_file():
                continue  # kept from an earlier run
            path = fetch(Source(sources.coco_val_images + image["file_name"]), staging / "val2017", mirror)
            check_photo(path, image)
        (coco / "val2017").mkdir(parents=True, exist_ok=True)
        for path in (staging / "val2017").iterdir():
            os.replace(path, coco / "val2017" / path.name)
        atomic_write_text(annotation_file, json.dumps(subset))  # last: its presence means the set is complete

    staged(output_dir, build)
    return coco


def manifest(output_dir: Path, sources: Sources, coco_val_images: int) -> str:
    """The folder's MANIFEST.md: what is there and where it came from."""
    return "\n".join(
        [
            "# Data folder written by `python -m training.download_data`",
            "",
            f"- `cifar10/{CIFAR_FOLDER}/`: CIFAR-10 (Krizhevsky, 2009), the official python archive "
            f"{sources.cifar10.url} (md5 {sources.cifar10.md5}); the official pixels.",
            f"- `coco/{COCO_VAL_ANNOTATIONS}` and `coco/val2017/`: the first {coco_val_images:,} COCO 2017 val images "
            f"by id and their annotations, from {sources.coco_annotations.url} (md5 {sources.coco_annotations.md5}) "
            f"and {sources.coco_val_images}; annotations CC BY 4.0, each image under the Flickr licence its "
            "annotation names.",
            "",
            f"Use it with `export {DATA_ENV}={output_dir.resolve()}`.",
            "",
        ]
    )


def download_data(
    output_dir: Path,
    coco_val_images: int = DEFAULT_COCO_VAL_IMAGES,
    sources: Sources = Sources(),
    mirror: str | None = None,
) -> Path:
    """Write (or complete) a data folder with CIFAR-10 and the COCO val subset; returns the folder."""
    if coco_val_images < 1:
        raise UsageError(f"--coco-val-images must be at least 1, got {coco_val_images}")
    created = not output_dir.exists()
    try:
        download_cifar10(output_dir, sources, mirror)
        download_coco_val(output_dir, coco_val_images, sources, mirror)
    except BaseException:
        if created and output_dir.is_dir() and not any(output_dir.iterdir()):
            output_dir.rmdir()  # a failed first run leaves no empty folder behind either
        raise
    atomic_write_text(output_dir / "MANIFEST.md", manifest(output_dir, sources, coco_val_images))
    return output_dir


def main(argv: list[str] | None = None) -> Path:
    """CLI: fetch the datasets and say how to use them."""
    parser = argparse.ArgumentParser(
        prog="python -m training.download_data", description=__doc__, formatter_class=cli.HelpFormatter
    )
    parser.add_argument("--output-dir", type=Path, default=Path("data"), help="the data folder to write")
    parser.add_argument(
        "--coco-val-images", type=int, default=DEFAULT_COCO_VAL_IMAGES, help="COCO val2017 images to fetch (5000: all)"
    )
    parser.add_argument(
        "--mirror",
        default=mirror_from_env(),
        help=f"base URL serving the same paths as the original hosts (default: ${MIRROR_ENV}, else the originals)",
    )
    parser.add_argument("--timeout", type=float, default=30, help="seconds without an answer before a download fails")
    args = parser.parse_args(argv)
    socket.setdefaulttimeout(args.timeout)
    folder = download_data(args.output_dir, args.coco_val_images, mirror=args.mirror)
    print(f"data folder ready: {folder}\nuse it with: export {DATA_ENV}={folder.resolve()}")
    return folder


if __name__ == "__main__":
    cli.entry_point(main)
