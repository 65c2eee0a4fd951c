"""ONNX Runtime vs PyTorch eager on the same uint8 images: every detection matched by label, IoU and score."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torchvision.ops import box_iou

from export.detector_graph import IMAGE, OUTPUTS, OnnxDetector

Detections = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # boxes [K, 4], scores [K], category ids [K]


def match_detections(
    ref: Detections, got: Detections, score_min: float = 0.05, iou_min: float = 0.99, score_tol: float = 1e-3
) -> dict[str, Any]:
    """Greedy one-to-one match (same label, best IoU), reference by descending score.

    Every reference detection above ``score_min`` needs a partner and no unmatched one may score above it; only
    scores within ``score_tol`` of ``score_min`` are exempt, as the two runtimes may put them on either side of the
    graph's threshold. Tied scores get none: a tie would matter only where NMS or the detection cap chooses between
    equal scores, and a trained detector's scores on real images are distinct.
    """
    ref_boxes, ref_scores, ref_labels = ref
    got_boxes, got_scores, got_labels = got
    iou = box_iou(ref_boxes, got_boxes)  # [R, G], fine when either is empty
    used = torch.zeros(len(got_boxes), dtype=torch.bool)
    ious, score_diffs, box_diffs, missing = [], [], [], 0
    for i in torch.argsort(ref_scores, descending=True).tolist():
        if ref_scores[i] <= score_min - score_tol:
            continue
        candidates = (got_labels == ref_labels[i]) & ~used
        j = int(torch.where(candidates, iou[i], -1.0).argmax()) if candidates.any() else -1
        ok = j >= 0 and iou[i, j] >= iou_min and abs(float(ref_scores[i] - got_scores[j])) <= score_tol
        if ok:
            used[j] = True
            ious.append(float(iou[i, j]))
            score_diffs.append(abs(float(ref_scores[i] - got_scores[j])))
            box_diffs.append(float((ref_boxes[i] - got_boxes[j]).abs().max()))
        elif ref_scores[i] > score_min + score_tol:
            missing += 1
    extra = int(((got_scores > score_min + score_tol) & ~used).sum())
    return {
        "torch": int((ref_scores > score_min).sum()),
        "ort": int((got_scores > score_min).sum()),
        "matched": len(ious),
        "missing": missing,
        "extra": extra,
        "min_iou": min(ious, default=1.0),
        "max_score_diff": max(score_diffs, default=0.0),
        "max_box_diff_px": max(box_diffs, default=0.0),
        "ok": missing == 0 and extra == 0,
    }


@torch.no_grad()
def check_onnx_parity(
    onnx_model: bytes, wrapper: OnnxDetector, images: Iterable[torch.Tensor], **criteria: float
) -> list[dict[str, Any]]:
    """Run each uint8 [3, H, W] image through ORT (CPU) and the eager wrapper; one match report per image."""
    import onnxruntime

    session = onnxruntime.InferenceSession(onnx_model, providers=["CPUExecutionProvider"])
    reports = []
    for image in images:
        ref = wrapper(image)
        got = tuple(torch.from_numpy(np.asarray(a)) for a in session.run(OUTPUTS, {IMAGE: image.numpy()}))
        reports.append({"hw": tuple(image.shape[-2:]), **match_detections(ref, got, **criteria)})
    return reports
