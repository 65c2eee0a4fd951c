"""Package a trained classifier as the service's default model: its ONNX file, labels, curve and model card.

    python -m report.modelcard --record docs/runs/NAME --checkpoint RUN/checkpoints/last.pt \\
        --output-dir inference/default_model
    python -m report.modelcard --record docs/runs/NAME   # card only, for the model.onnx already in the folder

``--checkpoint`` is exported to ``OUTPUT_DIR/model.onnx`` first (``export.classifier``, verified against PyTorch).
Every figure of ``MODEL_CARD.md`` comes from the run record (``report.runrecord``: command, hardware, torch
version, schedule, errors) and from the ONNX file's own metadata; none is typed by hand.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import onnx

from export.command import main as export_main
from inference import precision
from inference.contract import BF16, DEFAULT_MODEL_DIR, ONNX_FILE_NAME, Key, ModelMetadata
from models import model_info
from models.paper import TABLE6_ERROR
from toolkit import cli
from toolkit.atomic import atomic_write_text
from toolkit.errors import UsageError
from training.cifar10 import DATA_CAVEAT
from training.plot import plot_runs

from .bench_file import BENCH_DIR
from .runrecord import RECORD_FILE

SERVING_CAVEAT = (
    "Images sent to the service should look like CIFAR-10: small, centred, single-object photos of the ten classes."
)
BAR = 10.0  # the most test error (%) a CIFAR-10 default model may have


def paper_error(model_name: str, error: float) -> str:
    """The paper's Table 6 error for the model and the gap to ``error`` (percent), in words."""
    info = model_info(model_name)
    if info.family == "cifar10" and info.residual and info.depth in TABLE6_ERROR:
        paper = TABLE6_ERROR[info.depth]
        return f"{paper:.2f}% for ResNet-{info.depth} ({error - paper:+.2f} points here)"
    return "no CIFAR ResNet figure"


def read_metadata(path: Path) -> ModelMetadata:
    """The contract metadata of an exported file."""
    props = {entry.key: entry.value for entry in onnx.load(str(path), load_external_data=False).metadata_props}
    return ModelMetadata.from_props(props, str(path))


def _schedule(recipe: dict[str, Any], record: dict[str, Any]) -> str:
    milestones = ", ".join(f"{step:,}" for step in recipe["milestone_iters"])
    return (
        f"batch {recipe['batch_size']}, SGD momentum {recipe['momentum']}, weight decay {recipe['weight_decay']}, "
        f"lr {recipe['lr']} divided by 10 at iterations {milestones}, stop at {recipe['max_iters']:,} "
        f"({record['epochs_done']} epochs, {record['steps']:,} iterations run); 4-pixel pad, random 32x32 crop, "
        "horizontal flip; per-pixel mean subtraction (inside the ONNX graph)"
    )


RECORD_BF16 = "python -m export.check_bf16 --model inference/default_model/model.onnx --count 10000"
INT8_BENCH = BENCH_DIR / "int8.json"  # bench/int8.py: the default model in fp32 and int8, both weight widths
INT8_COMMAND = "python -m export.int8 --model inference/default_model/model.onnx --output model-int8.onnx"


def int8_section(bench: Path = INT8_BENCH) -> list[str]:
    """What int8 does to this model and why its weights are 7-bit, with the figures ``bench/int8.py`` wrote."""
    lines = [
        "## int8",
        "",
        f"`{INT8_COMMAND}` writes an int8 copy (ONNX Runtime's static quantizer: QDQ, uint8 activations, int8 "
        "per-channel weights, calibrated on 512 CIFAR-10 training images). The weights use 7 bits (`reduce_range`) "
        "on purpose: on x86-64 CPUs without VNNI (AVX2, AVX-512 without VNNI) ONNX Runtime's u8 x s8 kernels add "
        "products in 16 bits and saturate with 8-bit weights, and ONNX Runtime's quantization guide recommends "
        "`reduce_range` there; VNNI and AMX kernels do not saturate and lose little to the narrower weights.",
    ]
    data = json.loads(bench.read_text()) if bench.is_file() else {"rows": []}
    rows = [row for row in data["rows"] if row["model"].startswith("default") and "agreement" in row]
    if not rows:
        return [*lines, ""]
    figures = "; ".join(
        f"{row['precision']}: {row['error']:.2f}% test error, top-1 = fp32's on {row['agreement']:.2f}%" for row in rows
    )
    return [
        *lines,
        "",
        f"Measured by `{data['command']}` on {data['machine']} ({data['notes'].split('extensions: ')[-1]}), "
        f"{data['date'][:10]}, commit `{data['commit']}`: {figures} (all 10,000 test images; "
        f"[`docs/bench/int8.json`](../../docs/bench/int8.json)).",
        "",
    ]


def bf16_section(metadata: ModelMetadata) -> list[str]:
    """What the file's recorded bf16 check says (``inference.precision``), and what the service does with it."""
    entry = metadata.check(BF16)
    if entry is None:
        return ["## bf16", "", f"No bf16 check is recorded, so the service runs it in fp32 (`{RECORD_BF16}`).", ""]
    passed, because = precision.verdict(entry, metadata.task)
    errors = ""
    if "error_bf16" in entry:
        errors = f"; test error {100 * entry['error_fp32']:.2f}% in fp32, {100 * entry['error_bf16']:.2f}% in bf16"
    use = "runs it in bf16 on CPUs with bf16 units" if passed else "runs it in fp32"
    return [
        "## bf16",
        "",
        f"Recorded in the file by `{RECORD_BF16}` ({entry['runtime']}, {entry['cpu']}, {entry['date']}) on "
        f"{entry['images_from']}: {because}{errors}. Bar: {entry['bar']}. Under `RESNET_LAB_PRECISION=auto` the "
        f"service {use}, fp32 elsewhere.",
        "",
    ]


def model_card(metadata: ModelMetadata, record: dict[str, Any], record_dir: str) -> str:
    """The card's Markdown from the ONNX file's metadata and the run record."""
    recipe, last = metadata.json_value(Key.RECIPE, {}), metadata.json_value(Key.METRICS, [])[-1]
    error = 100 * last["test_error"]
    verdict = "meets" if error <= BAR else "misses"
    lines = [
        f"# Default model: {metadata.model_name} on CIFAR-10",
        "",
        f"- Test error: **{error:.2f}%** top-1 ({100 * last['test_top5_error']:.2f}% top-5) on all 10,000 CIFAR-10 "
        "test images, with the weights of the last epoch (the test set picked nothing).",
        f"- Paper (Table 6): {paper_error(metadata.model_name, error)}. This project's bar for a default model: "
        f"{BAR:.1f}%; this model {verdict} it.",
        f"- Recipe `{recipe['name']}`: {_schedule(recipe, record)}.",
        f"- Trained on {record['hardware']}; torch {', '.join(record.get('torch') or ['not recorded'])}; "
        f"{record['wall_time_s'] / 60:.1f} min of training time.",
        f"- Command: `{record['command']}`",
        f"- Run record: [`{record_dir}`](../../{record_dir}) (`run.json`, `metrics.jsonl`: one row per epoch, "
        "`train_log.jsonl`).",
        "- Files here: `model.onnx` (uint8 RGB `[N, 3, 32, 32]` in, logits out; labels, sizes, recipe and metrics in "
        "its metadata), `labels.txt`, `curve.png` (training error thin, test error bold).",
        "",
        "## Data caveat",
        "",
        f"{DATA_CAVEAT[0].upper()}{DATA_CAVEAT[1:]} {SERVING_CAVEAT}",
        "",
    ]
    if metadata.json_value(Key.WEIGHTS):
        weights = metadata.json_value(Key.WEIGHTS)
        lines[2:2] = [f"- Weights: torchvision's `{weights['weights']}` (`{weights['file']}`).", ""]
    lines += bf16_section(metadata)
    lines += int8_section()
    if record.get("note"):
        lines += ["## Notes", "", record["note"], ""]
    lines += ["![training curve](curve.png)", ""]
    return "\n".join(lines)


def package(record_dir: Path, out: Path, checkpoint: Path | None = None) -> Path:
    """Write (or rewrite) the default-model folder from a run record and, if given, a checkpoint to export."""
    record_file = record_dir / RECORD_FILE
    if not record_file.is_file():
        raise UsageError(f"{record_file} not found: record the run first with `python -m report.runrecord`")
    record = json.loads(record_file.read_text())
    model = out / ONNX_FILE_NAME
    if checkpoint is not None:
        export_main(["--checkpoint", str(checkpoint), "--output", str(model)])
    if not model.is_file():
        raise UsageError(f"{model} not found: pass --checkpoint to export one")
    metadata = read_metadata(model)
    atomic_write_text(out / "labels.txt", "\n".join(metadata.labels) + "\n")
    plot_runs([record_dir], out / "curve.png", title=f"{record['recipe']}: training (thin) and test error (bold)")
    card = out / "MODEL_CARD.md"
    atomic_write_text(card, model_card(metadata, record, record_dir.as_posix()))
    return card


def main(argv: list[str] | None = None) -> Path:
    """CLI entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m report.modelcard", description=__doc__, formatter_class=cli.HelpFormatter
    )
    parser.add_argument("--record", required=True, type=Path, help="the run record (docs/runs/NAME)")
    parser.add_argument(
        "--checkpoint",
        type=Path,
        help=f"the run's checkpoint to export (default: keep OUTPUT_DIR/{ONNX_FILE_NAME})",
    )
    parser.add_argument("--output-dir", type=Path, default=DEFAULT_MODEL_DIR, help="folder to write")
    args = parser.parse_args(argv)
    card = package(args.record, args.output_dir, args.checkpoint)
    print(f"wrote {card}")
    return card


if __name__ == "__main__":
    cli.entry_point(main)
