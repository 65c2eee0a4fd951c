"""Where a published number came from: the command, date, commit, machine and package versions.

Every file a benchmark or a run record writes carries this block, so README and report tables can cite it.
"""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("torch", "torchvision", "onnxruntime-gpu", "bentoml", "pillow", "numpy")


def cpu_model() -> str:
    """This machine's CPU model name (from /proc/cpuinfo where there is one)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def commit() -> str:
    """The checked-out commit, ``+dirty`` when the tree has uncommitted changes ("unknown" outside git)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO_ROOT, capture_output=True, text=True).stdout
        return head + ("+dirty" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def versions() -> dict[str, str]:
    """Installed versions of the packages the numbers depend on."""
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def provenance(argv: list[str] | None = None) -> dict[str, Any]:
    """The block every results file starts with."""
    argv = sys.argv if argv is None else argv
    return {
        "command": shlex.join(["python", *argv]) if argv else "",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": commit(),
        "machine": f"{os.cpu_count()}-core CPU ({cpu_model()})",
        "versions": versions(),
    }
