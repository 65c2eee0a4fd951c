"""Many models in one server: a model repository in Triton's layout, the v2 repository and statistics extensions
through ``tritonclient.http`` unchanged, ``model`` on ``/classify`` and ``/detect``, loading and unloading under
traffic that loses nothing, and the caps on loaded models."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from inference.contract import ONNX_FILE_NAME
from inference.model_files import resolve_model
from inference.repository import ModelRepository
from tests.helpers import metric
from tests.test_protocol_v2 import client_of, files_input

DEFAULT = resolve_model("")  # the shipped default classifier (CIFAR-10, 10 classes)
PINNED = "cifar_resnet20"  # its name when RESNET_LAB_MODEL serves it


def place(root: Path, name: str, version: int, source: str | Path) -> Path:
    """Put ``source`` in the repository as ``name``/``version`` (a new file, so a loaded version sees a change)."""
    return ModelRepository(root).place(name, version, source)


@pytest.fixture(scope="module")
def repository(tmp_path_factory, resnet18_export: dict, shapes_onnx: dict) -> Path:
    """default/1, default/2 (the shipped model twice), resnet18/1 (1000 classes), shapes/1 (a detector)."""
    root = tmp_path_factory.mktemp("repository")
    place(root, "default", 1, DEFAULT)
    place(root, "default", 2, DEFAULT)
    place(root, "resnet18", 1, resnet18_export["output"])
    place(root, "shapes", 1, shapes_onnx["output"])
    return root


@pytest.fixture(scope="module")
def server(serve, repository: Path) -> Iterator[httpx.Client]:
    """The shipped model pinned (RESNET_LAB_MODEL) beside the repository, served at its latest versions."""
    with serve(DEFAULT, RESNET_LAB_MODEL_REPOSITORY=str(repository)) as client:
        yield client


def ready_versions(client: triton.InferenceServerClient) -> set[tuple[str, str]]:
    """(name, version) of every READY entry of the repository index."""
    return {(row["name"], row["version"]) for row in client.get_model_repository_index() if row["state"] == "READY"}


def logits(client: triton.InferenceServerClient, name: str, photo: Path, version: str = "") -> np.ndarray:
    """A model's logits for one photo through tritonclient."""
    return client.infer(name, [files_input([photo])], model_version=version).as_numpy("logits")


def test_the_index_lists_every_version_with_its_state(server, small_photos) -> None:
    client = client_of(server)
    index = client.get_model_repository_index()
    states = {(row["name"], row["version"]): row["state"] for row in index}
    assert states[("default", "1")] == "UNAVAILABLE"  # latest:1 serves version 2 only
    assert {("default", "2"), ("resnet18", "1"), ("shapes", "1")} <= ready_versions(client)
    assert any(name == PINNED and state == "READY" for (name, _), state in states.items())
    assert client.is_model_ready("default", "2") and not client.is_model_ready("default", "1")
    assert client.get_model_metadata("default")["versions"] == ["2"]
    assert {"model_repository", "statistics"} <= set(client.get_server_metadata()["extensions"])
    models = {(row["name"], row["version"]): row for row in server.get("/info").json()["models"]}
    assert models[("resnet18", "1")]["kind"] == "classifier" and models[("shapes", "1")]["kind"] == "detector"
    assert models[("resnet18", "1")]["resident_bytes"] > 10 * 2**20  # 11.7 M weights in fp32 at least
    assert all(row["precision"] == "fp32" and row["runtime"] for row in models.values())


def test_a_version_policy_in_the_load_config_serves_the_versions_it_names(server, small_photos) -> None:
    client = client_of(server)
    client.load_model("default", config=json.dumps({"version_policy": {"all": {}}}))
    assert client.is_model_ready("default", "1") and client.is_model_ready("default", "2")
    assert client.get_model_metadata("default")["versions"] == ["1", "2"]
    first, second = (logits(client, "default", small_photos[0], version) for version in ("1", "2"))
    np.testing.assert_array_equal(first, second)  # the same file under two versions
    np.testing.assert_array_equal(first, logits(client, PINNED, small_photos[0]))
    client.load_model("default", config=json.dumps({"version_policy": {"specific": {"versions": [1]}}}))
    assert client.is_model_ready("default", "1") and not client.is_model_ready("default", "2")
    client.load_model("default")  # the server's policy again: latest:1
    assert client.get_model_metadata("default")["versions"] == ["2"]
    with pytest.raises(InferenceServerException, match="version_policy"):
        client.load_model("default", config=json.dumps({"version_policy": {"newest": {}}}))
    with pytest.raises(InferenceServerException, match="repository only"):
        client.load_model("default", files={"file:1/model.onnx": b"weights"})


def test_classify_and_detect_take_a_model_and_name_it(server, small_photos) -> None:
    photo = {"image": ("a.jpg", small_photos[0].read_bytes())}
    plain = server.post("/classify", files=photo).json()
    assert (plain["model"], len(plain["predictions"])) == (PINNED, 5)  # the pinned model is the default
    named = server.post("/classify", files=photo, data={"model": "resnet18", "top_k": "20"}).json()
    assert (named["model"], named["model_version"], len(named["predictions"])) == ("resnet18", "1", 20)
    too_many = server.post("/classify", files=photo, data={"model": "default", "top_k": "20"})
    assert too_many.status_code == 400 and "between 1 and 10 for model 'default'" in too_many.json()["error"]
    assert server.post("/classify", files=photo, data={"model": "nothing"}).status_code == 404
    wrong = server.post("/classify", files=photo, data={"model": "shapes"})
    assert wrong.status_code == 400 and "/detect" in wrong.json()["error"]
    found = server.post("/detect", files=photo, data={"model": "shapes", "score_threshold": "0"}).json()
    assert (found["model"], found["model_version"]) == ("shapes", "1")
    assert server.post("/detect", files=photo).json()["model"] == "shapes"  # the repository's one detector


def test_statistics_count_each_model_as_tritonclient_reads_them(server, small_photos) -> None:
    client = client_of(server)
    before = client.get_inference_statistics("resnet18")["model_stats"][0]
    for _ in range(3):
        logits(client, "resnet18", small_photos[0])
    after = client.get_inference_statistics("resnet18", "1")["model_stats"][0]
    assert (after["name"], after["version"]) == ("resnet18", "1")
    assert after["inference_count"] - before["inference_count"] == 3
    assert after["inference_stats"]["success"]["count"] - before["inference_stats"]["success"]["count"] == 3
    assert after["inference_stats"]["compute_infer"]["ns"] > before["inference_stats"]["compute_infer"]["ns"]
    assert sum(batch["compute_infer"]["count"] for batch in after["batch_stats"]) == after["execution_count"]
    every = {(row["name"], row["version"]) for row in client.get_inference_statistics()["model_stats"]}
    assert {("resnet18", "1"), ("shapes", "1"), ("default", "2")} <= every
    text = server.get("/metrics").text
    assert metric(text, "resnet_lab_model_inferences_total", model="resnet18", version="1") >= 3
    with pytest.raises(InferenceServerException):
        client.get_inference_statistics("nothing")


def test_a_file_that_cannot_load_leaves_the_served_set_as_it_was(server, repository, small_photos) -> None:
    client = client_of(server)
    served = ready_versions(client)
    (repository / "broken" / "1").mkdir(parents=True)
    (repository / "broken" / "1" / ONNX_FILE_NAME).write_bytes(b"not an onnx file")
    with pytest.raises(InferenceServerException, match="not loaded") as refused:
        client.load_model("broken")
    assert refused.value.status() == "400"
    before = logits(client, "default", small_photos[0])
    good = repository / "default" / "2" / ONNX_FILE_NAME
    saved = good.read_bytes()
    place(repository, "default", 2, repository / "broken" / "1" / ONNX_FILE_NAME)  # a replacement that is corrupt
    with pytest.raises(InferenceServerException, match="not loaded"):
        client.load_model("default")
    np.testing.assert_array_equal(logits(client, "default", small_photos[0]), before)  # the old version answers
    good.write_bytes(saved)
    assert ready_versions(client) == served
    reasons = {row["name"]: row["reason"] for row in client.get_model_repository_index() if row["name"] == "broken"}
    assert "not loaded" in reasons["broken"] or "load failed" in reasons["broken"]
    with pytest.raises(InferenceServerException):
        client.load_model("absent")
    with pytest.raises(InferenceServerException, match="server's life"):
        client.unload_model(PINNED)
    shutil.rmtree(repository / "broken")  # a server starting on this repository would refuse it


def _traffic(server: httpx.Client, model: str, photo: bytes, stop: threading.Event, statuses: list[int]) -> None:
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        while not stop.is_set():
            answer = client.post("/classify", files={"image": ("a.jpg", photo)}, data={"model": model, "top_k": "1"})
            statuses.append(answer.status_code)


def test_loading_and_unloading_under_traffic_loses_no_request(server, repository, small_photos) -> None:
    """Three unload/load cycles of one model under traffic to another, then three replacements of a version
    under traffic to that very model: every request answered."""
    client, photo = client_of(server), small_photos[0].read_bytes()
    for target, cycle in ((PINNED, "unload and load"), ("default", "replace")):
        stop, statuses = threading.Event(), []
        senders = [threading.Thread(target=_traffic, args=(server, target, photo, stop, statuses)) for _ in range(4)]
        for sender in senders:
            sender.start()
        for _ in range(3):
            if cycle == "replace":
                place(repository, "default", 2, DEFAULT)
            else:
                client.unload_model("default")
                assert not client.is_model_ready("default")
            client.load_model("default")
            assert client.is_model_ready("default", "2")
        stop.set()
        for sender in senders:
            sender.join()
        assert len(statuses) >= 8 and set(statuses) == {200}, (cycle, len(statuses), set(statuses))


def test_a_load_beyond_the_cap_is_refused(serve, repository) -> None:
    """RESNET_LAB_MAX_LOADED_MODELS=4: the four versions served at start fit, a fifth is refused with a 409."""
    with serve(DEFAULT, RESNET_LAB_MODEL_REPOSITORY=str(repository), RESNET_LAB_MAX_LOADED_MODELS="4") as server:
        client = client_of(server)
        with pytest.raises(InferenceServerException, match="RESNET_LAB_MAX_LOADED_MODELS") as refused:
            client.load_model("default", config=json.dumps({"version_policy": {"all": {}}}))
        assert refused.value.status() == "409"
        assert not client.is_model_ready("default", "1") and client.is_model_ready("default", "2")
        client.unload_model("resnet18")
        client.load_model("default", config=json.dumps({"version_policy": {"all": {}}}))
        assert client.is_model_ready("default", "1")
