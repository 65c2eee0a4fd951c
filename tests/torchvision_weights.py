"""torchvision's own detectors and classifiers with weights that give real outputs, built here (nothing downloaded):
the reference models the imports are compared with, and the files they are imported from.

A classifier is torchvision's ResNet with ``weights=None``, BatchNorm calibrated on real ImageNet photos and a scaled
classifier (``tests.helpers.calibrate``), saved under the published file's name.

A detector starts from torchvision's builder with ``weights=None``. Its BatchNorm statistics are calibrated on real
COCO images (at a shorter side of 480); then, at the standard 800/1333 on the same images, the last layers of its
RPN head are fitted to the anchors' targets and its box predictor (class scores and box deltas) to the RoIs' targets,
a hundred Adam steps each on cached features, torchvision's matchers and box coders deciding the targets. It then
finds the annotated objects there: real boxes, distinct scores and an AP clearly above zero, from torchvision's code
alone. ``fasterrcnn_resnet50_fpn``'s file is written in the older key layout of the published
``fasterrcnn_resnet50_fpn_coco-258fb6c6.pth`` (module versions 1, so loading upgrades them as it does for that file).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn
from torch.nn import functional as F
from torchvision.models.detection import FasterRCNN, fasterrcnn_resnet50_fpn, fasterrcnn_resnet50_fpn_v2
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.detection.roi_heads import fastrcnn_loss
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops.misc import FrozenBatchNorm2d

from inference import imaging
from tests.helpers import calibrate

# The weights each ResNet is published with at its best: file names and the eval transform they document (V1: resize
# 256, V2: 232; both crop 224). V1 and V2 files are the same architecture.
CLASSIFIER_WEIGHTS = {
    "resnet18": torchvision.models.ResNet18_Weights.IMAGENET1K_V1,
    "resnet34": torchvision.models.ResNet34_Weights.IMAGENET1K_V1,
    "resnet50": torchvision.models.ResNet50_Weights.IMAGENET1K_V2,
    "resnet101": torchvision.models.ResNet101_Weights.IMAGENET1K_V2,
    "resnet152": torchvision.models.ResNet152_Weights.IMAGENET1K_V2,
}
CLASSIFIER_FC_SCALE = 8.0  # separates the top 5 clearly
BUILDERS = {
    "fasterrcnn_resnet50_fpn": fasterrcnn_resnet50_fpn,
    "fasterrcnn_resnet50_fpn_v2": fasterrcnn_resnet50_fpn_v2,
}
CALIBRATION_SIZE = 480  # shorter side the backbone BatchNorm statistics are taken at
FIT_STEPS = 100  # Adam steps of the RPN head's and the box predictor's last layers on cached features
OLD_PREFIXES = ("rpn.head", "backbone.fpn")  # modules whose keys were renamed after the v1 file was published


def coco_images(coco_root: Path, split: str, count: int) -> tuple[list[int], list[torch.Tensor], list[dict]]:
    """The first ``count`` images of a split that have boxes: ids, float [3, H, W] in [0, 1] (the project's loader,
    so every path sees the same pixels), and targets with torchvision's labels (= COCO category ids)."""
    from pycocotools.coco import COCO  # here: the GPU speed stage imports this module without pycocotools

    coco = COCO(str(coco_root / "annotations" / f"instances_{split}.json"))
    ids, images, targets = [], [], []
    for image_id in sorted(coco.imgs):
        annotations = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=image_id)) if not a.get("iscrowd", 0)]
        if not annotations:
            continue
        path = coco_root / split / coco.imgs[image_id]["file_name"]
        images.append(torch.from_numpy(imaging.to_chw(imaging.load_rgb(path))).float().div_(255))
        boxes = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in annotations)]
        targets.append({"boxes": torch.tensor(boxes), "labels": torch.tensor([a["category_id"] for a in annotations])})
        ids.append(image_id)
        if len(ids) == count:
            break
    return ids, images, targets


@torch.no_grad()
def calibrate_batchnorm(module: nn.Module, inputs: list[torch.Tensor]) -> None:
    """Every BatchNorm's running statistics in ``module``: the average of its batch statistics over ``inputs``."""
    batchnorms = [child for child in module.modules() if isinstance(child, nn.BatchNorm2d)]
    for child in batchnorms:
        child.reset_running_stats()
        child.momentum = None  # cumulative average
        child.train()
    for tensor in inputs:
        module(tensor)
    module.eval()


@torch.no_grad()
def inputs_at_test_scale(model: FasterRCNN, images: list[torch.Tensor], targets: list[dict]) -> list[tuple]:
    """Per image at the model's test scale: (ImageList, FPN feature maps of the eval-mode backbone, scaled target)."""
    inputs = []
    for image, target in zip(images, targets, strict=True):
        batch, (scaled,) = model.transform([image], [dict(target)])
        inputs.append((batch, model.backbone(batch.tensors), scaled))
    return inputs


def fit(parameters: list[nn.Parameter], loss_of: Callable[[], torch.Tensor]) -> None:
    """``FIT_STEPS`` Adam steps on ``loss_of()``."""
    optimizer = torch.optim.Adam(parameters, lr=3e-3)
    for _ in range(FIT_STEPS):
        loss = loss_of()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def fit_rpn(rpn: nn.Module, inputs: list[tuple]) -> None:
    """The RPN head's last layers (objectness and box deltas, 1x1 convs) fitted to the anchors' targets on the cached
    output of its shared conv: every object anchor and three background ones each (torchvision's RPN matcher)."""
    head = rpn.head
    rows, labels, deltas = [], [], []
    with torch.no_grad():
        for batch, maps, target in inputs:
            features = list(maps.values())
            anchors = rpn.anchor_generator(batch, features)
            # [positions, C] in the order of the anchors: level by level, row by row, A anchors per position
            rows.append(torch.cat([head.conv(f)[0].permute(1, 2, 0).flatten(0, 1) for f in features]))
            matched_labels, matched_boxes = rpn.assign_targets_to_anchors(anchors, [target])
            labels.append(matched_labels[0])
            deltas.append(rpn.box_coder.encode([matched_boxes[0]], [anchors[0]])[0])
    anchors_per_position = head.cls_logits.out_channels
    generator = torch.Generator().manual_seed(0)
    chosen_rows, chosen_anchor, chosen_labels, chosen_deltas = [], [], [], []
    for image_rows, image_labels, image_deltas in zip(rows, labels, deltas, strict=True):
        positive = torch.where(image_labels == 1)[0]
        negative = torch.where(image_labels == 0)[0]
        negative = negative[torch.randperm(len(negative), generator=generator)[: 3 * max(1, len(positive))]]
        index = torch.cat([positive, negative])
        chosen_rows.append(image_rows[index // anchors_per_position])
        chosen_anchor.append(index % anchors_per_position)
        chosen_labels.append(image_labels[index])
        chosen_deltas.append(image_deltas[index])
    features, anchor = torch.cat(chosen_rows), torch.cat(chosen_anchor)
    labels, deltas = torch.cat(chosen_labels), torch.cat(chosen_deltas)
    positive = labels == 1

    def loss() -> torch.Tensor:
        weight = head.cls_logits.weight.flatten(1)  # [A, C]: the 1x1 conv as a linear layer per anchor
        objectness = (features * weight[anchor]).sum(1) + head.cls_logits.bias[anchor]
        box_weight = head.bbox_pred.weight.flatten(1).view(anchors_per_position, 4, -1)
        predicted = torch.einsum("nc,nkc->nk", features[positive], box_weight[anchor[positive]])
        predicted = predicted + head.bbox_pred.bias.view(anchors_per_position, 4)[anchor[positive]]
        box_loss = F.smooth_l1_loss(predicted, deltas[positive], beta=1 / 9, reduction="sum") / len(labels)
        return F.binary_cross_entropy_with_logits(objectness, labels) + box_loss

    fit([*head.cls_logits.parameters(), *head.bbox_pred.parameters()], loss)


@torch.no_grad()
def pooled_rois(model: FasterRCNN, inputs: list[tuple]) -> list[tuple]:
    """Per image: (pooled RoI features, matched labels, box regression targets) of the eval-mode RPN's proposals."""
    rois = []
    for batch, maps, scaled in inputs:
        proposals, _ = model.rpn(batch, maps)
        pooled = model.roi_heads.box_roi_pool(maps, proposals, batch.image_sizes)
        matched, labels = model.roi_heads.assign_targets_to_proposals(proposals, [scaled["boxes"]], [scaled["labels"]])
        deltas = model.roi_heads.box_coder.encode([scaled["boxes"][matched[0].clamp(min=0)]], proposals)[0]
        rois.append((pooled, labels[0], deltas))
    return rois


def fit_box_predictor(predictor: nn.Module, features: torch.Tensor, labels: torch.Tensor, deltas: torch.Tensor) -> None:
    """The class and box layers fitted on RoI features: every object RoI and three background ones each."""
    generator = torch.Generator().manual_seed(0)
    positive = torch.where(labels > 0)[0]
    negative = torch.where(labels == 0)[0]
    negative = negative[torch.randperm(len(negative), generator=generator)[: 3 * max(1, len(positive))]]
    chosen = torch.cat([positive, negative])
    features, labels, deltas = features[chosen], labels[chosen], deltas[chosen]

    def loss() -> torch.Tensor:
        class_logits, box_regression = predictor(features)
        return sum(fastrcnn_loss(class_logits, box_regression, [labels], [deltas]))

    fit(list(predictor.parameters()), loss)


def trained_state_dict(arch: str, images: list[torch.Tensor], targets: list[dict], seed: int = 0) -> OrderedDict:
    """torchvision's ``arch`` with calibrated BatchNorm, a fitted RPN head and box predictor: its state dict."""
    torch.manual_seed(seed)
    model = BUILDERS[arch](weights=None, weights_backbone=None).eval()
    with torch.no_grad():  # at a smaller scale than the test's 800: the statistics only need to be plausible
        small = GeneralizedRCNNTransform(CALIBRATION_SIZE, 1333, model.transform.image_mean, model.transform.image_std)
        calibrate_batchnorm(model.backbone, [small.eval()([image])[0].tensors for image in images])
    inputs = inputs_at_test_scale(model, images, targets)
    fit_rpn(model.rpn, inputs)
    rois = pooled_rois(model, inputs)
    box_head = model.roi_heads.box_head
    calibrate_batchnorm(box_head, [pooled for pooled, _, _ in rois])  # v2's head has BatchNorm
    with torch.no_grad():
        features = torch.cat([box_head(pooled) for pooled, _, _ in rois])
    labels, deltas = torch.cat([roi[1] for roi in rois]), torch.cat([roi[2] for roi in rois])
    fit_box_predictor(model.roi_heads.box_predictor, features, labels, deltas)
    return model.eval().state_dict()


def as_published_v1(state_dict: OrderedDict) -> OrderedDict:
    """``fasterrcnn_resnet50_fpn``'s keys as in the published file: FrozenBatchNorm (no ``num_batches_tracked``),
    ``rpn.head.conv.*`` and ``backbone.fpn.{inner,layer}_blocks.N.*``, those modules at version 1."""
    old = OrderedDict()
    for key, value in state_dict.items():
        if key.endswith("num_batches_tracked"):
            continue
        key = key.replace("rpn.head.conv.0.0.", "rpn.head.conv.")
        for block in ("inner_blocks", "layer_blocks"):
            if f"backbone.fpn.{block}." in key:
                key = key.replace(".0.weight", ".weight").replace(".0.bias", ".bias")
        old[key] = value
    old._metadata = OrderedDict(
        (prefix, {**entry, "version": 1} if prefix.startswith(OLD_PREFIXES) else entry)
        for prefix, entry in state_dict._metadata.items()
        if not prefix.endswith("num_batches_tracked")
    )
    return old


def torchvision_reference(arch: str, state_dict: dict[str, Any]) -> FasterRCNN:
    """The model torchvision builds for ``arch``'s published COCO weights, loaded strictly with ``state_dict``:
    v1 with FrozenBatchNorm at eps 0 (its builder's ``overwrite_eps``), v2 as its builder makes it."""
    if arch == "fasterrcnn_resnet50_fpn":
        backbone = resnet_fpn_backbone(backbone_name="resnet50", weights=None, norm_layer=FrozenBatchNorm2d)
        model = FasterRCNN(backbone, num_classes=91)
        model.load_state_dict(state_dict)
        for module in model.modules():
            if isinstance(module, FrozenBatchNorm2d):
                module.eps = 0.0
    else:
        model = BUILDERS[arch](weights=None, weights_backbone=None)
        model.load_state_dict(state_dict)
    return model.eval()


def classifier_resize(arch: str) -> int:
    """The shorter side the eval transform of ``arch``'s published weights resizes to (256 for V1, 232 for V2)."""
    return CLASSIFIER_WEIGHTS[arch].transforms().resize_size[0]


def calibrated_classifier(arch: str, batch: torch.Tensor, path: Path) -> nn.Module:
    """torchvision's ``arch`` (random init, BatchNorm from ``batch``, scaled classifier), its state dict saved to
    ``path``; in eval mode."""
    torch.manual_seed(0)
    model = calibrate(getattr(torchvision.models, arch)(weights=None), batch, fc_scale=CLASSIFIER_FC_SCALE)
    torch.save(model.state_dict(), path)
    return model.eval()
