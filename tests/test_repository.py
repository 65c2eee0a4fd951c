"""The model repository's layout and version policies (``inference.repository``), without a server."""

from __future__ import annotations

import pytest

from inference.repository import FileState, ModelRepository, NoSuchModel, RepositoryError, VersionPolicy


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
