"""Classification checkpoints: what ``training.train`` writes, and the classifier rebuilt from one.

Keys beyond the engine's (see ``training.checkpoint``):

- ``model_name``, ``model_options`` (kwargs for ``models.create_model``, ``num_classes`` included)
- ``model``: the state dict
- ``labels``: class names, index order
- ``preprocess``: ``{"mean": Tensor, "std": Tensor, "resize_size": int, "crop_size": int}``; the network
  input is ``(uint8 / 255 - mean) / std`` with mean/std broadcastable to ``[3, H, W]``
- ``recipe`` (dict)
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from models import create_model
from models.preprocess import NormalizedClassifier

from .checkpoint import check_checkpoint, read_torch_state, save_checkpoint

FORMAT = "resnet-lab/1"
REQUIRED_KEYS = ("model_name", "model_options", "model", "labels", "preprocess")
HOW_TO_GET = (
    "train one with `python -m training.train ...`; for torchvision weights use "
    "`python -m export --torchvision-state-dict FILE --arch NAME`"
)


def save_classifier_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> os.PathLike:
    """Write a classification checkpoint atomically."""
    return save_checkpoint(state, path, FORMAT)


def load_classifier_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a classification checkpoint (``weights_only=True``); a missing or foreign file exits clearly."""
    state = read_torch_state(path, "resnet-lab checkpoint", HOW_TO_GET, map_location)
    how = HOW_TO_GET
    if isinstance(state, dict) and str(state.get("format", "")).startswith("resnet-lab-detection"):
        how = "that is a detection checkpoint: export it with `python -m export`"
    return check_checkpoint(state, path, FORMAT, REQUIRED_KEYS, "resnet-lab checkpoint", how)


def model_from_checkpoint(state: dict[str, Any]) -> nn.Module:
    """Rebuild the bare network (float input) from a loaded checkpoint, weights loaded strictly."""
    model = create_model(state["model_name"], **state["model_options"])
    model.load_state_dict(state["model"], strict=True)
    return model


def classifier_from_checkpoint(state: dict[str, Any]) -> NormalizedClassifier:
    """The network wrapped with its input normalisation: uint8 images in, logits out."""
    preprocess = state["preprocess"]
    return NormalizedClassifier(model_from_checkpoint(state), preprocess["mean"], preprocess["std"])
