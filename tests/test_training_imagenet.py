"""ImageNet class folders with the fixed 1,000-class indices, training on real photos, 10-crop evaluation."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from PIL import Image

from toolkit.errors import UsageError
from training import evaluate, imagenet, train
from training.classifier import load_classifier_checkpoint
from training.steps import count_errors


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
    with pytest.raises(UsageError, match="lacks train/"):
        train.main([*args, "--data-dir", str(tiny_imagenet / "val")])
    wrong = tmp_path / "wrong"
    (wrong / "train" / "cats").mkdir(parents=True)
    (wrong / "val" / "cats").mkdir(parents=True)
    with pytest.raises(UsageError, match="not ImageNet wnids: cats"):
        train.main([*args, "--data-dir", str(wrong)])
    broken = tmp_path / "broken"
    for split in ("train", "val"):
        (broken / split / "n01440764").mkdir(parents=True)
        (broken / split / "n01440764" / "bad.JPEG").write_bytes(b"not a jpeg")
    with pytest.raises(UsageError, match="cannot read image .*bad.JPEG"):
        train.main([*args, "--data-dir", str(broken), "--batch-size", "1"])
    assert not (tmp_path / "run" / "checkpoints").exists()


class CornerClassifier(torch.nn.Module):
    """Fixed logits per crop, told apart by which corner marker (red 1, 2, 3, 4; none: the centre) a crop holds."""

    LOGITS = {
        64: [50.0, 0.0, 0.0],
        128: [0.0, 3.0, 0.0],
        192: [0.0, 3.0, 0.0],
        256: [0.0, 0.0, 0.2],
        0: [0.0, 0.0, 0.2],
    }

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        sums = crops[:, 0].float().sum((1, 2)).round().int().tolist()
        return torch.tensor([self.LOGITS[value] for value in sums])


def test_ten_crop_scores_by_the_mean_softmax_of_its_crops():
    pixels = torch.zeros(256, 256, 3, dtype=torch.uint8)
    for value, (rows, cols) in enumerate(
        [
            (slice(0, 8), slice(0, 8)),
            (slice(0, 8), slice(248, 256)),
            (slice(248, 256), slice(0, 8)),
            (slice(248, 256), slice(248, 256)),
        ],
        1,
    ):
        pixels[rows, cols, 0] = value  # 8x8 markers: 64 x value in the red sum of the one corner crop holding it
    crops = imagenet.eval_transform(256, 224, ten_crop=True)(Image.fromarray(pixels.numpy()))
    assert crops.shape == (10, 3, 224, 224)
    assert sorted(crops[:, 0].float().sum((1, 2)).int().tolist()) == [0, 0, 64, 64, 128, 128, 192, 192, 256, 256]
    # mean softmax over the crops: [0.345, 0.490, 0.165] -> class 1; the mean logit would say 0, a vote 1 or 2
    expected = torch.stack([torch.tensor(logits).softmax(0) for logits in CornerClassifier.LOGITS.values()])
    assert expected.mul(torch.tensor([2.0, 2, 2, 2, 2])[:, None]).sum(0).argmax() == 1
    batch = crops[None].repeat(3, 1, 1, 1, 1)
    counts = count_errors(CornerClassifier(), [(batch, torch.tensor([1, 1, 0]))], torch.device("cpu"))
    assert counts.tolist() == [3, 1, 0]  # images; top-1 wrong: 1 for class 1 (0 would give 2, class 2 gives 3); top-5
