"""The bf16 check at export: where this CPU has bf16 units, OpenVINO's bf16 answers are compared with its fp32 answers
on the export's real verification images and the record goes into the file (``inference.precision``), so the service
may run it in bf16 under ``RESNET_LAB_PRECISION=auto``. Without bf16 units nothing is recorded (the file then runs in
fp32 everywhere) and the summary says how to record it on a machine that has them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from inference import precision
from inference.contract import BF16, CLASSIFICATION, Key, ModelMetadata
from inference.runtimes.hardware import cpu_capabilities, cpu_has_bf16

RECORD_LATER = "python -m export.check_bf16 --model FILE"  # records the check on a CPU with bf16 units


def with_check(metadata: ModelMetadata, name: str, entry: dict[str, Any]) -> ModelMetadata:
    """``metadata`` with the check ``name`` (e.g. ``BF16``) recorded, the file's other checks kept."""
    checks = {**metadata.json_value(Key.CHECKS, {}), name: entry}
    return ModelMetadata(**{**metadata.__dict__, "extra": {**metadata.extra, Key.CHECKS: json.dumps(checks)}})


def bf16_checked(
    model: bytes,
    metadata: ModelMetadata,
    images: np.ndarray | Sequence[np.ndarray],
    images_from: str,
    labels: Sequence[int] | None = None,
) -> tuple[ModelMetadata, dict[str, Any] | None]:
    """``metadata`` with a bf16 record of ``model`` on ``images`` (a classifier's uint8 ``[N, 3, crop, crop]``, with
    their ``labels`` where known; a detector's ``[3, H, W]`` each) and the record; unchanged and None on a CPU without
    bf16 units."""
    if not cpu_has_bf16():
        return metadata, None
    if metadata.task == CLASSIFICATION:
        found = precision.compare_classifier(model, np.asarray(images), labels)
    else:
        found = precision.compare_detector(model, images)
    entry = precision.record(found, metadata.task, images_from)
    return with_check(metadata, BF16, entry), entry


def bf16_summary(entry: dict[str, Any] | None, task: str) -> str:
    """One line on the bf16 check for an export's summary."""
    if entry is None:
        return (
            f"bf16 not checked: this CPU has no bf16 units ({', '.join(cpu_capabilities()) or 'no OpenVINO'}), so "
            f"the file runs in fp32; `{RECORD_LATER}` on a CPU with them records the check"
        )
    passed, because = precision.verdict(entry, task)
    outcome = "passed: the service may run it in bf16" if passed else "did not pass: the service runs it in fp32"
    return f"bf16 vs fp32 (OpenVINO) on {entry['images_from']}: {because}; {outcome}"
