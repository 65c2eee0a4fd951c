"""The BentoML service over real HTTP: a real `bentoml serve` subprocess on exported ONNX models.

Bad uploads get a 4xx JSON ``{"error": ...}`` (never a 500) and the server keeps serving; odd but valid images
get a 200; answers match PyTorch on real photos; concurrent requests are batched.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from export import classifier as exporter
from export.onnx_file import sha256_of
from inference import imaging
from tests.helpers import BAD_INPUTS, REPO_ROOT, UPLOAD_LIMIT, burst, encode, image_batch, metric
from training import imagenet
from training.classifier import classifier_from_checkpoint, load_classifier_checkpoint


@pytest.fixture(scope="module")
def imagenet_server(serve, resnet18_export) -> Iterator[httpx.Client]:
    with serve(resnet18_export["output"], RESNET_LAB_MAX_UPLOAD_BYTES=str(UPLOAD_LIMIT)) as client:
        yield client


@pytest.fixture(scope="module")
def cifar_server(serve, cifar_export) -> Iterator[httpx.Client]:
    with serve(cifar_export["output"]) as client:
        yield client


@pytest.fixture(scope="module")
def photo(photos) -> Callable[[int], Image.Image]:
    """The index-th real ImageNet photo, decoded."""
    return lambda index=0: imaging.load_rgb(photos[index])


def classify(client: httpx.Client, data: bytes, name: str = "upload.bin", **form: str) -> httpx.Response:
    return client.post("/classify", files={"image": (name, data, "application/octet-stream")}, data=form)


def assert_ok(response: httpx.Response, top_k: int = 5) -> dict:
    assert response.status_code == 200, response.text
    body = response.json()
    scores = [p["score"] for p in body["predictions"]]
    assert len(scores) == top_k and scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1 + 1e-6
    assert all(isinstance(p["index"], int) and isinstance(p["label"], str) for p in body["predictions"])
    return body


def test_info_health_and_metrics(imagenet_server: httpx.Client) -> None:
    info = imagenet_server.get("/info").json()
    assert info["model"] == "resnet18" and info["num_labels"] == 1000
    assert (info["resize_size"], info["crop_size"]) == (256, 224)
    assert info["decode"] == "fast"  # large JPEGs decoded at reduced scale: it keeps the answers at 224 px
    runs = info["runtime"]
    assert runs["precision"] == "fp32" and runs["reason"]  # the test servers' setting, and why this runtime
    if not os.path.exists("/dev/nvidia0"):  # ONNX Runtime's "available" list lies about CUDA; the choice does not
        assert (runs["runtime"], runs["device"]) == ("openvino", "CPU")
        assert runs["inference_precision"] == "f32"  # what OpenVINO compiled with, not its bf16 default
    assert imagenet_server.post("/info").json()["model"] == "resnet18"
    for path in ("/healthz", "/livez", "/readyz", "/metrics"):
        assert imagenet_server.get(path).status_code == 200, path
    log = imagenet_server.log_path.read_text()  # type: ignore[attr-defined]
    assert f"{runs['runtime']} {runs['version']} on {runs['device']} in fp32 ({runs['reason']})" in log
    assert "Failed to load library libonnxruntime_providers_cuda" not in log


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_a_json_4xx(imagenet_server: httpx.Client, photos, photo, case: str) -> None:
    make, form, status = BAD_INPUTS[case]
    response = classify(imagenet_server, make(photos, photo), **form)
    assert response.status_code == status, response.text
    body = response.json()
    assert isinstance(body, dict) and isinstance(body["error"], str) and body["error"]
    assert_ok(classify(imagenet_server, encode(photo(1), "JPEG")))  # still serving


def test_malformed_requests_are_json_4xx(imagenet_server: httpx.Client, photo) -> None:
    responses = [
        imagenet_server.post("/classify", files={"picture": ("a.jpg", b"xx")}),  # missing field
        imagenet_server.post("/classify"),  # no body at all
        imagenet_server.post("/classify", content=b"{not json", headers={"content-type": "application/json"}),
        imagenet_server.post("/classify", json={"top_k": 3}),
    ]
    for response in responses:
        assert 400 <= response.status_code < 500, response.text
        assert isinstance(response.json(), dict) and response.json()["error"]
    # over the limit without a Content-Length (chunked upload): counted while streaming, refused with 413
    chunks = (b"--x\r\nContent-Disposition: form-data; name=image; filename=a.jpg\r\n\r\n", *[b"\0" * 2**20] * 4)
    streamed = imagenet_server.post(
        "/classify", content=iter(chunks), headers={"content-type": "multipart/form-data; boundary=x"}
    )
    assert streamed.status_code == 413 and "limit" in streamed.json()["error"]
    # no other POST endpoint exists
    assert imagenet_server.post("/infer", json={"pixels": ["x"]}).status_code == 404
    assert_ok(classify(imagenet_server, encode(photo(2), "JPEG")))


def test_odd_but_valid_images(imagenet_server: httpx.Client, photo) -> None:
    base = photo(3)
    same_pixels_png = encode(base, "PNG")
    reference = assert_ok(classify(imagenet_server, same_pixels_png))

    # animated GIF: the first frame is classified
    frames = [base.convert("P", palette=Image.Palette.ADAPTIVE), Image.new("P", base.size, 7)]
    gif = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    first_frame = Image.open(io.BytesIO(gif)).convert("RGB")
    assert classify(imagenet_server, gif).json() == assert_ok(classify(imagenet_server, encode(first_frame, "PNG")))

    # EXIF orientation applied: same JPEG pixels + orientation tag == the rotated image sent losslessly
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    rotated_jpeg = encode(base, "JPEG", quality=95, exif=exif.tobytes())
    upright = Image.open(io.BytesIO(encode(base, "JPEG", quality=95))).convert("RGB").transpose(Image.ROTATE_270)
    with_exif = assert_ok(classify(imagenet_server, rotated_jpeg))
    assert with_exif == assert_ok(classify(imagenet_server, encode(upright, "PNG")))

    rgba = base.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(base.size))
    sixteen_bit = Image.fromarray((np.asarray(base.convert("L"), dtype=np.uint16) * 257).astype(np.uint16))
    variants = {
        "grayscale jpeg": encode(base.convert("L"), "JPEG"),
        "palette png": encode(base.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"),
        "palette with transparency": encode(base.convert("P"), "PNG", transparency=0),
        "rgba with transparency": encode(rgba, "PNG"),
        "cmyk jpeg": encode(base.convert("CMYK"), "JPEG"),
        "16-bit png": encode(sixteen_bit, "PNG"),
        "1x4000 strip": encode(base.resize((1, 4000)), "PNG"),
        "4000x1 strip": encode(base.resize((4000, 1)), "PNG"),
        "webp": encode(base, "WEBP"),
        "bmp": encode(base, "BMP"),
    }
    for name, data in variants.items():
        body = assert_ok(classify(imagenet_server, data, top_k="3"), top_k=3)
        assert body["model"] == "resnet18", name
    # 16-bit greyscale is scaled, not clipped to white: it classifies like its 8-bit twin
    eight_bit = assert_ok(classify(imagenet_server, encode(base.convert("L"), "PNG")))
    assert assert_ok(classify(imagenet_server, variants["16-bit png"])) == eight_bit
    assert reference["predictions"][0]["label"] == reference["predictions"][0]["label"].strip()


def _pytorch_top5(classifier: torch.nn.Module, files, resize: int, crop: int) -> tuple[np.ndarray, np.ndarray]:
    batch = image_batch(files, resize, crop)
    with torch.no_grad():
        probabilities = torch.softmax(classifier.eval()(batch).double(), dim=1).numpy()
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :5]
    return order, np.take_along_axis(probabilities, order, axis=1)


def _check_parity(client: httpx.Client, classifier: torch.nn.Module, files, resize: int, crop: int) -> None:
    expected_index, expected_score = _pytorch_top5(classifier, files, resize, crop)
    for row, path in enumerate(files):
        body = classify(client, path.read_bytes(), name=path.name).json()
        got_index = [p["index"] for p in body["predictions"]]
        got_score = [p["score"] for p in body["predictions"]]
        assert got_index == expected_index[row].tolist(), path.name
        np.testing.assert_allclose(got_score, expected_score[row], atol=1e-4, rtol=0, err_msg=path.name)
    # the logits are meaningful, so the comparison is not between near-uniform scores
    assert expected_score[:, 0].mean() > 0.05


def test_parity_with_pytorch_on_real_photos(imagenet_server, photos, torchvision_state_dict) -> None:
    classifier = exporter.spec_from_torchvision(torchvision_state_dict, "resnet18", None).classifier
    _check_parity(imagenet_server, classifier, photos, 256, 224)
    body = classify(imagenet_server, photos[0].read_bytes()).json()
    names = imagenet.imagenet_classes()[1]
    assert all(p["label"] == names[p["index"]] for p in body["predictions"])


def test_parity_with_pytorch_on_small_real_photos(cifar_server, small_photos, cifar_checkpoint) -> None:
    classifier = classifier_from_checkpoint(load_classifier_checkpoint(cifar_checkpoint))
    _check_parity(cifar_server, classifier, small_photos, 32, 32)
    info = cifar_server.get("/info").json()
    assert info["model"] == "cifar_resnet20" and info["decode"] == "exact"  # 32 px inputs: the exact path


def test_concurrent_requests_go_through_the_batching_queue(cifar_server: httpx.Client, small_photos) -> None:
    # Whether requests merge depends on timing; that the queue merges is tested in-process
    # (tests/test_service_parts.py). Here: every request passes through it and is counted, whatever the batching.
    before = cifar_server.get("/info").json()["batches"]["images"]
    payloads = [path.read_bytes() for path in small_photos] * 3
    with ThreadPoolExecutor(max_workers=24) as pool:
        responses = list(pool.map(lambda data: classify(cifar_server, data), payloads))
    assert all(response.status_code == 200 for response in responses)
    batches = cifar_server.get("/info").json()["batches"]
    assert batches["images"] - before == len(payloads)
    assert sum(int(size) * count for size, count in batches["sizes"].items()) == batches["images"]
    metrics = cifar_server.get("/metrics").text  # the histogram on /metrics agrees with /info
    assert metric(metrics, "resnet_lab_batch_size_sum", endpoint="classify") == batches["images"]
    assert metric(metrics, "resnet_lab_batch_size_count", endpoint="classify") == batches["count"]


def test_overload_is_a_json_503_and_the_server_recovers(serve, cifar_export, small_photos) -> None:
    # A 1 ms latency budget: BentoML's batching queue drops what it cannot answer in time; those requests get a
    # JSON 503 (never a 500) and the server keeps answering. Sequential requests first take the queue through its
    # cost-model training (one at a time, nothing queues); then one burst released by a barrier, so requests
    # must queue behind each other and any that waits 1 ms is dropped.
    payloads = [path.read_bytes() for path in small_photos] * 2
    with serve(cifar_export["output"], RESNET_LAB_MAX_LATENCY_MS="1") as client:
        warm = [classify(client, payloads[0]).status_code for _ in range(15)]
        assert 200 in warm, warm
        responses = burst(lambda data: classify(client, data), payloads)
        statuses = [response.status_code for response in responses]
        assert 503 in statuses and set(statuses) <= {200, 503}, statuses
        for response in responses:
            if response.status_code == 503:
                assert "max_latency_ms" in response.json()["error"]
        assert client.get("/readyz").status_code == 200
        later = [classify(client, payloads[0]).status_code for _ in range(20)]
        assert 200 in later, later


def test_service_imports_no_torch(cifar_export) -> None:
    code = (
        "import sys, service.service as s; "
        "bad = [m for m in ('torch', 'torchvision') if m in sys.modules]; "
        "assert not bad, bad; print(s.VisionService.name)"
    )
    env = {**os.environ, "RESNET_LAB_MODEL": cifar_export["output"]}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "resnet_lab" in result.stdout


def test_missing_model_is_a_clear_startup_error(tmp_path) -> None:
    env = {**os.environ, "RESNET_LAB_MODEL": str(tmp_path / "nope.onnx")}
    result = subprocess.run(
        [sys.executable, "-c", "import service.service"], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode != 0 and "nope.onnx: no such file" in result.stderr


def test_model_store_tag_resolves_to_the_exported_file(cifar_export, bentoml_home) -> None:
    tag = cifar_export["bento_model"]
    code = "import os; from inference.model_files import resolve_model; print(resolve_model(os.environ['MODEL']))"
    env = {**os.environ, "MODEL": tag, "BENTOML_HOME": str(bentoml_home)}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    resolved = result.stdout.strip()
    assert sha256_of(resolved) == sha256_of(cifar_export["output"])
