"""fp32 vs int8 in one run: the default model's error, and ResNet-50 / ResNet-18 speed raw and served.

- The embedded CIFAR-10 default model and its int8 copy (``export.int8``, calibrated on 512 CIFAR-10 training
  images; 7-bit weights as exported, and 8-bit weights for comparison): top-1 error on all 10,000 test images and
  agreement with fp32.
- ResNet-50 and ResNet-18 (random init, exported here) and their int8 copies (calibrated on shared ImageNet photos):
  raw ONNX Runtime images/s at batch 1 and 32, and ``/classify`` requests/s at concurrency 32 (real ImageNet
  photos uploaded to a real ``bentoml serve``). fp32 and int8 alternate within every round; medians.

Writes ``docs/bench/int8.json``.

    .venv/bin/python -m bench.int8
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np

from bench.http_load import load
from bench.serve_load import int8_copy, make_model, raw_ort
from export import int8
from export.onnx_file import write_model
from inference import imaging
from inference.contract import DEFAULT_MODEL
from inference.model import LoadedModel
from inference.settings import InferenceSettings
from report.bench_file import Column, write_results
from tests.server import bentoml_serve
from toolkit import cli, data_folder

ORT_CPU = InferenceSettings(runtime="onnxruntime", providers="CPUExecutionProvider")  # ORT's own int8 kernels

COLUMNS = [
    Column("model", "model"),
    Column("precision", "precision"),
    Column("error", "CIFAR-10 test error", ".2f", "%"),
    Column("agreement", "top-1 = fp32's, 10,000 test images", ".2f", "%"),
    Column("batch1", "raw ORT img/s, batch 1", ".1f"),
    Column("batch32", "raw ORT img/s, batch 32", ".1f"),
    Column("served", "/classify req/s, c=32", ".1f"),
    Column("speedup32", "int8 / fp32, batch 32", ".2f", "x"),
]


def cifar_top1(model: Path, pixels: np.ndarray) -> np.ndarray:
    """Top-1 class of each image (uint8 ``[N, 3, 32, 32]``)."""
    session = LoadedModel.load(model, ORT_CPU)
    return np.concatenate([session.logits(pixels[i : i + 1000]).argmax(1) for i in range(0, len(pixels), 1000)])


def default_model_rows(work: Path) -> list[dict]:
    """The default model in fp32, in int8 as exported (7-bit weights) and with 8-bit weights: error and agreement
    with fp32 on all 10,000 CIFAR-10 test images."""
    fp32 = Path(DEFAULT_MODEL)
    seven_bit, _ = int8_copy(fp32, "512", work, int8.MIN_AGREEMENT, int8.MIN_TOP5)
    metadata = LoadedModel.load(fp32, ORT_CPU).metadata
    calibration, described, _ = int8.image_sets(metadata, "512", None, 1)
    eight_bit = write_model(
        int8.quantize_int8(fp32.read_bytes(), [calibration], described, reduce_range=False), work / "8bit.onnx"
    )
    images = data_folder.cifar_images(10_000)
    pixels = np.stack([imaging.preprocess(data, 32, 32) for data, _ in images])
    truth = np.array([metadata.labels.index(label) for _, label in images])
    reference = cifar_top1(fp32, pixels)
    rows = []
    for precision, path in (("fp32", fp32), ("int8", seven_bit), ("int8, 8-bit weights", eight_bit)):
        top1 = reference if path == fp32 else cifar_top1(path, pixels)
        error, agreement = 100 * float((top1 != truth).mean()), 100 * float((top1 == reference).mean())
        rows.append(
            {"model": "default (cifar_resnet20)", "precision": precision, "error": error, "agreement": agreement}
        )
    return rows


def speed(models: dict[str, Path], photos: list[bytes], args: argparse.Namespace, work: Path) -> dict[str, dict]:
    """Raw ORT at batch 1 and 32 and /classify at c=32 for each file, alternating in every round; medians."""
    runs: dict[str, dict[str, list[float]]] = {name: {"batch1": [], "batch32": [], "served": []} for name in models}
    servers = {name: bentoml_serve({"RESNET_LAB_MODEL": str(path), "BENTOML_HOME": str(work / "bh")},
                                   work / f"{path.stem}.log") for name, path in models.items()}  # fmt: skip
    try:
        for server in servers.values():
            load(server.url, "/classify", photos, 8, 32)  # warm-up
        for _ in range(args.rounds):
            for name, path in models.items():
                runs[name]["batch1"].append(raw_ort(path, photos, 1, args.requests))
                runs[name]["batch32"].append(raw_ort(path, photos, 32, 4 * 32))
                runs[name]["served"].append(load(servers[name].url, "/classify", photos, 32, args.requests)["rps"])
    finally:
        for server in servers.values():
            server.stop()
    return {name: {key: statistics.median(values) for key, values in figures.items()} for name, figures in runs.items()}


def int8_extensions() -> str:
    """The CPU flags ORT's u8 x s8 kernels pick from (VNNI, AMX), as /proc/cpuinfo lists them."""
    cpuinfo = Path("/proc/cpuinfo")
    flags = set(cpuinfo.read_text().split()) if cpuinfo.is_file() else set()
    found = [flag for flag in ("avx2", "avx_vnni", "avx512_vnni", "amx_int8") if flag in flags]
    return ", ".join(found) or "none listed"


def main(argv: list[str] | None = None) -> list[dict]:
    """Measure and write the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["resnet50", "resnet18"])
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--requests", type=int, default=64, help="requests per served cell and round (default 64)")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="int8-"))
    rows = default_model_rows(work)
    photos = [path.read_bytes() for path in data_folder.imagenet_sample_files(64)]
    for name in args.models:
        _, fp32 = make_model(name, work)
        int8_path, _ = int8_copy(fp32, "128", work)
        measured = speed({"fp32": fp32, "int8": int8_path}, photos, args, work)
        for precision in ("fp32", "int8"):
            rows.append({"model": name, "precision": precision, **measured[precision]})
        rows[-1]["speedup32"] = measured["int8"]["batch32"] / measured["fp32"]["batch32"]
    notes = (
        f"medians of {args.rounds} rounds, fp32 and int8 alternating; ORT's CPU provider, default threads; "
        f"CPU integer dot-product extensions: {int8_extensions()}"
    )
    write_results("int8", COLUMNS, rows, notes)
    return rows


if __name__ == "__main__":
    cli.entry_point(main)
