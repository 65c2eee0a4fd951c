"""The README's runnable commands work as written, in reading order, on a copy of the repository as a clone has it
(no data folder): the server block starts the service, and a command followed by a generated output block prints
that output (the only change: the port, so that tests may run beside a server on 3000)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT
from tests.server import LocalServer

MARK = re.compile(r"<!-- runnable: (?P<kind>[a-z ]+) -->\n```bash\n(?P<command>.*?)```", re.DOTALL)
README_PORT = "127.0.0.1:3000"


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
    assert [kind for kind, _, _ in blocks] == ["server", "output follows"]
    assert all(shown is not None for kind, _, shown in blocks if kind == "output follows")


@pytest.mark.skipif(shutil.which("curl") is None, reason="the README's commands use curl: apt-get install curl")
def test_the_readme_quick_start_works_as_written(tmp_path: Path) -> None:
    if not (REPO_ROOT / ".venv" / "bin" / ".installed").is_file():
        pytest.skip("needs the .venv that `make` installs")
    work = clone_like_copy(tmp_path / "clone")
    env = {"BENTOML_HOME": str(tmp_path / "bentoml"), "RESNET_LAB_DATA": str(tmp_path / "no-data")}
    server = None
    try:
        for kind, command, shown in runnable_blocks((REPO_ROOT / "README.md").read_text()):
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
            assert [p["score"] for p in answer["predictions"]] == pytest.approx(
                [p["score"] for p in expected["predictions"]], abs=1e-6
            )
    finally:
        if server is not None:
            server.stop()
