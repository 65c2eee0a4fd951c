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


@register_model("cifar_resnet20", family="cifar10", depth=20, residual=True)
def cifar_resnet20(**options) -> CifarResNet:
    """CIFAR-10 ResNet-20 (n=3)."""
    return _cifar(20, residual=True, **options)


@register_model("cifar_resnet32", family="cifar10", depth=32, residual=True)
def cifar_resnet32(**options) -> CifarResNet:
    """CIFAR-10 ResNet-32 (n=5)."""
    return _cifar(32, residual=True, **options)


@register_model("cifar_resnet44", family="cifar10", depth=44, residual=True)
def cifar_resnet44(**options) -> CifarResNet:
    """CIFAR-10 ResNet-44 (n=7)."""
    return _cifar(44, residual=True, **options)


@register_model("cifar_resnet56", family="cifar10", depth=56, residual=True)
def cifar_resnet56(**options) -> CifarResNet:
    """CIFAR-10 ResNet-56 (n=9)."""
    return _cifar(56, residual=True, **options)


@register_model("cifar_resnet110", family="cifar10", depth=110, residual=True)
def cifar_resnet110(**options) -> CifarResNet:
    """CIFAR-10 ResNet-110 (n=18)."""
    return _cifar(110, residual=True, **options)


@register_model("cifar_resnet1202", family="cifar10", depth=1202, residual=True)
def cifar_resnet1202(**options) -> CifarResNet:
    """CIFAR-10 ResNet-1202 (n=200)."""
    return _cifar(1202, residual=True, **options)


@register_model("cifar_plain20", family="cifar10", depth=20, residual=False)
def cifar_plain20(**options) -> CifarResNet:
    """CIFAR-10 plain net-20 (n=3)."""
    return _cifar(20, residual=False, **options)


@register_model("cifar_plain32", family="cifar10", depth=32, residual=False)
def cifar_plain32(**options) -> CifarResNet:
    """CIFAR-10 plain net-32 (n=5)."""
    return _cifar(32, residual=False, **options)


@register_model("cifar_plain44", family="cifar10", depth=44, residual=False)
def cifar_plain44(**options) -> CifarResNet:
    """CIFAR-10 plain net-44 (n=7)."""
    return _cifar(44, residual=False, **options)


@register_model("cifar_plain56", family="cifar10", depth=56, residual=False)
def cifar_plain56(**options) -> CifarResNet:
    """CIFAR-10 plain net-56 (n=9)."""
    return _cifar(56, residual=False, **options)


@register_model("cifar_plain110", family="cifar10", depth=110, residual=False)
def cifar_plain110(**options) -> CifarResNet:
    """CIFAR-10 plain net-110 (n=18)."""
    return _cifar(110, residual=False, **options)


@register_model("cifar_plain1202", family="cifar10", depth=1202, residual=False)
def cifar_plain1202(**options) -> CifarResNet:
    """CIFAR-10 plain net-1202 (n=200)."""
    return _cifar(1202, residual=False, **options)
