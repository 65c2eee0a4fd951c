"""Training images/s: our training step vs a plain loop written the common way, same model, same run.

Ours: CIFAR batches built as tensor ops on the device (training.cifar10), channels_last, bf16 autocast on
CUDA, opt-in torch.compile; ImageNet-style uint8 loader + on-device lighting and normalisation.
Baseline: torchvision transforms on PIL images in a DataLoader (2 workers), NCHW fp32, no compile.
Both run with ``torch.set_flush_denormal(True)`` on CPU so the comparison isolates the pipeline and layout.
Two more columns say which side binds ours: our step alone on a batch already on the device, and our data path
alone (the same loader, decode and on-device normalisation, no model: one fresh epoch, worker start included).

    python -m bench.train_throughput                # cifar_resnet20, cifar_resnet56, resnet50 (224x224)
    python -m bench.train_throughput --compile      # also ours with torch.compile (a minute of compiling each)
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from models import create_model
from report.bench_file import BENCH_DIR, Column, write_results
from toolkit import cli
from training import cifar10, imagenet
from training.steps import train_step

CIFAR_MEAN, CIFAR_STD = (0.491, 0.482, 0.447), (0.247, 0.243, 0.262)


class ArrayImages(Dataset):
    """In-memory HWC uint8 images served as PIL, the way torchvision's CIFAR10 does."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.transform(Image.fromarray(self.images[index])), int(self.labels[index])


def cycle(make_iterator: Callable[[int], Iterator]) -> Iterator:
    """Endless batches, epoch after epoch."""
    epoch = 0
    while True:
        yield from make_iterator(epoch)
        epoch += 1


def time_steps(step: Callable[[], int], warmup: int, steps: int) -> list[float]:
    """Images/s of each timed step (data waiting included)."""
    for _ in range(warmup):
        step()
    rates = []
    for _ in range(steps):
        started = time.perf_counter()
        count = step()
        rates.append(count / (time.perf_counter() - started))
    return rates


def interleaved(steppers: dict[str, Callable[[], int]], warmup: int, steps: int, rounds: int) -> dict[str, list[float]]:
    """Images/s per timed step of each system, in ``rounds`` alternating blocks of ``steps`` steps.

    The first step of every block is not timed: it absorbs the switch (a baseline loader's workers refilling
    their prefetch queue while the other system starts).
    """
    for step in steppers.values():
        time_steps(step, warmup, 0)
    rates: dict[str, list[float]] = {name: [] for name in steppers}
    for _ in range(rounds):
        for name, step in steppers.items():
            rates[name] += time_steps(step, 1, steps)
    return rates


def baseline_step(model: torch.nn.Module, loader: DataLoader, device: torch.device) -> Callable[[], int]:
    """The common loop: NCHW fp32, no autocast, no compile."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    batches = cycle(lambda epoch: iter(loader))

    def step() -> int:
        images, labels = next(batches)
        images, labels = images.to(device), labels.to(device)
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return labels.shape[0]

    return step


def ours_step(model: torch.nn.Module, batches: Iterator, device: torch.device, compile_model: bool) -> Callable:
    """Our training step: channels_last, bf16 autocast on CUDA, optional torch.compile."""
    model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    runnable = torch.compile(model) if compile_model else model

    def step() -> int:
        images, labels = next(batches)
        train_step(runnable, images, labels, optimizer, amp=device.type == "cuda")
        if device.type == "cuda":
            torch.cuda.synchronize()
        return labels.shape[0]

    return step


Epoch = Callable[[int], Iterator]


def cifar_pipelines(batch: int, device: torch.device, count: int, workers: int) -> tuple[DataLoader, Epoch]:
    """Baseline loader and our epochs of batches over the same synthetic 32x32 images."""
    generator = np.random.default_rng(0)
    images = generator.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
    labels = generator.integers(0, 10, count)
    transform = T.Compose(
        [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(CIFAR_MEAN, CIFAR_STD)]
    )
    loader = DataLoader(ArrayImages(images, labels, transform), batch_size=batch, shuffle=True, num_workers=workers)
    split = cifar10.CifarSplit(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels))
    split = split.to(device)
    ours = cifar10.CifarTrainBatches(split, cifar10.mean_image(split), batch, seed=0, channels_last=True)
    return loader, ours.epoch


def synthetic_jpegs(folder: Path, batch: int, workers: int) -> None:
    """Class folders of ``batch * 4`` distinct 300x400 JPEGs, hard-linked up to two batches per worker, so that
    an epoch keeps every worker busy (links: the decode work is real, the disk and page cache hold one copy)."""
    generator = np.random.default_rng(0)
    wnids = imagenet.imagenet_classes()[0][:4]
    distinct = batch * 4
    for index in range(batch * max(4, 2 * workers)):
        class_dir = folder / "train" / wnids[index % 4]
        class_dir.mkdir(parents=True, exist_ok=True)
        path = class_dir / f"{index}.JPEG"
        if index < distinct:
            pixels = generator.integers(0, 256, (300, 400, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(path, quality=90)
        else:
            os.link(folder / "train" / wnids[index % distinct % 4] / f"{index % distinct}.JPEG", path)


def imagenet_pipelines(batch: int, device: torch.device, folder: Path, workers: int) -> tuple[DataLoader, Epoch]:
    """Baseline loader and our epochs of batches over the same synthetic JPEG class folders."""
    synthetic_jpegs(folder, batch, workers)
    transform = T.Compose(
        [
            T.RandomResizedCrop(224),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(imagenet.INPUTS.mean, imagenet.INPUTS.std),
        ]
    )
    from torchvision.datasets import ImageFolder

    loader = DataLoader(ImageFolder(folder / "train", transform), batch_size=batch, shuffle=True, num_workers=workers)
    train_set = imagenet.ImageNetFolder(folder / "train", transform=imagenet.train_transform())
    pin = device.type == "cuda"
    ours_loader = DataLoader(train_set, batch_size=batch, shuffle=True, num_workers=workers, pin_memory=pin)
    mean = torch.tensor(imagenet.INPUTS.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(imagenet.INPUTS.std, device=device).view(1, 3, 1, 1)

    def epoch(_: int) -> Iterator:
        for images, labels in ours_loader:
            images = images.to(device, non_blocking=True).float().mul_(1 / 255)
            images = imagenet.pca_lighting(images).sub_(mean).div_(std)
            yield images.contiguous(memory_format=torch.channels_last), labels.to(device, non_blocking=True)

    return loader, epoch


def loader_only(epoch: Epoch, device: torch.device) -> float:
    """Images/s of our data path alone: one fresh epoch of batches on the device, no model, worker start included."""
    started, count = time.perf_counter(), 0
    for images, _ in epoch(0):
        count += images.shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize()
    return count / (time.perf_counter() - started)


COLUMNS = [
    Column("model", "model"),
    Column("input", "input"),
    Column("batch", "batch", "d"),
    Column("baseline", "baseline img/s (PIL DataLoader, NCHW fp32)", ".0f"),
    Column("ours", "ours img/s", ".0f"),
    Column("ratio", "ours / baseline", ".2f", "x"),
    Column("compiled", "ours + --compile img/s", ".0f"),
    Column("step_only", "ours, step only (batch on device)", ".0f"),
    Column("loader_only", "our data path only (no model)", ".0f"),
    Column("bound", "ours bound by"),
]


def measure(name: str, args: argparse.Namespace, device: torch.device, temp: Path) -> dict:
    """One model's images/s: the baseline loop, ours (and compiled), our step alone, alternating in blocks; then our
    data path alone."""
    cifar = name.startswith("cifar_")
    batch = args.cifar_batch if cifar else args.imagenet_batch
    steps = args.steps if cifar else max(args.rounds, args.steps // 4)
    if cifar:
        loader, ours_epoch = cifar_pipelines(batch, device, batch * 50, args.workers)
    else:
        loader, ours_epoch = imagenet_pipelines(batch, device, temp / name, args.workers)
    ours_batches = cycle(ours_epoch)
    size = 32 if cifar else 224
    fixed = (
        torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last),
        torch.randint(0, 10, (batch,), device=device),
    )
    factories = {
        "baseline": lambda model: baseline_step(model, loader, device),
        "ours": lambda model: ours_step(model, ours_batches, device, False),
        "step_only": lambda model: ours_step(model, itertools.repeat(fixed), device, False),
    }
    if args.compile:
        factories["compiled"] = lambda model: ours_step(model, ours_batches, device, True)
    steppers = {}
    for system, factory in factories.items():
        torch.manual_seed(0)
        steppers[system] = factory(create_model(name).to(device))
    rates = interleaved(steppers, args.warmup if cifar else 1, max(1, steps // args.rounds), args.rounds)
    row = {"model": name, "input": "32x32" if cifar else "224x224 (synthetic JPEG)", "batch": batch}
    row |= {system: statistics.median(values) for system, values in rates.items()}
    row["ratio"] = row["ours"] / row["baseline"]
    row["loader_only"] = loader_only(ours_epoch, device)
    row["bound"] = "data path" if row["loader_only"] < row["step_only"] else "step"
    return row


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the comparison and write the table."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["cifar_resnet20", "cifar_resnet56", "resnet50"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--cifar-batch", type=int, default=128)
    parser.add_argument("--imagenet-batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per CIFAR model (ImageNet: a quarter)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating blocks per system (steps split over them)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="loader workers (baseline and our ImageNet loader)")
    parser.add_argument("--compile", action="store_true", help="also time ours with torch.compile (opt-in in training)")
    parser.add_argument("--output-dir", type=Path, default=BENCH_DIR, help="folder for train_throughput_<device>.json")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_flush_denormal(True)
    else:  # as training.train sets it; global, so the baseline gets it too
        torch.backends.cudnn.benchmark = True
    with tempfile.TemporaryDirectory() as temp:
        rows = [measure(name, args, device, Path(temp)) for name in args.models]
    notes = (
        f"{device} ({torch.get_num_threads()} threads); median over timed steps, the systems alternating in "
        f"{args.rounds} blocks; each step includes waiting for its batch; {args.workers} loader workers; data path "
        "only: one fresh epoch of our loader"
    )
    write_results(f"train_throughput_{device.type}", COLUMNS, rows, notes, directory=args.output_dir)
    return rows


if __name__ == "__main__":
    cli.entry_point(main)
