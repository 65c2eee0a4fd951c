"""Checks that need a CUDA device (skipped without one): the CUDA-graph training step against the eager one, in fp32
and with bf16 autocast (as training runs on a GPU).

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


def _run(
    graphed: bool, batches: list[tuple[torch.Tensor, torch.Tensor]], lrs: list[float], amp: bool
) -> torch.nn.Module:
    """ResNet-20 after one step per batch at the given lrs, graphed or eager."""
    torch.manual_seed(1)
    model = create_model("cifar_resnet20").cuda().to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=lrs[0], momentum=0.9, weight_decay=1e-4)
    step = GraphedTrainStep(model, optimizer, amp=amp, warmup_steps=2) if graphed else None
    for (images, labels), lr in zip(batches, lrs, strict=True):
        optimizer.param_groups[0]["lr"] = lr
        if step is not None:
            step(images, labels)
        else:
            train_step(model, images, labels, optimizer, amp=amp, graph_safe=True)
    torch.cuda.synchronize()
    if step is not None and len(batches) > 5:
        assert step.captures == 2 and step.replays >= 4  # one capture per lr, the rest replayed
    return model


def _distance(a: torch.nn.Module, b: torch.nn.Module) -> float:
    """L2 distance between two models' weights (buffers left out: BatchNorm's step counters would dominate)."""
    pairs = zip(a.parameters(), b.parameters(), strict=True)
    return sum(float((x.detach().float() - y.detach().float()).pow(2).sum()) for x, y in pairs) ** 0.5


@pytest.mark.parametrize("amp", [False, True], ids=["fp32", "bf16"])
def test_graphed_and_eager_steps_give_the_same_weights_across_an_lr_change(amp: bool) -> None:
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    generator = torch.Generator().manual_seed(0)
    batches = [
        (torch.randn(32, 3, 32, 32, generator=generator).cuda().contiguous(memory_format=torch.channels_last),
         torch.randint(0, 10, (32,), generator=generator).cuda())
        for _ in range(8)
    ]  # fmt: skip
    lrs = [0.1] * 5 + [0.01] * 3  # the paper's first drop, between captured steps
    eager, graphed = _run(False, batches, lrs, amp), _run(True, batches, lrs, amp)
    # the three steps after the drop moved the weights this far; replaying the old lr ends ~5x that far away
    moved = _distance(eager, _run(False, batches[:5], lrs[:5], amp))
    assert _distance(eager, graphed) < 0.05 * moved
    if not amp:  # fp32: the same kernels, so the same numbers
        for (name, a), b in zip(eager.state_dict().items(), graphed.state_dict().values(), strict=True):
            assert torch.allclose(a.float(), b.float(), rtol=1e-4, atol=1e-5), name
