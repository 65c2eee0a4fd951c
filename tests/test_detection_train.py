"""End to end: train on real COCO (loss falls, resume works), evaluate val2017, and learn a shapes dataset."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detection import eval_coco, train
from detection.checkpoint import load_detection_checkpoint
from tests.helpers import COCO_SMALL_FLAGS, REPO_ROOT, SHAPE_CATEGORIES


def losses(run_dir: Path) -> list[float]:
    return [json.loads(line)["train_loss"] for line in (run_dir / "train_log.jsonl").read_text().splitlines()]


def steps(run_dir: Path, name: str) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / name).read_text().splitlines()]


def test_real_coco_training_loss_falls_resumes_exactly_and_val2017_evaluates(
    tmp_path, coco_train_root, classifier_checkpoint, coco_detector
):
    coco = coco_train_root
    run, straight = tmp_path / "run", coco_detector  # the same 8 iterations, interrupted and resumed / straight
    common = ["--coco-root", str(coco), *COCO_SMALL_FLAGS]
    backbone = ["--backbone-checkpoint", str(classifier_checkpoint)]
    # 8 iterations (2 per epoch), interrupted after 6, then resumed; beside the same 8 run straight
    train.main([*common, *backbone, "--output-dir", str(run), "--stop-after-epochs", "3"])
    first = load_detection_checkpoint(run / "checkpoints" / "last.pt")
    assert first["step"] == 6 and first["arch"] == "resnet18" and first["image_mean"] == pytest.approx([0.5, 0.4, 0.3])
    assert len(first["category_ids"]) == 80 and first["backbone"].endswith("resnet18_cls.pt")
    older = tmp_path / "step6.pt"
    shutil.copyfile(run / "checkpoints" / "last.pt", older)
    train.main([*common, "--output-dir", str(run), "--resume"])
    resumed = load_detection_checkpoint(run / "checkpoints" / "last.pt")
    reference = load_detection_checkpoint(straight / "checkpoints" / "last.pt")
    assert resumed["step"] == reference["step"] == 8
    for key, value in reference["model"].items():  # optimizer momentum, schedule and RNGs were all restored
        assert torch.equal(resumed["model"][key], value), key
    assert resumed["scheduler"] == reference["scheduler"]
    # resuming from an older checkpoint again rewrites the logs from there: no row twice
    shutil.copyfile(older, run / "checkpoints" / "last.pt")
    train.main(["--output-dir", str(run), "--resume"])  # --resume alone: the run's own options, recorded at its start
    assert steps(run, "metrics.jsonl") == [2, 4, 6, 8] and steps(run, "train_log.jsonl") == list(range(1, 9))
    history = losses(run)
    assert history == losses(straight)
    assert sum(history[-3:]) / 3 < 0.8 * sum(history[:2]) / 2, history
    assert (run / "loss.png").stat().st_size > 1000

    out = tmp_path / "eval"
    metrics = eval_coco.main(
        ["--checkpoint", str(run / "checkpoints" / "last.pt"), "--coco-root", str(coco), "--split", "val2017"]
        + ["--output-dir", str(out), "--min-size-test", "160", "--max-size", "256", "--workers", "0"]
        + ["--rpn-post-nms-top-n-test", "10"]
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


def test_small_c4_detector_learns_shapes_to_ap50_above_one_half(tmp_path, shapes_root, shapes_detector):
    """cifar_resnet20 split C4-style (conv1..stage 2 shared, stage 3 per RoI), from scratch, a few CPU minutes."""
    run = shapes_detector
    out = tmp_path / "eval"
    subprocess.run(
        [sys.executable, "detection/eval_coco.py", "--checkpoint", str(run / "checkpoints" / "last.pt")]
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
