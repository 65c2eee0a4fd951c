"""COCO bbox evaluation of a detector checkpoint, an exported ONNX file, a running server, or a results JSON.

    python detection/eval_coco.py --checkpoint runs/det/checkpoints/last.pt --coco-root ../shared/data/coco \\
        --split val2017 --output-dir runs/det/eval
    python detection/eval_coco.py --onnx detector.onnx --coco-root ../shared/data/coco --split val2017
    python detection/eval_coco.py --onnx detector.onnx --ray --address auto --coco-root /data/coco --split val2017
    python detection/eval_coco.py --server http://127.0.0.1:3000 --coco-root ../shared/data/coco --split val2017
    python detection/eval_coco.py --results-json detections.json --ann-file instances_val2017.json

The first four read the split with the same loader and score with the same COCOeval. ``--onnx`` runs the file on
the runtime and in the precision the server would pick (``RESNET_LAB_RUNTIME``, ``RESNET_LAB_PRECISION``).
``--ray`` shards the images of ``--onnx`` across a Ray cluster (``batch``: decode tasks and an actor pool of
model sessions; without ``--address``, a local Ray on this machine); the results are merged here and scored exactly
as one process does.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from detection.checkpoint import detector_from_checkpoint, load_detection_checkpoint
from detection.coco_eval import BACKENDS, evaluate, known_categories, load_ground_truth, read_results, write_metrics
from detection.data import CategoryMap, CocoDetectionDataset
from detection.model import set_test_size
from detection.predict import detect
from detection.served import detect_onnx, detect_ray, detect_server
from detection.settings import COCO_ENV, RayOptions, add_coco_root_argument
from inference.answers import EVAL_SCORE_THRESHOLD
from inference.settings import InferenceSettings
from toolkit import cli
from toolkit.atomic import atomic_write_text
from training import distributed


def build_parser() -> argparse.ArgumentParser:
    """Command line: either --checkpoint with --coco-root, or --results-json with --ann-file."""
    parser = argparse.ArgumentParser(
        prog="python detection/eval_coco.py", description=__doc__, formatter_class=cli.HelpFormatter
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", help="detection checkpoint written by detection.train (PyTorch)")
    source.add_argument("--onnx", type=Path, help="detector exported by `python -m export` (ONNX Runtime)")
    source.add_argument("--server", help="URL of a running service: every image goes to its POST /detect")
    source.add_argument("--results-json", help="evaluate this COCO results file instead of running a model")
    add_coco_root_argument(parser)
    parser.add_argument("--split", default="val2017", help="annotations/instances_<split>.json and <split>/")
    parser.add_argument("--ann-file", help="ground truth for --results-json")
    parser.add_argument("--output-dir", type=Path, help="where detections.json and metrics.json go")
    cli.add_eval_arguments(parser)
    parser.add_argument("--min-size-test", type=int, help="--checkpoint: test shorter side (default: the recipe's)")
    parser.add_argument("--max-size", type=int, help="--checkpoint: test longest side cap (default: the recipe's)")
    parser.add_argument(
        "--rpn-post-nms-top-n-test", type=int, help="--checkpoint: RPN proposals per image (default: the recipe's)"
    )
    parser.add_argument("--score-threshold", type=float, help="drop detections scoring less (default: "
                        f"{EVAL_SCORE_THRESHOLD}; --server: "
                        "0, so the answers hold all that the graph's own baked-in threshold kept)")  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=1, help="images per forward pass")
    parser.add_argument("--concurrency", type=int, default=4, help="--server: uploads in flight")
    parser.add_argument("--backend", default="pycocotools", choices=BACKENDS, help="COCOeval implementation")
    cli.add_device_arguments(parser)
    ray = parser.add_argument_group("--onnx on Ray (pip install 'resnet-lab[batch]')")
    ray.add_argument("--ray", action="store_true", help="shard the images across a Ray cluster")
    ray.add_argument("--address", default="", help="auto, HOST:PORT or ray://HOST:10001 (default: a local Ray)")
    ray.add_argument("--actors", type=int, help="ORT sessions in the pool (default: as many as the cluster holds)")
    ray.add_argument("--cpus-per-actor", type=float, default=1.0, help="CPUs (ORT threads) of each actor")
    ray.add_argument("--cpus-per-task", type=float, default=1.0, help="CPUs of each image-decoding task")
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse and check that one source of detections is given with what it needs."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not (args.checkpoint or args.onnx or args.server or args.results_json):
        parser.error("give --checkpoint, --onnx or --server (with --coco-root), or --results-json (with --ann-file)")
    if args.results_json and not args.ann_file:
        parser.error("--results-json needs --ann-file (the ground-truth instances_<split>.json)")
    if not args.results_json and not args.coco_root:
        parser.error(f"--checkpoint, --onnx and --server need --coco-root (or {COCO_ENV})")
    if args.ray and not args.onnx:
        parser.error("--ray runs an exported detector: give --onnx FILE (python -m export writes one)")
    return args


def split(coco_root: str | Path, split_name: str, max_images: int | None = None) -> CocoDetectionDataset:
    """The evaluated images: the split, its first ``max_images`` (None: all)."""
    dataset = CocoDetectionDataset(coco_root, split_name)
    return dataset.subset(dataset.image_ids[:max_images])


def run_checkpoint(
    checkpoint: str | Path,
    dataset: CocoDetectionDataset,
    *,
    device: str | None = None,
    batch_size: int = 1,
    workers: int = 0,
    score_threshold: float | None = None,
    min_size_test: int | None = None,
    max_size: int | None = None,
    rpn_post_nms_top_n_test: int | None = None,
) -> list[dict[str, Any]]:
    """Run the checkpoint's detector (PyTorch) over the images; labels map through its own category ids. None keeps
    the recipe's value (score threshold: ``EVAL_SCORE_THRESHOLD``)."""
    state = load_detection_checkpoint(checkpoint)
    model, recipe = detector_from_checkpoint(state)
    if rpn_post_nms_top_n_test:
        model.rpn._post_nms_top_n["testing"] = rpn_post_nms_top_n_test
    model.roi_heads.score_thresh = EVAL_SCORE_THRESHOLD if score_threshold is None else score_threshold
    set_test_size(model, min_size_test or recipe.min_size_test, max_size or recipe.max_size)
    context = distributed.setup(device, fixed_input_sizes=False)
    model.to(context.device).eval()
    categories = CategoryMap([{"id": int(category_id)} for category_id in state["category_ids"]])  # sorted, as trained
    return detect(model, dataset, context, batch_size, workers, progress=True, categories=categories)


def run(args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[int], Path]:
    """Detections of the source the command line chose over the split; (results, evaluated image ids, ann file)."""
    dataset = split(args.coco_root, args.split, args.max_eval_samples)
    inference = InferenceSettings.from_env()  # RESNET_LAB_RUNTIME, RESNET_LAB_PRECISION, ...: as the server
    if args.onnx and args.ray:
        options = RayOptions(args.address, args.actors, args.cpus_per_actor, args.cpus_per_task, inference)
        results = detect_ray(args.onnx, dataset, args.score_threshold, options)
    elif args.onnx:
        results = detect_onnx(args.onnx, dataset, args.score_threshold, inference)
    elif args.server:
        results = detect_server(args.server, dataset, args.score_threshold, args.concurrency)
    else:
        results = run_checkpoint(
            args.checkpoint,
            dataset,
            device=args.device,
            batch_size=args.batch_size,
            workers=args.workers,
            score_threshold=args.score_threshold,
            min_size_test=args.min_size_test,
            max_size=args.max_size,
            rpn_post_nms_top_n_test=args.rpn_post_nms_top_n_test,
        )
    return results, list(dataset.image_ids), dataset.paths.ann_file


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Evaluate; prints the standard summary, writes detections.json and metrics.json, returns the metrics."""
    args = parse_args(argv)
    if args.results_json:
        results, image_ids = read_results(args.results_json), None
        coco_gt = load_ground_truth(args.ann_file, args.backend)
    else:
        results, image_ids, ann_file = run(args)
        coco_gt = load_ground_truth(ann_file, args.backend)
        results, left_out = known_categories(results, coco_gt)
        if left_out:
            print(f"{left_out} detections of categories {ann_file.name} lacks were left out (COCOeval ignores them)")
        if args.output_dir:
            atomic_write_text(args.output_dir / "detections.json", json.dumps(results))
    metrics, summary = evaluate(coco_gt, results, image_ids, args.backend)
    print(summary, end="")
    if args.output_dir:
        print(f"wrote {write_metrics(metrics, args.output_dir / 'metrics.json')}")
    return metrics


if __name__ == "__main__":
    cli.entry_point(main)
