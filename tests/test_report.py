"""The reproduction report (real run records in, paper-vs-ours tables and curves out; nothing invented); provenance."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from inference.contract import DEFAULT_MODEL, DEFAULT_MODEL_DIR
from report import modelcard, provenance, runrecord
from report import reproduction as report
from toolkit.errors import UsageError


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
    out = report.main(["--output", str(tmp_path / "docs" / "REPRODUCTION.md"), "--runs-dir", str(runs)])
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
    with pytest.raises(UsageError, match="--recipe"):
        runrecord.record_run(run, tmp_path / "record", "cmd")


def test_committed_report_is_what_the_records_generate(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[1]
    out = report.write_report(tmp_path / "docs" / "REPRODUCTION.md", repo / "docs" / "runs")
    committed = (repo / "docs" / "REPRODUCTION.md").read_text()
    generated = out.read_text().replace((tmp_path / "docs").resolve().as_posix(), "docs")
    assert generated == committed, "docs/REPRODUCTION.md drifted: run `python -m report.reproduction`"


def test_committed_model_card_is_what_its_record_and_model_generate() -> None:
    # Every figure of the card comes from the run record and the ONNX metadata; a hand edit or a stale card fails.
    repo = Path(__file__).resolve().parents[1]
    committed = (DEFAULT_MODEL_DIR / "MODEL_CARD.md").read_text()
    record_dir = re.search(r"Run record: \[`([^`]+)`\]", committed).group(1)
    record = json.loads((repo / record_dir / runrecord.RECORD_FILE).read_text())
    generated = modelcard.model_card(modelcard.read_metadata(DEFAULT_MODEL), record, record_dir)
    assert generated == committed, f"the model card drifted: run `python -m report.modelcard --record {record_dir}`"


def test_provenance_keeps_the_module_form_and_writes_repo_paths_relative(monkeypatch: pytest.MonkeyPatch) -> None:
    repo = Path(__file__).resolve().parents[1]
    argv = ["/opt/venv/bin/python", "-m", "bench.decode_check", "--cifar-dir", "/tmp/scratch/cifar",
            "--out", str(repo / "docs" / "bench"), f"--checkpoint={repo / 'runs' / 'last.pt'}"]  # fmt: skip
    monkeypatch.setattr(sys, "orig_argv", argv)
    block = provenance.provenance()
    assert block["command"] == (
        "python -m bench.decode_check --cifar-dir /tmp/scratch/cifar --out docs/bench --checkpoint=runs/last.pt"
    )
    assert block["gpu"] is None or block["gpu"]["devices"][0] in block["machine"]


def test_dirty_ignores_benchmark_results_but_not_code(tmp_path: Path) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)  # fmt: skip

    (tmp_path / "docs" / "examples").mkdir(parents=True)
    (tmp_path / "docs" / "examples" / "answer.json").write_text("{}")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "first")
    (tmp_path / "docs" / "bench").mkdir()
    (tmp_path / "docs" / "bench" / "serve.json").write_text("{}")  # a new result file
    (tmp_path / "docs" / "examples" / "answer.json").write_text('{"new": 1}')  # a result file rewritten
    assert not provenance.commit(tmp_path).endswith("+dirty")
    (tmp_path / "code.py").write_text("x = 2\n")
    assert provenance.commit(tmp_path).endswith("+dirty")
