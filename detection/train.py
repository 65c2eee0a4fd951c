"""Train Faster R-CNN (C4 or FPN) on COCO from a classification checkpoint of ``training`` (or from scratch).

    python -m detection.train --recipe coco_resnet50_c4 --coco-root /data/coco \\
        --backbone-checkpoint runs/r50/checkpoints/last.pt --output-dir runs/det_r50
    torchrun --nproc_per_node 8 -m detection.train ...   # DDP

The loop, logs, checkpoints and ``--resume`` are the shared engine's (``training.engine``), the same as
``python -m training.train``; this file holds what is detection-specific: COCO data, the detector and its losses.
After every epoch the detector is scored with COCOeval on the recipe's test split (and on the held-out
``--val-split`` images, which then pick ``best.pt``).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from detection.checkpoint import FORMAT, detector_from_checkpoint, load_backbone, load_detection_checkpoint
from detection.data import CocoDetectionDataset, DetectionBatches
from detection.model import build_detector, evaluating, fresh_backbone, prepare_backbone
from detection.predict import coco_metrics
from detection.recipes import RECIPES, DetectionRecipe, get_recipe
from detection.schedule import WarmupStepSchedule
from detection.settings import COCO_ENV, DetectionTrainOptions, add_coco_root_argument
from toolkit import cli
from toolkit.errors import UsageError
from training import distributed, engine, flags
from training.plot import plot_losses
from training.run_folder import RunFolder

SUBSET_SEED = 0  # fixed, so --val-split holds out the same images whatever --seed is


def build_parser() -> argparse.ArgumentParser:
    """The command line: the shared run flags, the backbone source, and every recipe field as a typed flag."""
    parser = argparse.ArgumentParser(
        prog="python -m detection.train",
        description="Train Faster R-CNN on COCO. Recipes: " + ", ".join(RECIPES),
        formatter_class=cli.HelpFormatter,
    )
    parser.add_argument(
        "--recipe", choices=sorted(RECIPES), help=f"detection recipe (default: {DetectionTrainOptions.recipe})"
    )
    add_coco_root_argument(parser)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--backbone-checkpoint", help="classification checkpoint written by training.train")
    source.add_argument(
        "--from-scratch", action="store_true", default=None, help="random backbone (--arch or the recipe's)"
    )
    flags.add_run_arguments(parser)
    # --batch-size and --lr are the shared run flags: the recipe's base_lr is the lr at base_batch_size, scaled
    # linearly to the batch unless --lr sets the lr itself
    flags.add_recipe_arguments(parser, DetectionRecipe, skip=("name", "batch_size", "base_lr"))
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """CLI: parse the flags (``--resume`` alone takes the rest from the run folder), train; the last metrics row."""
    args = build_parser().parse_args(argv)
    args.recipe_fields = flags.recipe_overrides(args, DetectionRecipe)
    if not args.coco_root and not args.resume:
        raise UsageError(
            f"--coco-root is required (the folder holding annotations/ and the split folders), or set {COCO_ENV}"
        )
    recorded = engine.recorded_options(args.output_dir, load_detection_checkpoint) if args.resume else None
    return train(flags.options_from_args(DetectionTrainOptions, args, recorded))


def train(options: DetectionTrainOptions) -> dict[str, Any]:
    """Train (one process, or one rank under ``torchrun``); returns the last epoch's metrics row."""
    context = distributed.setup(options.device, fixed_input_sizes=False)  # images differ in size
    try:
        return _train(options, context)
    finally:
        distributed.cleanup()


def _train(options: DetectionTrainOptions, context: distributed.Context) -> dict[str, Any]:
    run = RunFolder(options.output_dir)
    resumed, overrides = engine.start(options, options.recipe, run, load_detection_checkpoint)
    recipe = _recipe(options, resumed)
    engine.seed_process(overrides.get("seed", 0), context)
    train_set, val_set, test_set = _datasets(options.coco_root, recipe, overrides, options.max_eval_samples)
    model, backbone, recipe = _model(options, recipe, resumed, train_set.categories.num_classes)
    task = build_task(options, recipe, model, backbone, (train_set, val_set, test_set), overrides, context)
    plan = engine.Plan(
        math.ceil(recipe.max_iters / task.steps_per_epoch),
        recipe.max_iters,
        options.log_every,
        options.stop_after_epochs,
    )
    if context.is_main:
        print(
            f"training {recipe.name} ({recipe.arch}, {recipe.design}) on {len(train_set)} images, batch "
            f"{recipe.batch_size}, lr {task.schedule.base_lr:g}, {recipe.max_iters} iterations ({plan.epochs} "
            f"epochs), lr steps at {recipe.milestones()}, output {run.root}",
            flush=True,
        )
    row = engine.fit(task, plan, run, context, resumed)
    if context.is_main:
        plot_losses(run.root, run.root / "loss.png")
        print(f"evaluate with: python detection/eval_coco.py --checkpoint {run.last} --coco-root {options.coco_root}")
    return row


def _recipe(options: DetectionTrainOptions, resumed: dict[str, Any] | None) -> DetectionRecipe:
    """The named (or resumed) recipe with the fields given now; a new short run keeps its warm-up to a quarter."""
    given = options.recipe_fields
    if resumed is None:
        recipe = get_recipe(options.recipe).override(**given)
        if "max_iters" in given and "warmup_iters" not in given:
            recipe = recipe.override(warmup_iters=min(recipe.warmup_iters, max(1, recipe.max_iters // 4)))
        return recipe
    return DetectionRecipe.from_dict(resumed["recipe"]).override(**given)


def _datasets(
    coco_root: Path, recipe: DetectionRecipe, options: dict[str, Any], max_eval: int | None
) -> tuple[CocoDetectionDataset, CocoDetectionDataset | None, CocoDetectionDataset]:
    """Training images (minus the held-out validation ones) with flips, and the evaluation sets."""
    train = CocoDetectionDataset(coco_root, recipe.train_split, recipe.horizontal_flip, options.get("seed", 0))
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(SUBSET_SEED)).tolist()
    held_out = options.get("val_split") or 0
    if not 0 <= held_out < len(train):
        raise UsageError(f"--val-split must be in [0, {len(train)}), got {held_out}")
    val_ids = sorted(train.image_ids[index] for index in order[:held_out])
    train_ids = sorted(train.image_ids[index] for index in order[held_out:])[: options.get("max_train_samples")]
    test = CocoDetectionDataset(coco_root, recipe.test_split)
    val = CocoDetectionDataset(coco_root, recipe.train_split).subset(val_ids[:max_eval]) if held_out else None
    return train.subset(train_ids), val, test.subset(test.image_ids[:max_eval])


def _model(
    options: DetectionTrainOptions, recipe: DetectionRecipe, resumed: dict[str, Any] | None, num_classes: int
) -> tuple[nn.Module, dict[str, Any], DetectionRecipe]:
    """The detector, what its checkpoint keeps about the backbone, and the recipe (whose ``arch`` a backbone
    checkpoint sets), from a resumed run, a classification checkpoint or scratch."""
    if resumed is not None:
        model, _ = detector_from_checkpoint(resumed)
        kept = {key: resumed[key] for key in ("arch", "model_options", "image_mean", "image_std", "backbone")}
        return model, kept, recipe
    if options.backbone_checkpoint:
        net, backbone = load_backbone(options.backbone_checkpoint)
        arch = options.recipe_fields.get("arch")
        if arch and arch != backbone["arch"]:
            raise UsageError(f"--arch {arch} disagrees with the backbone checkpoint's {backbone['arch']}")
        recipe = recipe.override(arch=backbone["arch"])
        net = prepare_backbone(net, recipe)
    elif options.from_scratch:
        backbone = {"arch": recipe.arch, "model_options": {}, "image_mean": None, "image_std": None}
        backbone["backbone"] = "scratch"
        net = fresh_backbone(recipe.arch, {}, recipe)
    else:
        raise UsageError(
            "say where the backbone comes from: --backbone-checkpoint FILE (a classification checkpoint written by "
            "`python -m training.train`) or --from-scratch"
        )
    model = build_detector(recipe, num_classes, net, backbone["image_mean"], backbone["image_std"])
    backbone |= {"image_mean": list(model.transform.image_mean), "image_std": list(model.transform.image_std)}
    return model, backbone, recipe


Batch = tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]


def loss_step(
    train_model: nn.Module, optimizer: torch.optim.Optimizer, context: distributed.Context
) -> Callable[[Batch], engine.StepStats]:
    """One SGD step on the sum of Faster R-CNN's four losses; the statistics are each loss summed over images. A
    loss that is not finite on any rank stops every rank at the same step."""

    def step(batch: Batch) -> engine.StepStats:
        images, targets = batch
        losses = train_model(images, targets)
        loss = sum(losses.values())
        if not distributed.all_true(torch.isfinite(loss), context):
            raise UsageError(f"the loss stopped being finite (rank {context.rank}: {loss.item()}); lower --lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        count = torch.tensor(float(len(images)), device=loss.device)
        return {"loss": loss.detach() * count, **{k: v.detach() * count for k, v in losses.items()}, "images": count}

    return step


def build_task(
    options: DetectionTrainOptions,
    recipe: DetectionRecipe,
    model: nn.Module,
    backbone: dict[str, Any],
    datasets: tuple[CocoDetectionDataset, CocoDetectionDataset | None, CocoDetectionDataset],
    overrides: dict[str, Any],
    context: distributed.Context,
) -> engine.Task:
    """The detection side of the engine: SGD on the trainable parameters, warm-up + steps, losses, COCOeval."""
    train_set, val_set, test_set = datasets
    per_rank = engine.batch_per_rank(recipe.batch_size, context)
    model.to(context.device)
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    base_lr = overrides.get("lr") or recipe.scaled_lr()
    optimizer = torch.optim.SGD(parameters, lr=base_lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    train_model = distributed.wrap(model, context, sync_batchnorm=recipe.norm == "batch")
    batches = DetectionBatches(train_set, per_rank, context, options.workers)

    def evaluate() -> dict[str, float]:
        sets = {"val": val_set, "test": test_set} if val_set is not None else {"test": test_set}
        metrics: dict[str, float] = {}
        with evaluating(model, recipe):
            for name, dataset in sets.items():
                metrics |= coco_metrics(model, dataset, context, name, options.workers)
        return metrics

    def describe() -> dict[str, Any]:
        categories = train_set.categories
        return {
            **backbone,
            "recipe": recipe.to_dict(),
            "category_ids": categories.category_ids,
            "category_names": categories.names,
        }

    return engine.Task(
        model=model,
        optimizer=optimizer,
        schedule=WarmupStepSchedule(optimizer, recipe, base_lr),
        epoch_batches=batches.epoch,
        steps_per_epoch=len(batches),
        step=loss_step(train_model, optimizer, context),
        evaluate=evaluate,
        checkpoint_format=FORMAT,
        describe=describe,
        selection=engine.Selection("val_AP", lower_is_better=False) if val_set is not None else None,
        train_module=train_model,
        run_info={"overrides": overrides, "options": options.recorded()},
    )


if __name__ == "__main__":
    cli.entry_point(main)  # a UsageError from the COCO evaluation it runs: one line, exit code 2
