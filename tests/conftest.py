"""Shared fixtures: the real photos shipped in ``tests/data``, the data folder's datasets (``RESNET_LAB_DATA`` or
``../shared/data``: a test needing a missing one is skipped, or fails under ``RESNET_LAB_REQUIRE_DATA=1``), models
built and exported once per session, the generated shapes dataset, and real ``bentoml serve`` processes.

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
from PIL import Image

from export.command import main as export_main
from inference import imaging
from models import create_model
from models.registry import FAMILY_INPUTS
from tests.helpers import (
    COCO_SMALL_FLAGS,
    REPO_ROOT,
    SHAPES_FLAGS,
    SHIPPED_COCO,
    TEST_ENV,
    bentoml_server,
    calibrate,
    dataset,
    image_batch,
    make_shapes_split,
)
from toolkit import data_folder
from training.classifier import save_classifier_checkpoint


@pytest.fixture(scope="session", autouse=True)
def fp32_answers() -> Iterator[None]:
    """Every model this session runs, in this process or in a server or job it starts, answers in fp32
    (``TEST_ENV``), whatever the CPU."""
    previous = {name: os.environ.get(name) for name in TEST_ENV}
    os.environ.update(TEST_ENV)
    yield
    for name, value in previous.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The data folder, holding every dataset of ``toolkit.data_folder.DATASETS``."""
    for name in data_folder.DATASETS:
        dataset(name)
    return data_folder.data_dir()


@pytest.fixture(scope="session")
def coco_train_root() -> Path:
    """A COCO folder with real train2017 images and their annotations (and val2017)."""
    return dataset("coco_train").parents[1]


@pytest.fixture(scope="session")
def coco_val_root() -> Path:
    """The shipped COCO folder: 13 real val2017 photos and their official annotations (``tests/data/README.md``)."""
    return SHIPPED_COCO


@pytest.fixture(scope="session")
def imagenet_samples() -> Path:
    """Real ImageNet photos in ``val/<wnid>/`` folders."""
    return dataset("imagenet_samples")


@pytest.fixture(scope="session")
def photos() -> list[Path]:
    """The 13 real photos shipped in ``tests/data`` (COCO val2017, CC BY / CC BY-SA)."""
    return data_folder.image_files(SHIPPED_COCO / "val2017")


@pytest.fixture(scope="session")
def small_photos(photos: list[Path], tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """26 small real photos (32x32 JPEGs, CIFAR-10's size): each shipped photo whole and its centre square."""
    folder = tmp_path_factory.mktemp("small_photos")
    paths = []
    for path in photos:
        image = imaging.load_rgb(path)
        side = min(image.size)
        centre = image.crop(
            ((image.width - side) // 2, (image.height - side) // 2, *[(d + side) // 2 for d in image.size])
        )
        for index, view in enumerate((image, centre)):
            paths.append(folder / f"{path.stem}_{index}.jpg")
            view.resize((32, 32), Image.Resampling.BICUBIC).save(paths[-1], quality=90)
    return paths


@pytest.fixture(scope="session")
def cifar_dir() -> Path:
    """Real CIFAR-10 as the data folder holds it (the official python layout or archive, or the JPEG copies): every
    tool reads each of them (``toolkit.cifar10``)."""
    return dataset("cifar10")


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
    shapes_detector: Path, coco_val_root: Path, tmp_path_factory: pytest.TempPathFactory, bentoml_home: Path
) -> dict:
    """``python -m export --register`` of the shapes detector (verified on the shipped real COCO val photos)."""
    output = tmp_path_factory.mktemp("shapes_onnx") / "detector.onnx"
    checkpoint = ["--checkpoint", str(shapes_detector / "checkpoints" / "last.pt")]
    return export_main(
        [*checkpoint, "--verify-images", str(coco_val_root / "val2017"), "--output", str(output), "--register"]
    )


@pytest.fixture(scope="session")
def coco_detector(coco_train_root: Path, classifier_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run folder of a resnet18 C4 detector trained 8 iterations on real COCO train2017 images."""
    from detection import train

    run = tmp_path_factory.mktemp("coco_detector") / "run"
    backbone = ["--backbone-checkpoint", str(classifier_checkpoint)]
    train.main(["--coco-root", str(coco_train_root), "--output-dir", str(run), *backbone, *COCO_SMALL_FLAGS])
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
def cifar_checkpoint(small_photos: list[Path], work_dir: Path) -> Path:
    """A cifar_resnet20 checkpoint in the project format (per-pixel mean image, as the paper)."""
    torch.manual_seed(0)
    pixels = image_batch(small_photos, 32, 32).float() / 255
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
def torchvision_state_dict(photos: list[Path], work_dir: Path) -> Path:
    """A torchvision-layout resnet18 state dict (random init, BN calibrated on the shipped real photos)."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)  # torchvision's own module: its real state-dict layout
    inputs = FAMILY_INPUTS["imagenet"]
    pixels = image_batch(photos, inputs.resize_size, inputs.crop_size).float() / 255
    normalised = (pixels - torch.tensor(inputs.mean).view(3, 1, 1)) / torch.tensor(inputs.std).view(3, 1, 1)
    calibrate(model, normalised, fc_scale=8.0)
    path = work_dir / "resnet18_torchvision.pth"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def torchvision_classifier(photos: list[Path], work_dir: Path) -> Callable[[str], tuple[torch.nn.Module, dict]]:
    """``torchvision_classifier(arch)``: (torchvision's ResNet, the report of ``python -m export
    --torchvision-state-dict FILE --arch ARCH --resize-size N``), made once per arch for the session.
    The model has BatchNorm calibrated on the shipped photos and a scaled classifier; N is its published weights'
    resize."""
    from tests.torchvision_weights import CLASSIFIER_WEIGHTS, calibrated_classifier, classifier_resize

    inputs = FAMILY_INPUTS["imagenet"]
    pixels = image_batch(photos, inputs.resize_size, inputs.crop_size).float() / 255
    batch = (pixels - torch.tensor(inputs.mean).view(3, 1, 1)) / torch.tensor(inputs.std).view(3, 1, 1)
    made: dict[str, tuple[torch.nn.Module, dict]] = {}

    def make(arch: str) -> tuple[torch.nn.Module, dict]:
        if arch not in made:
            path = work_dir / Path(CLASSIFIER_WEIGHTS[arch].url).name  # the published name: resnet50-11ad3fa6.pth
            model = calibrated_classifier(arch, batch, path)
            resize = str(classifier_resize(arch))
            source = ["--torchvision-state-dict", str(path), "--arch", arch, "--resize-size", resize]
            output = ["--output", str(work_dir / f"{arch}_torchvision.onnx")]
            output += ["--verify-images", str(photos[0].parent), "--verify-count", "2"]
            made[arch] = model, export_main(source + output)
        return made[arch]

    return make


@pytest.fixture(scope="session")
def cifar_export(cifar_checkpoint: Path, small_photos: list[Path], work_dir: Path, bentoml_home: Path) -> dict:
    """``python -m export --checkpoint --register`` on the CIFAR checkpoint (its report; in the model store too)."""
    argv = ["--checkpoint", str(cifar_checkpoint), "--verify-images", str(small_photos[0].parent), "--register"]
    return export_main([*argv, "--output", str(work_dir / "cifar_resnet20.onnx")])


@pytest.fixture(scope="session")
def resnet18_export(torchvision_state_dict: Path, photos: list[Path], work_dir: Path, bentoml_home: Path) -> dict:
    """``python -m export --torchvision-state-dict --arch resnet18`` (1000 ImageNet classes)."""
    argv = ["--torchvision-state-dict", str(torchvision_state_dict), "--arch", "resnet18"]
    argv += ["--verify-images", str(photos[0].parent)]
    return export_main([*argv, "--output", str(work_dir / "resnet18.onnx")])


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
