"""The runtimes that run a model file: one interface (``Session``: run named outputs for named inputs, describe what
it runs on) with two implementations, ONNX Runtime (CPU, CUDA; ``onnx_runtime``) and OpenVINO (CPU: fp32, bf16,
int8; ``openvino_runtime``), and the rule that picks one (``choice``)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from inference.runtimes.choice import Plan
from inference.settings import OPENVINO, InferenceSettings


class Session(Protocol):
    """A model file loaded by a runtime."""

    runtime: str  # "onnxruntime" or "openvino"
    precision: str  # "fp32", "bf16" or "int8"

    def run(self, outputs: Sequence[str], feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """The named outputs for the named inputs."""

    def describe(self) -> dict[str, Any]:
        """What it runs on: runtime, version, device, precision (and runtime-specific details)."""


def open_session(
    model: str | os.PathLike | bytes,
    plan: Plan,
    settings: InferenceSettings,
    use_gpu: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> Session:
    """The file (or its bytes) loaded as ``plan`` says (never on a GPU unless ``use_gpu``); ``cache_dir``: where
    ``inference.runtimes.compile_aside`` compiled it for OpenVINO beforehand."""
    if plan.runtime == OPENVINO:
        from inference.runtimes.openvino_runtime import OpenVinoSession

        return OpenVinoSession(model, settings, plan.precision, cache_dir)
    from inference.runtimes.onnx_runtime import OnnxRuntimeSession

    return OnnxRuntimeSession(model, settings, plan.precision, use_gpu)
