"""OpenVINO on the CPU: a model file in fp32, in bf16 on CPUs with bf16 units, or as int8 (a quantized file).

The precision is always set (``INFERENCE_PRECISION_HINT``): OpenVINO's own default on a CPU with bf16 units is bf16,
whose answers are not fp32's. One stream with all the cores (``PERFORMANCE_HINT=LATENCY``): the server runs one
batch at a time and wants each as soon as possible.
"""

from __future__ import annotations

import os
import queue
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from inference.contract import BF16
from inference.runtimes.hardware import openvino_core
from inference.settings import OPENVINO, InferenceSettings

HINTS = {
    BF16: "bf16"
}  # the precision hint of each precision asked for; anything else runs in f32 (int8 layers as int8)


def compile_config(settings: InferenceSettings, precision: str) -> dict[str, Any]:
    """The CPU plugin's settings for ``precision`` (the same for a compile and for the import of its cache)."""
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": HINTS.get(precision, "f32"), "PERFORMANCE_HINT": "LATENCY"}
    if settings.threads:
        config["INFERENCE_NUM_THREADS"] = settings.threads
    return config


class OpenVinoSession:
    """A model file compiled by OpenVINO for the CPU."""

    runtime = OPENVINO

    def __init__(
        self,
        model: str | os.PathLike | bytes,
        settings: InferenceSettings,
        precision: str,
        cache_dir: str | os.PathLike | None = None,
    ) -> None:
        core = openvino_core()
        if core is None:
            raise RuntimeError("the openvino package is not installed")
        config = compile_config(settings, precision)
        if cache_dir is not None and not isinstance(model, bytes):
            # a file compiled ahead into cache_dir (``compile_aside``) is imported, not compiled again
            self.compiled = core.compile_model(str(model), "CPU", {**config, "CACHE_DIR": str(cache_dir)})
        else:
            source = core.read_model(model, b"") if isinstance(model, bytes) else core.read_model(str(model))
            self.compiled = core.compile_model(source, "CPU", config)
        self.precision = precision
        self._idle: queue.SimpleQueue[Any] = queue.SimpleQueue()  # infer requests not in use

    def run(self, outputs: Sequence[str], feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """The named outputs for the named inputs; concurrent calls each take an infer request of their own."""
        try:
            request = self._idle.get_nowait()
        except queue.Empty:
            request = self.compiled.create_infer_request()
        try:
            request.infer(dict(feeds))
            return [np.array(request.get_tensor(name).data) for name in outputs]  # a copy: the request is reused
        finally:
            self._idle.put(request)

    def describe(self) -> dict[str, Any]:
        """Runtime, version, device, the precision and the precision OpenVINO reports it compiled with."""
        import openvino

        return {
            "runtime": self.runtime,
            "version": openvino.get_version().split("-")[0],
            "device": "CPU",
            "precision": self.precision,
            "inference_precision": self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name(),
            "threads": int(self.compiled.get_property("INFERENCE_NUM_THREADS")),
        }
