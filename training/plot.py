"""Error curves in the style of the paper's Fig. 1/4/6: ``python -m training.plot RUN_DIR ... --output fig.png``.

Training error thin, test error bold, against iterations; one colour per run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)

from toolkit import cli  # noqa: E402
from toolkit.errors import UsageError

from .run_folder import METRICS_FILE, TRAIN_LOG_FILE, read_rows  # noqa: E402


def plot_runs(run_dirs: list[Path], out: Path, title: str | None = None) -> Path:
    """Draw every run's curves into one PNG and return its path."""
    figure, axis = plt.subplots(figsize=(7, 4.5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    drawn = 0
    for index, run_dir in enumerate(run_dirs):
        epochs = read_rows(run_dir / METRICS_FILE)
        train_rows = read_rows(run_dir / TRAIN_LOG_FILE)
        if not epochs and not train_rows:
            raise UsageError(f"{run_dir} has no {METRICS_FILE} or {TRAIN_LOG_FILE}; is it a training run?")
        colour = colours[index % len(colours)]
        name = run_dir.name
        if train_rows:
            steps = [row["step"] for row in train_rows]
            axis.plot(steps, [100 * row["train_error"] for row in train_rows], color=colour, linewidth=0.7, alpha=0.8)
        if epochs:
            steps = [row["step"] for row in epochs]
            error_key = "test_error" if "test_error" in epochs[0] else "val_error"
            axis.plot(
                steps,
                [100 * row[error_key] for row in epochs],
                color=colour,
                linewidth=2.2,
                marker="o",
                markersize=3,
                label=name,
            )
        drawn += 1
    axis.set_xlabel("iterations")
    axis.set_ylabel("error (%)")
    axis.set_title(title or "training error (thin) and test error (bold)")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120)
    plt.close(figure)
    return out


def plot_losses(run_dir: Path, out: Path) -> Path:
    """Every ``train_*loss*`` column of a run's ``train_log.jsonl`` against steps (log scale), e.g. a detector's
    total loss and its four Faster R-CNN terms."""
    rows = read_rows(run_dir / TRAIN_LOG_FILE)
    keys = [key for key in (rows[0] if rows else {}) if key.startswith("train_") and "loss" in key]
    if not keys:
        raise UsageError(f"{run_dir / TRAIN_LOG_FILE} has no loss columns to plot")
    figure, axis = plt.subplots(figsize=(7, 4))
    steps = [row["step"] for row in rows]
    for key in keys:
        total = key == "train_loss"
        axis.plot(steps, [row[key] for row in rows], label=key.removeprefix("train_"), linewidth=2 if total else 1)
    axis.set_xlabel("iterations")
    axis.set_ylabel("training loss")
    axis.set_yscale("log")
    axis.legend()
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(out, dpi=100)
    plt.close(figure)
    return out


def main(argv: list[str] | None = None) -> Path:
    """Plot the runs and print where the PNG went."""
    parser = argparse.ArgumentParser(
        prog="python -m training.plot",
        description=__doc__.splitlines()[0],
        formatter_class=cli.HelpFormatter,
    )
    parser.add_argument("run_dirs", nargs="+", type=Path, help="--output-dir folders of training runs")
    parser.add_argument("--output", type=Path, default=Path("error_curves.png"), help="PNG to write")
    parser.add_argument("--title", help="figure title")
    args = parser.parse_args(argv)
    for run_dir in args.run_dirs:
        if not run_dir.is_dir():
            raise UsageError(f"run folder not found: {run_dir} (pass the --output-dir of a training run)")
    out = plot_runs(args.run_dirs, args.output, args.title)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    cli.entry_point(main)
