"""CIFAR-10 ResNets and plain nets of depth 6n+2 (paper Sec. 4.2)."""

from __future__ import annotations

import torch
from torch import nn

from .blocks import BasicBlock, init_weights, make_stage
from .registry import register_model

STAGE_WIDTHS = (16, 32, 64)
STAGE_STRIDES = (1, 2, 2)


class CifarResNet(nn.Module):
    """3x3 stem with 16 filters, three stages of n blocks on 32/16/8 maps, global average pool, FC."""

    input_size = 32

    def __init__(
        self,
        depth: int,
        num_classes: int = 10,
        shortcut: str | None = "A",
        residual: bool = True,
        stride_in_1x1: bool = True,  # basic blocks only: accepted for one `create_model` signature
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        if (depth - 2) % 6 or depth < 8:
            raise ValueError(f"CIFAR networks have depth 6n+2 (20, 32, 44, 56, 110, 1202...), got {depth}")
        blocks_per_stage = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        channels = 16
        for index, (width, stride) in enumerate(zip(STAGE_WIDTHS, STAGE_STRIDES, strict=True)):
            stage, channels = make_stage(BasicBlock, channels, width, blocks_per_stage, stride, shortcut, residual)
            self.add_module(f"layer{index + 1}", stage)
        self.num_features = channels
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        init_weights(self, zero_init_residual)

    def stages(self) -> list[nn.Sequential]:
        """The three stages on 32x32, 16x16 and 8x8 maps."""
        return [self.layer1, self.layer2, self.layer3]

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """The first 3x3 conv layer."""
        return self.relu(self.bn1(self.conv1(x)))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map (64 x 8 x 8 for a 32x32 input)."""
        x = self.stem(x)
        for stage in self.stages():
            x = stage(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.forward_features(x)), 1))


def _cifar(depth: int, residual: bool, **options) -> CifarResNet:
    if not residual and options.pop("shortcut", None) is not None:
        raise ValueError("plain networks have no shortcuts; do not pass `shortcut`")
    options.setdefault("shortcut", "A" if residual else None)
    return CifarResNet(depth, residual=residual, **options)


CIFAR_DEPTHS = (20, 32, 44, 56, 110, 1202)


def _register_cifar(depth: int, residual: bool) -> None:
    kind = "resnet" if residual else "plain"

    def constructor(**options) -> CifarResNet:
        return _cifar(depth, residual, **options)

    constructor.__name__ = f"cifar_{kind}{depth}"
    constructor.__doc__ = f"CIFAR-10 {'ResNet' if residual else 'plain net'}-{depth} (n={(depth - 2) // 6})."
    register_model(constructor.__name__, family="cifar10", depth=depth, residual=residual)(constructor)
    globals()[constructor.__name__] = constructor


for _depth in CIFAR_DEPTHS:
    _register_cifar(_depth, residual=True)
    _register_cifar(_depth, residual=False)
