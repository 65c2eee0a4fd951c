"""Shared fixtures: the real data (``RESNET_LAB_DATA`` or ``../shared/data``), models built and exported once per
session, the generated shapes dataset, and real ``bentoml serve`` processes.

Random-init networks give near-uniform scores, so the exported test models get meaningful logits: BatchNorm
statistics calibrated on real images and a scaled classifier, which separates the top-5 clearly.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest
import torch

from export import classifier as exporter
from models import create_model
from models.registry import FAMILY_INPUTS
from tests.helpers import (
    COCO_SMALL_FLAGS,
    REPO_ROOT,
    SHAPES_FLAGS,
    bentoml_server,
    calibrate,
    image_batch,
    make_shapes_split,
)
from training import data_folder
from training.classifier import save_classifier_checkpoint


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real datasets folder described by its ``MANIFEST.md``."""
    path = data_folder.shared_data_dir()
    if not (path / "MANIFEST.md").is_file():
        pytest.fail(f"real data not found at {path}; set RESNET_LAB_DATA to the shared/data folder")
    return path


@pytest.fixture(scope="session")
def imagenet_samples(data_dir: Path) -> Path:
    return data_dir / "imagenet_samples"


@pytest.fixture(scope="session")
def imagenet_files(imagenet_samples: Path) -> list[Path]:
    """20 real ImageNet photos, spread over the samples (grayscale ones included)."""
    files = data_folder.imagenet_sample_files()
    return files[:: max(1, len(files) // 20)][:20]


@pytest.fixture(scope="session")
def cifar_files(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """20 real CIFAR-10 test JPEGs (two of each class), extracted to files."""
    folder = tmp_path_factory.mktemp("cifar_test")
    paths = []
    for index, (data, _) in enumerate(data_folder.cifar_jpegs(20, data_dir)):
        paths.append(folder / f"{index:03d}.jpg")
        paths[-1].write_bytes(data)
    return paths


@pytest.fixture(scope="session")
def cifar_dir(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real CIFAR-10 in the standard python layout, made by the shared make_cifar10.py."""
    out = tmp_path_factory.mktemp("cifar10")
    tool = data_dir.parent / "tools" / "make_cifar10.py"
    subprocess.run([sys.executable, str(tool), str(out)], check=True, capture_output=True)
    return out


@pytest.fixture(scope="session")
def trained_cifar_run(cifar_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A real ResNet-20 run: one pass over 20,000 real CIFAR-10 training images with the paper's recipe (milestones
    scaled to its 157 steps); (run folder, last metrics row). About 38% test accuracy."""
    from training import train

    output = tmp_path_factory.mktemp("trained") / "run"
    argv = ["--recipe", "cifar10_resnet20", "--data-dir", str(cifar_dir), "--output-dir", str(output)]
    row = train.main([*argv, "--epochs", "1", "--max-train-samples", "20000", "--device", "cpu"])
    return output, row


@pytest.fixture(scope="session")
def tiny_imagenet(imagenet_samples: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train/ and val/ class folders with real photos of 6 classes (grayscale ones included)."""
    root = tmp_path_factory.mktemp("imagenet")
    class_dirs = sorted(path for path in (imagenet_samples / "val").iterdir() if path.is_dir())[:6]
    for split in ("train", "val"):
        for class_dir in class_dirs:
            shutil.copytree(class_dir, root / split / class_dir.name)
    return root


@pytest.fixture(scope="session")
def shapes_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated COCO-format dataset of squares, discs and bars: 160 train and 40 val images."""
    root = tmp_path_factory.mktemp("shapes")
    make_shapes_split(root, "train2017", num_images=160, seed=0)
    make_shapes_split(root, "val2017", num_images=40, seed=1)
    return root


@pytest.fixture(scope="session")
def shapes_detector(shapes_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run folder of the small C4 detector trained on the shapes (``python -m detection.train`` from the repo
    root, as users run it)."""
    run = tmp_path_factory.mktemp("shapes_detector") / "run"
    command = [sys.executable, "-m", "detection.train", "--coco-root", str(shapes_root), "--output-dir", str(run)]
    subprocess.run([*command, *SHAPES_FLAGS], cwd=REPO_ROOT, check=True, capture_output=True, text=True)
    return run


@pytest.fixture(scope="session")
def shapes_onnx(
    shapes_detector: Path, data_dir: Path, tmp_path_factory: pytest.TempPathFactory, bentoml_home: Path
) -> dict:
    """``python -m export`` of the shapes detector (verified on real COCO val images, registered in the store)."""
    from export import detector as detection_export

    output = tmp_path_factory.mktemp("shapes_onnx") / "detector.onnx"
    checkpoint = shapes_detector / "checkpoints" / "last.pt"
    return detection_export.main(["--checkpoint", str(checkpoint), "--output", str(output)])


@pytest.fixture(scope="session")
def coco_detector(data_dir: Path, classifier_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run folder of a resnet18 C4 detector trained 8 iterations on real COCO train2017 images."""
    from detection import train

    run = tmp_path_factory.mktemp("coco_detector") / "run"
    backbone = ["--backbone-checkpoint", str(classifier_checkpoint)]
    train.main(["--coco-root", str(data_dir / "coco"), "--output-dir", str(run), *backbone, *COCO_SMALL_FLAGS])
    return run


@pytest.fixture(scope="session")
def bentoml_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private BentoML model store for the whole session."""
    home = tmp_path_factory.mktemp("bentoml")
    previous = os.environ.get("BENTOML_HOME")
    os.environ["BENTOML_HOME"] = str(home)
    yield home
    if previous is None:
        os.environ.pop("BENTOML_HOME", None)
    else:
        os.environ["BENTOML_HOME"] = previous


@pytest.fixture(scope="session")
def work_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where session-wide models and exports are written."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def cifar_checkpoint(cifar_files: list[Path], work_dir: Path) -> Path:
    """A cifar_resnet20 checkpoint in the project format (per-pixel mean image, as the paper)."""
    torch.manual_seed(0)
    pixels = image_batch(cifar_files, 32, 32).float() / 255
    mean, std = pixels.mean(0), pixels.std(dim=(0, 2, 3))
    model = calibrate(create_model("cifar_resnet20"), ((pixels - mean) / std.reshape(3, 1, 1)), fc_scale=30.0)
    state = {
        "model_name": "cifar_resnet20",
        "model_options": {"num_classes": 10},
        "model": model.state_dict(),
        "labels": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
        "preprocess": {"mean": mean, "std": std, "resize_size": 32, "crop_size": 32},
        "recipe": {"name": "test", "epochs": 0},
        "metrics": [{"epoch": 0, "note": "random init, calibrated BN"}],
    }
    return save_classifier_checkpoint(state, work_dir / "cifar_resnet20.pt")


@pytest.fixture(scope="session")
def torchvision_state_dict(imagenet_samples: Path, work_dir: Path) -> Path:
    """A torchvision-layout resnet18 state dict (random init, BN calibrated on real ImageNet photos)."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)  # torchvision's own module: its real state-dict layout
    inputs = FAMILY_INPUTS["imagenet"]
    files = data_folder.imagenet_sample_files()[1::9][:24]
    pixels = image_batch(files, inputs.resize_size, inputs.crop_size).float() / 255
    normalised = (pixels - torch.tensor(inputs.mean).view(3, 1, 1)) / torch.tensor(inputs.std).view(3, 1, 1)
    calibrate(model, normalised, fc_scale=8.0)
    path = work_dir / "resnet18_torchvision.pth"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def cifar_export(cifar_checkpoint: Path, work_dir: Path, bentoml_home: Path) -> dict:
    """``python -m export --checkpoint`` on the CIFAR checkpoint (its report; registered in the store)."""
    return exporter.main(["--checkpoint", str(cifar_checkpoint), "--output", str(work_dir / "cifar_resnet20.onnx")])


@pytest.fixture(scope="session")
def resnet18_export(torchvision_state_dict: Path, work_dir: Path, bentoml_home: Path) -> dict:
    """``python -m export --torchvision-state-dict --arch resnet18`` (1000 ImageNet classes)."""
    argv = ["--torchvision-state-dict", str(torchvision_state_dict), "--arch", "resnet18"]
    return exporter.main([*argv, "--output", str(work_dir / "resnet18.onnx")])


@pytest.fixture(scope="session")
def classifier_checkpoint(work_dir: Path) -> Path:
    """A resnet18 classification checkpoint (random weights, non-trivial BN statistics) for detection backbones."""
    torch.manual_seed(0)
    net = create_model("resnet18")
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    state = {
        "model_name": "resnet18",
        "model_options": {"num_classes": 1000},
        "model": net.state_dict(),
        "labels": [f"class{i}" for i in range(1000)],
        "preprocess": {
            "mean": torch.tensor([0.5, 0.4, 0.3]).view(3, 1, 1),
            "std": torch.tensor([0.2, 0.2, 0.2]).view(3, 1, 1),
            "resize_size": 256,
            "crop_size": 224,
        },
    }
    return save_classifier_checkpoint(state, work_dir / "resnet18_cls.pt")


@pytest.fixture(scope="session")
def serve(bentoml_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., AbstractContextManager]:
    """``with serve(model, **env) as client``: a real ``bentoml serve`` from the repo root, ready to answer."""
    logs = tmp_path_factory.mktemp("serve-logs")

    def start(model: str | Path, **env: str) -> AbstractContextManager[httpx.Client]:
        return bentoml_server(model, logs, bentoml_home, **env)

    return start


PROTOCOL_MAX_IMAGES = 8  # RESNET_LAB_MAX_IMAGES of the protocol test servers (small, so that the 413 is cheap)
API_KEYS = ("first-key-0123456789", "second-key-abcdefghij")  # the keyed server's keys, in its key file


@pytest.fixture(scope="session")
def vision_server(serve, cifar_export: dict, shapes_onnx: dict) -> Iterator[httpx.Client]:
    """A real server with the CIFAR classifier and the shapes detector, without API keys."""
    env = {"RESNET_LAB_DETECTOR": shapes_onnx["output"], "RESNET_LAB_MAX_IMAGES": str(PROTOCOL_MAX_IMAGES)}
    with serve(cifar_export["output"], **env) as client:
        yield client


@pytest.fixture(scope="session")
def keyed_server(serve, cifar_export: dict, shapes_onnx: dict, tmp_path_factory) -> Iterator[httpx.Client]:
    """The same with ``RESNET_LAB_API_KEYS=@file``; ``client.key_file`` is that file (tests may rewrite it)."""
    key_file = tmp_path_factory.mktemp("keys") / "api_keys"
    key_file.write_text(f"# resnet-lab keys\n{API_KEYS[0]}\n{API_KEYS[1]}, \n")
    env = {
        "RESNET_LAB_DETECTOR": shapes_onnx["output"],
        "RESNET_LAB_MAX_IMAGES": str(PROTOCOL_MAX_IMAGES),
        "RESNET_LAB_API_KEYS": f"@{key_file}",
    }
    with serve(cifar_export["output"], **env) as client:
        client.key_file = key_file  # type: ignore[attr-defined]
        yield client
