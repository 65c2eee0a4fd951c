"""The serving stack for a machine without network: download wheels here, split large ones, reassemble them there.

    python -m bench.offline_wheels download .gpu/wheels          # here: wheels for CPython 3.12, manylinux x86_64
    python -m bench.offline_wheels split .gpu/wheels --mib 60    # files over 60 MiB become .partNN pieces
    python -m bench.offline_wheels groups .gpu/wheels --mib 60   # the folder's files in groups of at most 60 MiB
    python -m bench.offline_wheels join .gpu/wheels              # there: reassemble the pieces (sizes, SHA-256)
    pip install --no-index --find-links .gpu/wheels onnxruntime-gpu bentoml ...   # there: install from the folder

For a machine without network: copy the folder over (each file at most ``--mib`` MiB after ``split``; ``groups``
lists them in bundles of that size), then ``join`` there. ``split`` adds to ``pieces.json`` and can run again.
``download`` asks pip for the serving requirements (onnxruntime-gpu built for CUDA 13, BentoML at the version the
project is tested with, the clients the benchmarks use, pytest) and everything they need.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

# pytest: for tests/test_gpu.py where the machine has none
REQUIREMENTS = ["onnxruntime-gpu==1.31.1", "bentoml==1.4.40", "httptools", "uvloop", "aiohttp", "psutil", "pytest"]
MANIFEST = "pieces.json"


def download(folder: Path, python_version: str = "3.12") -> None:
    """pip download the wheels for another interpreter (binary wheels only)."""
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--dest", str(folder), "--only-binary=:all:",
               "--python-version", python_version, "--platform", "manylinux_2_28_x86_64",
               "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64", *REQUIREMENTS]  # fmt: skip
    subprocess.run(command, check=True)


def _limit(mib: float) -> int:
    """``mib`` MiB in bytes (fractions allowed), at least one byte."""
    return max(1, int(mib * 2**20))


def _manifest(folder: Path) -> dict[str, dict]:
    """The pieces manifest of ``folder`` (empty when there is none)."""
    path = folder / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else {}


def _piece_names(name: str, parts: int) -> list[str]:
    return [f"{name}.part{index:02d}" for index in range(parts)]


def split(folder: Path, mib: float) -> list[Path]:
    """Cut wheels over ``mib`` MiB into numbered pieces (the original removed), adding them to the manifest."""
    limit, manifest, pieces = _limit(mib), _manifest(folder), []
    for path in sorted(folder.glob("*.whl")):
        data = path.read_bytes()
        if len(data) <= limit:
            continue
        for stale in folder.glob(f"{path.name}.part*"):  # an earlier split at another size
            stale.unlink()
        parts = [data[start : start + limit] for start in range(0, len(data), limit)]
        for name, part in zip(_piece_names(path.name, len(parts)), parts, strict=True):
            (folder / name).write_bytes(part)
            pieces.append(folder / name)
        manifest[path.name] = {"parts": len(parts), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        path.unlink()
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return pieces


class WheelsRefused(Exception):
    """A folder that cannot be joined; the message says what to copy again. (No project import: this runs on
    machines where only the standard library is installed.)"""


def _matches(data: bytes, entry: dict) -> bool:
    return len(data) == entry["bytes"] and hashlib.sha256(data).hexdigest() == entry["sha256"]


def join(folder: Path) -> list[Path]:
    """Reassemble the wheels the manifest lists; refuse a missing piece or a wrong size or hash."""
    if not folder.is_dir():
        raise WheelsRefused(f"{folder}: no such folder")
    joined = []
    for name, entry in _manifest(folder).items():
        target = folder / name
        if target.is_file() and _matches(target.read_bytes(), entry):
            joined.append(target)  # joined before
            continue
        pieces = [folder / piece for piece in _piece_names(name, entry["parts"])]
        missing = [piece.name for piece in pieces if not piece.is_file()]
        if missing:
            raise WheelsRefused(
                f"{name}: missing {', '.join(missing)} in {folder}; copy every piece {MANIFEST} lists there first"
            )
        data = b"".join(piece.read_bytes() for piece in pieces)
        if not _matches(data, entry):
            raise WheelsRefused(
                f"{name}: the pieces make {len(data)} bytes with SHA-256 {hashlib.sha256(data).hexdigest()}, "
                f"{MANIFEST} says {entry['bytes']} bytes with {entry['sha256']}: a piece is damaged or from another "
                "download; copy the pieces again"
            )
        target.write_bytes(data)
        joined.append(target)
    return joined


def groups(folder: Path, mib: float) -> list[list[Path]]:
    """The folder's files packed into groups of at most ``mib`` MiB (first fit, largest first)."""
    limit, bins = _limit(mib), []
    files = [path for path in folder.iterdir() if path.is_file()]
    for path in sorted(files, key=lambda p: (-p.stat().st_size, p.name)):
        for group in bins:
            if sum(p.stat().st_size for p in group) + path.stat().st_size <= limit:
                group.append(path)
                break
        else:
            bins.append([path])
    return bins


def main(argv: list[str] | None = None) -> None:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["download", "split", "join", "groups"])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--mib", type=float, default=60, help="largest piece or group, MiB (default 60)")
    parser.add_argument("--python-version", default="3.12", help="target interpreter for download (default 3.12)")
    args = parser.parse_args(argv)
    if args.action == "download":
        download(args.folder, args.python_version)
    elif args.action == "split":
        print("\n".join(str(piece) for piece in split(args.folder, args.mib)))
    elif args.action == "join":
        print("\n".join(str(path) for path in join(args.folder)))
    else:
        for index, group in enumerate(groups(args.folder, args.mib)):
            size = sum(path.stat().st_size for path in group) / 2**20
            print(f"group {index + 1} ({size:.1f} MiB): {' '.join(str(path) for path in group)}")


if __name__ == "__main__":
    try:
        main()
    except WheelsRefused as refused:
        print(f"error: {refused}", file=sys.stderr)
        raise SystemExit(2) from None
