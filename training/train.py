"""Train a network with one of the paper's recipes: ``python -m training.train --recipe NAME --data-dir DIR ...``.

Works as one process or under ``torchrun --nproc_per_node=N -m training.train ...`` (DDP; only rank 0 writes).
"""

from __future__ import annotations

import argparse
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from models import create_model, model_info
from models.preprocess import NormalizedClassifier

from . import distributed, runlog
from .checkpoint import load_checkpoint, save_checkpoint
from .data import TrainData, cifar10_data, imagenet_data
from .engine import GraphedTrainStep, count_errors, train_epoch
from .recipes import LR_SCHEDULES, RECIPES, Recipe, get_recipe
from .schedule import PaperSchedule

STEP_SCHEDULE_EPOCHS = 90  # the fixed variant: /10 at epochs 30 and 60 of 90 (torchvision's reference recipe)
# Command-line overrides that change a run; on --resume the checkpoint's values hold unless given again.
RUN_OPTIONS = ("epochs", "batch_size", "lr", "max_train_samples", "seed", "val_split", "lr_schedule")


def build_parser() -> argparse.ArgumentParser:
    """The command line; ``--help`` lists every recipe."""
    parser = argparse.ArgumentParser(
        prog="python -m training.train",
        description="Train with the paper's recipes. Recipes: " + ", ".join(RECIPES),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--recipe", required=True, metavar="NAME", help="one of: " + ", ".join(RECIPES))
    parser.add_argument("--data-dir", required=True, type=Path, help="CIFAR-10 python folder or ImageNet root")
    parser.add_argument("--output-dir", required=True, type=Path, help="metrics.jsonl, train_log.jsonl, checkpoints/")
    parser.add_argument("--epochs", type=int, help="shorten/lengthen the run; CIFAR milestones scale with it")
    parser.add_argument("--batch-size", type=int, help="global batch (split over processes); recipe's if unset")
    parser.add_argument("--lr", type=float, help="base learning rate; recipe's if unset")
    parser.add_argument("--lr-schedule", choices=LR_SCHEDULES, help="ImageNet: plateau (paper) or step (30/60/90)")
    parser.add_argument("--max-train-samples", type=int, help="train on a fixed random subset of this size")
    parser.add_argument("--max-eval-samples", type=int, help="evaluate on the first N test images (smoke runs)")
    parser.add_argument("--val-split", type=int, help="hold out N training images for validation (paper: 5000)")
    parser.add_argument("--seed", type=int, help="seed for init, order and augmentation (default 0)")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda if available)")
    parser.add_argument("--workers", type=int, default=8, help="ImageNet loader workers per process")
    parser.add_argument("--compile", action="store_true", help="torch.compile the training forward/backward")
    parser.add_argument(
        "--cuda-graph",
        action="store_true",
        help="capture the whole training step as a CUDA graph and replay it (single GPU; small CIFAR nets are "
        "bound by kernel launches)",
    )
    parser.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="NHWC activations (faster on CUDA and, measured, on CPU for these nets)",
    )
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True, help="bf16 autocast on CUDA")
    parser.add_argument("--log-every", type=int, default=20, help="steps between train_log.jsonl rows")
    parser.add_argument("--resume", action="store_true", help="continue from OUTPUT/checkpoints/last.pt")
    parser.add_argument(
        "--stop-after-epochs",
        type=int,
        help="end this invocation after N epochs (time-boxed sessions); --resume goes on",
    )
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
        raise SystemExit("--val-split applies to CIFAR-10; ImageNet validates on its val/ folder")
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


def rng_state() -> dict[str, Any]:
    """Every RNG's state as tensors/lists, so ``weights_only=True`` loads it."""
    version, python_state, gauss = random.getstate()
    _, numpy_keys, numpy_pos, numpy_has_gauss, numpy_gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": {"version": version, "state": torch.tensor(python_state, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "keys": torch.from_numpy(numpy_keys.astype(np.int64)),
            "pos": int(numpy_pos),
            "has_gauss": int(numpy_has_gauss),
            "gauss": float(numpy_gauss),
        },
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of ``rng_state``."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    python = state["python"]
    random.setstate((python["version"], tuple(python["state"].tolist()), python["gauss"]))
    numpy = state["numpy"]
    np.random.set_state(
        ("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"], numpy["gauss"])
    )


def seed_everything(seed: int) -> None:
    """Seed torch (all devices), python and numpy."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_data(recipe: Recipe, run: dict, args: argparse.Namespace, context: distributed.Context) -> TrainData:
    """The dataset side of the run (fails with a clear message before anything is written)."""
    if recipe.batch_size % context.world_size:
        raise SystemExit(f"batch size {recipe.batch_size} does not split over {context.world_size} processes")
    per_rank = recipe.batch_size // context.world_size
    channels_last = args.channels_last
    if recipe.dataset == "cifar10":
        return cifar10_data(
            args.data_dir,
            context,
            per_rank,
            run["seed"],
            recipe.val_split,
            run["max_train_samples"],
            args.max_eval_samples,
            channels_last,
        )
    return imagenet_data(
        args.data_dir,
        context,
        per_rank,
        run["seed"],
        run["max_train_samples"],
        args.max_eval_samples,
        channels_last,
        args.workers,
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run training; returns the last epoch's metrics row."""
    args = build_parser().parse_args(argv)
    if args.device is None or args.device == "cpu":
        torch.set_flush_denormal(True)  # denormal weights slow CPU training ~10x; harmless elsewhere
    context = distributed.setup(args.device)
    if context.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest kernels once
    try:
        return _train(args, context)
    finally:
        distributed.cleanup()


def _train(args: argparse.Namespace, context: distributed.Context) -> dict[str, Any]:
    checkpoint_dir = args.output_dir / "checkpoints"
    last_path = checkpoint_dir / "last.pt"
    overrides = {name: getattr(args, name) for name in RUN_OPTIONS if getattr(args, name) is not None}
    resumed = None
    if args.resume:
        if not last_path.is_file():
            raise SystemExit(f"--resume: no checkpoint at {last_path}; start without --resume")
        resumed = load_checkpoint(last_path, map_location="cpu")
        if resumed.get("recipe", {}).get("name") != args.recipe:
            raise SystemExit(f"--resume: {last_path} was trained with recipe {resumed.get('recipe', {}).get('name')!r}")
        overrides = {**resumed["run"]["overrides"], **overrides}
    elif last_path.exists():
        raise SystemExit(f"{last_path} exists: pass --resume to continue that run, or choose another --output-dir")

    recipe, run = resolve_run(get_recipe(args.recipe), overrides)
    seed_everything(run["seed"])
    data = load_data(recipe, run, args, context)
    epochs, total_steps, milestones = plan_steps(recipe, run["epochs"], data.steps_per_epoch)

    info = model_info(recipe.model)
    model_options = {"num_classes": info.num_classes, **recipe.model_options}
    model = create_model(recipe.model, **model_options).to(context.device)
    channels_last = args.channels_last
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
    )
    schedule = PaperSchedule(optimizer, recipe, total_steps, milestones)
    start_epoch, step, wall_time, metrics, best_error = 0, 0, 0.0, [], math.inf
    if resumed is not None:
        model.load_state_dict(resumed["model"])
        optimizer.load_state_dict(resumed["optimizer"])
        schedule.load_state_dict(resumed["scheduler"])
        start_epoch, step = int(resumed["epoch"]), int(resumed["step"])
        wall_time, metrics = float(resumed["run"]["wall_time"]), list(resumed["metrics"])
        best_error = float(resumed["run"]["best_error"])
        set_rng_state(resumed["rng"])
        if context.is_main:
            for name in (runlog.METRICS_FILE, runlog.TRAIN_LOG_FILE):
                runlog.truncate_after(args.output_dir / name, step)

    train_model: nn.Module = model
    if context.distributed:
        train_model = DistributedDataParallel(
            model, device_ids=[context.device] if context.device.type == "cuda" else None
        )
    if args.compile:
        train_model = torch.compile(train_model)
    step_function = None
    if args.cuda_graph:
        if context.device.type != "cuda" or context.distributed or args.compile:
            raise SystemExit("--cuda-graph needs one CUDA device, without torchrun and without --compile")
        step_function = GraphedTrainStep(model, optimizer, amp=args.amp)
    evaluator = NormalizedClassifier(model, data.preprocess["mean"], data.preprocess["std"]).to(context.device)
    amp = args.amp and context.device.type == "cuda"
    if context.is_main:
        args.output_dir.mkdir(parents=True, exist_ok=True)
        print(
            f"{recipe.name}: {recipe.model} on {context.device} x{context.world_size}, {epochs} epochs, "
            f"{total_steps} steps of {recipe.batch_size}, lr {recipe.lr} ({recipe.lr_schedule}, milestones "
            f"{milestones}), output {args.output_dir}",
            flush=True,
        )
    train_log = args.output_dir / runlog.TRAIN_LOG_FILE
    row: dict[str, Any] = metrics[-1] if metrics else {}
    last_epoch = epochs if args.stop_after_epochs is None else min(epochs, start_epoch + args.stop_after_epochs)
    for epoch in range(start_epoch, last_epoch):
        if step >= total_steps:
            break
        result = train_epoch(
            train_model,
            data.epoch_batches(epoch),
            data.steps_per_epoch,
            optimizer,
            schedule,
            epoch,
            step,
            total_steps,
            context,
            amp=amp,
            log_every=args.log_every,
            on_log=lambda log_row: runlog.append_row(train_log, log_row),
            step_function=step_function,
        )
        lr_used = schedule.lr
        step = result.step
        errors = {}
        for name, batches in data.eval_sets.items():
            counts = distributed.all_reduce_sum(
                count_errors(evaluator, batches(), context.device, amp, channels_last), context
            ).tolist()
            errors[f"{name}_error"] = counts[1] / counts[0]
            errors[f"{name}_top5_error"] = counts[2] / counts[0]
        selection_error = errors.get("val_error", errors["test_error"])
        schedule.after_epoch(selection_error)
        wall_time += result.seconds
        row = {
            "epoch": epoch + 1,
            "step": step,
            "train_loss": result.loss,
            "train_error": result.error,
            **errors,
            "lr": lr_used,
            "images_per_s": result.images / max(result.seconds, 1e-9),
            "epoch_time": result.seconds,
            "wall_time": wall_time,
        }
        metrics.append(row)
        is_best = selection_error < best_error
        best_error = min(best_error, selection_error)
        if context.is_main:
            state = {
                "model_name": recipe.model,
                "model_options": model_options,
                "model": model.state_dict(),
                "labels": data.labels,
                "preprocess": data.preprocess,
                "recipe": recipe.to_dict(),
                "metrics": metrics,
                "optimizer": optimizer.state_dict(),
                "scheduler": schedule.state_dict(),
                "epoch": epoch + 1,
                "step": step,
                "rng": rng_state(),
                "run": {
                    "overrides": overrides,
                    "wall_time": wall_time,
                    "best_error": best_error,
                    "world_size": context.world_size,
                    "epochs": epochs,
                    "total_steps": total_steps,
                },
            }
            save_checkpoint(state, last_path)
            if is_best:
                save_checkpoint(state, checkpoint_dir / "best.pt")
            runlog.append_row(args.output_dir / runlog.METRICS_FILE, row)
            print(
                f"epoch {epoch + 1}/{epochs} step {step}: train loss {result.loss:.4f} error {result.error:.4f}, "
                + ", ".join(f"{key} {value:.4f}" for key, value in errors.items())
                + f", lr {lr_used:g}, {row['images_per_s']:.0f} img/s, {result.seconds:.1f} s",
                flush=True,
            )
        distributed.barrier(context)
    return row


if __name__ == "__main__":
    main()
