"""Run a detector over a COCO split and score it: what training's evaluation and ``eval_coco.py`` share."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from detection.coco_eval import evaluate
from detection.data import CategoryMap, CocoDetectionDataset, collate
from training import distributed
from training.distributed import Context


def coco_result(image_id: int, box: list[float], category_id: int, score: float) -> dict[str, Any]:
    """One detection (xyxy box in pixels) as a COCO result (xywh)."""
    x1, y1, x2, y2 = (float(value) for value in box)
    bbox = [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)]
    return {"image_id": int(image_id), "category_id": int(category_id), "bbox": bbox, "score": round(float(score), 5)}


def to_coco_results(outputs: list[dict[str, torch.Tensor]], image_ids: list[int], categories: CategoryMap) -> list:
    """Detector outputs (xyxy, contiguous labels) -> COCO results (xywh, original category ids)."""
    return [
        coco_result(image_id, box, categories.to_category_id(int(label)), score)
        for output, image_id in zip(outputs, image_ids, strict=True)
        for box, label, score in zip(
            output["boxes"].tolist(), output["labels"].tolist(), output["scores"].tolist(), strict=True
        )
    ]


@torch.no_grad()
def detect(
    model: torch.nn.Module,
    dataset: CocoDetectionDataset,
    context: Context,
    batch_size: int = 1,
    workers: int = 0,
    progress: bool = False,
    categories: CategoryMap | None = None,
) -> list[dict[str, Any]]:
    """COCO results of ``model`` (in eval mode) on every image of ``dataset``, gathered from all ranks; labels map
    to category ids through ``categories`` (the model's own; default: the dataset's)."""
    shard = Subset(dataset, distributed.shard(len(dataset), context))
    loader = DataLoader(shard, batch_size=batch_size, num_workers=workers, collate_fn=collate)
    results: list[dict[str, Any]] = []
    for images, targets in tqdm(loader, desc="detect", unit="batch", disable=not progress, leave=False):
        outputs = model([image.to(context.device) for image in images])
        outputs = [{key: value.cpu() for key, value in output.items()} for output in outputs]
        image_ids = [target["image_id"] for target in targets]
        results += to_coco_results(outputs, image_ids, categories or dataset.categories)
    return distributed.all_gather(results, context)


def coco_metrics(
    model: torch.nn.Module, dataset: CocoDetectionDataset, context: Context, prefix: str, workers: int = 0
) -> dict[str, float]:
    """``{prefix}_AP``, ``{prefix}_AP50``, ... of ``model`` on ``dataset`` (COCOeval over its images)."""
    results = detect(model, dataset, context, workers=workers)
    metrics, _ = evaluate(dataset.coco, results, dataset.image_ids)
    return {f"{prefix}_{key}": value for key, value in metrics.items()}
