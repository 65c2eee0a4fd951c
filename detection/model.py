"""Faster R-CNN on the project's ResNets, assembled from torchvision's detection building blocks.

C4 (the paper's design, Appendix A): conv1..conv4_x is the shared trunk (stride 16 on ImageNet nets); the RPN
proposes boxes on it; RoIAlign cuts 14x14 features per proposal; conv5_x runs per region, then global average
pooling and ``FastRCNNPredictor`` (class scores + per-class box deltas). The generic rule is "all stages but the
last form the trunk, the last stage is the box head", so CIFAR-sized nets work too (trunk stride 2).
FPN (option): torchvision's ``BackboneWithFPN`` over all stages with the standard two-layer MLP box head.
FPN v2 (option): BatchNorm after every FPN conv, a two-conv RPN head and a four-conv + FC box head
(``FastRCNNConvFCHead``), the design of torchvision's ``fasterrcnn_resnet50_fpn_v2``.
"""

from __future__ import annotations

import contextlib
import re
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.ops.misc import FrozenBatchNorm2d

from detection.recipes import DetectionRecipe
from models import create_model
from models.registry import FAMILY_INPUTS

STEM_NAMES = ("conv1", "bn1", "relu", "maxpool")
FPN_CHANNELS = 256
BATCHNORMS = (nn.BatchNorm2d, FrozenBatchNorm2d)


def freeze_batchnorm(module: nn.Module, eps: float | None = None) -> nn.Module:
    """Replace every BatchNorm2d by a FrozenBatchNorm2d holding the same statistics and affine parameters (and
    ``eps``, default: each BatchNorm's own)."""
    if isinstance(module, nn.BatchNorm2d):
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps if eps is None else eps)
        if module.affine:
            frozen.weight.copy_(module.weight.detach())
            frozen.bias.copy_(module.bias.detach())
        if module.track_running_stats:
            frozen.running_mean.copy_(module.running_mean)
            frozen.running_var.copy_(module.running_var)
        return frozen
    for name, child in module.named_children():
        replacement = freeze_batchnorm(child, eps)
        if replacement is not child:
            setattr(module, name, replacement)
    return module


def _conv_bn_pairs(module: nn.Module) -> list[tuple[str, str]]:
    """(conv, BatchNorm) child names where the BatchNorm reads the conv's output: consecutive children of a
    Sequential, or ``convN`` / ``bnN`` of a block (the ResNet blocks' and stems' naming, as torchvision's)."""
    children = dict(module.named_children())
    names = list(children)
    if isinstance(module, nn.Sequential):
        candidates = list(zip(names, names[1:], strict=False))
    else:
        candidates = [(name, "bn" + match.group(1)) for name in names if (match := re.fullmatch(r"conv(\d+)", name))]
    return [
        (conv, bn)
        for conv, bn in candidates
        if isinstance(children[conv], nn.Conv2d) and isinstance(children.get(bn), BATCHNORMS)
    ]


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> int:
    """For inference: fold each eval-mode BatchNorm into the conv before it (one conv with a bias instead of a conv,
    a multiply and an add); returns how many were folded. The model must be in eval mode and stay there."""
    if any(module.training for module in model.modules()):
        raise ValueError("fold_batchnorm changes the model for inference only: call model.eval() first")
    folded = 0
    for module in list(model.modules()):
        for conv_name, bn_name in _conv_bn_pairs(module):
            conv, bn = getattr(module, conv_name), getattr(module, bn_name)
            setattr(module, conv_name, fuse_conv_bn_eval(conv, bn))
            setattr(module, bn_name, nn.Identity())
            folded += 1
    return folded


def stem_names(net: nn.Module) -> list[str]:
    """Names of the stem modules this network has (CIFAR nets have no max-pool)."""
    return [name for name in STEM_NAMES if hasattr(net, name)]


def stage_names(net: nn.Module) -> list[str]:
    """Attribute names of the residual stages, conv2_x first."""
    stages = net.stages()
    return [name for name, child in net.named_children() if any(child is stage for stage in stages)]


def freeze_early_layers(net: nn.Module, trainable_stages: int) -> None:
    """Train only the last ``trainable_stages`` stages; more than the stage count also trains the stem."""
    stages = stage_names(net)
    if not 0 <= trainable_stages <= len(stages) + 1:
        raise ValueError(f"trainable_stages must be in 0..{len(stages) + 1} for this network, got {trainable_stages}")
    trainable = stages[len(stages) - min(trainable_stages, len(stages)) :]
    if trainable_stages > len(stages):
        trainable += stem_names(net)
    for name in stem_names(net) + stages:
        for parameter in getattr(net, name).parameters():
            parameter.requires_grad_(name in trainable)


@torch.no_grad()
def stage_channels(net: nn.Module) -> list[int]:
    """Output channels of each stage, measured with one tiny forward pass."""
    was_training = net.training
    net.eval()
    x = net.stem(torch.zeros(1, 3, 64, 64))
    channels = []
    for stage in net.stages():
        x = stage(x)
        channels.append(x.shape[1])
    net.train(was_training)
    return channels


class ResNetTrunk(nn.Sequential):
    """Stem and every stage but the last: the shared C4 feature map. Keeps the classifier's attribute names."""

    def __init__(self, net: nn.Module) -> None:
        names = stem_names(net) + stage_names(net)[:-1]
        super().__init__(OrderedDict((name, getattr(net, name)) for name in names))
        self.out_channels = stage_channels(net)[-2]


class ResNetStageBoxHead(nn.Module):
    """The last stage (conv5_x) applied to each pooled RoI, then global average pooling: [R, C, 14, 14] -> [R, C']."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        last = stage_names(net)[-1]
        self.add_module(last, getattr(net, last))
        self.stage_name = last
        self.out_channels = stage_channels(net)[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(nn.functional.adaptive_avg_pool2d(getattr(self, self.stage_name)(x), 1), 1)


def prepare_backbone(net: nn.Module, recipe: DetectionRecipe) -> nn.Module:
    """Convert the classifier's BN as the recipe says (frozen or trainable) and freeze its early layers."""
    if recipe.norm == "frozen":
        freeze_batchnorm(net, recipe.norm_eps)
    elif recipe.norm == "batch":
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eps = recipe.norm_eps
    else:
        raise ValueError(f"norm must be 'frozen' or 'batch', got {recipe.norm!r}")
    freeze_early_layers(net, recipe.trainable_stages)
    return net


def fresh_backbone(arch: str, model_options: dict[str, Any] | None, recipe: DetectionRecipe) -> nn.Module:
    """A randomly initialised backbone (from scratch, or a shell whose weights a detection checkpoint fills)."""
    return prepare_backbone(create_model(arch, **dict(model_options or {})), recipe)


def c4_heads(recipe: DetectionRecipe, net: nn.Module, num_classes: int) -> dict[str, nn.Module]:
    """The paper's C4 parts: conv1..conv4_x shared, RoIAlign on it, conv5_x per region, one predictor."""
    box_head = ResNetStageBoxHead(net)
    return {
        "backbone": ResNetTrunk(net),
        "rpn_anchor_generator": AnchorGenerator(
            sizes=(tuple(recipe.anchor_sizes),), aspect_ratios=(tuple(recipe.aspect_ratios),)
        ),
        "box_roi_pool": MultiScaleRoIAlign(featmap_names=["0"], output_size=recipe.roi_output_size, sampling_ratio=0),
        "box_head": box_head,
        "box_predictor": FastRCNNPredictor(box_head.out_channels, num_classes),
    }


def fpn_heads(
    recipe: DetectionRecipe, net: nn.Module, num_classes: int, norm_layer: type[nn.Module] | None = None
) -> dict[str, nn.Module]:
    """The FPN option: a feature pyramid over every stage, one anchor size per level, a two-layer MLP box head."""
    names = stage_names(net)
    levels = len(names) + 1
    if len(recipe.anchor_sizes) != levels:
        raise ValueError(f"FPN over {len(names)} stages has {levels} levels: give {levels} anchor sizes")
    return {
        "backbone": BackboneWithFPN(
            net,
            return_layers={name: str(index) for index, name in enumerate(names)},
            in_channels_list=stage_channels(net),
            out_channels=FPN_CHANNELS,
            extra_blocks=LastLevelMaxPool(),
            norm_layer=norm_layer,
        ),
        "rpn_anchor_generator": AnchorGenerator(
            sizes=tuple((size,) for size in recipe.anchor_sizes),
            aspect_ratios=(tuple(recipe.aspect_ratios),) * levels,
        ),
        "box_roi_pool": MultiScaleRoIAlign(
            featmap_names=[str(index) for index in range(len(names))],
            output_size=recipe.roi_output_size,
            sampling_ratio=2,
        ),
        "box_head": TwoMLPHead(FPN_CHANNELS * recipe.roi_output_size**2, 1024),
        "box_predictor": FastRCNNPredictor(1024, num_classes),
    }


def fpn_v2_heads(recipe: DetectionRecipe, net: nn.Module, num_classes: int) -> dict[str, nn.Module]:
    """FPN v2: BatchNorm after each FPN conv, two 3x3 convs in the RPN head, four 3x3 convs (with BatchNorm) and one
    FC layer in the box head."""
    parts = fpn_heads(recipe, net, num_classes, norm_layer=nn.BatchNorm2d)
    pooled = (FPN_CHANNELS, recipe.roi_output_size, recipe.roi_output_size)
    anchors_per_location = parts["rpn_anchor_generator"].num_anchors_per_location()[0]
    parts["rpn_head"] = RPNHead(FPN_CHANNELS, anchors_per_location, conv_depth=2)
    parts["box_head"] = FastRCNNConvFCHead(pooled, [FPN_CHANNELS] * 4, [1024], norm_layer=nn.BatchNorm2d)
    return parts


DESIGNS = {"c4": c4_heads, "fpn": fpn_heads, "fpn_v2": fpn_v2_heads}


def build_detector(
    recipe: DetectionRecipe,
    num_classes: int,
    net: nn.Module,
    image_mean: list[float] | None = None,
    image_std: list[float] | None = None,
) -> FasterRCNN:
    """Faster R-CNN (C4, FPN or FPN v2 per ``recipe.design``) around ``net``; ``num_classes`` counts the
    background."""
    if recipe.design not in DESIGNS:
        raise ValueError(f"design must be one of {', '.join(DESIGNS)}, got {recipe.design!r}")
    model = FasterRCNN(
        **DESIGNS[recipe.design](recipe, net, num_classes),
        num_classes=None,
        min_size=recipe.min_size_train,
        max_size=recipe.max_size,
        image_mean=list(image_mean or FAMILY_INPUTS["imagenet"].mean),  # a backbone from scratch: ImageNet's
        image_std=list(image_std or FAMILY_INPUTS["imagenet"].std),
        rpn_pre_nms_top_n_train=recipe.rpn_pre_nms_top_n_train,
        rpn_post_nms_top_n_train=recipe.rpn_post_nms_top_n_train,
        rpn_pre_nms_top_n_test=recipe.rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_test=recipe.rpn_post_nms_top_n_test,
        box_batch_size_per_image=recipe.box_batch_size_per_image,
        box_detections_per_img=recipe.box_detections_per_img,
    )
    model.transform.min_size = tuple(recipe.min_size_train)  # drawn per image in training (multi-scale)
    return model


def set_test_size(model: FasterRCNN, min_size: int, max_size: int) -> None:
    """Inference resizes the shorter side to ``min_size`` (torchvision uses min_size[-1] in eval mode)."""
    model.transform.min_size = (min_size,)
    model.transform.max_size = max_size


@contextlib.contextmanager
def evaluating(model: FasterRCNN, recipe: DetectionRecipe) -> Iterator[FasterRCNN]:
    """The model in eval mode at the recipe's test size; training mode and sizes come back afterwards."""
    was_training, sizes = model.training, (model.transform.min_size, model.transform.max_size)
    set_test_size(model, recipe.min_size_test, recipe.max_size)
    model.eval()
    try:
        yield model
    finally:
        model.transform.min_size, model.transform.max_size = sizes
        model.train(was_training)
