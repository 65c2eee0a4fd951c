"""The whole detector as one ONNX graph: uint8 RGB image [3, H, W] in, (boxes, scores, COCO category ids) out.

Exported with the TorchScript tracer (``dynamo=False``, opset 17), the way torchvision's own ONNX tests export
Faster R-CNN. Inside the graph: uint8 -> float in [0, 1] (as ``detection.data.test_transforms``), the detector's
GeneralizedRCNNTransform (torchvision's test-scale size and PyTorch's own bilinear coordinates, in exact 32-bit
integer arithmetic; normalise, pad), RPN, RoI heads
with NMS, boxes mapped back to input pixels, and contiguous label -> COCO category id. The score threshold,
detections per image and test scale are constants chosen at export.
"""

from __future__ import annotations

import contextlib
import copy
import io
import warnings
from collections.abc import Iterator, Sequence

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import poolers

from detection.model import fold_batchnorm, set_test_size
from detection.recipes import DetectionRecipe
from export import exact_resize
from inference.answers import EVAL_SCORE_THRESHOLD
from inference.contract import DETECTION, INPUT_NAMES, OUTPUT_NAMES

IMAGE = INPUT_NAMES[DETECTION]
OUTPUTS = list(OUTPUT_NAMES[DETECTION])


class ExactResizeTransform(GeneralizedRCNNTransform):
    """GeneralizedRCNNTransform whose traced resize gives torchvision's size (Python's float64 arithmetic) and
    PyTorch's CPU bilinear interpolation exactly, in 32-bit integer arithmetic (``export.exact_resize``): the same
    numbers in ONNX Runtime and in OpenVINO, which has neither float64 nor 64-bit integers on the CPU."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.size_tables = exact_resize.size_tables(self.min_size[-1]) + exact_resize.size_tables(self.max_size)

    def resize(
        self, image: torch.Tensor, target: dict[str, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
        """Eager: torchvision's resize. Traced: ``export.exact_resize``."""
        if self.training or not torch.jit.is_tracing():
            return super().resize(image, target)
        # sides beyond 2^15 - 1 px would overflow the 32-bit arithmetic: such strips are sized as if that long
        sides = torch.onnx.operators.shape_as_tensor(image)[-2:].to(torch.int32).clamp(max=(1 << 15) - 1)
        size = exact_resize.float64_size(sides, self.min_size[-1], self.max_size, self.size_tables)
        return bilinear_as_pytorch(image, sides, size), target


def bilinear_as_pytorch(image: torch.Tensor, sides: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    """``F.interpolate(image[None], size, mode="bilinear", align_corners=False)[0]`` for ``[C, H, W]`` in plain
    gathers and lerps, the source pixels and weights PyTorch's CPU kernel computes (``exact_resize``). ONNX's Resize
    computes the source coordinate as ``(dst + 0.5) / scale - 0.5``, which differs from PyTorch's in the last bits:
    up to 2e-4 in normalised pixels at 800 px, enough to move the scores of a sensitive detector by 6e-3."""
    top, bottom, top_weight, bottom_weight = exact_resize.source_pixels(sides[0:1], size[0:1])
    left, right, left_weight, right_weight = exact_resize.source_pixels(sides[1:2], size[1:2])
    rows = [image.index_select(1, index) for index in (top, bottom)]
    rows = [row.index_select(2, left) * left_weight + row.index_select(2, right) * right_weight for row in rows]
    return rows[0] * top_weight[:, None] + rows[1] * bottom_weight[:, None]


class OnnxDetector(nn.Module):
    """uint8 [3, H, W] -> (boxes [K, 4] in input pixels, scores [K], COCO category ids [K]) for one image."""

    def __init__(self, detector: FasterRCNN, category_ids: Sequence[int]) -> None:
        super().__init__()
        self.detector = detector
        self.register_buffer("category_table", torch.tensor([0, *category_ids], dtype=torch.int64))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        detections = self.detector([image.to(torch.float32).mul(1.0 / 255)])[0]
        return detections["boxes"], detections["scores"], self.category_table[detections["labels"]]


def onnx_ready(
    model: FasterRCNN,
    recipe: DetectionRecipe,
    category_ids: Sequence[int],
    score_thresh: float = EVAL_SCORE_THRESHOLD,
    min_size: int | None = None,
    max_size: int | None = None,
    fold: bool = False,
) -> OnnxDetector:
    """An eval-mode copy of ``model`` wrapped for export, at the recipe's test scale (or the given one); ``fold``:
    each BatchNorm folded into the convolution before it."""
    detector = copy.deepcopy(model).cpu().eval()
    if fold:
        fold_batchnorm(detector)
    set_test_size(detector, min_size or recipe.min_size_test, max_size or recipe.max_size)
    old = detector.transform
    detector.transform = ExactResizeTransform(
        old.min_size, old.max_size, old.image_mean, old.image_std, old.size_divisible, old.fixed_size
    )
    detector.roi_heads.score_thresh = score_thresh
    detector.roi_heads.detections_per_img = recipe.box_detections_per_img
    return OnnxDetector(detector, category_ids).eval()


def merge_levels_by_gather(levels: torch.Tensor, per_level: list[torch.Tensor]) -> torch.Tensor:
    """The boxes' pooled features in box order, from each level's (``levels[i]``: box i's level; boxes in order
    within a level): one gather of the levels' results by the inverse of the order they came in."""
    order = torch.cat([torch.where(levels == level)[0] for level in range(len(per_level))])
    return torch.cat(per_level)[torch.argsort(order)]


@contextlib.contextmanager
def levels_merged_by_gather() -> Iterator[None]:
    """While tracing, torchvision's ``MultiScaleRoIAlign`` merges its levels with ``merge_levels_by_gather``.

    Its own traced merge scatters each level into a zero tensor through an index expanded to the whole result
    (int64 ``[boxes, 256, 7, 7]``, ~100 MB per level for 1,000 boxes); a gather moves the same values, so the
    answers are the same to the bit, sooner (``/detect`` of a COCO photo on ONNX Runtime in ``python -m
    bench.runtimes``: 2.39 s before, 2.13 s after). The hook is the module function torchvision calls only while
    tracing; ``tests/test_detection_onnx.py`` checks that the graph it gives has no scatter.
    """
    traced_merge = poolers._onnx_merge_levels
    poolers._onnx_merge_levels = merge_levels_by_gather
    try:
        yield
    finally:
        poolers._onnx_merge_levels = traced_merge


def export_detector_onnx(wrapper: OnnxDetector, example_hw: tuple[int, int] = (480, 640)) -> bytes:
    """Trace an ``onnx_ready`` detector into one opset-17 ONNX model (dynamic H, W and detection count)."""
    example = torch.randint(0, 256, (3, *example_hw), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad(), levels_merged_by_gather():
        # audited: tracer constants (anchor strides, pooler scales, box-coder 0.5) and exporter notes are benign
        for category in (torch.jit.TracerWarning, UserWarning, FutureWarning, DeprecationWarning):
            warnings.simplefilter("ignore", category)
        torch.onnx.export(
            wrapper,
            (example,),
            buffer,
            dynamo=False,
            opset_version=17,
            input_names=[IMAGE],
            output_names=OUTPUTS,
            dynamic_axes={IMAGE: {1: "height", 2: "width"}, **{name: {0: "detections"} for name in OUTPUTS}},
        )
    return buffer.getvalue()
