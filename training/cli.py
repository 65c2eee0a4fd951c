"""Command-line flags every resnet-lab tool names the same way, and recipe fields as typed flags."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

WORKERS = 4  # data-loading processes per training or evaluation process, in every tool


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """``--help`` shows every default and keeps the description's line breaks (usage examples)."""


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    """``--device`` and ``--workers``."""
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda if available)")
    parser.add_argument("--workers", type=int, default=WORKERS, help="data-loading processes per process")


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """``--max-eval-samples``."""
    parser.add_argument("--max-eval-samples", type=int, help="evaluate on the first N images only (smoke runs)")


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """What both trainers share: where the run goes, resuming, length, data subsets, logging, device."""
    parser.add_argument("--output-dir", required=True, type=Path, help="metrics.jsonl, train_log.jsonl, checkpoints/")
    parser.add_argument("--resume", action="store_true", help="continue from OUTPUT/checkpoints/last.pt")
    parser.add_argument("--batch-size", type=int, help="global batch, split over processes (unset: the recipe's)")
    parser.add_argument("--lr", type=float, help="base learning rate (unset: the recipe's)")
    parser.add_argument("--seed", type=int, help="seed for initialisation, order and augmentation (unset: 0)")
    parser.add_argument("--max-train-samples", type=int, help="train on a fixed subset of this many images")
    add_eval_arguments(parser)
    parser.add_argument(
        "--val-split",
        type=int,
        help="hold out N training images as validation data: they pick checkpoints/best.pt (without it, no best.pt)",
    )
    parser.add_argument("--log-every", type=int, default=20, help="steps between train_log.jsonl rows")
    parser.add_argument(
        "--stop-after-epochs", type=int, help="end this invocation after N more epochs; --resume goes on"
    )
    add_device_arguments(parser)


def _flag_type(annotation: Any) -> tuple[type, bool]:
    """(element type, is a tuple) of a recipe field's annotation; ``X | None`` counts as ``X``."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        annotation = next(arg for arg in typing.get_args(annotation) if arg is not type(None))
    if typing.get_origin(annotation) is tuple:
        return typing.get_args(annotation)[0], True
    return annotation, False


def add_recipe_arguments(parser: argparse.ArgumentParser, recipe_class: type, skip: tuple[str, ...] = ()) -> None:
    """One typed flag per recipe field (``--anchor-sizes 16 24 32``); unset flags keep the recipe's value."""
    group = parser.add_argument_group("recipe fields (each overrides the recipe's value)")
    hints = typing.get_type_hints(recipe_class)
    for field in dataclasses.fields(recipe_class):
        if field.name in skip:
            continue
        kind, is_tuple = _flag_type(hints[field.name])
        flag = "--" + field.name.replace("_", "-")
        help_text = f"(unset: the recipe's; {recipe_class.__name__} default {_shown(field.default)})"
        if kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            nargs = "+" if is_tuple else None
            group.add_argument(flag, type=kind, nargs=nargs, metavar=kind.__name__.upper(), help=help_text)


def _shown(value: Any) -> str:
    return " ".join(map(str, value)) if isinstance(value, tuple) else str(value)


def recipe_overrides(args: argparse.Namespace, recipe_class: type) -> dict[str, Any]:
    """The recipe fields given on the command line (tuples as tuples)."""
    given = {}
    for field in dataclasses.fields(recipe_class):
        value = getattr(args, field.name, None)
        if value is not None:
            given[field.name] = tuple(value) if isinstance(value, list) else value
    return given
