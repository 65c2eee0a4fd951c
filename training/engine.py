"""The training engine both trainers share: epochs of steps, logs, evaluation, checkpoints, resume.

A trainer (``training.train`` for classification, ``detection.train`` for detection) builds a ``Task``: its model,
optimizer, schedule, batches, one step and an evaluation. ``fit`` runs it in a ``RunFolder`` under one process or
``torchrun``: it logs every ``log_every`` steps, evaluates after every epoch, writes ``checkpoints/last.pt`` (and
``best.pt`` when the run has validation data), and ``--resume`` continues exactly from ``last.pt``. ``start``,
``seed_process`` and ``batch_per_rank`` are the rules both trainers apply before building their ``Task``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from toolkit.errors import UsageError

from . import distributed
from .checkpoint import rng_state, save_checkpoint, seed_everything, set_rng_state
from .distributed import Context
from .run_folder import RunFolder, append_row
from .settings import RunOptions, run_options

# A step's statistics: sums over its images (e.g. "loss", "error") and "images", the count; device tensors.
StepStats = dict[str, torch.Tensor]


class Schedule:
    """The lr policy the engine drives; this base keeps the optimizer's lr as it is."""

    needs_step_stats = False  # True: ``after_step`` gets the batch's statistics averaged over all ranks

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer

    @property
    def lr(self) -> float:
        """The lr of the next step."""
        return float(self.optimizer.param_groups[0]["lr"])

    def set_lr(self, lr: float) -> None:
        """Set every parameter group's lr."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def before_step(self, step: int, epoch: int) -> None:
        """Called before global step ``step`` (0-based) of ``epoch``."""

    def after_step(self, stats: dict[str, float], step: int) -> None:
        """Called after a step with its averaged statistics when ``needs_step_stats``."""

    def after_epoch(self, selection_value: float) -> None:
        """Called after each epoch's evaluation with the metric that selects checkpoints."""

    def state_dict(self) -> dict[str, Any]:
        """What resuming needs."""
        return {"lr": self.lr}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict``."""
        self.set_lr(float(state["lr"]))


@dataclass(frozen=True)
class Selection:
    """Which evaluation metric picks ``best.pt`` (and feeds the schedule), and whether lower is better."""

    key: str
    lower_is_better: bool = True

    def improves(self, value: float, best: float | None) -> bool:
        """Whether ``value`` beats ``best``."""
        return best is None or (value < best if self.lower_is_better else value > best)


@dataclass
class Task:
    """Everything task-specific the engine runs."""

    model: nn.Module  # the weights checkpoints hold (not a DDP wrapper)
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    epoch_batches: Callable[[int], Iterable[Any]]  # the training batches of one epoch (a pure function of it)
    steps_per_epoch: int
    step: Callable[[Any], StepStats]  # one optimizer step on a batch
    evaluate: Callable[[], dict[str, float]]  # metrics after an epoch, already combined over ranks
    checkpoint_format: str
    describe: Callable[[], dict[str, Any]]  # the checkpoint's task-specific keys (model name, labels, recipe, ...)
    selection: Selection | None = None  # None: no validation data, so no best.pt
    fallback_selection_key: str | None = None  # what the schedule follows without validation data
    train_module: nn.Module | None = None  # the module the step runs (a DDP wrapper); defaults to ``model``
    run_info: dict[str, Any] = field(default_factory=dict)  # kept in the checkpoint's ``run`` (e.g. overrides)


@dataclass
class Progress:
    """Where a run stands; restored on resume."""

    epoch: int = 0
    step: int = 0
    wall_time: float = 0.0
    best: float | None = None
    metrics: list[dict[str, Any]] = field(default_factory=list)
    sessions: list[dict[str, Any]] = field(default_factory=list)  # one per invocation: epochs, hardware, versions


@dataclass(frozen=True)
class Plan:
    """How long the run is and how it reports."""

    epochs: int
    total_steps: int
    log_every: int = 20
    stop_after_epochs: int | None = None  # end this invocation early; --resume goes on


def start(
    options: RunOptions,
    recipe: str,
    run: RunFolder,
    load: Callable[[Path], dict[str, Any]],
    extra: tuple[str, ...] = (),
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """The checkpoint a resumed run continues (None for a new run) and the run-changing options that are set (the
    shared ``settings.RUN_OPTIONS`` and the trainer's ``extra``; on resume ``options`` already holds the recorded
    ones). ``recipe``: the recipe's name, which a resumed checkpoint must have been trained with."""
    run.check_start(options.resume)
    given = run_options(options, extra)
    if not options.resume:
        return None, given
    resumed = load(run.last)
    trained = resumed.get("recipe", {}).get("name")
    if trained != recipe:
        raise UsageError(f"cannot resume {run.last} with recipe {recipe!r}: it was trained with recipe {trained!r}")
    return resumed, {**resumed["run"]["overrides"], **given}


def recorded_options(output_dir: Path, load: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
    """The options the run in ``output_dir`` recorded (``RunOptions.recorded``); empty when it has no checkpoint
    yet (``start`` then says so) or its checkpoint predates recording them."""
    last = RunFolder(output_dir).last
    return dict(load(last)["run"].get("options", {})) if last.is_file() else {}


def seed_process(seed: int, context: Context) -> None:
    """Seed every RNG with ``seed + rank``: each process draws its own random stream (sampling, augmentation), and
    the weights still start equal on every rank because DDP broadcasts rank 0's when it wraps the model."""
    seed_everything(seed + context.rank)


def batch_per_rank(batch_size: int, context: Context) -> int:
    """Each process's share of the global batch; exits when the batch does not split evenly."""
    if batch_size % context.world_size:
        raise UsageError(
            f"--batch-size {batch_size} does not split evenly over {context.world_size} processes; "
            f"pick a multiple of {context.world_size}"
        )
    return batch_size // context.world_size


def restore(task: Task, resumed: dict[str, Any], run: RunFolder, context: Context) -> Progress:
    """Load weights, optimizer, schedule and RNGs from a checkpoint; forget log rows written after it."""
    task.model.load_state_dict(resumed["model"])
    task.optimizer.load_state_dict(resumed["optimizer"])
    task.schedule.load_state_dict(resumed["scheduler"])
    set_rng_state(resumed["rng"])
    progress = Progress(
        epoch=int(resumed["epoch"]),
        step=int(resumed["step"]),
        wall_time=float(resumed["run"]["wall_time"]),
        best=resumed["run"].get("best"),
        metrics=list(resumed["metrics"]),
        sessions=list(resumed["run"].get("sessions", [])),
    )
    if context.is_main:
        run.rewind_logs(progress.step)
    return progress


def fit(task: Task, plan: Plan, run: RunFolder, context: Context, resumed: dict[str, Any] | None) -> dict[str, Any]:
    """Train until ``plan.total_steps``; returns the last epoch's metrics row."""
    progress = restore(task, resumed, run, context) if resumed is not None else Progress()
    progress.sessions.append(
        {
            "epochs": [progress.epoch + 1, progress.epoch],  # first and last epoch trained in this invocation
            "hardware": distributed.describe(context),
            "torch": str(torch.__version__),  # TorchVersion is not a plain str: weights_only would refuse it
        }
    )
    if context.is_main:
        run.root.mkdir(parents=True, exist_ok=True)
    last_epoch = plan.epochs
    if plan.stop_after_epochs is not None:
        last_epoch = min(plan.epochs, progress.epoch + plan.stop_after_epochs)
    row = progress.metrics[-1] if progress.metrics else {}
    for epoch in range(progress.epoch, last_epoch):
        if progress.step >= plan.total_steps:
            break
        row = _run_epoch(task, plan, run, context, progress, epoch)
        distributed.barrier(context)
    return row


def _run_epoch(task: Task, plan: Plan, run: RunFolder, context: Context, progress: Progress, epoch: int) -> dict:
    """Train one epoch, evaluate, write the metrics row and the checkpoints."""
    trained = train_epoch(task, plan, run, context, epoch, progress.step)
    lr = task.schedule.lr  # the lr of the epoch's last step, before the epoch's evaluation may change it
    evaluated = task.evaluate()
    selected = _selection_value(task, evaluated)
    if selected is not None:
        task.schedule.after_epoch(selected)
    progress.epoch, progress.step = epoch + 1, trained.step
    progress.sessions[-1]["epochs"][1] = epoch + 1
    progress.wall_time += trained.seconds
    row = {
        "epoch": epoch + 1,
        "step": trained.step,
        **trained.means,
        **evaluated,
        "lr": lr,
        "images_per_s": trained.images / max(trained.seconds, 1e-9),
        "epoch_time": trained.seconds,
        "wall_time": progress.wall_time,
    }
    progress.metrics.append(row)
    improved = task.selection is not None and task.selection.improves(evaluated[task.selection.key], progress.best)
    if improved:
        progress.best = evaluated[task.selection.key]
    if context.is_main:
        state = _checkpoint_state(task, plan, context, progress)
        save_checkpoint(state, run.last, task.checkpoint_format)
        if improved:
            save_checkpoint(state, run.best, task.checkpoint_format)
        append_row(run.metrics, row)
        print(_summary(row, plan), flush=True)
    return row


def _selection_value(task: Task, evaluated: dict[str, float]) -> float | None:
    if task.selection is not None:
        return evaluated[task.selection.key]
    if task.fallback_selection_key is not None:
        return evaluated.get(task.fallback_selection_key)
    return None


def _checkpoint_state(task: Task, plan: Plan, context: Context, progress: Progress) -> dict[str, Any]:
    return {
        **task.describe(),
        "model": task.model.state_dict(),
        "optimizer": task.optimizer.state_dict(),
        "scheduler": task.schedule.state_dict(),
        "epoch": progress.epoch,
        "step": progress.step,
        "rng": rng_state(),
        "metrics": progress.metrics,
        "run": {
            **task.run_info,
            "wall_time": progress.wall_time,
            "best": progress.best,
            "selection": task.selection.key if task.selection else None,
            "sessions": progress.sessions,
            "world_size": context.world_size,
            "epochs": plan.epochs,
            "total_steps": plan.total_steps,
        },
    }


PRINTED = ("train_loss", "train_error", "_error", "_AP", "_AP50")  # the summary line's metrics (all go to the file)


def _summary(row: dict[str, Any], plan: Plan) -> str:
    """One printed line per epoch."""
    values = ", ".join(f"{key} {value:.4f}" for key, value in row.items() if key.endswith(PRINTED))
    return (
        f"epoch {row['epoch']}/{plan.epochs} step {row['step']}: {values}, lr {row['lr']:g}, "
        f"{row['images_per_s']:.0f} img/s, {row['epoch_time']:.1f} s"
    )


@dataclass
class EpochResult:
    """One epoch's training statistics over all ranks."""

    means: dict[str, float]  # "train_<stat>": per-image mean of each step statistic
    images: int
    seconds: float
    step: int


class _Window:
    """Sums of step statistics since the last log row, as one device vector (one all-reduce per row)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.keys: list[str] = []
        self.window: torch.Tensor | None = None
        self.total: torch.Tensor | None = None

    def add(self, stats: StepStats) -> torch.Tensor:
        if self.window is None:
            self.keys = list(stats)
            self.window = torch.zeros(len(self.keys), dtype=torch.float64, device=self.device)
            self.total = torch.zeros_like(self.window)
        vector = torch.stack([stats[key].detach().double().reshape(()) for key in self.keys])
        self.window += vector
        return vector

    def as_means(self, sums: list[float]) -> dict[str, float]:
        """``train_<stat>`` means per image from summed statistics (``images`` is the count)."""
        values = dict(zip(self.keys, sums, strict=True))
        images = max(values.get("images", 0.0), 1.0)
        return {f"train_{key}": value / images for key, value in values.items() if key != "images"}

    def flush(self, context: Context | None) -> list[float]:
        """The window's sums over all ranks (none when ``context`` is None); the window then starts again."""
        assert self.window is not None and self.total is not None
        reduced = distributed.all_reduce_sum(self.window.clone(), context).tolist() if context else []
        self.total += self.window
        self.window.zero_()
        return reduced

    def count(self, sums: list[float]) -> float:
        """The ``images`` entry of summed statistics."""
        return dict(zip(self.keys, sums, strict=True)).get("images", 0.0)


def _batches(task: Task, epoch: int, step: int, total_steps: int) -> Iterator[Any]:
    for batch in task.epoch_batches(epoch):
        if step >= total_steps:
            return
        yield batch
        step += 1


def train_epoch(task: Task, plan: Plan, run: RunFolder, context: Context, epoch: int, step: int) -> EpochResult:
    """Train until the epoch's batches run out or ``plan.total_steps`` is reached; log every ``plan.log_every``."""
    (task.train_module or task.model).train()
    window = _Window(context.device)
    steps_left = min(task.steps_per_epoch, plan.total_steps - step)
    progress = tqdm(total=steps_left, desc=f"epoch {epoch + 1}", disable=not context.is_main, leave=False)
    started = window_started = time.perf_counter()
    for batch in _batches(task, epoch, step, plan.total_steps):
        task.schedule.before_step(step, epoch)
        vector = window.add(task.step(batch))
        if task.schedule.needs_step_stats:
            reduced = distributed.all_reduce_sum(vector.clone(), context).tolist()
            task.schedule.after_step(window.as_means(reduced), step)
        step += 1
        progress.update(1)
        if step % plan.log_every == 0 or step == plan.total_steps:
            sums = window.flush(context)
            elapsed, window_started = time.perf_counter() - window_started, time.perf_counter()
            means = window.as_means(sums)
            row = {"step": step, "epoch": epoch + 1, **means, "lr": task.schedule.lr}
            row["images_per_s"] = window.count(sums) / max(elapsed, 1e-9)
            progress.set_postfix({key[6:]: f"{value:.3g}" for key, value in means.items() if key in PRINTED})
            if context.is_main:
                append_row(run.train_log, row)
    progress.close()
    seconds = time.perf_counter() - started
    if window.window is None:  # nothing left to train in this epoch
        return EpochResult({}, 0, seconds, step)
    window.flush(None)
    totals = distributed.all_reduce_sum(window.total.clone(), context).tolist()
    return EpochResult(window.as_means(totals), int(window.count(totals)), seconds, step)
