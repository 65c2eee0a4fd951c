"""Residual building blocks and the paper's three shortcut options (Sec. 3.3, "Residual Network")."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SHORTCUT_OPTIONS = ("A", "B", "C")


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding and no bias (BN follows every conv)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution without bias."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False)


class ZeroPadShortcut(nn.Module):
    """Option A: identity with stride-2 subsampling and zero-padded extra channels; no parameters."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ValueError("option A can only widen the shortcut")
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        extra = self.out_channels - self.in_channels
        return F.pad(x, (0, 0, 0, 0, 0, extra)) if extra else x

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


def make_shortcut(option: str | None, in_channels: int, out_channels: int, stride: int) -> nn.Module | None:
    """Build the shortcut for one block; ``None`` means plain identity (or no shortcut for plain nets)."""
    if option is None:
        return None
    if option not in SHORTCUT_OPTIONS:
        raise ValueError(f"shortcut must be one of {SHORTCUT_OPTIONS}, got {option!r}")
    changes_shape = stride != 1 or in_channels != out_channels
    if option == "A":
        return ZeroPadShortcut(in_channels, out_channels, stride) if changes_shape else None
    if option == "B" and not changes_shape:
        return None
    # Named children 0/1 match torchvision's `downsample` so its state dicts load strictly.
    return nn.Sequential(conv1x1(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels))


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34 and the CIFAR nets); ``residual=False`` gives the plain twin."""

    expansion = 1

    def __init__(
        self,
        in_channels: int,
        planes: int,
        stride: int = 1,
        shortcut: str | None = "B",
        residual: bool = True,
        stride_in_1x1: bool = True,  # no 1x1 here: accepted so every block has one signature
    ) -> None:
        super().__init__()
        out_channels = planes * self.expansion
        self.residual = residual
        self.conv1 = conv3x3(in_channels, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = make_shortcut(shortcut if residual else None, in_channels, out_channels, stride)

    def last_bn(self) -> nn.BatchNorm2d:
        """The BN closing the residual branch (zeroed by ``zero_init_residual``)."""
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1-3x3-1x1 bottleneck (ResNet-50/101/152).

    ``stride_in_1x1=True`` strides the first 1x1 as in the paper (and Caffe's release);
    ``False`` strides the 3x3, torchvision's "v1.5" layout.
    """

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        planes: int,
        stride: int = 1,
        shortcut: str | None = "B",
        residual: bool = True,
        stride_in_1x1: bool = True,
    ) -> None:
        super().__init__()
        out_channels = planes * self.expansion
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.residual = residual
        self.conv1 = conv1x1(in_channels, planes, stride_1x1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride_3x3)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, out_channels)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = make_shortcut(shortcut if residual else None, in_channels, out_channels, stride)

    def last_bn(self) -> nn.BatchNorm2d:
        """The BN closing the residual branch (zeroed by ``zero_init_residual``)."""
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


Block = type[BasicBlock] | type[Bottleneck]


def make_stage(
    block: Block,
    in_channels: int,
    planes: int,
    num_blocks: int,
    stride: int,
    shortcut: str | None,
    residual: bool,
    stride_in_1x1: bool = True,
) -> tuple[nn.Sequential, int]:
    """Stack ``num_blocks`` blocks, the first one striding; return the stage and its output width."""
    layers = []
    for index in range(num_blocks):
        layers.append(
            block(
                in_channels,
                planes,
                stride=stride if index == 0 else 1,
                shortcut=shortcut,
                residual=residual,
                stride_in_1x1=stride_in_1x1,
            )
        )
        in_channels = planes * block.expansion
    return nn.Sequential(*layers), in_channels


def init_weights(model: nn.Module, zero_init_residual: bool) -> None:
    """He (MSRA) init for convs, unit-gamma BN; optionally zero each residual branch's last BN."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    if zero_init_residual:
        for module in model.modules():
            if isinstance(module, BasicBlock | Bottleneck):
                if not module.residual:
                    raise ValueError("zero_init_residual would zero every layer of a plain network")
                nn.init.zeros_(module.last_bn().weight)
