"""The paper's networks: shapes, parameter counts, FLOPs, torchvision compatibility."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from PIL import Image
from torchvision.transforms import v2

from models import ZeroPadShortcut, create_model, list_models, model_info
from models.paper import TABLE1_GFLOPS, TABLE6_PARAMS_M
from models.registry import FAMILY_INPUTS
from models.summary import count_multiply_adds, count_parameters
from models.summary import main as summary_main

TORCHVISION_PARAMS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
}


def test_registry_lists_every_network_of_the_paper():
    names = set(list_models())
    for depth in (18, 34, 50, 101, 152):
        assert {f"resnet{depth}", f"plain{depth}"} <= names
    for depth in (20, 32, 44, 56, 110, 1202):
        assert {f"cifar_resnet{depth}", f"cifar_plain{depth}"} <= names
    with pytest.raises(ValueError, match="unknown model"):
        create_model("resnet19")


@pytest.mark.parametrize("name", list(TORCHVISION_PARAMS))
def test_option_b_parameter_counts_equal_torchvision(name):
    ours = create_model(name, shortcut="B", stride_in_1x1=False)
    theirs = getattr(torchvision.models, name)(weights=None)
    assert count_parameters(ours) == TORCHVISION_PARAMS[name] == count_parameters(theirs)
    # the paper's stride placement changes no shape
    assert count_parameters(create_model(name)) == TORCHVISION_PARAMS[name]


@pytest.mark.parametrize("depth", sorted(TABLE6_PARAMS_M))
def test_cifar_parameter_counts_round_to_table6(depth):
    params = count_parameters(create_model(f"cifar_resnet{depth}"))
    digits = 2 if params < 1e6 else 1
    assert round(params / 1e6, digits) == TABLE6_PARAMS_M[depth]


@pytest.mark.parametrize("depth", [18, 50])
def test_option_a_adds_no_parameter_and_c_adds_more_than_b(depth):
    plain = count_parameters(create_model(f"plain{depth}"))
    option_a = count_parameters(create_model(f"resnet{depth}", shortcut="A"))
    option_b = count_parameters(create_model(f"resnet{depth}", shortcut="B"))
    option_c = count_parameters(create_model(f"resnet{depth}", shortcut="C"))
    assert option_a == plain < option_b < option_c
    assert count_parameters(create_model("cifar_resnet20")) == count_parameters(create_model("cifar_plain20"))


def test_option_a_pads_zeros_and_subsamples():
    shortcut = ZeroPadShortcut(2, 4, stride=2)
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(1, 2, 4, 4)
    y = shortcut(x)
    assert y.shape == (1, 4, 2, 2)
    assert torch.equal(y[:, :2], x[:, :, ::2, ::2])
    assert not y[:, 2:].any()


@pytest.mark.parametrize("depth", sorted(TABLE1_GFLOPS))
def test_multiply_adds_within_3_percent_of_table1(depth):
    macs = count_multiply_adds(create_model(f"resnet{depth}", shortcut="B", stride_in_1x1=True), 224)
    assert abs(macs / 1e9 - TABLE1_GFLOPS[depth]) / TABLE1_GFLOPS[depth] < 0.03


def test_stride_placement_moves_the_stride():
    paper = create_model("resnet50")
    v15 = create_model("resnet50", stride_in_1x1=False)
    assert paper.layer2[0].conv1.stride == (2, 2) and paper.layer2[0].conv2.stride == (1, 1)
    assert v15.layer2[0].conv1.stride == (1, 1) and v15.layer2[0].conv2.stride == (2, 2)


def test_plain_networks_refuse_shortcuts_and_zero_init():
    with pytest.raises(ValueError, match="no shortcuts"):
        create_model("plain18", shortcut="B")
    with pytest.raises(ValueError, match="plain"):
        create_model("cifar_plain20", zero_init_residual=True)
    with pytest.raises(ValueError, match="shortcut must be"):
        create_model("resnet18", shortcut="D")
    with pytest.raises(ValueError, match="6n\\+2"):
        from models.cifar import CifarResNet

        CifarResNet(depth=21)


def test_zero_init_residual_makes_blocks_start_as_identity():
    model = create_model("cifar_resnet20", zero_init_residual=True)
    assert all(not block.bn2.weight.any() for stage in model.stages() for block in stage)
    assert create_model("resnet50", zero_init_residual=True).layer1[0].bn3.weight.abs().sum() == 0


def test_he_initialisation_and_no_dropout():
    model = create_model("resnet18")
    conv = model.layer3[0].conv1
    fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
    assert conv.weight.std().item() == pytest.approx((2.0 / fan_out) ** 0.5, rel=0.05)
    assert not any(isinstance(m, torch.nn.Dropout) for m in model.modules())


def _normalised_batch(files: list[Path]) -> torch.Tensor:
    """torchvision's ImageNet eval transform of real photos: resize 256, centre 224, normalised."""
    transform = v2.Compose(
        [
            v2.PILToTensor(),
            v2.Resize(256, antialias=True),
            v2.CenterCrop(224),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(FAMILY_INPUTS["imagenet"].mean), std=list(FAMILY_INPUTS["imagenet"].std)),
        ]
    )
    return torch.stack([transform(Image.open(path).convert("RGB")) for path in files])


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_torchvision_state_dict_loads_strictly_and_matches(name, photos):
    torch.manual_seed(0)
    images = _normalised_batch(photos[:8])
    theirs = getattr(torchvision.models, name)(weights=None)
    # Give BN realistic running statistics so eval-mode logits are of a sane size.
    for module in theirs.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None
    theirs.train()
    with torch.no_grad():
        theirs(images)
    theirs.eval()
    ours = create_model(name, stride_in_1x1=False)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    ours.eval()
    with torch.no_grad():
        expected, actual = theirs(images), ours(images)
        assert torch.allclose(actual, expected, atol=1e-5, rtol=1e-5)
        trunk = torch.nn.Sequential(*list(theirs.children())[:-2])
        assert torch.equal(ours.forward_features(images), trunk(images))


@pytest.mark.parametrize("name", list_models())
def test_every_model_runs_forward_and_backward(name):
    info = model_info(name)
    # ImageNet nets are fully convolutional up to the global pool, so 64x64 keeps this test quick.
    size = 32 if info.family == "cifar10" else 64
    model = create_model(name, num_classes=7)
    images = torch.randn(2, 3, size, size)
    logits = model(images)
    assert logits.shape == (2, 7)
    logits.logsumexp(dim=1).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    features = model.forward_features(images)
    assert features.shape[:2] == (2, model.num_features)


def test_summary_cli_prints_every_model(capsys):
    rows = summary_main(["resnet50", "cifar_resnet20"])
    out = capsys.readouterr().out
    assert "resnet50" in out and "cifar_resnet20" in out
    assert rows[0]["params"] == TORCHVISION_PARAMS["resnet50"]
    assert abs(rows[0]["macs"] / 1e9 - 3.8) < 0.12
