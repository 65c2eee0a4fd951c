"""COCO bbox evaluation: run a detector checkpoint on a split, or score an existing results JSON.

    python detection/eval_coco.py --checkpoint runs/det_r50/checkpoint.pt --coco-root ../shared/data/coco \\
        --split val2017 --output-dir runs/det_r50/eval
    python detection/eval_coco.py --results-json detections.json --ann-file instances_val2017.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python detection/eval_coco.py`: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from tqdm import tqdm  # noqa: E402

from detection.checkpoint import detector_from_checkpoint, load_detection_checkpoint  # noqa: E402
from detection.coco_eval import (  # noqa: E402
    BACKENDS,
    evaluate,
    load_ground_truth,
    read_results,
    write_metrics,
)
from detection.data import CategoryMap, CocoDetectionDataset, collate  # noqa: E402
from detection.model import set_test_size  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line: either --checkpoint with --coco-root, or --results-json with --ann-file."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--checkpoint", help="detection checkpoint written by detection/train.py")
    parser.add_argument("--coco-root", default=os.environ.get("RESNET_LAB_COCO"), help="COCO folder (standard layout)")
    parser.add_argument("--split", default="val2017", help="annotations/instances_<split>.json and <split>/")
    parser.add_argument("--results-json", help="evaluate this COCO results file instead of running a model")
    parser.add_argument("--ann-file", help="ground truth for --results-json")
    parser.add_argument("--output-dir", default=None, help="where detections.json and metrics.json go")
    parser.add_argument("--max-images", type=int, default=None, help="evaluate the first N images only")
    parser.add_argument("--min-size", type=int, default=None, help="test shorter side (default: recipe)")
    parser.add_argument("--max-size", type=int, default=None, help="test longest side cap (default: recipe)")
    parser.add_argument("--proposals", type=int, default=None, help="RPN proposals kept per image (default: recipe)")
    parser.add_argument("--score-threshold", type=float, default=0.05, help="drop detections scoring less")
    parser.add_argument("--batch-size", type=int, default=1, help="images per forward pass")
    parser.add_argument("--workers", type=int, default=2, help="data loading processes")
    parser.add_argument("--backend", default="pycocotools", choices=BACKENDS, help="COCOeval implementation")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    args = parser.parse_args(argv)
    if bool(args.checkpoint) == bool(args.results_json):
        parser.error("give either --checkpoint (with --coco-root) or --results-json (with --ann-file)")
    if args.results_json and not args.ann_file:
        parser.error("--results-json needs --ann-file (the ground-truth instances_<split>.json)")
    if args.checkpoint and not args.coco_root:
        parser.error("--checkpoint needs --coco-root")
    return args


def to_coco_results(outputs: list[dict[str, torch.Tensor]], image_ids: list[int], categories: CategoryMap) -> list:
    """Detector outputs (xyxy, contiguous labels) -> COCO results (xywh, original category ids)."""
    results = []
    for output, image_id in zip(outputs, image_ids, strict=True):
        boxes = output["boxes"].tolist()
        for (x1, y1, x2, y2), label, score in zip(
            boxes, output["labels"].tolist(), output["scores"].tolist(), strict=True
        ):
            results.append(
                {
                    "image_id": int(image_id),
                    "category_id": categories.to_category_id(int(label)),
                    "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                    "score": round(float(score), 5),
                }
            )
    return results


@torch.no_grad()
def detect(args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[int], Path]:
    """Run the checkpoint's detector over the split; returns (results, evaluated image ids, ann file)."""
    state = load_detection_checkpoint(args.checkpoint)
    model, recipe = detector_from_checkpoint(state)
    if args.proposals:
        model.rpn._post_nms_top_n["testing"] = args.proposals
    model.roi_heads.score_thresh = args.score_threshold
    set_test_size(model, args.min_size or recipe.min_size_test, args.max_size or recipe.max_size)
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_flush_denormal(True)
    model.to(device).eval()
    dataset = CocoDetectionDataset(args.coco_root, args.split)
    if dataset.categories.category_ids != [int(value) for value in state["category_ids"]]:
        raise SystemExit(f"{args.checkpoint} was trained on other categories than {args.coco_root}/{args.split}")
    if args.max_images:
        dataset.subset(args.max_images)
    loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers, collate_fn=collate)
    results: list[dict[str, Any]] = []
    for images, targets in tqdm(loader, desc="detect", unit="batch"):
        outputs = model([image.to(device) for image in images])
        image_ids = [target["image_id"] for target in targets]
        results += to_coco_results([{k: v.cpu() for k, v in o.items()} for o in outputs], image_ids, dataset.categories)
    return results, list(dataset.image_ids), dataset.paths.ann_file


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Evaluate; prints the standard summary, writes detections.json and metrics.json, returns the metrics."""
    args = parse_args(argv)
    output_dir = Path(args.output_dir) if args.output_dir else None
    if args.results_json:
        results, image_ids = read_results(args.results_json), None
        coco_gt = load_ground_truth(args.ann_file, args.backend)
    else:
        results, image_ids, ann_file = detect(args)
        coco_gt = load_ground_truth(ann_file, args.backend)
        if output_dir:
            output_dir.mkdir(parents=True, exist_ok=True)
            (output_dir / "detections.json").write_text(json.dumps(results))
    metrics, summary = evaluate(coco_gt, results, image_ids, args.backend)
    print(summary, end="")
    if output_dir:
        print(f"wrote {write_metrics(metrics, output_dir / 'metrics.json')}")
    return metrics


if __name__ == "__main__":
    main()
