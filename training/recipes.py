"""The paper's training recipes as data, one per experiment (He et al. 2016, Sec. 3.4 and 4.2)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from toolkit.errors import UsageError

CIFAR_DEPTHS_RESNET = (20, 32, 44, 56, 110, 1202)
CIFAR_DEPTHS_PLAIN = (20, 32, 44, 56, 110)
IMAGENET_DEPTHS_RESNET = (18, 34, 50, 101, 152)
IMAGENET_DEPTHS_PLAIN = (18, 34)
LR_SCHEDULES = ("iterations", "plateau", "step")


@dataclass(frozen=True)
class Recipe:
    """Everything that defines a training run except where the data and outputs live."""

    name: str
    model: str
    dataset: str  # "cifar10" or "imagenet"
    batch_size: int  # global: split across processes under torchrun
    lr: float
    momentum: float = 0.9
    weight_decay: float = 1e-4
    # "iterations": /10 at `milestone_iters`, stop at `max_iters` (CIFAR, Sec. 4.2);
    # "plateau": /10 when the validation error stops improving (ImageNet, Sec. 3.4);
    # "step": /10 at `milestone_epochs` of STEP_SCHEDULE_EPOCHS, scaled to `--epochs` (the common fixed variant).
    lr_schedule: str = "iterations"
    max_iters: int = 0
    milestone_iters: tuple[int, ...] = ()
    epochs: int = 0  # 0: derived from max_iters (CIFAR)
    milestone_epochs: tuple[int, ...] = ()
    plateau_patience: int = 5
    # ResNet-110/1202: lr `warmup_lr` until the running training error drops below `warmup_until_error`
    warmup_lr: float | None = None
    warmup_until_error: float = 0.8
    val_split: int = 0  # images held out of the train set for validation (paper: 5,000 on CIFAR)
    model_options: dict[str, Any] = field(default_factory=dict)
    paper: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (lists, not tuples) that loads under ``torch.load(weights_only=True)``."""
        data = asdict(self)
        return {key: list(value) if isinstance(value, tuple) else value for key, value in data.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        """Inverse of ``to_dict``."""
        data = dict(data)
        for key in ("milestone_iters", "milestone_epochs"):
            data[key] = tuple(data.get(key, ()))
        return cls(**data)

    def with_overrides(self, **overrides: Any) -> Recipe:
        """A copy with the given fields replaced (``None`` values are ignored)."""
        return replace(self, **{key: value for key, value in overrides.items() if value is not None})


def _cifar(kind: str, depth: int) -> Recipe:
    deep = depth >= 110
    return Recipe(
        name=f"cifar10_{kind}{depth}",
        model=f"cifar_{kind}{depth}",
        dataset="cifar10",
        batch_size=128,
        lr=0.1,
        lr_schedule="iterations",
        max_iters=64_000,
        milestone_iters=(32_000, 48_000),
        warmup_lr=0.01 if deep and kind == "resnet" else None,
        paper="Sec. 4.2, Table 6, Fig. 6" + ("; warm-up at 0.01 (footnote 5)" if deep and kind == "resnet" else ""),
    )


def _imagenet(kind: str, depth: int) -> Recipe:
    return Recipe(
        name=f"imagenet_{kind}{depth}",
        model=f"{kind}{depth}",
        dataset="imagenet",
        batch_size=256,
        lr=0.1,
        lr_schedule="plateau",
        epochs=120,  # the paper trains up to 60e4 iterations of 256 images, about 120 epochs
        milestone_epochs=(30, 60),  # of STEP_SCHEDULE_EPOCHS, used by `--lr-schedule step`
        paper="Sec. 3.4, Tables 2-4, Fig. 4",
    )


STEP_SCHEDULE_EPOCHS = 90  # the fixed variant's length, /10 at milestone_epochs (torchvision's reference recipe)

RECIPES: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in (
        *(_cifar("resnet", depth) for depth in CIFAR_DEPTHS_RESNET),
        *(_cifar("plain", depth) for depth in CIFAR_DEPTHS_PLAIN),
        *(_imagenet("resnet", depth) for depth in IMAGENET_DEPTHS_RESNET),
        *(_imagenet("plain", depth) for depth in IMAGENET_DEPTHS_PLAIN),
    )
}


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name``; a clear UsageError lists the valid names."""
    try:
        return RECIPES[name]
    except KeyError:
        raise UsageError(f"unknown recipe {name!r}; choose from: {', '.join(RECIPES)}") from None
