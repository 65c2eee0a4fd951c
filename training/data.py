"""What a training run needs from a dataset: batches per epoch, evaluation sets, labels and preprocessing."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler, Subset

from models.registry import FAMILY_INPUTS
from toolkit.errors import UsageError

from . import cifar10, imagenet
from .distributed import Context, shard

EVAL_BATCH_CIFAR = 1000


@dataclass
class TrainData:
    """Dataset-specific parts of a run. Training batches are float, normalised, on the device."""

    labels: list[str]
    preprocess: dict[str, Any]
    steps_per_epoch: int
    epoch_batches: Callable[[int], Iterator[tuple[torch.Tensor, torch.Tensor]]]
    eval_sets: dict[str, Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]]]  # uint8 batches


def cifar10_data(
    data_dir: str | Path,
    context: Context,
    batch_per_rank: int,
    seed: int,
    val_split: int,
    max_train_samples: int | None,
    max_eval_samples: int | None,
    channels_last: bool,
) -> TrainData:
    """The whole of CIFAR-10 as tensors on the training device, augmented there batch by batch."""
    labels = cifar10.read_label_names(data_dir)
    train, val = cifar10.split_train_val(cifar10.load_cifar10(data_dir, train=True), val_split, max_train_samples)
    test = cifar10.load_cifar10(data_dir, train=False)
    mean = cifar10.mean_image(train)
    device = context.device
    train_device, test_device = train.to(device), test.to(device)
    batches = cifar10.CifarTrainBatches(
        train_device, mean, batch_per_rank, seed, context.rank, context.world_size, channels_last
    )

    def tensor_batches(split: cifar10.CifarSplit) -> Callable[[], Iterable]:
        indices = torch.tensor(shard(len(split), context, max_eval_samples), dtype=torch.int64, device=device)

        def generate() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            for start in range(0, len(indices), EVAL_BATCH_CIFAR):
                chunk = indices[start : start + EVAL_BATCH_CIFAR]
                yield split.images[chunk], split.labels[chunk]

        return generate

    eval_sets = {"test": tensor_batches(test_device)}
    if val is not None:
        eval_sets["val"] = tensor_batches(val.to(device))
    inputs = FAMILY_INPUTS["cifar10"]
    preprocess = {
        "mean": mean,
        "std": torch.tensor(inputs.std).view(3, 1, 1),
        "resize_size": inputs.resize_size,
        "crop_size": inputs.crop_size,
    }
    return TrainData(labels, preprocess, len(batches), batches.epoch, eval_sets)


def imagenet_data(
    data_dir: str | Path,
    context: Context,
    batch_per_rank: int,
    seed: int,
    max_train_samples: int | None,
    max_eval_samples: int | None,
    channels_last: bool,
    workers: int,
) -> TrainData:
    """Class folders decoded by loader workers (pinned memory); lighting and mean/std on the device."""
    train_set = imagenet.open_split(data_dir, "train", imagenet.train_transform())
    val_set = imagenet.open_split(data_dir, "val", imagenet.eval_transform())
    if max_train_samples:
        order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(0))[:max_train_samples]
        train_set = Subset(train_set, sorted(order.tolist()))
    device = context.device
    pin = device.type == "cuda"
    inputs = imagenet.INPUTS
    mean = torch.tensor(inputs.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(inputs.std, device=device).view(1, 3, 1, 1)
    sampler = DistributedSampler(train_set, context.world_size, context.rank, shuffle=True, seed=seed)
    steps = -(-len(sampler) // batch_per_rank)

    def epoch_batches(epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        sampler.set_epoch(epoch)
        epoch_seed = seed * 1_000_003 + epoch * 1009 + context.rank
        loader = DataLoader(
            train_set,
            batch_size=batch_per_rank,
            sampler=sampler,
            num_workers=workers,
            pin_memory=pin,
            generator=torch.Generator().manual_seed(epoch_seed),
            persistent_workers=False,
        )
        lighting = torch.Generator().manual_seed(epoch_seed + 1)
        for images, labels in decode_errors_as_exit(loader):
            images = images.to(device, non_blocking=True).float().mul_(1.0 / 255.0)
            images = imagenet.pca_lighting(images, lighting).sub_(mean).div_(std)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            yield images, labels.to(device, non_blocking=True)

    def val_batches() -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        subset = Subset(val_set, shard(len(val_set), context, max_eval_samples))
        loader = DataLoader(subset, batch_size=max(batch_per_rank, 32), num_workers=workers, pin_memory=pin)
        return decode_errors_as_exit(loader)

    preprocess = {
        "mean": torch.tensor(inputs.mean),
        "std": torch.tensor(inputs.std),
        "resize_size": inputs.resize_size,
        "crop_size": inputs.crop_size,
    }
    return TrainData(list(imagenet.imagenet_classes()[1]), preprocess, steps, epoch_batches, {"test": val_batches})


def decode_errors_as_exit(loader: Iterable) -> Iterator:
    """Turn a broken image (raised in a worker or in-process) into a UsageError that names the file."""
    try:
        yield from loader
    except imagenet.ImageDecodeError as error:
        message = str(error).strip().splitlines()[-1]
        message = message.split("ImageDecodeError: ", 1)[-1]
        raise UsageError(f"{message}; delete or replace the file ({imagenet.HOW_TO_GET})") from None
