"""python -m export: one self-contained, verified ONNX file to the service's contract, registered in the store."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from export import classifier as exporter
from export.command import main as export_main
from export.onnx_file import Destination, Verification, sha256_of
from inference.contract import ModelMetadata
from tests.helpers import BIN
from toolkit.errors import UsageError
from training.classifier import classifier_from_checkpoint, load_classifier_checkpoint


def _session(path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_checkpoint_export_graph_metadata_and_store(cifar_export, cifar_checkpoint, bentoml_home) -> None:
    report = cifar_export
    path = cifar_checkpoint.with_suffix(".onnx")
    assert report["output"] == str(path) and path.is_file()
    model = onnx.load(str(path), load_external_data=False)
    onnx.checker.check_model(model, full_check=True)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    assert not list(path.parent.glob("*.data"))
    assert max(op.version for op in model.opset_import if op.domain in ("", "ai.onnx")) >= 18
    (graph_input,) = model.graph.input
    (graph_output,) = model.graph.output
    assert graph_input.name == "images" and graph_input.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert graph_output.name == "logits" and graph_output.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    input_dims = graph_input.type.tensor_type.shape.dim
    assert input_dims[0].dim_param and [d.dim_value for d in input_dims[1:]] == [3, 32, 32]

    props = {entry.key: entry.value for entry in model.metadata_props}
    state = load_classifier_checkpoint(cifar_checkpoint)
    assert props["task"] == "classification" and ModelMetadata.from_props(props).labels == state["labels"]
    assert json.loads(props["labels"]) == state["labels"]
    assert (int(props["resize_size"]), int(props["crop_size"])) == (32, 32)
    assert props["model_name"] == "cifar_resnet20"
    assert json.loads(props["recipe"]) == state["recipe"]
    assert json.loads(props["metrics"]) == state["metrics"]
    assert props["source_sha256"] == sha256_of(cifar_checkpoint)

    # dynamic batch in ORT, and normalisation inside the graph: raw uint8 in, the checkpoint's logits out
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        expected = classifier_from_checkpoint(state).eval()(images).numpy()
    got = _session(path).run(["logits"], {"images": images.numpy()})[0]
    assert got.shape == (5, 10)
    np.testing.assert_allclose(got, expected, atol=1e-4 * (1 + np.abs(expected).max()), rtol=0)
    assert report["verify"]["images"] == 8 and report["verify"]["max_abs_diff"] <= report["verify"]["tolerance"]

    # registered in the BentoML model store: `bentoml models list` shows it, the file inside is the same
    tag = report["bento_model"]
    env = {**os.environ, "BENTOML_HOME": str(bentoml_home)}
    listing = subprocess.run(
        [str(BIN / "bentoml"), "models", "list", "-o", "json"], env=env, capture_output=True, text=True, check=True
    )
    assert tag in [entry["tag"] for entry in json.loads(listing.stdout)]
    name, version = tag.split(":")
    stored = bentoml_home / "models" / name / version / "model.onnx"
    assert sha256_of(stored) == sha256_of(path)


def test_torchvision_state_dict_export_has_imagenet_labels(resnet18_export, torchvision_state_dict) -> None:
    report = resnet18_export
    model = onnx.load(report["output"], load_external_data=False)
    props = {entry.key: entry.value for entry in model.metadata_props}
    labels = json.loads(props["labels"])
    assert len(labels) == 1000 and labels[0] == "tench" and labels[999] == "toilet_tissue"
    assert (props["model_name"], props["resize_size"], props["crop_size"]) == ("resnet18", "256", "224")
    assert props["source_sha256"] == sha256_of(torchvision_state_dict)
    # the exporter compared ORT with PyTorch on real ImageNet photos before writing
    assert report["verify"]["images"] == 8 and report["verify"]["max_abs_diff"] <= report["verify"]["tolerance"]


def test_verification_mismatch_exits_and_writes_nothing(
    monkeypatch, tmp_path, cifar_export, cifar_checkpoint, small_photos
) -> None:
    spec = exporter.spec_from_checkpoint(cifar_checkpoint)
    good_graph = Path(cifar_export["output"]).read_bytes()
    with torch.no_grad():  # the graph no longer matches the PyTorch model it claims to be
        spec.classifier.model.fc.bias.add_(torch.linspace(-3, 3, 10))
    monkeypatch.setattr(exporter, "export_onnx_bytes", lambda classifier, crop: good_graph)
    output = tmp_path / "model.onnx"
    with pytest.raises(UsageError, match="verification FAILED"):
        exporter.export_classifier(spec, Destination(output, register=False), Verification(small_photos[0].parent))
    assert not output.exists() and not list(tmp_path.iterdir())


def test_cli_errors_are_readable(tmp_path, cifar_checkpoint, torchvision_state_dict) -> None:
    with pytest.raises(UsageError, match="checkpoint not found"):
        export_main(["--checkpoint", str(tmp_path / "missing.pt"), "--output", str(tmp_path / "m.onnx")])
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(cifar_checkpoint.read_bytes()[:1000])
    with pytest.raises(UsageError, match="truncated, corrupt"):
        export_main(["--checkpoint", str(corrupt), "--output", str(tmp_path / "m.onnx")])
    with pytest.raises(UsageError, match="does not fit resnet50"):
        export_main(
            ["--torchvision-state-dict", str(torchvision_state_dict), "--arch", "resnet50", "--output", "x.onnx"]
        )
    with pytest.raises(UsageError, match="no images"):
        export_main(
            ["--checkpoint", str(cifar_checkpoint), "--output", str(tmp_path / "m.onnx")]
            + ["--verify-images", str(tmp_path)]
        )
    assert not (tmp_path / "m.onnx").exists()
