"""A tiny two-process CPU DDP job through torch.distributed.run (what ``torchrun`` is)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from training.classifier import load_classifier_checkpoint

REPO = Path(__file__).resolve().parents[1]


def test_two_process_gloo_job_trains_and_only_rank0_writes(cifar_dir, tmp_path):
    output = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "training.train", "--recipe", "cifar10_resnet20", "--data-dir", str(cifar_dir),
        "--output-dir", str(output), "--device", "cpu", "--epochs", "1",
        "--max-train-samples", "512", "--max-eval-samples", "200", "--log-every", "1",
    ]  # fmt: skip
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    state = load_classifier_checkpoint(output / "checkpoints" / "last.pt")
    assert state["run"]["world_size"] == 2
    # 512 images, global batch 128 = 64 per process: 4 steps, each seeing both processes' images
    assert state["step"] == 4
    log_rows = [json.loads(line) for line in (output / "train_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log_rows] == [1, 2, 3, 4]  # written once, by rank 0 alone
    epoch_rows = (output / "metrics.jsonl").read_text().splitlines()
    assert len(epoch_rows) == 1 and json.loads(epoch_rows[0])["test_error"] <= 1.0
    # no validation data (no --val-split), so no best.pt: the test set never picks weights
    assert sorted(path.name for path in (output / "checkpoints").iterdir()) == ["last.pt"]
