"""Top-1/top-5 error of a checkpoint: ``python -m training.evaluate --checkpoint FILE --data-dir DIR``.

CIFAR-10: all 10,000 test images. ImageNet: the ``val/`` class folders, one centre crop or ``--ten-crop``
(four corners, centre and their mirrors, softmax averaged).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset

from models import model_info
from toolkit import cli
from toolkit.atomic import atomic_write_text
from toolkit.errors import UsageError

from . import cifar10, distributed, imagenet
from .classifier import classifier_from_checkpoint, load_classifier_checkpoint
from .data import decode_errors_as_exit
from .steps import count_errors


def evaluate_checkpoint(
    checkpoint: str | Path,
    data_dir: str | Path,
    ten_crop: bool = False,
    batch_size: int = 100,
    device: str | None = None,
    workers: int = cli.WORKERS,
    max_samples: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluate ``checkpoint`` on the test set under ``data_dir``: images, top1_error, top5_error and each image's
    top-1 ``predictions`` in test-set order."""
    device = distributed.setup(device).device
    state = load_classifier_checkpoint(checkpoint)
    family = model_info(state["model_name"]).family
    classifier = classifier_from_checkpoint(state).to(device).to(memory_format=torch.channels_last)
    preprocess = state["preprocess"]
    if family == "cifar10":
        if ten_crop:
            raise UsageError("--ten-crop is the ImageNet protocol; CIFAR-10 is evaluated on the single 32x32 image")
        test = cifar10.load_cifar10(data_dir, train=False)
        count = min(len(test), max_samples) if max_samples else len(test)
        batches = [
            (test.images[start : min(start + batch_size, count)], test.labels[start : min(start + batch_size, count)])
            for start in range(0, count, batch_size)
        ]
    else:
        transform = imagenet.eval_transform(preprocess["resize_size"], preprocess["crop_size"], ten_crop=ten_crop)
        dataset = imagenet.open_split(data_dir, "val", transform)
        if max_samples:
            dataset = Subset(dataset, range(min(max_samples, len(dataset))))
        loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, pin_memory=device.type == "cuda")
        batches = decode_errors_as_exit(loader)
    predictions: list[torch.Tensor] = []
    counts = count_errors(classifier, batches, device, False, True, progress, predictions).tolist()
    return {
        "checkpoint": str(checkpoint),
        "model": state["model_name"],
        "protocol": "10-crop" if ten_crop else ("single 224 crop" if family == "imagenet" else "32x32 test images"),
        "images": int(counts[0]),
        "top1_error": counts[1] / counts[0],
        "top5_error": counts[2] / counts[0],
        "predictions": torch.cat(predictions).tolist() if predictions else [],
    }


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m training.evaluate",
        description=__doc__.splitlines()[0],
        formatter_class=cli.HelpFormatter,
    )
    parser.add_argument("--checkpoint", required=True, type=Path, help="a file written by training.train")
    parser.add_argument("--data-dir", required=True, type=Path, help="CIFAR-10 python folder or ImageNet root")
    parser.add_argument("--ten-crop", action="store_true", help="ImageNet: 10-crop testing (paper Table 3)")
    parser.add_argument("--batch-size", type=int, default=100, help="images per forward pass")
    cli.add_eval_arguments(parser)
    cli.add_device_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the result (without predictions) as one JSON line")
    parser.add_argument("--predictions", type=Path, help="write each test image's top-1 class here (JSON list)")
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Print top-1/top-5 error of a checkpoint and return them."""
    args = build_parser().parse_args(argv)
    result = evaluate_checkpoint(
        args.checkpoint,
        args.data_dir,
        ten_crop=args.ten_crop,
        batch_size=args.batch_size,
        device=args.device,
        workers=args.workers,
        max_samples=args.max_eval_samples,
        progress=True,
    )
    if args.predictions:
        atomic_write_text(args.predictions, json.dumps(result["predictions"]) + "\n")
    if args.json:
        print(json.dumps({key: value for key, value in result.items() if key != "predictions"}))
    else:
        print(
            f"{result['model']} ({result['protocol']}, {result['images']} images): "
            f"top-1 error {100 * result['top1_error']:.2f}%, top-5 error {100 * result['top5_error']:.2f}%"
        )
    return result


if __name__ == "__main__":
    cli.entry_point(main)
