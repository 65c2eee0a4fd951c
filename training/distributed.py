"""One process or many under ``torchrun``: rank, device and the few collectives training needs."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from toolkit.errors import UsageError
from training.settings import Launch


@dataclass(frozen=True)
class Context:
    """Where this process sits in the job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Only rank 0 writes files and shows progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(device: str | None, fixed_input_sizes: bool = True) -> Context:
    """Start the process group when launched by ``torchrun`` (NCCL on CUDA, gloo on CPU) and pick the device.

    On CPU, denormals are flushed (they slow training from scratch ~10x); on CUDA with ``fixed_input_sizes``,
    cuDNN picks its fastest kernels once.
    """
    launch = Launch.from_env()
    world_size, rank, local_rank = launch.world_size, launch.rank, launch.local_rank
    chosen = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError("--device cuda was asked for but torch sees no CUDA device; use --device cpu")
        chosen = torch.device("cuda", local_rank if world_size > 1 else (chosen.index or 0))
        torch.cuda.set_device(chosen)
        torch.backends.cudnn.benchmark = fixed_input_sizes
    else:
        torch.set_flush_denormal(True)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if chosen.type == "cuda" else "gloo")
    return Context(rank, world_size, local_rank, chosen)


def describe(context: Context) -> str:
    """The hardware this job runs on, in words: ``2x NVIDIA H100 80GB HBM3`` or ``2-core CPU (AMD EPYC ...)``."""
    if context.device.type == "cuda":
        return f"{context.world_size}x {torch.cuda.get_device_name(context.device)}"
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    processes = f", {context.world_size} processes" if context.distributed else ""
    return f"{os.cpu_count()}-core CPU ({model}){processes}"


def cleanup() -> None:
    """Leave the process group (no-op when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module, context: Context, sync_batchnorm: bool = False) -> nn.Module:
    """``DistributedDataParallel`` around ``model`` under torchrun (optionally with SyncBatchNorm); else ``model``."""
    if not context.distributed:
        return model
    if sync_batchnorm and context.device.type == "cuda":  # trainable BN: statistics over the whole batch
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return DistributedDataParallel(model, device_ids=[context.device] if context.device.type == "cuda" else None)


def all_reduce_sum(tensor: torch.Tensor, context: Context) -> torch.Tensor:
    """Sum ``tensor`` over ranks, in place (float64 on CPU for gloo); returns it."""
    if context.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_true(flag: torch.Tensor, context: Context) -> bool:
    """Whether ``flag`` (a boolean tensor) holds on every rank: one all-reduce, so every rank takes the same branch
    (a rank that stopped alone would leave the others waiting in their next collective)."""
    count = flag.detach().to(torch.float32).reshape(1)
    return bool(all_reduce_sum(count, context).item() == context.world_size)


def all_gather(items: list[Any], context: Context) -> list[Any]:
    """Every rank's ``items`` concatenated in rank order (picklable objects), on every rank."""
    if not context.distributed:
        return items
    gathered: list[Any] = [None] * context.world_size
    dist.all_gather_object(gathered, items)
    return [item for part in gathered for item in part]


def barrier(context: Context) -> None:
    """Wait for every rank (no-op when not distributed)."""
    if context.distributed:
        dist.barrier()


def shard(count: int, context: Context, limit: int | None = None) -> list[int]:
    """This rank's share of ``range(min(count, limit))``, strided so every rank gets a near-equal part."""
    count = min(count, limit) if limit else count
    return list(range(context.rank, count, context.world_size))
