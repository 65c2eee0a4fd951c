"""`bentoml build` works offline from bentofile.yaml and the bento holds only what serving needs."""

from __future__ import annotations

import os
import shutil
import subprocess

import yaml

from tests.helpers import BIN, REPO_ROOT


def test_bentoml_build_offline(tmp_path, cifar_export) -> None:
    project = tmp_path / "project"
    (project / "service" / "default_model").mkdir(parents=True)
    shutil.copy(REPO_ROOT / "bentofile.yaml", project)
    for source in (REPO_ROOT / "service").glob("*.py"):
        shutil.copy(source, project / "service")
    model = project / "service" / "default_model" / "model.onnx"  # where the project's default model lives
    shutil.copy(cifar_export["output"], model)
    (project / "service" / "notes.txt").write_text("not for the bento")
    (project / "training").mkdir()
    (project / "training" / "train.py").write_text("import torch\n")

    home = tmp_path / "bentoml"
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "True"}
    env.pop("RESNET_LAB_MODEL", None)  # the embedded default model is found by itself
    result = subprocess.run(
        [str(BIN / "bentoml"), "build", "--output", "tag"], cwd=project, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr

    (bento,) = [path for path in (home / "bentos" / "resnet_lab").iterdir() if path.name != "latest"]
    info = yaml.safe_load((bento / "bento.yaml").read_text())
    assert info["service"] == "service.service:VisionService"
    routes = {route["name"]: route for route in info["schema"]["routes"]}
    assert routes["classify"]["route"] == "/classify" and "infer" not in routes

    source = bento / "src"
    shipped = sorted(str(path.relative_to(source)) for path in source.rglob("*") if path.is_file())
    assert "service/default_model/model.onnx" in shipped and "service/service.py" in shipped
    assert (source / "service" / "default_model" / "model.onnx").read_bytes() == model.read_bytes()
    assert not any(name.startswith("training") or name.endswith(".txt") for name in shipped), shipped

    requirements = (bento / "env" / "python" / "requirements.txt").read_text().lower()
    assert "onnxruntime-gpu" in requirements and "pillow" in requirements
    assert "torch" not in requirements
    dockerfile = (bento / "env" / "docker" / "Dockerfile").read_text()
    assert "nvidia/cuda" in dockerfile


def test_the_image_runs_the_python_the_project_requires() -> None:
    import tomllib

    import yaml

    required = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    image = yaml.safe_load((REPO_ROOT / "bentofile.yaml").read_text())["docker"]["python_version"]
    assert required == f">={image},<3.{int(image.split('.')[1]) + 1}"  # one minor version, the image's
