"""The trainers' command lines: ``RunOptions`` as flags (``add_run_arguments``, ``options_from_args``) and recipe
fields as typed flags (``add_recipe_arguments``, ``recipe_overrides``)."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

from toolkit import cli
from toolkit.errors import UsageError

from .settings import RunOptions

Options = typing.TypeVar("Options", bound=RunOptions)


def options_from_args(kind: type[Options], args: argparse.Namespace, recorded: dict[str, Any] | None = None) -> Options:
    """``kind`` from the flags given (an unset flag is None), over ``recorded`` (what a resumed run recorded), over
    ``kind``'s defaults; a required option nobody gave is a ``UsageError`` naming its flag."""
    hints = typing.get_type_hints(kind)
    names = {field.name for field in dataclasses.fields(kind)}
    values = {name: value for name, value in (recorded or {}).items() if name in names}
    values |= {name: value for name, value in vars(args).items() if name in names and value is not None}
    for name, value in values.items():
        if Path in typing.get_args(hints[name]) + (hints[name],) and isinstance(value, str):
            values[name] = Path(value)
    missing = [
        "--" + field.name.replace("_", "-")
        for field in dataclasses.fields(kind)
        if field.name not in values
        and field.default is dataclasses.MISSING
        and field.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise UsageError(f"{' and '.join(missing)} required (or --resume a run folder whose checkpoint recorded it)")
    return kind(**values)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """What both trainers share: where the run goes, resuming, length, data subsets, logging, device. Flags left
    out are None (``options_from_args`` fills them from a resumed run, else from ``RunOptions``' defaults)."""
    parser.add_argument("--output-dir", required=True, type=Path, help="metrics.jsonl, train_log.jsonl, checkpoints/")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUTPUT_DIR/checkpoints/last.pt with the options it recorded (flags given now win)",
    )
    parser.add_argument("--batch-size", type=int, help="global batch, split over processes (default: the recipe's)")
    parser.add_argument("--lr", type=float, help="base learning rate (default: the recipe's)")
    parser.add_argument("--seed", type=int, help="seed for initialisation, order and augmentation (default: 0)")
    parser.add_argument(
        "--max-train-samples", type=int, help="train on a fixed subset of this many images (default: all)"
    )
    cli.add_eval_arguments(parser)
    parser.add_argument(
        "--val-split",
        type=int,
        help="hold out N training images as validation data: they pick checkpoints/best.pt (default: none, so no "
        "best.pt)",
    )
    parser.add_argument(
        "--log-every", type=int, help=f"steps between train_log.jsonl rows (default: {RunOptions.log_every})"
    )
    parser.add_argument(
        "--stop-after-epochs",
        type=int,
        help="end this invocation after N more epochs; --resume goes on (default: run to the end)",
    )
    cli.add_device_arguments(parser)
    parser.set_defaults(workers=None)  # unset, so a resumed run keeps its own


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
        help_text = f"(default: the recipe's; base {recipe_class.__name__}: {_shown(field.default)})"
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
