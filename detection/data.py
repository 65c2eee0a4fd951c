"""COCO in its standard layout through torchvision's CocoDetection, with contiguous labels for the detector."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.datasets import CocoDetection
from torchvision.transforms import v2


@dataclass(frozen=True)
class CocoPaths:
    """Where one split lives: ``<root>/annotations/instances_<split>.json`` and ``<root>/<split>/``."""

    ann_file: Path
    image_dir: Path


def coco_paths(root: str | Path, split: str) -> CocoPaths:
    """Check the standard layout and say how to fix it when something is missing."""
    root = Path(root)
    paths = CocoPaths(root / "annotations" / f"instances_{split}.json", root / split)
    if not root.is_dir():
        raise SystemExit(
            f"COCO root {root} does not exist; pass --coco-root pointing at the folder holding annotations/"
        )
    if not paths.ann_file.is_file():
        raise SystemExit(
            f"annotation file {paths.ann_file} not found; the standard COCO layout is "
            f"<root>/annotations/instances_{split}.json (check --coco-root and --split)"
        )
    if not paths.image_dir.is_dir():
        raise SystemExit(f"image folder {paths.image_dir} not found; COCO images go in <root>/{split}/*.jpg")
    return paths


class CategoryMap:
    """COCO's sparse category ids (1..90) <-> contiguous detector labels (1..K; 0 is background)."""

    def __init__(self, categories: list[dict[str, Any]]) -> None:
        ordered = sorted(categories, key=lambda category: category["id"])
        self.category_ids: list[int] = [int(category["id"]) for category in ordered]
        self.names: list[str] = [str(category.get("name", category["id"])) for category in ordered]
        self._label_of = {category_id: index + 1 for index, category_id in enumerate(self.category_ids)}

    @property
    def num_classes(self) -> int:
        """Classes including the background."""
        return len(self.category_ids) + 1

    def to_label(self, category_id: int) -> int:
        """Contiguous label of a COCO category id."""
        return self._label_of[int(category_id)]

    def to_category_id(self, label: int) -> int:
        """COCO category id of a contiguous label (1..K)."""
        if not 1 <= label <= len(self.category_ids):
            raise ValueError(f"label {label} outside 1..{len(self.category_ids)}")
        return self.category_ids[label - 1]


def train_transforms(flip_probability: float) -> v2.Compose:
    """Horizontal flip (boxes follow) and float conversion; resizing is the detector's own (multi-scale)."""
    return v2.Compose([v2.RandomHorizontalFlip(flip_probability), v2.ToDtype(torch.float32, scale=True)])


def test_transforms() -> v2.Compose:
    """Float conversion only; the detector resizes and normalises."""
    return v2.Compose([v2.ToDtype(torch.float32, scale=True)])


class CocoDetectionDataset(Dataset):
    """(image float [3,H,W] in [0,1], target) pairs; crowd boxes dropped, images without boxes kept."""

    def __init__(self, root: str | Path, split: str, transforms: v2.Transform | None = None) -> None:
        self.paths = paths = coco_paths(root, split)
        self.coco_dataset = CocoDetection(str(paths.image_dir), str(paths.ann_file))
        self.coco = self.coco_dataset.coco
        self.categories = CategoryMap(self.coco.loadCats(self.coco.getCatIds()))
        self.image_ids: list[int] = list(self.coco_dataset.ids)
        self.transforms = transforms or test_transforms()

    def __len__(self) -> int:
        return len(self.image_ids)

    def subset(self, count: int) -> None:
        """Keep only the first ``count`` images (quick looks, tests)."""
        self.image_ids = self.image_ids[:count]
        self.coco_dataset.ids = self.image_ids

    def target_for(self, annotations: list[dict[str, Any]], image_id: int, height: int, width: int) -> dict:
        """Boxes in xyxy pixels and contiguous labels; crowd and degenerate boxes are left out."""
        boxes, labels = [], []
        for annotation in annotations:
            if annotation.get("iscrowd", 0):
                continue
            x, y, w, h = annotation["bbox"]
            x1, y1 = max(0.0, x), max(0.0, y)
            x2, y2 = min(float(width), x + w), min(float(height), y + h)
            if x2 - x1 < 1 or y2 - y1 < 1:
                continue
            boxes.append([x1, y1, x2, y2])
            labels.append(self.categories.to_label(annotation["category_id"]))
        return {
            "boxes": tv_tensors.BoundingBoxes(
                torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), format="XYXY", canvas_size=(height, width)
            ),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "image_id": image_id,
        }

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        image_id = self.image_ids[index]
        path = Path(self.coco_dataset.root) / self.coco.loadImgs(image_id)[0]["file_name"]
        if not path.is_file():
            raise SystemExit(f"image {path} listed in the annotations is missing from the image folder")
        image = v2.functional.to_image(self.coco_dataset._load_image(image_id).convert("RGB"))
        height, width = image.shape[-2:]
        target = self.target_for(self.coco_dataset._load_target(image_id), image_id, height, width)
        image, target = self.transforms(image, target)
        target["boxes"] = target["boxes"].as_subclass(torch.Tensor)
        return image.as_subclass(torch.Tensor), target


def collate(batch: list[tuple[torch.Tensor, dict]]) -> tuple[list[torch.Tensor], list[dict]]:
    """Detection batches are lists: images keep their own sizes."""
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)
