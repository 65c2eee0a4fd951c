"""A two-process CPU DDP job through torch.distributed.run (what ``torchrun`` is): it trains, only rank 0 writes,
and its weights are those of one process stepping on the same global batches (gradients really are averaged)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from models import create_model
from training import cifar10
from training.classifier import load_classifier_checkpoint
from training.recipes import get_recipe
from training.schedule import PaperSchedule
from training.train import plan_steps

REPO = Path(__file__).resolve().parents[1]
SAMPLES, GLOBAL_BATCH, WORLD = 512, 128, 2


def run_ddp(cifar_dir: Path, output: Path) -> None:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}",
        "-m", "training.train", "--recipe", "cifar10_resnet20", "--data-dir", str(cifar_dir),
        "--output-dir", str(output), "--device", "cpu", "--epochs", "1",
        "--max-train-samples", str(SAMPLES), "--max-eval-samples", "200", "--log-every", "1",
    ]  # fmt: skip
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def one_process_reference(cifar_dir: Path, ranks: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """Parameters after one epoch stepping, in one process, on the given ranks' shards of every global batch.

    Each shard runs its own forward (BatchNorm sees the shard, as in DDP) and the gradients are averaged. One thread,
    as each DDP process has: another thread count sums in another order, which 4 steps amplify to ~1e-3 in conv1.
    """
    torch.set_flush_denormal(True)
    torch.manual_seed(0)  # what training.train seeds with (--seed unset)
    split, _ = cifar10.split_train_val(cifar10.load_cifar10(cifar_dir, train=True), 0, SAMPLES)
    mean = cifar10.mean_image(split)
    model = create_model("cifar_resnet20", num_classes=10).to(memory_format=torch.channels_last)
    recipe = get_recipe("cifar10_resnet20")
    optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=1e-4)
    shards = [
        cifar10.CifarTrainBatches(split, mean, GLOBAL_BATCH // WORLD, 0, rank, WORLD, channels_last=True).epoch(0)
        for rank in ranks
    ]
    _, total, milestones = plan_steps(recipe, 1, SAMPLES // GLOBAL_BATCH)
    schedule = PaperSchedule(optimizer, recipe, total, milestones)
    for step, batches in enumerate(zip(*shards, strict=True)):
        schedule.before_step(step, 0)
        optimizer.zero_grad()
        for images, labels in batches:
            (F.cross_entropy(model(images), labels) / len(batches)).backward()
        optimizer.step()
    return dict(model.named_parameters())


def test_two_process_gloo_job_averages_gradients_and_only_rank0_writes(cifar_dir, tmp_path):
    output = tmp_path / "ddp"
    run_ddp(cifar_dir, output)
    state = load_classifier_checkpoint(output / "checkpoints" / "last.pt")
    assert state["run"]["world_size"] == WORLD
    # 512 images, global batch 128 = 64 per process: 4 steps, each seeing both processes' images
    assert state["step"] == 4
    log_rows = [json.loads(line) for line in (output / "train_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log_rows] == [1, 2, 3, 4]  # written once, by rank 0 alone
    epoch_rows = (output / "metrics.jsonl").read_text().splitlines()
    assert len(epoch_rows) == 1 and json.loads(epoch_rows[0])["test_error"] <= 1.0
    # no validation data (no --val-split), so no best.pt: the test set never picks weights
    assert sorted(path.name for path in (output / "checkpoints").iterdir()) == ["last.pt"]

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        averaged = one_process_reference(cifar_dir, ranks=(0, 1))
        rank0_alone = one_process_reference(cifar_dir, ranks=(0,))
    finally:
        torch.set_num_threads(threads)
    for name, reference in averaged.items():
        trained = state["model"][name]
        assert torch.allclose(trained, reference.detach(), rtol=1e-5, atol=1e-7), name
    differs = [name for name, alone in rank0_alone.items() if not torch.allclose(state["model"][name], alone.detach())]
    assert differs, "rank 0's own gradients alone give the same weights: the comparison would not see a missing average"


def test_a_loss_that_is_not_finite_on_one_rank_stops_every_rank_at_the_same_step(tmp_path) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}",
               "-m", "tests.ddp_nan_worker"]  # fmt: skip
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "NAN_RESULTS": str(tmp_path)}
    result = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=120)
    output = result.stdout[-3000:] + result.stderr[-3000:]
    assert result.returncode == 0, output
    stopped = [path.read_text() for path in sorted(tmp_path.glob("rank*.txt"))]
    assert [line.split(":")[0] for line in stopped] == ["rank 0 stopped at step 2", "rank 1 stopped at step 2"], output
    assert all("lower --lr" in line for line in stopped)
