"""Faster R-CNN assembly: the paper's C4 split, frozen BN and stages, backbone checkpoint contract, COCO data."""

from __future__ import annotations

import copy

import pytest
import torch
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.misc import FrozenBatchNorm2d

from detection import train
from detection.checkpoint import load_backbone
from detection.data import CategoryMap, CocoDetectionDataset
from detection.model import build_detector, fold_batchnorm, fresh_backbone, prepare_backbone
from detection.recipes import RECIPES, DetectionRecipe, get_recipe
from models import create_model
from toolkit.errors import UsageError
from training.classifier import load_classifier_checkpoint


def test_recipes_follow_the_paper():
    for name in ("coco_resnet50_c4", "coco_resnet101_c4"):
        recipe = get_recipe(name)
        assert recipe.design == "c4" and recipe.arch == name.split("_")[1]
        assert len(recipe.anchor_sizes) * len(recipe.aspect_ratios) == 9
        assert recipe.rpn_post_nms_top_n_test == 300 and recipe.roi_output_size == 14
        assert recipe.scaled_lr(16) == pytest.approx(0.02) and recipe.scaled_lr(8) == pytest.approx(0.01)
        assert recipe.milestones(90) == [60, 80]
        assert DetectionRecipe.from_dict(recipe.to_dict()) == recipe
    with pytest.raises(UsageError, match="coco_resnet50_c4"):
        get_recipe("coco_resnet51_c4")


def test_c4_detector_is_built_from_torchvision_blocks_with_the_paper_split():
    recipe = RECIPES["coco_resnet50_c4"]
    model = build_detector(recipe, 81, fresh_backbone("resnet50", {}, recipe))
    assert isinstance(model, FasterRCNN)
    # trunk = conv1..conv4_x: stride 16, 1024 channels
    assert list(dict(model.backbone.named_children())) == [
        "conv1",
        "bn1",
        "relu",
        "maxpool",
        "layer1",
        "layer2",
        "layer3",
    ]
    assert model.backbone.out_channels == 1024
    features = model.backbone(torch.zeros(1, 3, 64, 96))
    assert features.shape == (1, 1024, 4, 6)
    # RPN: 9 anchors per position, 300 test proposals; RoIAlign 14x14; conv5_x per region; predictor on 2048
    assert model.rpn.anchor_generator.num_anchors_per_location() == [9]
    assert model.rpn._post_nms_top_n["testing"] == 300
    assert isinstance(model.roi_heads.box_roi_pool, MultiScaleRoIAlign)
    assert model.roi_heads.box_roi_pool.output_size == (14, 14)
    assert model.roi_heads.box_head(torch.zeros(2, 1024, 14, 14)).shape == (2, 2048)
    assert isinstance(model.roi_heads.box_predictor, FastRCNNPredictor)
    assert model.roi_heads.box_predictor.cls_score.out_features == 81
    assert model.roi_heads.box_predictor.bbox_pred.out_features == 81 * 4
    # frozen BN everywhere, stem and conv2_x frozen, conv3_x.. trained
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in model.roi_heads.box_head.modules())
    for name, parameter in model.backbone.named_parameters():
        assert parameter.requires_grad == name.startswith(("layer2", "layer3")), name
    assert all(p.requires_grad for p in model.roi_heads.parameters())


def test_detector_runs_in_training_and_inference_including_images_without_boxes():
    recipe = get_recipe("coco_resnet50_c4").override(
        arch="resnet18", min_size_train=(96,), max_size=128, box_batch_size_per_image=8, rpn_post_nms_top_n_test=10
    )
    model = build_detector(recipe, 4, fresh_backbone("resnet18", {}, recipe))
    images = [torch.rand(3, 96, 128), torch.rand(3, 80, 96)]
    targets = [
        {"boxes": torch.tensor([[10.0, 10.0, 60.0, 70.0]]), "labels": torch.tensor([2])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    losses = model(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        outputs = model(images)
    assert outputs[1]["boxes"].shape[1] == 4 and outputs[1]["boxes"][:, 2:].max() <= 96 + 1e-3


def test_fpn_variant_over_our_stages():
    recipe = RECIPES["coco_resnet50_fpn"].override(arch="resnet18")
    model = build_detector(recipe, 5, fresh_backbone("resnet18", {}, recipe))
    features = model.backbone(torch.zeros(1, 3, 64, 64))
    assert list(features) == ["0", "1", "2", "3", "pool"]
    assert all(f.shape[1] == 256 for f in features.values())


@pytest.mark.parametrize("design", ["c4", "fpn_v2"])
def test_batchnorm_folds_into_the_convolutions_for_inference(design):
    recipe = RECIPES["coco_resnet50_c4" if design == "c4" else "coco_resnet50_fpn_v2"].override(arch="resnet18")
    torch.manual_seed(0)
    model = build_detector(recipe, 5, fresh_backbone("resnet18", {}, recipe))
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d | FrozenBatchNorm2d)]
    for norm in norms:  # statistics and affine values away from the identity, so a wrong fold would show
        norm.running_mean.uniform_(-0.2, 0.2)
        norm.running_var.uniform_(0.5, 1.5)
        norm.weight.data.uniform_(0.5, 1.5)
        norm.bias.data.uniform_(-0.2, 0.2)
    with pytest.raises(ValueError, match="eval"):
        fold_batchnorm(model)
    folded = copy.deepcopy(model.eval())
    assert fold_batchnorm(folded) == len(norms)  # every one: stem, blocks, shortcuts (and FPN v2's neck and head)
    assert not [m for m in folded.modules() if isinstance(m, torch.nn.BatchNorm2d | FrozenBatchNorm2d)]
    image, rois = torch.rand(1, 3, 96, 128), torch.rand(6, 256, recipe.roi_output_size, recipe.roi_output_size)
    with torch.no_grad():
        pairs = [(model.roi_heads.box_head(rois), folded.roi_heads.box_head(rois))]
        expected, got = model.backbone(image), folded.backbone(image)
    pairs += list(zip(expected.values(), got.values(), strict=True)) if design == "fpn_v2" else [(expected, got)]
    for want, have in pairs:
        torch.testing.assert_close(have, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))


def test_backbone_checkpoint_carries_weights_statistics_and_normalisation(classifier_checkpoint):
    state = load_classifier_checkpoint(classifier_checkpoint)
    net, info = load_backbone(classifier_checkpoint)
    assert info["arch"] == "resnet18" and info["image_mean"] == pytest.approx([0.5, 0.4, 0.3])
    model = build_detector(get_recipe("coco_resnet50_c4"), 3, prepare_backbone(net, get_recipe("coco_resnet50_c4")))
    detector_state = model.state_dict()
    for key in ("layer3.1.conv2.weight", "layer3.0.bn1.running_var", "layer1.0.bn2.running_mean"):
        assert torch.equal(detector_state[f"backbone.{key}"], state["model"][key])
    assert torch.equal(detector_state["roi_heads.box_head.layer4.0.bn1.weight"], state["model"]["layer4.0.bn1.weight"])
    # FrozenBatchNorm2d computes what the classifier's BN computed in eval mode
    reference = create_model("resnet18")
    reference.load_state_dict(state["model"])
    reference.eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        expected = reference.layer3(reference.layer2(reference.layer1(reference.stem(x))))
        assert torch.allclose(model.backbone(x), expected, atol=1e-5)


def test_train_cli_needs_a_backbone_source_and_a_readable_checkpoint(tmp_path, coco_train_root, capsys):
    coco = str(coco_train_root)
    with pytest.raises(UsageError, match="--backbone-checkpoint FILE .* or --from-scratch"):
        train.main(["--coco-root", coco, "--output-dir", str(tmp_path)])
    (tmp_path / "broken.pt").write_bytes(b"\x00" * 10)
    with pytest.raises(UsageError, match="cannot read resnet-lab checkpoint"):
        train.main(
            ["--coco-root", coco, "--output-dir", str(tmp_path), "--backbone-checkpoint", str(tmp_path / "broken.pt")]
        )
    with pytest.raises(UsageError, match="annotation file .*instances_train2017.json not found"):
        train.main(["--coco-root", str(tmp_path), "--output-dir", str(tmp_path), "--from-scratch"])
    # recipe fields are typed flags: an unknown field or a value of the wrong type is a usage error that says so
    for bad, message in (
        (["--anchors", "1"], "unrecognized arguments: --anchors"),
        (["--anchor-sizes", "x"], "invalid int"),
    ):
        with pytest.raises(SystemExit):
            train.main(["--coco-root", coco, "--output-dir", str(tmp_path), "--from-scratch", *bad])
        assert message in capsys.readouterr().err


def test_coco_data_maps_sparse_ids_drops_crowds_and_keeps_empty_images(coco_train_root):
    dataset = CocoDetectionDataset(coco_train_root, "train2017")
    categories = dataset.categories
    assert categories.num_classes == 81 and categories.category_ids[-1] == 90
    assert [
        categories.to_category_id(categories.to_label(c)) for c in categories.category_ids
    ] == categories.category_ids
    assert categories.to_label(90) == 80 and categories.to_label(1) == 1
    coco = dataset.coco
    crowd_image = next(a["image_id"] for a in coco.dataset["annotations"] if a["iscrowd"])
    empty_image = 250  # one of the two train images without annotations
    for image_id in (crowd_image, empty_image):
        image, target = dataset[dataset.image_ids.index(image_id)]
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        assert image.dtype == torch.float32 and 0 <= image.min() and image.max() <= 1
        assert target["boxes"].shape == (len([a for a in annotations if not a["iscrowd"]]), 4)
        assert target["labels"].tolist() == [
            categories.to_label(a["category_id"]) for a in annotations if not a["iscrowd"]
        ]
    with pytest.raises(ValueError):
        CategoryMap([{"id": 5}]).to_category_id(2)
