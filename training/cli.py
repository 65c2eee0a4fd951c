"""Command-line flags every resnet-lab tool names the same way, and recipe fields as typed flags."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.errors import UsageError

WORKERS = 4  # data-loading processes per training or evaluation process, in every tool
COCO_ENV = "RESNET_LAB_COCO"  # where --coco-root points when it is not given
# The flags of ``add_run_arguments`` that change a run; on --resume the checkpoint's values hold unless given again.
RUN_OPTIONS = ("batch_size", "lr", "seed", "max_train_samples", "val_split")


USAGE_EXIT_CODE = 2  # what argparse exits with on a bad flag; a UsageError exits the same way


def entry_point(main: Callable[[], object]) -> None:
    """Run a command's ``main()``: a ``UsageError`` becomes one line on stderr (``error: ...``) and exit code 2."""
    try:
        main()
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(USAGE_EXIT_CODE) from None


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """``--help`` shows each flag's default once and keeps the description's line breaks (usage examples).

    A real default is appended as ``(default: VALUE)``. An unset one (None, off, empty) is not shown: where leaving
    the flag out means something, its help ends with ``(default: WHAT)`` in words.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        unset = action.default is None or action.default is False or action.default == ""
        if unset or "(default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    """``--device`` and ``--workers``."""
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda if available)")
    parser.add_argument(
        "--workers", type=int, default=WORKERS, help=f"data-loading processes per process (default: {WORKERS})"
    )


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """``--max-eval-samples``."""
    parser.add_argument(
        "--max-eval-samples", type=int, help="evaluate on the first N images only, for smoke runs (default: all)"
    )


def add_coco_root_argument(parser: argparse.ArgumentParser) -> None:
    """``--coco-root``, read from ``$RESNET_LAB_COCO`` when not given."""
    current = os.environ.get(COCO_ENV)
    parser.add_argument(
        "--coco-root",
        default=current,
        help="COCO folder holding annotations/ and the split folders "
        f"(default: ${COCO_ENV}, {'now ' + current if current else 'unset now'})",
    )


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """What both trainers take (``add_run_arguments`` makes one flag of each). None: the recipe's value."""

    output_dir: Path
    resume: bool = False  # continue OUTPUT_DIR/checkpoints/last.pt, with the options it recorded
    batch_size: int | None = None
    lr: float | None = None
    seed: int | None = None
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    val_split: int | None = None
    log_every: int = 20
    stop_after_epochs: int | None = None
    device: str | None = None
    workers: int = WORKERS

    def recorded(self) -> dict[str, Any]:
        """The options a checkpoint keeps, so that ``--resume`` alone continues the run (plain values)."""
        per_invocation = {"output_dir", "resume", "stop_after_epochs"}
        return {
            name: str(value) if isinstance(value, Path) else value
            for name, value in dataclasses.asdict(self).items()
            if name not in per_invocation
        }


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
    add_eval_arguments(parser)
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
    add_device_arguments(parser)
    parser.set_defaults(workers=None)  # unset, so a resumed run keeps its own


def run_options(options: RunOptions, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """The run-changing options that are set: ``RUN_OPTIONS`` and a trainer's ``extra`` ones."""
    return {name: getattr(options, name) for name in RUN_OPTIONS + extra if getattr(options, name) is not None}


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
