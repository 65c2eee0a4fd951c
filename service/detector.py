"""``POST /detect``: an exported detector on ONNX Runtime, one image per session run, a bounded number at once.

Detection images differ in size, so requests are not merged into batches: each decoded upload is one ORT call (which
uses every core). At most ``RESNET_LAB_DETECT_CONCURRENCY`` run at once; the others wait, and one that cannot start
within ``RESNET_LAB_MAX_LATENCY_MS`` is answered with a JSON 503. An answer holds at most
``min(max_detections, the graph's own cap)`` detections: the graph keeps the recipe's ``box_detections_per_img``
(``detections_per_img`` of ``Key.NMS`` in its metadata, ``max_detections_in_graph`` in ``/info``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio
import bentoml
import numpy as np

from service import answers, imaging
from service.answers import MAX_DETECTIONS
from service.contract import DETECTION, Key
from service.runtime import OnnxModel
from service.settings import Settings

DETECTIONS = bentoml.metrics.Counter(name="resnet_lab_detections", documentation="Detections returned by /detect")
DETECT_SECONDS = bentoml.metrics.Histogram(
    name="resnet_lab_detect_seconds",
    documentation="Seconds per /detect request: decode, waiting for a slot, the ORT run",
    buckets=[0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
)


class DetectionRefused(Exception):
    """A /detect request answered with an error: ``status`` and a sentence."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Detector:
    """The detection side of the service."""

    def __init__(self, path: Path, settings: Settings) -> None:
        self.model = OnnxModel.load(path, settings, DETECTION)
        self.settings = settings
        self.names = {int(category["id"]): str(category["name"]) for category in self.model.metadata.categories}
        self.slots = anyio.CapacityLimiter(settings.detect_concurrency)

    def describe(self) -> dict[str, Any]:
        """What /info shows of the detector."""
        metadata = self.model.metadata
        return {
            "model": metadata.model_name,
            "model_path": str(self.model.path),
            "source_sha256": metadata.source_sha256,
            "num_categories": len(self.names),
            "test_scale": metadata.json_value(Key.TEST_SCALE),
            "score_threshold_in_graph": float(metadata.extra.get(Key.SCORE_THRESHOLD, 0)),
            "max_detections_in_graph": self.graph_cap(),
            "providers": self.model.providers,
            "concurrency": self.settings.detect_concurrency,
        }

    def graph_cap(self) -> int | None:
        """The most detections the graph returns per image: ``detections_per_img`` of its NMS settings."""
        return self.model.metadata.json_value(Key.NMS, {}).get("detections_per_img")

    @staticmethod
    def check(score_threshold: float, max_detections: int) -> None:
        """The request's options, or a 400 that says what they must be."""
        if not 0 <= score_threshold <= 1:
            raise DetectionRefused(400, f"score_threshold must be a number between 0 and 1, got {score_threshold}")
        if not 1 <= max_detections <= MAX_DETECTIONS:
            raise DetectionRefused(
                400, f"max_detections must be an integer between 1 and {MAX_DETECTIONS}, got {max_detections}"
            )

    async def answer(
        self, data: bytes, score_threshold: float, max_detections: int, decode: anyio.CapacityLimiter
    ) -> dict[str, Any]:
        """Decode, wait for a slot, run, and shape the answer (boxes in the pixels of the upload as displayed)."""
        started = time.perf_counter()
        try:
            image = await anyio.to_thread.run_sync(imaging.load_rgb, data, limiter=decode)
        except imaging.ImageRejected as rejected:
            raise DetectionRefused(rejected.status, str(rejected)) from None
        pixels = imaging.to_chw(image)
        with anyio.move_on_after(self.settings.max_latency_ms / 1000) as waiting:
            await self.slots.acquire()
        if waiting.cancelled_caught:
            limit = f"max_latency_ms={self.settings.max_latency_ms}"
            raise DetectionRefused(503, f"server overloaded: no detection slot within {limit}; retry later")
        try:
            boxes, scores, labels = await anyio.to_thread.run_sync(self.model.detect, pixels)
        finally:
            self.slots.release()
        detections = self.shape(boxes, scores, labels, score_threshold, max_detections)
        DETECTIONS.inc(len(detections))
        DETECT_SECONDS.observe(time.perf_counter() - started)
        return answers.detection(self.model.metadata.model_name, (image.width, image.height), detections)

    def shape(
        self, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, score_threshold: float, max_detections: int
    ) -> list[dict[str, Any]]:
        """Detections at or above ``score_threshold``, best first, at most ``max_detections`` (of the at most
        ``graph_cap()`` the graph returned)."""
        return answers.detections(boxes, scores, labels, self.names, score_threshold, max_detections)
