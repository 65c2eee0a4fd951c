"""One rank of a two-process gloo job (run by ``torch.distributed.run``): rank 1's loss is NaN at the second step.
Writes ``rank R stopped at step S: MESSAGE`` to ``$NAN_RESULTS/rank{R}.txt`` when the detection step refuses the loss
(a file per rank: the ranks' output reaches torchrun's stdout in no promised order or completeness)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from detection.train import loss_step
from toolkit.errors import UsageError
from training import distributed


class Losses(nn.Module):
    """A stand-in for Faster R-CNN's loss dict: one weight, and a NaN on rank 1 from the second step."""

    def __init__(self, rank: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1))
        self.rank, self.calls = rank, 0

    def forward(self, images: list[torch.Tensor], targets: list[dict]) -> dict[str, torch.Tensor]:
        self.calls += 1
        poison = float("nan") if self.rank == 1 and self.calls >= 2 else 0.0
        return {"loss_classifier": (self.weight * images[0].mean()).sum() + poison}


def main() -> None:
    context = distributed.setup("cpu")
    model = Losses(context.rank)
    train_model = distributed.wrap(model, context)
    step = loss_step(train_model, torch.optim.SGD(model.parameters(), lr=0.1), context)
    for index in range(1, 5):
        try:
            step(([torch.ones(3, 4, 4)], [{}]))
        except UsageError as error:
            result = Path(os.environ["NAN_RESULTS"]) / f"rank{context.rank}.txt"
            result.write_text(f"rank {context.rank} stopped at step {index}: {error}")
            break
    distributed.cleanup()


if __name__ == "__main__":
    main()
