"""The Kubernetes manifests (``deploy/kubernetes``): every resource of the base and of each overlay is valid against
the Kubernetes OpenAPI schemas (offline, ``kubernetes-validate``), and what they say agrees with the service: the
settings' names, the port, the probe paths, the drain bound of the image's command.

Validate by hand: ``kubectl kustomize deploy/kubernetes/gpu | kubernetes-validate --strict -k 1.30.0 -``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import fields

import kubernetes_validate
import pytest
import yaml

from report import readme
from service.settings import Settings
from service.shutdown import SETTLE_SECONDS
from tests.manifests import KUBERNETES, one, render
from tests.server import BIN, REPO_ROOT, drain_timeout_s

LAYOUTS = ["base", "gpu", "model-volume"]
VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]  # 1.30: the first with preStop's sleep on by default
BENTOML_PORT = 3000  # `bentoml serve`'s default, which the image's command keeps (EXPOSE 3000)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("version", VERSIONS)
def test_manifests_are_valid_kubernetes(layout: str, version: str) -> None:
    resources = render(KUBERNETES / layout)
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= {r["kind"] for r in resources}
    for resource in resources:
        kubernetes_validate.validate(resource, version, strict=True)  # raises on any unknown or mistyped field


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed: render() not compared with it")
@pytest.mark.parametrize("layout", LAYOUTS)
def test_render_is_what_kubectl_kustomize_gives(layout: str) -> None:
    output = subprocess.run(["kubectl", "kustomize", str(KUBERNETES / layout)], capture_output=True, text=True)
    assert output.returncode == 0, output.stderr
    key = lambda resource: (resource["kind"], resource["metadata"]["name"])  # noqa: E731
    assert sorted(yaml.safe_load_all(output.stdout), key=key) == sorted(render(KUBERNETES / layout), key=key)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_manifests_agree_with_the_service(layout: str) -> None:
    resources = render(KUBERNETES / layout)
    deployment, service = one(resources, "Deployment"), one(resources, "Service")
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    env = {variable["name"]: variable["value"] for variable in container["env"]}
    known = {spec.metadata["env"] for spec in fields(Settings)}
    assert set(env) <= known, f"not settings of the service: {set(env) - known}"
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"] == labels
    assert service["spec"]["selector"] == labels == one(resources, "PodDisruptionBudget")["spec"]["selector"][
        "matchLabels"]  # fmt: skip
    assert one(resources, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]

    (port,) = container["ports"]
    assert port["containerPort"] == BENTOML_PORT and service["spec"]["ports"][0]["targetPort"] == port["name"]
    probes = {name: container[name]["httpGet"] for name in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert {name: probe["path"] for name, probe in probes.items()} == {
        "startupProbe": "/readyz", "readinessProbe": "/readyz", "livenessProbe": "/livez"}  # fmt: skip
    assert all(probe["port"] == port["name"] for probe in probes.values())
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300  # a large model loads in time

    # a stopped pod answers what it accepted: preStop's pause, the lame duck, settling and the image's drain bound
    pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    lame_duck = int(env[Settings.env_name("lame_duck_seconds")])
    assert pod["spec"]["terminationGracePeriodSeconds"] >= pause + lame_duck + SETTLE_SECONDS + drain_timeout_s() + 5
    assert pause >= 5 and deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0

    keys = env[Settings.env_name("api_keys")]  # a file in the mounted Secret, re-read when the Secret changes
    volumes = {volume["name"]: volume for volume in pod["spec"]["volumes"]}
    (mount,) = [m for m in container["volumeMounts"] if "secret" in volumes[m["name"]]]
    assert keys.startswith("@" + mount["mountPath"] + "/") and mount["readOnly"]


def test_gpu_overlay_asks_for_a_gpu_and_cuda() -> None:
    (container,) = one(render(KUBERNETES / "gpu"), "Deployment")["spec"]["template"]["spec"]["containers"]
    env = {variable["name"]: variable["value"] for variable in container["env"]}
    assert env[Settings.env_name("providers")].split(",")[0] == "CUDAExecutionProvider"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1


@pytest.mark.parametrize("version", VERSIONS)
def test_model_volume_overlay_mounts_what_the_loader_pod_writes(version: str) -> None:
    resources = render(KUBERNETES / "model-volume")
    pod = one(resources, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "models"]
    assert mount["mountPath"] == "/models" and mount["readOnly"]
    assert {"name": "RESNET_LAB_MODEL_REPOSITORY", "value": "/models"} in container["env"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "models"]
    claim = one(resources, "PersistentVolumeClaim")["metadata"]["name"]
    assert volume["persistentVolumeClaim"]["claimName"] == claim
    loader = yaml.safe_load((KUBERNETES / "model-volume" / "loader.yaml").read_text())
    kubernetes_validate.validate(loader, version, strict=True)
    (writer,) = loader["spec"]["containers"]
    assert writer["image"] == container["image"] and writer["volumeMounts"][0]["mountPath"] == "/models"
    assert loader["spec"]["volumes"][0]["persistentVolumeClaim"] == {"claimName": claim}  # read-write
    context = loader["spec"]["securityContext"]
    assert (context["runAsUser"], context["runAsGroup"]) == (pod["securityContext"]["runAsUser"],
                                                             pod["securityContext"]["runAsGroup"])  # fmt: skip


def test_deploy_page_figures_are_generated_from_their_files() -> None:
    page = (REPO_ROOT / "docs" / "deploy.md").read_text()
    assert readme.regenerate(page) == page, "docs/deploy.md drifted from its sources: run `python -m report.readme`"


def test_the_manifests_run_the_images_user_by_number(tmp_path) -> None:
    # a kubelet can verify runAsNonRoot only for a numeric user: the image ends with USER <uid>:<gid> and the pods run
    # as those numbers (BentoML's bento user, whose uid the generated Dockerfile states)
    home = tmp_path / "bentoml"
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "True"}
    built = subprocess.run([str(BIN / "bentoml"), "build", "--output", "tag"], cwd=REPO_ROOT, env=env,
                           capture_output=True, text=True)  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    (dockerfile,) = home.glob("bentos/resnet_lab/*/env/docker/Dockerfile")
    lines = dockerfile.read_text().splitlines()
    uid = next(line.split("=", 1)[1] for line in lines if line.startswith("ARG BENTO_USER_UID="))
    gid = next(line.split("=", 1)[1] for line in lines if line.startswith("ARG BENTO_USER_GID="))
    assert [line for line in lines if line.startswith("USER ")][-1] == f"USER {uid}:{gid}"
    for layout in LAYOUTS:
        pod = one(render(KUBERNETES / layout), "Deployment")["spec"]["template"]["spec"]
        context = pod["securityContext"]
        assert context["runAsNonRoot"] and (context["runAsUser"], context["runAsGroup"]) == (int(uid), int(gid))
