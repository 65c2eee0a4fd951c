"""The container image, run as Kubernetes runs it: the checks ``tests/test_image.py`` asserts and ``bench/image.py``
records. The image serves on ``BENTOML_PORT``, runs as the numeric non-root user the manifests name, answers
``/classify`` and its probe paths, and exits 0 on SIGTERM within the manifests' grace period."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass

import httpx

from tests.manifests import KUBERNETES, one, render
from tests.server import REPO_ROOT

PHOTO = REPO_ROOT / "tests" / "data" / "coco" / "val2017" / "000000119828.jpg"
CONTAINER_PORT = 8080  # BENTOML_PORT inside: not bentoml's default, so the setting is what makes it listen there


def engine() -> str | None:
    """docker where its engine answers, else podman (as deploy/image/build.sh picks); None without either."""
    if shutil.which("docker") and subprocess.run(["docker", "info"], capture_output=True).returncode == 0:
        return "docker"
    return "podman" if shutil.which("podman") else None


def run(command: list[str], **options: object) -> subprocess.CompletedProcess:
    """A command with the project's podman settings (deploy/image/containers.conf), its output kept."""
    env = {**os.environ, "CONTAINERS_CONF": str(REPO_ROOT / "deploy" / "image" / "containers.conf")}
    return subprocess.run(command, env=env, capture_output=True, text=True, **options)


def build(image: str) -> float:
    """`make image IMAGE=image`; its seconds (a failed build raises with its last lines)."""
    started = time.perf_counter()
    built = run(["make", "image", f"IMAGE={image}"], cwd=REPO_ROOT)
    if built.returncode != 0:
        raise RuntimeError(f"make image failed: {(built.stdout + built.stderr)[-3000:]}")
    return time.perf_counter() - started


@dataclass
class Observed:
    """What the running image showed."""

    configured_user: str  # the image's USER
    expected_user: str  # runAsUser:runAsGroup of the manifests
    process_uid: str
    ready_seconds: float
    classify_status: int
    top_label: str
    probes: list[int]
    exit_code: str
    stop_seconds: float
    grace_seconds: int
    size_mb: float


def wait_ready(url: str, seconds: float) -> float:
    """Seconds until ``/readyz`` answers 200."""
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return time.perf_counter() - started
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the container did not become ready within {seconds:.0f} s")


def observe(tool: str, image: str) -> Observed:
    """Run ``image`` with BENTOML_PORT set (host network, loopback), ask it, SIGTERM it."""
    pod = one(render(KUBERNETES / "base"), "Deployment")["spec"]["template"]["spec"]
    expected = f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}"
    configured = run([tool, "image", "inspect", image, "--format", "{{.Config.User}}"]).stdout.strip()
    size = int(run([tool, "image", "inspect", image, "--format", "{{.Size}}"]).stdout.strip() or 0) / 1e6
    name = f"resnet-lab-check-{os.getpid()}"
    started = run([tool, "run", "-d", "--rm", "--name", name, "--network", "host", "-e",
                   f"BENTOML_PORT={CONTAINER_PORT}", "-e", "BENTOML_HOST=127.0.0.1", image])  # fmt: skip
    if started.returncode != 0:
        raise RuntimeError(f"{tool} run failed: {started.stderr[-2000:]}")
    url = f"http://127.0.0.1:{CONTAINER_PORT}"
    try:
        ready = wait_ready(url, 300)
        uid = run([tool, "exec", name, "id", "-u"]).stdout.strip()
        answer = httpx.post(f"{url}/classify", files={"image": PHOTO.read_bytes()}, timeout=60)
        label = answer.json()["predictions"][0]["label"] if answer.status_code == 200 else answer.text[:80]
        probes = [httpx.get(f"{url}{path}", timeout=10).status_code for path in ("/livez", "/readyz", "/healthz")]
        stopping = time.perf_counter()
        run([tool, "kill", "--signal", "TERM", name])
        code = run([tool, "wait", name], timeout=pod["terminationGracePeriodSeconds"] + 30).stdout.strip()
        stopped = time.perf_counter() - stopping
    finally:
        run([tool, "rm", "-f", name])
    return Observed(configured, expected, uid, ready, answer.status_code, label, probes, code, stopped,
                    pod["terminationGracePeriodSeconds"], size)  # fmt: skip
