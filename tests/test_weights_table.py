"""Published weights as data (``inference.weights``): the table is torchvision's own ``Weights`` enums, it names what a
file of that name is, and ``python -m export`` takes the architecture and transform from it."""

from __future__ import annotations

import subprocess
import sys

import torchvision

from inference import weights
from tests.helpers import REPO_ROOT


def test_the_table_is_torchvisions_own_description_of_each_file() -> None:
    for entry in weights.WEIGHTS:
        enum_name, member = entry.weights.split(".")
        module = torchvision.models.detection if enum_name.startswith("FasterRCNN") else torchvision.models
        published = getattr(getattr(module, enum_name), member)
        assert published.url == entry.source and published.url.endswith("/" + entry.file)
        metrics = published.meta["_metrics"]
        if entry.task == "classification":
            numbers = metrics["ImageNet-1K"]
            assert entry.metrics == {"ImageNet-1k top-1": numbers["acc@1"], "ImageNet-1k top-5": numbers["acc@5"]}
            transform = published.transforms()
            assert (entry.resize_size, entry.crop_size) == (transform.resize_size[0], transform.crop_size[0])
            assert len(published.meta["categories"]) == 1000
        else:
            assert entry.metrics == {"COCO val2017 box AP": metrics["COCO-val2017"]["box_map"]}
            assert len(published.meta["categories"]) == 91
        assert entry.hash_prefix and entry.file.split("-")[-1].startswith(entry.hash_prefix)


def test_a_file_is_known_by_its_name_and_is_published_only_byte_for_byte() -> None:
    entry = weights.find("/somewhere/resnet50-11ad3fa6.pth")
    assert entry is not None and (entry.arch, entry.resize_size) == ("resnet50", 232)
    assert weights.find("resnet50-finetuned.pth") is None
    assert entry.record("11ad3fa6" + "0" * 56)["published"] and not entry.record("0" * 64)["published"]


def test_a_file_of_another_name_needs_arch_in_one_line(tmp_path) -> None:
    unknown = tmp_path / "my-weights.pth"
    unknown.write_bytes(b"")
    command = [sys.executable, "-m", "export", "--torchvision-state-dict", str(unknown), "--output", "x.onnx"]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "my-weights.pth is not a published torchvision file known by name" in result.stderr
    assert "pass --arch" in result.stderr
