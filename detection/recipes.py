"""Detection recipes as data, named after the paper's COCO experiments (Sec. 4.3, Table 8; Appendix A)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from toolkit.errors import UsageError


@dataclass(frozen=True)
class DetectionRecipe:
    """Everything that defines one Faster R-CNN training run; each field is also a typed flag of detection.train."""

    name: str
    arch: str = "resnet50"  # any name from models.list_models()
    design: str = "c4"  # "c4" (paper: conv1..conv4_x shared, conv5_x per RoI), "fpn" or "fpn_v2" (detection.model)
    # RPN: 3 scales x 3 aspect ratios on the stride-16 map (paper Sec. 3.1 of Faster R-CNN)
    anchor_sizes: tuple[int, ...] = (128, 256, 512)
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    rpn_pre_nms_top_n_train: int = 12000
    rpn_post_nms_top_n_train: int = 2000
    rpn_pre_nms_top_n_test: int = 6000
    rpn_post_nms_top_n_test: int = 300  # "300 proposals" at test time
    roi_output_size: int = 14  # RoI pooling 14x14, conv5_x's stride 2 brings it to 7x7
    box_batch_size_per_image: int = 512
    box_detections_per_img: int = 100
    # backbone
    norm: str = "frozen"  # "frozen": FrozenBatchNorm2d with the classifier's statistics; "batch": trainable BN
    norm_eps: float = 1e-5  # the backbone BN's eps; torchvision's COCO fasterrcnn_resnet50_fpn weights need 0.0
    trainable_stages: int = 3  # stages trained, counted from the last; 3 freezes the stem and conv2_x
    # input: shorter side drawn from min_size_train per image (multi-scale), capped at max_size
    min_size_train: tuple[int, ...] = (640, 672, 704, 736, 768, 800)
    min_size_test: int = 800
    max_size: int = 1333
    horizontal_flip: float = 0.5
    # optimisation: SGD, lr 0.02 at batch 16 scaled linearly, step schedule, linear warm-up
    batch_size: int = 16  # total over all processes
    base_lr: float = 0.02
    base_batch_size: int = 16
    momentum: float = 0.9
    weight_decay: float = 1e-4
    max_iters: int = 90_000
    lr_steps: tuple[float, ...] = (2 / 3, 8 / 9)  # fractions of max_iters (60k and 80k of 90k)
    lr_gamma: float = 0.1
    warmup_iters: int = 1000
    warmup_factor: float = 0.001
    train_split: str = "train2017"
    test_split: str = "val2017"  # COCO's val2017 is where detectors are reported (paper Table 8: "COCO val")

    def scaled_lr(self, batch_size: int | None = None) -> float:
        """Linear scaling rule: base_lr * batch / base_batch."""
        return self.base_lr * (batch_size or self.batch_size) / self.base_batch_size

    def milestones(self, max_iters: int | None = None) -> list[int]:
        """Iterations at which the lr drops by lr_gamma."""
        total = max_iters or self.max_iters
        return [max(1, round(total * fraction)) for fraction in self.lr_steps]

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (lists, not tuples) for JSON logs and weights_only checkpoints."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DetectionRecipe:
        """Inverse of to_dict; unknown keys are rejected so stale checkpoints fail loudly."""
        tuple_fields = {"anchor_sizes", "aspect_ratios", "min_size_train", "lr_steps"}
        values = {key: tuple(value) if key in tuple_fields else value for key, value in data.items()}
        return cls(**values)

    def override(self, **changes: Any) -> DetectionRecipe:
        """A copy with the non-None changes applied."""
        return replace(self, **{key: value for key, value in changes.items() if value is not None})


# Not in the paper: the FPN neck (Lin et al., 2017) over the same backbone, for comparison.
_FPN = DetectionRecipe(
    name="coco_resnet50_fpn",
    arch="resnet50",
    design="fpn",
    anchor_sizes=(32, 64, 128, 256, 512),
    rpn_pre_nms_top_n_test=1000,
    rpn_post_nms_top_n_test=1000,
    roi_output_size=7,
)
RECIPES: dict[str, DetectionRecipe] = {
    "coco_resnet50_c4": DetectionRecipe(name="coco_resnet50_c4", arch="resnet50"),
    "coco_resnet101_c4": DetectionRecipe(name="coco_resnet101_c4", arch="resnet101"),
    "coco_resnet50_fpn": _FPN,
    # torchvision's improved FPN (Li et al., 2021, "Benchmarking Detection Transfer Learning with Vision
    # Transformers"): BatchNorm in the backbone, the FPN and a four-conv + FC box head, a two-conv RPN head.
    "coco_resnet50_fpn_v2": replace(_FPN, name="coco_resnet50_fpn_v2", design="fpn_v2", norm="batch"),
}


# torchvision's COCO Faster R-CNN weights in this detector, by torchvision's builder name (``python -m export
# --torchvision-state-dict FILE --arch NAME``). Their test-time settings are torchvision's; the backbone BN's eps is
# what torchvision runs each file with: 0 for fasterrcnn_resnet50_fpn (its ``overwrite_eps``), 1e-5 for v2.
TORCHVISION_RECIPES: dict[str, DetectionRecipe] = {
    "fasterrcnn_resnet50_fpn": replace(
        RECIPES["coco_resnet50_fpn"],
        name="torchvision_fasterrcnn_resnet50_fpn",
        norm_eps=0.0,
        rpn_pre_nms_top_n_train=2000,
    ),
    "fasterrcnn_resnet50_fpn_v2": replace(
        RECIPES["coco_resnet50_fpn_v2"], name="torchvision_fasterrcnn_resnet50_fpn_v2", rpn_pre_nms_top_n_train=2000
    ),
}


def get_recipe(name: str) -> DetectionRecipe:
    """Recipe by name; a clear error lists the valid ones."""
    try:
        return RECIPES[name]
    except KeyError:
        raise UsageError(f"unknown detection recipe {name!r}; choose from: {', '.join(RECIPES)}") from None
