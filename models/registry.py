"""One registry mapping model names to constructors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

INPUT_SIZES = {"imagenet": 224, "cifar10": 32}
NUM_CLASSES = {"imagenet": 1000, "cifar10": 10}


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about a model without building it."""

    name: str
    constructor: Callable[..., nn.Module]
    family: str  # "imagenet" or "cifar10"
    depth: int
    residual: bool = True

    @property
    def input_size(self) -> int:
        return INPUT_SIZES[self.family]

    @property
    def num_classes(self) -> int:
        return NUM_CLASSES[self.family]


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(name: str, family: str, depth: int, residual: bool = True) -> Callable:
    """Decorator adding a constructor to the registry under ``name``."""

    def add(constructor: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
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
