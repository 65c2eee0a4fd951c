"""Inference speed of our Faster R-CNN (R50-C4, R50-FPN) against torchvision's fasterrcnn_resnet50_fpn.

Same real COCO val images, same shorter side, random weights (nothing is downloaded), batch 1, in one run.
Prints seconds per image (median over images, after a warm-up) and images/s, on CPU and, if present, on the GPU.

    python bench/detect_speed.py --coco-root ../shared/data/coco --size 512 --images 5
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch
from torchvision.io import decode_image
from torchvision.models.detection import fasterrcnn_resnet50_fpn
from torchvision.transforms.v2 import functional as F

from detection.model import build_detector, fresh_backbone, set_test_size
from detection.recipes import get_recipe
from export import samples

COCO_CLASSES = 81  # 80 categories + background


def ours(recipe_name: str) -> torch.nn.Module:
    """Our detector with random weights, as eval_coco.py would run it."""
    recipe = get_recipe(recipe_name)
    return build_detector(recipe, COCO_CLASSES, fresh_backbone(recipe.arch, {}, recipe))


def load_images(coco_root: Path, count: int) -> list[torch.Tensor]:
    """The first ``count`` val2017 images as float [3,H,W] in [0,1]."""
    folder = coco_root / "val2017"
    if not folder.is_dir():
        raise SystemExit(f"{folder} not found; pass --coco-root (standard COCO layout) or set RESNET_LAB_DATA")
    paths = sorted(folder.glob("*.jpg"))[:count]
    return [F.to_dtype(decode_image(str(path), mode="RGB"), torch.float32, scale=True) for path in paths]


@torch.no_grad()
def seconds_per_image(model: torch.nn.Module, images: list[torch.Tensor], device: torch.device) -> list[float]:
    """Per-image latency (batch 1) after one warm-up image."""
    model.to(device).eval()
    model([images[0].to(device)])
    timings = []
    for image in images:
        image = image.to(device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        model([image])
        if device.type == "cuda":
            torch.cuda.synchronize()
        timings.append(time.perf_counter() - start)
    return timings


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the comparison and print a markdown table."""
    default_root = samples.shared_data_dir()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--coco-root", type=Path, default=default_root / "coco")
    parser.add_argument("--size", type=int, default=512, help="shorter side for every model")
    parser.add_argument("--max-size", type=int, default=853)
    parser.add_argument("--images", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--devices", nargs="+", default=["cpu", "cuda"], help="devices to time (cuda is skipped where absent)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    images = load_images(args.coco_root, args.images)
    models = {
        "ours R50-C4 (300 proposals, RoIAlign 14x14 -> conv5_x)": lambda: ours("coco_resnet50_c4"),
        "ours R50-FPN (1000 proposals)": lambda: ours("coco_resnet50_fpn"),
        "torchvision fasterrcnn_resnet50_fpn": lambda: fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None),
    }
    devices = [torch.device(name) for name in args.devices if name != "cuda" or torch.cuda.is_available()]
    rows = []
    for device in devices:
        for name, factory in models.items():
            model = factory()
            set_test_size(model, args.size, args.max_size)
            timings = seconds_per_image(model, images, device)
            rows.append({"device": device.type, "model": name, "median_s": statistics.median(timings)})
    print(f"command: python bench/detect_speed.py {shlex.join(argv if argv is not None else sys.argv[1:])}")
    print(
        f"images: {len(images)} real COCO val2017, shorter side {args.size} (max {args.max_size}), batch 1, "
        f"random weights, torch {torch.__version__}, {args.threads} CPU threads"
        + ("" if torch.cuda.is_available() else "; no GPU on this machine, so CPU only")
    )
    baseline = {row["device"]: row["median_s"] for row in rows if row["model"].startswith("torchvision")}
    print("\n| device | model | median s/image | images/s | vs torchvision FPN |")
    print("| --- | --- | ---: | ---: | ---: |")
    for row in rows:
        ratio = row["median_s"] / baseline[row["device"]]
        print(
            f"| {row['device']} | {row['model']} | {row['median_s']:.3f} | {1 / row['median_s']:.2f} | {ratio:.2f}x |"
        )
    return rows


if __name__ == "__main__":
    main()
