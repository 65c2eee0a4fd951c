"""Run records: the small, committable trace of a real training run (logs + how it was made).

A record folder holds ``run.json`` (recipe, command, hardware, epochs, wall time, final errors) and copies of the
run's ``metrics.jsonl`` and ``train_log.jsonl``. ``python -m training.report`` reads records, never invents one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
from pathlib import Path
from typing import Any

from . import runlog
from .checkpoint import load_checkpoint
from .recipes import get_recipe

RECORD_FILE = "run.json"


def describe_hardware() -> str:
    """A one-line description of this machine: CPU model and core count, or the GPU."""
    try:
        import torch

        if torch.cuda.is_available():
            return f"1x {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()}-core CPU ({model}), no GPU"


def record_run(
    run_dir: Path,
    dest: Path,
    command: str,
    hardware: str | None = None,
    note: str = "",
    group: str = "",
    recipe_name: str | None = None,
) -> dict[str, Any]:
    """Copy a finished (or stopped) run's logs into ``dest`` and write its ``run.json``.

    The recipe comes from the run's ``checkpoints/last.pt``; where only the logs were kept, from ``recipe_name``.
    """
    metrics = runlog.read_rows(run_dir / runlog.METRICS_FILE)
    if not metrics:
        raise SystemExit(f"{run_dir} has no {runlog.METRICS_FILE}: nothing to record")
    checkpoint = run_dir / "checkpoints" / "last.pt"
    if checkpoint.is_file():
        state = load_checkpoint(checkpoint)
        recipe, run = state["recipe"], state.get("run", {})
    elif recipe_name:
        recipe, run = get_recipe(recipe_name).to_dict(), {}
    else:
        raise SystemExit(f"{checkpoint} not found: pass --recipe NAME to record a run from its logs alone")
    last = metrics[-1]
    record = {
        "recipe": recipe["name"],
        "model": recipe["model"],
        "dataset": recipe["dataset"],
        "command": command,
        "hardware": hardware or describe_hardware(),
        "epochs_done": last["epoch"],
        "epochs_planned": run.get("epochs", last["epoch"]),
        "steps": last["step"],
        "paper_steps": recipe.get("max_iters") or None,
        "wall_time_s": round(last["wall_time"], 1),
        "final": {key: value for key, value in last.items() if key.endswith("error")},
        "best_test_error": min(row["test_error"] for row in metrics if "test_error" in row),
        "note": note,
        "group": group,
    }
    dest.mkdir(parents=True, exist_ok=True)
    for name in (runlog.METRICS_FILE, runlog.TRAIN_LOG_FILE):
        if (run_dir / name).is_file():
            shutil.copyfile(run_dir / name, dest / name)
    (dest / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return record


def read_records(runs_dir: Path) -> dict[str, tuple[Path, dict[str, Any]]]:
    """Every record under ``runs_dir`` keyed by folder name."""
    records = {}
    for path in sorted(runs_dir.glob(f"*/{RECORD_FILE}")):
        records[path.parent.name] = (path.parent, json.loads(path.read_text()))
    return records


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """CLI: record a training output folder under ``docs/runs/NAME``."""
    parser = argparse.ArgumentParser(
        prog="python -m training.runrecord",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("run_dir", type=Path, help="the --output-dir of a training run")
    parser.add_argument("--name", help="record name (default: the run folder's name)")
    parser.add_argument("--runs-dir", type=Path, default=Path("docs/runs"), help="where records live")
    parser.add_argument("--command", required=True, help="the exact command that made the run")
    parser.add_argument("--hardware", help="override the detected hardware description")
    parser.add_argument("--note", default="", help="anything a reader must know (shortened schedule, subset...)")
    parser.add_argument("--group", default="", help="experiment the run belongs to, e.g. degradation")
    parser.add_argument("--recipe", help="the run's recipe, needed only when its checkpoint was not kept")
    args = parser.parse_args(argv)
    dest = args.runs_dir / (args.name or args.run_dir.name)
    record = record_run(args.run_dir, dest, args.command, args.hardware, args.note, args.group, args.recipe)
    print(f"recorded {dest}: {record['recipe']}, {record['epochs_done']} epochs, final {record['final']}")
    return record


if __name__ == "__main__":
    main()
