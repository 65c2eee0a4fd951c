"""Checks that need a CUDA device (skipped without one): the CUDA-graph training step against the eager one.

On a CPU the graphed step runs eagerly from its static buffers (tests/test_training.py); only a real capture can
bake a stale learning rate or stale inputs into the graph, so this compares real captures with eager steps.
"""

from __future__ import annotations

import pytest
import torch

from models import create_model
from training.steps import GraphedTrainStep, train_step

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _run(graphed: bool, batches: list[tuple[torch.Tensor, torch.Tensor]], lrs: list[float]) -> torch.nn.Module:
    torch.manual_seed(1)
    model = create_model("cifar_resnet20").cuda().to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=lrs[0], momentum=0.9, weight_decay=1e-4)
    step = GraphedTrainStep(model, optimizer, warmup_steps=2) if graphed else None
    for (images, labels), lr in zip(batches, lrs, strict=True):
        optimizer.param_groups[0]["lr"] = lr
        if step is not None:
            step(images, labels)
        else:
            train_step(model, images, labels, optimizer, graph_safe=True)
    torch.cuda.synchronize()
    if step is not None:
        assert step.captures == 2 and step.replays >= 4  # one capture per lr, the rest replayed
    return model


def test_graphed_and_eager_steps_give_the_same_weights_across_an_lr_change() -> None:
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    generator = torch.Generator().manual_seed(0)
    batches = [
        (torch.randn(32, 3, 32, 32, generator=generator).cuda().contiguous(memory_format=torch.channels_last),
         torch.randint(0, 10, (32,), generator=generator).cuda())
        for _ in range(8)
    ]  # fmt: skip
    lrs = [0.1] * 5 + [0.01] * 3  # the paper's first drop, between captured steps
    eager, graphed = _run(False, batches, lrs), _run(True, batches, lrs)
    for (name, a), b in zip(eager.state_dict().items(), graphed.state_dict().values(), strict=True):
        assert torch.allclose(a.float(), b.float(), rtol=1e-4, atol=1e-5), name
