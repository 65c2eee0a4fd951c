"""The model repository's layout and version policies (``inference.repository``) and the caps on what a server
loads from it (``service.registry``), without a server."""

from __future__ import annotations

import pytest

from inference.contract import CLASSIFICATION
from inference.repository import FileState, ModelRepository, NoSuchModel, RepositoryError, VersionPolicy
from service.errors import RequestRejected
from service.registry import Registry, Served
from service.settings import Settings


@pytest.mark.parametrize(
    ("text", "present", "chosen"),
    [
        ("latest", [1, 2, 10], [10]),
        ("latest:2", [3, 1, 10], [3, 10]),
        ("all", [2, 1], [1, 2]),
        ("specific:1,3", [1, 2, 3], [1, 3]),
        ("specific:4", [1, 2], []),
    ],
)
def test_a_policy_selects_versions_in_numeric_order(text: str, present: list[int], chosen: list[int]) -> None:
    policy = VersionPolicy.parse(text)
    assert policy.select(present) == chosen and VersionPolicy.parse(str(policy)) == policy


@pytest.mark.parametrize("text", ["newest", "latest:0", "latest:x", "all:2", "specific:", "specific:a"])
def test_a_policy_that_selects_nothing_sensible_is_refused(text: str) -> None:
    with pytest.raises(RepositoryError, match="latest"):
        VersionPolicy.parse(text)


def test_tritons_version_policy_objects() -> None:
    assert VersionPolicy.from_triton({"latest": {"num_versions": 2}}) == VersionPolicy.parse("latest:2")
    assert VersionPolicy.from_triton({"all": {}}) == VersionPolicy.parse("all")
    assert VersionPolicy.from_triton({"specific": {"versions": [1, 3]}}) == VersionPolicy.parse("specific:1,3")
    for wrong in ({"latest": {"num_versions": 0}}, {"every": {}}, {}, {"all": {}, "latest": {}}, [1]):
        with pytest.raises(RepositoryError):
            VersionPolicy.from_triton(wrong)


def test_the_layout_is_name_version_model_onnx(tmp_path) -> None:
    for relative in ("a/1/model.onnx", "a/2/model.onnx", "a/x/model.onnx", "a/3/other.onnx", "b/1/model.onnx",
                     ".hidden/1/model.onnx", "empty/1/README"):  # fmt: skip
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(b"x")
    (tmp_path / "loose.onnx").write_bytes(b"x")
    repository = ModelRepository.open(tmp_path)
    assert repository.names() == ["a", "b"]
    assert repository.versions("a") == {1: tmp_path / "a/1/model.onnx", 2: tmp_path / "a/2/model.onnx"}
    assert list(repository.select("a", VersionPolicy.parse("latest"))) == [2]
    assert repository.versions("../a") == {} and repository.versions("missing") == {}
    with pytest.raises(NoSuchModel, match="missing/1/model.onnx"):
        repository.select("missing", VersionPolicy())
    with pytest.raises(NoSuchModel, match="selects none"):
        repository.select("a", VersionPolicy.parse("specific:7"))
    with pytest.raises(RepositoryError, match="no such folder"):
        ModelRepository.open(tmp_path / "nowhere")


def test_a_file_replaced_in_place_has_a_new_state(tmp_path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"first")
    before = FileState.of(path)
    assert FileState.of(path) == before
    (tmp_path / "new").write_bytes(b"second")
    (tmp_path / "new").replace(path)
    assert FileState.of(path) != before


def test_the_caps_count_versions_and_their_measured_memory() -> None:
    """RESNET_LAB_MAX_LOADED_MODELS and _MB against the versions served after a load (a replaced one no longer
    counts); a load beyond either is a 409."""
    registry = Registry(Settings(max_loaded_models=3, max_loaded_mb=100), None, VersionPolicy())

    def version(megabytes: int) -> Served:
        return Served(runner=None, kind=CLASSIFICATION, pinned=False, state=None, resident_bytes=megabytes * 2**20,
                      file_bytes=0)  # fmt: skip

    registry.served = {"a": {"1": version(40)}}
    registry._check_caps({"1": version(50)}, replaced={})  # 90 MB in 2 versions
    registry._check_caps({"1": version(90)}, replaced=registry.served["a"])  # replaces a's 40 MB
    with pytest.raises(RequestRejected, match="would hold 110 MB; RESNET_LAB_MAX_LOADED_MB is 100") as refused:
        registry._check_caps({"1": version(70)}, replaced={})
    assert refused.value.status == 409
    with pytest.raises(RequestRejected, match="4 model versions would be loaded; RESNET_LAB_MAX_LOADED_MODELS is 3"):
        registry._check_caps({str(number): version(1) for number in range(3)}, replaced={})


def test_place_copies_a_file_in_atomically(tmp_path) -> None:
    source = tmp_path / "exported.onnx"
    source.write_bytes(b"weights")
    repository = ModelRepository(tmp_path / "models")
    placed = repository.place("resnet18", 3, source)
    assert placed == tmp_path / "models/resnet18/3/model.onnx" and placed.read_bytes() == b"weights"
    assert repository.versions("resnet18") == {3: placed} and list(placed.parent.iterdir()) == [placed]
    with pytest.raises(RepositoryError, match="folder name"):
        repository.place("../escape", 1, source)
