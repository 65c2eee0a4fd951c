"""The service on the machine's ONNX Runtime provider (CUDA on a GPU machine) beside raw ORT, in one run.

ResNet-50 (random init, exported here): raw ORT images/s at batch 1, 8, 32, 64; ``/classify`` driven with real
ImageNet photos at concurrency 1, 32 and 128; ``/detect`` (R50-C4, random init) at concurrency 1. The service must
run on the provider asked for (``RESNET_LAB_PROVIDERS``, first entry): ``/info``'s providers are checked and a
silent fallback to the CPU stops the run. Writes ``serve_gpu.json`` and ``detect_gpu.json`` (docs/bench format).

    RESNET_LAB_PROVIDERS=CUDAExecutionProvider,CPUExecutionProvider python bench/serve_gpu.py --out OUT
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from detect_speed import random_detector
from http_load import drive, load
from serve_load import make_model, upload_kinds

from export import samples
from report.bench_file import Column, write_results
from service.local_server import bentoml_serve
from service.runtime import OnnxModel
from service.settings import Settings

COLUMNS = [
    Column("system", "system"),
    Column("batch_or_c", "batch / concurrency", "d"),
    Column("images_per_s", "images/s", ".1f"),
    Column("p50_ms", "p50 ms", ".1f"),
    Column("providers", "providers in use"),
]


def row(system: str, size: int, images_per_s: float, latencies: list[float], providers: list[str]) -> dict:
    """One table row."""
    p50 = 1000 * statistics.median(latencies)
    return {"system": system, "batch_or_c": size, "images_per_s": images_per_s, "p50_ms": p50,
            "providers": ",".join(providers)}  # fmt: skip


def raw_ort(onnx_path: Path, batches: list[int], seconds: float = 5.0) -> list[dict]:
    """Images/s of the session alone at each batch size, on the providers the settings ask for."""
    model = OnnxModel.load(onnx_path, Settings.from_env())
    rows = []
    for batch in batches:
        pixels = np.random.default_rng(0).integers(0, 256, (batch, 3, 224, 224), dtype=np.uint8)
        model.logits(pixels)
        calls, started, latencies = 0, time.perf_counter(), []
        while time.perf_counter() - started < seconds:
            begin = time.perf_counter()
            model.logits(pixels)
            latencies.append(time.perf_counter() - begin)
            calls += 1
        rate = calls * batch / (time.perf_counter() - started)
        rows.append(row("raw ORT", batch, rate, latencies, model.providers))
    return rows


def served(onnx_path: Path, detector: Path, args: argparse.Namespace, work: Path) -> tuple[list[dict], list[dict]]:
    """/classify at each concurrency and /detect at 1, on a real bentoml serve with the asked providers."""
    env = {"RESNET_LAB_MODEL": str(onnx_path), "RESNET_LAB_DETECTOR": str(detector), "BENTOML_HOME": str(work / "bh")}
    photos = upload_kinds(48)["imagenet"]
    classify, detect = [], []
    with bentoml_serve(env, work / "serve.log") as server:
        info = httpx.get(server.url + "/info").json()
        wanted = os.environ.get("RESNET_LAB_PROVIDERS", "CPUExecutionProvider").split(",")[0]
        if info["providers"][0] != wanted or info["detector"]["providers"][0] != wanted:
            raise SystemExit(f"the service runs on {info['providers']}, not {wanted}: a silent fallback")
        load(server.url, "/classify", photos, 8, 64)  # warm-up
        for c in args.concurrency:
            result = load(server.url, "/classify", photos, c, max(args.requests, 2 * c))
            classify.append(row("/classify", c, result["rps"], [result["p50_ms"] / 1000], info["providers"]))
        files = [path.read_bytes() for path in samples.coco_val_files(8)] or photos[:8]
        latencies, wall = asyncio.run(drive(server.url, "/detect", files, 1, len(files)))
        detect.append(row("/detect (R50-C4)", 1, len(latencies) / wall, latencies, info["providers"]))
    return classify, detect


def main(argv: list[str] | None = None) -> None:
    """Measure and write the two tables into ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for the results files")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32, 128])
    parser.add_argument("--requests", type=int, default=256, help="uploads per concurrency (default 256)")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="serve-gpu-"))
    _, onnx_path = make_model("resnet50", work)
    _, detector = random_detector("coco_resnet50_c4", {"min_size": 800, "max_size": 1333}, work)
    rows = raw_ort(onnx_path, args.batches)
    classify, detect = served(onnx_path, detector, args, work)
    notes = "ResNet-50, random init; real ImageNet photos uploaded by an aiohttp client on the same machine"
    write_results("serve_gpu", COLUMNS, rows + classify, notes, directory=args.out)
    write_results("detect_gpu", COLUMNS, detect, "R50-C4 at 800/1333, random init", directory=args.out)


if __name__ == "__main__":
    main()
