"""ImageNet from the class-folder layout (``train/<wnid>/*.JPEG``, ``val/<wnid>/*.JPEG``), paper augmentation.

Class index = position of the wnid among all 1,000 wnids in sorted order (``imagenet_classes.tsv``), so a
partial folder keeps the real indices. Loader workers decode and crop to uint8 tensors; the float work
(scaling, PCA lighting, mean/std) runs on the training device, batched.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import torch
from PIL import Image
from torchvision.datasets import DatasetFolder
from torchvision.transforms import v2

from inference import imaging
from models.registry import FAMILY_INPUTS
from toolkit.errors import UsageError

CLASSES_FILE = Path(__file__).with_name("imagenet_classes.tsv")
EXTENSIONS = (".jpeg", ".jpg", ".png")
HOW_TO_GET = (
    "download ILSVRC-2012 from image-net.org and arrange it as DIR/train/<wnid>/*.JPEG and DIR/val/<wnid>/*.JPEG "
    "(e.g. with the widely used valprep.sh for val/)"
)
INPUTS = FAMILY_INPUTS["imagenet"]  # mean, std, resize and crop sizes
# AlexNet's PCA lighting ("the standard colour augmentation", Krizhevsky et al. 2012), RGB, pixels in [0, 1].
PCA_EIGENVALUES = (0.2175, 0.0188, 0.0045)
PCA_EIGENVECTORS = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)
LIGHTING_STD = 0.1
SCALE_RANGE = (256, 480)  # shorter side drawn uniformly from this range (paper Sec. 3.4)


class ImageDecodeError(RuntimeError):
    """An image file that PIL cannot read; the message names the file."""


def read_classes(path: str | os.PathLike) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(wnids, names)`` from an ``index<TAB>wnid<TAB>name`` file (header optional), index order."""
    rows: dict[int, tuple[str, str]] = {}
    for line in Path(path).read_text().splitlines():
        parts = line.split("\t")
        if len(parts) >= 3 and parts[0].strip().isdigit():
            rows[int(parts[0])] = (parts[1], parts[2])
    if not rows or sorted(rows) != list(range(len(rows))):
        raise UsageError(f"{path}: class indices are not 0..N-1; expected lines 'index<TAB>wnid<TAB>name'")
    return tuple(rows[i][0] for i in range(len(rows))), tuple(rows[i][1] for i in range(len(rows)))


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(wnids, names)`` of the 1,000 classes, index order."""
    return read_classes(CLASSES_FILE)


def load_rgb(path: str) -> Image.Image:
    """The project's image loader (EXIF orientation, any mode to RGB); a clear error names a broken file."""
    try:
        return imaging.load_rgb(path)
    except (imaging.ImageRejected, OSError) as error:
        raise ImageDecodeError(f"cannot read image {path} ({error})") from None


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
            raise UsageError(
                f"{directory} has folders that are not ImageNet wnids: {', '.join(unknown[:5])}"
                f"{' ...' if len(unknown) > 5 else ''}; expected <wnid>/ folders such as n01440764/; {HOW_TO_GET}"
            )
        if not present:
            raise UsageError(f"{directory} has no <wnid>/ class folders; {HOW_TO_GET}")
        return present, {wnid: index[wnid] for wnid in present}


def open_split(data_dir: str | Path, split: str, transform) -> ImageNetFolder:
    """``data_dir/split`` as an ``ImageNetFolder``; UsageError naming the expected layout otherwise."""
    data_dir = Path(data_dir)
    folder = data_dir / split
    if not data_dir.is_dir():
        raise UsageError(f"ImageNet data folder not found: {data_dir}; {HOW_TO_GET}")
    if not folder.is_dir():
        raise UsageError(f"{data_dir} lacks {split}/ (expected {split}/<wnid>/*.JPEG); {HOW_TO_GET}")
    dataset = ImageNetFolder(folder, transform=transform)
    if len(dataset) == 0:
        raise UsageError(f"{folder} holds no .JPEG/.jpg/.png files under its <wnid>/ folders; {HOW_TO_GET}")
    return dataset


def train_transform() -> v2.Compose:
    """Scale augmentation, random 224 crop, flip; uint8 out (lighting and mean/std run on the device)."""
    return v2.Compose(
        [
            v2.RandomShortestSize(min_size=list(range(SCALE_RANGE[0], SCALE_RANGE[1] + 1)), antialias=True),
            v2.RandomCrop(INPUTS.crop_size),
            v2.RandomHorizontalFlip(),
            v2.PILToTensor(),
        ]
    )


def eval_transform(
    resize_size: int = INPUTS.resize_size, crop_size: int = INPUTS.crop_size, ten_crop: bool = False
) -> Callable[[Image.Image], torch.Tensor]:
    """Shorter side to ``resize_size``, then one centre crop (``[3, H, W]``) or ten crops (``[10, 3, H, W]``), uint8.

    The single crop is the service's own resize and crop (``service.imaging``), so evaluation and serving see the
    same pixels.
    """
    if ten_crop:
        return v2.Compose([v2.Resize(resize_size, antialias=True), v2.TenCrop(crop_size), stack_crops])
    return CentreCrop(resize_size, crop_size)


class CentreCrop:
    """``service.imaging``'s resize and centre crop as a picklable transform: PIL image -> uint8 ``[3, H, W]``."""

    def __init__(self, resize_size: int, crop_size: int) -> None:
        self.resize_size, self.crop_size = resize_size, crop_size

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return torch.from_numpy(imaging.to_chw(imaging.resize_and_crop(image, self.resize_size, self.crop_size)))


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
