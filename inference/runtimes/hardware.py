"""What this machine can run on, asked of the drivers and runtimes themselves (never parsed from /proc)."""

from __future__ import annotations

import ctypes
import functools
import glob
from typing import Any


def gpu_present() -> bool:
    """True only where an NVIDIA driver is really usable (ONNX Runtime lists CUDA even on GPU-less machines)."""
    if not glob.glob("/dev/nvidia[0-9]*"):
        return False
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


@functools.cache
def openvino_core() -> Any | None:
    """OpenVINO's ``Core`` (one per process), or None where the package is not installed (the CUDA image)."""
    try:
        import openvino
    except ImportError:
        return None
    return openvino.Core()


def cpu_capabilities() -> list[str]:
    """OpenVINO's list of the CPU's precisions and features (``FP32``, ``INT8``, ``BF16``, ...); empty without it."""
    core = openvino_core()
    return list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")) if core is not None else []


def cpu_has_bf16() -> bool:
    """Whether the CPU has bf16 units OpenVINO uses (AVX-512 BF16 or AMX), as OpenVINO itself reports."""
    return "BF16" in cpu_capabilities()


def cpu_name() -> str:
    """The CPU's name as OpenVINO reports it, or "CPU" without OpenVINO."""
    core = openvino_core()
    return str(core.get_property("CPU", "FULL_DEVICE_NAME")) if core is not None else "CPU"
