"""The project's checkpoint contract: atomic writes, safe loads, and rebuilding the model from a file.

A checkpoint is a dict saved with ``torch.save`` that loads under ``weights_only=True``:

- ``format``: ``"resnet-lab/1"``
- ``model_name``, ``model_options`` (kwargs for ``models.create_model``, ``num_classes`` included)
- ``model``: the state dict
- ``labels``: class names, index order
- ``preprocess``: ``{"mean": Tensor, "std": Tensor, "resize_size": int, "crop_size": int}``; the network
  input is ``(uint8 / 255 - mean) / std`` with mean/std broadcastable to ``[3, H, W]``
- ``recipe`` (dict), ``metrics`` (list of per-epoch dicts)
- training state when written by ``training.train``: ``optimizer``, ``scheduler``, ``epoch``, ``step``, ``rng``
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import nn

from models import create_model
from models.preprocess import NormalizedClassifier

FORMAT = "resnet-lab/1"
REQUIRED_KEYS = ("format", "model_name", "model_options", "model", "labels", "preprocess")


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(stream)`` on a temp file in ``path``'s folder, fsync, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temp_name, 0o644)  # mkstemp makes it owner-only; a served model must be readable by the server
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return path


def read_torch_state(path: str | os.PathLike, what: str, how_to_get: str, map_location: Any = "cpu") -> Any:
    """``torch.load(weights_only=True)``; a missing, truncated or non-torch file exits with a readable message."""
    path = Path(path)
    if not path.is_file():
        raise SystemExit(f"{what} not found: {path} ({how_to_get})")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for truncated or non-torch files
        raise SystemExit(
            f"cannot read {what} {path}: it is truncated, corrupt or not a torch file ({error.__class__.__name__}: "
            f"{str(error).splitlines()[0][:200]}). {how_to_get[0].upper()}{how_to_get[1:]}."
        ) from None


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``state`` to ``path`` atomically: a temp file in the same folder, fsync, then rename."""
    state = {"format": FORMAT, **state}
    return atomic_write(path, lambda stream: torch.save(state, stream))


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; a missing, truncated or foreign file exits clearly."""
    state = read_torch_state(path, "checkpoint", "train one with `python -m training.train ...`", map_location)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise SystemExit(
            f"{path} is not a resnet-lab checkpoint (expected a dict with format={FORMAT!r}); "
            "for torchvision weights use `python -m training.export --torchvision-state-dict FILE --arch NAME`"
        )
    missing = [key for key in REQUIRED_KEYS if key not in state]
    if missing:
        raise SystemExit(f"checkpoint {path} lacks {', '.join(missing)}; it was not written by training.train")
    return state


def model_from_checkpoint(state: dict[str, Any]) -> nn.Module:
    """Rebuild the bare network (float input) from a loaded checkpoint, weights loaded strictly."""
    model = create_model(state["model_name"], **state["model_options"])
    model.load_state_dict(state["model"], strict=True)
    return model


def classifier_from_checkpoint(state: dict[str, Any]) -> NormalizedClassifier:
    """The network wrapped with its input normalisation: uint8 images in, logits out."""
    preprocess = state["preprocess"]
    return NormalizedClassifier(model_from_checkpoint(state), preprocess["mean"], preprocess["std"])
