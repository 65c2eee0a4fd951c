"""torchvision's ImageNet ResNets (18/34/50/101/152) imported, exported and served: ``/classify`` answers what
torchvision's own model says after torchvision's own eval transform of each weights file (V1: resize 256, V2: 232,
both crop 224), on the shipped real photos. The weights are torchvision's modules with BatchNorm calibrated on those
photos and a scaled classifier (nothing downloaded); V1 and V2 files are the same architecture."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torchvision
from PIL import Image

from tests.torchvision_weights import CLASSIFIER_WEIGHTS as WEIGHTS
from tests.torchvision_weights import classifier_resize as resize_size

V1_TRANSFORM = torchvision.models.ResNet50_Weights.IMAGENET1K_V1  # resize 256, crop 224, as every V1 file
PHOTOS = 6  # real photos per model through /classify (grayscale and portrait ones among the shipped)
TOP_K = 5
# |served - torchvision| per class probability: float32's own error at depth 152 here is 1.9e-3 in logits (vs
# float64), up to 5e-4 in a probability; the shallower nets stay below 1e-4
PROBABILITY_TOLERANCE = 1e-3


@pytest.fixture(scope="module", params=list(WEIGHTS))
def imported(request, torchvision_classifier) -> tuple[str, torch.nn.Module, dict]:
    """(arch, torchvision's model, the report of its export with its weights' own resize)."""
    return (request.param, *torchvision_classifier(request.param))


@torch.no_grad()
def torchvision_probabilities(
    model: torch.nn.Module, path: Path, weights: torchvision.models.WeightsEnum
) -> np.ndarray:
    """torchvision's answer: the eval transform of ``weights`` (PIL bilinear resize, centre crop), softmax."""
    image = Image.open(path).convert("RGB")
    return torch.softmax(model(weights.transforms()(image)[None]), dim=1)[0].double().numpy()


def test_the_file_carries_the_eval_transform_of_its_weights(imported) -> None:
    arch, _, report = imported
    props = {e.key: e.value for e in onnx.load(report["output"], load_external_data=False).metadata_props}
    assert (props["model_name"], props["resize_size"], props["crop_size"]) == (arch, str(resize_size(arch)), "224")
    assert json.loads(props["recipe"])["layout"] == "v1.5 (stride_in_1x1=False)"
    assert report["verify"]["images"] == 2 and report["verify"]["max_abs_diff"] <= report["verify"]["tolerance"]


def test_classify_answers_as_torchvision(serve, imported, photos) -> None:
    arch, model, report = imported
    worst, off_by_v1_resize = 0.0, 0.0
    with serve(report["output"], RESNET_LAB_EXACT_DECODE="1") as client:
        assert client.get("/info").json()["model"] == arch
        for path in photos[:PHOTOS]:
            answer = client.post("/classify", files={"image": (path.name, path.read_bytes())},
                                 data={"top_k": str(TOP_K)})  # fmt: skip
            assert answer.status_code == 200, answer.text
            predictions = answer.json()["predictions"]
            expected = torchvision_probabilities(model, path, WEIGHTS[arch])
            served = np.array([p["score"] for p in predictions])
            indices = [p["index"] for p in predictions]
            worst = max(worst, float(np.abs(served - expected[indices]).max()))
            # a true top 5 of torchvision's answer (order-free: near-ties may swap within the tolerance)
            assert served.min() >= np.sort(expected)[-TOP_K] - PROBABILITY_TOLERANCE
            if resize_size(arch) != 256:  # V1's transform (resize 256) would answer otherwise
                v1 = torchvision_probabilities(model, path, V1_TRANSFORM)
                off_by_v1_resize = max(off_by_v1_resize, float(np.abs(served - v1[indices]).max()))
    print(f"{arch}: max |/classify - torchvision| probability {worst:.1e}; vs V1's transform {off_by_v1_resize:.3f}")
    assert worst <= PROBABILITY_TOLERANCE
    assert resize_size(arch) == 256 or off_by_v1_resize > 10 * PROBABILITY_TOLERANCE  # the file's 232 was used
