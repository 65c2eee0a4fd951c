"""torchvision's COCO Faster R-CNN weights loaded strictly into the project's own detector, as a detection checkpoint.

``fasterrcnn_resnet50_fpn`` (file ``fasterrcnn_resnet50_fpn_coco-258fb6c6.pth``, box AP 37.0) is the ``fpn`` design,
``fasterrcnn_resnet50_fpn_v2`` (``fasterrcnn_resnet50_fpn_v2_coco-dd69338a.pth``, 46.7) the ``fpn_v2`` design of
``detection.model``. What makes the outputs those of torchvision's own model with the same file:

- the backbone in torchvision's v1.5 layout (``stride_in_1x1=False``): the paper's layout has the same shapes, so
  the file would load without a word and detect nothing alike;
- the backbone BatchNorm's eps torchvision runs each file with (``detection.recipes.TORCHVISION_RECIPES``: 0 for
  v1), kept in the recipe, hence in the exported file's metadata;
- torchvision's 91-slot class layout as it is: label i is COCO category id i, ten slots unused ("N/A"). Slicing to
  the 80 used classes would renormalise the softmax and change every score;
- the older key names of the published files (``rpn.head.conv.weight``, ``backbone.fpn.inner_blocks.N.weight``)
  upgraded while loading by torchvision's own modules, as torchvision's builders load them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torchvision.models.detection import FasterRCNN_ResNet50_FPN_V2_Weights, FasterRCNN_ResNet50_FPN_Weights

from detection.model import build_detector, fresh_backbone
from detection.recipes import TORCHVISION_RECIPES
from export.onnx_file import sha256_of
from inference import weights
from models.registry import FAMILY_INPUTS
from toolkit.errors import UsageError
from training.checkpoint import read_torch_state

MODEL_OPTIONS = {"stride_in_1x1": False}  # torchvision's v1.5 ResNet
CATEGORY_NAMES = {  # torchvision's own category lists (shipped with the library, nothing downloaded): 91 slots
    "fasterrcnn_resnet50_fpn": FasterRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"],
    "fasterrcnn_resnet50_fpn_v2": FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1.meta["categories"],
}
SHOWN_KEYS = 4  # keys named in the error for a file that does not fit


def is_torchvision_detector(arch: str) -> bool:
    """Whether ``arch`` names a torchvision detector this module imports."""
    return arch in TORCHVISION_RECIPES


def empty_detector(arch: str) -> torch.nn.Module:
    """The project's detector for ``arch`` with random weights (91 classes, torchvision's layout)."""
    recipe = TORCHVISION_RECIPES[arch]
    inputs = FAMILY_INPUTS["imagenet"]
    net = fresh_backbone(recipe.arch, MODEL_OPTIONS, recipe)
    return build_detector(recipe, len(CATEGORY_NAMES[arch]), net, list(inputs.mean), list(inputs.std))


def misfit(model: torch.nn.Module, state_dict: dict[str, Any]) -> str:
    """Load ``state_dict`` into ``model``; "" when every key fits, else the first keys that do not. The saved module
    versions (``_metadata``) decide torchvision's key upgrades, as in its own builders."""
    try:
        missing, unexpected = model.load_state_dict(state_dict, strict=False)  # copies, keeping _metadata
    except RuntimeError as error:  # shapes that differ are raised even when not strict
        lines = [line.strip() for line in str(error).splitlines() if line.strip().startswith("size mismatch")]
        return "; ".join(lines[:SHOWN_KEYS]) or str(error).splitlines()[0]
    problems = []
    if missing:
        problems.append(f"{len(missing)} keys missing ({', '.join(missing[:SHOWN_KEYS])}, ...)")
    if unexpected:
        problems.append(f"{len(unexpected)} keys unexpected ({', '.join(unexpected[:SHOWN_KEYS])}, ...)")
    return "; ".join(problems)


def read_state_dict(path: Path) -> dict[str, Any]:
    """The state dict in ``path``: a bare one (torchvision's published files) or under ``model`` / ``state_dict``
    (torchvision's reference training scripts)."""
    how = "pass torchvision's COCO Faster R-CNN weights file (.pth)"
    if not path.is_file():
        raise UsageError(f"state dict not found: {path} ({how})")
    state = read_torch_state(path, "state dict", how)
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise UsageError(f"{path} holds no state dict (a mapping of names to tensors); {how}")
    return state


def state_from_torchvision(path: str | os.PathLike, arch: str) -> dict[str, Any]:
    """A detection checkpoint (``detection.checkpoint``'s keys) holding torchvision's ``arch`` weights from ``path``,
    loaded strictly into the project's detector; a file of another layout raises naming the keys that do not fit."""
    if not is_torchvision_detector(arch):
        raise UsageError(f"unknown torchvision detector {arch!r}; choose from: {', '.join(TORCHVISION_RECIPES)}")
    path = Path(path)
    state_dict = read_state_dict(path)
    model = empty_detector(arch)
    problem = misfit(model, state_dict)
    if problem:
        others = [other for other in TORCHVISION_RECIPES if other != arch]
        fits = [other for other in others if not misfit(empty_detector(other), state_dict)]
        hint = f"it is {fits[0]}: pass --arch {fits[0]}" if fits else f"expected torchvision's {arch} state dict"
        raise UsageError(f"{path} does not fit {arch}: {problem}. {hint}")
    recipe = TORCHVISION_RECIPES[arch]
    names = CATEGORY_NAMES[arch][1:]  # slot 0 is the background
    published = weights.find(path)
    return {
        "recipe": recipe.to_dict(),
        "arch": recipe.arch,
        "model_options": dict(MODEL_OPTIONS),
        "model": model.state_dict(),  # the current key names
        "category_ids": list(range(1, len(names) + 1)),
        "category_names": list(names),
        "image_mean": list(model.transform.image_mean),
        "image_std": list(model.transform.image_std),
        "backbone": f"torchvision {arch} ({path.name})",
        "metrics": [],
        "weights": published.record(sha256_of(path)) if published and published.arch == arch else None,
    }
