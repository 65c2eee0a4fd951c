"""The Kubernetes manifests of ``deploy/kubernetes`` as ``kubectl kustomize`` renders them."""

from __future__ import annotations

import copy
from pathlib import Path

import jsonpatch
import yaml

from tests.server import REPO_ROOT

KUBERNETES = REPO_ROOT / "deploy" / "kubernetes"


def render(folder: Path) -> list[dict]:
    """The resources of a kustomization: its ``resources`` (files or kustomizations) with its JSON 6902 patches
    applied, as ``kubectl kustomize`` gives them (the only kinds of entries these kustomizations use)."""
    spec = yaml.safe_load((folder / "kustomization.yaml").read_text())
    assert set(spec) <= {"apiVersion", "kind", "resources", "patches"}, f"{folder}: an entry render() does not do"
    resources: list[dict] = []
    for entry in spec["resources"]:
        path = folder / entry
        resources += render(path) if path.is_dir() else list(yaml.safe_load_all(path.read_text()))
    for patch in spec.get("patches", []):
        target = patch["target"]
        matches = [r for r in resources if r["kind"] == target["kind"] and r["metadata"]["name"] == target["name"]]
        assert len(matches) == 1, f"{folder}: patch target {target} matches {len(matches)} resources"
        index = resources.index(matches[0])
        resources[index] = jsonpatch.apply_patch(copy.deepcopy(matches[0]), yaml.safe_load(patch["patch"]))
    return resources


def one(resources: list[dict], kind: str) -> dict:
    (found,) = [resource for resource in resources if resource["kind"] == kind]
    return found
