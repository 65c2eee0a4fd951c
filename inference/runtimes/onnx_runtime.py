"""ONNX Runtime: a model file on its CPU provider, or on CUDA where a GPU works (fp32 and int8 files as they are)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnxruntime as ort

from inference.runtimes.hardware import gpu_present
from inference.settings import ONNXRUNTIME, InferenceSettings

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


def choose_providers(wanted: str = "", use_gpu: bool = True) -> list[str]:
    """``wanted`` (comma-separated), else CUDA then CPU where a GPU works and may be used, else the CPU alone (which
    keeps ONNX Runtime's CUDA-load errors out of the log)."""
    if wanted:
        return [name.strip() for name in wanted.split(",") if name.strip()]
    if use_gpu and gpu_present() and CUDA in ort.get_available_providers():
        return [CUDA, CPU]
    return [CPU]


def open_session(
    model: str | os.PathLike | bytes, settings: InferenceSettings, use_gpu: bool = True
) -> ort.InferenceSession:
    """An ONNX Runtime session of a file (or its bytes) with the settings' threads, spinning and providers (no GPU
    unless ``use_gpu``)."""
    ort.set_default_logger_severity(3)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = settings.threads
    options.inter_op_num_threads = 1
    # ORT's default: workers spin briefly after a run. Measured here, turning it off cost 2-3 ms per request
    # at concurrency 1 and bought no throughput at 32.
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if settings.ort_spin else "0")
    providers = choose_providers(settings.providers, use_gpu)
    if CUDA in providers:
        # CUDA and cuDNN from pip's nvidia-* wheels (onnxruntime-gpu[cuda,cudnn]) are not on the loader's path, and
        # the core imports no torch to put them there; without this ORT silently falls back to the CPU.
        ort.preload_dlls()
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=providers)


class OnnxRuntimeSession:
    """A model file in ONNX Runtime, in the file's own precision (fp32 or int8)."""

    runtime = ONNXRUNTIME

    def __init__(
        self, model: str | os.PathLike | bytes, settings: InferenceSettings, precision: str, use_gpu: bool = True
    ) -> None:
        self.session = open_session(model, settings, use_gpu)
        self.precision = precision

    @property
    def providers(self) -> list[str]:
        """What ONNX Runtime really uses (not what was asked for)."""
        return list(self.session.get_providers())

    def run(self, outputs: Sequence[str], feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """The named outputs for the named inputs (thread-safe: ONNX Runtime runs concurrent calls)."""
        return self.session.run(list(outputs), dict(feeds))

    def describe(self) -> dict[str, Any]:
        """Runtime, version, device, precision and the providers in use."""
        providers = self.providers
        return {
            "runtime": self.runtime,
            "version": ort.__version__,
            "device": "CUDA" if CUDA in providers else "CPU",
            "precision": self.precision,
            "providers": providers,
        }
