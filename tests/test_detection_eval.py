"""COCO evaluation on the real subset: ground truth gives 1.0, shifted boxes less, CLI == COCOeval, bad input."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detection import eval_coco
from detection.coco_eval import METRIC_KEYS
from tests.helpers import REPO_ROOT
from toolkit.errors import UsageError


@pytest.fixture(scope="module")
def val_ann_file(coco_val_root: Path) -> Path:
    return coco_val_root / "annotations" / "instances_val2017.json"


@pytest.fixture(scope="module")
def ground_truth_as_detections(val_ann_file: Path) -> list[dict]:
    annotations = json.loads(val_ann_file.read_text())["annotations"]
    return [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
        for a in annotations
        if not a["iscrowd"]
    ]


def shifted(detections: list[dict], fraction: float) -> list[dict]:
    """Every box moved right by ``fraction`` of its width."""
    return [{**d, "bbox": [d["bbox"][0] + fraction * d["bbox"][2], *d["bbox"][1:]]} for d in detections]


def direct_cocoeval(ann_file: Path, results_file: Path) -> list[float]:
    """The 12 stats straight from pycocotools, no project code involved."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(ann_file))
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(str(results_file)), iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return [float(value) for value in evaluator.stats]


def run_cli(tmp_path: Path, results: object, ann_file: Path, *extra: str) -> dict:
    tmp_path.mkdir(parents=True, exist_ok=True)
    results_file = tmp_path / "results.json"
    results_file.write_text(json.dumps(results) if not isinstance(results, str) else results)
    out = tmp_path / "out"
    metrics = eval_coco.main(
        ["--results-json", str(results_file), "--ann-file", str(ann_file), "--output-dir", str(out), *extra]
    )
    assert json.loads((out / "metrics.json").read_text()) == metrics
    return metrics


def test_ground_truth_scores_one_and_matches_direct_cocoeval(
    tmp_path, val_ann_file, ground_truth_as_detections, capsys
):
    metrics = run_cli(tmp_path, ground_truth_as_detections, val_ann_file)
    summary = capsys.readouterr().out
    assert list(metrics) == list(METRIC_KEYS)
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AP50"] == pytest.approx(1.0)
    assert metrics["AR100"] == pytest.approx(1.0)
    assert len([line for line in summary.splitlines() if line.strip().startswith("Average")]) == 12
    assert list(metrics.values()) == direct_cocoeval(val_ann_file, tmp_path / "results.json")


def test_shifted_boxes_score_lower_and_match_direct_cocoeval(tmp_path, val_ann_file, ground_truth_as_detections):
    slight = run_cli(tmp_path / "slight", shifted(ground_truth_as_detections, 0.1), val_ann_file)
    assert list(slight.values()) == direct_cocoeval(val_ann_file, tmp_path / "slight" / "results.json")
    strong = run_cli(tmp_path / "strong", shifted(ground_truth_as_detections, 0.4), val_ann_file)
    assert list(strong.values()) == direct_cocoeval(val_ann_file, tmp_path / "strong" / "results.json")
    assert strong["AP"] < slight["AP"] < 1.0
    assert slight["AP50"] == pytest.approx(1.0, abs=0.02)  # IoU 0.82 with its own box still counts at 0.5
    assert strong["AP50"] < 0.2  # IoU 0.43 with its own box: a hit only where another object overlaps


def test_faster_coco_eval_backend_gives_identical_numbers(tmp_path, val_ann_file, ground_truth_as_detections):
    pytest.importorskip("faster_coco_eval", reason="optional extra resnet-lab[detection-fast]")
    detections = shifted(ground_truth_as_detections, 0.2)
    reference = run_cli(tmp_path / "a", detections, val_ann_file)
    fast = run_cli(tmp_path / "b", detections, val_ann_file, "--backend", "faster-coco-eval")
    assert fast == pytest.approx(reference, abs=1e-9)


def test_empty_results_give_zero_without_crashing(tmp_path, val_ann_file, capsys):
    metrics = run_cli(tmp_path, [], val_ann_file)
    assert metrics == {key: 0.0 for key in METRIC_KEYS}
    assert "empty" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("results", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"image_id": 1}', "must hold a JSON list"),
        ([{"image_id": 123456789, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.9}], "image_id 123456789"),
        ([{"image_id": None, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.9}], "image_id None"),
        ("CATEGORY", "category_id 0"),
        ("BADBOX", "bbox"),
        ([{"image_id": 1}], "must be an object with"),
    ],
)
def test_bad_results_are_refused_with_a_clear_message(
    tmp_path, val_ann_file, ground_truth_as_detections, results, message
):
    image_id = ground_truth_as_detections[0]["image_id"]
    if results == "CATEGORY":  # contiguous label 0 instead of a COCO category id
        results = [{"image_id": image_id, "category_id": 0, "bbox": [0, 0, 5, 5], "score": 0.9}]
    elif results == "BADBOX":
        results = [{"image_id": image_id, "category_id": 1, "bbox": [0, 0, 5], "score": 0.9}]
    with pytest.raises(UsageError, match=message):
        run_cli(tmp_path, results, val_ann_file)


def test_missing_annotation_file_and_image_folder_exit_clearly(tmp_path, coco_val_root):
    (tmp_path / "results.json").write_text("[]")
    with pytest.raises(UsageError, match="annotation file .* not found"):
        eval_coco.main(["--results-json", str(tmp_path / "results.json"), "--ann-file", str(tmp_path / "nope.json")])
    with pytest.raises(UsageError, match="results file .* not found"):
        eval_coco.main(["--results-json", str(tmp_path / "x.json"), "--ann-file", str(tmp_path / "results.json")])
    fake_root = tmp_path / "coco"
    (fake_root / "annotations").mkdir(parents=True)
    (fake_root / "annotations" / "instances_val2017.json").write_text("{}")
    checkpoint = tmp_path / "det.pt"
    checkpoint.write_bytes(b"not a checkpoint")
    with pytest.raises(UsageError, match="cannot read detection checkpoint"):
        eval_coco.main(["--checkpoint", str(checkpoint), "--coco-root", str(coco_val_root)])
    from detection.data import coco_paths

    with pytest.raises(UsageError, match="image folder .*val2017 not found"):
        coco_paths(fake_root, "val2017")
    with pytest.raises(UsageError, match="instances_test2017.json not found"):
        coco_paths(coco_val_root, "test2017")


def test_the_command_line_says_a_mistake_in_one_line_and_exits_2(tmp_path) -> None:
    script = REPO_ROOT / "detection" / "eval_coco.py"
    missing = ["--results-json", str(tmp_path / "none.json"), "--ann-file", str(tmp_path / "none.json")]
    result = subprocess.run([sys.executable, str(script), *missing], capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"error: results file {tmp_path / 'none.json'} not found"
    ]
    ray_checkpoint = ["--ray", "--checkpoint", "det.pt", "--coco-root", str(tmp_path)]
    no_onnx = subprocess.run([sys.executable, str(script), *ray_checkpoint], capture_output=True, text=True)
    assert no_onnx.returncode == 2 and "--ray runs an exported detector: give --onnx FILE" in no_onnx.stderr
