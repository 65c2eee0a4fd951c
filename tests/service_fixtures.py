"""Shared helpers for the export/serving tests: small real models, exported once per pytest process, and a real
``bentoml serve`` subprocess.

Random-init networks give near-uniform scores, so the models here get meaningful logits: BatchNorm statistics
calibrated on real images and a scaled classifier, which separates the top-5 clearly.
"""

from __future__ import annotations

import atexit
import functools
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import torch

from models import create_model
from training import export as exporter
from training.checkpoint import save_checkpoint

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
WORK_DIR = Path(tempfile.mkdtemp(prefix="resnet-lab-serving-tests-"))
atexit.register(shutil.rmtree, WORK_DIR, ignore_errors=True)
BENTOML_HOME = WORK_DIR / "bentoml"


def data_dir() -> Path:
    """The shared real-data folder (same rule as tests/conftest.py)."""
    return Path(os.environ.get("RESNET_LAB_DATA", REPO_ROOT.parent / "shared" / "data"))


@functools.cache
def imagenet_files(count: int = 20) -> list[Path]:
    """``count`` real ImageNet photos, spread over the samples (grayscale ones included)."""
    files = sorted((data_dir() / "imagenet_samples").rglob("*.JPEG"))
    step = max(1, len(files) // count)
    return files[::step][:count]


@functools.cache
def cifar_files(count: int = 20) -> list[Path]:
    """``count`` real CIFAR-10 test JPEGs, extracted into the work folder."""
    folder = WORK_DIR / "cifar_test"
    folder.mkdir(exist_ok=True)
    paths = []
    for index, data in enumerate(exporter.cifar_test_jpegs(data_dir(), count)):
        path = folder / f"{index:03d}.jpg"
        path.write_bytes(data)
        paths.append(path)
    return paths


def _calibrate(model: torch.nn.Module, batch: torch.Tensor, fc_scale: float) -> torch.nn.Module:
    """BatchNorm running stats from real images (cumulative average), then a scaled classifier."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    model.train()
    with torch.no_grad():
        model(batch)
        model.fc.weight.mul_(fc_scale)
    return model.eval()


def _batch(files: list[Path], resize: int, crop: int, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    images = exporter.image_batch([exporter.load_rgb(path) for path in files], resize, crop)
    mean = mean.reshape(3, 1, 1) if mean.dim() == 1 else mean
    return (images.float() / 255 - mean) / std.reshape(3, 1, 1)


@functools.cache
def cifar_checkpoint() -> Path:
    """A cifar_resnet20 checkpoint in the project format (per-pixel mean image, as the paper)."""
    torch.manual_seed(0)
    files = cifar_files(20)
    pixels = exporter.image_batch([exporter.load_rgb(path) for path in files], 32, 32).float() / 255
    mean, std = pixels.mean(0), pixels.std(dim=(0, 2, 3))
    model = _calibrate(create_model("cifar_resnet20"), _batch(files, 32, 32, mean, std), fc_scale=30.0)
    state = {
        "model_name": "cifar_resnet20",
        "model_options": {"num_classes": 10},
        "model": model.state_dict(),
        "labels": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
        "preprocess": {"mean": mean, "std": std, "resize_size": 32, "crop_size": 32},
        "recipe": {"name": "test", "epochs": 0},
        "metrics": [{"epoch": 0, "note": "random init, calibrated BN"}],
    }
    return save_checkpoint(state, WORK_DIR / "cifar_resnet20.pt")


@functools.cache
def torchvision_state_dict() -> Path:
    """A torchvision-layout resnet18 state dict (random init, BN calibrated on real ImageNet photos)."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)  # torchvision's own module: its real state-dict layout
    mean, std = torch.tensor(exporter.IMAGENET_MEAN), torch.tensor(exporter.IMAGENET_STD)
    files = sorted((data_dir() / "imagenet_samples").rglob("*.JPEG"))[1::9][:24]
    _calibrate(model, _batch(files, 256, 224, mean, std), fc_scale=8.0)
    path = WORK_DIR / "resnet18_torchvision.pth"
    torch.save(model.state_dict(), path)
    return path


def _export(argv: list[str]) -> dict:
    os.environ["BENTOML_HOME"] = str(BENTOML_HOME)
    return exporter.main(argv)


@functools.cache
def cifar_export() -> dict:
    """``python -m training.export --checkpoint`` on the CIFAR checkpoint (report dict; output in WORK_DIR)."""
    return _export(["--checkpoint", str(cifar_checkpoint()), "--output", str(WORK_DIR / "cifar_resnet20.onnx")])


@functools.cache
def resnet18_export() -> dict:
    """``python -m training.export --torchvision-state-dict --arch resnet18`` (1000 ImageNet classes)."""
    argv = ["--torchvision-state-dict", str(torchvision_state_dict()), "--arch", "resnet18"]
    return _export([*argv, "--output", str(WORK_DIR / "resnet18.onnx")])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def bentoml_server(model: str | Path, timeout: float = 120.0, **env: str) -> Iterator[httpx.Client]:
    """A real ``bentoml serve`` from the repo root; yields a client once /readyz answers; killed at the end."""
    port = free_port()
    log_path = WORK_DIR / f"serve-{port}.log"
    environment = {
        **os.environ,
        "RESNET_LAB_MODEL": str(model),
        "BENTOML_HOME": str(BENTOML_HOME),
        "BENTOML_DO_NOT_TRACK": "True",
        **env,
    }
    command = [str(BIN / "bentoml"), "serve", "--host", "127.0.0.1", "--port", str(port)]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120.0)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"bentoml serve exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                if client.get("/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"bentoml serve not ready after {timeout}s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.3)
        client.log_path = log_path  # type: ignore[attr-defined]
        yield client
    finally:
        client.close()
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def encode(image, format: str, **options) -> bytes:
    """PIL image -> encoded bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()
