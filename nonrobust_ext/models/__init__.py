"""Architectures, input normalisation and checkpoint loading.

Every model is an :class:`ImageClassifier`: inputs in ``[0, 1]``, normalisation inside ``forward``, a
``fc`` head, ``model(x, return_features=True) -> (embedding, logits)`` and ``stages()`` for freezing.

    create(name, *, num_classes, in_channels=3, mean=None, std=None, input_size=None, **kwargs)
                                        build by name (input_size: resize inside the model)
    available()                         the built-in names
    load_weights(model, path_or_state_dict, *, format="auto", exclude_head=False, strict=True)
    save_weights(model, path)           atomic write
    find_torchvision_weights(arch)      torchvision's ImageNet weights in the local cache (no downloads)

Small inputs (28-32 px): resnet8, resnet18_small, preact_resnet18, wrn16_4, wrn28_10.
ImageNet-style with torchvision's state-dict keys: resnet18, resnet50, wide_resnet50_2.
Any torchvision classifier: ``"torchvision:<name>"`` (needs torchvision).
"""

from ._base import ImageClassifier, Normalize
from ._torchvision import TorchvisionClassifier
from .checkpoints import LoadReport, load_weights, save_weights
from .imagenet import resnet18, resnet50, wide_resnet50_2
from .pretrained import find_torchvision_weights
from .registry import available, canonical_name, create
from .resnet import BasicBlock, Bottleneck, ResNet
from .small import PreActBlock, PreActResNet, WideResNet, preact_resnet18, resnet8, resnet18_small, wrn16_4, wrn28_10

__all__ = [
    "BasicBlock", "Bottleneck", "ImageClassifier", "LoadReport", "Normalize", "PreActBlock", "PreActResNet", "ResNet",
    "TorchvisionClassifier", "WideResNet", "available", "canonical_name", "create", "find_torchvision_weights",
    "load_weights", "preact_resnet18", "resnet8", "resnet18", "resnet18_small", "resnet50", "save_weights",
    "wide_resnet50_2", "wrn16_4", "wrn28_10",
]
