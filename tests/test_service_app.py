"""The server built in this process from typed settings (``service.app.build_service``): what building checks before
any worker starts, and a built service answering through its ASGI app. The HTTP tests against a real ``bentoml
serve`` are in test_service.py; the entry module's one-line refusals are checked here in a subprocess, as
``bentoml serve`` imports it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from starlette.testclient import TestClient

from inference.contract import BF16, FP32
from inference.model_files import ModelNotFound
from inference.runtimes.choice import RuntimeUnavailable
from inference.runtimes.hardware import cpu_has_bf16
from service.app import build_service
from service.settings import Settings
from tests.helpers import REPO_ROOT


def test_building_checks_the_files_and_the_runtime_settings_first(tmp_path, shapes_onnx) -> None:
    with pytest.raises(ModelNotFound, match="RESNET_LAB_MODEL=.*nope.onnx: no such file; export one with"):
        build_service(Settings(model=str(tmp_path / "nope.onnx")))
    with pytest.raises(ModelNotFound, match="is a detection model; a classification model is needed here"):
        build_service(Settings(model=shapes_onnx["output"]))
    with pytest.raises(RuntimeUnavailable, match="RESNET_LAB_PRECISION=bf16 runs on OpenVINO"):
        build_service(Settings(runtime="onnxruntime", precision=BF16))
    with pytest.raises(OSError, match="cannot read the key file"):
        build_service(Settings(api_keys=f"@{tmp_path / 'missing-keys'}"))


def test_a_service_built_in_process_answers_through_its_asgi_app(photos) -> None:
    service = build_service(Settings(precision=FP32))  # the embedded default model
    assert set(service.apis) == {"classify", "detect"}
    with TestClient(service.to_asgi()) as client:  # the lifespan makes the instance, as a worker does
        answer = client.post("/classify", files={"image": ("a.jpg", photos[0].read_bytes())}, data={"top_k": "2"})
        assert answer.status_code == 200 and len(answer.json()["predictions"]) == 2
        runs = client.get("/info").json()["runtime"]
        assert runs["precision"] == FP32 and "fp32 as RESNET_LAB_PRECISION asks" in runs["reason"]
        missing = client.post("/detect", files={"image": ("a.jpg", photos[0].read_bytes())})
        assert missing.status_code == 404 and "RESNET_LAB_DETECTOR=detector.onnx" in missing.json()["error"]


@pytest.mark.parametrize(
    ("env", "says"),
    [
        (
            {"RESNET_LAB_RUNTIME": "tensorrt"},
            "RESNET_LAB_RUNTIME='tensorrt' must be one of auto, onnxruntime, openvino",
        ),
        ({"RESNET_LAB_RUNTIME": "onnxruntime", "RESNET_LAB_PRECISION": "bf16"}, "RESNET_LAB_PRECISION=bf16 runs on"),
        ({"RESNET_LAB_PRECISION": "bf16"}, "bf16 units" if not cpu_has_bf16() else None),
    ],
)
def test_the_entry_module_stops_in_one_line_naming_the_setting(env: dict[str, str], says: str | None) -> None:
    result = subprocess.run([sys.executable, "-c", "import service.service"], cwd=REPO_ROOT,
                            env={**os.environ, **env}, capture_output=True, text=True)  # fmt: skip
    if says is None:  # bf16 on a CPU with bf16 units: the default model's recorded check allows it
        assert result.returncode == 0, result.stderr
        return
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("resnet-lab service:")]
    assert says in line
