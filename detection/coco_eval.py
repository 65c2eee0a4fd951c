"""COCO bbox evaluation of a results list: input checks, pycocotools (or faster-coco-eval), the 12 numbers."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path
from typing import Any

from toolkit.atomic import atomic_write_text
from toolkit.errors import UsageError

METRIC_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
BACKENDS = ("pycocotools", "faster-coco-eval")


def load_ground_truth(ann_file: str | Path, backend: str = "pycocotools") -> Any:
    """A COCO object for the annotation file, from the chosen backend's own COCO class."""
    ann_file = Path(ann_file)
    if not ann_file.is_file():
        raise UsageError(f"annotation file {ann_file} not found (expected annotations/instances_<split>.json)")
    coco_class = _backend_classes(backend)[0]
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools chats about index creation
        try:
            return coco_class(str(ann_file))
        except (json.JSONDecodeError, UnicodeDecodeError, AssertionError, KeyError, TypeError) as error:
            raise UsageError(f"annotation file {ann_file} is not valid COCO JSON: {error}") from None


def read_results(path: str | Path) -> list[dict[str, Any]]:
    """Read a COCO results JSON file (a list of detections); a malformed file is a ``UsageError`` that says why."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"results file {path} not found")
    try:
        results = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UsageError(f"results file {path} is not valid JSON: {error}") from None
    if not isinstance(results, list):
        raise UsageError(f"results file {path} must hold a JSON list of detections, found {type(results).__name__}")
    return results


def check_results(results: list[dict[str, Any]], coco_gt: Any) -> None:
    """Every detection names a known image and category and has a finite xywh box and a score."""
    image_ids, category_ids = set(coco_gt.getImgIds()), set(coco_gt.getCatIds())
    for index, detection in enumerate(results):
        if not isinstance(detection, dict) or not {"image_id", "category_id", "bbox", "score"} <= detection.keys():
            raise UsageError(f"detection #{index} must be an object with image_id, category_id, bbox, score")
        if detection["image_id"] not in image_ids:
            raise UsageError(
                f"detection #{index} names image_id {detection['image_id']!r}, which the annotation file does not "
                "contain (wrong --ann-file or split?)"
            )
        if detection["category_id"] not in category_ids:
            raise UsageError(
                f"detection #{index} names category_id {detection['category_id']!r}, unknown to the annotation file "
                f"(valid: {sorted(category_ids)[:10]}...; use COCO category ids, not contiguous labels)"
            )
        box = detection["bbox"]
        if not (isinstance(box, list) and len(box) == 4 and all(_finite(value) for value in box)):
            raise UsageError(f"detection #{index} has bbox {box!r}; expected [x, y, width, height] numbers")
        if not _finite(detection["score"]):
            raise UsageError(f"detection #{index} has score {detection['score']!r}; expected a number")


def known_categories(results: list[dict[str, Any]], coco_gt: Any) -> tuple[list[dict[str, Any]], int]:
    """The detections of categories the ground truth has, and how many others were left out. COCOeval scores the
    ground truth's categories only, so a model with more (torchvision's 91 slots, ten unused) loses nothing by it."""
    known = set(coco_gt.getCatIds())
    kept = [detection for detection in results if detection.get("category_id") in known]
    return kept, len(results) - len(kept)


def evaluate(
    coco_gt: Any,
    results: list[dict[str, Any]],
    image_ids: list[int] | None = None,
    backend: str = "pycocotools",
) -> tuple[dict[str, float], str]:
    """COCOeval(iouType="bbox") over ``image_ids`` (all by default): the 12 metrics and the printed summary."""
    check_results(results, coco_gt)
    if not results:
        summary = "results list is empty: no detections, so every AP and AR is 0\n"
        return {key: 0.0 for key in METRIC_KEYS}, summary
    _, eval_class = _backend_classes(backend)
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        coco_dt = coco_gt.loadRes(results)
        if backend == "pycocotools":
            evaluator = eval_class(coco_gt, coco_dt, iouType="bbox")
        else:
            evaluator = eval_class(coco_gt, coco_dt, iouType="bbox", print_function=print)
        if image_ids is not None:
            evaluator.params.imgIds = sorted(image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    metrics = {key: float(value) for key, value in zip(METRIC_KEYS, evaluator.stats[:12], strict=True)}
    summary = "\n".join(line for line in output.getvalue().splitlines() if line.strip().startswith("Average")) + "\n"
    return metrics, summary


def write_metrics(metrics: dict[str, float], path: str | Path) -> Path:
    """metrics.json with the 12 standard keys."""
    return atomic_write_text(path, json.dumps(metrics, indent=2) + "\n")


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _backend_classes(backend: str) -> tuple[type, type]:
    if backend == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        return COCO, COCOeval
    if backend == "faster-coco-eval":
        try:
            from faster_coco_eval import COCO, COCOeval_faster
        except ImportError:
            raise UsageError(
                "--backend faster-coco-eval needs the package: pip install 'resnet-lab[detection-fast]' "
                "(or pip install faster-coco-eval)"
            ) from None
        return COCO, COCOeval_faster
    raise UsageError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
