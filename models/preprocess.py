"""Input normalisation as a module, so exported graphs carry it and serving cannot drift from training."""

from __future__ import annotations

import torch
from torch import nn


class NormalizedClassifier(nn.Module):
    """Wrap a classifier so it takes uint8 RGB ``[N, 3, H, W]`` and returns float32 logits.

    The input becomes ``(x / 255 - mean) / std``; ``mean``/``std`` broadcast to ``[3, H, W]``:
    a per-pixel mean image (the paper's CIFAR recipe) or per-channel ``[3, 1, 1]`` values.
    """

    def __init__(self, model: nn.Module, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", _as_image_shaped(mean))
        self.register_buffer("inv_std", 1.0 / _as_image_shaped(std))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.float() * (1.0 / 255.0) - self.mean) * self.inv_std
        return self.model(x)


def _as_image_shaped(values: torch.Tensor) -> torch.Tensor:
    values = torch.as_tensor(values, dtype=torch.float32)
    if values.dim() == 1:
        values = values.reshape(-1, 1, 1)
    if values.dim() != 3 or values.shape[0] != 3:
        raise ValueError(f"mean/std must have shape [3], [3, 1, 1] or [3, H, W], got {tuple(values.shape)}")
    return values
