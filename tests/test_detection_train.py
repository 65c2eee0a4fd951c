"""End to end: train on real COCO (loss falls, resume works), evaluate val2017, and learn a shapes dataset."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from detection_fixtures import SHAPE_CATEGORIES, make_shapes_split, write_classifier_checkpoint
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detection import eval_coco, train
from detection.checkpoint import load_detection_checkpoint

REPO_ROOT = Path(__file__).resolve().parents[1]
# Small on purpose (CPU CI): short side 160, RoIAlign 7x7 and 16 sampled RoIs per image keep conv5_x per region cheap.
REAL_DATA_FLAGS = [
    "--batch-size", "2", "--min-size", "160", "--max-size", "256", "--max-train-images", "4", "--warmup-iters", "2",
    "--workers", "0", "--set", "roi_output_size=7", "--set", "box_batch_size_per_image=16",
]  # fmt: skip


def losses(run_dir: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_real_coco_training_loss_falls_resumes_and_val2017_evaluates(tmp_path, data_dir):
    coco = data_dir / "coco"
    write_classifier_checkpoint(tmp_path / "resnet18_cls.pt")
    run = tmp_path / "run"
    common = ["--coco-root", str(coco), "--output-dir", str(run), *REAL_DATA_FLAGS]
    train.main([*common, "--backbone-checkpoint", str(tmp_path / "resnet18_cls.pt"), "--max-iters", "6"])
    first = load_detection_checkpoint(run / "checkpoint.pt")
    assert (
        first["iteration"] == 6
        and first["arch"] == "resnet18"
        and first["image_mean"] == pytest.approx([0.5, 0.4, 0.3])
    )
    assert len(first["category_ids"]) == 80 and first["backbone"].endswith("resnet18_cls.pt")
    train.main([*common, "--resume", "--max-iters", "8"])
    assert load_detection_checkpoint(run / "checkpoint.pt")["iteration"] == 8
    history = losses(run)
    assert len(history) == 8
    assert sum(history[-3:]) / 3 < 0.8 * sum(history[:2]) / 2, history
    assert (run / "loss.png").stat().st_size > 1000

    out = tmp_path / "eval"
    metrics = eval_coco.main(
        ["--checkpoint", str(run / "checkpoint.pt"), "--coco-root", str(coco), "--split", "val2017"]
        + ["--output-dir", str(out), "--min-size", "160", "--max-size", "256", "--proposals", "10", "--workers", "0"]
        + ["--score-threshold", "0"]  # an 8-iteration model scores low: keep its detections so COCOeval has work
    )
    assert json.loads((out / "metrics.json").read_text()) == metrics
    detections = json.loads((out / "detections.json").read_text())
    val = json.loads((coco / "annotations" / "instances_val2017.json").read_text())
    assert {d["image_id"] for d in detections} <= {image["id"] for image in val["images"]}
    assert {d["category_id"] for d in detections} <= {category["id"] for category in val["categories"]}
    assert len({d["image_id"] for d in detections}) >= 40  # detections on most of the 80 images
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(coco / "annotations" / "instances_val2017.json"))
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(str(out / "detections.json")), iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    assert list(metrics.values()) == [float(value) for value in evaluator.stats]


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    make_shapes_split(root, "train2017", num_images=160, seed=0)
    make_shapes_split(root, "val2017", num_images=40, seed=1)
    return root


def test_small_c4_detector_learns_shapes_to_ap50_above_one_half(tmp_path, shapes_root):
    """cifar_resnet20 split C4-style (conv1..stage 2 shared, stage 3 per RoI), from scratch, a few CPU minutes."""
    run = tmp_path / "run"
    torch.manual_seed(0)
    command = [
        sys.executable, "detection/train.py", "--coco-root", str(shapes_root), "--from-scratch",
        "--arch", "cifar_resnet20", "--output-dir", str(run), "--max-iters", "120", "--batch-size", "4",
        "--lr", "0.02", "--warmup-iters", "20", "--min-size", "64", "--max-size", "64", "--workers", "0",
        "--set", "norm=batch", "--set", "trainable_stages=4", "--set", "anchor_sizes=[16,24,32]",
        "--set", "rpn_pre_nms_top_n_train=1000", "--set", "rpn_post_nms_top_n_train=200",
        "--set", "box_batch_size_per_image=16", "--set", "rpn_post_nms_top_n_test=50",
    ]  # fmt: skip
    # as a script from the repo root, the way users run it
    subprocess.run(command, cwd=REPO_ROOT, check=True, capture_output=True, text=True)
    out = tmp_path / "eval"
    subprocess.run(
        [sys.executable, "detection/eval_coco.py", "--checkpoint", str(run / "checkpoint.pt")]
        + ["--coco-root", str(shapes_root), "--output-dir", str(out), "--workers", "0"],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    metrics = json.loads((out / "metrics.json").read_text())
    print(f"shapes AP50 {metrics['AP50']:.3f}, AP {metrics['AP']:.3f}")
    assert metrics["AP50"] >= 0.5, metrics
    # detections use the dataset's sparse category ids, and the numbers are pycocotools' own
    detections = json.loads((out / "detections.json").read_text())
    assert {d["category_id"] for d in detections} <= {c["id"] for c in SHAPE_CATEGORIES}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(shapes_root / "annotations" / "instances_val2017.json"))
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(str(out / "detections.json")), iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    assert list(metrics.values()) == [float(value) for value in evaluator.stats]
