"""Export a detector to one self-contained ONNX file: ``python -m export --checkpoint RUN/... --output F``.

The graph takes ``image``: one uint8 RGB ``[3, H, W]`` of any size (the decoded upload) and returns ``boxes``
(x1, y1, x2, y2 in the input's pixels), ``scores`` and ``labels`` (COCO category ids); resizing to the recipe's test
scale, normalisation, RPN, RoI heads and NMS are inside (``export.detector_graph``). Metadata (``task=detection``,
categories, test scale, score threshold, NMS settings, detection cap, recipe, metrics, source hash;
``service.contract``) rides in ``metadata_props``. Before anything is written, ONNX Runtime is checked against
PyTorch on real COCO images; a mismatch exits without writing. The file is then registered in the BentoML model
store.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import torch

from detection.checkpoint import FORMAT as DETECTION_FORMAT
from detection.checkpoint import detector_from_checkpoint, load_detection_checkpoint
from export.detector_graph import export_detector_onnx, onnx_ready
from export.detector_parity import check_onnx_parity
from export.onnx_file import register_in_store, sha256_of, to_jsonable, with_metadata, write_model
from service import imaging
from service.contract import BENTO_MODEL_NAMES, DETECTION, Key, ModelMetadata
from training import cli, data_folder

SCORE_THRESHOLD = 0.05  # what COCO evaluation keeps (eval_coco.py's default); the service filters further


def is_detection_checkpoint(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a detection checkpoint (its ``format``); False for anything else, missing files included."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # the classifier exporter names the problem with the file
        return False
    return isinstance(state, dict) and state.get("format") == DETECTION_FORMAT


def metadata_for(state: dict[str, Any], path: str | os.PathLike, score_threshold: float, sizes: dict) -> ModelMetadata:
    """What the file carries: categories, test scale, thresholds and NMS settings, recipe, metrics, source hash."""
    model, recipe = detector_from_checkpoint(state)
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
    name = f"faster_rcnn_{state['arch']}_{recipe.design}"
    return ModelMetadata(DETECTION, name, sha256_of(path), categories=categories, extra=extra)


def verification_images(verify_dir: str | os.PathLike | None, count: int) -> list[torch.Tensor]:
    """Real uint8 ``[3, H, W]`` images, decoded by the service's loader: --verify-images, else COCO val2017."""
    files = data_folder.image_files(verify_dir, count) if verify_dir else data_folder.coco_val_files(count)
    if not files:
        where = verify_dir or data_folder.data_dir() / "coco" / "val2017"
        raise SystemExit(f"no images to verify the export with under {where}; pass --verify-images DIR")
    return [torch.from_numpy(imaging.to_chw(imaging.load_rgb(path))) for path in files]


def verify(model_bytes: bytes, wrapper: torch.nn.Module, images: list[torch.Tensor]) -> dict[str, Any]:
    """ORT vs PyTorch: every PyTorch detection over the threshold has an ORT twin (same label, IoU >= 0.99, score
    within 1e-3) and none is extra; SystemExit naming what differed otherwise."""
    reports = check_onnx_parity(model_bytes, wrapper, images)
    failed = [report for report in reports if not report["ok"]]
    if failed:
        worst = ", ".join(
            f"{report['hw'][1]}x{report['hw'][0]}: {report['missing']} missing, {report['extra']} extra of "
            f"{report['torch']}"
            for report in failed[:3]
        )
        raise SystemExit(
            f"ONNX verification FAILED on {len(failed)} of {len(reports)} real images ({worst}). Nothing was written."
        )
    return {
        "images": len(reports),
        "detections": sum(report["matched"] for report in reports),
        "min_iou": min(report["min_iou"] for report in reports),
        "max_score_diff": max(report["max_score_diff"] for report in reports),
    }


def export(args: argparse.Namespace) -> dict[str, Any]:
    """Export, verify on real images, write atomically, register; returns a small report."""
    torch.set_flush_denormal(True)
    state = load_detection_checkpoint(args.checkpoint)
    model, recipe = detector_from_checkpoint(state)
    sizes = {"min_size": args.min_size_test or recipe.min_size_test, "max_size": args.max_size or recipe.max_size}
    category_ids = [int(value) for value in state["category_ids"]]
    metadata = metadata_for(state, args.checkpoint, args.score_threshold, sizes)
    wrapper = onnx_ready(model, recipe, category_ids, args.score_threshold, **sizes)
    model_bytes = with_metadata(export_detector_onnx(wrapper), metadata)
    check = verify(model_bytes, wrapper, verification_images(args.verify_images, args.verify_count))
    output = write_model(model_bytes, args.output)
    report: dict[str, Any] = {"output": str(output), "bytes": len(model_bytes), "verify": check}
    if not args.no_register:
        report["bento_model"] = register_in_store(output, metadata, args.bento_name)
    return report


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__, formatter_class=cli.HelpFormatter)
    parser.add_argument(
        "--checkpoint", required=True, type=Path, help="detection checkpoint written by detection.train"
    )
    parser.add_argument("--output", required=True, type=Path, help="where to write the .onnx file")
    parser.add_argument(
        "--score-threshold", type=float, default=SCORE_THRESHOLD, help="the graph drops detections below"
    )
    parser.add_argument("--min-size-test", type=int, help="shorter side the graph resizes to (default: the recipe's)")
    parser.add_argument("--max-size", type=int, help="longest side cap (default: the recipe's)")
    parser.add_argument("--verify-images", type=Path, help="folder of real images for the ORT-vs-PyTorch check "
                        "(default: the shared COCO val2017 images)")  # fmt: skip
    parser.add_argument("--verify-count", type=int, default=8, help="how many real images to verify on")
    parser.add_argument("--no-register", action="store_true", help="skip the BentoML model store")
    parser.add_argument("--bento-name", default=BENTO_MODEL_NAMES[DETECTION], help="name in the model store")
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """CLI: a detection checkpoint -> a verified, self-contained ONNX file."""
    args = build_parser().parse_args(argv)
    report = export(args)
    check = report["verify"]
    print(
        f"wrote {report['output']} ({report['bytes'] / 1e6:.1f} MB); ORT vs PyTorch on {check['images']} real images: "
        f"{check['detections']} detections matched (IoU >= {check['min_iou']:.5f}, |score diff| <= "
        f"{check['max_score_diff']:.1e})"
    )
    if not check["detections"]:  # an empty comparison proves little: say so rather than pass quietly
        print(
            "note: no detection scored above 0.05 on these images, so only empty outputs were compared; "
            "pass --verify-images DIR with images the detector finds objects in"
        )
    if "bento_model" in report:
        print(f"registered in the BentoML model store as {report['bento_model']} (see `bentoml models list`)")
    return report


if __name__ == "__main__":
    main()
