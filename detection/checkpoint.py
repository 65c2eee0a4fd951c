"""Detection checkpoints: what ``detection.train`` writes (through the shared engine), and the detector rebuilt.

Keys beyond the engine's (see ``training.checkpoint``): ``recipe`` (DetectionRecipe.to_dict()), ``arch``,
``model_options`` (for ``models.create_model``), ``model`` (detector state dict), ``category_ids`` /
``category_names`` (label i+1 is COCO category ``category_ids[i]``), ``image_mean`` / ``image_std`` (3 floats each),
``backbone`` (where the backbone came from).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from detection.model import build_detector, fresh_backbone
from detection.recipes import DetectionRecipe
from training.checkpoint import check_checkpoint, read_torch_state
from training.classifier import FORMAT as CLASSIFIER_FORMAT
from training.classifier import load_classifier_checkpoint, model_from_checkpoint

FORMAT = "resnet-lab-detection/2"
REQUIRED_KEYS = ("recipe", "arch", "model_options", "model", "category_ids", "image_mean", "image_std")
HOW_TO_GET = "train one with `python -m detection.train ...`"


def load_detection_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load with weights_only=True; missing, truncated or foreign files exit with a readable message."""
    how = HOW_TO_GET
    state = read_torch_state(path, "detection checkpoint", how, map_location)
    if isinstance(state, dict) and state.get("format") == CLASSIFIER_FORMAT:
        how = "that is a classification checkpoint: pass it to `python -m detection.train --backbone-checkpoint`"
    return check_checkpoint(state, path, FORMAT, REQUIRED_KEYS, "detection checkpoint", how)


def detector_from_checkpoint(state: dict[str, Any]) -> tuple[nn.Module, DetectionRecipe]:
    """Rebuild the detector and load its weights strictly."""
    recipe = DetectionRecipe.from_dict(state["recipe"])
    net = fresh_backbone(state["arch"], state["model_options"], recipe)
    model = build_detector(recipe, len(state["category_ids"]) + 1, net, state["image_mean"], state["image_std"])
    model.load_state_dict(state["model"], strict=True)
    return model, recipe


def channel_stats(value: torch.Tensor) -> list[float]:
    """Reduce a preprocess mean/std ([3], [3,1,1] or a per-pixel [3,H,W]) to one value per channel."""
    value = torch.as_tensor(value, dtype=torch.float32)
    return [float(v) for v in value.reshape(3, -1).mean(dim=1)]


def load_backbone(path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """The classification network of a training/ checkpoint plus what the detector keeps about it."""
    state = load_classifier_checkpoint(path)
    net = model_from_checkpoint(state)
    info = {
        "arch": state["model_name"],
        "model_options": dict(state["model_options"]),
        "image_mean": channel_stats(state["preprocess"]["mean"]),
        "image_std": channel_stats(state["preprocess"]["std"]),
        "backbone": str(path),
    }
    return net, info
