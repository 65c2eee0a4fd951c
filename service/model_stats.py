"""Per-model statistics: Triton's statistics extension (``GET /v2/models/{name}/stats``, read by ``tritonclient``'s
``get_inference_statistics``) and the Prometheus series labelled by model.

Triton's meanings: ``success``/``fail`` count requests and their whole time in the model; ``queue`` is the time
requests waited for a run; ``compute_infer`` the runs' time, counted per request (a batch of three requests adds
three counts of its run time); ``inference_count`` counts images, ``execution_count`` runs; ``batch_stats`` give
each batch size's runs. Decoding happens before a request reaches the model, so ``compute_input`` and
``compute_output`` stay 0.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import bentoml

INFERENCES = bentoml.metrics.Counter(
    name="resnet_lab_model_inferences",
    documentation="Images answered per model and version (/classify, /detect and /v2 infer)",
    labelnames=["model", "version"],
)
REQUESTS = bentoml.metrics.Counter(
    name="resnet_lab_model_requests",
    documentation="Requests per model and version, by outcome (success or fail)",
    labelnames=["model", "version", "outcome"],
)
RUN_SECONDS = bentoml.metrics.Histogram(
    name="resnet_lab_model_run_seconds",
    documentation="Seconds per model run (one batch, or one detected image), per model and version",
    labelnames=["model", "version"],
    buckets=[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
)
STAGES = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output", "cache_hit", "cache_miss")


def _duration(count: int = 0, ns: int = 0) -> dict[str, int]:
    return {"count": count, "ns": ns}


class ModelStats:
    """One model version's counters (thread-safe: runs finish in worker threads)."""

    def __init__(self, name: str, version: str) -> None:
        self.name, self.version = name, version
        self._lock = threading.Lock()
        self._stages = {stage: _duration() for stage in STAGES}
        self._batches: dict[int, dict[str, int]] = {}
        self.inference_count = self.execution_count = 0
        self.last_inference_ms = 0
        self._waited_ns = 0  # requests' time between asking for a run and having its result

    @contextmanager
    def request(self) -> Iterator[None]:
        """Time one request to this model: a success unless the block raises."""
        started = time.perf_counter_ns()
        outcome = "fail"
        try:
            yield
            outcome = "success"
        finally:
            with self._lock:
                stage = self._stages[outcome]
                stage["count"] += 1
                stage["ns"] += time.perf_counter_ns() - started
            REQUESTS.labels(model=self.name, version=self.version, outcome=outcome).inc()

    def waited(self, seconds: float) -> None:
        """A request waited ``seconds`` for its run's result (queue and run)."""
        with self._lock:
            self._waited_ns += int(seconds * 1e9)

    def ran(self, images: int, requests: int, seconds: float) -> None:
        """One run of ``images`` images for ``requests`` requests took ``seconds``."""
        ns = int(seconds * 1e9)
        with self._lock:
            self.inference_count += images
            self.execution_count += 1
            self.last_inference_ms = int(time.time() * 1000)
            infer = self._stages["compute_infer"]
            infer["count"] += requests
            infer["ns"] += ns * requests
            batch = self._batches.setdefault(images, _duration())
            batch["count"] += 1
            batch["ns"] += ns
        INFERENCES.labels(model=self.name, version=self.version).inc(images)
        RUN_SECONDS.labels(model=self.name, version=self.version).observe(seconds)

    def triton(self) -> dict[str, Any]:
        """The statistics as Triton's ``model_stats`` entry."""
        with self._lock:
            stages = {stage: dict(value) for stage, value in self._stages.items()}
            infer = stages["compute_infer"]
            stages["queue"] = _duration(infer["count"], max(self._waited_ns - infer["ns"], 0))
            batches = [
                {
                    "batch_size": size,
                    "compute_input": _duration(run["count"]),
                    "compute_infer": dict(run),
                    "compute_output": _duration(run["count"]),
                }
                for size, run in sorted(self._batches.items())
            ]
            return {
                "name": self.name,
                "version": self.version,
                "last_inference": self.last_inference_ms,
                "inference_count": self.inference_count,
                "execution_count": self.execution_count,
                "inference_stats": stages,
                "batch_stats": batches,
                "memory_usage": [],
            }
