"""The reproduction report: real run records in, paper-vs-ours tables and curves out; nothing invented."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from report import reproduction as report
from report import runrecord


def _fake_run(folder: Path, errors: list[tuple[float, float]]) -> Path:
    """A run's logs as training.train writes them (one metrics row per epoch); no checkpoint kept."""
    folder.mkdir(parents=True)
    rows = [
        {"epoch": epoch, "step": 391 * epoch, "train_error": train, "test_error": test, "wall_time": 5.0 * epoch}
        for epoch, (train, test) in enumerate(errors, start=1)
    ]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder


def test_records_drive_the_report_and_missing_runs_stay_missing(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    shapes = {"plain20": [(0.5, 0.5), (0.2, 0.22)], "plain56": [(0.7, 0.7), (0.5, 0.48)]}
    for name, errors in shapes.items():
        runrecord.main(
            [
                str(_fake_run(tmp_path / name, errors)),
                "--runs-dir",
                str(runs),
                "--recipe",
                f"cifar10_{name}",
                "--group",
                "degradation",
                "--hardware",
                "a test machine",
                "--command",
                f"python -m training.train --recipe cifar10_{name} --epochs 2",
            ]
        )
    out = report.main(["--out", str(tmp_path / "docs" / "REPRODUCTION.md"), "--runs-dir", str(runs)])
    text = out.read_text()
    assert "| resnet50 | 50 | 25,557,032 |" in text  # Table 1 from the model code
    assert "| ResNet-20 | 0.27M | 0.270M | 8.75% | not made |" in text  # no run, no number
    assert "shortened: 2 epochs, 782 of the paper's 64,000 iterations" in text
    assert "plain: the 56-layer net ends with higher training error than the 20-layer one (50.00% vs 20.00%)" in text
    assert (tmp_path / "docs" / "figures" / "degradation_plain.png").stat().st_size > 10_000
    assert "Not made yet: cifar10_resnet20, cifar10_resnet56" in text
    assert "48.4" in text and "27.2" in text  # Table 8's row is always shown beside what we measured


def test_record_without_checkpoint_or_recipe_is_a_clear_error(tmp_path: Path) -> None:
    run = _fake_run(tmp_path / "run", [(0.5, 0.5)])
    with pytest.raises(SystemExit, match="--recipe"):
        runrecord.record_run(run, tmp_path / "record", "cmd")


def test_committed_report_is_what_the_records_generate(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[1]
    out = report.write_report(tmp_path / "docs" / "REPRODUCTION.md", repo / "docs" / "runs")
    committed = (repo / "docs" / "REPRODUCTION.md").read_text()
    generated = out.read_text().replace((tmp_path / "docs").resolve().as_posix(), "docs")
    assert generated == committed, "docs/REPRODUCTION.md drifted: run `python -m report.reproduction`"
