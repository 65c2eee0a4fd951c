"""The one image loader: torchvision's eval transform to the pixel, decoder errors as 4xx, our bugs not hidden."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from inference import imaging


@pytest.mark.parametrize(("resize", "crop"), [(256, 224), (32, 32), (40, 32)])
def test_resize_and_crop_is_torchvisions_eval_transform(photos, resize: int, crop: int) -> None:
    reference = v2.Compose([v2.Resize(resize, antialias=True), v2.CenterCrop(crop), v2.PILToTensor()])
    for path in photos:
        image = imaging.load_rgb(path)
        ours = imaging.preprocess(path, resize, crop)
        assert ours.dtype == np.uint8 and ours.shape == (3, crop, crop)
        assert torch.equal(torch.from_numpy(ours), reference(image)), path.name


def test_decoder_errors_are_the_clients_and_other_errors_are_ours(monkeypatch, photos) -> None:
    data = photos[0].read_bytes()
    with pytest.raises(imaging.ImageRejected, match="cannot decode") as truncated:
        imaging.load_rgb(data[: len(data) // 3])
    assert truncated.value.status == 400

    def out_of_memory(self: Image.Image) -> None:
        raise MemoryError

    monkeypatch.setattr(Image.Image, "load", out_of_memory)
    with pytest.raises(MemoryError):  # not dressed up as a bad upload: the service logs it and answers 500
        imaging.load_rgb(data)
