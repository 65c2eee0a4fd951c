"""The folder a training run writes, the same for both trainers.

    OUTPUT_DIR/
      metrics.jsonl        one row per epoch: train loss (and error), eval metrics, lr, images/s, times
      train_log.jsonl      one row every --log-every steps: train loss (and error), lr, images/s
      checkpoints/last.pt  after every epoch: weights, optimizer, schedule, every RNG; --resume continues from it
      checkpoints/best.pt  the epoch with the best validation metric; written only when the run has validation data

Rows carry ``step`` (optimizer steps so far) and ``epoch``; only rank 0 writes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.atomic import atomic_write_text
from toolkit.errors import UsageError

METRICS_FILE = "metrics.jsonl"
TRAIN_LOG_FILE = "train_log.jsonl"
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"


def append_row(path: Path, row: dict[str, Any]) -> None:
    """Append one JSON row and flush it to disk."""
    with open(path, "a") as stream:
        stream.write(json.dumps(row) + "\n")


def read_rows(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Every complete row of a JSONL file (a torn last line from a crash is skipped)."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def truncate_after(path: Path, step: int) -> None:
    """Drop rows logged after ``step`` (a run that died after its last checkpoint), rewriting atomically."""
    if path.is_file():
        rows = [row for row in read_rows(path) if row.get("step", 0) <= step]
        atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in rows))


@dataclass(frozen=True)
class RunFolder:
    """Paths and rules of one run's output folder."""

    root: Path

    @property
    def metrics(self) -> Path:
        return self.root / METRICS_FILE

    @property
    def train_log(self) -> Path:
        return self.root / TRAIN_LOG_FILE

    @property
    def last(self) -> Path:
        return self.root / CHECKPOINT_DIR / LAST_CHECKPOINT

    @property
    def best(self) -> Path:
        return self.root / CHECKPOINT_DIR / BEST_CHECKPOINT

    def check_start(self, resume: bool) -> None:
        """``--resume`` needs ``last.pt``; starting afresh must not overwrite a run (both exit with the fix)."""
        if resume and not self.last.is_file():
            raise UsageError(f"--resume: no checkpoint at {self.last}; start without --resume")
        if not resume and self.last.exists():
            raise UsageError(f"{self.last} exists: pass --resume to continue that run, or choose another --output-dir")

    def rewind_logs(self, step: int) -> None:
        """Forget log rows written after the checkpoint being resumed (they will be written again)."""
        truncate_after(self.metrics, step)
        truncate_after(self.train_log, step)
