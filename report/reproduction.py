"""Write the paper-vs-ours reproduction report: ``python -m report.reproduction --output docs/REPRODUCTION.md``.

Every "ours" figure comes from code (model summaries) or from a run record under ``--runs-dir``
(see ``report.runrecord``); a run that was not made is shown as not made.
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path
from typing import Any

from models.paper import (
    TABLE1_GFLOPS,
    TABLE3_10CROP,
    TABLE6_ERROR,
    TABLE6_PARAMS_M,
    TABLE6_RESNET110_MEAN_STD,
    TABLE8_COCO,
)
from models.summary import summarize
from toolkit import cli
from toolkit.atomic import atomic_write_text
from training.cifar10 import DATA_CAVEAT
from training.plot import plot_runs

from .provenance import REPO_ROOT
from .runrecord import read_records

IMAGENET_DEPTHS = (18, 34, 50, 101, 152)
CIFAR_DEPTHS = (20, 32, 44, 56, 110, 1202)
DEGRADATION = {"plain": ("cifar10_plain20", "cifar10_plain56"), "resnet": ("cifar10_resnet20", "cifar10_resnet56")}
DETECTION_RECIPE = "coco_resnet101_c4"
NOT_MADE = "not made"

Records = dict[str, tuple[Path, dict[str, Any]]]


def _by_recipe(records: Records, group: str | None = None) -> dict[str, tuple[Path, dict[str, Any]]]:
    """The record of each recipe with the most training steps (the most complete run), optionally of one group."""
    chosen: dict[str, tuple[Path, dict[str, Any]]] = {}
    for path, record in records.values():
        if group is not None and record.get("group", "") != group:
            continue
        name = record.get("recipe")
        if name and (name not in chosen or record.get("steps", 0) > chosen[name][1].get("steps", 0)):
            chosen[name] = (path, record)
    return chosen


def _schedule(record: dict[str, Any]) -> str:
    steps, paper = record.get("steps"), record.get("paper_steps")
    if paper and steps and steps < paper:
        return f"shortened: {record['epochs_done']} epochs, {steps:,} of the paper's {paper:,} iterations"
    return f"{record['epochs_done']} epochs, {steps:,} iterations"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:.2f} h"


@functools.cache
def _summaries(names: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Depth, parameters and multiply-adds by model name (counted once per process: it takes a while)."""
    return {row["name"]: row for row in summarize(list(names))}


def table1_section() -> list[str]:
    """Table 1 beside our networks: layers, parameters, multiply-adds."""
    names = [f"resnet{d}" for d in IMAGENET_DEPTHS] + ["plain18", "plain34"]
    rows = _summaries(tuple(names))
    lines = [
        "## Table 1: ImageNet architectures",
        "",
        "Ours counted by `python -m models.summary` (option B shortcuts, stride on the first 1x1 as in the paper,",
        "multiply-adds at 224x224 with `torch.utils.flop_counter`; the paper calls multiply-adds FLOPs).",
        "",
        "| model | layers | parameters (ours) | multiply-adds, paper | multiply-adds, ours | difference |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in names:
        row = rows[name]
        paper = TABLE1_GFLOPS.get(row["depth"]) if name.startswith("resnet") or row["depth"] == 34 else None
        ours = row["macs"] / 1e9
        paper_cell = f"{paper:.1f} x 10^9" if paper else "-"
        diff = f"{100 * (ours - paper) / paper:+.1f}%" if paper else "-"
        lines.append(f"| {name} | {row['depth']} | {row['params']:,} | {paper_cell} | {ours:.2f} x 10^9 | {diff} |")
    lines += [
        "",
        "The paper gives 3.6 x 10^9 for the 34-layer plain net too (Fig. 3); Table 1 lists no parameters.",
        "",
    ]
    return lines


def table6_section(by_recipe: dict[str, tuple[Path, dict[str, Any]]]) -> list[str]:
    """Table 6 (CIFAR-10 test error) beside the runs actually made."""
    rows = _summaries(tuple(f"cifar_resnet{d}" for d in CIFAR_DEPTHS))
    lines = [
        "## Table 6: CIFAR-10 ResNets",
        "",
        "| model | params, paper | params, ours | error, paper | error, ours | schedule | wall time | hardware |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: | --- |",
    ]
    commands = []
    for depth in CIFAR_DEPTHS:
        recipe = f"cifar10_resnet{depth}"
        params = rows[f"cifar_resnet{depth}"]["params"]
        prefix = f"| ResNet-{depth} | {TABLE6_PARAMS_M[depth]}M | {params / 1e6:.3f}M | {TABLE6_ERROR[depth]:.2f}% |"
        if recipe not in by_recipe:
            lines.append(f"{prefix} {NOT_MADE} | - | - | - |")
            continue
        _, record = by_recipe[recipe]
        error = 100 * record["final"]["test_error"]
        lines.append(
            f"{prefix} {error:.2f}% | {_schedule(record)} | {_minutes(record['wall_time_s'])} | {record['hardware']} |"
        )
        commands.append(f"- ResNet-{depth}: `{record['command']}`" + (f" ({record['note']})" if record["note"] else ""))
    mean, std = TABLE6_RESNET110_MEAN_STD
    lines += ["", f"Paper errors are the best of 5 runs (ResNet-110: {TABLE6_ERROR[110]}%, mean {mean} +- {std})."]
    if commands:
        lines += ["", "Commands of the runs we made:", "", *commands]
    lines += [
        "",
        f"Data caveat: {DATA_CAVEAT}",
        "",
    ]
    return lines


def degradation_section(by_recipe: dict[str, tuple[Path, dict[str, Any]]], figures: Path, out: Path) -> list[str]:
    """Fig. 6 style: plain-20/56 against ResNet-20/56, from real runs only."""
    lines = ["## Degradation (Fig. 6): plain vs residual, 20 vs 56 layers", ""]
    missing = [name for pair in DEGRADATION.values() for name in pair if name not in by_recipe]
    if missing:
        lines += [f"Not made yet: {', '.join(missing)}. No curve is drawn for a run that was not made.", ""]
    for family, names in DEGRADATION.items():
        present = [by_recipe[name] for name in names if name in by_recipe]
        if not present:
            continue
        png = plot_runs(
            [path for path, _ in present],
            figures / f"degradation_{family}.png",
            title=f"CIFAR-10 {family} nets: training error (thin), test error (bold)",
        )
        lines.append(f"![{family}]({png.relative_to(out.parent).as_posix()})")
        lines.append("")
        for _, record in present:
            lines.append(
                f"- {record['recipe']}: training error {100 * record['final']['train_error']:.2f}%, "
                f"test error {100 * record['final']['test_error']:.2f}%, {_schedule(record)}, "
                f"{_minutes(record['wall_time_s'])}: `{record['command']}`"
            )
        lines.append("")
    lines += _degradation_verdict(by_recipe)
    return lines


def _degradation_verdict(by_recipe: dict[str, tuple[Path, dict[str, Any]]]) -> list[str]:
    """One sentence per family saying, from the final training errors, whether depth helped or hurt."""
    lines = []
    for family, (shallow, deep) in DEGRADATION.items():
        if shallow in by_recipe and deep in by_recipe:
            shallow_error = 100 * by_recipe[shallow][1]["final"]["train_error"]
            deep_error = 100 * by_recipe[deep][1]["final"]["train_error"]
            verb = "higher" if deep_error > shallow_error else "lower"
            lines.append(
                f"- {family}: the 56-layer net ends with {verb} training error than the 20-layer one "
                f"({deep_error:.2f}% vs {shallow_error:.2f}%)."
            )
    return [*lines, ""] if lines else []


def imagenet_section(by_recipe: dict[str, tuple[Path, dict[str, Any]]]) -> list[str]:
    """Tables 2-4 (ImageNet 10-crop error) beside runs, if any were made."""
    lines = [
        "## Tables 3 and 4: ImageNet (10-crop validation error)",
        "",
        "| model | top-1, paper | top-5, paper | ours |",
        "| --- | ---: | ---: | --- |",
    ]
    for key, (top1, top5) in TABLE3_10CROP.items():
        recipe = "imagenet_" + key.split("_")[0]
        ours = NOT_MADE
        if recipe in by_recipe and key.count("_") == 0:
            record = by_recipe[recipe][1]
            ours = f"{100 * record['final']['test_error']:.2f}% top-1 ({_schedule(record)})"
        lines.append(f"| {key.replace('_', ' option ')} | {top1:.2f}% | {top5:.2f}% | {ours} |")
    lines += ["", "ImageNet training needs the full ILSVRC-2012 set and GPUs; the recipes are `imagenet_*`.", ""]
    return lines


def detection_section() -> list[str]:
    """Table 8's COCO row beside the recipe that targets it."""
    ap50, ap = TABLE8_COCO["resnet101"]
    return [
        "## Table 8: Faster R-CNN on COCO val",
        "",
        "| detector | AP@0.5, paper | AP@[.5:.95], paper | ours |",
        "| --- | ---: | ---: | --- |",
        f"| ResNet-101 C4 (`{DETECTION_RECIPE}`) | {ap50} | {ap} | {NOT_MADE} |",
        "",
        f"The recipe `{DETECTION_RECIPE}` (`python -m detection.train`) follows the paper's C4 design; training it to",
        "the paper's number needs COCO train2017 (118k images) and GPUs. Anything measured on the 80-image val",
        "subset in `../shared/data/coco` is a smoke test, not a reproduction of Table 8.",
        "",
    ]


def _shown(path: Path) -> str:
    """``path`` relative to the repository when it lies inside it."""
    try:
        return path.resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return path.as_posix()


def write_report(out: Path, runs_dir: Path) -> Path:
    """Render the report (and its PNG figures beside it)."""
    records = read_records(runs_dir) if runs_dir.is_dir() else {}
    by_recipe = _by_recipe(records)
    degradation_runs = _by_recipe(records, group="degradation") or by_recipe  # one schedule for all four curves
    figures = out.parent / "figures"
    lines = [
        "# Reproduction report: paper vs ours",
        "",
        "He, Zhang, Ren, Sun, *Deep Residual Learning for Image Recognition*, CVPR 2016, beside what this project",
        f"builds and measures. Generated by `python -m report.reproduction --output {_shown(out)}` from the model code",
        f"and the run records in `{_shown(runs_dir)}`; runs not made are shown as not made.",
        "",
        *table1_section(),
        *table6_section(by_recipe),
        *degradation_section(degradation_runs, figures, out),
        *imagenet_section(by_recipe),
        *detection_section(),
    ]
    return atomic_write_text(out, "\n".join(lines))


def main(argv: list[str] | None = None) -> Path:
    """CLI entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m report.reproduction",
        description=__doc__.splitlines()[0],
        formatter_class=cli.HelpFormatter,
    )
    parser.add_argument("--output", type=Path, default=Path("docs/REPRODUCTION.md"), help="Markdown file to write")
    parser.add_argument("--runs-dir", type=Path, default=Path("docs/runs"), help="folder of run records")
    args = parser.parse_args(argv)
    out = write_report(args.output, args.runs_dir)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    cli.entry_point(main)
