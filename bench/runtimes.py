"""The runtimes side by side in one run: what each runs ResNet-50 at, what that bounds the server at, what the server
does, and the detector on each.

One random-weight ResNet-50 exported by ``python -m export`` (the published V2 file's name, so its transform) as fp32
and as int8, and torchvision's Faster R-CNN R50-FPN layout (random weights) exported the same way. On this machine:

- raw: each setting's session alone on real ImageNet photos, decoded and cropped beforehand, at batch 1 and 8
  (images/s): ONNX Runtime fp32, OpenVINO fp32 and bf16, ONNX Runtime int8, OpenVINO int8;
- decode: the server's decode and crop of the same photos (fast decode, a thread per core) in images/s; the
  end-to-end bound of a setting is decode and run sharing the cores, ``1 / (1/decode + 1/raw at batch 8)``;
- served: a real ``bentoml serve`` per setting (``RESNET_LAB_RUNTIME``, ``RESNET_LAB_PRECISION``; int8 under
  ``auto``, which times both runtimes at start): multipart ``/classify`` of the photos and v2 ``infer`` of their
  decoded pixels (UINT8 ``images``, Triton's binary format), each at c=1 (``C1_REQUESTS``) and c=8
  (``--requests``: long enough for the steady state, not the ramp up and down of the first and last batches);
- where the time goes at ``/classify`` c=8, per image: the server's CPU in its event loop (HTTP, form parsing, the
  batching queue, the answer) and in its other threads (decode and the runtime), the load generator's CPU, the
  cores' idle time (the four add up to ``cores / rate``), the mean batch it ran, beside the CPU per image the
  bound assumes (``cores / bound``);
- detect: ``/detect`` at c=1 on real COCO photos (800/1333), seconds per image, per setting.

Cells are interleaved over ``--rounds``; the table shows medians. The raw cells run in a process of their own; the
load generator shares the two cores with the server. Writes ``docs/bench/runtimes.json``.

    .venv/bin/python -m bench.runtimes                    # 3 rounds, 256 requests per c=8 cell
    .venv/bin/python -m bench.runtimes --rounds 1 --requests 64 --detect-images 2    # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import psutil

from bench.http_load import load
from bench.protocol import post_all
from export.command import main as export_main
from inference import imaging
from inference.contract import BF16, FP32
from inference.model import LoadedModel
from inference.runtimes.hardware import cpu_capabilities, cpu_has_bf16
from inference.settings import AUTO, ONNXRUNTIME, OPENVINO, InferenceSettings
from report.bench_file import Column, write_results
from report.provenance import REPO_ROOT
from tests.server import LocalServer, bentoml_serve
from toolkit import cli, data_folder
from toolkit.errors import UsageError

CLASSIFIER_FILE = "resnet50-11ad3fa6.pth"  # the published V2 file's name: resize 232, crop 224
DETECTOR_FILE = "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth"
CORES = os.cpu_count() or 1
C1_REQUESTS = 64  # one request in flight: no batches to ramp up, so fewer requests measure it
COLUMNS = [
    Column("setting", "setting"),
    Column("raw_b1", "raw img/s b=1", ".1f"),
    Column("raw_b8", "raw img/s b=8", ".1f"),
    Column("raw_vs_ort", "raw b=8 / ORT fp32", ".2f", "x"),
    Column("bound", "end-to-end bound img/s", ".1f"),
    Column("classify_c1", "/classify c=1", ".1f"),
    Column("classify_c8", "/classify c=8", ".1f"),
    Column("classify_vs_bound", "/classify c=8 / bound", ".2f", "x"),
    Column("v2_c1", "v2 UINT8 c=1", ".1f"),
    Column("v2_c8", "v2 UINT8 c=8", ".1f"),
    Column("v2_vs_raw", "v2 c=8 / raw b=8", ".2f", "x"),
    Column("v2_vs_ort", "v2 c=8 / served ORT fp32", ".2f", "x"),
    Column("bound_cpu_ms", "bound CPU ms/img", ".1f"),
    Column("loop_cpu_ms", "/classify c=8: event loop CPU ms/img", ".1f"),
    Column("threads_cpu_ms", "/classify c=8: decode + run CPU ms/img", ".1f"),
    Column("client_cpu_ms", "/classify c=8: load generator CPU ms/img", ".1f"),
    Column("idle_ms", "/classify c=8: idle core ms/img", ".1f"),
    Column("batch_c8", "/classify c=8: mean batch", ".1f"),
    Column("detect_s", "/detect c=1 s/img", ".2f"),
    Column("detect_vs_ort", "/detect / ORT fp32", ".2f", "x"),
    Column("served_as", "served as (/info)"),
]


@dataclass(frozen=True)
class Setting:
    """One way to run a file: its name in the table, which file, the runtime settings."""

    name: str
    file: str  # "fp32", "int8" or "detector"
    runtime: str
    precision: str

    @property
    def env(self) -> dict[str, str]:
        """The server's variables for it."""
        settings = InferenceSettings
        return {settings.env_name("runtime"): self.runtime, settings.env_name("precision"): self.precision}


CLASSIFIER_SETTINGS = (
    Setting("ONNX Runtime fp32", "fp32", ONNXRUNTIME, FP32),
    Setting("OpenVINO fp32", "fp32", OPENVINO, FP32),
    Setting("OpenVINO bf16", "fp32", OPENVINO, BF16),
    Setting("ONNX Runtime int8", "int8", ONNXRUNTIME, AUTO),
    Setting("OpenVINO int8", "int8", OPENVINO, AUTO),
    Setting("int8 file, auto", "int8", AUTO, AUTO),
)
DETECTOR_SETTINGS = (
    Setting("detector, ONNX Runtime fp32", "detector", ONNXRUNTIME, FP32),
    Setting("detector, OpenVINO fp32", "detector", OPENVINO, FP32),
    Setting("detector, OpenVINO bf16", "detector", OPENVINO, BF16),
)


def exported_files(work: Path, verify: Path) -> dict[str, Path]:
    """The random-weight ResNet-50 (fp32 and int8) and Faster R-CNN files, exported as users export them."""
    import torch
    import torchvision

    torch.manual_seed(0)
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), work / CLASSIFIER_FILE)
    detector = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    torch.save(detector.state_dict(), work / DETECTOR_FILE)
    files = {"fp32": work / "resnet50.onnx", "int8": work / "resnet50-int8.onnx", "detector": work / "detector.onnx"}
    export_main(["--torchvision-state-dict", str(work / CLASSIFIER_FILE), "--output", str(files["fp32"])])
    export_main(["--torchvision-state-dict", str(work / CLASSIFIER_FILE), "--output", str(files["int8"]),
                 "--quantize", "int8", "--calibration-images", "128"])  # fmt: skip
    export_main(["--torchvision-state-dict", str(work / DETECTOR_FILE), "--output", str(files["detector"]),
                 "--verify-images", str(verify), "--verify-count", "2"])  # fmt: skip
    return files


def per_second(run: Callable[[], object], images: int, repeats: int) -> float:
    """Images per second of ``run`` (which handles ``images``), median of ``repeats`` after one untimed call."""
    run()
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - started)
    return images / statistics.median(seconds)


def raw_rates(setting: Setting, path: Path, pixels: np.ndarray, repeats: int) -> dict[str, float]:
    """The session alone: images/s at batch 1 and 8 (run in a process of its own: see ``measure``)."""
    model = LoadedModel.load(path, InferenceSettings(runtime=setting.runtime, precision=setting.precision))
    return {
        "raw_b1": per_second(lambda: [model.logits(pixels[i : i + 1]) for i in range(8)], 8, repeats),
        "raw_b8": per_second(lambda: model.logits(pixels[:8]), 8, repeats),
    }


def raw_rates_apart(setting: Setting, path: Path, requests: int, repeats: int) -> dict[str, float]:
    """``raw_rates`` in a fresh interpreter of its own (``--raw-cell``): a runtime's threads left in this process,
    the load generator's, would take CPU from the servers measured next."""
    cell = [setting.runtime, setting.precision, str(path), str(requests), str(repeats)]
    command = [sys.executable, "-m", "bench.runtimes", "--raw-cell", *cell]
    return json.loads(subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout)


def raw_cell(runtime: str, precision: str, path: str, requests: str, repeats: str) -> dict[str, float]:
    """``--raw-cell``: one setting's raw rates on the first ``requests`` ImageNet photos, printed as JSON."""
    photos = [file.read_bytes() for file in data_folder.imagenet_sample_files(int(requests))]
    pixels = np.stack([imaging.preprocess(data, 232, 224) for data in photos])
    rates = raw_rates(Setting("raw", "", runtime, precision), Path(path), pixels, int(repeats))
    print(json.dumps(rates))
    return rates


def decode_rate(photos: list[bytes], threads: int = CORES) -> float:
    """The server's decode, resize and crop (fast decode, 232/224) on ``threads`` threads: images/s."""
    with ThreadPoolExecutor(threads) as pool:

        def run() -> None:
            list(pool.map(lambda data: imaging.preprocess(data, 232, 224, fast=True), photos))

        return per_second(run, len(photos), 3)


def v2_pixels(image: np.ndarray) -> tuple[bytes, dict[str, str]]:
    """A v2 request of one image's pixels (UINT8 ``images`` [1, 3, 224, 224]), binary in and out."""
    header = json.dumps({
        "inputs": [{"name": "images", "shape": [1, *image.shape], "datatype": "UINT8",
                    "parameters": {"binary_data_size": image.nbytes}}],
        "outputs": [{"name": "logits", "parameters": {"binary_data": True}}],
    }).encode()  # fmt: skip
    return header + image.tobytes(), {"Inference-Header-Content-Length": str(len(header))}


def worker_cpu(server: LocalServer) -> tuple[float, float]:
    """CPU seconds so far of the server's API worker (the one child of ``bentoml serve`` with one worker): its event
    loop (the main thread) and its other threads."""
    _, worker_pid = server.pids()
    worker = psutil.Process(worker_pid)
    seconds = {thread.id: thread.user_time + thread.system_time for thread in worker.threads()}
    loop = seconds.pop(worker.pid)
    return loop, sum(seconds.values())


def batches(url: str) -> tuple[int, int]:
    """The classifier's runs and the images in them so far (``/info``)."""
    counted = httpx.get(f"{url}/info").json()["batches"]
    return counted["count"], counted["images"]


def generator_cpu_and_idle() -> tuple[float, float]:
    """Seconds so far of this process's CPU (the load generator, while it loads a server) and of the machine's idle
    cores (summed over the cores)."""
    cores = psutil.cpu_times()
    return sum(psutil.Process().cpu_times()[:2]), cores.idle + getattr(cores, "iowait", 0.0)


def classify_c8(server: LocalServer, photos: list[bytes], requests: int) -> dict[str, float]:
    """``/classify`` at c=8: requests/s, and where the cores' time went per image (the server's event loop and other
    threads, this process's load generator, idle)."""
    loop, threads = worker_cpu(server)
    runs, images = batches(server.url)
    client, idle = generator_cpu_and_idle()
    rate = load(server.url, "/classify", photos, 8, requests)["rps"]
    client_after, idle_after = generator_cpu_and_idle()
    loop_after, threads_after = worker_cpu(server)
    runs_after, images_after = batches(server.url)
    return {
        "classify_c8": rate,
        "loop_cpu_ms": 1000 * (loop_after - loop) / requests,
        "threads_cpu_ms": 1000 * (threads_after - threads) / requests,
        "client_cpu_ms": 1000 * (client_after - client) / requests,
        "idle_ms": 1000 * (idle_after - idle) / requests,
        "batch_c8": (images_after - images) / max(runs_after - runs, 1),
    }


def served_rates(server: LocalServer, photos: list[bytes], pixels: np.ndarray, requests: int) -> dict[str, float]:
    """``/classify`` multipart and v2 UINT8, c=1 and c=8, requests/s (each request one image)."""
    url = server.url
    route = f"/v2/models/{httpx.get(f'{url}/info').json()['model']}/infer"
    bodies = [v2_pixels(pixels[index % len(pixels)]) for index in range(requests)]
    v2 = [lambda body=body: body for body in bodies]
    rates = {"classify_c1": load(url, "/classify", photos, 1, C1_REQUESTS)["rps"]}
    one_at_a_time = v2[:C1_REQUESTS]  # fewer when --requests is smaller
    rates["v2_c1"] = len(one_at_a_time) / asyncio.run(post_all(url, route, one_at_a_time, 1))
    rates |= classify_c8(server, photos, requests)
    rates["v2_c8"] = requests / asyncio.run(post_all(url, route, v2, 8))
    return rates


def detect_seconds(url: str, photos: list[bytes]) -> float:
    """Seconds per image of ``/detect`` at c=1 (median over the photos)."""
    seconds = []
    for data in photos:
        started = time.perf_counter()
        answer = httpx.post(f"{url}/detect", files={"image": ("photo.jpg", data)}, timeout=600)
        if answer.status_code != 200:
            raise RuntimeError(f"/detect answered {answer.status_code}: {answer.text[:300]}")
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def measure(args: argparse.Namespace, work: Path) -> list[dict]:
    """Every row of the table (cells interleaved over the rounds, medians)."""
    photos = [path.read_bytes() for path in data_folder.imagenet_sample_files(args.requests)]
    coco, _ = data_folder.real_photos("coco_val", args.detect_images)
    files = exported_files(work, coco[0].parent)
    pixels = np.stack([imaging.preprocess(data, 232, 224) for data in photos])
    settings = [s for s in CLASSIFIER_SETTINGS + DETECTOR_SETTINGS if cpu_has_bf16() or s.precision != BF16]
    found: dict[str, dict[str, list[float]]] = {setting.name: {} for setting in settings}
    served_as: dict[str, str] = {}
    decode: list[float] = []
    env = {"BENTOML_HOME": str(work / "bentoml"), "RESNET_LAB_MAX_IMAGES": "8"}
    for _ in range(args.rounds):
        decode.append(decode_rate(photos))
        for setting in settings:
            cell = found[setting.name]
            if setting.file != "detector":
                for key, value in raw_rates_apart(setting, files[setting.file], args.requests, args.repeats).items():
                    cell.setdefault(key, []).append(value)
            model = {"RESNET_LAB_DETECTOR": str(files["detector"])} if setting.file == "detector" else {}
            model["RESNET_LAB_MODEL"] = str(files["fp32" if setting.file == "detector" else setting.file])
            with bentoml_serve({**env, **setting.env, **model}, work / "serve.log") as server:
                info = httpx.get(f"{server.url}/info").json()
                runs = info["detector"]["runtime"] if setting.file == "detector" else info["runtime"]
                served_as[setting.name] = f"{runs['runtime']} {runs['precision']}"
                if setting.file == "detector":
                    detect_seconds(server.url, [data.read_bytes() for data in coco[:1]])  # warm-up
                    cell.setdefault("detect_s", []).append(detect_seconds(server.url, [p.read_bytes() for p in coco]))
                else:
                    load(server.url, "/classify", photos, 8, 16)  # warm-up: the queue's cost model, the runtime
                    for key, value in served_rates(server, photos, pixels, args.requests).items():
                        cell.setdefault(key, []).append(value)
            print(setting.name, {key: round(values[-1], 2) for key, values in cell.items()})
    return rows_of(found, statistics.median(decode), served_as)


def rows_of(found: dict[str, dict[str, list[float]]], decode: float, served_as: dict[str, str]) -> list[dict]:
    """Medians and the ratios the targets are stated in."""
    medians = {name: {key: statistics.median(values) for key, values in cell.items()} for name, cell in found.items()}
    ort = medians["ONNX Runtime fp32"]
    ort_detect = medians["detector, ONNX Runtime fp32"]["detect_s"]
    rows = [{"setting": f"decode and crop ({CORES} threads)", "raw_b8": decode}]
    for name, cell in medians.items():
        row = {"setting": name, **cell, "served_as": served_as[name]}
        if "raw_b8" in cell:
            row["raw_vs_ort"] = cell["raw_b8"] / ort["raw_b8"]
            row["bound"] = 1 / (1 / decode + 1 / cell["raw_b8"])
            row["classify_vs_bound"] = cell["classify_c8"] / row["bound"]
            row["v2_vs_raw"] = cell["v2_c8"] / cell["raw_b8"]
            row["v2_vs_ort"] = cell["v2_c8"] / ort["v2_c8"]
            row["bound_cpu_ms"] = 1000 * CORES / row["bound"]
        else:
            row["detect_vs_ort"] = cell["detect_s"] / ort_detect
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    """Measure and write ``docs/bench/runtimes.json``."""
    parser = argparse.ArgumentParser(prog="python -m bench.runtimes", description=__doc__,
                                     formatter_class=cli.HelpFormatter)  # fmt: skip
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of every cell")
    parser.add_argument("--requests", type=int, default=256,
                        help=f"requests per served c=8 cell (ImageNet photos; c=1 cells: {C1_REQUESTS})")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per raw cell and round")
    parser.add_argument("--detect-images", type=int, default=4, help="COCO photos per /detect cell")
    parser.add_argument("--raw-cell", nargs=5, help=argparse.SUPPRESS)  # one raw cell, run apart (raw_rates_apart)
    args = parser.parse_args(argv)
    if args.raw_cell:
        return [raw_cell(*args.raw_cell)]
    if min(args.rounds, args.requests, args.repeats, args.detect_images) < 1:
        raise UsageError("--rounds, --requests, --repeats and --detect-images must be at least 1")
    rows = measure(args, Path(tempfile.mkdtemp(prefix="bench-runtimes-")))
    notes = (
        f"CPU capabilities (OpenVINO): {', '.join(cpu_capabilities())}; medians of {args.rounds} interleaved rounds; "
        f"raw: real ImageNet photos decoded beforehand; served: {args.requests} requests of one image per c=8 cell, "
        f"{C1_REQUESTS} per c=1 cell; "
        "bound = 1 / (1/decode + 1/raw b=8); random-weight models"
    )
    write_results("runtimes", COLUMNS, rows, notes)
    return rows


if __name__ == "__main__":
    cli.entry_point(main)
