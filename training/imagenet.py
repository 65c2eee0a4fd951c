"""ImageNet from the class-folder layout (``train/<wnid>/*.JPEG``, ``val/<wnid>/*.JPEG``), paper augmentation.

Class index = position of the wnid among all 1,000 wnids in sorted order (``imagenet_classes.tsv``), so a
partial folder keeps the real indices. Loader workers decode and crop to uint8 tensors; the float work
(scaling, PCA lighting, mean/std) runs on the training device, batched.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import torch
from PIL import Image
from torchvision.datasets import DatasetFolder
from torchvision.transforms import v2

CLASSES_FILE = Path(__file__).with_name("imagenet_classes.tsv")
EXTENSIONS = (".jpeg", ".jpg", ".png")
HOW_TO_GET = (
    "download ILSVRC-2012 from image-net.org and arrange it as DIR/train/<wnid>/*.JPEG and DIR/val/<wnid>/*.JPEG "
    "(e.g. with the widely used valprep.sh for val/)"
)
# Per-channel mean/std of ImageNet in [0, 1] (torchvision's): the paper subtracts a per-pixel mean; a
# per-channel mean and std keep our checkpoints interchangeable with torchvision's weights.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
# AlexNet's PCA lighting ("the standard colour augmentation", Krizhevsky et al. 2012), RGB, pixels in [0, 1].
PCA_EIGENVALUES = (0.2175, 0.0188, 0.0045)
PCA_EIGENVECTORS = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)
LIGHTING_STD = 0.1
SCALE_RANGE = (256, 480)  # shorter side drawn uniformly from this range (paper Sec. 3.4)
RESIZE_SIZE, CROP_SIZE = 256, 224


class ImageDecodeError(RuntimeError):
    """An image file that PIL cannot read; the message names the file."""


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(wnids, names)`` of the 1,000 classes, index order."""
    rows = [line.split("\t") for line in CLASSES_FILE.read_text().splitlines()[1:] if line.strip()]
    return tuple(row[1] for row in rows), tuple(row[2] for row in rows)


def load_rgb(path: str) -> Image.Image:
    """Decode one image as RGB (grayscale and CMYK JPEGs included); a clear error names a broken file."""
    try:
        with open(path, "rb") as stream:
            return Image.open(stream).convert("RGB")
    except Exception as error:
        raise ImageDecodeError(f"cannot read image {path} ({error.__class__.__name__}: {error})") from None


class ImageNetFolder(DatasetFolder):
    """``DatasetFolder`` whose class indices are the fixed 1,000-class ImageNet indices."""

    def __init__(self, root: str | Path, transform=None) -> None:
        super().__init__(str(root), loader=load_rgb, extensions=EXTENSIONS, transform=transform, allow_empty=True)

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        wnids, _ = imagenet_classes()
        index = {wnid: position for position, wnid in enumerate(wnids)}
        present = sorted(entry.name for entry in os.scandir(directory) if entry.is_dir())
        unknown = [name for name in present if name not in index]
        if unknown:
            raise SystemExit(
                f"{directory} has folders that are not ImageNet wnids: {', '.join(unknown[:5])}"
                f"{' ...' if len(unknown) > 5 else ''}; expected <wnid>/ folders such as n01440764/; {HOW_TO_GET}"
            )
        if not present:
            raise SystemExit(f"{directory} has no <wnid>/ class folders; {HOW_TO_GET}")
        return present, {wnid: index[wnid] for wnid in present}


def open_split(data_dir: str | Path, split: str, transform) -> ImageNetFolder:
    """``data_dir/split`` as an ``ImageNetFolder``; SystemExit naming the expected layout otherwise."""
    data_dir = Path(data_dir)
    folder = data_dir / split
    if not data_dir.is_dir():
        raise SystemExit(f"ImageNet data folder not found: {data_dir}; {HOW_TO_GET}")
    if not folder.is_dir():
        raise SystemExit(f"{data_dir} lacks {split}/ (expected {split}/<wnid>/*.JPEG); {HOW_TO_GET}")
    dataset = ImageNetFolder(folder, transform=transform)
    if len(dataset) == 0:
        raise SystemExit(f"{folder} holds no .JPEG/.jpg/.png files under its <wnid>/ folders; {HOW_TO_GET}")
    return dataset


def train_transform() -> v2.Compose:
    """Scale augmentation, random 224 crop, flip; uint8 out (lighting and mean/std run on the device)."""
    return v2.Compose(
        [
            v2.RandomShortestSize(min_size=list(range(SCALE_RANGE[0], SCALE_RANGE[1] + 1)), antialias=True),
            v2.RandomCrop(CROP_SIZE),
            v2.RandomHorizontalFlip(),
            v2.PILToTensor(),
        ]
    )


def eval_transform(resize_size: int = RESIZE_SIZE, crop_size: int = CROP_SIZE, ten_crop: bool = False) -> v2.Compose:
    """Resize the shorter side, then one centre crop (``[3, H, W]``) or ten crops (``[10, 3, H, W]``), uint8."""
    if ten_crop:
        return v2.Compose(
            [
                v2.Resize(resize_size, antialias=True),
                v2.TenCrop(crop_size),
                stack_crops,
            ]
        )
    return v2.Compose([v2.Resize(resize_size, antialias=True), v2.CenterCrop(crop_size), v2.PILToTensor()])


def stack_crops(crops: tuple[Image.Image, ...]) -> torch.Tensor:
    """Ten PIL crops -> uint8 ``[10, 3, H, W]``."""
    return torch.stack([v2.functional.pil_to_tensor(crop) for crop in crops])


def pca_lighting(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Add AlexNet's PCA colour noise to float images in [0, 1], ``[B, 3, H, W]``, one draw per image."""
    eigenvalues = torch.tensor(PCA_EIGENVALUES, device=images.device)
    eigenvectors = torch.tensor(PCA_EIGENVECTORS, device=images.device)
    alpha = torch.randn(images.shape[0], 3, generator=generator).to(images.device) * LIGHTING_STD
    shift = (alpha * eigenvalues) @ eigenvectors.T  # [B, 3]: sum_j v_j * alpha_j * lambda_j
    return images + shift[:, :, None, None]
