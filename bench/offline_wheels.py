"""Bring the serving stack to a machine without network: download wheels here, carry them in parts, install there.

    python bench/offline_wheels.py download .gpu/wheels          # here: wheels for CPython 3.12, manylinux x86_64
    python bench/offline_wheels.py split .gpu/wheels --mib 60    # files over 60 MiB become .partNN pieces
    python bench/offline_wheels.py groups .gpu/wheels --mib 60   # which files fit together in one carry
    python bench/offline_wheels.py join .gpu/wheels              # there: reassemble the pieces (sizes checked)
    pip install --no-index --find-links .gpu/wheels onnxruntime-gpu bentoml ...   # there: install from the folder

``download`` asks pip for the serving requirements (onnxruntime-gpu built for CUDA 13, BentoML and what they need
beyond what such a machine already has).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

REQUIREMENTS = ["onnxruntime-gpu==1.31.1", "bentoml>=1.4,<1.5", "httptools", "uvloop", "aiohttp", "psutil"]
MANIFEST = "pieces.json"


def download(folder: Path, python_version: str = "3.12") -> None:
    """pip download the wheels for another interpreter (binary wheels only)."""
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--dest", str(folder), "--only-binary=:all:",
               "--python-version", python_version, "--platform", "manylinux_2_28_x86_64",
               "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64", *REQUIREMENTS]  # fmt: skip
    subprocess.run(command, check=True)


def split(folder: Path, mib: int) -> list[Path]:
    """Cut files over ``mib`` MiB into numbered pieces (the original removed); a manifest keeps sizes and hashes."""
    limit, manifest, pieces = mib * 2**20, {}, []
    for path in sorted(folder.glob("*.whl")):
        data = path.read_bytes()
        if len(data) <= limit:
            continue
        parts = [data[start : start + limit] for start in range(0, len(data), limit)]
        for index, part in enumerate(parts):
            piece = path.with_name(f"{path.name}.part{index:02d}")
            piece.write_bytes(part)
            pieces.append(piece)
        manifest[path.name] = {"parts": len(parts), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        path.unlink()
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return pieces


def join(folder: Path) -> list[Path]:
    """Reassemble the pieces the manifest lists; refuse a missing piece or a wrong size or hash."""
    manifest = json.loads((folder / MANIFEST).read_text()) if (folder / MANIFEST).is_file() else {}
    joined = []
    for name, entry in manifest.items():
        pieces = [folder / f"{name}.part{index:02d}" for index in range(entry["parts"])]
        missing = [piece.name for piece in pieces if not piece.is_file()]
        if missing:
            raise SystemExit(f"{name}: missing {', '.join(missing)}; carry them first")
        data = b"".join(piece.read_bytes() for piece in pieces)
        if len(data) != entry["bytes"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise SystemExit(f"{name}: reassembled file differs from the original (size or SHA-256)")
        (folder / name).write_bytes(data)
        joined.append(folder / name)
    return joined


def groups(folder: Path, mib: int) -> list[list[Path]]:
    """Files packed into groups of at most ``mib`` MiB (first fit, largest first): one carry each."""
    limit, bins = mib * 2**20, []
    for path in sorted(folder.iterdir(), key=lambda p: p.stat().st_size, reverse=True):
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
    parser.add_argument("--mib", type=int, default=60, help="largest piece or carry, MiB (default 60)")
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
            print(f"carry {index + 1} ({size:.0f} MiB): {' '.join(str(path) for path in group)}")


if __name__ == "__main__":
    main()
