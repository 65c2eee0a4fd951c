"""One served classifier: its model, its own batching queue, the decoding its crop needs, and its statistics.

Each classifier has its own queue (BentoML's adaptive batching, ``service.bentoml_adapter``): a model loading,
busy or unloading never holds up another's requests. Closing it stops its queue once the requests in it are
answered.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

import anyio
import bentoml
import numpy as np

from inference import answers, imaging
from inference.contract import Key
from inference.model import LoadedModel
from service.bentoml_adapter import dispatcher
from service.errors import RequestRejected
from service.model_stats import ModelStats
from service.settings import Settings

BATCH_SIZE_HISTOGRAM = bentoml.metrics.Histogram(
    name="resnet_lab_batch_size",
    documentation="Images per model run (adaptive batching)",
    labelnames=["endpoint", "model"],
    buckets=[1, 2, 4, 8, 16, 32, 64, 128, 256],
)


class Overloaded(RuntimeError):
    """The batching queue dropped a request that could not be answered within ``max_latency_ms``."""


class Classifier:
    """A classifier as served under ``name`` and ``version``."""

    def __init__(self, model: LoadedModel, name: str, version: str, settings: Settings) -> None:
        self.model, self.name, self.version, self.settings = model, name, version, settings
        self.labels = model.metadata.labels
        self.fast_decode = not settings.exact_decode and imaging.fast_decode_keeps_answers(model.metadata.crop_size)
        self.stats = ModelStats(name, version)
        self._cork = dispatcher(settings.max_batch_size, settings.max_latency_ms, self._overloaded, batch_size=len)
        self._enqueue = self._cork(self._run_queued_batch)
        self._lock = threading.Lock()
        self.batch_sizes: dict[int, int] = {}
        self.seconds = {"decode": 0.0, "infer_call": 0.0, "run": 0.0}  # totals, for the means in /info
        self.images = 0

    def _overloaded(self) -> np.ndarray:
        limit = self.settings.max_latency_ms
        raise Overloaded(f"server overloaded: no answer within max_latency_ms={limit}; retry later")

    def close(self) -> None:
        """Stop the batching queue (after the last request: an unloaded model)."""
        self._cork.shutdown()

    def describe(self) -> dict[str, Any]:
        """What /info shows of it."""
        with self._lock:
            sizes = dict(sorted(self.batch_sizes.items()))
            seconds, images = dict(self.seconds), self.images
        batches = sum(sizes.values())
        metadata = self.model.metadata
        return {
            "model": self.name,
            "model_version": self.version,
            "model_path": str(self.model.path),
            "source_sha256": metadata.source_sha256,
            "weights": metadata.json_value(Key.WEIGHTS),
            "num_labels": len(self.labels),
            "resize_size": metadata.resize_size,
            "crop_size": metadata.crop_size,
            "runtime": self.model.describe(),
            "decode": "fast" if self.fast_decode else "exact",
            "batches": {
                "count": batches,
                "images": sum(size * count for size, count in sizes.items()),
                "max_size": max(sizes, default=0),
                "sizes": {str(size): count for size, count in sizes.items()},
            },
            "mean_ms": {  # where an image's time goes: decode+resize, the batched call (queue + run), run per batch
                "decode": round(1000 * seconds["decode"] / max(images, 1), 2),
                "infer_call": round(1000 * seconds["infer_call"] / max(images, 1), 2),
                "run_per_batch": round(1000 * seconds["run"] / max(batches, 1), 2),
            },
        }

    async def answer(
        self, images: Sequence[bytes], top_k: int, limiter: anyio.CapacityLimiter
    ) -> list[dict[str, Any] | RequestRejected]:
        """``/classify``'s answer for each image file, or why it is refused."""
        started = time.perf_counter()
        decoded = await self.decode_each(images, limiter)
        pixels = [image for image in decoded if not isinstance(image, RequestRejected)]
        finished = time.perf_counter()
        logits = iter(await self.logits(np.stack(pixels)) if pixels else [])
        with self._lock:
            self.images += len(pixels)
            self.seconds["decode"] += (finished - started) * len(pixels)
            self.seconds["infer_call"] += (time.perf_counter() - finished) * len(pixels)
        return [
            image
            if isinstance(image, RequestRejected)
            else {**answers.classification(self.name, self.labels, next(logits), top_k), "model_version": self.version}
            for image in decoded
        ]

    def _decode(self, data: bytes) -> np.ndarray:
        metadata = self.model.metadata
        return imaging.preprocess(data, metadata.resize_size, metadata.crop_size, fast=self.fast_decode)

    async def _decode_one(self, data: bytes, limiter: anyio.CapacityLimiter) -> np.ndarray | RequestRejected:
        try:
            return await anyio.to_thread.run_sync(self._decode, data, limiter=limiter)
        except imaging.ImageRejected as rejected:
            return RequestRejected(str(rejected), rejected.status)

    async def decode_each(
        self, images: Sequence[bytes], limiter: anyio.CapacityLimiter
    ) -> list[np.ndarray | RequestRejected]:
        """Each image file as uint8 ``[3, crop, crop]``, or why it is refused; decoded concurrently."""
        decoded: list[np.ndarray | RequestRejected] = [RequestRejected("not decoded")] * len(images)

        async def one(index: int, data: bytes) -> None:
            decoded[index] = await self._decode_one(data, limiter)

        async with anyio.create_task_group() as group:
            for index, data in enumerate(images):
                group.start_soon(one, index, data)
        return decoded

    async def decode_all(self, images: Sequence[bytes], limiter: anyio.CapacityLimiter) -> np.ndarray:
        """Image files as uint8 ``[N, 3, crop, crop]``; the first that fails refuses the whole request."""
        decoded = await self.decode_each(images, limiter)
        for index, image in enumerate(decoded):
            if isinstance(image, RequestRejected):
                raise RequestRejected(f'input "image" element {index}: {image}', image.status)
        return np.stack(decoded)

    async def logits(self, pixels: np.ndarray) -> np.ndarray:
        """Logits of uint8 ``[N, 3, crop, crop]`` through the batching queue (a 503 when it is overloaded)."""
        step = self.settings.max_batch_size
        chunks = [pixels[start : start + step] for start in range(0, len(pixels), step)]
        started = time.perf_counter()
        try:
            return np.concatenate(await asyncio.gather(*(self._enqueue(chunk) for chunk in chunks)))
        except Overloaded as overloaded:
            raise RequestRejected(str(overloaded), HTTPStatus.SERVICE_UNAVAILABLE) from None
        finally:
            self.stats.waited(time.perf_counter() - started)

    async def _run_queued_batch(self, items: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The dispatcher's callback: one run for the queued items (each ``[n, 3, crop, crop]``), off the loop."""
        # the dispatcher runs one batch at a time, so one thread at a time runs this classifier
        logits = await anyio.to_thread.run_sync(self._logits, np.concatenate(items), len(items))
        bounds = np.cumsum([len(item) for item in items])[:-1]
        return np.split(logits, bounds)

    def _logits(self, images: np.ndarray, requests: int) -> np.ndarray:
        """The classifier on uint8 ``[N, 3, crop, crop]``, timed and counted for /info, /metrics and /v2 stats."""
        started = time.perf_counter()
        logits = self.model.logits(images).astype(np.float32, copy=False)
        seconds = time.perf_counter() - started
        with self._lock:
            self.seconds["run"] += seconds
            self.batch_sizes[len(images)] = self.batch_sizes.get(len(images), 0) + 1
        self.stats.ran(len(images), requests, seconds)
        BATCH_SIZE_HISTOGRAM.labels(endpoint="classify", model=self.name).observe(len(images))
        return logits
