"""Detection speed on the same weights, side by side in one run: torchvision's ``fasterrcnn_resnet50_fpn`` as it runs
its published file (FrozenBatchNorm, eps 0) and as its builder makes it without weights (plain BatchNorm: the
configuration of the earlier GPU comparison), the project's detector imported from the same state dict (FrozenBatchNorm
as imported, and with BatchNorm folded into the convolutions), and the project's ONNX file (folded, the exporter's
default, and unfolded) in ONNX Runtime.

One state dict for all: torchvision's own modules, random init, BatchNorm statistics calibrated on the images (nothing
downloaded). Real COCO val2017 images at 800/1333, one image per call; every system runs each image in turn, after one
warm-up each; per-image medians, and each system's ratio to torchvision's. The eager systems must return the same
number of detections (identical weights, identical work). Writes ``docs/bench/torchvision_parity_speed.json``
(``--output-dir`` elsewhere).

    .venv/bin/python -m bench.torchvision_parity_speed                      # 5 images, CPU
    python -m bench.torchvision_parity_speed --device cuda --images 20     # bench/gpu/stage4_detector_speed.sh
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from detection.checkpoint import detector_from_checkpoint
from detection.model import fold_batchnorm
from export.detector import SCORE_THRESHOLD
from export.detector_graph import export_detector_onnx, onnx_ready
from export.onnx_file import write_model
from export.torchvision_detector import state_from_torchvision
from inference import imaging
from inference.contract import DETECTION, INPUT_NAMES, OUTPUT_NAMES
from inference.runtimes.onnx_runtime import open_session
from inference.settings import InferenceSettings
from report.bench_file import BENCH_DIR, Column, write_results
from tests.torchvision_weights import calibrate_batchnorm, torchvision_reference
from toolkit import cli, data_folder
from toolkit.errors import UsageError

ARCH = "fasterrcnn_resnet50_fpn"
REFERENCE = "torchvision, FrozenBatchNorm eps 0 (as for its COCO file)"
COLUMNS = [
    Column("system", "system"),
    Column("p50_s", "p50 s/image", ".3f"),
    Column("vs_torchvision", "vs torchvision", ".3f", "x"),
    Column("detections", "detections"),
]


def calibrated_state_dict(images: list[torch.Tensor]) -> dict:
    """torchvision's fasterrcnn_resnet50_fpn (random init) with backbone BatchNorm statistics from ``images``."""
    from torchvision.models.detection import fasterrcnn_resnet50_fpn

    torch.manual_seed(0)
    model = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None).eval()
    with torch.no_grad():
        calibrate_batchnorm(model.backbone, [model.transform([image])[0].tensors for image in images])
    return model.state_dict()


def systems(state_dict: dict, work: Path, device: torch.device, providers: str) -> dict[str, Callable]:
    """Each system: a function of one uint8 [3, H, W] array returning its number of detections."""
    from torchvision.models.detection import fasterrcnn_resnet50_fpn

    path = work / "fasterrcnn_resnet50_fpn.pth"
    torch.save(state_dict, path)
    checkpoint = state_from_torchvision(path, ARCH)
    project, recipe = detector_from_checkpoint(checkpoint)
    folded = copy.deepcopy(project).eval()
    fold_batchnorm(folded)
    plain = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    plain.load_state_dict(state_dict)
    eager = {
        REFERENCE: torchvision_reference(ARCH, state_dict),
        "torchvision, plain BatchNorm (its builder without weights)": plain,
        "resnet-lab, FrozenBatchNorm eps 0 (as imported)": project,
        "resnet-lab, BatchNorm folded into the convolutions": folded,
    }
    runs: dict[str, Callable] = {name: eager_run(model.to(device).eval(), device) for name, model in eager.items()}
    for name, fold in (("resnet-lab ONNX, folded (export default)", True), ("resnet-lab ONNX, unfolded", False)):
        wrapper = onnx_ready(project, recipe, checkpoint["category_ids"], SCORE_THRESHOLD, fold=fold)
        onnx_path = write_model(
            export_detector_onnx(wrapper), work / f"detector-{'folded' if fold else 'unfolded'}.onnx"
        )
        runs[name] = onnx_run(open_session(onnx_path, InferenceSettings(providers=providers)), providers)
    return runs


def eager_run(model: torch.nn.Module, device: torch.device) -> Callable:
    @torch.no_grad()
    def run(pixels: np.ndarray) -> int:
        output = model([torch.from_numpy(pixels).to(device).float().div_(255)])[0]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return len(output["scores"])

    return run


def onnx_run(session: Any, providers: str) -> Callable:
    """The file in ONNX Runtime with the service's session settings; its first provider must be the one asked for
    (no silent CPU fallback)."""
    if session.get_providers()[0] != providers.split(",")[0]:
        raise UsageError(f"ONNX Runtime runs on {session.get_providers()}, not {providers}")

    def run(pixels: np.ndarray) -> int:
        return len(session.run(list(OUTPUT_NAMES[DETECTION]), {INPUT_NAMES[DETECTION]: pixels})[1])

    return run


def measure(runs: dict[str, Callable], images: list[np.ndarray]) -> dict[str, dict]:
    """Per-image seconds and detections of every system, systems in turn on each image, after one warm-up each."""
    for run in runs.values():
        run(images[0])
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    found: dict[str, int] = dict.fromkeys(runs, 0)
    for pixels in images:
        for name, run in runs.items():
            started = time.perf_counter()
            found[name] += run(pixels)
            seconds[name].append(time.perf_counter() - started)
    return {name: {"p50_s": statistics.median(seconds[name]), "detections": found[name]} for name in runs}


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.torchvision_parity_speed", description=__doc__, formatter_class=cli.HelpFormatter
    )
    parser.add_argument("--images", type=int, default=5, help="real COCO val2017 images")
    cli.add_device_arguments(parser)
    parser.add_argument(
        "--providers",
        default="CPUExecutionProvider",
        help="ONNX Runtime providers, comma-separated (CUDAExecutionProvider,CPUExecutionProvider on a GPU)",
    )
    parser.add_argument("--output-dir", type=Path, default=BENCH_DIR, help="where torchvision_parity_speed.json goes")
    return parser


def main(argv: list[str] | None = None) -> list[dict]:
    """Run every system on the same images and write the table."""
    args = build_parser().parse_args(argv)
    torch.set_flush_denormal(True)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    files = data_folder.coco_val_files(args.images)
    if not files:
        raise UsageError(f"no COCO val2017 images under {data_folder.data_dir()}")
    pixels = [imaging.to_chw(imaging.load_rgb(path)) for path in files]
    floats = [torch.from_numpy(array).float().div_(255) for array in pixels]
    work = Path(tempfile.mkdtemp(prefix="torchvision-parity-speed-"))
    measured = measure(systems(calibrated_state_dict(floats), work, device, args.providers), pixels)
    reference = measured[REFERENCE]["p50_s"]
    rows = [{"system": name, **row, "vs_torchvision": row["p50_s"] / reference} for name, row in measured.items()]
    where = f"{torch.get_num_threads()} threads" if device.type == "cpu" else torch.cuda.get_device_name(device)
    notes = (
        f"fasterrcnn_resnet50_fpn, one state dict for all (random init, BatchNorm calibrated on the images), "
        f"{len(files)} real COCO val2017 images at 800/1333, batch 1, eager on {device} ({where}), ORT "
        f"{args.providers}; medians over the images; detections: the total each system returned"
    )
    write_results("torchvision_parity_speed", COLUMNS, rows, notes, directory=args.output_dir)
    for row in rows:
        print(row)
    return rows


if __name__ == "__main__":
    cli.entry_point(main)
