"""CIFAR-10 as it comes, read one way for every tool: the official python archive (``cifar-10-python.tar.gz``) or its
unpacked ``cifar-10-batches-py/`` folder, and the JPEG copies (an archive or a folder of ``train/<class>/*.jpg`` and
``test/<class>/*.jpg``, as the data folder holds them), or a folder holding any of those.

``read_split`` gives uint8 ``[N, 3, 32, 32]`` images and their labels in a fixed order (the official batches' own
order; the JPEG copies sorted by class and file name); ``encoded`` gives the image files themselves, for checks that
decode them as the server does. No torch: numpy and Pillow.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from toolkit.errors import UsageError

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
PYTHON_FOLDER = "cifar-10-batches-py"
PYTHON_ARCHIVE = "cifar-10-python.tar.gz"  # the official download
JPEG_ARCHIVE = "cifar-10-jpeg.tar.gz"  # the data folder's JPEG copies
TRAIN_FILES = tuple(f"data_batch_{index}" for index in range(1, 6))
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
SPLITS = ("train", "test")
HOW_TO_GET = (
    "pass the official cifar-10-python.tar.gz, its unpacked cifar-10-batches-py/ folder, the JPEG copies "
    "(cifar-10-jpeg.tar.gz or its train/ and test/ folders), or a folder holding one of them; `make data` downloads "
    "the official archive into data/cifar10"
)


def locate(source: str | Path) -> Path:
    """The CIFAR-10 file or folder ``source`` is or holds; ``UsageError`` saying what is accepted otherwise."""
    source = Path(source)
    if source.is_file():
        if source.name.endswith((".tar.gz", ".tgz", ".tar")):
            return source
        raise UsageError(f"{source} is not a CIFAR-10 archive; {HOW_TO_GET}")
    if not source.is_dir():
        raise UsageError(f"CIFAR-10 not found at {source}; {HOW_TO_GET}")
    for candidate in (source / PYTHON_FOLDER, source / PYTHON_ARCHIVE, source / JPEG_ARCHIVE):
        if candidate.exists():
            return candidate
    if (source / META_FILE).is_file() or any((source / split).is_dir() for split in SPLITS):
        return source
    raise UsageError(f"{source} holds no CIFAR-10 ({PYTHON_FOLDER}/, {PYTHON_ARCHIVE}, {JPEG_ARCHIVE}); {HOW_TO_GET}")


def _members(path: Path) -> Iterator[tuple[str, bytes]]:
    """(relative name, bytes) of every file of an archive or under a folder, in a fixed order."""
    if path.is_dir():
        for file in sorted(item for item in path.rglob("*") if item.is_file()):
            yield file.relative_to(path).as_posix(), file.read_bytes()
        return
    try:
        with tarfile.open(path) as archive:  # read in the stream's order: a gzip stream cannot seek back cheaply
            files = [(member.name, archive.extractfile(member).read()) for member in archive if member.isfile()]
    except (tarfile.TarError, OSError, EOFError) as error:
        raise UsageError(f"cannot read the archive {path} ({error}); {HOW_TO_GET}") from None
    yield from sorted(files)


def _batch(data: bytes, name: str) -> dict:
    try:
        return pickle.loads(data, encoding="latin1")
    except Exception as error:  # truncated, not a pickle, ...
        raise UsageError(f"cannot read CIFAR-10 file {name} ({error.__class__.__name__}); {HOW_TO_GET}") from None


def _python_batches(files: dict[str, bytes], split: str) -> tuple[np.ndarray, np.ndarray]:
    wanted = TRAIN_FILES if split == "train" else (TEST_FILE,)
    missing = [name for name in wanted if name not in files]
    if missing:
        raise UsageError(f"the CIFAR-10 python layout lacks {', '.join(missing)}; {HOW_TO_GET}")
    images, labels = [], []
    for name in wanted:
        batch = _batch(files[name], name)
        try:
            data = np.asarray(batch["data"], dtype=np.uint8)
            numbers = np.asarray(batch["labels"], dtype=np.int64)
        except (KeyError, TypeError, ValueError) as error:
            raise UsageError(f"{name} is not a CIFAR-10 batch (needs 'data' and 'labels': {error})") from None
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(numbers) != len(data):
            raise UsageError(f"{name}: expected data N x 3072 uint8 and N labels, got {data.shape}; {HOW_TO_GET}")
        if numbers.min(initial=0) < 0 or numbers.max(initial=0) > 9:
            raise UsageError(f"{name}: labels outside 0..9; {HOW_TO_GET}")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(numbers)
    return np.concatenate(images), np.concatenate(labels)


def _split_files(path: Path, split: str) -> tuple[dict[str, bytes], list[tuple[str, bytes, int]]]:
    """The python layout's files by name, and the JPEG copies of ``split`` as (name, bytes, label)."""
    python, jpegs = {}, []
    for name, data in _members(path):
        parts = name.split("/")
        if parts[-1] in (*TRAIN_FILES, TEST_FILE, META_FILE):
            python[parts[-1]] = data
        elif len(parts) >= 3 and parts[-3] == split and parts[-2] in CLASSES and name.lower().endswith(".jpg"):
            jpegs.append((name, data, CLASSES.index(parts[-2])))
    return python, jpegs


def encoded(source: str | Path, split: str) -> list[tuple[bytes, int]]:
    """(image file, label) of every image of ``split``: the JPEG copies as they are, the official arrays as PNG
    (lossless), in ``read_split``'s order."""
    python, jpegs = _split_files(locate(source), split)
    if jpegs:
        return [(data, label) for _, data, label in jpegs]
    from PIL import Image

    images, labels = _python_batches(python, split)
    found = []
    for image, label in zip(images, labels, strict=True):
        buffer = io.BytesIO()
        Image.fromarray(image.transpose(1, 2, 0)).save(buffer, "PNG")
        found.append((buffer.getvalue(), int(label)))
    return found


def read_split(source: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 ``[N, 3, 32, 32]`` images and int64 labels of ``split`` ("train": 50,000, "test": 10,000)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    python, jpegs = _split_files(locate(source), split)
    if not jpegs:  # the python layout (what it lacks is said)
        return _python_batches(python, split)
    from PIL import Image

    pixels = np.stack([np.asarray(Image.open(io.BytesIO(data)).convert("RGB")) for _, data, _ in jpegs])
    labels = np.array([label for _, _, label in jpegs], dtype=np.int64)
    return np.ascontiguousarray(pixels.transpose(0, 3, 1, 2)), labels
