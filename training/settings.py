"""Training's settings, typed, in one place: a run's options (``RunOptions``, which ``training.flags`` turns into
flags and a checkpoint records for ``--resume``), what torchrun tells each process through its environment
(``Launch``) and the download mirror (``RESNET_LAB_DATA_MIRROR``). The engine takes these values; only the flag
parsers know flag names."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.cli import WORKERS

MIRROR_ENV = "RESNET_LAB_DATA_MIRROR"  # a host serving the public datasets' paths, for `make data`
# The options that change a run; on resume the checkpoint's values hold unless given again.
RUN_OPTIONS = ("batch_size", "lr", "seed", "max_train_samples", "val_split")


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


def run_options(options: RunOptions, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """The run-changing options that are set: ``RUN_OPTIONS`` and a trainer's ``extra`` ones."""
    return {name: getattr(options, name) for name in RUN_OPTIONS + extra if getattr(options, name) is not None}


@dataclass(frozen=True)
class Launch:
    """Where this process sits in a ``torchrun`` job (one process alone: world 1, rank 0)."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Launch:
        """torchrun's ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``."""
        environ = os.environ if environ is None else environ
        return cls(
            world_size=int(environ.get("WORLD_SIZE", "1")),
            rank=int(environ.get("RANK", "0")),
            local_rank=int(environ.get("LOCAL_RANK", "0")),
        )


def mirror_from_env() -> str | None:
    """``$RESNET_LAB_DATA_MIRROR``, or None when it is unset."""
    return os.environ.get(MIRROR_ENV) or None
