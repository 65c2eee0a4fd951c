"""A COCO-format dataset of simple shapes, generated on the fly, for detection tests that must learn quickly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from models import create_model
from training.checkpoint import save_checkpoint

# Sparse category ids on purpose: the detector must map them to labels 1..K and back.
SHAPE_CATEGORIES = [
    {"id": 3, "name": "red_square", "supercategory": "shape"},
    {"id": 7, "name": "green_disc", "supercategory": "shape"},
    {"id": 11, "name": "blue_bar", "supercategory": "shape"},
]
COLORS = {3: (230, 40, 40), 7: (40, 210, 60), 11: (50, 80, 235)}


def draw_shape(draw: ImageDraw.ImageDraw, category_id: int, box: tuple[int, int, int, int]) -> None:
    """Square, disc or bar filling ``box`` (x1, y1, x2, y2)."""
    if category_id == 7:
        draw.ellipse(box, fill=COLORS[category_id])
    else:
        draw.rectangle(box, fill=COLORS[category_id])


def make_shapes_split(root: Path, split: str, num_images: int, seed: int, size: int = 64) -> Path:
    """Write ``root/<split>/*.png`` and ``root/annotations/instances_<split>.json``; every 10th image is empty."""
    rng = np.random.default_rng(seed)
    (root / split).mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in range(num_images):
        image_id = 1000 + index
        pixels = rng.integers(70, 150, size=(size, size, 3), dtype=np.uint8)
        image = Image.fromarray(pixels)
        draw = ImageDraw.Draw(image)
        placed: list[tuple[int, int, int, int]] = []
        count = 0 if index % 10 == 9 else int(rng.integers(1, 3))
        for _ in range(count):
            category_id = int(rng.choice(list(COLORS)))
            for _attempt in range(20):
                if category_id == 11:  # a bar: wide and low
                    w, h = int(rng.integers(24, 36)), int(rng.integers(10, 14))
                else:
                    w = h = int(rng.integers(16, 28))
                x, y = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
                box = (x, y, x + w, y + h)
                if all(box[2] <= b[0] or b[2] <= box[0] or box[3] <= b[1] or b[3] <= box[1] for b in placed):
                    break
            else:
                continue
            placed.append(box)
            draw_shape(draw, category_id, (box[0], box[1], box[2] - 1, box[3] - 1))
            annotations.append(
                {
                    "id": len(annotations) + 1 + image_id * 10,
                    "image_id": image_id,
                    "category_id": category_id,
                    "bbox": [float(x), float(y), float(w), float(h)],
                    "area": float(w * h),
                    "iscrowd": 0,
                }
            )
        file_name = f"{image_id:012d}.png"
        image.save(root / split / file_name)
        images.append({"id": image_id, "file_name": file_name, "width": size, "height": size})
    ann_file = root / "annotations" / f"instances_{split}.json"
    ann_file.write_text(json.dumps({"images": images, "annotations": annotations, "categories": SHAPE_CATEGORIES}))
    return ann_file


def write_classifier_checkpoint(path: Path, arch: str = "resnet18") -> dict:
    """A classification checkpoint in the training/ contract (random weights, BN statistics made non-trivial)."""
    torch.manual_seed(0)
    net = create_model(arch)
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    state = {
        "model_name": arch,
        "model_options": {"num_classes": 1000},
        "model": net.state_dict(),
        "labels": [f"class{i}" for i in range(1000)],
        "preprocess": {
            "mean": torch.tensor([0.5, 0.4, 0.3]).view(3, 1, 1),
            "std": torch.tensor([0.2, 0.2, 0.2]).view(3, 1, 1),
            "resize_size": 256,
            "crop_size": 224,
        },
    }
    save_checkpoint(state, path)
    return state
