"""bench/offline_wheels.py without network: split, groups and join on small stand-in wheel files."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT

_spec = importlib.util.spec_from_file_location("offline_wheels", REPO_ROOT / "bench" / "offline_wheels.py")
offline_wheels = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(offline_wheels)

PIECE_MIB = 1000 / 2**20  # 1,000-byte pieces
PIECE = offline_wheels._limit(PIECE_MIB)


def _wheels(folder: Path, sizes: dict[str, int]) -> dict[str, bytes]:
    """Stand-in wheels of the given sizes (distinct bytes, so a piece out of place changes the hash)."""
    folder.mkdir(exist_ok=True)
    written = {}
    for index, (name, size) in enumerate(sizes.items()):
        data = bytes((index * 7 + position * 31) % 251 for position in range(size))
        (folder / name).write_bytes(data)
        written[name] = data
    return written


def _run(*args: str | Path) -> None:
    offline_wheels.main([str(arg) for arg in args])


def test_split_twice_groups_and_join_restore_every_wheel(tmp_path: Path) -> None:
    folder = tmp_path / "wheels"
    first = _wheels(folder, {"big-1.0-py3-none-any.whl": 2500, "small-1.0-py3-none-any.whl": 400})
    _run("split", folder, "--mib", PIECE_MIB)
    second = _wheels(folder, {"huge-2.0-py3-none-any.whl": 3100})  # a later download, split on its own
    _run("split", folder, "--mib", PIECE_MIB)
    _run("split", folder, "--mib", PIECE_MIB)  # nothing left to split: the manifest keeps both entries
    manifest = json.loads((folder / "pieces.json").read_text())
    assert manifest.keys() == {"big-1.0-py3-none-any.whl", "huge-2.0-py3-none-any.whl"}
    assert manifest["huge-2.0-py3-none-any.whl"]["parts"] == 4 and manifest["big-1.0-py3-none-any.whl"]["parts"] == 3
    assert not (folder / "big-1.0-py3-none-any.whl").exists()
    assert max(path.stat().st_size for path in folder.glob("*.part*")) <= PIECE

    bundles = offline_wheels.groups(folder, 2 * PIECE_MIB)
    assert sorted(path.name for group in bundles for path in group) == sorted(p.name for p in folder.iterdir())
    assert all(sum(path.stat().st_size for path in group) <= 2 * PIECE for group in bundles)

    moved = tmp_path / "there"
    moved.mkdir()
    for group in bundles:  # what arrives on the other machine
        for path in group:
            (moved / path.name).write_bytes(path.read_bytes())
    _run("join", moved)
    _run("join", moved)  # joined again: nothing changes
    for name, data in {**first, **second}.items():
        assert (moved / name).read_bytes() == data, name


def test_join_refuses_a_missing_piece_and_a_wrong_hash(tmp_path: Path) -> None:
    folder = tmp_path / "wheels"
    _wheels(folder, {"big-1.0-py3-none-any.whl": 2500})
    offline_wheels.split(folder, PIECE_MIB)
    piece = folder / "big-1.0-py3-none-any.whl.part01"
    data = piece.read_bytes()
    piece.unlink()
    with pytest.raises(
        offline_wheels.WheelsRefused, match=r"big-1.0-py3-none-any.whl: missing big-1.0-py3-none-any.whl.part01 in"
    ):
        offline_wheels.join(folder)
    piece.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # one bit flipped, same size
    with pytest.raises(offline_wheels.WheelsRefused, match="SHA-256 .* a piece is damaged"):
        offline_wheels.join(folder)
    assert not (folder / "big-1.0-py3-none-any.whl").exists()  # nothing half-joined is left for pip to find
