"""Architectures for small inputs (28-32 px, 1 or 3 channels): the backbones of the Fashion-MNIST /
CIFAR experiments and of the adversarial-training papers the study compares with.

- ``resnet8``: three stages of one basic block each (16/32/64 channels); ~78k parameters at 10 classes,
  trains in seconds per epoch on a CPU. The default backbone of the Fashion-MNIST study.
- ``resnet18_small``: ResNet-18's four stages on a 3x3 stride-1 stem without max-pool (PGD-AT, TRADES).
- ``preact_resnet18``: the pre-activation ResNet-18 of Rice et al. (2020) / Wong et al. (2020).
- ``wrn16_4``, ``wrn28_10``: Wide ResNets depth-k (Zagoruyko & Komodakis, 2016), pre-activation blocks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .._validate import check_int, check_optional_int, check_real
from ._base import ImageClassifier, Stats, check_stage_spec, conv1x1, conv3x3, init_conv_bn
from .resnet import BasicBlock, ResNet


class PreActBlock(nn.Module):
    """Pre-activation basic block: ``BN-ReLU-conv3x3(stride)-BN-ReLU-[dropout]-conv3x3`` plus a shortcut.

    The shortcut is the identity, or a 1x1 convolution of the *pre-activated* input where the shape
    changes (He et al., "Identity mappings in deep residual networks", 2016).
    """

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.shortcut = conv1x1(inplanes, planes, stride) if stride != 1 or inplanes != planes else None
        self.dropout = float(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        identity = x if self.shortcut is None else self.shortcut(pre)
        out = F.relu(self.bn2(self.conv1(pre)))
        if self.dropout > 0:
            out = F.dropout(out, p=self.dropout, training=self.training)
        return self.conv2(out) + identity


class PreActResNet(ImageClassifier):
    """A pre-activation ResNet on a 3x3 stride-1 stem (no BN in the stem: every block starts with one).

    Args:
        layers: blocks per stage (strides 1, 2, 2, ...).
        widths: channels of each stage.
        num_classes, in_channels, mean, std: as for every model (:class:`ImageClassifier`).
        stem_width: channels of the stem convolution (``widths[0]`` by default; 16 for Wide ResNets).
        dropout: dropout probability between the two convolutions of each block (0 disables it).

    The blocks end on a convolution, so the last stage is followed by ``bn`` + ReLU; that final
    BN belongs to the last stage.

    Stages: ``[conv1, layer1, ..., (layerN, bn, relu)]``.
    """

    def __init__(self, layers: Sequence[int], widths: Sequence[int], *, num_classes: int, in_channels: int = 3,
                 stem_width: int | None = None, dropout: float = 0.0, mean: Stats = None, std: Stats = None) -> None:
        super().__init__(in_channels=in_channels, mean=mean, std=std)
        num_classes = check_int(num_classes, "num_classes", 1)
        layers, widths = check_stage_spec(layers, widths)
        dropout = check_real(dropout, "dropout", low=0.0, high=1.0, high_inclusive=False)
        stem_width = check_optional_int(stem_width, "stem_width", 1)
        inplanes = widths[0] if stem_width is None else stem_width
        self.conv1 = conv3x3(self.in_channels, inplanes)
        self._stage_names: list[str] = []
        for i, (planes, n) in enumerate(zip(widths, layers, strict=True)):
            blocks = []
            for j in range(n):
                blocks.append(PreActBlock(inplanes, planes, stride=2 if (i > 0 and j == 0) else 1, dropout=dropout))
                inplanes = planes
            name = f"layer{i + 1}"
            self.add_module(name, nn.Sequential(*blocks))
            self._stage_names.append(name)
        self.bn = nn.BatchNorm2d(inplanes)
        self.relu = nn.ReLU()
        self.feature_dim = inplanes
        self.fc = nn.Linear(inplanes, num_classes)
        init_conv_bn(self)

    def forward_maps(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        for name in self._stage_names:
            x = getattr(self, name)(x)
        return self.relu(self.bn(x))

    def stages(self) -> list[nn.Module]:
        layers = [getattr(self, name) for name in self._stage_names]
        return [self.conv1, *layers[:-1], nn.Sequential(layers[-1], self.bn, self.relu)]


class WideResNet(PreActResNet):
    """Wide ResNet WRN-``depth``-``widen_factor``: a 16-channel stem, then three stages of
    ``(depth - 4) / 6`` pre-activation blocks at ``16k, 32k, 64k`` channels (strides 1, 2, 2).

    Args:
        depth: total depth, ``6n + 4`` (16, 22, 28, 34, ...).
        widen_factor: the width multiplier ``k``.
        num_classes, in_channels, mean, std, dropout: as for :class:`PreActResNet`.

    Stages: ``[conv1, layer1, layer2, (layer3, bn, relu)]``.
    """

    def __init__(self, depth: int, widen_factor: int, *, num_classes: int, in_channels: int = 3,
                 dropout: float = 0.0, mean: Stats = None, std: Stats = None) -> None:
        depth = check_int(depth, "depth", 1)
        widen_factor = check_int(widen_factor, "widen_factor", 1)
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, ...), got {depth}")
        n = (depth - 4) // 6
        k = widen_factor
        super().__init__((n, n, n), (16 * k, 32 * k, 64 * k), num_classes=num_classes, in_channels=in_channels,
                         stem_width=16, dropout=dropout, mean=mean, std=std)
        self.depth, self.widen_factor = depth, k


def resnet8(*, num_classes: int, in_channels: int = 3, mean: Stats = None, std: Stats = None,
            zero_init_residual: bool = False) -> ResNet:
    """Small ResNet: 3x3 stem (16 channels), one basic block per stage at 16/32/64 channels (strides 1/2/2).

    Fast on a CPU at 1x28x28 (~78k parameters at 10 classes): the default backbone of the
    Fashion-MNIST study. ``feature_dim`` is 64.
    """
    return ResNet(BasicBlock, (1, 1, 1), num_classes=num_classes, in_channels=in_channels, widths=(16, 32, 64),
                  stem="small", zero_init_residual=zero_init_residual, mean=mean, std=std)


def resnet18_small(*, num_classes: int, in_channels: int = 3, mean: Stats = None, std: Stats = None,
                   zero_init_residual: bool = False) -> ResNet:
    """The CIFAR ResNet-18 of adversarial-training papers: 3x3 stride-1 stem, no max-pool, ResNet-18's
    four stages (64-512 channels). Keys as torchvision's resnet18 except ``conv1`` is 3x3.
    ``feature_dim`` is 512."""
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes=num_classes, in_channels=in_channels, stem="small",
                  zero_init_residual=zero_init_residual, mean=mean, std=std)


def preact_resnet18(*, num_classes: int, in_channels: int = 3, mean: Stats = None, std: Stats = None,
                    dropout: float = 0.0) -> PreActResNet:
    """Pre-activation ResNet-18 for 32 px inputs (64-512 channels, two blocks per stage).
    ``feature_dim`` is 512."""
    return PreActResNet((2, 2, 2, 2), (64, 128, 256, 512), num_classes=num_classes, in_channels=in_channels,
                        dropout=dropout, mean=mean, std=std)


def wrn16_4(*, num_classes: int, in_channels: int = 3, mean: Stats = None, std: Stats = None,
            dropout: float = 0.0) -> WideResNet:
    """WRN-16-4 (~2.7M parameters at 10 classes). ``feature_dim`` is 256."""
    return WideResNet(16, 4, num_classes=num_classes, in_channels=in_channels, dropout=dropout, mean=mean, std=std)


def wrn28_10(*, num_classes: int, in_channels: int = 3, mean: Stats = None, std: Stats = None,
             dropout: float = 0.0) -> WideResNet:
    """WRN-28-10 (~36.5M parameters at 10 classes), the RobustBench CIFAR workhorse. ``feature_dim`` is 640."""
    return WideResNet(28, 10, num_classes=num_classes, in_channels=in_channels, dropout=dropout, mean=mean, std=std)
