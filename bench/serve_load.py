"""Serving speed on the uploads people send: the BentoML service vs raw ONNX Runtime vs a naive PyTorch handler.

For each model (random init, exported to ONNX in a temp dir) three servers run side by side: the real
``bentoml serve`` (fast decode of large JPEGs, its default), the same with ``RESNET_LAB_EXACT_DECODE=1``, and a naive
starlette/uvicorn app (PIL + torchvision transforms + eager model per request, the handler a user writes first).
aiohttp clients upload, per cell, one kind of upload:

- imagenet: real ImageNet photos as published (about 500x375 JPEG);
- phone: the same photos made 12-megapixel phone photos (4032x3024, JPEG quality 90, every other one stored sideways
  with EXIF orientation 6);
- png: the photos as small PNGs (shorter side 160);
- mix: 3 imagenet : 1 phone : 1 png, interleaved.

"ceiling of fast / exact" is the service's rate on ImageNet-sized uploads over the exact path's rate: what fast
decode would give if a phone photo cost no more to receive and decode than an ImageNet-sized one.

Raw ORT is the session alone on decoded batches of size c: the most any server could reach without decoding.
Every (system, cell) runs ``--rounds`` times, systems interleaved; the table shows medians (the machine is shared).
The load generator runs on the same cores. Writes ``docs/bench/serve_load.json``.

    .venv/bin/python -m bench.serve_load                      # resnet50 + resnet18: every upload kind at c=8,
                                                              # ImageNet-sized photos also at c=1 and c=32
    .venv/bin/python -m bench.serve_load --models resnet18 --requests 32 --rounds 1     # a quick look
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bench.http_load import load
from report.bench_file import Column, write_results
from tests import uploads
from tests.server import LocalServer, bentoml_serve
from toolkit import cli, data_folder
from toolkit.errors import UsageError

KINDS = ("imagenet", "phone", "png", "mix")
COLUMNS = [
    Column("model", "model"),
    Column("uploads", "uploads"),
    Column("c", "c", "d"),
    Column("service", "service req/s", ".1f"),
    Column("service_p50", "p50 ms", ".0f"),
    Column("exact", "exact decode req/s", ".1f"),
    Column("naive", "naive req/s", ".1f"),
    Column("ort", "raw ORT img/s", ".1f"),
    Column("fast_vs_exact", "fast / exact", ".2f", "x"),
    Column("ceiling", "ceiling of fast / exact", ".2f", "x"),
    Column("vs_naive", "service / naive", ".2f", "x"),
    Column("vs_ort", "service / ORT", ".2f", "x"),
]


def upload_kinds(count: int) -> dict[str, list[bytes]]:
    """The request bodies of each kind, made from the shared real photos."""
    from inference import imaging

    files = data_folder.imagenet_sample_files(count)
    if not files:
        raise UsageError(f"no ImageNet samples under {data_folder.data_dir()}; set RESNET_LAB_DATA")
    imagenet = [path.read_bytes() for path in files]
    phone = [uploads.phone_photo(path, orientation=6 if index % 2 else 1) for index, path in enumerate(files[:16])]
    png = []
    for path in files:
        image = imaging.load_rgb(path)
        image.thumbnail((10_000, 160) if image.width >= image.height else (160, 10_000))
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        png.append(buffer.getvalue())
    mix = [body for index in range(len(imagenet)) for body in (imagenet[index], phone[index % len(phone)],
           png[index], imagenet[(index + 1) % len(imagenet)], imagenet[(index + 2) % len(imagenet)])]  # fmt: skip
    return {"imagenet": imagenet, "phone": phone, "png": png, "mix": mix}


def make_model(name: str, folder: Path) -> tuple[Path, Path]:
    """Random-init checkpoint and its verified ONNX export (not registered in the model store)."""
    import torch

    from export.command import main as export_main
    from models import create_model, model_info
    from training import imagenet
    from training.classifier import save_classifier_checkpoint

    torch.manual_seed(0)
    inputs = model_info(name).inputs
    state = {
        "model_name": name, "model_options": {"num_classes": inputs.num_classes},
        "model": create_model(name).state_dict(), "labels": list(imagenet.imagenet_classes()[1]),
        "preprocess": {"mean": torch.tensor(inputs.mean), "std": torch.tensor(inputs.std),
                       "resize_size": inputs.resize_size, "crop_size": inputs.crop_size},
        "recipe": {"name": "bench, random init"}, "metrics": [],
    }  # fmt: skip
    checkpoint = save_classifier_checkpoint(state, folder / f"{name}.pt")
    onnx_path = folder / f"{name}.onnx"
    export_main(["--checkpoint", str(checkpoint), "--output", str(onnx_path)])
    return checkpoint, onnx_path


def raw_ort(onnx_path: Path, images: list[bytes], batch: int, requests: int) -> float:
    """Images/s of the session alone on already decoded uint8 batches of ``batch``."""
    from inference.imaging import preprocess
    from inference.model import LoadedModel
    from inference.settings import InferenceSettings

    model = LoadedModel.load(onnx_path, InferenceSettings(runtime="onnxruntime", providers="CPUExecutionProvider"))
    metadata = model.metadata
    pixels = np.stack([preprocess(images[i % len(images)], metadata.resize_size, metadata.crop_size)
                       for i in range(batch)])  # fmt: skip
    model.logits(pixels)
    calls = max(3, requests // batch)
    started = time.perf_counter()
    for _ in range(calls):
        model.logits(pixels)
    return calls * batch / (time.perf_counter() - started)


def naive_app(checkpoint: Path) -> Starlette:
    """What a user writes first: one sync endpoint doing PIL + torchvision + eager model per request."""
    import torch
    from PIL import Image, ImageOps
    from torchvision.transforms import v2

    from training.classifier import classifier_from_checkpoint, load_classifier_checkpoint

    state = load_classifier_checkpoint(checkpoint)
    model, labels = classifier_from_checkpoint(state).eval(), state["labels"]
    transform = v2.Compose([v2.Resize(256), v2.CenterCrop(224), v2.PILToTensor()])

    def run(data: bytes) -> list[dict]:
        image = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
        with torch.no_grad():
            probabilities = torch.softmax(model(transform(image).unsqueeze(0)), dim=1)[0]
        scores, indices = probabilities.topk(5)
        return [{"index": int(i), "label": labels[i], "score": float(s)} for s, i in zip(scores, indices, strict=True)]

    async def classify(request: Request) -> JSONResponse:
        form = await request.form()
        return JSONResponse({"predictions": await run_in_threadpool(run, await form["image"].read())})

    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/classify", classify, methods=["POST"]), Route("/healthz", healthz)])


def start_servers(name: str, checkpoint: Path, onnx_path: Path, work: Path) -> dict[str, LocalServer]:
    """The service (fast decode), the service with exact decode, and the naive handler, all up."""
    servers: dict[str, LocalServer] = {}
    try:
        for system, exact in (("service", "0"), ("exact", "1")):
            env = {"RESNET_LAB_MODEL": str(onnx_path), "BENTOML_HOME": str(work / "bentoml"),
                   "RESNET_LAB_EXACT_DECODE": exact}  # fmt: skip
            servers[system] = bentoml_serve(env, work / f"{system}-{name}.log")
        command = [sys.executable, __file__, "--naive-server", str(checkpoint), "--port", "{port}"]
        servers["naive"] = LocalServer(command, {}, work / f"naive-{name}.log", "/healthz")
    except BaseException:
        for server in servers.values():
            server.stop()
        raise
    return servers


def cells(args: argparse.Namespace) -> list[tuple[str, int]]:
    """(upload kind, concurrency) of the table: every kind at c=8, ImageNet photos also at the others."""
    return [(kind, 8) for kind in args.kinds] + [("imagenet", c) for c in args.concurrency if c != 8]


def int8_copy(
    model: Path, calibration: str, work: Path, min_agreement: float = 0.0, min_top5: float = 0.0
) -> tuple[Path, dict]:
    """Quantize an exported file into ``work`` (``export.int8``); the int8 path and its verification report. The
    bars default to none: random-init nets have near-tie logits, so agreement is not the point of a speed bench."""
    from export.int8 import Int8Options, quantized_and_verified
    from export.onnx_file import write_model

    options = Int8Options(calibration_images=calibration, min_agreement=min_agreement, min_top5=min_top5)
    int8_bytes, report = quantized_and_verified(model.read_bytes(), options)
    return write_model(int8_bytes, work / (model.stem + "-int8.onnx")), report


def measure_model(name: str, uploads: dict[str, list[bytes]], args: argparse.Namespace, work: Path) -> list[dict]:
    """Every cell of one model, systems interleaved within each round; one row per cell with the medians."""
    checkpoint, onnx_path = make_model(name, work)
    if args.precision == "int8":
        onnx_path, _ = int8_copy(onnx_path, "128", work)
    servers = start_servers(name, checkpoint, onnx_path, work)
    results: dict[tuple[str, int, str], list[dict]] = {}
    try:
        for server in servers.values():
            load(
                server.url, "/classify", uploads["imagenet"], 4, 32
            )  # warm-up (BentoML's batching optimiser trains here too)
        for _ in range(args.rounds):
            for kind, c in cells(args):
                count = max(args.requests, 2 * c)
                for system, server in servers.items():
                    if system == "exact" and kind in ("imagenet", "png"):
                        continue  # no JPEG there is large enough for the fast path: the same server twice
                    results.setdefault((kind, c, system), []).append(
                        load(server.url, "/classify", uploads[kind], c, count)
                    )
                    print(name, kind, c, system, results[(kind, c, system)][-1], flush=True)
    finally:
        for server in servers.values():
            server.stop()
    ort = {
        c: raw_ort(onnx_path, uploads["imagenet"], c, max(args.requests, 2 * c)) for c in {c for _, c in cells(args)}
    }
    label = name if args.precision == "fp32" else f"{name} {args.precision}"
    return with_ceilings([table_row(label, kind, c, results, ort[c]) for kind, c in cells(args)])


def with_ceilings(rows: list[dict]) -> list[dict]:
    """Add, where exact decode was measured, the most any decode could gain over it in the same run.

    The ceiling is the service's rate on ImageNet-sized uploads (decoded in about 5 ms) over the exact path's rate:
    even a phone photo that decoded as cheaply as those would not pass it.
    """
    small = {row["c"]: row["service"] for row in rows if row["uploads"] == "imagenet"}
    for row in rows:
        row["ceiling"] = small[row["c"]] / row["exact"] if row["exact"] and row["c"] in small else None
    return rows


def table_row(name: str, kind: str, c: int, results: dict, ort: float) -> dict:
    """One cell's medians and ratios."""

    def median(system: str, figure: str = "rps") -> float | None:
        runs = results.get((kind, c, system))
        return statistics.median(run[figure] for run in runs) if runs else None

    service, exact, naive = median("service"), median("exact"), median("naive")
    return {
        "model": name, "uploads": kind, "c": c, "service": service, "service_p50": median("service", "p50_ms"),
        "exact": exact, "naive": naive, "ort": ort, "fast_vs_exact": service / exact if exact else None,
        "vs_naive": service / naive, "vs_ort": service / ort,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the comparison and write the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["resnet50", "resnet18"])
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 8, 32], help="for ImageNet-sized photos")
    parser.add_argument("--requests", type=int, default=48, help="requests per cell and round (default 48)")
    parser.add_argument("--rounds", type=int, default=2, help="repeats of every cell, interleaved (default 2)")
    parser.add_argument("--photos", type=int, default=48, help="real photos the uploads are made from (default 48)")
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS), help="upload kinds at c=8 (all)")
    parser.add_argument("--precision", choices=["fp32", "int8"], default="fp32", help="served model (the naive "
                        "handler stays PyTorch fp32)")  # fmt: skip
    parser.add_argument("--results", default="serve_load", help="docs/bench/NAME.json to write (default serve_load)")
    parser.add_argument("--naive-server", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.naive_server:  # internal: run the naive baseline server
        import uvicorn

        uvicorn.run(naive_app(Path(args.naive_server)), host="127.0.0.1", port=args.port, log_level="warning")
        return []
    uploads = upload_kinds(args.photos)
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        rows = [row for name in args.models for row in measure_model(name, uploads, args, Path(tmp))]
    notes = (
        f"medians of {args.rounds} interleaved rounds of {args.requests} uploads per cell; random-init models; the "
        "aiohttp client shares the cores; raw ORT = the session on decoded batches of size c"
    )
    write_results(args.results, COLUMNS, rows, notes)
    return rows


if __name__ == "__main__":
    cli.entry_point(main)
