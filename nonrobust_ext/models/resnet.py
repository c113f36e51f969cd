"""ResNets (He et al., 2016) with torchvision's module names, in two stems.

- ``stem="imagenet"``: 7x7 stride-2 convolution, BN, ReLU, 3x3 stride-2 max-pool. With the standard
  widths this is torchvision's ResNet key for key and shape for shape, so torchvision (and
  robustness-library) checkpoints load without renaming.
- ``stem="small"``: 3x3 stride-1 convolution, BN, ReLU, no pooling — the CIFAR ResNets of the
  adversarial-training literature, for 28-32 px inputs.

State-dict layout::

    conv1.weight   bn1.{weight, bias, running_mean, running_var, num_batches_tracked}
    layer<i>.<j>.{conv1, bn1, conv2, bn2[, conv3, bn3]}      residual branch
    layer<i>.0.downsample.0 (1x1 conv), .downsample.1 (BN)   projection shortcut where the shape changes
    fc.weight   fc.bias

Bottlenecks stride in their 3x3 convolution ("ResNet v1.5", as torchvision does), so torchvision weights
reproduce torchvision's outputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .._validate import check_bool, check_choice, check_int
from ._base import ImageClassifier, Stats, check_stage_spec, conv1x1, conv3x3, init_conv_bn


class BasicBlock(nn.Module):
    """Two 3x3 convolutions and a residual connection (ResNet-18/34).

    Activations are not computed in place: analyses hook intermediate outputs, and an in-place ReLU
    would rewrite a tensor a hook already holds.
    """

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 base_width: int = 64) -> None:
        super().__init__()
        if base_width != 64:
            raise ValueError(f"BasicBlock has no inner width: base_width must be 64, got {base_width}")
        # Registration order = torchvision's key order.
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    @property
    def residual_bn(self) -> nn.BatchNorm2d:
        """The BN that ends the residual branch (zeroed by ``zero_init_residual``)."""
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carries the stride), 1x1 expand by 4, and a residual connection (ResNet-50 up).

    The inner width is ``planes * base_width / 64``: 64 is the standard ResNet, 128 the wide
    ResNet-50-2 as torchvision defines it.
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 base_width: int = 64) -> None:
        super().__init__()
        width = planes * base_width // 64
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.downsample = downsample

    @property
    def residual_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + identity)


class ResNet(ImageClassifier):
    """A ResNet with torchvision's module names, a choice of stem, and configurable stage widths/depths.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: blocks per stage, e.g. ``(2, 2, 2, 2)`` for ResNet-18; the first stage has stride 1,
            the others stride 2.
        num_classes: outputs of the head.
        in_channels: input channels (only ``conv1``'s shape depends on it).
        widths: ``planes`` of each stage (a stage outputs ``planes * block.expansion`` channels).
        stem: ``"imagenet"`` or ``"small"`` (see the module docstring).
        base_width: inner width of bottlenecks (64 standard, 128 for wide_resnet50_2).
        zero_init_residual: start the last BN of every residual branch at 0 (each block starts as
            the identity; Goyal et al., 2017).
        mean, std: input normalisation (:class:`Normalize`).

    Stages: ``[stem (conv1, bn1, relu, maxpool), layer1, ..., layerN]``.
    """

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: Sequence[int], *, num_classes: int,
                 in_channels: int = 3, widths: Sequence[int] = (64, 128, 256, 512), stem: str = "imagenet",
                 base_width: int = 64, zero_init_residual: bool = False, mean: Stats = None,
                 std: Stats = None) -> None:
        super().__init__(in_channels=in_channels, mean=mean, std=std)
        num_classes = check_int(num_classes, "num_classes", 1)
        layers, widths = check_stage_spec(layers, widths)
        check_choice(stem, "stem", ("imagenet", "small"))
        base_width = check_int(base_width, "base_width", 1)
        check_bool(zero_init_residual, "zero_init_residual")
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(self.in_channels, widths[0], kernel_size=7, stride=2, padding=3, bias=False)
        else:
            self.conv1 = conv3x3(self.in_channels, widths[0])
        self.stem_kind = stem
        if stem == "imagenet":  # its total stride: 4 in the stem, 2 in every stage after the first
            self.min_input_size = 4 * 2 ** (len(layers) - 1)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        # The small stem keeps the attribute (as an identity) so code that swaps model.maxpool works on both.
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1) if stem == "imagenet" else nn.Identity()
        inplanes = widths[0]
        self._stage_names: list[str] = []
        for i, (planes, n) in enumerate(zip(widths, layers, strict=True)):
            stride = 1 if i == 0 else 2
            out = planes * block.expansion
            downsample = None
            if stride != 1 or inplanes != out:
                downsample = nn.Sequential(conv1x1(inplanes, out, stride), nn.BatchNorm2d(out))
            blocks = [block(inplanes, planes, stride, downsample, base_width)]
            blocks += [block(out, planes, 1, None, base_width) for _ in range(1, n)]
            inplanes = out
            name = f"layer{i + 1}"
            self.add_module(name, nn.Sequential(*blocks))
            self._stage_names.append(name)
        # Stateless, registered for torchvision parity (forward_features pools functionally, the same op).
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.feature_dim = inplanes
        self.fc = nn.Linear(inplanes, num_classes)
        init_conv_bn(self)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    nn.init.zeros_(m.residual_bn.weight)

    def _stem(self) -> nn.Sequential:
        return nn.Sequential(self.conv1, self.bn1, self.relu, self.maxpool)

    def forward_maps(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for name in self._stage_names:
            x = getattr(self, name)(x)
        return x

    def stages(self) -> list[nn.Module]:
        return [self._stem()] + [getattr(self, name) for name in self._stage_names]
