"""The JSON answers of ``/classify`` and ``/detect``, from model outputs: one definition for the service and for
offline jobs that must answer exactly as it does."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

# The answers' options and their defaults, for /classify and /detect and for offline jobs alike.
DEFAULT_TOP_K = 5
DEFAULT_SCORE_THRESHOLD = 0.5  # /detect's default; the graph's own threshold still applies
DEFAULT_MAX_DETECTIONS = 100
MAX_DETECTIONS = 1000  # the most detections an answer may ask for, whatever the graph's own cap
EVAL_SCORE_THRESHOLD = 0.05  # COCO practice: what an exported graph keeps by default and eval_coco.py scores


def softmax_top_k(logits: np.ndarray, k: int) -> list[tuple[int, float]]:
    """Top-``k`` (index, probability) pairs of one logit row, highest first, softmax in float64."""
    values = np.asarray(logits, dtype=np.float64)
    probabilities = np.exp(values - values.max())
    probabilities /= probabilities.sum()
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [(int(index), float(probabilities[index])) for index in order]


def classification(model: str, labels: Sequence[str], logits: np.ndarray, top_k: int) -> dict[str, Any]:
    """``/classify``'s answer for one image's logit row: the ``top_k`` most likely classes."""
    predictions = [
        {"index": index, "label": labels[index], "score": score} for index, score in softmax_top_k(logits, top_k)
    ]
    return {"model": model, "predictions": predictions}


def detections(
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    names: Mapping[int, str],
    score_threshold: float,
    max_detections: int,
) -> list[dict[str, Any]]:
    """Detections at or above ``score_threshold``, best first, at most ``max_detections``."""
    order = [index for index in np.argsort(-scores, kind="stable") if scores[index] >= score_threshold]
    return [
        {
            "box": [float(value) for value in boxes[index]],
            "category_id": int(labels[index]),
            "label": names.get(int(labels[index]), str(int(labels[index]))),
            "score": float(scores[index]),
        }
        for index in order[:max_detections]
    ]


def detection(model: str, image_size: Sequence[int], found: list[dict[str, Any]]) -> dict[str, Any]:
    """``/detect``'s answer: the image's (width, height) as displayed and its detections."""
    return {"model": model, "image_size": list(image_size), "detections": found}
