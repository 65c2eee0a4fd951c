"""Detection served: the exported file matches PyTorch, /detect answers beside /classify, and COCO evaluation of
the checkpoint, the ONNX file and the running server agree."""

from __future__ import annotations

import copy
import json
import random
import time
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from detection import eval_coco
from detection.checkpoint import load_detection_checkpoint
from export import detector as detection_export
from export.command import main as export_main
from export.onnx_file import sha256_of
from inference import imaging
from inference.contract import DETECTION
from tests.fuzz_requests import request as fuzz_request
from tests.helpers import BAD_INPUTS, SHAPE_CATEGORIES, SHIPPED_COCO, UPLOAD_LIMIT, burst, encode, metric, offline
from toolkit.errors import UsageError

SHAPES_AP_TOLERANCE = 0.005


def exported(run: Path, output: Path, *extra: str) -> dict:
    """``python -m export`` of a run's last checkpoint (verified on the shipped real COCO val photos)."""
    checkpoint = [
        "--checkpoint",
        str(run / "checkpoints" / "last.pt"),
        "--verify-images",
        str(SHIPPED_COCO / "val2017"),
    ]
    return export_main([*checkpoint, "--output", str(output), *extra])


@pytest.fixture(scope="module")
def shapes_server(serve, shapes_onnx):
    """The shapes detector named by its model-store tag (the COCO test below serves a file path)."""
    tag = shapes_onnx["bento_model"]
    with serve("", RESNET_LAB_DETECTOR=tag, RESNET_LAB_MAX_UPLOAD_BYTES=str(UPLOAD_LIMIT)) as client:
        yield client


def detect(client: httpx.Client, data: bytes, name: str = "upload.bin", **form: str) -> httpx.Response:
    return client.post("/detect", files={"image": (name, data, "application/octet-stream")}, data=form)


def test_export_writes_one_verified_file_to_the_contract(shapes_onnx, shapes_detector, bentoml_home) -> None:
    model = onnx.load(shapes_onnx["output"], load_external_data=False)
    props = {entry.key: entry.value for entry in model.metadata_props}
    assert props["task"] == "detection" and json.loads(props["categories"]) == [
        {"id": c["id"], "name": c["name"]} for c in SHAPE_CATEGORIES
    ]
    assert json.loads(props["test_scale"]) == {"min_size": 64, "max_size": 64} and props["score_threshold"] == "0.05"
    assert json.loads(props["nms"])["detections_per_img"] == 100 and json.loads(props["recipe"])["arch"]
    state = load_detection_checkpoint(shapes_detector / "checkpoints" / "last.pt")
    assert json.loads(props["metrics"])[-1]["test_AP50"] == pytest.approx(state["metrics"][-1]["test_AP50"])
    (graph_input,) = model.graph.input
    assert graph_input.name == "image" and graph_input.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_value or d.dim_param for d in graph_input.type.tensor_type.shape.dim] == [3, "height", "width"]
    assert [output.name for output in model.graph.output] == ["boxes", "scores", "labels"]
    verified = shapes_onnx["verify"]  # ORT vs PyTorch on real COCO val images, before writing
    assert verified["images"] == 8 and verified["min_iou"] >= 0.99 and verified["max_score_diff"] <= 1e-3
    assert verified["detections"] > 0  # real detections above 0.05 were compared, not two empty outputs
    assert shapes_onnx["bento_model"].startswith("resnet-detector:")


def test_a_mismatching_export_writes_nothing(shapes_detector, tmp_path, monkeypatch) -> None:
    original = detection_export.export_detector_onnx

    def shifted(wrapper, *args, **kwargs) -> bytes:  # the graph no longer matches the PyTorch model it claims to be
        changed = copy.deepcopy(wrapper)
        with torch.no_grad():
            changed.detector.roi_heads.box_predictor.bbox_pred.bias.add_(3.0)
        return original(changed, *args, **kwargs)

    monkeypatch.setattr(detection_export, "export_detector_onnx", shifted)
    with pytest.raises(UsageError, match="verification FAILED"):
        exported(shapes_detector, tmp_path / "detector.onnx")
    assert not list(tmp_path.iterdir())


def test_detect_answers_boxes_in_the_uploads_displayed_pixels(shapes_server: httpx.Client, shapes_root) -> None:
    picture = Image.open(sorted((shapes_root / "val2017").glob("*.png"))[0]).convert("RGB")
    upright = shapes_server.post("/detect", files={"image": ("a.png", encode(picture, "PNG"))}).json()
    assert upright["image_size"] == [64, 64] and upright["model"].startswith("faster_rcnn_cifar_resnet20_c4")
    detections = upright["detections"]
    assert detections and [d["score"] for d in detections] == sorted((d["score"] for d in detections), reverse=True)
    assert all(d["score"] >= 0.5 and d["label"] in {c["name"] for c in SHAPE_CATEGORIES} for d in detections)
    # the same picture stored sideways with EXIF orientation 6: the boxes are in the displayed (upright) pixels
    exif = Image.Exif()
    exif[0x0112] = 6
    sideways = encode(picture.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=100, exif=exif.tobytes())
    turned = shapes_server.post("/detect", files={"image": ("b.jpg", sideways)}).json()
    assert turned["image_size"] == [64, 64]
    best, best_turned = detections[0], turned["detections"][0]
    assert best_turned["category_id"] == best["category_id"]
    assert np.abs(np.array(best_turned["box"]) - np.array(best["box"])).max() < 4  # JPEG moved a few pixels
    few = shapes_server.post("/detect", files={"image": ("a.png", encode(picture, "PNG"))},
                             data={"score_threshold": "0", "max_detections": "2"}).json()  # fmt: skip
    assert len(few["detections"]) == 2


def test_detect_refuses_bad_input_with_a_json_4xx_and_keeps_serving(shapes_server: httpx.Client) -> None:
    png = encode(Image.new("RGB", (40, 30), (90, 140, 200)), "PNG")
    strip = encode(Image.new("RGB", (67, 1), (90, 140, 200)), "PNG")
    cases = [
        ({"files": {"image": ("a.png", png)}, "data": {"score_threshold": "1.5"}}, 400, "between 0 and 1"),
        ({"files": {"image": ("a.png", png)}, "data": {"max_detections": "0"}}, 400, "between 1 and 1000"),
        ({"files": {"image": ("a.png", png)}, "data": {"max_detections": "lots"}}, 400, "must be an integer"),
        ({"files": {"image": ("a.bin", b"not an image")}}, 400, "not an image"),
        ({"files": {"file": ("a.png", png)}}, 400, 'file in field "image"'),
        ({"files": {"image": ("a.png", strip)}}, 400, "nearer to square"),  # resized, 0 px across: no runtime runs it
        ({"files": {"image": ("a.png", png)}, "data": {"model": "other"}}, 404, "no model 'other'"),
    ]
    for request, status, words in cases:
        response = shapes_server.post("/detect", **request)
        assert response.status_code == status and words in response.json()["error"], response.text
    rng = random.Random(12)
    for _ in range(150):
        headers, body = fuzz_request(rng, option="score_threshold")
        response = shapes_server.post("/detect", content=body, headers={k: v for k, v in headers.items() if v})
        assert response.status_code < 500, response.text
        if response.status_code >= 400:
            assert set(response.json()) == {"error"}
    assert shapes_server.post("/detect", files={"image": ("a.png", png)}).status_code == 200
    assert "resnet_lab_detections_total" in shapes_server.get("/metrics").text


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_the_classify_bad_input_corpus_is_a_json_4xx_on_detect(shapes_server, photos, case: str) -> None:
    def photo(index: int = 0) -> Image.Image:
        return imaging.load_rgb(photos[index])

    make, form, status = BAD_INPUTS[case]  # top_k is no /detect field: refused as unexpected
    response = detect(shapes_server, make(photos, photo), **form)
    assert response.status_code == status, response.text
    body = response.json()
    assert isinstance(body, dict) and isinstance(body["error"], str) and body["error"]
    assert detect(shapes_server, photos[1].read_bytes()).status_code == 200  # still serving


def test_info_shows_the_detector_from_the_model_store(shapes_server, shapes_onnx, bentoml_home) -> None:
    detector = shapes_server.get("/info").json()["detector"]
    assert detector is not None and detector["model"].startswith("faster_rcnn_cifar_resnet20_c4")
    served = Path(detector["model_path"])  # the tag resolved to the store's copy of the exported file
    assert served.is_relative_to(bentoml_home) and sha256_of(served) == sha256_of(shapes_onnx["output"])
    assert detector["max_detections_in_graph"] == 100 and detector["score_threshold_in_graph"] == 0.05
    assert detector["num_categories"] == len(SHAPE_CATEGORIES) and detector["concurrency"] == 1


def test_metrics_count_detections_and_their_latency(shapes_server, shapes_root) -> None:
    before = shapes_server.get("/metrics").text
    pictures = sorted((shapes_root / "val2017").glob("*.png"))[:4]
    answers = [detect(shapes_server, path.read_bytes(), path.name, score_threshold="0").json() for path in pictures]
    returned = sum(len(answer["detections"]) for answer in answers)
    after = shapes_server.get("/metrics").text
    assert returned > len(pictures)  # score threshold 0: more than one detection per picture
    assert metric(after, "resnet_lab_detections_total") - metric(before, "resnet_lab_detections_total") == returned
    count = "resnet_lab_detect_seconds_count"
    assert metric(after, count) - metric(before, count) == len(pictures)  # one latency per answered request


def test_overload_is_a_json_503_and_the_server_recovers(serve, shapes_onnx, photos) -> None:
    # One detection slot and a latency budget of a quarter of the fastest detection measured here on these photos:
    # of uploads released together, each one that reaches the slot behind another waits at least a whole detection
    # for it, four budgets, so all but those that find the slot free must be refused. Decoding and uploading a
    # photo takes a fraction of a detection, so the uploads reach the slot far closer together than one detection.
    payloads = [path.read_bytes() for path in photos]
    model = offline(shapes_onnx["output"], DETECTION)
    seconds = []
    for data in payloads:
        pixels = imaging.to_chw(imaging.load_rgb(data))
        started = time.perf_counter()
        model.detect(pixels)
        seconds.append(time.perf_counter() - started)
    budget_ms = max(1, int(1000 * min(seconds) / 4))
    env = {"RESNET_LAB_DETECT_CONCURRENCY": "1", "RESNET_LAB_MAX_LATENCY_MS": str(budget_ms)}
    with serve("", RESNET_LAB_DETECTOR=shapes_onnx["output"], **env) as client:
        assert detect(client, payloads[0]).status_code == 200  # warm: the first run is slower than the rest
        responses = burst(lambda data: detect(client, data), payloads)
        statuses = [response.status_code for response in responses]
        print(f"one detection >= {min(seconds) * 1000:.1f} ms, budget {budget_ms} ms: {statuses}")
        assert 503 in statuses and 200 in statuses and set(statuses) <= {200, 503}, statuses
        for response in responses:
            if response.status_code == 503:
                assert set(response.json()) == {"error"} and f"max_latency_ms={budget_ms}" in response.json()["error"]
        assert detect(client, payloads[1]).status_code == 200  # recovered: the slot is free again


def test_without_a_detector_detect_is_a_404_that_says_how(serve, photos) -> None:
    with serve("") as client:
        response = client.post("/detect", files={"image": ("a.jpg", photos[0].read_bytes())})
        assert response.status_code == 404 and "RESNET_LAB_DETECTOR" in response.json()["error"]
        assert client.get("/info").json()["detector"] is None
        assert client.post("/classify", files={"image": ("a.jpg", photos[0].read_bytes())}).status_code == 200


def test_demo_page_and_script_are_served(shapes_server: httpx.Client) -> None:
    page = shapes_server.get("/demo")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="/demo.js">' in page.text and "http" not in page.text.replace("http-equiv", "")
    script = shapes_server.get("/demo.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    for needed in ('"/classify"', '"/detect"', "/info", "imageOrientation", "FormData"):
        assert needed in script.text, needed
    assert "http://" not in script.text and "https://" not in script.text  # nothing external


def evaluated(source: list[str], root: Path, out: Path) -> dict[str, float]:
    return eval_coco.main([*source, "--coco-root", str(root), "--output-dir", str(out), "--workers", "0"])


def test_checkpoint_onnx_and_server_score_the_same_ap(
    shapes_detector, shapes_onnx, shapes_server, shapes_root, tmp_path
):
    checkpoint = evaluated(
        ["--checkpoint", str(shapes_detector / "checkpoints" / "last.pt")], shapes_root, tmp_path / "a"
    )
    onnx_file = evaluated(["--onnx", shapes_onnx["output"]], shapes_root, tmp_path / "b")
    served = evaluated(["--server", str(shapes_server.base_url)], shapes_root, tmp_path / "c")
    print(f"shapes AP: checkpoint {checkpoint['AP']:.4f}, onnx {onnx_file['AP']:.4f}, server {served['AP']:.4f}")
    assert checkpoint["AP50"] > 0.5
    for key in ("AP", "AP50", "AP75"):  # all three pairs
        assert onnx_file[key] == pytest.approx(checkpoint[key], abs=SHAPES_AP_TOLERANCE), key
        assert served[key] == pytest.approx(checkpoint[key], abs=SHAPES_AP_TOLERANCE), key
        assert served[key] == pytest.approx(onnx_file[key], abs=SHAPES_AP_TOLERANCE), key


def test_real_coco_val_runs_through_all_three_paths(coco_detector, coco_train_root, serve, tmp_path, bentoml_home):
    # an 8-iteration detector scores low: the graph and the evaluation keep every detection so COCOeval has work
    coco, keep_all = coco_train_root, ["--score-threshold", "0"]
    detector = exported(coco_detector, tmp_path / "coco.onnx", *keep_all)["output"]
    checkpoint = [*keep_all, "--checkpoint", str(coco_detector / "checkpoints" / "last.pt")]
    results = {
        "checkpoint": evaluated(checkpoint, coco, tmp_path / "checkpoint"),
        "onnx": evaluated([*keep_all, "--onnx", detector], coco, tmp_path / "onnx"),
    }
    with serve("", RESNET_LAB_DETECTOR=detector) as client:
        results["server"] = evaluated([*keep_all, "--server", str(client.base_url)], coco, tmp_path / "server")
    for name in results:
        detections = json.loads((tmp_path / name / "detections.json").read_text())
        assert len({d["image_id"] for d in detections}) == 80, name  # every val2017 image went through
    assert results["onnx"]["AP"] == pytest.approx(results["checkpoint"]["AP"], abs=0.005)
    assert results["server"]["AP"] == pytest.approx(results["onnx"]["AP"], abs=1e-3)
