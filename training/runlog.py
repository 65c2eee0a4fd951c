"""JSONL logs of a run: ``metrics.jsonl`` (one row per epoch) and ``train_log.jsonl`` (every few steps)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"
TRAIN_LOG_FILE = "train_log.jsonl"


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
    if not path.is_file():
        return
    rows = [row for row in read_rows(path) if row.get("step", 0) <= step]
    temp = path.with_suffix(path.suffix + ".tmp")
    temp.write_text("".join(json.dumps(row) + "\n" for row in rows))
    os.replace(temp, path)
