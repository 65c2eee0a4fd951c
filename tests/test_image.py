"""The container image `make image` builds, built and run here (docker, else podman; the bento's base image made
from Debian's packages where no registry answers): it serves on BENTOML_PORT as the numeric non-root user the
Kubernetes manifests name, answers /classify and its probes, and exits 0 on SIGTERM within their grace period. CI
installs podman (.ci/run); elsewhere without a container engine the test is skipped, saying so."""

from __future__ import annotations

import pytest

from tests.container import CONTAINER_PORT, build, engine, observe

IMAGE = "resnet-lab:test"


@pytest.fixture(scope="module")
def tool() -> str:
    found = engine()
    if found is None:
        pytest.skip("no container engine: start docker, or install podman and runc (.ci/run does)")
    return found


@pytest.mark.timeout(900)  # the first build downloads the base system and the packages
def test_the_image_serves_as_kubernetes_runs_it(tool: str) -> None:
    seconds = build(IMAGE)
    seen = observe(tool, IMAGE)
    print(f"make image: {seconds:.0f} s ({tool}), {seen}")
    assert seen.configured_user == seen.expected_user and seen.process_uid == seen.expected_user.split(":")[0]
    assert seen.process_uid != "0"
    assert seen.ready_seconds < 300 and seen.probes == [200, 200, 200]  # on BENTOML_PORT
    assert seen.classify_status == 200 and seen.top_label == "cat"
    assert seen.exit_code == "0" and seen.stop_seconds < seen.grace_seconds
    assert CONTAINER_PORT != 3000  # the port is the setting's, not bentoml's default
