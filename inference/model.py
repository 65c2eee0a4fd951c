"""A model file ready to answer: its metadata (``inference.contract``) and a runtime session chosen for it
(``inference.runtimes.choice``), with the classifier's and the detector's calls."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inference.contract import BF16, CLASSIFICATION, DETECTION, INPUT_NAMES, OUTPUT_NAMES, ModelMetadata
from inference.model_files import ModelNotFound, checked_metadata, read_metadata
from inference.precision import verdict
from inference.runtimes import Session, compile_aside, open_session
from inference.runtimes.choice import Plan, plans
from inference.settings import InferenceSettings

PROBE_BATCH = 8  # images per timed run when runtimes compete for an int8 file
PROBE_RUNS = 5  # timed runs each (after two untimed ones); the median decides


@dataclass
class LoadedModel:
    """A model file and the session that runs it; ``reason`` says why this runtime and precision."""

    path: Path
    metadata: ModelMetadata
    session: Session
    reason: str

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        settings: InferenceSettings,
        task: str | None = None,
        use_gpu: bool = True,
        cache_dir: str | os.PathLike | None = None,
    ) -> LoadedModel:
        """Open ``path`` as the settings and the machine say (never on a GPU unless ``use_gpu``); a file that is not
        a resnet-lab model (of ``task``) is a ``ModelNotFound``, a setting that cannot be honoured a
        ``RuntimeUnavailable``. ``cache_dir``: OpenVINO's compiled-model cache (written by the first load of a file,
        imported by the next with the same settings)."""
        path = Path(path)
        metadata = read_metadata(path, task)
        candidates = plans(metadata, settings, use_gpu)
        if len(candidates) == 1:
            plan = candidates[0]
            return cls(path, metadata, open_session(path, plan, settings, use_gpu, cache_dir), plan.reason)
        session, reason = _fastest(path, metadata, candidates, settings, cache_dir)
        return cls(path, metadata, session, reason)

    @classmethod
    def load_aside(
        cls, path: str | os.PathLike, settings: InferenceSettings, task: str | None = None, use_gpu: bool = True
    ) -> LoadedModel:
        """``load`` for a process that is busy answering: reading the file, choosing its runtime, compiling it and a
        probe run happen in the low-priority helper (``inference.runtimes.compile_aside``); this process imports
        the compiled model. A file the helper cannot load is a ``ModelNotFound`` saying why."""
        path = Path(path)
        with tempfile.TemporaryDirectory(prefix="resnet-lab-compiled-") as folder:
            try:
                prepared = compile_aside.helper().prepare(path, task, settings, use_gpu, Path(folder))
            except RuntimeError as error:
                raise ModelNotFound(str(error)) from None
            metadata = checked_metadata(prepared["props"], path, task)
            plan = Plan(prepared["runtime"], prepared["precision"], prepared["reason"])
            return cls(path, metadata, open_session(path, plan, settings, use_gpu, folder), plan.reason)

    def verify(self) -> None:
        """One probe run on a blank input: the outputs must have the contract's shapes and be finite
        (``ModelNotFound`` otherwise)."""
        metadata = self.metadata
        if metadata.task == CLASSIFICATION:
            side = metadata.crop_size
            logits = self.logits(np.zeros((1, 3, side, side), dtype=np.uint8))
            if logits.shape != (1, len(metadata.labels)) or not np.isfinite(logits).all():
                raise ModelNotFound(f"{self.path} gave logits of shape {logits.shape} on a probe image")
        else:
            boxes, scores, _ = self.detect(np.zeros((3, 64, 64), dtype=np.uint8))
            if boxes.ndim != 2 or len(boxes) != len(scores) or not np.isfinite(boxes).all():
                raise ModelNotFound(f"{self.path} gave boxes of shape {boxes.shape} on a probe image")

    @property
    def precision(self) -> str:
        """The precision it runs in: fp32, bf16 or int8."""
        return self.session.precision

    def describe(self) -> dict[str, Any]:
        """What runs it and why, and the file's recorded bf16 check with its verdict."""
        entry = self.metadata.check(BF16)
        check = None if entry is None else {**entry, "verdict": verdict(entry, self.metadata.task)[1]}
        return {**self.session.describe(), "reason": self.reason, "bf16_check": check}

    def logits(self, images: np.ndarray) -> np.ndarray:
        """Classifier: uint8 ``[N, 3, crop, crop]`` -> float32 ``[N, num_classes]``."""
        return self.session.run(OUTPUT_NAMES[CLASSIFICATION], {INPUT_NAMES[CLASSIFICATION]: images})[0]

    def detect(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Detector: uint8 ``[3, H, W]`` -> boxes ``[K, 4]`` in input pixels, scores ``[K]``, COCO ids ``[K]``."""
        boxes, scores, labels = self.session.run(OUTPUT_NAMES[DETECTION], {INPUT_NAMES[DETECTION]: image})
        return boxes, scores, labels


def _median_seconds(session: Session, probe: np.ndarray) -> float:
    feeds = {INPUT_NAMES[CLASSIFICATION]: probe}
    for _ in range(2):
        session.run(OUTPUT_NAMES[CLASSIFICATION], feeds)
    times = []
    for _ in range(PROBE_RUNS):
        started = time.perf_counter()
        session.run(OUTPUT_NAMES[CLASSIFICATION], feeds)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _fastest(
    path: Path, metadata: ModelMetadata, candidates: list[Plan], settings: InferenceSettings, cache_dir: str | None
) -> tuple[Session, str]:
    """Each candidate's session timed on a batch of ``PROBE_BATCH`` images; the faster one and the timings."""
    side = metadata.crop_size
    probe = np.random.default_rng(0).integers(0, 256, (PROBE_BATCH, 3, side, side), dtype=np.uint8)
    timed = []
    for plan in candidates:
        session = open_session(path, plan, settings, cache_dir=cache_dir)
        timed.append((_median_seconds(session, probe), plan, session))
    timed.sort(key=lambda entry: entry[0])
    (best, plan, session), rest = timed[0], timed[1:]
    others = ", ".join(f"{other.runtime} {1000 * seconds:.1f} ms" for seconds, other, _ in rest)
    measured = f"{plan.runtime} {1000 * best:.1f} ms vs {others} per batch of {PROBE_BATCH}"
    return session, f"{plan.reason}: {measured}"
