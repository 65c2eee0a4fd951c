"""Detections of what is served, for COCO evaluation: an exported ONNX file (in this process or sharded across a Ray
cluster, on the runtime and in the precision the server would pick: ``inference.settings.InferenceSettings``), or a
running service.

All read the split's images with the inference core's loader (``inference.imaging``), as the checkpoint path's
dataset does, so every path sees the same pixels. The server is asked for ``score_threshold`` 0 unless told
otherwise: evaluation keeps every detection, and the graph's own baked-in threshold still applies.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
from tqdm import tqdm

from detection.data import CocoDetectionDataset
from detection.predict import coco_result
from detection.settings import RayOptions
from inference import imaging
from inference.answers import EVAL_SCORE_THRESHOLD, MAX_DETECTIONS
from inference.contract import DETECTION
from inference.model import LoadedModel
from inference.settings import InferenceSettings
from toolkit.errors import UsageError

SERVER_SCORE_THRESHOLD = 0.0  # what /detect is asked for unless told otherwise: all the graph returned


def image_path(dataset: CocoDetectionDataset, image_id: int) -> Path:
    """Where an image of the split lives."""
    return dataset.paths.image_dir / dataset.coco.loadImgs(image_id)[0]["file_name"]


def detect_onnx(
    path: Path,
    dataset: CocoDetectionDataset,
    score_threshold: float | None = None,
    inference: InferenceSettings | None = None,
) -> list[dict[str, Any]]:
    """COCO results of an exported detector on every image of ``dataset``, those scoring at least
    ``score_threshold`` (None: ``EVAL_SCORE_THRESHOLD``), on the runtime ``inference`` picks (None: the defaults)."""
    score_threshold = EVAL_SCORE_THRESHOLD if score_threshold is None else score_threshold
    model = LoadedModel.load(path, inference or InferenceSettings(), DETECTION)
    runs = model.describe()
    print(
        f"{model.metadata.model_name}: {runs['runtime']} {runs['version']} on {runs['device']} in {runs['precision']}"
    )
    results = []
    for image_id in tqdm(dataset.image_ids, desc="detect (onnx)", unit="image", leave=False):
        pixels = imaging.to_chw(imaging.load_rgb(image_path(dataset, image_id)))
        boxes, scores, labels = model.detect(pixels)
        results += [
            coco_result(image_id, box, label, score)
            for box, label, score in zip(boxes.tolist(), labels.tolist(), scores.tolist(), strict=True)
            if score >= score_threshold
        ]
    return results


def detect_server(
    url: str, dataset: CocoDetectionDataset, score_threshold: float | None = None, concurrency: int = 4
) -> list[dict[str, Any]]:
    """COCO results of a running service's ``POST /detect`` on every image of ``dataset`` (``concurrency`` uploads
    in flight), asked for ``score_threshold`` (None: ``SERVER_SCORE_THRESHOLD``); any answer but 200 stops with its
    error."""
    score_threshold = SERVER_SCORE_THRESHOLD if score_threshold is None else score_threshold
    return asyncio.run(_detect_server(url.rstrip("/"), dataset, score_threshold, concurrency))


async def _detect_server(
    url: str, dataset: CocoDetectionDataset, score_threshold: float, concurrency: int
) -> list[dict[str, Any]]:
    pending = iter(dataset.image_ids)
    results: list[dict[str, Any]] = []
    progress = tqdm(total=len(dataset.image_ids), desc="detect (server)", unit="image", leave=False)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(url, timeout=timeout) as session:

        async def client() -> None:
            for image_id in pending:
                path = image_path(dataset, image_id)
                form = aiohttp.FormData()
                form.add_field("image", path.read_bytes(), filename=path.name)
                form.add_field("score_threshold", str(score_threshold))
                form.add_field("max_detections", str(MAX_DETECTIONS))
                async with session.post("/detect", data=form) as response:
                    body = await response.json(content_type=None)
                    if response.status != 200:
                        raise UsageError(f"{url}/detect answered {response.status} for {path.name}: {body}")
                results.extend(
                    coco_result(image_id, d["box"], d["category_id"], d["score"]) for d in body["detections"]
                )
                progress.update(1)

        await asyncio.gather(*(client() for _ in range(concurrency)))
    progress.close()
    return results


def detect_ray(
    path: Path, dataset: CocoDetectionDataset, score_threshold: float | None = None, ray: RayOptions | None = None
) -> list[dict[str, Any]]:
    """``detect_onnx``'s results, the images sharded across a Ray cluster by ``batch`` (decode tasks, an
    actor pool of ORT sessions) and merged here in the split's order; an image that cannot be read stops it."""
    from batch import job as batch  # Ray is an optional extra: imported only here
    from batch.workers import Answering

    score_threshold = EVAL_SCORE_THRESHOLD if score_threshold is None else score_threshold
    ray = ray or RayOptions()
    options = batch.Options(
        model=Path(path),
        address=ray.address,
        actors=ray.actors,
        cpus_per_actor=ray.cpus_per_actor,
        cpus_per_task=ray.cpus_per_task,
        answering=Answering(score_threshold=score_threshold, max_detections=MAX_DETECTIONS),  # all it kept
        inference=ray.inference,
    )
    paths = {image_id: str(image_path(dataset, image_id).resolve()) for image_id in dataset.image_ids}
    metadata = batch.read_metadata(options.model)
    with batch.connected(options.address):
        rows = batch.dataset(list(paths.values()), options, metadata)
        answered = {row["path"]: row for row in rows.iter_rows()}
    results = []
    for image_id, image in paths.items():
        row = answered[image]
        if row["error"] is not None:
            raise UsageError(f"cannot read image {image}: {row['error']}; delete or replace it")
        results += [
            coco_result(image_id, found["box"], found["category_id"], found["score"])
            for found in json.loads(row["answer"])["detections"]
        ]
    return results
