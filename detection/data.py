"""COCO in its standard layout (pycocotools index, the project's image loader), contiguous labels for the detector.

Training batches are a pure function of (seed, epoch): the order comes from a ``DistributedSampler`` and each
image's flip from a generator seeded by (seed, epoch, image), so resuming from a checkpoint repeats them exactly.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pycocotools.coco import COCO
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torchvision import tv_tensors
from torchvision.transforms import v2

from inference import imaging
from toolkit.errors import UsageError
from training.distributed import Context


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
        raise UsageError(
            f"COCO root {root} does not exist; pass --coco-root pointing at the folder holding annotations/"
        )
    if not paths.ann_file.is_file():
        raise UsageError(
            f"annotation file {paths.ann_file} not found; the standard COCO layout is "
            f"<root>/annotations/instances_{split}.json (check --coco-root and --split)"
        )
    if not paths.image_dir.is_dir():
        raise UsageError(f"image folder {paths.image_dir} not found; COCO images go in <root>/{split}/*.jpg")
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


class CocoDetectionDataset(Dataset):
    """(image float [3,H,W] in [0,1], target) pairs; crowd boxes dropped, images without boxes kept.

    ``flip_probability`` > 0 mirrors images (boxes follow), decided per (seed, epoch, image) so it is repeatable.
    """

    def __init__(self, root: str | Path, split: str, flip_probability: float = 0.0, seed: int = 0) -> None:
        self.paths = paths = coco_paths(root, split)
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools chats about index creation
            self.coco = COCO(str(paths.ann_file))
        self.categories = CategoryMap(self.coco.loadCats(self.coco.getCatIds()))
        self.image_ids: list[int] = sorted(self.coco.imgs)
        self.flip_probability = flip_probability
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.image_ids)

    def subset(self, image_ids: list[int]) -> CocoDetectionDataset:
        """A view of these images only (same annotations, categories and flips)."""
        view = object.__new__(CocoDetectionDataset)
        view.__dict__.update(self.__dict__)
        view.image_ids = list(image_ids)
        return view

    def set_epoch(self, epoch: int) -> None:
        """Flips are drawn per epoch."""
        self.epoch = epoch

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

    def _flips(self, image_id: int) -> bool:
        if self.flip_probability <= 0:
            return False
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch * 1009 + image_id)
        return bool(torch.rand((), generator=generator) < self.flip_probability)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        image_id = self.image_ids[index]
        path = self.paths.image_dir / self.coco.loadImgs(image_id)[0]["file_name"]
        if not path.is_file():
            raise UsageError(f"image {path} listed in the annotations is missing from the image folder")
        try:
            image = v2.functional.to_image(imaging.load_rgb(path))
        except imaging.ImageRejected as error:
            raise UsageError(f"cannot read image {path} ({error}); delete or replace it") from None
        height, width = image.shape[-2:]
        target = self.target_for(self.coco.loadAnns(self.coco.getAnnIds(imgIds=image_id)), image_id, height, width)
        if self._flips(image_id):
            image = v2.functional.horizontal_flip(image)
            target["boxes"] = v2.functional.horizontal_flip(target["boxes"])
        target["boxes"] = target["boxes"].as_subclass(torch.Tensor)
        return v2.functional.to_dtype(image, torch.float32, scale=True).as_subclass(torch.Tensor), target


class DetectionBatches:
    """Shuffled training batches of one epoch, sharded over ranks, on the device."""

    def __init__(self, dataset: CocoDetectionDataset, batch_per_rank: int, context: Context, workers: int) -> None:
        self.dataset, self.batch_per_rank, self.context, self.workers = dataset, batch_per_rank, context, workers
        self.sampler = DistributedSampler(dataset, context.world_size, context.rank, shuffle=True, seed=dataset.seed)

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.batch_per_rank)

    def epoch(self, epoch: int) -> Iterator[tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]]:
        """``(images, targets)`` batches of ``epoch``."""
        self.sampler.set_epoch(epoch)
        self.dataset.set_epoch(epoch)
        loader = DataLoader(
            self.dataset, self.batch_per_rank, sampler=self.sampler, num_workers=self.workers, collate_fn=collate
        )
        device = self.context.device
        for images, targets in loader:
            yield (
                [image.to(device) for image in images],
                [{"boxes": t["boxes"].to(device), "labels": t["labels"].to(device)} for t in targets],
            )


def collate(batch: list[tuple[torch.Tensor, dict]]) -> tuple[list[torch.Tensor], list[dict]]:
    """Detection batches are lists: images keep their own sizes."""
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)
