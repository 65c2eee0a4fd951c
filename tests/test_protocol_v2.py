"""The Open Inference Protocol v2 over HTTP with real clients: Triton's ``tritonclient.http`` (binary and JSON
tensors, BYTES and UINT8) and plain JSON; the answers equal ONNX Runtime run offline on the same files."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from inference import answers, imaging
from tests.conftest import PROTOCOL_MAX_IMAGES
from tests.helpers import encode, offline

CLASSIFIER = "cifar_resnet20"


def client_of(server: httpx.Client) -> triton.InferenceServerClient:
    """tritonclient on the server's address."""
    return triton.InferenceServerClient(url=str(server.base_url).removeprefix("http://").rstrip("/"))


def offline_logits(onnx_file: str, files: list[Path]) -> np.ndarray:
    """The file run here as the test server runs it, on the files through the core's loader (the CIFAR model: 32 px,
    exact decode)."""
    pixels = np.stack([imaging.preprocess(path.read_bytes(), 32, 32) for path in files])
    return offline(onnx_file).logits(pixels)


def labels_of(onnx_file: str) -> list[str]:
    """The class names stored in an exported classifier."""
    session = ort.InferenceSession(onnx_file, providers=["CPUExecutionProvider"])
    return json.loads(session.get_modelmeta().custom_metadata_map["labels"])


def files_input(files: list[Path], binary: bool = True) -> triton.InferInput:
    """The ``image`` BYTES input: raw files (binary) or base64 strings (JSON)."""
    tensor = triton.InferInput("image", [len(files)], "BYTES")
    data = [path.read_bytes() if binary else base64.b64encode(path.read_bytes()) for path in files]
    return tensor.set_data_from_numpy(np.array(data, dtype=object), binary_data=binary)


def test_health_and_metadata_through_tritonclient(vision_server, shapes_onnx) -> None:
    client = client_of(vision_server)
    assert client.is_server_live() and client.is_server_ready()
    server = client.get_server_metadata()
    assert server["name"] == "resnet-lab" and "binary_tensor_data" in server["extensions"]
    metadata = client.get_model_metadata(CLASSIFIER)
    (version,) = metadata["versions"]
    runs = vision_server.get("/info").json()["runtime"]
    assert metadata["platform"] == {"openvino": "openvino", "onnxruntime": "onnxruntime_onnx"}[runs["runtime"]]
    assert metadata["parameters"]["precision"] == runs["precision"] == "fp32"  # the test servers' setting
    assert metadata["parameters"]["runtime"] == f"{runs['runtime']} {runs['version']}"
    assert metadata["inputs"] == [
        {"name": "images", "datatype": "UINT8", "shape": [-1, 3, 32, 32]},
        {"name": "image", "datatype": "BYTES", "shape": [-1]},
    ]
    assert {"name": "logits", "datatype": "FP32", "shape": [-1, 10]} in metadata["outputs"]
    assert client.get_model_metadata(CLASSIFIER, version) == metadata
    assert client.is_model_ready(CLASSIFIER) and client.is_model_ready(CLASSIFIER, version)
    assert not client.is_model_ready("no_such_model") and not client.is_model_ready(CLASSIFIER, "0")
    info = vision_server.get("/info").json()
    assert info["model"] == CLASSIFIER and version == info["source_sha256"][:12]
    detector = client.get_model_metadata(info["detector"]["model"])
    assert [output["name"] for output in detector["outputs"]] == ["boxes", "scores", "labels", "counts", "image_sizes"]
    assert vision_server.get("/v2/health/live").json() == {"live": True}
    assert vision_server.get("/v2/health/ready").json() == {"ready": True}


def test_binary_files_give_the_offline_logits_and_top_k(vision_server, cifar_export, small_photos) -> None:
    files = small_photos[:6]
    expected = offline_logits(cifar_export["output"], files)
    result = client_of(vision_server).infer(CLASSIFIER, [files_input(files)], parameters={"top_k": 3})
    logits = result.as_numpy("logits")
    assert logits.dtype == np.float32 and logits.shape == (6, 10)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
    labels, scores = result.as_numpy("labels"), result.as_numpy("scores")
    assert labels.shape == scores.shape == (6, 3)
    names = labels_of(cifar_export["output"])
    for row, logit_row in enumerate(expected):
        best = answers.softmax_top_k(logit_row, 3)
        assert [label.decode() for label in labels[row]] == [names[index] for index, _ in best]
        np.testing.assert_allclose(scores[row], [score for _, score in best], rtol=1e-5)


def test_uint8_pixels_in_json_and_binary_and_json_base64_files(vision_server, cifar_export, small_photos) -> None:
    client = client_of(vision_server)
    files = small_photos[6:10]
    expected = offline_logits(cifar_export["output"], files)
    pixels = np.stack([imaging.preprocess(path.read_bytes(), 32, 32) for path in files])
    for binary in (False, True):
        tensor = triton.InferInput("images", list(pixels.shape), "UINT8").set_data_from_numpy(pixels, binary)
        wanted = [triton.InferRequestedOutput("logits", binary_data=binary)]
        result = client.infer(CLASSIFIER, [tensor], outputs=wanted, request_id=f"req-{binary}")
        assert result.get_response()["id"] == f"req-{binary}"
        assert [output["name"] for output in result.get_response()["outputs"]] == ["logits"]
        np.testing.assert_allclose(result.as_numpy("logits"), expected, rtol=1e-5, atol=1e-5)
    # JSON BYTES: image files as base64 strings; only the outputs asked for come back
    wanted = [triton.InferRequestedOutput("labels", binary_data=False)]
    result = client.infer(CLASSIFIER, [files_input(files, binary=False)], outputs=wanted, parameters={"top_k": 1})
    assert result.as_numpy("logits") is None
    top1 = [str(label) for label in result.as_numpy("labels")[:, 0]]
    names = labels_of(cifar_export["output"])
    assert top1 == [names[int(index)] for index in expected.argmax(1)]


def test_plain_http_json_request(vision_server, cifar_export, small_photos) -> None:
    path = small_photos[10]
    body = {
        "id": "plain-1",
        "parameters": {"top_k": 2},
        "inputs": [
            {"name": "image", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(path.read_bytes()).decode()]}
        ],
        "outputs": [{"name": "scores"}, {"name": "logits"}],
    }
    response = vision_server.post(f"/v2/models/{CLASSIFIER}/infer", json=body)
    assert response.status_code == 200 and response.headers["content-type"] == "application/json", response.text
    answer = response.json()
    assert answer["model_name"] == CLASSIFIER and answer["id"] == "plain-1" and answer["model_version"]
    scores, logits = answer["outputs"]
    assert (scores["name"], scores["datatype"], scores["shape"]) == ("scores", "FP32", [1, 2])
    assert (logits["name"], logits["shape"]) == ("logits", [1, 10]) and len(logits["data"]) == 10
    expected = offline_logits(cifar_export["output"], [path])
    np.testing.assert_allclose(logits["data"], expected[0], rtol=1e-5, atol=1e-5)
    # nested data is row-major too, and the versioned route answers the same
    pixels = imaging.preprocess(path.read_bytes(), 32, 32)[None]
    nested = {"inputs": [{"name": "images", "shape": [1, 3, 32, 32], "datatype": "UINT8", "data": pixels.tolist()}]}
    version = answer["model_version"]
    again = vision_server.post(f"/v2/models/{CLASSIFIER}/versions/{version}/infer", json=nested).json()
    np.testing.assert_allclose(again["outputs"][0]["data"], expected[0], rtol=1e-5, atol=1e-5)


def test_detector_answers_in_the_padded_layout(vision_server, shapes_root) -> None:
    detector = vision_server.get("/info").json()["detector"]["model"]
    files = sorted((shapes_root / "val2017").glob("*.png"))[:3]
    single = [
        vision_server.post("/detect", files={"image": (p.name, p.read_bytes())}, data={"score_threshold": "0.3"}).json()
        for p in files
    ]
    result = client_of(vision_server).infer(detector, [files_input(files)], parameters={"score_threshold": 0.3})
    counts, boxes = result.as_numpy("counts"), result.as_numpy("boxes")
    scores, labels, sizes = result.as_numpy("scores"), result.as_numpy("labels"), result.as_numpy("image_sizes")
    assert counts.tolist() == [len(answer["detections"]) for answer in single] and max(counts) > 0
    width = max(counts)
    assert boxes.shape == (3, width, 4) and scores.shape == labels.shape == (3, width)
    assert sizes.tolist() == [answer["image_size"] for answer in single]
    for row, answer in enumerate(single):
        found = answer["detections"]
        np.testing.assert_allclose(boxes[row, : len(found)], [d["box"] for d in found], rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(scores[row, : len(found)], [d["score"] for d in found], rtol=1e-5, atol=1e-6)
        assert labels[row, : len(found)].tolist() == [d["category_id"] for d in found]
        assert (labels[row, len(found) :] == -1).all() and (scores[row, len(found) :] == 0).all()
    # the graph's own input: one UINT8 [3, H, W] image gives what its PNG file gives
    pixels = imaging.to_chw(imaging.load_rgb(files[0]))
    tensor = triton.InferInput("image", list(pixels.shape), "UINT8").set_data_from_numpy(pixels)
    raw = client_of(vision_server).infer(detector, [tensor], parameters={"score_threshold": 0.3})
    assert raw.as_numpy("counts").tolist() == [counts[0]]
    np.testing.assert_allclose(raw.as_numpy("boxes")[0], boxes[0, : counts[0]], rtol=1e-5, atol=1e-4)


def _infer(server: httpx.Client, body: bytes | dict, model: str = CLASSIFIER, **headers: str) -> httpx.Response:
    url = f"/v2/models/{model}/infer"
    if isinstance(body, dict):
        return server.post(url, json=body, headers=headers)
    return server.post(url, content=body, headers=headers)


def _files(count: int, data: bytes) -> dict:
    encoded = base64.b64encode(data).decode()
    return {"inputs": [{"name": "image", "shape": [count], "datatype": "BYTES", "data": [encoded] * count}]}


@pytest.mark.parametrize(
    ("case", "status", "words"),
    [
        ("unknown model", 404, "no model 'nope'"),
        ("not JSON", 400, "not valid JSON"),
        ("no inputs", 400, 'field "inputs"'),
        ("unknown input", 400, "is not one this model takes"),
        ("two inputs", 400, "send exactly one"),
        ("wrong shape", 400, "must have shape [N, 3, 32, 32]"),
        ("data and shape disagree", 400, "elements for shape"),
        ("uint8 out of range", 400, "must be in [0, 255]"),
        ("float pixels", 400, "must be integers"),
        ("binary size past the data", 400, "does not fit the binary data"),
        ("bytes after the inputs", 400, "bytes of binary data after"),
        ("header length too long", 400, "Inference-Header-Content-Length"),
        ("not an image", 400, "not an image"),
        ("not base64", 400, "base64 strings"),
        ("a URL", 400, "never fetches URLs"),
        ("top_k true", 400, "top_k"),
        ("top_k above the classes", 400, "top_k must be an integer between 1 and 10"),
        ("unknown output", 400, "unknown outputs ['probabilities']"),
        ("too many images", 400, f"the limit is {PROTOCOL_MAX_IMAGES}"),
    ],
)
def test_v2_mistakes_are_json_4xx(vision_server, small_photos, case: str, status: int, words: str) -> None:
    photo = small_photos[0].read_bytes()
    header = json.dumps({"inputs": [{"name": "images", "shape": [1, 3, 32, 32], "datatype": "UINT8",
                                     "parameters": {"binary_data_size": 3 * 32 * 32}}]}).encode()  # fmt: skip
    pixels = bytes(3 * 32 * 32)
    one_pixel = {"name": "images", "shape": [1, 3, 32, 32], "datatype": "UINT8", "data": [0] * 3072}
    sent = {
        "unknown model": lambda: _infer(vision_server, _files(1, photo), model="nope"),
        "not JSON": lambda: _infer(vision_server, b"{not json"),
        "no inputs": lambda: _infer(vision_server, {"inputs": []}),
        "unknown input": lambda: _infer(vision_server, {"inputs": [{**one_pixel, "name": "pixels"}]}),
        "two inputs": lambda: _infer(vision_server, {"inputs": [one_pixel, one_pixel]}),
        "wrong shape": lambda: _infer(vision_server, {"inputs": [{**one_pixel, "shape": [1, 3, 16, 64]}]}),
        "data and shape disagree": lambda: _infer(vision_server, {"inputs": [{**one_pixel, "data": [0] * 3000}]}),
        "uint8 out of range": lambda: _infer(vision_server, {"inputs": [{**one_pixel, "data": [256] * 3072}]}),
        "float pixels": lambda: _infer(vision_server, {"inputs": [{**one_pixel, "data": [0.5] * 3072}]}),
        "binary size past the data": lambda: _infer(
            vision_server, header + pixels[:100], **{"Inference-Header-Content-Length": str(len(header))}
        ),
        "bytes after the inputs": lambda: _infer(
            vision_server, header + pixels + b"extra", **{"Inference-Header-Content-Length": str(len(header))}
        ),
        "header length too long": lambda: _infer(
            vision_server, header, **{"Inference-Header-Content-Length": str(len(header) + 10)}
        ),
        "not an image": lambda: _infer(vision_server, _files(1, b"plain text, not an image")),
        "not base64": lambda: _infer(vision_server, {"inputs": [{**_files(1, b"")["inputs"][0], "data": ["%%%"]}]}),
        "a URL": lambda: _infer(
            vision_server, {"inputs": [{**_files(1, b"")["inputs"][0], "data": ["http://127.0.0.1:9/cat.jpg"]}]}
        ),
        "top_k true": lambda: _infer(vision_server, {**_files(1, photo), "parameters": {"top_k": True}}),
        "top_k above the classes": lambda: _infer(vision_server, {**_files(1, photo), "parameters": {"top_k": 11}}),
        "unknown output": lambda: _infer(vision_server, {**_files(1, photo), "outputs": [{"name": "probabilities"}]}),
        "too many images": lambda: _infer(vision_server, _files(PROTOCOL_MAX_IMAGES + 1, photo)),
    }[case]()
    assert sent.status_code == status, sent.text
    body = sent.json()
    assert set(body) == {"error"} and words in body["error"], body


def test_tritonclient_sees_the_refusal(vision_server, small_photos) -> None:
    tensor = triton.InferInput("images", [1, 3, 8, 8], "UINT8").set_data_from_numpy(np.zeros((1, 3, 8, 8), np.uint8))
    with pytest.raises(InferenceServerException, match=r"must have shape \[N, 3, 32, 32\]") as refused:
        client_of(vision_server).infer(CLASSIFIER, [tensor])
    assert refused.value.status() == "400"
    png = encode(imaging.load_rgb(small_photos[0]), "PNG")
    assert client_of(vision_server).infer(CLASSIFIER, [files_input_bytes(png)]).as_numpy("logits").shape == (1, 10)


def files_input_bytes(data: bytes) -> triton.InferInput:
    """One encoded image as the ``image`` BYTES input."""
    return triton.InferInput("image", [1], "BYTES").set_data_from_numpy(np.array([data], dtype=object))
