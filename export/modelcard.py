"""Package a trained run as the service's default model: ONNX, labels, metrics, curve and a model card.

    python -m training.modelcard RUN_DIR --out service/default_model --command "..." --hardware "..."

Writes ``model.onnx`` (through ``training.export``, which verifies ONNX Runtime against PyTorch first),
``labels.txt``, ``metrics.jsonl``, ``curve.png`` and ``MODEL_CARD.md`` whose figures all come from the run itself.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from models import model_info
from models.paper import TABLE6_ERROR

from . import export, runlog
from .checkpoint import load_checkpoint
from .cifar10 import DATA_CAVEAT
from .plot import plot_runs

SERVING_CAVEAT = (
    "Images sent to the service should look like CIFAR-10: small, centred, single-object photos of the ten classes."
)


def _paper_error(model_name: str) -> str:
    info = model_info(model_name)
    if info.family == "cifar10" and info.residual and info.depth in TABLE6_ERROR:
        return f"{TABLE6_ERROR[info.depth]:.2f}% for ResNet-{info.depth}"
    return "no CIFAR ResNet figure"


def model_card(state: dict[str, Any], metrics: list[dict[str, Any]], command: str, hardware: str, note: str) -> str:
    """The card's Markdown from a checkpoint's recipe and the run's metrics rows."""
    recipe, last = state["recipe"], metrics[-1]
    best = min(metrics, key=lambda row: row["test_error"])
    error = 100 * last["test_error"]
    lines = [
        f"# Default model: {state['model_name']} on CIFAR-10",
        "",
        f"- Test error: **{error:.2f}%** top-1 ({100 * last['test_top5_error']:.2f}% top-5) on all 10,000 CIFAR-10 "
        f"test images, after the last epoch (the shipped weights). Lowest test error seen during the run: "
        f"{100 * best['test_error']:.2f}% (epoch {best['epoch']}), not used to pick the weights.",
        f"- Paper (Table 6): {_paper_error(state['model_name'])}. This project's bar for shipping a default "
        "CIFAR ResNet-20: 10.0% (target 8.75%).",
        f"- Recipe `{recipe['name']}`: batch {recipe['batch_size']}, SGD momentum {recipe['momentum']}, weight decay "
        f"{recipe['weight_decay']}, lr {recipe['lr']} divided by 10 at iterations "
        f"{', '.join(f'{step:,}' for step in recipe['milestone_iters'])}, stop at {recipe['max_iters']:,}; 4-pixel "
        "pad, random 32x32 crop, horizontal flip; per-pixel mean subtraction (inside the ONNX graph).",
        f"- Trained: {last['epoch']} epochs, {last['step']:,} iterations, {last['wall_time'] / 60:.1f} min of "
        f"training time; hardware: {hardware}.",
        f"- Command: `{command}`",
        "- Files: `model.onnx` (uint8 RGB `[N, 3, 32, 32]` in, logits out; labels, sizes, recipe and metrics in its "
        "metadata), `labels.txt`, `metrics.jsonl` (one row per epoch), `curve.png` (training error thin, test error "
        "bold).",
        "",
        "## Data caveat",
        "",
        f"{DATA_CAVEAT[0].upper()}{DATA_CAVEAT[1:]} {SERVING_CAVEAT}",
        "",
    ]
    if note:
        lines += ["## Notes", "", note, ""]
    lines += ["![training curve](curve.png)", ""]
    return "\n".join(lines)


def package(run_dir: Path, out: Path, command: str, hardware: str, note: str = "") -> Path:
    """Write the default-model folder from ``run_dir`` (its ``checkpoints/last.pt`` and logs)."""
    checkpoint = run_dir / "checkpoints" / "last.pt"
    if not checkpoint.is_file():
        raise SystemExit(f"{checkpoint} not found: package a run folder written by training.train")
    state = load_checkpoint(checkpoint)
    metrics = runlog.read_rows(run_dir / runlog.METRICS_FILE)
    if not metrics:
        raise SystemExit(f"{run_dir / runlog.METRICS_FILE} is empty: nothing to report")
    out.mkdir(parents=True, exist_ok=True)
    export.main(["--checkpoint", str(checkpoint), "--output", str(out / "model.onnx"), "--no-register"])
    (out / "labels.txt").write_text("\n".join(state["labels"]) + "\n")
    shutil.copyfile(run_dir / runlog.METRICS_FILE, out / runlog.METRICS_FILE)
    plot_runs([run_dir], out / "curve.png", title=f"{state['recipe']['name']}: training (thin) and test error (bold)")
    card = out / "MODEL_CARD.md"
    card.write_text(model_card(state, metrics, command, hardware, note))
    summary = {"test_error": metrics[-1]["test_error"], "epochs": metrics[-1]["epoch"], "out": str(out)}
    print(json.dumps(summary))
    return card


def main(argv: list[str] | None = None) -> Path:
    """CLI entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m training.modelcard",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("run_dir", type=Path, help="a training.train --output-dir")
    parser.add_argument("--out", type=Path, default=Path("service/default_model"), help="folder to write")
    parser.add_argument("--command", required=True, help="the exact command(s) that trained the run")
    parser.add_argument("--hardware", required=True, help="where it was trained")
    parser.add_argument("--note", default="", help="anything else a user must know")
    args = parser.parse_args(argv)
    return package(args.run_dir, args.out, args.command, args.hardware, args.note)


if __name__ == "__main__":
    main()
