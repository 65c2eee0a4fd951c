"""Learning-rate schedules of the paper: iteration milestones with warm-up (CIFAR), plateau or steps (ImageNet)."""

from __future__ import annotations

from typing import Any

import torch
from torch.optim.lr_scheduler import ReduceLROnPlateau

from .engine import Schedule
from .recipes import Recipe

WARMUP_SMOOTHING = 0.9  # running training error: exponential average over roughly the last 10 batches


class PaperSchedule(Schedule):
    """Sets the optimizer's lr before every step; ``state_dict`` round-trips under ``weights_only=True``."""

    def __init__(self, optimizer: torch.optim.Optimizer, recipe: Recipe, total_steps: int, milestones: list[int]):
        super().__init__(optimizer)
        self.recipe = recipe
        self.total_steps = total_steps
        self.milestones = milestones  # in steps ("iterations") or epochs ("step")
        self.warming_up = recipe.warmup_lr is not None
        self.running_error = 1.0
        self.plateau = None
        if recipe.lr_schedule == "plateau":
            self.plateau = ReduceLROnPlateau(optimizer, mode="min", factor=0.1, patience=recipe.plateau_patience)
        self.set_lr(recipe.warmup_lr if self.warming_up else recipe.lr)

    def before_step(self, step: int, epoch: int) -> None:
        """Set the lr for global step ``step`` (0-based) of ``epoch``."""
        if self.plateau is not None:
            return  # ReduceLROnPlateau owns the lr between epochs
        if self.warming_up:
            self.set_lr(self.recipe.warmup_lr)
            return
        if self.recipe.lr_schedule == "iterations":
            drops = sum(step >= milestone for milestone in self.milestones)
        else:
            drops = sum(epoch >= milestone for milestone in self.milestones)
        self.set_lr(self.recipe.lr * 0.1**drops)

    @property
    def needs_step_stats(self) -> bool:
        """Each batch's training error is needed during warm-up only."""
        return self.warming_up

    def after_step(self, stats: dict[str, float], step: int) -> None:
        """End warm-up once the running training error is below the threshold (or at the first milestone)."""
        if not self.warming_up:
            return
        if "train_error" in stats:
            self.running_error = WARMUP_SMOOTHING * self.running_error + (1 - WARMUP_SMOOTHING) * stats["train_error"]
        first_milestone = self.milestones[0] if self.milestones else self.total_steps
        if self.running_error < self.recipe.warmup_until_error or step + 1 >= first_milestone:
            self.warming_up = False

    def after_epoch(self, val_error: float) -> None:
        """Feed the plateau detector."""
        if self.plateau is not None:
            self.plateau.step(val_error)

    def state_dict(self) -> dict[str, Any]:
        """What resuming needs."""
        return {
            "warming_up": self.warming_up,
            "running_error": self.running_error,
            "lr": self.lr,
            "plateau": self.plateau.state_dict() if self.plateau is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict``."""
        self.warming_up = bool(state["warming_up"])
        self.running_error = float(state["running_error"])
        if self.plateau is not None and state.get("plateau") is not None:
            self.plateau.load_state_dict(state["plateau"])
        self.set_lr(float(state["lr"]))
