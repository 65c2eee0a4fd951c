"""Classification steps: one SGD step (eager or replayed as a CUDA graph) and top-1/top-5 error counting."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm


def autocast_for(device: torch.device, enabled: bool, cache: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when enabled; nothing otherwise. CUDA-graph capture needs ``cache=False``."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=cache)
    return contextlib.nullcontext()


def train_step(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    amp: bool = False,
    graph_safe: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One SGD step; returns (summed loss, wrong predictions) as device tensors, without syncing.

    ``graph_safe`` (for CUDA-graph capture): gradients are zeroed in place rather than freed, no autocast cache.
    """
    with autocast_for(images.device, amp, cache=not graph_safe):
        logits = model(images)
        loss = F.cross_entropy(logits, labels)
    optimizer.zero_grad(set_to_none=not graph_safe)
    loss.backward()
    optimizer.step()
    wrong = (logits.detach().argmax(1) != labels).sum()
    return loss.detach() * labels.shape[0], wrong


class GraphedTrainStep:
    """``train_step`` captured once as a CUDA graph and replayed: small CIFAR nets are bound by the host launching
    ~370 kernels per step, not by the GPU.

    Each batch is copied into static input buffers and the graph replays forward, backward and the SGD update.
    The lr is baked into the graph, so a change of lr triggers a new capture (three times in the paper's CIFAR
    schedule). The first ``warmup_steps`` steps run eagerly on a side stream (momentum buffers, cuDNN autotuning),
    as do batches of another size than the captured one (an epoch's last, partial batch). Gradients are zeroed in
    place, never freed, so eager and replayed steps share the same gradient tensors. Without CUDA the "graph" is
    the same step run eagerly on the static buffers, so the CPU tests exercise all of this but the capture.
    """

    def __init__(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, amp: bool = False, warmup_steps: int = 3
    ) -> None:
        self.model, self.optimizer, self.amp = model, optimizer, amp
        self.device = next(model.parameters()).device
        self.capture = self.device.type == "cuda"
        self.warmup_steps = warmup_steps
        self.steps = 0
        self.captures = 0
        self.replays = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.graph_lr: float | None = None
        self.static: dict[str, torch.Tensor] = {}

    def _step(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return train_step(self.model, images, labels, self.optimizer, self.amp, graph_safe=True)

    def _eager(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.capture:
            return self._step(images, labels)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            result = self._step(images, labels)
        torch.cuda.current_stream(self.device).wait_stream(side)
        return result

    def _capture(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        """Record the step on static copies of this batch; recording runs nothing, the replay does."""
        self.graph = None  # free the previous graph's memory pool first
        self.static = {"images": images.clone(), "labels": labels.clone()}
        if self.capture:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):  # loader threads may touch CUDA
                self.static["loss_sum"], self.static["wrong"] = self._step(self.static["images"], self.static["labels"])
            self.graph = graph
        self.graph_lr = self.lr
        self.captures += 1

    def _replay(self) -> None:
        if self.graph is not None:
            self.graph.replay()
        else:
            self.static["loss_sum"], self.static["wrong"] = self._step(self.static["images"], self.static["labels"])
        self.replays += 1

    @property
    def lr(self) -> float:
        """The optimizer's current lr."""
        return float(self.optimizer.param_groups[0]["lr"])

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One SGD step; (summed loss, wrong predictions) as device tensors, valid until the next call."""
        self.steps += 1
        if self.steps <= self.warmup_steps:
            return self._eager(images, labels)
        if self.static and self.static["images"].shape != images.shape:
            return self._eager(images, labels)  # another batch size (an epoch's last, partial batch)
        if not self.static or self.graph_lr != self.lr:
            self._capture(images, labels)
        else:
            self.static["images"].copy_(images)
            self.static["labels"].copy_(labels)
        self._replay()
        return self.static["loss_sum"], self.static["wrong"]


@torch.no_grad()
def count_errors(
    classifier: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    amp: bool = False,
    channels_last: bool = False,
    progress: bool = False,
    predictions: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """``[images, top-1 wrong, top-5 wrong]`` for uint8 batches ``[B, 3, H, W]`` or ten crops ``[B, 10, 3, H, W]``.

    Ten crops are scored by their mean softmax. ``predictions``, if given, receives each batch's top-1 classes.
    """
    was_training = classifier.training
    classifier.eval()
    counts = torch.zeros(3, dtype=torch.float64, device=device)
    for images, labels in tqdm(batches, desc="evaluate", disable=not progress, leave=False):
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        crops = images.shape[1] if images.dim() == 5 else 1
        flat = images.flatten(0, 1) if crops > 1 else images
        if channels_last:
            flat = flat.contiguous(memory_format=torch.channels_last)
        with autocast_for(device, amp):
            logits = classifier(flat).float()
        scores = logits.softmax(1).unflatten(0, (-1, crops)).mean(1) if crops > 1 else logits
        top5 = scores.topk(min(5, scores.shape[1]), dim=1).indices
        if predictions is not None:
            predictions.append(top5[:, 0].cpu())
        counts[0] += labels.shape[0]
        counts[1] += (top5[:, 0] != labels).sum()
        counts[2] += (top5 != labels[:, None]).all(1).sum()
    classifier.train(was_training)
    return counts
