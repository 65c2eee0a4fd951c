"""Train a classifier with one of the paper's recipes: ``python -m training.train --recipe NAME --data-dir DIR ...``.

Works as one process or under ``torchrun --nproc_per_node=N -m training.train ...`` (DDP; only rank 0 writes).
The loop, logs, checkpoints and ``--resume`` are the shared engine's (``training.engine``); this file holds what
is classification-specific: the data, the network, the SGD step and the error counting.
"""

from __future__ import annotations

import argparse
import math
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models import create_model, model_info
from models.preprocess import NormalizedClassifier
from toolkit import cli
from toolkit.errors import UsageError

from . import distributed, engine, flags
from .classifier import FORMAT, load_classifier_checkpoint
from .data import TrainData, cifar10_data, imagenet_data
from .recipes import LR_SCHEDULES, RECIPES, STEP_SCHEDULE_EPOCHS, Recipe, get_recipe
from .run_folder import RunFolder
from .schedule import PaperSchedule
from .settings import RunOptions
from .steps import GraphedTrainStep, count_errors, train_step

TRAINER_RUN_OPTIONS = ("epochs", "lr_schedule")  # run-changing flags of this trainer besides ``settings.RUN_OPTIONS``


@dataclass(frozen=True, kw_only=True)
class TrainOptions(RunOptions):
    """One classification run: the recipe, the data and how to run it (``python -m training.train`` flags)."""

    recipe: str
    data_dir: Path
    epochs: int | None = None  # None: the recipe's length
    lr_schedule: str | None = None  # None: the recipe's
    compile: bool = False
    cuda_graph: bool = False
    channels_last: bool = True
    amp: bool = True


def build_parser() -> argparse.ArgumentParser:
    """The command line; ``--help`` lists every recipe."""
    parser = argparse.ArgumentParser(
        prog="python -m training.train",
        description=textwrap.fill("Train with the paper's recipes. Recipes: " + ", ".join(RECIPES), 100),
        formatter_class=cli.HelpFormatter,
    )
    parser.add_argument(
        "--recipe", metavar="NAME", help="one of: " + ", ".join(RECIPES) + " (required unless --resume)"
    )
    parser.add_argument(
        "--data-dir", type=Path, help="CIFAR-10 python folder or ImageNet root (required unless --resume)"
    )
    parser.add_argument(
        "--epochs", type=int, help="shorten/lengthen the run; CIFAR milestones scale with it (default: the recipe's)"
    )
    parser.add_argument(
        "--lr-schedule",
        choices=LR_SCHEDULES,
        help=f"ImageNet: plateau (paper) or step (/10 at fixed epochs of {STEP_SCHEDULE_EPOCHS}, scaled to --epochs) "
        "(default: the recipe's)",
    )
    flags.add_run_arguments(parser)
    parser.add_argument(
        "--compile", action="store_true", default=None, help="torch.compile the training forward/backward"
    )
    parser.add_argument(
        "--cuda-graph",
        action="store_true",
        default=None,
        help="capture the whole training step as a CUDA graph and replay it (single GPU; small CIFAR nets are "
        "bound by kernel launches)",
    )
    parser.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        help="NHWC activations (faster on CUDA and, measured, on CPU for these nets) (default: on)",
    )
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, help="bf16 autocast on CUDA (default: on)")
    return parser


def resolve_run(recipe: Recipe, overrides: dict[str, Any]) -> tuple[Recipe, dict[str, Any]]:
    """Apply command-line overrides to a recipe; returns the recipe and the run settings not in it."""
    recipe = recipe.with_overrides(
        batch_size=overrides.get("batch_size"),
        lr=overrides.get("lr"),
        lr_schedule=overrides.get("lr_schedule"),
        val_split=overrides.get("val_split"),
    )
    run = {
        "seed": overrides.get("seed") or 0,
        "epochs": overrides.get("epochs"),
        "max_train_samples": overrides.get("max_train_samples"),
    }
    if recipe.dataset == "imagenet" and recipe.val_split:
        raise UsageError("--val-split applies to CIFAR-10; ImageNet validates on its val/ folder")
    return recipe, run


def plan_steps(recipe: Recipe, epochs: int | None, steps_per_epoch: int) -> tuple[int, int, list[int]]:
    """``(epochs, total_steps, milestones)``; milestones in steps ("iterations") or epochs ("step")."""
    if recipe.lr_schedule == "iterations":
        if epochs:
            total = epochs * steps_per_epoch
            scale = total / recipe.max_iters
            return epochs, total, [round(milestone * scale) for milestone in recipe.milestone_iters]
        epochs = math.ceil(recipe.max_iters / steps_per_epoch)
        return epochs, recipe.max_iters, list(recipe.milestone_iters)
    if recipe.lr_schedule == "step":
        epochs = epochs or STEP_SCHEDULE_EPOCHS
        milestones = [round(milestone * epochs / STEP_SCHEDULE_EPOCHS) for milestone in recipe.milestone_epochs]
        return epochs, epochs * steps_per_epoch, milestones
    epochs = epochs or recipe.epochs
    return epochs, epochs * steps_per_epoch, []


def load_data(recipe: Recipe, run: dict, options: TrainOptions, context: distributed.Context) -> TrainData:
    """The dataset side of the run (fails with a clear message before anything is written)."""
    per_rank = engine.batch_per_rank(recipe.batch_size, context)
    if recipe.dataset == "cifar10":
        return cifar10_data(
            options.data_dir,
            context,
            per_rank,
            run["seed"],
            recipe.val_split,
            run["max_train_samples"],
            options.max_eval_samples,
            options.channels_last,
        )
    return imagenet_data(
        options.data_dir,
        context,
        per_rank,
        run["seed"],
        run["max_train_samples"],
        options.max_eval_samples,
        options.channels_last,
        options.workers,
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """CLI: parse the flags (``--resume`` alone takes the rest from the run folder), train; the last metrics row."""
    args = build_parser().parse_args(argv)
    recorded = engine.recorded_options(args.output_dir, load_classifier_checkpoint) if args.resume else None
    return train(flags.options_from_args(TrainOptions, args, recorded))


def train(options: TrainOptions) -> dict[str, Any]:
    """Run training (one process, or one rank under ``torchrun``); returns the last epoch's metrics row."""
    context = distributed.setup(options.device)
    try:
        return _train(options, context)
    finally:
        distributed.cleanup()


def _train(options: TrainOptions, context: distributed.Context) -> dict[str, Any]:
    run = RunFolder(options.output_dir)
    resumed, overrides = engine.start(
        options, options.recipe, run, load_classifier_checkpoint, extra=TRAINER_RUN_OPTIONS
    )
    recipe, settings = resolve_run(get_recipe(options.recipe), overrides)
    engine.seed_process(settings["seed"], context)
    data = load_data(recipe, settings, options, context)
    epochs, total_steps, milestones = plan_steps(recipe, settings["epochs"], data.steps_per_epoch)
    task = build_task(options, recipe, data, context, total_steps, milestones)
    task.run_info = {"overrides": overrides, "options": options.recorded()}
    if context.is_main:
        print(
            f"{recipe.name}: {recipe.model} on {context.device} x{context.world_size}, {epochs} epochs, "
            f"{total_steps} steps of {recipe.batch_size}, lr {recipe.lr} ({recipe.lr_schedule}, milestones "
            f"{milestones}), output {options.output_dir}",
            flush=True,
        )
    plan = engine.Plan(epochs, total_steps, options.log_every, options.stop_after_epochs)
    return engine.fit(task, plan, run, context, resumed)


def build_task(
    options: TrainOptions,
    recipe: Recipe,
    data: TrainData,
    context: distributed.Context,
    total_steps: int,
    milestones: list[int],
) -> engine.Task:
    """The classification side of the engine: network, SGD, the paper's schedule, the step and the evaluation."""
    model_options = {"num_classes": model_info(recipe.model).num_classes, **recipe.model_options}
    model = create_model(recipe.model, **model_options).to(context.device)
    if options.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
    )
    train_model = distributed.wrap(model, context)
    if options.compile:
        train_model = torch.compile(train_model)
    amp = options.amp and context.device.type == "cuda"
    step = _step_function(options, model, train_model, optimizer, context, amp)
    evaluator = NormalizedClassifier(model, data.preprocess["mean"], data.preprocess["std"]).to(context.device)

    def evaluate() -> dict[str, float]:
        errors = {}
        for name, batches in data.eval_sets.items():
            counts = count_errors(evaluator, batches(), context.device, amp, options.channels_last)
            images, top1, top5 = distributed.all_reduce_sum(counts, context).tolist()
            errors |= {f"{name}_error": top1 / images, f"{name}_top5_error": top5 / images}
        return errors

    def describe() -> dict[str, Any]:
        return {
            "model_name": recipe.model,
            "model_options": model_options,
            "labels": data.labels,
            "preprocess": data.preprocess,
            "recipe": recipe.to_dict(),
        }

    return engine.Task(
        model=model,
        optimizer=optimizer,
        schedule=PaperSchedule(optimizer, recipe, total_steps, milestones),
        epoch_batches=data.epoch_batches,
        steps_per_epoch=data.steps_per_epoch,
        step=step,
        evaluate=evaluate,
        checkpoint_format=FORMAT,
        describe=describe,
        selection=engine.Selection("val_error") if "val" in data.eval_sets else None,
        fallback_selection_key="test_error",  # the plateau schedule follows ImageNet's val/ folder, as the paper
        train_module=train_model,
    )


def _step_function(
    options: TrainOptions,
    model: nn.Module,
    train_model: nn.Module,
    optimizer: torch.optim.Optimizer,
    context: distributed.Context,
    amp: bool,
) -> Callable[[tuple[torch.Tensor, torch.Tensor]], engine.StepStats]:
    """``(images, labels) -> statistics`` of one SGD step, eager or replayed from a CUDA graph."""
    if options.cuda_graph:
        if context.device.type != "cuda" or context.distributed or options.compile:
            raise UsageError("--cuda-graph needs one CUDA device, without torchrun and without --compile")
        graphed = GraphedTrainStep(model, optimizer, amp=amp)

        def run(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return graphed(images, labels)
    else:

        def run(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return train_step(train_model, images, labels, optimizer, amp)

    def step(batch: tuple[torch.Tensor, torch.Tensor]) -> engine.StepStats:
        images, labels = batch
        loss_sum, wrong = run(images, labels)
        return {"loss": loss_sum, "error": wrong, "images": labels.new_full((), labels.shape[0])}

    return step


if __name__ == "__main__":
    cli.entry_point(main)
