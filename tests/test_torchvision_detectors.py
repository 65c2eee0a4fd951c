"""torchvision's COCO Faster R-CNN files (``fasterrcnn_resnet50_fpn`` and ``_v2``) in the project's own detector, at
the standard 800/1333 on real COCO val2017 images: eager PyTorch identical to torchvision's own model with the same
file (and ``eval_coco.py``'s AP of it equal to torchvision's model scored by pycocotools alone), the exported ONNX
file within float32's own error, ``/detect`` equal to the ONNX file, and ``eval_coco.py --server``'s AP equal to
torchvision's model scored by pycocotools. The files are torchvision's own modules
with calibrated BatchNorm and a fitted box predictor (``tests.torchvision_weights``); nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from functools import cached_property
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torchvision.models.detection import fasterrcnn_resnet50_fpn, fasterrcnn_resnet50_fpn_v2
from torchvision.ops.misc import FrozenBatchNorm2d

from detection import eval_coco
from detection.checkpoint import FORMAT as DETECTION_FORMAT
from detection.checkpoint import detector_from_checkpoint
from detection.model import build_detector, fresh_backbone
from export.command import main as export_main
from export.detector_parity import match_detections
from export.torchvision_detector import CATEGORY_NAMES, state_from_torchvision
from inference.contract import DETECTION
from tests.helpers import REPO_ROOT, offline
from tests.torchvision_weights import as_published_v1, coco_images, torchvision_reference, trained_state_dict
from toolkit.errors import UsageError
from training.checkpoint import save_checkpoint

V1, V2 = "fasterrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn_v2"
FILES = {V1: "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth", V2: "fasterrcnn_resnet50_fpn_v2_coco-dd69338a.pth"}
IMAGES = {V1: 3, V2: 2}  # real val2017 images per design (v2's box head costs twice as much per image)
EAGER_TOLERANCE = 1e-4  # boxes (px) and scores, project eager vs torchvision eager
ONNX_IOU, ONNX_SCORE = 0.995, 5e-3  # ONNX vs torchvision: up to 6e-4 in score and 0.05 px measured here
AP_TOLERANCE = 1e-4  # the same detections scored two ways, or torchvision's and the file's
HTTP_TOLERANCE = 1e-5  # /detect's JSON floats vs the same file in ONNX Runtime here


class Imported:
    """One torchvision detector file and what the tests compare, each computed once, when first needed."""

    def __init__(self, arch: str, coco_root: Path, folder: Path) -> None:
        self.arch, self.coco_root, self.folder = arch, coco_root, folder
        self.image_ids, self.images, self.targets = coco_images(coco_root, "val2017", IMAGES[arch])

    @cached_property
    def path(self) -> Path:
        """The weights file, under its published name; v1 in the published file's older key layout."""
        state_dict = trained_state_dict(self.arch, self.images, self.targets)
        path = self.folder / FILES[self.arch]
        torch.save(as_published_v1(state_dict) if self.arch == V1 else state_dict, path)
        return path

    @cached_property
    def expected(self) -> list[dict[str, torch.Tensor]]:
        """torchvision's own model with the file, on each image."""
        reference = torchvision_reference(self.arch, torch.load(self.path, weights_only=True))
        with torch.no_grad():
            return [reference([image])[0] for image in self.images]

    @cached_property
    def checkpoint(self) -> dict:
        """The file imported into the project's detector (a detection checkpoint's keys)."""
        return state_from_torchvision(self.path, self.arch)

    @cached_property
    def eager(self) -> list[dict[str, torch.Tensor]]:
        """The project's detector with the file, eager PyTorch, on each image."""
        model, _ = detector_from_checkpoint(self.checkpoint)
        with torch.no_grad():
            return [model.eval()([image])[0] for image in self.images]

    @cached_property
    def onnx(self) -> dict:
        """``python -m export --torchvision-state-dict FILE --arch ARCH``'s report."""
        argv = ["--torchvision-state-dict", str(self.path), "--arch", self.arch]
        argv += ["--verify-images", str(self.coco_root / "val2017"), "--verify-count", "1"]
        return export_main([*argv, "--output", str(self.folder / f"{self.arch}.onnx")])

    @cached_property
    def ort(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """The exported file in ONNX Runtime (fp32, the service's session settings) on each image's uint8 pixels."""
        return self.run_file("onnxruntime")

    def run_file(self, runtime: str) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """The exported file on ``runtime`` in fp32, as a server of the test settings runs it, on each image."""
        model = offline(self.onnx["output"], DETECTION, runtime=runtime)
        return [model.detect(self.pixels(image)) for image in self.images]

    @staticmethod
    def pixels(image: torch.Tensor) -> np.ndarray:
        """The uint8 [3, H, W] an image was decoded to (the float images are those divided by 255)."""
        return image.mul(255).round().to(torch.uint8).numpy()


@pytest.fixture(scope="module")
def imported(coco_val_root, tmp_path_factory) -> dict[str, Imported]:
    folder = tmp_path_factory.mktemp("torchvision_detectors")
    return {arch: Imported(arch, coco_val_root, folder) for arch in (V1, V2)}


def largest(difference: torch.Tensor) -> float:
    """The largest absolute value, 0 for an empty tensor."""
    return float(difference.abs().max()) if difference.numel() else 0.0


def as_tuple(output: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return output["boxes"], output["scores"], output["labels"]


@pytest.mark.parametrize("arch", [V1, V2])
def test_the_file_loads_strictly_as_torchvision_builds_it(imported, arch) -> None:
    case = imported[arch]
    saved = torch.load(case.path, weights_only=True)
    if arch == V1:  # the published file's key names, upgraded while loading
        assert "rpn.head.conv.weight" in saved and "backbone.fpn.inner_blocks.0.weight" in saved
        assert "rpn.head.conv.0.0.weight" not in saved
    state = case.checkpoint
    recipe = state["recipe"]
    assert state["model_options"] == {"stride_in_1x1": False}  # torchvision's v1.5 ResNet
    assert (recipe["design"], recipe["norm_eps"]) == (("fpn", 0.0) if arch == V1 else ("fpn_v2", 1e-5))
    assert state["category_ids"] == list(range(1, 91)) and state["category_names"][0] == "person"
    assert state["category_names"][11] == "N/A"  # id 12: one of the ten unused slots, kept so scores stay the same
    model, _ = detector_from_checkpoint(state)
    frozen = [module.eps for module in model.backbone.body.modules() if isinstance(module, FrozenBatchNorm2d)]
    assert (set(frozen), len(frozen)) == ({0.0}, 53) if arch == V1 else not frozen  # v2: plain BatchNorm


@pytest.mark.parametrize("arch", [V1, V2])
def test_eager_detections_are_torchvisions(imported, arch) -> None:
    case = imported[arch]
    worst, confident = 0.0, 0
    for expected, got in zip(case.expected, case.eager, strict=True):
        assert torch.equal(got["labels"], expected["labels"])
        worst = max(worst, largest(got["boxes"] - expected["boxes"]), largest(got["scores"] - expected["scores"]))
        confident += int((expected["scores"] > 0.5).sum())
    detections = sum(len(output["scores"]) for output in case.expected)
    print(f"{arch}: {detections} detections on {len(case.images)} images, max |eager - torchvision| {worst:.1e}")
    assert worst <= EAGER_TOLERANCE and confident >= len(case.images)  # real detections, not empty outputs


def test_the_paper_layout_would_load_silently_and_detect_otherwise(imported) -> None:
    # the same keys and shapes fit the paper's ResNet (stride on the first 1x1): only the outputs tell
    case = imported[V1]
    recipe_state = {**case.checkpoint, "model_options": {"stride_in_1x1": True}}
    paper, _ = detector_from_checkpoint(recipe_state)  # strict load: no error
    with torch.no_grad():
        got = paper.eval()([case.images[0]])[0]
    assert not match_detections(as_tuple(case.expected[0]), as_tuple(got))["ok"]


def onnx_parity(case: Imported, runtime: str = "onnxruntime") -> list[dict]:
    """Per image, the exported file's detections on ``runtime`` (fp32) matched with torchvision's
    (``match_detections``' report)."""
    outputs = case.ort if runtime == "onnxruntime" else case.run_file(runtime)
    reports = []
    for expected, (boxes, scores, labels) in zip(case.expected, outputs, strict=True):
        got = (torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(labels))
        reports.append(match_detections(as_tuple(expected), got, iou_min=ONNX_IOU, score_tol=ONNX_SCORE,
                                        nms_thresh=0.5, cap=100))  # fmt: skip
    return reports


@pytest.mark.parametrize("arch", [V1, V2])
def test_the_onnx_file_detects_as_torchvision(imported, arch) -> None:
    case = imported[arch]
    model = onnx.load(case.onnx["output"], load_external_data=False)
    props = {entry.key: entry.value for entry in model.metadata_props}
    categories = json.loads(props["categories"])
    assert categories == [{"id": i, "name": name} for i, name in enumerate(CATEGORY_NAMES[arch]) if i > 0]
    assert json.loads(props["recipe"])["norm_eps"] == (0.0 if arch == V1 else 1e-5)
    assert json.loads(props["test_scale"]) == {"min_size": 800, "max_size": 1333}
    assert props["model_name"] == f"faster_rcnn_resnet50_{'fpn' if arch == V1 else 'fpn_v2'}"
    reports = onnx_parity(case)
    print(f"{arch} ONNX vs torchvision: {reports}")
    assert all(report["ok"] and report["matched"] == report["torch"] == report["ort"] for report in reports), reports


@pytest.mark.parametrize("arch", [V1, V2])
def test_the_onnx_file_on_openvino_fp32_detects_as_torchvision(imported, arch) -> None:
    # the same bar as ONNX Runtime's: every detection found, IoU >= 0.995, score within 5e-3
    reports = onnx_parity(imported[arch], "openvino")
    print(f"{arch} OpenVINO fp32 vs torchvision: {reports}")
    assert all(report["ok"] and report["matched"] == report["torch"] == report["ort"] for report in reports), reports


def coco_results(image_ids: list[int], outputs: list[dict[str, torch.Tensor]]) -> list[dict]:
    """torchvision's outputs as COCO results: xywh boxes, its label as the category id."""
    results = []
    for image_id, output in zip(image_ids, outputs, strict=True):
        for (x1, y1, x2, y2), score, label in zip(
            output["boxes"].tolist(), output["scores"].tolist(), output["labels"].tolist(), strict=True
        ):
            results.append(
                {"image_id": image_id, "category_id": label, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score}
            )
    return results


def pycocotools_ap(ann_file: Path, image_ids: list[int], results: list[dict]) -> float:
    """COCO bbox AP of ``results`` over ``image_ids``, pycocotools alone."""
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = COCO(str(ann_file))
        evaluator = COCOeval(ground_truth, ground_truth.loadRes(results), iouType="bbox")
        evaluator.params.imgIds = image_ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(evaluator.stats[0])


def evaluated(case: Imported, source: list[str], output_dir: Path) -> float:
    """``eval_coco.py``'s AP over the case's images (the split's first ones); checks it scored exactly those."""
    argv = [*source, "--coco-root", str(case.coco_root), "--split", "val2017", "--workers", "0"]
    metrics = eval_coco.main([*argv, "--max-eval-samples", str(len(case.image_ids)), "--output-dir", str(output_dir)])
    assert {d["image_id"] for d in json.loads((output_dir / "detections.json").read_text())} == set(case.image_ids)
    return metrics["AP"]


def torchvision_ap(case: Imported, outputs: list[dict[str, torch.Tensor]]) -> float:
    """pycocotools alone on torchvision-style outputs (its label is the COCO category id)."""
    return pycocotools_ap(case.coco_root / "annotations" / "instances_val2017.json", case.image_ids,
                          coco_results(case.image_ids, outputs))  # fmt: skip


def test_eval_coco_of_the_import_scores_torchvisions_ap(imported, tmp_path) -> None:
    # the import as a detection checkpoint: eval_coco.py maps labels through the model's own 90 category ids
    case = imported[V1]
    checkpoint = save_checkpoint(case.checkpoint, tmp_path / "imported.pt", DETECTION_FORMAT)
    ours = evaluated(case, ["--checkpoint", str(checkpoint)], tmp_path / "eval")
    reference = torchvision_ap(case, case.expected)
    print(f"AP: eval_coco.py --checkpoint {ours:.5f}, torchvision + pycocotools {reference:.5f}")
    assert reference > 0.1 and abs(ours - reference) <= AP_TOLERANCE


def test_one_server_detects_as_the_file_and_scores_what_it_serves(
    imported, serve, torchvision_classifier, tmp_path
) -> None:
    case = imported[V1]
    classifier = torchvision_classifier("resnet50")[1]["output"]  # the V2 ResNet-50 import beside the detector
    # ONNX Runtime in fp32: the served answers are those of the file in ORT to the last digit, hence torchvision's AP
    with serve(classifier, RESNET_LAB_DETECTOR=case.onnx["output"], RESNET_LAB_RUNTIME="onnxruntime") as client:
        photo = case.coco_root / "val2017" / f"{case.image_ids[0]:012d}.jpg"
        answer = client.post("/classify", files={"image": (photo.name, photo.read_bytes())})
        assert answer.status_code == 200 and client.get("/info").json()["model"] == "resnet50"
        worst = 0.0
        for image_id, (boxes, scores, labels) in zip(case.image_ids, case.ort, strict=True):
            path = case.coco_root / "val2017" / f"{image_id:012d}.jpg"
            answer = client.post("/detect", files={"image": (path.name, path.read_bytes())},
                                 data={"score_threshold": "0", "max_detections": "1000"})  # fmt: skip
            assert answer.status_code == 200, answer.text
            found = answer.json()["detections"]
            order = np.argsort(-scores, kind="stable")
            assert [d["category_id"] for d in found] == labels[order].tolist()
            assert all(d["label"] == CATEGORY_NAMES[V1][d["category_id"]] for d in found)
            served = np.array([[*d["box"], d["score"]] for d in found]).reshape(-1, 5)
            offline = np.concatenate([boxes[order], scores[order, None]], axis=1)
            worst = max(worst, float(np.abs(served - offline).max(initial=0)))
        served_ap = evaluated(case, ["--server", str(client.base_url), "--concurrency", "1"], tmp_path)
    as_outputs = [dict(zip(("boxes", "scores", "labels"), map(torch.from_numpy, output), strict=True))
                  for output in case.ort]  # fmt: skip
    file_ap, reference = torchvision_ap(case, as_outputs), torchvision_ap(case, case.expected)
    print(f"/detect vs ONNX Runtime: max diff {worst:.1e}; AP: eval_coco.py --server {served_ap:.5f}, the file in ORT "
          f"+ pycocotools {file_ap:.5f}, torchvision + pycocotools {reference:.5f}")  # fmt: skip
    assert worst <= HTTP_TOLERANCE and abs(served_ap - file_ap) <= AP_TOLERANCE
    assert abs(served_ap - reference) <= AP_TOLERANCE


def test_a_file_of_another_layout_is_refused_naming_its_keys(tmp_path) -> None:
    v2_file, classifier_file = tmp_path / "v2.pth", tmp_path / "resnet50.pth"
    torch.save(fasterrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None).state_dict(), v2_file)
    with pytest.raises(UsageError, match=f"does not fit {V1}: .*keys unexpected .*it is {V2}: pass --arch {V2}"):
        state_from_torchvision(v2_file, V1)
    torch.save(fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None).backbone.body.state_dict(), classifier_file)
    with pytest.raises(UsageError, match=r"keys missing \(backbone\.body\.conv1\.weight, .*expected torchvision's"):
        state_from_torchvision(classifier_file, V2)
    command = [sys.executable, "-m", "export", "--torchvision-state-dict", str(v2_file), "--arch", V1]
    finished = subprocess.run([*command, "--output", str(tmp_path / "d.onnx")], cwd=REPO_ROOT, capture_output=True,
                              text=True)  # fmt: skip
    assert finished.returncode == 2 and finished.stderr.startswith("error: ") and "--arch" in finished.stderr
    assert not (tmp_path / "d.onnx").exists()


def test_a_design_named_fpn_v2_is_the_project_detectors_own() -> None:
    # torchvision's v2 modules and parameter names from the project's builder, not a copy of torchvision's
    from detection.recipes import get_recipe

    recipe = get_recipe("coco_resnet50_fpn_v2")
    ours = build_detector(recipe, 91, fresh_backbone("resnet50", {"stride_in_1x1": False}, recipe))
    theirs = fasterrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None)
    shapes = {key: value.shape for key, value in ours.state_dict().items()}
    assert shapes == {key: value.shape for key, value in theirs.state_dict().items()}
