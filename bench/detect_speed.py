"""Detection speed, side by side in one run: PyTorch eager, raw ONNX Runtime on the exported file, and the service's
``POST /detect`` at concurrency 1 and 4, plus torchvision's ``fasterrcnn_resnet50_fpn`` (eager) for reference.

Real COCO val2017 images at each recipe's test scale, random weights (nothing is downloaded), one image per call.
Eager and ORT alternate image by image; latencies are medians over the images after one warm-up. The service is a
real ``bentoml serve`` of this repository with ``RESNET_LAB_DETECTOR`` set to the exported file, driven over HTTP
with the JPEG files as uploads. Writes ``docs/bench/detect_speed.json``.

    .venv/bin/python -m bench.detect_speed                       # C4 and FPN at the recipes' 800/1333, 5 images
    .venv/bin/python -m bench.detect_speed --min-size 512 --max-size 853 --images 3
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torchvision.models.detection import fasterrcnn_resnet50_fpn

from bench.http_load import drive
from detection.checkpoint import FORMAT
from detection.model import build_detector, fresh_backbone, set_test_size
from detection.recipes import get_recipe
from export.detector import SCORE_THRESHOLD, metadata_for
from export.detector_graph import export_detector_onnx, onnx_ready
from export.onnx_file import sha256_of, with_metadata, write_model
from inference import imaging
from inference.contract import DETECTION
from inference.model import LoadedModel
from inference.settings import InferenceSettings
from report.bench_file import Column, write_results
from tests.server import bentoml_serve
from toolkit import cli, data_folder
from toolkit.errors import UsageError
from training.checkpoint import save_checkpoint

COCO_IDS = list(range(1, 81))  # 80 categories; random weights, so which ids does not matter
COLUMNS = [
    Column("model", "model"),
    Column("system", "system"),
    Column("p50_s", "p50 s/image", ".3f"),
    Column("images_per_s", "images/s", ".2f"),
    Column("vs_ort", "vs raw ORT", ".2f", "x"),
]


def random_detector(recipe_name: str, sizes: dict[str, int], folder: Path) -> tuple[torch.nn.Module, Path]:
    """Our detector with random weights, saved as a checkpoint and exported (no verification: random weights)."""
    torch.manual_seed(0)
    recipe = get_recipe(recipe_name).override(min_size_test=sizes["min_size"], max_size=sizes["max_size"])
    model = build_detector(recipe, len(COCO_IDS) + 1, fresh_backbone(recipe.arch, {}, recipe))
    state = {
        "recipe": recipe.to_dict(), "arch": recipe.arch, "model_options": {}, "model": model.state_dict(),
        "category_ids": COCO_IDS, "category_names": [f"c{i}" for i in COCO_IDS],
        "image_mean": list(model.transform.image_mean), "image_std": list(model.transform.image_std),
        "backbone": "random", "metrics": [],
    }  # fmt: skip
    checkpoint = save_checkpoint(state, folder / f"{recipe_name}.pt", FORMAT)
    onnx_bytes = export_detector_onnx(onnx_ready(model, recipe, COCO_IDS, SCORE_THRESHOLD, **sizes))
    metadata = metadata_for(state, model, recipe, sha256_of(checkpoint), SCORE_THRESHOLD, sizes)
    onnx_path = write_model(with_metadata(onnx_bytes, metadata), folder / f"{recipe_name}.onnx")
    set_test_size(model, sizes["min_size"], sizes["max_size"])
    return model.eval(), onnx_path


@torch.no_grad()
def eager_and_ort(model: torch.nn.Module, onnx_path: Path, images: list[np.ndarray]) -> dict[str, list[float]]:
    """Seconds per image of eager PyTorch and raw ORT, alternating image by image after one warm-up each."""
    session = LoadedModel.load(
        onnx_path, InferenceSettings(runtime="onnxruntime", providers="CPUExecutionProvider"), DETECTION
    )
    times: dict[str, list[float]] = {"eager": [], "ort": []}
    runs = {
        "eager": lambda pixels: model([torch.from_numpy(pixels).float().div_(255)]),
        "ort": lambda pixels: session.detect(pixels),
    }
    for run in runs.values():
        run(images[0])
    for pixels in images:
        for name, run in runs.items():
            started = time.perf_counter()
            run(pixels)
            times[name].append(time.perf_counter() - started)
    return times


def service(onnx_path: Path, uploads: list[bytes], concurrencies: list[int], work: Path) -> dict[int, dict]:
    """p50 latency and images/s of /detect at each concurrency (after one warm-up request)."""
    env = {"RESNET_LAB_MODEL": "", "RESNET_LAB_DETECTOR": str(onnx_path), "BENTOML_HOME": str(work / "bentoml")}
    results = {}
    with bentoml_serve(env, work / f"serve-{onnx_path.stem}.log") as server:
        asyncio.run(drive(server.url, "/detect", uploads[:1], 1, 1))
        for concurrency in concurrencies:
            latencies, wall = asyncio.run(drive(server.url, "/detect", uploads, concurrency, len(uploads)))
            results[concurrency] = {"p50_s": statistics.median(latencies), "images_per_s": len(uploads) / wall}
    return results


def measure(recipe_name: str, args: argparse.Namespace, files: list[Path], work: Path) -> list[dict]:
    """The rows of one recipe: eager, raw ORT, the service at each concurrency."""
    recipe = get_recipe(recipe_name)
    sizes = {"min_size": args.min_size or recipe.min_size_test, "max_size": args.max_size or recipe.max_size}
    model, onnx_path = random_detector(recipe_name, sizes, work)
    images = [imaging.to_chw(imaging.load_rgb(path)) for path in files]
    times = eager_and_ort(model, onnx_path, images)
    ort_p50 = statistics.median(times["ort"])
    name = f"{recipe_name} ({sizes['min_size']}/{sizes['max_size']})"
    rows = [{"model": name, "system": f"PyTorch eager ({torch.get_num_threads()} threads)",
             "p50_s": statistics.median(times["eager"])},
            {"model": name, "system": "raw ONNX Runtime", "p50_s": ort_p50}]  # fmt: skip
    served = service(onnx_path, [path.read_bytes() for path in files], args.concurrency, work)
    rows += [{"model": name, "system": f"/detect service, concurrency {c}", **served[c]} for c in args.concurrency]
    for row in rows:
        row.setdefault("images_per_s", 1 / row["p50_s"])
        row["vs_ort"] = row["p50_s"] / ort_p50
    return rows


@torch.no_grad()
def torchvision_reference(files: list[Path], sizes: dict[str, int]) -> dict:
    """torchvision's fasterrcnn_resnet50_fpn (random weights), eager, at the same scale."""
    model = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None).eval()
    set_test_size(model, sizes["min_size"], sizes["max_size"])
    images = [torch.from_numpy(imaging.to_chw(imaging.load_rgb(path))).float().div_(255) for path in files]
    model(images[:1])
    times = []
    for image in images:
        started = time.perf_counter()
        model([image])
        times.append(time.perf_counter() - started)
    name = f"torchvision fasterrcnn_resnet50_fpn ({sizes['min_size']}/{sizes['max_size']})"
    p50 = statistics.median(times)
    return {"model": name, "system": "PyTorch eager", "p50_s": p50, "images_per_s": 1 / p50, "vs_ort": None}


def main(argv: list[str] | None = None) -> list[dict]:
    """Run every system on the same images and write the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="+", default=["coco_resnet50_c4", "coco_resnet50_fpn"])
    parser.add_argument("--images", type=int, default=5, help="real COCO val2017 images (default 5)")
    parser.add_argument("--min-size", type=int, help="test shorter side (default: each recipe's)")
    parser.add_argument("--max-size", type=int, help="test longest side cap (default: each recipe's)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4], help="service concurrencies (1 4)")
    args = parser.parse_args(argv)
    torch.set_flush_denormal(True)
    files = data_folder.coco_val_files(args.images)
    if not files:
        raise UsageError(f"no COCO val2017 images under {data_folder.data_dir()}; set RESNET_LAB_DATA")
    work = Path(tempfile.mkdtemp(prefix="detect-speed-"))
    rows = [row for recipe in args.recipes for row in measure(recipe, args, files, work)]
    reference = get_recipe(args.recipes[0])
    rows.append(torchvision_reference(files, {"min_size": args.min_size or reference.min_size_test,
                                              "max_size": args.max_size or reference.max_size}))  # fmt: skip
    notes = f"{len(files)} real COCO val2017 images, batch 1, random weights; latencies are medians over the images"
    write_results("detect_speed", COLUMNS, rows, notes)
    for row in rows:
        print(row)
    return rows


if __name__ == "__main__":
    cli.entry_point(main)
