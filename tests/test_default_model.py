"""The embedded default model: shipped complete, served by default, and as accurate over HTTP as offline."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from PIL import Image

from inference.contract import BF16, DEFAULT_MODEL_DIR, FP32
from inference.model import LoadedModel
from inference.model_files import read_metadata
from inference.runtimes.hardware import cpu_has_bf16
from inference.settings import InferenceSettings
from tests.helpers import REPO_ROOT, dataset, offline
from toolkit import data_folder
from training.cifar10 import load_cifar10

DEFAULT_DIR = DEFAULT_MODEL_DIR
RECORD_DIR = REPO_ROOT / "docs" / "runs" / "cifar10_resnet20_full"  # the run the default model comes from
PER_CLASS = 20  # 200 real test images, 20 of each class


def _metadata(path: Path) -> dict[str, str]:
    return {entry.key: entry.value for entry in onnx.load(str(path), load_external_data=False).metadata_props}


def _cifar_test_images(labels: list[str]) -> list[tuple[bytes, int]]:
    """(encoded image, class index) for the first ``PER_CLASS`` real test images of each class."""
    dataset("cifar10")
    found = [(data, labels.index(name)) for data, name in data_folder.cifar_images(PER_CLASS * len(labels))]
    assert len(found) == PER_CLASS * len(labels)
    return found


def test_default_model_ships_complete_and_meets_its_card(cifar_dir: Path) -> None:
    for name in ("model.onnx", "labels.txt", "curve.png", "MODEL_CARD.md"):
        assert (DEFAULT_DIR / name).is_file(), f"inference/default_model/{name} is missing"
    assert (DEFAULT_DIR / "model.onnx").stat().st_size < 5_000_000
    metadata = _metadata(DEFAULT_DIR / "model.onnx")
    labels = json.loads(metadata["labels"])
    assert labels == (DEFAULT_DIR / "labels.txt").read_text().split()
    rows = [json.loads(line) for line in (RECORD_DIR / "metrics.jsonl").read_text().splitlines()]
    card_error = json.loads(metadata["metrics"])[-1]["test_error"]
    assert card_error == pytest.approx(rows[-1]["test_error"])
    card = (DEFAULT_DIR / "MODEL_CARD.md").read_text()
    assert f"{100 * card_error:.2f}%" in card and "JPEG-compressed" in card
    # the shipped file itself, on all 10,000 test images, errs what its card says (within 0.05 points)
    test = load_cifar10(cifar_dir, train=False)
    session = ort.InferenceSession(str(DEFAULT_DIR / "model.onnx"), providers=["CPUExecutionProvider"])
    predictions = np.concatenate(
        [
            session.run(["logits"], {"images": test.images[start : start + 1000].numpy()})[0].argmax(1)
            for start in range(0, len(test), 1000)
        ]
    )
    assert len(predictions) == 10_000
    assert float((predictions != test.labels.numpy()).mean()) == pytest.approx(card_error, abs=0.0005)


def test_http_accuracy_on_200_real_images_equals_offline_evaluation(serve) -> None:
    model_path = DEFAULT_DIR / "model.onnx"
    metadata = _metadata(model_path)
    labels = json.loads(metadata["labels"])
    images = _cifar_test_images(labels)

    batch = np.stack([np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).transpose(2, 0, 1) for data, _ in images])
    expected = offline(model_path).logits(batch).argmax(1)  # as the test server runs it

    with serve("") as client:  # RESNET_LAB_MODEL empty: the embedded default model
        assert Path(client.get("/info").json()["model_path"]).resolve() == model_path.resolve()
        served = []
        for data, _ in images:
            response = client.post("/classify", files={"image": ("x.jpg", data, "image/jpeg")}, data={"top_k": "1"})
            assert response.status_code == 200, response.text
            served.append(response.json()["predictions"][0]["index"])
    truth = np.array([label for _, label in images])
    http_accuracy, offline_accuracy = float((np.array(served) == truth).mean()), float((expected == truth).mean())
    assert served == expected.tolist()
    assert http_accuracy == offline_accuracy
    expected = 1 - json.loads(metadata["metrics"])[-1]["test_error"]
    assert abs(http_accuracy - expected) < 0.08  # 200 images: well inside sampling noise of the full-test figure


def test_under_auto_the_default_model_answers_as_its_bf16_check_says(cifar_dir: Path) -> None:
    # auto: bf16 where OpenVINO reports bf16 units (the file records a passed check on all 10,000 test images), fp32
    # elsewhere; either way its answers agree with fp32's on >= 99.5% of the test images, error within 0.1 point
    model_path = DEFAULT_DIR / "model.onnx"
    record = read_metadata(model_path).check(BF16)
    assert record["images"] == 10_000 and record["passed"] and record["top1_agreement"] >= 0.995
    auto = LoadedModel.load(model_path, InferenceSettings())
    assert auto.precision == (BF16 if cpu_has_bf16() else FP32), auto.reason
    fp32 = LoadedModel.load(model_path, InferenceSettings(precision=FP32))
    test = load_cifar10(cifar_dir, train=False)
    pixels, truth = test.images.numpy(), test.labels.numpy()
    predicted = {
        name: np.concatenate([model.logits(pixels[i : i + 1000]).argmax(1) for i in range(0, len(pixels), 1000)])
        for name, model in (("auto", auto), ("fp32", fp32))
    }
    agreement = float((predicted["auto"] == predicted["fp32"]).mean())
    errors = {name: float((top1 != truth).mean()) for name, top1 in predicted.items()}
    print(f"auto ({auto.precision}, {auto.reason}): top-1 = fp32's on {agreement:.2%}, errors {errors}")
    assert agreement >= 0.995 and abs(errors["auto"] - errors["fp32"]) <= 0.001
