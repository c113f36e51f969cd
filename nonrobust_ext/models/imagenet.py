"""ImageNet-style ResNets whose ``state_dict()`` matches torchvision's key for key and shape for shape.

torchvision checkpoints (and robustness-library ones, after :func:`load_weights` converts them) load
with ``strict=True``. The input normalisation lives in non-persistent buffers, so it adds no keys.
Parameter counts at 1000 classes equal torchvision's: resnet18 11,689,512; resnet50 25,557,032;
wide_resnet50_2 68,883,240.
"""

from __future__ import annotations

from ._base import Stats
from .resnet import BasicBlock, Bottleneck, ResNet


def resnet18(*, num_classes: int, in_channels: int = 3, mean: Stats = None, std: Stats = None,
             zero_init_residual: bool = False) -> ResNet:
    """ResNet-18 (basic blocks 2-2-2-2, 64-512 channels); ``feature_dim`` 512."""
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes=num_classes, in_channels=in_channels,
                  zero_init_residual=zero_init_residual, mean=mean, std=std)


def resnet50(*, num_classes: int, in_channels: int = 3, mean: Stats = None, std: Stats = None,
             zero_init_residual: bool = False) -> ResNet:
    """ResNet-50 v1.5 (bottlenecks 3-4-6-3, stride in the 3x3); ``feature_dim`` 2048."""
    return ResNet(Bottleneck, (3, 4, 6, 3), num_classes=num_classes, in_channels=in_channels,
                  zero_init_residual=zero_init_residual, mean=mean, std=std)


def wide_resnet50_2(*, num_classes: int, in_channels: int = 3, mean: Stats = None, std: Stats = None,
                    zero_init_residual: bool = False) -> ResNet:
    """Wide ResNet-50-2: ResNet-50 with bottlenecks twice as wide inside (outputs unchanged);
    ``feature_dim`` 2048."""
    return ResNet(Bottleneck, (3, 4, 6, 3), num_classes=num_classes, in_channels=in_channels, base_width=128,
                  zero_init_residual=zero_init_residual, mean=mean, std=std)
