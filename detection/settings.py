"""Detection's settings, typed, in one place: a training run's options (``DetectionTrainOptions``, the
``python -m detection.train`` flags), where an evaluation on Ray runs (``RayOptions``; its runtime settings are the
server's ``RESNET_LAB_RUNTIME`` and ``RESNET_LAB_PRECISION``) and the COCO folder's environment variable
(``RESNET_LAB_COCO``, the default of every ``--coco-root``)."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inference.settings import InferenceSettings
from training.settings import RunOptions

COCO_ENV = "RESNET_LAB_COCO"  # where --coco-root points when it is not given


def coco_root_from_env() -> str | None:
    """``$RESNET_LAB_COCO``, or None when it is unset."""
    return os.environ.get(COCO_ENV) or None


def add_coco_root_argument(parser: argparse.ArgumentParser) -> None:
    """``--coco-root``, read from ``$RESNET_LAB_COCO`` when not given."""
    current = coco_root_from_env()
    parser.add_argument(
        "--coco-root",
        default=current,
        help="COCO folder holding annotations/ and the split folders "
        f"(default: ${COCO_ENV}, {'now ' + current if current else 'unset now'})",
    )


@dataclass(frozen=True, kw_only=True)
class DetectionTrainOptions(RunOptions):
    """One detection run (``python -m detection.train`` flags); ``recipe_fields`` override the recipe's."""

    coco_root: Path
    recipe: str = "coco_resnet50_c4"
    backbone_checkpoint: Path | None = None  # a classification checkpoint of training.train; or from_scratch
    from_scratch: bool = False
    recipe_fields: dict[str, Any] = field(default_factory=dict)

    def recorded(self) -> dict[str, Any]:
        """As ``RunOptions.recorded``; the recipe itself, fields included, is in the checkpoint already."""
        return {name: value for name, value in super().recorded().items() if name != "recipe_fields"}


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide ``detect_ray`` runs (``batch.Options``' cluster fields), and on which runtime."""

    address: str = ""  # empty: a new local Ray on this machine
    actors: int | None = None  # None: as many as the cluster holds
    cpus_per_actor: float = 1.0
    cpus_per_task: float = 1.0
    inference: InferenceSettings = field(default_factory=InferenceSettings)
