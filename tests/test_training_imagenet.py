"""ImageNet class folders with the fixed 1,000-class indices, training on real photos, 10-crop evaluation."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from training import evaluate, imagenet, train
from training.classifier import load_classifier_checkpoint


def test_class_indices_are_the_real_imagenet_indices(imagenet_samples):
    dataset = imagenet.ImageNetFolder(imagenet_samples / "val")
    with open(imagenet_samples / "labels.csv") as stream:
        expected = {row["path"]: int(row["class_index"]) for row in csv.DictReader(stream)}
    assert len(dataset) == len(expected) == 269
    for path, target in dataset.samples:
        assert expected[Path(path).relative_to(imagenet_samples).as_posix()] == target
    wnids, names = imagenet.imagenet_classes()
    assert len(wnids) == 1000 and names[0] == "tench" and wnids == tuple(sorted(wnids))


def test_transforms_give_224_crops_and_ten_crops(imagenet_samples):
    image = imagenet.load_rgb(str(next((imagenet_samples / "val").glob("*/*.JPEG"))))
    assert imagenet.train_transform()(image).shape == (3, 224, 224)
    assert imagenet.eval_transform()(image).dtype == torch.uint8
    assert imagenet.eval_transform(ten_crop=True)(image).shape == (10, 3, 224, 224)
    images = torch.rand(4, 3, 8, 8)
    shifted = imagenet.pca_lighting(images, torch.Generator().manual_seed(0))
    offsets = (shifted - images).flatten(2)
    assert torch.allclose(offsets, offsets[:, :, :1].expand_as(offsets))  # one RGB shift per image
    assert 0 < offsets.abs().max() < 0.2


def test_train_and_ten_crop_evaluate_on_real_photos(tiny_imagenet, tmp_path):
    output = tmp_path / "run"
    row = train.main(
        [
            "--recipe", "imagenet_resnet18", "--data-dir", str(tiny_imagenet), "--output-dir", str(output),
            "--epochs", "1", "--batch-size", "4", "--max-train-samples", "8", "--workers", "0",
            "--max-eval-samples", "6",
        ]
    )  # fmt: skip
    assert row["step"] == 2 and 0.0 <= row["test_error"] <= 1.0
    state = load_classifier_checkpoint(output / "checkpoints" / "last.pt")
    assert len(state["labels"]) == 1000 and state["labels"][0] == "tench"
    assert state["preprocess"]["crop_size"] == 224 and state["preprocess"]["std"].shape == (3,)
    single = evaluate.evaluate_checkpoint(output / "checkpoints" / "last.pt", tiny_imagenet, max_samples=4, workers=0)
    ten = evaluate.main(
        ["--checkpoint", str(output / "checkpoints" / "last.pt"), "--data-dir", str(tiny_imagenet), "--ten-crop"]
        + ["--max-eval-samples", "4", "--workers", "0", "--batch-size", "2"]
    )
    assert single["images"] == ten["images"] == 4 and ten["protocol"] == "10-crop"
    assert 0.0 <= ten["top5_error"] <= ten["top1_error"] <= 1.0


def test_unknown_folders_and_broken_images_exit_clearly(tiny_imagenet, tmp_path):
    args = ["--recipe", "imagenet_resnet18", "--output-dir", str(tmp_path / "run"), "--workers", "0"]
    with pytest.raises(SystemExit, match="lacks train/"):
        train.main([*args, "--data-dir", str(tiny_imagenet / "val")])
    wrong = tmp_path / "wrong"
    (wrong / "train" / "cats").mkdir(parents=True)
    (wrong / "val" / "cats").mkdir(parents=True)
    with pytest.raises(SystemExit, match="not ImageNet wnids: cats"):
        train.main([*args, "--data-dir", str(wrong)])
    broken = tmp_path / "broken"
    for split in ("train", "val"):
        (broken / split / "n01440764").mkdir(parents=True)
        (broken / split / "n01440764" / "bad.JPEG").write_bytes(b"not a jpeg")
    with pytest.raises(SystemExit, match="cannot read image .*bad.JPEG"):
        train.main([*args, "--data-dir", str(broken), "--batch-size", "1"])
    assert not (tmp_path / "run" / "checkpoints").exists()
