"""The service on the machine's ONNX Runtime provider (CUDA on a GPU machine) beside raw ORT, in one run.

ResNet-50 (random init, exported here): raw ORT images/s at batch 1, 8, 32, 64; ``/classify`` driven with real
ImageNet photos at concurrency 1, 32 and 128; ``/detect`` (R50-C4, random init) at concurrency 1. Everything must run
on the provider the settings ask for (``RESNET_LAB_PROVIDERS``, first entry; empty: what the service would choose):
the raw sessions' ``get_providers()`` and ``/info``'s providers are checked, and a silent fallback to the CPU stops
the run (ORT lists CUDA as available even where no GPU works). After each concurrency the ``/metrics`` histogram
``resnet_lab_batch_size`` (ORT calls per batch-size bucket during that level) goes into the row, to tell a queue
that does not fill its batches from a slow provider. Writes ``serve_gpu.json`` and ``detect_gpu.json``
(docs/bench format).

    RESNET_LAB_PROVIDERS=CUDAExecutionProvider,CPUExecutionProvider python -m bench.serve_gpu --output-dir OUT
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from bench.detect_speed import random_detector
from bench.http_load import drive, load
from bench.serve_load import make_model, upload_kinds
from inference.model import LoadedModel
from inference.runtimes.onnx_runtime import choose_providers
from inference.settings import InferenceSettings
from report.bench_file import Column, write_results
from tests.server import LocalServer, bentoml_serve
from toolkit import cli, data_folder
from toolkit.errors import UsageError

COLUMNS = [
    Column("system", "system"),
    Column("batch_or_c", "batch / concurrency", "d"),
    Column("images_per_s", "images/s", ".1f"),
    Column("p50_ms", "p50 ms", ".1f"),
    Column("mean_batch", "mean ORT batch", ".1f"),
    Column("batch_calls", "ORT calls per batch size (<= bucket)"),
    Column("providers", "providers in use"),
]
HISTOGRAM = "resnet_lab_batch_size"


def row(system: str, size: int, images_per_s: float, latencies: list[float], providers: list[str]) -> dict:
    """One table row."""
    p50 = 1000 * statistics.median(latencies)
    return {"system": system, "batch_or_c": size, "images_per_s": images_per_s, "p50_ms": p50,
            "providers": ",".join(providers)}  # fmt: skip


def require_provider(providers: list[str], wanted: str, what: str) -> None:
    """Stop the run unless ``wanted`` is the provider ORT really put first."""
    if not providers or providers[0] != wanted:
        raise UsageError(
            f"{what} runs on {providers}, not {wanted}: a silent fallback (is the GPU visible, are the CUDA "
            "libraries on the loader path?)"
        )


def raw_ort(onnx_path: Path, batches: list[int], settings: InferenceSettings, seconds: float) -> list[dict]:
    """Images/s of the session alone at each batch size, on the providers the settings ask for."""
    model = LoadedModel.load(onnx_path, settings)
    require_provider(model.session.providers, choose_providers(settings.providers)[0], "raw ORT")
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


def batch_histogram(metrics: str, endpoint: str = "classify") -> dict[str, float]:
    """Cumulative bucket counts (``le`` -> calls), ``sum`` and ``count`` of the batch-size histogram."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            kind = sample.name.removeprefix(HISTOGRAM + "_")
            if kind in ("bucket", "sum", "count") and sample.labels.get("endpoint") == endpoint:
                found[sample.labels["le"] if kind == "bucket" else kind] = sample.value
    return found


def histogram_row(before: dict[str, float], after: dict[str, float]) -> dict:
    """The ORT calls between two snapshots: per bucket (not cumulative) and the mean batch size."""
    buckets = sorted((key for key in after if key not in ("sum", "count")), key=float)
    calls, below = {}, 0.0
    for le in buckets:
        cumulative = after[le] - before.get(le, 0.0)
        if cumulative > below:
            label = le if le == "+Inf" else f"{float(le):g}"
            calls[label] = int(cumulative - below)
        below = cumulative
    count = after.get("count", 0.0) - before.get("count", 0.0)
    mean = (after.get("sum", 0.0) - before.get("sum", 0.0)) / count if count else None
    cells = ", ".join(f"<={le}: {n}" for le, n in calls.items())
    return {"mean_batch": mean, "batch_calls": cells, "batch_histogram": calls}


def classify_levels(server: LocalServer, photos: list[bytes], args: argparse.Namespace, providers: list[str]):
    """/classify at each concurrency, with the batch sizes ORT saw during each level and /info's timings."""
    rows = []
    load(server.url, "/classify", photos, 8, 64)  # warm-up
    for c in args.concurrency:
        before = batch_histogram(httpx.get(server.url + "/metrics").text)
        result = load(server.url, "/classify", photos, c, max(args.requests, 2 * c))
        after = batch_histogram(httpx.get(server.url + "/metrics").text)
        rows.append(row("/classify", c, result["rps"], [result["p50_ms"] / 1000], providers))
        rows[-1] |= histogram_row(before, after)
        rows[-1]["info_mean_ms_since_start"] = httpx.get(server.url + "/info").json()["mean_ms"]
    return rows


def served(onnx_path: Path, detector: Path, args: argparse.Namespace, work: Path) -> tuple[list[dict], list[dict]]:
    """/classify at each concurrency and /detect at 1, on a real bentoml serve with the asked providers."""
    env = {"RESNET_LAB_MODEL": str(onnx_path), "RESNET_LAB_DETECTOR": str(detector), "BENTOML_HOME": str(work / "bh")}
    photos = upload_kinds(48)["imagenet"]
    wanted = choose_providers(InferenceSettings.from_env().providers)[0]
    with bentoml_serve(env, work / "serve.log") as server:
        info = httpx.get(server.url + "/info").json()
        require_provider(info["providers"], wanted, "the service's classifier")
        require_provider(info["detector"]["providers"], wanted, "the service's detector")
        classify = classify_levels(server, photos, args, info["providers"])
        files = [path.read_bytes() for path in data_folder.coco_val_files(args.detect_images)]
        files = files or photos[: args.detect_images]
        latencies, wall = asyncio.run(drive(server.url, "/detect", files, 1, len(files)))
        detect = [row("/detect (R50-C4)", 1, len(latencies) / wall, latencies, info["detector"]["providers"])]
    return classify, detect


def main(argv: list[str] | None = None) -> None:
    """Measure and write the two tables into ``--output-dir``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", type=Path, required=True, help="folder for the results files")
    parser.add_argument(
        "--batches", type=int, nargs="+", default=[1, 8, 32, 64], help="raw ORT batch sizes (default 1 8 32 64)"
    )
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=[1, 32, 128], help="/classify concurrencies (default 1 32 128)"
    )
    parser.add_argument("--requests", type=int, default=256, help="uploads per concurrency (default 256)")
    parser.add_argument("--seconds", type=float, default=5.0, help="raw ORT time per batch size (default 5)")
    parser.add_argument("--detect-images", type=int, default=8, help="COCO images sent to /detect (default 8)")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="serve-gpu-"))
    _, onnx_path = make_model("resnet50", work)
    rows = raw_ort(
        onnx_path, args.batches, InferenceSettings.from_env(), args.seconds
    )  # first: a fallback stops it early
    _, detector = random_detector("coco_resnet50_c4", {"min_size": 800, "max_size": 1333}, work)
    classify, detect = served(onnx_path, detector, args, work)
    notes = "ResNet-50, random init; real ImageNet photos uploaded by an aiohttp client on the same machine"
    write_results("serve_gpu", COLUMNS, rows + classify, notes, directory=args.output_dir)
    write_results("detect_gpu", COLUMNS, detect, "R50-C4 at 800/1333, random init", directory=args.output_dir)


if __name__ == "__main__":
    cli.entry_point(main)
