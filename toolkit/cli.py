"""The entry point of every resnet-lab command (a ``UsageError`` is one line and exit code 2), its help format,
and the flags every tool names the same way."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from toolkit.errors import UsageError

WORKERS = 4  # data-loading processes per training or evaluation process, in every tool
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
