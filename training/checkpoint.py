"""Checkpoint files of both trainers: safe reads, and the state of every random number generator.

A checkpoint is a dict saved with ``torch.save`` that loads under ``weights_only=True``. Its ``format`` says what
it holds (``training.classifier`` and ``detection.checkpoint`` define theirs); while training, the engine adds
``optimizer``, ``scheduler``, ``epoch``, ``step``, ``rng``, ``metrics`` (one row per epoch) and ``run``.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from toolkit.atomic import atomic_write
from toolkit.errors import UsageError


def read_torch_state(path: str | os.PathLike, what: str, how_to_get: str, map_location: Any = "cpu") -> Any:
    """``torch.load(weights_only=True)``; a missing, truncated or non-torch file is a readable ``UsageError``."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{what} not found: {path} ({how_to_get})")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for truncated or non-torch files
        raise UsageError(
            f"cannot read {what} {path}: it is truncated, corrupt or not a torch file ({error.__class__.__name__}: "
            f"{str(error).splitlines()[0][:200]}). {how_to_get[0].upper()}{how_to_get[1:]}."
        ) from None


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike, format: str) -> Path:
    """Write ``state`` tagged with ``format`` to ``path`` atomically."""
    state = {**state, "format": format}
    return atomic_write(path, lambda stream: torch.save(state, stream))


def check_checkpoint(
    state: Any, path: str | os.PathLike, format: str, required: Sequence[str], what: str, how_to_get: str
) -> dict[str, Any]:
    """``state`` if it is a ``format`` checkpoint with every ``required`` key; UsageError saying what it is not."""
    found = state.get("format") if isinstance(state, dict) else type(state).__name__
    if found != format:
        raise UsageError(f"{path} is not a {what} (format {found!r}, expected {format!r}); {how_to_get}")
    missing = [key for key in required if key not in state]
    if missing:
        raise UsageError(f"{what} {path} lacks {', '.join(missing)}; {how_to_get}")
    return state


def rng_state() -> dict[str, Any]:
    """Every RNG's state (torch, CUDA, python, numpy) as tensors and numbers, so ``weights_only=True`` loads it."""
    version, python_state, gauss = random.getstate()
    _, numpy_keys, numpy_pos, numpy_has_gauss, numpy_gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": {"version": version, "state": torch.tensor(python_state, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "keys": torch.from_numpy(numpy_keys.astype(np.int64)),
            "pos": int(numpy_pos),
            "has_gauss": int(numpy_has_gauss),
            "gauss": float(numpy_gauss),
        },
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of ``rng_state``."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    python = state["python"]
    random.setstate((python["version"], tuple(python["state"].tolist()), python["gauss"]))
    numpy = state["numpy"]
    np.random.set_state(
        ("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"], numpy["gauss"])
    )


def seed_everything(seed: int) -> None:
    """Seed torch (all devices), python and numpy."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
