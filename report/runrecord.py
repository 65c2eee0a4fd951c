"""Run records: the small, committable trace of a real training run (logs + how it was made).

A record folder holds ``run.json`` (recipe, command, hardware, epochs, wall time, final errors) and copies of the
run's ``metrics.jsonl`` and ``train_log.jsonl``. ``python -m report.reproduction`` reads records, never invents one.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from report.provenance import provenance
from toolkit import cli
from toolkit.atomic import atomic_write_text
from toolkit.errors import UsageError
from training.classifier import load_classifier_checkpoint
from training.recipes import get_recipe
from training.run_folder import METRICS_FILE, TRAIN_LOG_FILE, RunFolder, read_rows

RECORD_FILE = "run.json"


def hardware_of(sessions: list[dict[str, Any]]) -> tuple[str, list[str]]:
    """``(hardware in words, torch versions)`` from the sessions the engine kept in the checkpoint."""
    parts = [f"{session['hardware']} for epochs {session['epochs'][0]}-{session['epochs'][1]}" for session in sessions]
    return "; ".join(parts), sorted({session["torch"] for session in sessions})


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
    metrics = read_rows(run_dir / METRICS_FILE)
    if not metrics:
        raise UsageError(f"{run_dir} has no {METRICS_FILE}: nothing to record")
    checkpoint = RunFolder(run_dir).last
    if checkpoint.is_file():
        state = load_classifier_checkpoint(checkpoint)
        recipe, run = state["recipe"], state.get("run", {})
    elif recipe_name:
        recipe, run = get_recipe(recipe_name).to_dict(), {}
    else:
        raise UsageError(f"{checkpoint} not found: pass --recipe NAME to record a run from its logs alone")
    recorded_hardware, torch_versions = hardware_of(run.get("sessions", []))
    if not (hardware or recorded_hardware):
        raise UsageError(f"{run_dir}'s checkpoint does not say where it trained: pass --hardware")
    last = metrics[-1]
    record = {
        "recipe": recipe["name"],
        "model": recipe["model"],
        "dataset": recipe["dataset"],
        "command": command,
        "hardware": hardware or recorded_hardware,
        "torch": torch_versions,
        "recorded": {key: value for key, value in provenance([]).items() if key in ("date", "commit")},
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
    for name in (METRICS_FILE, TRAIN_LOG_FILE):
        if (run_dir / name).is_file():
            shutil.copyfile(run_dir / name, dest / name)
    atomic_write_text(dest / RECORD_FILE, json.dumps(record, indent=2) + "\n")
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
        prog="python -m report.runrecord",
        description=__doc__.splitlines()[0],
        formatter_class=cli.HelpFormatter,
    )
    parser.add_argument("run_dir", type=Path, help="the --output-dir of a training run")
    parser.add_argument("--name", help="record name (default: the run folder's name)")
    parser.add_argument("--runs-dir", type=Path, default=Path("docs/runs"), help="where records live")
    parser.add_argument("--command", required=True, help="the exact command that made the run")
    parser.add_argument("--hardware", help="where it trained (default: what the checkpoint recorded)")
    parser.add_argument("--note", default="", help="anything a reader must know (shortened schedule, subset...)")
    parser.add_argument("--group", default="", help="experiment the run belongs to, e.g. degradation")
    parser.add_argument("--recipe", help="the run's recipe, needed only when its checkpoint was not kept")
    args = parser.parse_args(argv)
    dest = args.runs_dir / (args.name or args.run_dir.name)
    record = record_run(args.run_dir, dest, args.command, args.hardware, args.note, args.group, args.recipe)
    print(f"recorded {dest}: {record['recipe']}, {record['epochs_done']} epochs, final {record['final']}")
    return record


if __name__ == "__main__":
    cli.entry_point(main)
