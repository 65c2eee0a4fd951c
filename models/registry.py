"""One registry mapping model names to constructors, with each family's input configuration.

As timm's pretrained configs do, the registry says what a network expects at its input (mean, std, resize and crop
sizes); training, export and detection read it from here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class InputConfig:
    """What a family's networks see: ``(uint8 / 255 - mean) / std`` of a ``crop_size`` centre crop after resizing
    the shorter side to ``resize_size``. ``mean=None``: a per-pixel mean image of the training set (CIFAR-10)."""

    mean: tuple[float, float, float] | None
    std: tuple[float, float, float]
    resize_size: int
    crop_size: int
    num_classes: int


# ImageNet: torchvision's per-channel mean/std, so checkpoints stay interchangeable with torchvision's weights
# (the paper subtracts a per-pixel mean). CIFAR-10: the paper's per-pixel mean subtraction, std one (Sec. 4.2).
FAMILY_INPUTS = {
    "imagenet": InputConfig((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 256, 224, 1000),
    "cifar10": InputConfig(None, (1.0, 1.0, 1.0), 32, 32, 10),
}


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about a model without building it."""

    name: str
    constructor: Callable[..., nn.Module]
    family: str  # "imagenet" or "cifar10"
    depth: int
    residual: bool = True

    @property
    def inputs(self) -> InputConfig:
        """The family's input configuration."""
        return FAMILY_INPUTS[self.family]

    @property
    def input_size(self) -> int:
        """Side of the square image the network is trained on."""
        return self.inputs.crop_size

    @property
    def num_classes(self) -> int:
        """Classes of the family's dataset."""
        return self.inputs.num_classes


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(name: str, family: str, depth: int, residual: bool = True) -> Callable:
    """Decorator adding a constructor to the registry under ``name``."""

    def add(constructor: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        if family not in FAMILY_INPUTS:
            raise ValueError(f"unknown family {family!r}; choose from: {', '.join(FAMILY_INPUTS)}")
        _REGISTRY[name] = ModelInfo(name, constructor, family, depth, residual)
        return constructor

    return add


def list_models(family: str | None = None) -> list[str]:
    """Every registered model name (optionally of one family), in registration order."""
    return [name for name, info in _REGISTRY.items() if family is None or info.family == family]


def model_info(name: str) -> ModelInfo:
    """Registry entry for ``name``; a clear error lists the valid names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose from: {', '.join(_REGISTRY)}") from None


def create_model(name: str, **options) -> nn.Module:
    """Build ``name``; options: num_classes, shortcut, stride_in_1x1, zero_init_residual."""
    return model_info(name).constructor(**options)
