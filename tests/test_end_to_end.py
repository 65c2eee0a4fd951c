"""A real run end to end: training.train -> export -> bentoml serve -> /classify agrees with training.evaluate,
and the run's record becomes a model card whose figures are the run's own."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from export.command import main as export_main
from report import modelcard, runrecord
from training import evaluate
from training.cifar10 import load_cifar10

SUBSET = 1000  # test images the ONNX file is compared on
OVER_HTTP = 50  # of which are sent to the server


@pytest.fixture(scope="module")
def exported(trained_cifar_run, tmp_path_factory) -> Path:
    run, _ = trained_cifar_run
    output = tmp_path_factory.mktemp("e2e") / "model.onnx"
    export_main(["--checkpoint", str(run / "checkpoints" / "last.pt"), "--output", str(output)])
    return output


def test_served_answers_are_the_evaluated_ones(trained_cifar_run, exported, cifar_dir, serve) -> None:
    run, _ = trained_cifar_run
    evaluated = evaluate.evaluate_checkpoint(run / "checkpoints" / "last.pt", cifar_dir, max_samples=SUBSET)
    test = load_cifar10(cifar_dir, train=False)
    images, labels = test.images[:SUBSET].numpy(), test.labels[:SUBSET].numpy()
    session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    onnx_top1 = session.run(["logits"], {"images": images})[0].argmax(1)
    assert onnx_top1.tolist() == evaluated["predictions"]
    assert float((onnx_top1 != labels).mean()) == evaluated["top1_error"]
    with serve(exported) as client:
        for index in range(OVER_HTTP):
            png = io.BytesIO()
            Image.fromarray(images[index].transpose(1, 2, 0)).save(png, "PNG")  # the test pixels, losslessly
            response = client.post("/classify", files={"image": ("x.png", png.getvalue())}, data={"top_k": "1"})
            assert response.status_code == 200, response.text
            assert response.json()["predictions"][0]["index"] == evaluated["predictions"][index], index


def test_the_model_card_is_made_of_the_runs_own_figures(trained_cifar_run, tmp_path) -> None:
    run, row = trained_cifar_run
    record = runrecord.record_run(run, tmp_path / "record", "python -m training.train --recipe cifar10_resnet20 ...")
    assert "CPU" in record["hardware"] and record["torch"]  # from the sessions the engine kept, not typed in
    card = modelcard.package(tmp_path / "record", tmp_path / "card", run / "checkpoints" / "last.pt")
    text = card.read_text()
    assert f"**{100 * row['test_error']:.2f}%**" in text
    assert record["hardware"] in text and record["torch"][0] in text
    metadata = modelcard.read_metadata(tmp_path / "card" / "model.onnx")
    assert (tmp_path / "card" / "labels.txt").read_text().split() == metadata.labels
    assert json.loads(metadata.extra["metrics"])[-1]["test_error"] == pytest.approx(row["test_error"])
    assert (tmp_path / "card" / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert np.isfinite(record["wall_time_s"])
