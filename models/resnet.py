"""ImageNet ResNets and their plain twins (paper Table 1)."""

from __future__ import annotations

import torch
from torch import nn

from .blocks import BasicBlock, Block, Bottleneck, init_weights, make_stage
from .registry import register_model

STAGE_WIDTHS = (64, 128, 256, 512)
STAGE_STRIDES = (1, 2, 2, 2)


class ResNet(nn.Module):
    """7x7 stem, max-pool, four stages (conv2_x..conv5_x), global average pool, FC.

    Attribute names follow torchvision's ``ResNet`` so its state dicts load strictly.
    """

    def __init__(
        self,
        block: Block,
        layers: list[int],
        num_classes: int = 1000,
        shortcut: str | None = "B",
        residual: bool = True,
        stride_in_1x1: bool = True,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        channels = 64
        stage_specs = zip(STAGE_WIDTHS, STAGE_STRIDES, layers, strict=True)
        for index, (width, stride, num_blocks) in enumerate(stage_specs):
            stage, channels = make_stage(block, channels, width, num_blocks, stride, shortcut, residual, stride_in_1x1)
            self.add_module(f"layer{index + 1}", stage)
        self.num_features = channels
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        init_weights(self, zero_init_residual)

    def stages(self) -> list[nn.Sequential]:
        """The four residual stages, conv2_x..conv5_x."""
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """conv1 and the max-pool (stride 4)."""
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map (conv5_x output, stride 32)."""
        x = self.stem(x)
        for stage in self.stages():
            x = stage(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.forward_features(x)), 1))


def _resnet(block: Block, layers: list[int], residual: bool, **options) -> ResNet:
    if not residual and options.pop("shortcut", None) is not None:
        raise ValueError("plain networks have no shortcuts; do not pass `shortcut`")
    options.setdefault("shortcut", "B" if residual else None)
    return ResNet(block, layers, residual=residual, **options)


LAYERS = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}


@register_model("resnet18", family="imagenet", depth=18)
def resnet18(**options) -> ResNet:
    """ResNet-18 (basic blocks)."""
    return _resnet(BasicBlock, LAYERS[18], residual=True, **options)


@register_model("resnet34", family="imagenet", depth=34)
def resnet34(**options) -> ResNet:
    """ResNet-34 (basic blocks)."""
    return _resnet(BasicBlock, LAYERS[34], residual=True, **options)


@register_model("resnet50", family="imagenet", depth=50)
def resnet50(**options) -> ResNet:
    """ResNet-50 (bottlenecks)."""
    return _resnet(Bottleneck, LAYERS[50], residual=True, **options)


@register_model("resnet101", family="imagenet", depth=101)
def resnet101(**options) -> ResNet:
    """ResNet-101 (bottlenecks)."""
    return _resnet(Bottleneck, LAYERS[101], residual=True, **options)


@register_model("resnet152", family="imagenet", depth=152)
def resnet152(**options) -> ResNet:
    """ResNet-152 (bottlenecks)."""
    return _resnet(Bottleneck, LAYERS[152], residual=True, **options)


@register_model("plain18", family="imagenet", depth=18, residual=False)
def plain18(**options) -> ResNet:
    """Plain-18: ResNet-18 without shortcuts."""
    return _resnet(BasicBlock, LAYERS[18], residual=False, **options)


@register_model("plain34", family="imagenet", depth=34, residual=False)
def plain34(**options) -> ResNet:
    """Plain-34: ResNet-34 without shortcuts."""
    return _resnet(BasicBlock, LAYERS[34], residual=False, **options)


@register_model("plain50", family="imagenet", depth=50, residual=False)
def plain50(**options) -> ResNet:
    """Plain-50: ResNet-50 without shortcuts."""
    return _resnet(Bottleneck, LAYERS[50], residual=False, **options)


@register_model("plain101", family="imagenet", depth=101, residual=False)
def plain101(**options) -> ResNet:
    """Plain-101: ResNet-101 without shortcuts."""
    return _resnet(Bottleneck, LAYERS[101], residual=False, **options)


@register_model("plain152", family="imagenet", depth=152, residual=False)
def plain152(**options) -> ResNet:
    """Plain-152: ResNet-152 without shortcuts."""
    return _resnet(Bottleneck, LAYERS[152], residual=False, **options)
