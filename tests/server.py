"""Run a server on this machine as a subprocess, wait until it answers, measure it, stop it.

The tests, the benchmarks and ``eval_coco.py``'s server checks start the real ``bentoml serve`` through this one
harness. Not part of the bento (``bentofile.yaml`` leaves it out).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalServer:
    """A server subprocess in its own session: ``{port}`` in the command and the environment is replaced by ``port``
    (default: a free one)."""

    def __init__(
        self,
        command: list[str],
        env: dict[str, str],
        log: Path,
        ready_path: str = "/readyz",
        timeout: float = 180,
        port: int | None = None,
        cwd: Path = REPO_ROOT,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        command = [part.replace("{port}", str(self.port)) for part in command]
        env = {name: value.replace("{port}", str(self.port)) for name, value in env.items()}
        with open(log, "wb") as stream:
            self.process = subprocess.Popen(
                command, cwd=cwd, env={**os.environ, **env}, stdout=stream, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        try:
            self._wait_ready(ready_path, timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, ready_path: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + ready_path, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready after {timeout:.0f} s:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.3)

    def pids(self) -> list[int]:
        """The server process and all its children (BentoML runs its API worker as a child)."""
        import psutil

        root = psutil.Process(self.process.pid)
        return [root.pid, *(child.pid for child in root.children(recursive=True))]

    def stop(self) -> None:
        """SIGTERM the whole session, SIGKILL what is left after 20 s."""
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def bentoml_serve(
    env: dict[str, str],
    log: Path,
    timeout: float = 180,
    port: int | None = None,
    options: Sequence[str] = (),
    cwd: Path = REPO_ROOT,
) -> LocalServer:
    """``bentoml serve`` of this repository (``bentofile.yaml``; or of the checkout ``cwd``) with ``env``
    (``RESNET_LAB_*``, ``BENTOML_HOME``) and more ``options`` of ``bentoml serve``."""
    command = [str(BIN / "bentoml"), "serve", "--host", "127.0.0.1", "--port", "{port}", *options]
    return LocalServer(command, {"BENTOML_DO_NOT_TRACK": "True", **env}, log, "/readyz", timeout, port, cwd)


IMAGE_DOCKERFILE_TEMPLATE = REPO_ROOT / "deploy" / "bento" / "Dockerfile.j2"


def image_command() -> list[str]:
    """The container image's ``CMD`` (``deploy/bento/Dockerfile.j2``): ``serve`` and its options."""
    for line in IMAGE_DOCKERFILE_TEMPLATE.read_text().splitlines():
        if line.startswith("CMD "):
            return json.loads(line.removeprefix("CMD "))
    raise ValueError(f"no CMD line in {IMAGE_DOCKERFILE_TEMPLATE}")


def drain_timeout_s() -> int:
    """The image's bound on finishing requests in flight after SIGTERM (``--timeout-graceful-shutdown``)."""
    command = image_command()
    return int(command[command.index("--timeout-graceful-shutdown") + 1])
