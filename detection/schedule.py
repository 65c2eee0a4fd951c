"""The detection lr schedule: linear warm-up, then steps (x ``lr_gamma`` at each milestone), per iteration."""

from __future__ import annotations

import torch

from training.engine import Schedule

from .recipes import DetectionRecipe


class WarmupStepSchedule(Schedule):
    """lr = base_lr x warm-up factor x lr_gamma^(milestones passed), set before every step."""

    def __init__(self, optimizer: torch.optim.Optimizer, recipe: DetectionRecipe, base_lr: float) -> None:
        super().__init__(optimizer)
        self.recipe, self.base_lr = recipe, base_lr
        self.milestones = recipe.milestones()
        self.set_lr(base_lr * self.factor(0))

    def factor(self, step: int) -> float:
        """Linear warm-up from ``warmup_factor`` to 1 over ``warmup_iters``, times the step drops."""
        warmup = 1.0
        if step < self.recipe.warmup_iters:
            alpha = step / self.recipe.warmup_iters
            warmup = self.recipe.warmup_factor * (1 - alpha) + alpha
        return warmup * self.recipe.lr_gamma ** sum(step >= milestone for milestone in self.milestones)

    def before_step(self, step: int, epoch: int) -> None:
        """The lr of global step ``step``."""
        self.set_lr(self.base_lr * self.factor(step))
