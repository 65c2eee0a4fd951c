"""The one-file ONNX detector: dynamic image size, empty outputs, COCO ids, and parity with eager PyTorch."""

from __future__ import annotations

import io

import numpy as np
import onnxruntime
import pytest
import torch
from torch.nn import functional as F

from detection.model import build_detector, fresh_backbone
from detection.recipes import DetectionRecipe
from export.detector_graph import bilinear_as_pytorch, export_detector_onnx, onnx_ready
from export.detector_parity import check_onnx_parity

CATEGORY_IDS = [3, 7, 11]


def small_detector(design: str) -> tuple[torch.nn.Module, DetectionRecipe]:
    """Untrained cifar_resnet20 detector with 3 classes: softmax scores near 0.25, all distinct."""
    torch.manual_seed(0)
    recipe = DetectionRecipe(
        name="tiny",
        arch="cifar_resnet20",
        design=design,
        anchor_sizes=(16, 24, 32) if design == "c4" else (8, 16, 24, 32),
        rpn_pre_nms_top_n_test=300,
        rpn_post_nms_top_n_test=50,
        roi_output_size=7,
        min_size_test=64,
        max_size=96,
    )
    return build_detector(recipe, len(CATEGORY_IDS) + 1, fresh_backbone(recipe.arch, None, recipe)), recipe


@pytest.mark.parametrize("design", ["c4", "fpn"])
def test_onnx_detector_matches_eager_at_any_size(design):
    model, recipe = small_detector(design)
    wrapper = onnx_ready(model, recipe, CATEGORY_IDS)
    blob = export_detector_onnx(wrapper, example_hw=(48, 64))
    session = onnxruntime.InferenceSession(blob, providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [3, "height", "width"]
    generator = torch.Generator().manual_seed(1)
    # landscape, portrait, tiny, and two sizes where a float32 resize scale is one pixel off eager's float64 one
    sizes = [(48, 64), (120, 50), (50, 40), (40, 61), (40, 97)]
    images = [torch.randint(0, 256, (3, *size), dtype=torch.uint8, generator=generator) for size in sizes]
    reports = check_onnx_parity(blob, wrapper, images)
    assert all(report["ok"] and report["matched"] > 0 for report in reports), reports
    boxes, scores, labels = session.run(None, {"image": images[1].numpy()})
    assert set(labels.tolist()) <= set(CATEGORY_IDS) and labels.dtype == np.int64
    assert boxes.max(initial=0) <= 120 and scores.dtype == np.float32


def test_onnx_detector_returns_empty_outputs():
    model, recipe = small_detector("c4")
    blob = export_detector_onnx(onnx_ready(model, recipe, CATEGORY_IDS, score_thresh=0.99))
    session = onnxruntime.InferenceSession(blob, providers=["CPUExecutionProvider"])
    boxes, scores, labels = session.run(None, {"image": np.full((3, 48, 64), 128, dtype=np.uint8)})
    assert boxes.shape == (0, 4) and scores.shape == (0,) and labels.shape == (0,)


class Resize(torch.nn.Module):
    def forward(self, image: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
        return bilinear_as_pytorch(image, size)


def test_the_graphs_resize_is_pytorchs_to_the_last_bits():
    # ONNX Resize (what F.interpolate exports to) differs from F.interpolate by up to 7e-4 on these unit-variance images
    buffer = io.BytesIO()
    example = (torch.rand(3, 5, 7), torch.tensor([9, 11]))
    torch.onnx.export(Resize(), example, buffer, dynamo=False, opset_version=17, input_names=["image", "size"],
                      dynamic_axes={"image": {1: "height", 2: "width"}})  # fmt: skip
    session = onnxruntime.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(0)
    # up, down, one side kept, portrait; at 640 -> 1199 a coordinate in float32 without the FMA is 5e-5 off in value
    for (height, width), size in [((427, 640), (800, 1199)), ((900, 1400), (800, 1244)), ((800, 61), (800, 97)),
                                  ((500, 375), (1066, 800))]:  # fmt: skip
        image = torch.randn(3, height, width, generator=generator)
        expected = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0].numpy()
        got = session.run(None, {"image": image.numpy(), "size": np.array(size)})[0]
        assert got.shape == expected.shape and np.abs(got - expected).max() <= 1e-6
