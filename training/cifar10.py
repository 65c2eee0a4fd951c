"""CIFAR-10 for training and evaluation, held as uint8 tensors: any form ``toolkit.cifar10`` reads (the official
python archive or folder, the data folder's JPEG copies), so the trainer, the evaluator and the exporters take the
same inputs.

Our own reader because ``torchvision.datasets.CIFAR10`` refuses any file whose md5 differs from the official
download. The paper's augmentation (4-pixel zero pad, random 32x32 crop, horizontal flip) runs on whole batches as
tensor ops, on whatever device holds the images: no per-image Python, no loader workers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DistributedSampler

from toolkit import cifar10 as cifar_files
from toolkit.errors import UsageError

PAD = 4
DATA_CAVEAT = (
    "our CIFAR-10 is the complete real set (50,000 training and 10,000 test images, the official split), but its "
    "pixels were JPEG-compressed (quality 75, 4:2:0 chroma) before we got them, so they are not the official pixels. "
    "What that costs was measured (`../shared/data/MANIFEST.md`): on 846 lossless original test images, the copies "
    "have a median PSNR of 30.5 dB, and a ResNet-20 trained on the copies errs 9.57% on those originals but 10.87% "
    "on their copies, 1.3 points from test-time compression alone (training on the copies may cost more). The rest "
    "of the gap to the paper is an open question."
)
SUBSET_SEED = 0  # fixed, so --max-train-samples and --val-split pick the same images whatever --seed is


@dataclass
class CifarSplit:
    """Images as uint8 ``[N, 3, 32, 32]`` and int64 labels ``[N]``."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: torch.Tensor) -> CifarSplit:
        """The rows at ``indices``."""
        return CifarSplit(self.images[indices], self.labels[indices])

    def to(self, device: torch.device | str) -> CifarSplit:
        """The same split on ``device``."""
        return CifarSplit(self.images.to(device), self.labels.to(device))


def read_label_names(data_dir: str | Path) -> list[str]:
    """Class names, index order (CIFAR-10's own); ``UsageError`` when ``data_dir`` holds no CIFAR-10."""
    cifar_files.locate(data_dir)
    return list(cifar_files.CLASSES)


def load_cifar10(data_dir: str | Path, train: bool) -> CifarSplit:
    """The 50,000 training or 10,000 test images as uint8 tensors."""
    images, labels = cifar_files.read_split(data_dir, "train" if train else "test")
    return CifarSplit(torch.from_numpy(images), torch.from_numpy(labels))


def split_train_val(
    train: CifarSplit, val_size: int, max_train_samples: int | None
) -> tuple[CifarSplit, CifarSplit | None]:
    """A fixed random ``val_size`` hold-out (paper: 45k/5k) and an optional cap on the training images."""
    if not 0 <= val_size < len(train):
        raise UsageError(f"--val-split must be in [0, {len(train)}), got {val_size}")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(SUBSET_SEED))
    val = train.subset(order[:val_size]) if val_size else None
    train_indices = order[val_size:]
    if max_train_samples is not None:
        train_indices = train_indices[:max_train_samples]
    return train.subset(torch.sort(train_indices).values), val


def mean_image(split: CifarSplit) -> torch.Tensor:
    """The per-pixel mean of the training images in [0, 1], ``[3, 32, 32]`` float32 (paper Sec. 4.2)."""
    total = torch.zeros(3, 32, 32, dtype=torch.float64, device=split.images.device)
    for start in range(0, len(split), 10_000):
        total += split.images[start : start + 10_000].to(torch.float64).sum(0)
    return (total / (255.0 * len(split))).float()


class CifarTrainBatches:
    """Shuffled, augmented, normalised training batches built with tensor ops on the data's device.

    Order comes from a ``DistributedSampler`` (one replica when not distributed), crops and flips from a
    generator seeded by (seed, epoch, rank): an epoch is a pure function of those, so resuming is exact.
    """

    def __init__(
        self,
        split: CifarSplit,
        mean: torch.Tensor,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        channels_last: bool = False,
    ) -> None:
        self.split = split
        self.mean = mean.to(split.images.device)
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.channels_last = channels_last
        self.sampler = DistributedSampler(range(len(split)), world_size, rank, shuffle=True, seed=seed)

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.batch_size)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches ``(float images [B, 3, 32, 32], labels [B])`` of ``epoch``."""
        self.sampler.set_epoch(epoch)
        device = self.split.images.device
        order = torch.tensor(list(iter(self.sampler)), dtype=torch.int64)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch * 1009 + self.rank)
        offsets = torch.randint(0, 2 * PAD + 1, (len(order), 2), generator=generator)
        flips = torch.randint(0, 2, (len(order),), generator=generator).bool()
        order, offsets, flips = order.to(device), offsets.to(device), flips.to(device)
        for start in range(0, len(order), self.batch_size):
            rows = slice(start, start + self.batch_size)
            indices = order[rows]
            images = augment(self.split.images[indices], self.mean, offsets[rows], flips[rows])
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            yield images, self.split.labels[indices]


def normalize(images: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """uint8 -> float ``x / 255 - mean`` (std is one: the paper subtracts the mean only)."""
    return images.float().mul_(1.0 / 255.0).sub_(mean)


def augment(images: torch.Tensor, mean: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Mean-subtract, zero-pad by 4, crop 32x32 at ``offsets`` (y, x) and mirror where ``flips``: one gather."""
    count, size = images.shape[0], images.shape[-1]
    padded = torch.nn.functional.pad(normalize(images, mean), (PAD, PAD, PAD, PAD))
    base = torch.arange(size, device=images.device)
    rows = offsets[:, :1] + base  # [B, 32]
    cols = torch.where(flips[:, None], offsets[:, 1:] + (size - 1) - base, offsets[:, 1:] + base)
    batch_index = torch.arange(count, device=images.device)[:, None, None, None]
    channel_index = torch.arange(3, device=images.device)[None, :, None, None]
    return padded[batch_index, channel_index, rows[:, None, :, None], cols[:, None, None, :]]
