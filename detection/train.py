"""Train Faster R-CNN (C4 or FPN) on COCO from a classification checkpoint of training/ (or from scratch).

    python detection/train.py --coco-root ../shared/data/coco --backbone-checkpoint runs/r50/checkpoint.pt \\
        --output-dir runs/det_r50 --recipe coco_resnet50_c4
    torchrun --nproc_per_node 8 detection/train.py ...   # DDP when WORLD_SIZE > 1
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python detection/train.py`: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler  # noqa: E402
from tqdm import tqdm  # noqa: E402

from detection.checkpoint import (  # noqa: E402
    detector_from_checkpoint,
    load_backbone,
    load_detection_checkpoint,
    save_detection_checkpoint,
)
from detection.data import CocoDetectionDataset, collate, train_transforms  # noqa: E402
from detection.model import build_detector, fresh_backbone, prepare_backbone  # noqa: E402
from detection.plots import plot_losses  # noqa: E402
from detection.recipes import RECIPES, DetectionRecipe, get_recipe  # noqa: E402

CHECKPOINT_NAME = "checkpoint.pt"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line; recipe fields can be overridden one by one with --set KEY=VALUE."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--recipe", default="coco_resnet50_c4", choices=sorted(RECIPES))
    parser.add_argument("--coco-root", default=os.environ.get("RESNET_LAB_COCO"), help="COCO folder (standard layout)")
    parser.add_argument("--split", default=None, help="training split (default: the recipe's train_split)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--backbone-checkpoint", help="classification checkpoint written by training/")
    source.add_argument("--from-scratch", action="store_true", help="random backbone (needs --arch or the recipe's)")
    parser.add_argument("--arch", default=None, help="backbone for --from-scratch (e.g. resnet50, cifar_resnet20)")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--resume", nargs="?", const="auto", default=None, help="checkpoint to resume (bare: latest)")
    parser.add_argument("--batch-size", type=int, default=None, help="total over processes (default: recipe)")
    parser.add_argument("--lr", type=float, default=None, help="default: 0.02 x batch / 16")
    parser.add_argument("--max-iters", type=int, default=None, help="default: recipe (lr steps scale with it)")
    parser.add_argument("--warmup-iters", type=int, default=None, help="linear warm-up length (default: recipe)")
    parser.add_argument("--min-size", type=int, nargs="+", default=None, help="training shorter sides (multi-scale)")
    parser.add_argument("--max-size", type=int, default=None, help="longest side cap")
    parser.add_argument("--max-train-images", type=int, default=None, help="train on the first N images only")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any recipe field")
    parser.add_argument("--checkpoint-every", type=int, default=1000, help="iterations between checkpoints")
    parser.add_argument("--log-every", type=int, default=1, help="iterations between metrics.jsonl lines")
    parser.add_argument("--workers", type=int, default=2, help="data loading processes")
    parser.add_argument("--seed", type=int, default=0, help="sampling and initialisation seed")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    return parser.parse_args(argv)


def recipe_from_args(args: argparse.Namespace) -> DetectionRecipe:
    """The named recipe with CLI overrides applied."""
    recipe = get_recipe(args.recipe).override(
        arch=args.arch,
        batch_size=args.batch_size,
        max_iters=args.max_iters,
        warmup_iters=args.warmup_iters,
        min_size_train=tuple(args.min_size) if args.min_size else None,
        min_size_test=args.min_size[-1] if args.min_size else None,
        max_size=args.max_size,
    )
    if args.max_iters and args.warmup_iters is None:  # short runs: keep the warm-up a quarter of the run at most
        recipe = dataclasses.replace(recipe, warmup_iters=min(recipe.warmup_iters, max(1, args.max_iters // 4)))
    fields = {field.name: field for field in dataclasses.fields(DetectionRecipe)}
    for item in args.set:
        key, separator, text = item.partition("=")
        if not separator or key not in fields:
            raise SystemExit(f"--set expects KEY=VALUE with KEY one of: {', '.join(fields)}; got {item!r}")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text  # plain strings such as norm=batch
        recipe = dataclasses.replace(recipe, **{key: tuple(value) if isinstance(value, list) else value})
    return recipe


def lr_factor(iteration: int, recipe: DetectionRecipe, milestones: list[int]) -> float:
    """Linear warm-up, then a step schedule (x lr_gamma at each milestone)."""
    warmup = 1.0
    if iteration < recipe.warmup_iters:
        alpha = iteration / recipe.warmup_iters
        warmup = recipe.warmup_factor * (1 - alpha) + alpha
    return warmup * recipe.lr_gamma ** sum(iteration >= step for step in milestones)


def setup_distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank); a process group only when torchrun says WORLD_SIZE > 1."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return 0, 1, 0
    dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    return dist.get_rank(), world_size, local_rank


def build_model(args: argparse.Namespace, recipe: DetectionRecipe, num_classes: int) -> tuple[Any, dict, Any]:
    """Detector from a classification checkpoint or from scratch; returns (model, backbone info, recipe)."""
    if args.backbone_checkpoint:
        net, info = load_backbone(args.backbone_checkpoint)
        if args.arch and args.arch != info["arch"]:
            raise SystemExit(f"--arch {args.arch} disagrees with the backbone checkpoint's {info['arch']}")
        recipe = dataclasses.replace(recipe, arch=info["arch"])
        net = prepare_backbone(net, recipe)
    elif args.from_scratch:
        info = {"arch": recipe.arch, "model_options": {}, "image_mean": None, "image_std": None, "backbone": "scratch"}
        net = fresh_backbone(recipe.arch, {}, recipe)
    else:
        raise SystemExit(
            "say where the backbone comes from: --backbone-checkpoint FILE (a classification checkpoint written by "
            "`python -m training.train`) or --from-scratch"
        )
    model = build_detector(recipe, num_classes, net, info["image_mean"], info["image_std"])
    info["image_mean"] = list(model.transform.image_mean)
    info["image_std"] = list(model.transform.image_std)
    return model, info, recipe


def main(argv: list[str] | None = None) -> Path:
    """Train; returns the path of the final checkpoint."""
    args = parse_args(argv)
    if not args.coco_root:
        raise SystemExit("--coco-root is required (the folder holding annotations/ and the split folders)")
    rank, world_size, local_rank = setup_distributed()
    device = torch.device(f"cuda:{local_rank}" if args.device == "cuda" else args.device)
    if device.type == "cpu":
        torch.set_flush_denormal(True)  # ~10x slower CPU training otherwise
    torch.manual_seed(args.seed + rank)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    resume_path = None
    if args.resume:
        resume_path = output_dir / CHECKPOINT_NAME if args.resume == "auto" else Path(args.resume)
    resumed = load_detection_checkpoint(resume_path) if resume_path else None

    recipe = recipe_from_args(args)
    if resumed is not None:
        recipe = DetectionRecipe.from_dict(resumed["recipe"]).override(max_iters=args.max_iters)
    dataset = CocoDetectionDataset(
        args.coco_root, args.split or recipe.train_split, train_transforms(recipe.horizontal_flip)
    )
    if args.max_train_images:
        dataset.subset(args.max_train_images)

    if resumed is not None:
        model, _ = detector_from_checkpoint(resumed)
        info = {key: resumed[key] for key in ("arch", "model_options", "image_mean", "image_std", "backbone")}
        if resumed["category_ids"] != dataset.categories.category_ids:
            raise SystemExit(f"{resume_path} was trained on other categories than {args.coco_root}")
    else:
        model, info, recipe = build_model(args, recipe, dataset.categories.num_classes)
    model.to(device)

    if recipe.batch_size % world_size:
        raise SystemExit(f"batch size {recipe.batch_size} is not divisible by {world_size} processes")
    per_process_batch = recipe.batch_size // world_size
    lr = args.lr or recipe.scaled_lr()
    milestones = recipe.milestones()
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.SGD(parameters, lr=lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(it, recipe, milestones))
    start_iteration = 0
    if resumed is not None:
        optimizer.load_state_dict(resumed["optimizer"])
        scheduler.load_state_dict(resumed["scheduler"])
        start_iteration = int(resumed["iteration"])
        torch.set_rng_state(resumed["rng"])

    train_model = model
    if world_size > 1:
        if recipe.norm == "batch" and device.type == "cuda":  # trainable BN: statistics over the whole batch
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[local_rank] if device.type == "cuda" else None
        )

    def state(iteration: int) -> dict[str, Any]:
        return {
            **info,
            "recipe": recipe.to_dict(),
            "model": model.state_dict(),
            "category_ids": dataset.categories.category_ids,
            "category_names": dataset.categories.names,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "iteration": iteration,
            "rng": torch.get_rng_state(),
        }

    log_path = output_dir / "metrics.jsonl"
    if rank == 0:
        print(
            f"training {recipe.name} ({info['arch']}, {recipe.design}) on {len(dataset)} images, "
            f"batch {recipe.batch_size}, lr {lr:g}, {recipe.max_iters} iterations, lr steps at {milestones}"
        )
    model.train()
    iteration = start_iteration
    epoch = start_iteration * recipe.batch_size // max(1, len(dataset))
    progress = tqdm(total=recipe.max_iters, initial=iteration, disable=rank != 0, desc="train", unit="it")
    started = time.time()
    while iteration < recipe.max_iters:
        if world_size > 1:
            sampler = DistributedSampler(dataset, shuffle=True, seed=args.seed)
            sampler.set_epoch(epoch)
        else:
            sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(args.seed + epoch))
        loader = DataLoader(
            dataset, batch_size=per_process_batch, sampler=sampler, num_workers=args.workers, collate_fn=collate
        )
        for images, targets in loader:
            if iteration >= recipe.max_iters:
                break
            images = [image.to(device) for image in images]
            targets = [{"boxes": t["boxes"].to(device), "labels": t["labels"].to(device)} for t in targets]
            losses = train_model(images, targets)
            loss = sum(losses.values())
            if not math.isfinite(loss.item()):
                raise SystemExit(f"loss became {loss.item()} at iteration {iteration}; lower --lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            iteration += 1
            progress.update(1)
            progress.set_postfix(loss=f"{loss.item():.3f}")
            if rank == 0 and (iteration % args.log_every == 0 or iteration == recipe.max_iters):
                record = {
                    "iteration": iteration,
                    "epoch": epoch,
                    "lr": optimizer.param_groups[0]["lr"],
                    "loss": loss.item(),
                    **{name: value.item() for name, value in losses.items()},
                    "seconds": round(time.time() - started, 3),
                }
                with log_path.open("a") as stream:
                    stream.write(json.dumps(record) + "\n")
            if rank == 0 and iteration % args.checkpoint_every == 0:
                save_detection_checkpoint(state(iteration), output_dir / CHECKPOINT_NAME)
        epoch += 1
    progress.close()
    final = output_dir / CHECKPOINT_NAME
    if rank == 0:
        save_detection_checkpoint(state(iteration), final)
        if log_path.is_file():
            plot_losses(log_path, output_dir / "loss.png")
        print(f"saved {final}; evaluate with: python detection/eval_coco.py --checkpoint {final} --coco-root DIR")
    if world_size > 1:
        dist.barrier()
        dist.destroy_process_group()
    return final


if __name__ == "__main__":
    main()
