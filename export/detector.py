"""Export a detector to one self-contained ONNX file (``python -m export --checkpoint RUN/... --output F``, or
``--torchvision-state-dict FILE --arch fasterrcnn_resnet50_fpn``: ``export.torchvision_detector``).

The graph takes ``image``: one uint8 RGB ``[3, H, W]`` of any size (the decoded upload) and returns ``boxes``
(x1, y1, x2, y2 in the input's pixels), ``scores`` and ``labels`` (COCO category ids); resizing to the recipe's test
scale, normalisation, RPN, RoI heads and NMS are inside (``export.detector_graph``), with each BatchNorm folded into
the convolution before it. Metadata (``task=detection``, categories, test scale, score threshold, NMS settings,
detection cap, recipe, metrics, source hash; ``inference.contract``) rides in ``metadata_props``. Before anything is
written, ONNX Runtime is checked against PyTorch on real COCO images (a mismatch raises without writing) and, where
the CPU has bf16 units, OpenVINO's bf16 answers against fp32's (recorded in the file: ``inference.precision``). With
``Destination.register`` the file is then added to the BentoML model store.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import torch

from detection.checkpoint import FORMAT as DETECTION_FORMAT
from detection.checkpoint import detector_from_checkpoint
from detection.recipes import DetectionRecipe
from export.detector_graph import export_detector_onnx, onnx_ready
from export.detector_parity import check_onnx_parity
from export.onnx_file import Destination, Verification, sha256_of, to_jsonable, with_metadata, write_and_register
from export.precision_check import bf16_checked, bf16_summary
from inference import imaging
from inference.answers import EVAL_SCORE_THRESHOLD
from inference.contract import DETECTION, Key, ModelMetadata
from toolkit import data_folder
from toolkit.errors import UsageError

SCORE_THRESHOLD = EVAL_SCORE_THRESHOLD  # what COCO evaluation keeps; the service filters further


@dataclass(frozen=True)
class DetectorOptions:
    """What the graph bakes in: the score threshold, the test scale (None: the recipe's), folded BatchNorm."""

    score_threshold: float = SCORE_THRESHOLD
    min_size_test: int | None = None
    max_size: int | None = None
    fold_batchnorm: bool = True


def is_detection_checkpoint(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a detection checkpoint (its ``format``); False for anything else, missing files included."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # the classifier exporter names the problem with the file
        return False
    return isinstance(state, dict) and state.get("format") == DETECTION_FORMAT


def metadata_for(
    state: dict[str, Any],
    model: torch.nn.Module,
    recipe: DetectionRecipe,
    source_sha256: str,
    score_threshold: float,
    sizes: dict[str, int],
) -> ModelMetadata:
    """What the file carries: categories, test scale, thresholds and NMS settings, recipe, metrics, source hash."""
    categories = [
        {"id": int(category_id), "name": str(name)}
        for category_id, name in zip(state["category_ids"], state["category_names"], strict=True)
    ]
    nms = {
        "box_nms_thresh": model.roi_heads.nms_thresh,
        "rpn_nms_thresh": model.rpn.nms_thresh,
        "rpn_post_nms_top_n_test": recipe.rpn_post_nms_top_n_test,
        "detections_per_img": recipe.box_detections_per_img,
    }
    extra = {
        Key.TEST_SCALE: json.dumps(sizes),
        Key.SCORE_THRESHOLD: str(score_threshold),
        Key.NMS: json.dumps(nms),
        Key.RECIPE: json.dumps(recipe.to_dict()),
        Key.METRICS: json.dumps(to_jsonable(state.get("metrics") or [])),
    }
    if state.get("weights"):
        extra[Key.WEIGHTS] = json.dumps(state["weights"])
    name = f"faster_rcnn_{state['arch']}_{recipe.design}"
    return ModelMetadata(DETECTION, name, source_sha256, categories=categories, extra=extra)


def verification_images(verify_dir: str | os.PathLike | None, count: int) -> tuple[list[torch.Tensor], str]:
    """Real uint8 ``[3, H, W]`` images, decoded by the core's loader, and where they came from: --verify-images,
    else the data folder's COCO val2017 photos, else the photos shipped in tests/data."""
    if verify_dir:
        files, where = data_folder.image_files(verify_dir, count), f"images of {verify_dir}"
        if not files:
            raise UsageError(f"no images to verify the export with under {verify_dir}; pass --verify-images DIR")
        where = f"{len(files)} {where}"
    else:
        files, where = data_folder.real_photos("coco_val", count)
    return [torch.from_numpy(imaging.to_chw(imaging.load_rgb(path))) for path in files], where


def verify(model_bytes: bytes, wrapper: torch.nn.Module, images: list[torch.Tensor]) -> dict[str, Any]:
    """ORT vs PyTorch: every PyTorch detection over the threshold has an ORT twin (same label, IoU >= ``IOU_MIN``,
    score within ``SCORE_TOLERANCE``) and none is extra, but for those kept or dropped at a threshold and a few that
    float rounding moves (``export.detector_parity``); UsageError naming what differed otherwise."""
    reports = check_onnx_parity(model_bytes, wrapper, images)
    failed = [report for report in reports if not report["ok"]]
    if failed:
        worst = ", ".join(
            f"{report['hw'][1]}x{report['hw'][0]}: {report['missing']} missing, {report['extra']} extra of "
            f"{report['torch']}"
            for report in failed[:3]
        )
        raise UsageError(
            f"ONNX verification FAILED on {len(failed)} of {len(reports)} real images ({worst}). Nothing was written."
        )
    return {
        "images": len(reports),
        "detections": sum(report["matched"] for report in reports),
        "min_iou": min(report["min_iou"] for report in reports),
        "max_score_diff": max(report["max_score_diff"] for report in reports),
        "borderline": sum(report["borderline"] for report in reports),
        "unmatched": sum(report["missing"] + report["extra"] for report in reports),
    }


def export_detector(
    state: dict[str, Any],
    source: str | os.PathLike,
    destination: Destination,
    verification: Verification | None = None,
    options: DetectorOptions | None = None,
) -> dict[str, Any]:
    """Export the detector of checkpoint ``state`` (read from the file ``source``), verify it on real images, write
    atomically, register; returns a small report. None: ``Verification()``, ``DetectorOptions()``."""
    verification, options = verification or Verification(), options or DetectorOptions()
    torch.set_flush_denormal(True)
    model, recipe = detector_from_checkpoint(state)
    sizes = {"min_size": options.min_size_test or recipe.min_size_test, "max_size": options.max_size or recipe.max_size}
    category_ids = [int(value) for value in state["category_ids"]]
    metadata = metadata_for(state, model, recipe, sha256_of(source), options.score_threshold, sizes)
    wrapper = onnx_ready(model, recipe, category_ids, options.score_threshold, **sizes, fold=options.fold_batchnorm)
    model_bytes = export_detector_onnx(wrapper)
    images, images_from = verification_images(verification.images, verification.count)
    check = {**verify(model_bytes, wrapper, images), "images_from": images_from}
    metadata, bf16 = bf16_checked(model_bytes, metadata, [image.numpy() for image in images], images_from)
    model_bytes = with_metadata(model_bytes, metadata)
    return {"verify": check, "bf16_check": bf16, **write_and_register(model_bytes, metadata, destination)}


def summary(report: dict[str, Any]) -> str:
    """What ``python -m export`` prints after a detector export."""
    check = report["verify"]
    lines = [
        f"wrote {report['output']} ({report['bytes'] / 1e6:.1f} MB); ORT vs PyTorch on {check['images_from']}: "
        f"{check['detections']} detections matched (IoU >= {check['min_iou']:.5f}, |score diff| <= "
        f"{check['max_score_diff']:.1e}; on one side only: {check['borderline']} at a threshold, "
        f"{check['unmatched']} others)"
    ]
    if not check["detections"]:  # an empty comparison proves little: say so rather than pass quietly
        lines.append(
            "note: no detection scored above 0.05 on these images, so only empty outputs were compared; "
            "pass --verify-images DIR with images the detector finds objects in"
        )
    lines.append(bf16_summary(report["bf16_check"], DETECTION))
    return "\n".join(lines)
