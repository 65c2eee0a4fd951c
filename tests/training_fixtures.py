"""Data for the training tests: real CIFAR-10 written once per session, a tiny ImageNet folder of real photos."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

_CACHE: dict[str, Path] = {}


@pytest.fixture(scope="session")
def cifar_dir(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real CIFAR-10 in the standard python layout, made by the shared make_cifar10.py."""
    if "cifar" not in _CACHE:
        out = tmp_path_factory.mktemp("cifar10")
        tool = data_dir.parent / "tools" / "make_cifar10.py"
        subprocess.run([sys.executable, str(tool), str(out)], check=True, capture_output=True)
        _CACHE["cifar"] = out
    return _CACHE["cifar"]


@pytest.fixture(scope="session")
def tiny_imagenet(imagenet_samples: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train/ and val/ class folders with real photos of 6 classes (grayscale ones included)."""
    if "imagenet" not in _CACHE:
        root = tmp_path_factory.mktemp("imagenet")
        class_dirs = sorted(path for path in (imagenet_samples / "val").iterdir() if path.is_dir())[:6]
        for split in ("train", "val"):
            for class_dir in class_dirs:
                shutil.copytree(class_dir, root / split / class_dir.name)
        _CACHE["imagenet"] = root
    return _CACHE["imagenet"]
