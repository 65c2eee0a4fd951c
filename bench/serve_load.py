"""Load test: the BentoML service vs raw ONNX Runtime vs a naive PyTorch-eager HTTP handler, in one run.

For each model (random init, exported to ONNX in a temp dir) a real `bentoml serve` and a naive starlette/uvicorn
app (PIL + torchvision transforms + eager model per request, the handler a user writes first) are driven by
asyncio/aiohttp clients at each concurrency, uploading real ImageNet photos. Raw ORT is the session alone on
already-decoded uint8 batches (batch size = concurrency); "ORT + decode" adds the service's own JPEG decode and
resize of those images (threads), in-process, no HTTP: the most any server on this machine could deliver.
Every (system, concurrency) cell runs ``--rounds`` times, systems interleaved, and the table shows medians: the
machine is shared and noisy. The load generator runs on the same cores; its CPU per request is printed.
Server memory (RSS of the process tree) is read after 100 and after 2000 requests.

    .venv/bin/python bench/serve_load.py                      # resnet50 + resnet18, concurrency 1 8 32
    .venv/bin/python bench/serve_load.py --quick              # resnet18 only, fewer requests
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import resource
import shlex
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp
import httpx
import numpy as np
import psutil

from export import samples
from service.local_server import REPO_ROOT, LocalServer, bentoml_serve


def photos(count: int) -> list[bytes]:
    """Real ImageNet JPEGs (bytes), the request bodies."""
    files = samples.imagenet_sample_files(count)
    if not files:
        raise SystemExit(f"no ImageNet samples under {samples.shared_data_dir()}; set RESNET_LAB_DATA")
    return [path.read_bytes() for path in files]


def make_model(name: str, folder: Path) -> tuple[Path, Path]:
    """Random-init checkpoint + its verified ONNX export (not registered in the model store)."""
    import torch

    from export import classifier as exporter
    from models import create_model, model_info
    from training import imagenet
    from training.classifier import save_classifier_checkpoint

    torch.manual_seed(0)
    model = create_model(name)
    inputs = model_info(name).inputs
    state = {
        "model_name": name,
        "model_options": {"num_classes": inputs.num_classes},
        "model": model.state_dict(),
        "labels": list(imagenet.imagenet_classes()[1]),
        "preprocess": {
            "mean": torch.tensor(inputs.mean),
            "std": torch.tensor(inputs.std),
            "resize_size": inputs.resize_size,
            "crop_size": inputs.crop_size,
        },
        "recipe": {"name": "bench, random init"},
        "metrics": [],
    }
    checkpoint = save_classifier_checkpoint(state, folder / f"{name}.pt")
    onnx_path = folder / f"{name}.onnx"
    exporter.main(["--checkpoint", str(checkpoint), "--output", str(onnx_path), "--no-register"])
    return checkpoint, onnx_path


# --- raw ONNX Runtime ---------------------------------------------------------------------------------------------


def raw_ort(onnx_path: Path, images: list[bytes], concurrency: int, requests: int, decode: bool) -> dict[str, float]:
    """The session alone on uint8 batches of size ``concurrency`` (decoded first when ``decode``): img/s, latency."""
    from service.imaging import preprocess
    from service.runtime import OnnxClassifier
    from service.settings import Settings

    model = OnnxClassifier.load(onnx_path, Settings(providers="CPUExecutionProvider"))
    bodies = [images[i % len(images)] for i in range(concurrency)]

    def decoded(data: bytes) -> np.ndarray:
        return preprocess(data, model.metadata.resize_size, model.metadata.crop_size)

    fixed = np.stack([decoded(data) for data in bodies])
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:

        def call() -> None:
            model.logits(np.stack(list(pool.map(decoded, bodies))) if decode else fixed)

        for _ in range(2):
            call()
        calls = max(3, requests // concurrency)
        latencies = []
        start = time.perf_counter()
        for _ in range(calls):
            begin = time.perf_counter()
            call()
            latencies.append(time.perf_counter() - begin)
        wall = time.perf_counter() - start
    return {
        "rps": calls * concurrency / wall,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * float(np.percentile(latencies, 99)),
    }


# --- servers ------------------------------------------------------------------------------------------------------


def rss_mb(server: LocalServer) -> float:
    """Resident memory of the server's whole process tree."""
    return sum(psutil.Process(pid).memory_info().rss for pid in server.pids()) / 2**20


def start_service(onnx_path: Path, work: Path) -> LocalServer:
    env = {"RESNET_LAB_MODEL": str(onnx_path), "BENTOML_HOME": str(work / "bentoml")}
    return bentoml_serve(env, work / f"service-{onnx_path.stem}.log")


def start_naive(checkpoint: Path, work: Path) -> LocalServer:
    command = [sys.executable, __file__, "--naive-server", str(checkpoint), "--port", "{port}"]
    return LocalServer(command, {}, work / f"naive-{checkpoint.stem}.log", "/healthz")


def naive_app(checkpoint: Path):
    """What a user writes first: one sync endpoint doing PIL + torchvision + eager model per request."""
    import torch
    from PIL import Image
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route
    from torchvision.transforms import v2

    from training.classifier import classifier_from_checkpoint, load_classifier_checkpoint

    state = load_classifier_checkpoint(checkpoint)
    model = classifier_from_checkpoint(state).eval()
    labels = state["labels"]
    transform = v2.Compose([v2.Resize(256), v2.CenterCrop(224), v2.PILToTensor()])

    async def classify(request):
        form = await request.form()
        data = await form["image"].read()

        def run():
            image = Image.open(__import__("io").BytesIO(data)).convert("RGB")
            with torch.no_grad():
                probabilities = torch.softmax(model(transform(image).unsqueeze(0)), dim=1)[0]
            scores, indices = probabilities.topk(5)
            return [
                {"index": int(i), "label": labels[i], "score": float(s)} for s, i in zip(scores, indices, strict=True)
            ]

        from starlette.concurrency import run_in_threadpool

        return JSONResponse({"predictions": await run_in_threadpool(run)})

    async def healthz(_):
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/classify", classify, methods=["POST"]), Route("/healthz", healthz)])


# --- load generator -----------------------------------------------------------------------------------------------


async def drive(url: str, images: list[bytes], concurrency: int, requests: int) -> dict[str, float]:
    """``requests`` POST /classify uploads with ``concurrency`` in flight; req/s, p50, p99, errors, client CPU.

    aiohttp, not httpx: on 2 shared cores the client's CPU is taken from the server (httpx: ~5 ms per upload,
    aiohttp ~1 ms).
    """
    latencies: list[float] = []
    errors = 0
    counter = iter(range(requests))
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(url, connector=connector, timeout=timeout) as session:

        async def worker() -> None:
            nonlocal errors
            for index in counter:
                form = aiohttp.FormData()
                form.add_field("image", images[index % len(images)], filename="photo.jpg", content_type="image/jpeg")
                begin = time.perf_counter()
                async with session.post("/classify", data=form) as response:
                    await response.read()
                    errors += response.status != 200
                latencies.append(time.perf_counter() - begin)

        usage = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_SELF)
    client_cpu = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
    return {
        "rps": requests / wall,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * float(np.percentile(latencies, 99)),
        "errors": errors,
        "client_cpu_ms": 1000 * client_cpu / requests,
    }


def load(url: str, images: list[bytes], concurrency: int, requests: int) -> dict[str, float]:
    return asyncio.run(drive(url, images, concurrency, requests))


# --- main ---------------------------------------------------------------------------------------------------------


SYSTEMS = ("raw ORT", "ORT + decode", "service", "naive")


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the comparison and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["resnet50", "resnet18"])
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=96, help="requests per (system, concurrency) cell and round")
    parser.add_argument("--rounds", type=int, default=3, help="repeats of each cell, interleaved; medians")
    parser.add_argument("--memory-model", default="resnet18", help="model for the 100 vs 2000 requests RSS check")
    parser.add_argument("--memory-requests", type=int, nargs=2, default=[100, 2000])
    parser.add_argument("--quick", action="store_true", help="resnet18 only, 64 requests, memory 100 vs 600")
    parser.add_argument("--out", default=str(REPO_ROOT / "runs" / "bench_serve"), help="CSV + PNG folder")
    parser.add_argument("--naive-server", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.naive_server:  # internal: run the naive baseline server
        import uvicorn

        uvicorn.run(naive_app(Path(args.naive_server)), host="127.0.0.1", port=args.port, log_level="warning")
        return []
    if args.quick:
        args.models, args.requests, args.memory_requests = ["resnet18"], 64, [100, 600]

    command = "python bench/serve_load.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    images = photos(64)
    rows: list[dict] = []
    memory: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        work = Path(tmp)
        exported = {}
        for name in dict.fromkeys([*args.models, args.memory_model]):
            print(f"exporting random-init {name} ...", flush=True)
            exported[name] = make_model(name, work)
        for name in args.models:
            checkpoint, onnx_path = exported[name]
            # Both servers up (idle between turns); each concurrency level measures raw ORT, service and naive
            # back to back, so load from other processes on this machine hits all three alike.
            service = start_service(onnx_path, work)
            try:
                naive = start_naive(checkpoint, work)
            except BaseException:
                service.stop()
                raise
            try:
                for server in (service, naive):
                    load(server.url, images, 4, 32)  # warm-up (BentoML's batching optimiser trains here too)
                for c in args.concurrency:
                    count = max(args.requests, 2 * c)
                    for round_index in range(args.rounds):
                        for system in SYSTEMS:
                            if system in ("raw ORT", "ORT + decode"):
                                result = raw_ort(onnx_path, images, c, count, decode=system == "ORT + decode")
                            else:
                                result = load((service if system == "service" else naive).url, images, c, count)
                            row = {"model": name, "system": system, "concurrency": c, "round": round_index}
                            rows.append({**row, **result})
                            print(rows[-1], flush=True)
                info = httpx.get(service.url + "/info").json()
                print(f"service {name}: batches {info['batches']}, mean ms {info['mean_ms']}", flush=True)
            finally:
                service.stop()
                naive.stop()
        first, second = args.memory_requests
        server = start_service(exported[args.memory_model][1], work)
        try:
            load(server.url, images, 8, first)
            memory[f"after {first}"] = rss_mb(server)
            load(server.url, images, 8, second - first)
            memory[f"after {second}"] = rss_mb(server)
        finally:
            server.stop()

    report(rows, memory, args, command)
    return rows


def median_cells(rows: list[dict]) -> dict[tuple[str, str, int], dict[str, float]]:
    """(model, system, concurrency) -> the median of each figure over the rounds."""
    groups: dict[tuple[str, str, int], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["model"], row["system"], row["concurrency"]), []).append(row)
    figures = ("rps", "p50_ms", "p99_ms", "client_cpu_ms")
    return {
        key: {f: statistics.median(r[f] for r in group) for f in figures if f in group[0]}
        for key, group in groups.items()
    }


def report(rows: list[dict], memory: dict[str, float], args, command: str) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "serve_load.csv", "w", newline="") as stream:
        fields = ["model", "system", "concurrency", "round", "rps", "p50_ms", "p99_ms", "errors", "client_cpu_ms"]
        writer = csv.DictWriter(stream, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    cell = median_cells(rows)
    print(f"\n$ {command}")
    print(
        f"CPU: {os.cpu_count()} cores, load average at the end {os.getloadavg()[0]:.1f}; images: real ImageNet JPEGs; "
        f"medians of {args.rounds} interleaved rounds; raw ORT = the session alone on decoded batches of size c; "
        "ORT + decode = the same plus the service's decode/resize in threads (no HTTP); client = load generator "
        "CPU ms per request, on the same cores"
    )
    print(
        "\n| model | c | service req/s | p50 ms | p99 ms | raw ORT img/s | p50 ms | ORT + decode img/s | p50 ms "
        "| naive req/s | p50 ms | client ms | service/ORT | service/(ORT+decode) | service/naive | p50 - ORT p50 |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for model in args.models:
        for c in args.concurrency:
            s, o = cell[(model, "service", c)], cell[(model, "raw ORT", c)]
            d, n = cell[(model, "ORT + decode", c)], cell[(model, "naive", c)]
            print(
                f"| {model} | {c} | {s['rps']:.1f} | {s['p50_ms']:.0f} | {s['p99_ms']:.0f} | {o['rps']:.1f} | "
                f"{o['p50_ms']:.0f} | {d['rps']:.1f} | {d['p50_ms']:.0f} | {n['rps']:.1f} | {n['p50_ms']:.0f} | "
                f"{s['client_cpu_ms']:.1f} | {s['rps'] / o['rps']:.2f}x | {s['rps'] / d['rps']:.2f}x | "
                f"{s['rps'] / n['rps']:.2f}x | {s['p50_ms'] - o['p50_ms']:+.0f} |"
            )
    errors = sum(r.get("errors", 0) for r in rows)
    print(f"\nnon-200 answers during the run: {errors}")
    if memory:
        (a, ra), (b, rb) = memory.items()
        print(
            f"service RSS ({args.memory_model}, process tree): {ra:.0f} MiB {a} requests, {rb:.0f} MiB {b} "
            f"({100 * (rb - ra) / ra:+.1f}%)"
        )
    print("targets: c=32 service >= 0.85x raw ORT and >= 1.8x naive; c=1 p50 within 10 ms of raw ORT; RSS growth < 10%")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axes = plt.subplots(1, len(args.models), figsize=(5 * len(args.models), 3.5), squeeze=False)
        for axis, model in zip(axes[0], args.models, strict=True):
            width = 0.2
            for offset, system in enumerate(("service", "raw ORT", "ORT + decode", "naive")):
                values = [cell[(model, system, c)]["rps"] for c in args.concurrency]
                axis.bar(np.arange(len(values)) + (offset - 1.5) * width, values, width, label=system)
            axis.set_xticks(range(len(args.concurrency)), [f"c={c}" for c in args.concurrency])
            axis.set_title(model)
            axis.set_ylabel("images / s")
            axis.legend()
        figure.tight_layout()
        figure.savefig(out / "serve_load.png", dpi=120)
        print(f"wrote {out / 'serve_load.csv'} and {out / 'serve_load.png'}")
    except Exception as error:  # the table above is the result; the plot is a convenience
        print(f"plot skipped: {error}")


if __name__ == "__main__":
    main()
