"""Checked answers: a file runs in a faster precision (bf16) only where its answers in that precision were compared
with fp32's on real images, the comparison recorded in the file (``Key.CHECKS``) and meeting the bar stated here.

A classifier's check is top-1 agreement with fp32 (and the error of both where the images have labels); a
detector's, how many of fp32's detections bf16 finds (same category, IoU at least ``DETECTION_IOU``) and how far
their scores move. ``compare`` makes the record, ``verdict`` says whether a record clears the bar, and why.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from inference.answers import DEFAULT_SCORE_THRESHOLD
from inference.contract import BF16, CLASSIFICATION, DETECTION, FP32, INPUT_NAMES, OUTPUT_NAMES, ModelMetadata
from inference.runtimes.hardware import cpu_name
from inference.runtimes.openvino_runtime import OpenVinoSession
from inference.settings import InferenceSettings

MIN_AGREEMENT = 0.99  # classifier: bf16's top-1 equals fp32's on at least this share of the images
MIN_MATCHED = 0.97  # detector: bf16 finds at least this share of fp32's confident detections ...
DETECTION_IOU = 0.9  # ... each with the same category and at least this IoU
MAX_SCORE_DIFF = 0.05  # and no matched score moves by more than this
BATCH = 64  # images per run while comparing


def _classifier_logits(session: OpenVinoSession, images: np.ndarray) -> np.ndarray:
    (logits,) = OUTPUT_NAMES[CLASSIFICATION]
    runs = [
        session.run([logits], {INPUT_NAMES[CLASSIFICATION]: images[i : i + BATCH]})[0]
        for i in range(0, len(images), BATCH)
    ]
    return np.concatenate(runs)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one ``[4]`` box with each of ``[K, 4]`` boxes (x1, y1, x2, y2)."""
    left, top = np.maximum(box[0], boxes[:, 0]), np.maximum(box[1], boxes[:, 1])
    right, bottom = np.minimum(box[2], boxes[:, 2]), np.minimum(box[3], boxes[:, 3])
    inter = np.clip(right - left, 0, None) * np.clip(bottom - top, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def compare_classifier(
    model: str | os.PathLike | bytes, images: np.ndarray, labels: Sequence[int] | None = None
) -> dict[str, Any]:
    """bf16 against fp32 (both OpenVINO) on uint8 ``[N, 3, crop, crop]`` images: top-1 agreement, and each one's
    error where ``labels`` are given."""
    settings = InferenceSettings(runtime="openvino")
    fp32 = _classifier_logits(OpenVinoSession(model, settings, FP32), images).argmax(1)
    bf16 = _classifier_logits(OpenVinoSession(model, settings, BF16), images).argmax(1)
    found: dict[str, Any] = {"images": len(images), "top1_agreement": float((fp32 == bf16).mean())}
    if labels is not None:
        truth = np.asarray(labels)
        found |= {"error_fp32": float((fp32 != truth).mean()), "error_bf16": float((bf16 != truth).mean())}
    return found


def compare_detector(model: str | os.PathLike | bytes, images: Sequence[np.ndarray]) -> dict[str, Any]:
    """bf16 against fp32 (both OpenVINO) on uint8 ``[3, H, W]`` images: of fp32's detections scoring at least
    ``DEFAULT_SCORE_THRESHOLD`` (what /detect answers by default), the share bf16 finds with the same category and
    IoU >= ``DETECTION_IOU``, and the largest score change among them."""
    settings = InferenceSettings(runtime="openvino")
    sessions = [OpenVinoSession(model, settings, precision) for precision in (FP32, BF16)]
    names, feed = OUTPUT_NAMES[DETECTION], INPUT_NAMES[DETECTION]
    confident = matched = 0
    largest = 0.0
    for image in images:
        (boxes, scores, labels), (other_boxes, other_scores, other_labels) = (
            session.run(names, {feed: image}) for session in sessions
        )
        for box, score, label in zip(boxes, scores, labels, strict=True):
            if score < DEFAULT_SCORE_THRESHOLD:
                continue
            confident += 1
            same = (other_labels == label) & (_iou(box, other_boxes) >= DETECTION_IOU) if len(other_boxes) else []
            if np.any(same):
                matched += 1
                largest = max(largest, float(np.min(np.abs(other_scores[same] - score))))
    return {
        "images": len(images),
        "detections": confident,
        "matched": matched / confident if confident else 1.0,
        "max_score_diff": largest,
    }


def record(found: dict[str, Any], task: str, images_from: str) -> dict[str, Any]:
    """A comparison as the file keeps it: what was measured, on what, where, when, the bar and the verdict."""
    import openvino

    entry = {
        **found,
        "images_from": images_from,
        "runtime": f"openvino {openvino.get_version().split('-')[0]}",
        "cpu": cpu_name(),
        "date": datetime.date.today().isoformat(),
        "bar": bar(task),
    }
    entry["passed"] = verdict(entry, task)[0]
    return entry


def bar(task: str) -> str:
    """The bar a check must clear, in words."""
    if task == CLASSIFICATION:
        return f"top-1 agreement >= {MIN_AGREEMENT:.0%}"
    return (
        f"matched >= {MIN_MATCHED:.0%} of fp32's detections scoring >= {DEFAULT_SCORE_THRESHOLD} (same category, "
        f"IoU >= {DETECTION_IOU}), score change <= {MAX_SCORE_DIFF}"
    )


def verdict(entry: dict[str, Any] | None, task: str) -> tuple[bool, str]:
    """Whether a recorded check clears the bar, and the reason in a few words."""
    if entry is None:
        return False, "the file records no bf16 check"
    images = f"{entry['images']:,} images"
    if task == CLASSIFICATION:
        agreement = entry["top1_agreement"]
        passed = agreement >= MIN_AGREEMENT
        return passed, f"top-1 = fp32's on {agreement:.2%} of {images} ({'>=' if passed else '<'} {MIN_AGREEMENT:.0%})"
    if not entry["detections"]:
        return False, f"fp32 made no detection scoring >= {DEFAULT_SCORE_THRESHOLD} on {images}: nothing was compared"
    matched, moved = entry["matched"], entry["max_score_diff"]
    passed = matched >= MIN_MATCHED and moved <= MAX_SCORE_DIFF
    return passed, (
        f"{matched:.1%} of fp32's {entry['detections']} confident detections on {images} found, scores moved "
        f"<= {moved:.3f} ({'clears' if passed else 'misses'} the bar: {bar(task)})"
    )


def recorded(metadata: ModelMetadata) -> tuple[bool, str]:
    """``verdict`` of the file's own bf16 record."""
    return verdict(metadata.check(BF16), metadata.task)
