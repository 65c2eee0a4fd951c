"""Benchmark results as files: ``docs/bench/<name>.json`` (provenance, columns, rows), rendered as Markdown tables.

Every table the README publishes is rendered from such a file by ``python -m report.readme``; nothing is retyped.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from toolkit.atomic import atomic_write_text

from .provenance import REPO_ROOT, provenance

BENCH_DIR = REPO_ROOT / "docs" / "bench"


@dataclass(frozen=True)
class Column:
    """One table column: the row key, its title and a format spec (``.1f``, ``,``, ``.2f``x...)."""

    key: str
    title: str
    format: str = ""
    suffix: str = ""


def write_results(
    name: str, columns: list[Column], rows: list[dict[str, Any]], notes: str = "", directory: Path = BENCH_DIR
) -> Path:
    """Write ``directory/name.json`` atomically with this run's provenance; returns the path."""
    data = {**provenance(), "notes": notes, "columns": [asdict(column) for column in columns], "rows": rows}
    path = atomic_write_text(directory / f"{name}.json", json.dumps(data, indent=1) + "\n")
    print(f"wrote {path}")
    return path


def _cell(value: Any, column: Column) -> str:
    if value is None:
        return "-"
    if isinstance(value, int | float) and not isinstance(value, bool) and column.format:
        return f"{value:{column.format}}{column.suffix}"
    return f"{value}{column.suffix}"


def render(path: Path) -> str:
    """The Markdown table of a results file, under a line saying which command made it, where and when."""
    data = json.loads(path.read_text())
    columns = [Column(**column) for column in data["columns"]]
    numeric = [column.format != "" for column in columns]
    lines = [
        f"`{data['command']}` on {data['machine']}, {data['date'][:10]}, commit `{data['commit']}`"
        + (f"; {data['notes']}" if data.get("notes") else ""),
        "",
        "| " + " | ".join(column.title for column in columns) + " |",
        "| " + " | ".join("---:" if right else "---" for right in numeric) + " |",
    ]
    for row in data["rows"]:
        lines.append("| " + " | ".join(_cell(row.get(column.key), column) for column in columns) + " |")
    return "\n".join(lines)
