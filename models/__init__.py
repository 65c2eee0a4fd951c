"""The paper's networks as plain torch.nn modules: ``create_model(name, **options)``, ``list_models()``."""

from . import cifar, resnet  # noqa: F401  (importing registers the constructors)
from .blocks import BasicBlock, Bottleneck, ZeroPadShortcut
from .cifar import CifarResNet
from .registry import ModelInfo, create_model, list_models, model_info
from .resnet import ResNet

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "CifarResNet",
    "ModelInfo",
    "ResNet",
    "ZeroPadShortcut",
    "create_model",
    "list_models",
    "model_info",
]
