"""``POST /detect``: an exported detector, one image per run, a bounded number at once.

Detection images differ in size, so requests are not merged into batches: each decoded upload is one run (which
uses every core). At most ``RESNET_LAB_DETECT_CONCURRENCY`` run at once; the others wait, and one that cannot start
within ``RESNET_LAB_MAX_LATENCY_MS`` is refused with a 503. An answer holds at most
``min(max_detections, the graph's own cap)`` detections: the graph keeps the recipe's ``box_detections_per_img``
(``detections_per_img`` of ``Key.NMS`` in its metadata, ``max_detections_in_graph`` in ``/info``).
"""

from __future__ import annotations

import math
import time
from typing import Any

import anyio
import bentoml
import numpy as np

from inference import answers, imaging
from inference.contract import Key
from inference.model import LoadedModel
from service.errors import RequestRejected
from service.model_stats import ModelStats
from service.settings import Settings
from service.uploads import DetectOptions

DETECTIONS = bentoml.metrics.Counter(
    name="resnet_lab_detections", documentation="Detections returned by /detect", labelnames=["model"]
)
DETECT_SECONDS = bentoml.metrics.Histogram(
    name="resnet_lab_detect_seconds",
    documentation="Seconds per detected image: waiting for a detection slot and the run",
    labelnames=["model"],
    buckets=[0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
)


class Detector:
    """A detector as served under ``name`` and ``version``."""

    def __init__(self, model: LoadedModel, name: str, version: str, settings: Settings) -> None:
        self.model, self.name, self.version, self.settings = model, name, version, settings
        self.stats = ModelStats(name, version)
        self.names = {int(category["id"]): str(category["name"]) for category in self.model.metadata.categories}
        self.slots = anyio.CapacityLimiter(settings.detect_concurrency)

    def close(self) -> None:
        """Nothing to stop: a detector has no queue of its own."""

    def describe(self) -> dict[str, Any]:
        """What /info shows of the detector."""
        metadata = self.model.metadata
        return {
            "model": self.name,
            "model_version": self.version,
            "model_path": str(self.model.path),
            "source_sha256": metadata.source_sha256,
            "num_categories": len(self.names),
            "test_scale": metadata.json_value(Key.TEST_SCALE),
            "score_threshold_in_graph": float(metadata.extra.get(Key.SCORE_THRESHOLD, 0)),
            "max_detections_in_graph": self.graph_cap(),
            "runtime": self.model.describe(),
            "concurrency": self.settings.detect_concurrency,
        }

    def graph_cap(self) -> int | None:
        """The most detections the graph returns per image: ``detections_per_img`` of its NMS settings."""
        return self.model.metadata.json_value(Key.NMS, {}).get("detections_per_img")

    async def decode(self, data: bytes, limiter: anyio.CapacityLimiter) -> np.ndarray:
        """An image file as uint8 ``[3, H, W]`` in its pixels as displayed; ``RequestRejected`` if it is no image."""
        try:
            image = await anyio.to_thread.run_sync(imaging.load_rgb, data, limiter=limiter)
        except imaging.ImageRejected as rejected:
            raise RequestRejected(str(rejected), rejected.status) from None
        return imaging.to_chw(image)

    def _check_resizable(self, width: int, height: int) -> None:
        """Refuse a strip so thin that the graph's resize (torchvision's: the shorter side to ``min_size``, the
        longer at most ``max_size``, floored) leaves it no pixel across, which no runtime can run."""
        scale = self.model.metadata.json_value(Key.TEST_SCALE, {})
        if not scale:
            return
        factor = min(scale["min_size"] / min(width, height), scale["max_size"] / max(width, height))
        if math.floor(min(width, height) * factor) < 1:
            raise RequestRejected(
                f"the image is {width}x{height} px: scaled to fit {scale['max_size']} px its shorter side is under "
                "one pixel; crop it nearer to square"
            )

    async def detections(self, pixels: np.ndarray, options: DetectOptions) -> list[dict[str, Any]]:
        """Wait for a slot, run, and shape the detections (a 503 when no slot frees within the latency budget)."""
        self._check_resizable(pixels.shape[2], pixels.shape[1])
        started = time.perf_counter()
        with anyio.move_on_after(self.settings.max_latency_ms / 1000) as waiting:
            await self.slots.acquire()
        if waiting.cancelled_caught:
            limit = f"max_latency_ms={self.settings.max_latency_ms}"
            raise RequestRejected(f"server overloaded: no detection slot within {limit}; retry later", 503)
        try:
            ran = time.perf_counter()
            boxes, scores, labels = await anyio.to_thread.run_sync(self.model.detect, pixels)
        finally:
            self.slots.release()
        finished = time.perf_counter()
        self.stats.ran(1, 1, finished - ran)
        self.stats.waited(finished - started)
        found = answers.detections(boxes, scores, labels, self.names, options.score_threshold, options.max_detections)
        DETECTIONS.labels(model=self.name).inc(len(found))
        DETECT_SECONDS.labels(model=self.name).observe(finished - started)
        return found

    async def answer(self, data: bytes, options: DetectOptions, limiter: anyio.CapacityLimiter) -> dict[str, Any]:
        """``/detect``'s answer for one image file (boxes in the pixels of the upload as displayed)."""
        pixels = await self.decode(data, limiter)
        found = await self.detections(pixels, options)
        answer = answers.detection(self.name, (pixels.shape[2], pixels.shape[1]), found)
        return {**answer, "model_version": self.version}
