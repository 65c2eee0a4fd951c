"""Where a published number came from: the command, date, commit, machine and package versions.

Every file a benchmark or a run record writes carries this block, so README and report tables can cite it.
"""

from __future__ import annotations

import datetime
import importlib.util
import os
import platform
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("torch", "torchvision", "onnxruntime-gpu", "onnxruntime", "bentoml", "pillow", "numpy", "ray")
RESULT_DIRS = ("docs/bench", "docs/examples")  # written by the benchmarks themselves: not a change to the code


def cpu_model() -> str:
    """This machine's CPU model name (from /proc/cpuinfo where there is one)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def commit(root: Path = REPO_ROOT) -> str:
    """The checked-out commit, ``+dirty`` when the tree has uncommitted changes outside the result folders
    (``RESULT_DIRS``: so each of several benchmarks run in a row is not marked by the files of the one before);
    "unknown" outside git."""
    excluded = [f":(exclude){folder}" for folder in RESULT_DIRS]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", ".", *excluded], cwd=root, capture_output=True, text=True
        ).stdout
        return head + ("+dirty" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def gpu() -> dict[str, Any] | None:
    """The CUDA devices torch sees, its CUDA version and the driver; None without a usable GPU or without torch.

    torch is imported only where the service would find a usable GPU, so GPU-less machines pay nothing for it.
    """
    from inference.runtimes.hardware import gpu_present

    if not gpu_present() or importlib.util.find_spec("torch") is None:
        return None
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        names = [torch.cuda.get_device_name(index) for index in range(torch.cuda.device_count())]
    except (ImportError, RuntimeError):
        return None
    found = {"devices": names, "cuda": torch.version.cuda}
    try:
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True
        )
        found["driver"] = smi.stdout.split("\n")[0].strip() or None
    except OSError:
        found["driver"] = None
    return found


def machine(devices: dict[str, Any] | None) -> str:
    """One line: the CPU, and the GPUs where there are some ("16-core CPU (...), 1x NVIDIA H100 (CUDA 13.0)")."""
    line = f"{os.cpu_count()}-core CPU ({cpu_model()})"
    if devices:
        counts: dict[str, int] = {}
        for name in devices["devices"]:
            counts[name] = counts.get(name, 0) + 1
        line += ", " + ", ".join(f"{count}x {name}" for name, count in counts.items()) + f" (CUDA {devices['cuda']})"
    return line


def command(args: list[str]) -> str:
    """``python`` and the arguments after the interpreter; paths inside the repository relative to its root."""
    return shlex.join(["python", *(_repo_relative(arg) for arg in args)]) if args else ""


def _repo_relative(arg: str) -> str:
    """``arg`` with an absolute path inside the repository (alone or after ``--option=``) made relative to it."""
    prefix, _, value = arg.rpartition("=") if arg.startswith("-") and "=" in arg else ("", "", arg)
    if not os.path.isabs(value):
        return arg
    try:
        relative = Path(os.path.normpath(value)).relative_to(REPO_ROOT)
    except ValueError:
        return arg
    return f"{prefix}{'=' if prefix else ''}{relative.as_posix() if relative.parts else '.'}"


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
    """The block every results file starts with; ``argv``: the arguments after ``python`` (default: this
    process's own, ``-m module`` kept)."""
    argv = sys.orig_argv[1:] if argv is None else argv
    devices = gpu()
    return {
        "command": command(argv),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": commit(),
        "machine": machine(devices),
        "gpu": devices,
        "versions": versions(),
    }
