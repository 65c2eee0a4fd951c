"""Proof on real data: ResNet-20 learns CIFAR-10 from a short budget of real images; evaluate agrees."""

from __future__ import annotations

import pytest

from training import evaluate
from training.classifier import classifier_from_checkpoint, load_classifier_checkpoint

# Measured on all 10,000 test images after one pass over 20,000 images: 38.0% (one pass over 10,000 images gives
# 32-35%: too close to a bound).
MIN_ACCURACY = 0.30  # 3x chance


@pytest.mark.slow
def test_resnet20_learns_real_cifar10(trained_cifar_run, cifar_dir, capsys):
    output, row = trained_cifar_run
    accuracy = 1 - row["test_error"]
    print(f"real CIFAR-10, all 10,000 test images: {100 * accuracy:.1f}% after one pass over 20,000 images")
    assert accuracy > MIN_ACCURACY, row
    checkpoint = output / "checkpoints" / "last.pt"
    result = evaluate.main(["--checkpoint", str(checkpoint), "--data-dir", str(cifar_dir), "--device", "cpu"])
    assert result["images"] == 10_000 and len(result["predictions"]) == 10_000
    assert result["top1_error"] == pytest.approx(row["test_error"], abs=0.002)
    assert result["top5_error"] == pytest.approx(row["test_top5_error"], abs=0.002)
    assert "top-1 error" in capsys.readouterr().out
    classifier = classifier_from_checkpoint(load_classifier_checkpoint(checkpoint))
    assert classifier.mean.shape == (3, 32, 32)  # the per-pixel mean image travels with the weights
