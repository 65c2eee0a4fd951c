"""`bentoml build` works offline from bentofile.yaml (CPU image) and deploy/bento/bentofile-cuda.yaml (CUDA image),
the bento holds only what serving needs, and the image's entry command (its ENTRYPOINT and CMD) serves from the
unpacked bento. No container is built: no engine runs on these machines."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

from tests.manifests import KUBERNETES, one, render
from tests.server import BIN, REPO_ROOT, LocalServer, image_command

CUDA_BENTOFILE = Path("deploy/bento/bentofile-cuda.yaml")


@pytest.fixture(scope="module")
def bentos(tmp_path_factory: pytest.TempPathFactory, cifar_export: dict) -> dict[str, Path]:
    """The CPU and CUDA bentos of a copy of the project (its default model: the test export), by name."""
    project = tmp_path_factory.mktemp("project")
    shutil.copy(REPO_ROOT / "bentofile.yaml", project)
    shutil.copytree(REPO_ROOT / "deploy" / "bento", project / "deploy" / "bento")
    code = shutil.ignore_patterns("__pycache__", "default_model")
    for package in ("service", "inference", "toolkit"):
        shutil.copytree(REPO_ROOT / package, project / package, ignore=code)
    (project / "inference" / "default_model").mkdir()
    shutil.copy(cifar_export["output"], project / "inference" / "default_model" / "model.onnx")
    (project / "service" / "notes.txt").write_text("not for the bento")
    (project / "training").mkdir()
    (project / "training" / "train.py").write_text("import torch\n")

    home = project.parent / "bentoml"
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "True"}
    env.pop("RESNET_LAB_MODEL", None)  # the embedded default model is found by itself
    built = {}
    for name, options in (("cpu", []), ("cuda", ["-f", str(CUDA_BENTOFILE)])):
        result = subprocess.run([str(BIN / "bentoml"), "build", *options, "--output", "tag"], cwd=project, env=env,
                                capture_output=True, text=True)  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        tag = result.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
        built[name] = home / "bentos" / "resnet_lab" / tag.split(":")[1]
    built["project"] = project
    return built


def test_bentoml_build_offline(bentos: dict[str, Path]) -> None:
    bento = bentos["cpu"]
    info = yaml.safe_load((bento / "bento.yaml").read_text())
    assert info["service"] == "service.service:VisionService"
    routes = {route["name"]: route for route in info["schema"]["routes"]}
    assert routes["classify"]["route"] == "/classify" and "infer" not in routes

    source = bento / "src"
    shipped = sorted(str(path.relative_to(source)) for path in source.rglob("*") if path.is_file())
    assert "inference/default_model/model.onnx" in shipped and "service/shutdown.py" in shipped
    assert "inference/runtimes/openvino_runtime.py" in shipped and "toolkit/errors.py" in shipped
    model = bentos["project"] / "inference" / "default_model" / "model.onnx"
    assert (source / "inference" / "default_model" / "model.onnx").read_bytes() == model.read_bytes()
    assert not any(name.startswith("training") or name.endswith(".txt") for name in shipped), shipped

    requirements = (bento / "env" / "python" / "requirements.txt").read_text().lower().split()
    assert "onnxruntime" in requirements and "onnxruntime-gpu" not in requirements and "pillow" in requirements
    assert "openvino" in requirements  # the CPU image runs OpenVINO
    assert not any(line.startswith("torch") for line in requirements)
    dockerfile = (bento / "env" / "docker" / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in dockerfile and "nvidia/cuda" not in dockerfile
    assert f"CMD {image_command()}".replace("'", '"') in dockerfile


def test_cuda_bento_builds_offline(bentos: dict[str, Path]) -> None:
    bento = bentos["cuda"]
    requirements = (bento / "env" / "python" / "requirements.txt").read_text().lower().split()
    assert "onnxruntime-gpu" in requirements and "onnxruntime" not in requirements
    dockerfile = (bento / "env" / "docker" / "Dockerfile").read_text()
    assert "FROM nvidia/cuda:" in dockerfile and f"CMD {image_command()}".replace("'", '"') in dockerfile
    cpu, cuda = (sorted(path.relative_to(bentos[name] / "src") for path in (bentos[name] / "src").rglob("*"))
                 for name in ("cpu", "cuda"))  # fmt: skip
    assert cpu == cuda


def test_bentofiles_differ_only_in_the_runtime() -> None:
    cpu = yaml.safe_load((REPO_ROOT / "bentofile.yaml").read_text())
    cuda = yaml.safe_load((REPO_ROOT / CUDA_BENTOFILE).read_text())
    assert cuda["docker"].pop("cuda_version") and cpu["docker"] == cuda["docker"]
    swap = {"onnxruntime": "onnxruntime-gpu"}
    cpu_packages = [swap.get(package, package) for package in cpu["python"].pop("packages") if package != "openvino"]
    assert cpu_packages == cuda["python"].pop("packages")  # the CUDA image runs ONNX Runtime's CUDA provider
    assert cpu == cuda


def test_image_entry_command_serves_from_the_unpacked_bento(
    bentos: dict[str, Path], small_photos: list[Path], tmp_path: Path
) -> None:
    bento = tmp_path / "bento"  # the image's BENTO_PATH, /home/bentoml/bento
    shutil.copytree(bentos["cpu"], bento)
    dockerfile = (bento / "env" / "docker" / "Dockerfile").read_text()
    (entrypoint,) = [line for line in dockerfile.splitlines() if line.startswith("ENTRYPOINT ")]
    assert entrypoint == 'ENTRYPOINT [ "/home/bentoml/bento/env/docker/entrypoint.sh" ]'
    info = yaml.safe_load((bento / "bento.yaml").read_text())
    env = {
        "BENTO_PATH": str(bento), "BENTOML_HOME": str(tmp_path / "home"), "BENTOML_CONTAINERIZED": "true",
        "BENTOML_HOST": "127.0.0.1", "BENTOML_PORT": "{port}", "BENTOML_DO_NOT_TRACK": "True", "PYTHONPATH": "",
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "RESNET_LAB_MODEL": "",
        **{variable["name"]: variable["value"] for variable in info["envs"]},
    }  # fmt: skip
    command = ["bash", str(bento / "env" / "docker" / "entrypoint.sh"), *image_command()]
    with LocalServer(command, env, tmp_path / "image.log", cwd=bento) as server:
        answer = httpx.post(server.url + "/classify", files={"image": small_photos[0].read_bytes()}, timeout=60)
        assert answer.status_code == 200 and len(answer.json()["predictions"]) == 5, answer.text
        shown = httpx.get(server.url + "/info", timeout=10).json()
        assert Path(shown["model_path"]).is_relative_to(bento / "src"), shown["model_path"]  # the bento's code
        (container,) = one(render(KUBERNETES / "base"), "Deployment")["spec"]["template"]["spec"]["containers"]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert httpx.get(server.url + container[probe]["httpGet"]["path"], timeout=10).status_code == 200
        server.process.send_signal(signal.SIGTERM)  # the entrypoint execs bentoml serve: it is the main process
        assert server.process.wait(timeout=60) == 0


def test_the_image_runs_the_python_the_project_requires() -> None:
    import tomllib

    required = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    image = yaml.safe_load((REPO_ROOT / "bentofile.yaml").read_text())["docker"]["python_version"]
    assert required == f">={image},<3.{int(image.split('.')[1]) + 1}"  # one minor version, the image's
