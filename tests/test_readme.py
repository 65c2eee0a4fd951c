"""The README's runnable commands work as written, in reading order, on a copy of the repository as a clone has it
(no data folder): the server block starts the service, and a command followed by a generated output block prints
that output; the published-weights block exports files of torchvision's layout under their published names (random
weights: nothing is downloaded) and serves them, and its client block talks to that server. The only change: the
port, so that tests may run beside a server on 3000."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.helpers import REPO_ROOT, TEST_ENV
from tests.server import LocalServer

MARK = re.compile(r"<!-- runnable: (?P<kind>[a-z ]+) -->\n```bash\n(?P<command>.*?)```", re.DOTALL)
README_PORT = "127.0.0.1:3000"
AS_USERS_RUN = {name: "" for name in TEST_ENV}  # the defaults users get, not the session's fp32
BF16_SCORE = 0.02  # how far bf16's scores may lie from fp32's for the shipped model on the README's photo


def runnable_blocks(text: str) -> list[tuple[str, str, str | None]]:
    """(kind, command, the JSON shown after it or None) of each block marked runnable, in order."""
    blocks = []
    for match in MARK.finditer(text):
        shown = None
        if match["kind"] == "output follows":
            after = text[match.end() :]
            shown = re.search(r"```json\n(.*?)```", after, re.DOTALL).group(1)
        blocks.append((match["kind"], match["command"].strip(), shown))
    return blocks


def clone_like_copy(destination: Path) -> Path:
    """The files a clone has (tracked and not ignored), with their times, and the already installed ``.venv``."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO_ROOT, capture_output=True
    ).stdout.split(b"\0")
    for name in filter(None, (entry.decode() for entry in listed)):
        source = REPO_ROOT / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)  # times kept: make sees .venv as up to date
    (destination / ".venv").symlink_to(REPO_ROOT / ".venv")
    return destination


def test_the_readme_has_runnable_blocks_and_each_kind_is_known() -> None:
    blocks = runnable_blocks((REPO_ROOT / "README.md").read_text())
    assert [kind for kind, _, _ in blocks] == ["server", "output follows", "published weights", "client"]
    assert all(shown is not None for kind, _, shown in blocks if kind == "output follows")


@pytest.mark.skipif(shutil.which("curl") is None, reason="the README's commands use curl: apt-get install curl")
def test_the_readme_quick_start_works_as_written(tmp_path: Path) -> None:
    if not (REPO_ROOT / ".venv" / "bin" / ".installed").is_file():
        pytest.skip("needs the .venv that `make` installs")
    work = clone_like_copy(tmp_path / "clone")
    env = {"BENTOML_HOME": str(tmp_path / "bentoml"), "RESNET_LAB_DATA": str(tmp_path / "no-data"), **AS_USERS_RUN}
    server = None
    try:
        for kind, command, shown in runnable_blocks((REPO_ROOT / "README.md").read_text())[:2]:  # the quick start
            if kind == "server":
                server = LocalServer(
                    ["bash", "-c", command], {**env, "PORT": "{port}"}, tmp_path / "serve.log", cwd=work
                )
                continue
            assert server is not None, "a command block needs the server block before it"
            command = command.replace(README_PORT, f"127.0.0.1:{server.port}")
            result = subprocess.run(["bash", "-c", command], cwd=work, env={**os.environ, **env},
                                    capture_output=True, text=True, timeout=120)  # fmt: skip
            assert result.returncode == 0, result.stderr
            answer, expected = json.loads(result.stdout), json.loads(shown)
            assert answer["model"] == expected["model"]
            assert [p["index"] for p in answer["predictions"]] == [p["index"] for p in expected["predictions"]]
            # the README shows fp32's answer; a CPU with bf16 units answers in bf16 (the model's check allows it)
            served = httpx.get(f"{server.url}/info").json()["runtime"]["precision"]
            assert [p["score"] for p in answer["predictions"]] == pytest.approx(
                [p["score"] for p in expected["predictions"]], abs=1e-6 if served == "fp32" else BF16_SCORE
            )
    finally:
        if server is not None:
            server.stop()


def published_files(folder: Path) -> None:
    """torchvision's ResNet-50 and Faster R-CNN (random weights, torchvision's own modules: their real layouts) under
    the names of the published files the README exports."""
    import torch
    import torchvision

    torch.manual_seed(0)
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), folder / "resnet50-11ad3fa6.pth")
    detector = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    torch.save(detector.state_dict(), folder / "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth")


@pytest.mark.skipif(shutil.which("curl") is None, reason="the README's commands use curl: apt-get install curl")
def test_the_readme_published_weights_commands_work_as_written(tmp_path: Path) -> None:
    if not (REPO_ROOT / ".venv" / "bin" / ".installed").is_file():
        pytest.skip("needs the .venv that `make` installs")
    work = clone_like_copy(tmp_path / "clone")
    published_files(work)
    activated = {"PATH": f"{REPO_ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}"}  # source .venv/bin/activate
    env = {
        **os.environ,
        **activated,
        "BENTOML_HOME": str(tmp_path / "bentoml"),
        "RESNET_LAB_DATA": str(tmp_path / "no"),
    }
    blocks = {kind: command for kind, command, _ in runnable_blocks((REPO_ROOT / "README.md").read_text())}
    *exports, serve = blocks["published weights"].splitlines()
    for command in exports:  # as written: no --arch, no --resize-size, no data folder
        result = subprocess.run(["bash", "-c", command], cwd=work, env=env, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stderr[-2000:]
        assert "photos shipped in tests/data" in result.stdout  # the export says what it verified on
    assert (
        "resize 232 crop 224"
        in subprocess.run(  # the V2 file's transform, from its name
            ["bash", "-c", exports[0]], cwd=work, env=env, capture_output=True, text=True, timeout=900
        ).stdout
    )
    with LocalServer(["bash", "-c", serve], {**env, "PORT": "{port}"}, tmp_path / "serve.log", cwd=work) as server:
        info = httpx.get(f"{server.url}/info").json()
        assert info["weights"]["weights"] == "ResNet50_Weights.IMAGENET1K_V2" and not info["weights"]["published"]
        assert info["detector"]["model"] == "faster_rcnn_resnet50_fpn"
        curl, evaluate = blocks["client"].splitlines()
        for command in (curl, evaluate):
            command = command.replace(README_PORT, f"127.0.0.1:{server.port}")
            result = subprocess.run(["bash", "-c", command], cwd=work, env=env, capture_output=True, text=True,
                                    timeout=900)  # fmt: skip
            assert result.returncode == 0, result.stderr[-2000:]
            if command.startswith("curl"):
                assert json.loads(result.stdout)["model"] == "faster_rcnn_resnet50_fpn"
            else:
                assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all" in result.stdout
