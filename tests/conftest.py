"""Shared fixtures: where the real data lives (``RESNET_LAB_DATA`` or ``../shared/data``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """The real datasets folder described by ``MANIFEST.md``."""
    return Path(os.environ.get("RESNET_LAB_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = shared_data_dir()
    if not (path / "MANIFEST.md").is_file():
        pytest.fail(f"real data not found at {path}; set RESNET_LAB_DATA to the shared/data folder")
    return path


@pytest.fixture(scope="session")
def imagenet_samples(data_dir: Path) -> Path:
    return data_dir / "imagenet_samples"
