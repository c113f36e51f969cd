"""What every architecture shares: the input normalisation layer and the classifier base class.

Models take inputs in ``[0, 1]`` pixel space and normalise inside ``forward``: attacks then work with
``[0, 1]`` bounds and an ``eps`` in pixel units, whatever normalisation the weights were trained with.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Union

import torch
from torch import nn

from .._validate import check_int, check_ints

Stats = Union[None, float, Sequence[float], torch.Tensor]


def check_stage_spec(layers: Sequence[int], widths: Sequence[int]) -> tuple[list[int], list[int]]:
    """Blocks and channels per stage of a ResNet-style network, checked: ints >= 1, equally long lists.

    Raises:
        TypeError: not a list/tuple of ints.
        ValueError: empty, an entry < 1, or different lengths.
    """
    blocks, channels = check_ints(layers, "layers", 1), check_ints(widths, "widths", 1)
    if len(blocks) != len(channels):
        raise ValueError(f"layers and widths must be equally long (one entry per stage), got {list(blocks)} "
                         f"and {list(channels)}")
    return list(blocks), list(channels)


def _as_stats(value: Stats, name: str) -> torch.Tensor | None:
    if value is None:
        return None
    array_like = isinstance(value, (numbers.Real, Sequence, torch.Tensor)) or hasattr(value, "__array__")
    if isinstance(value, (bool, str, bytes)) or not array_like:
        raise TypeError(f"{name} must be None, a number or one value per channel, got {type(value).__name__}")
    try:
        t = torch.as_tensor(value, dtype=torch.float32).detach().reshape(-1).clone()
    except (TypeError, ValueError, RuntimeError) as e:  # e.g. a list holding strings
        raise TypeError(f"{name} must be None, a number or one value per channel, got {value!r}") from e
    if t.numel() == 0:
        raise ValueError(f"{name} must hold at least one value, got an empty sequence")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite, got {t.tolist()}")
    return t


class Normalize(nn.Module):
    r"""Per-channel input normalisation ``(x - mean) / std``, the first layer of every model here.

    ``mean`` and ``std`` are *non-persistent* buffers: they follow ``model.to(device/dtype)`` but are
    not part of ``state_dict()``, so state dicts stay key-for-key compatible with torchvision. They are
    set at construction, with :meth:`set_`, or from a checkpoint that records them
    (:func:`nonrobust_ext.models.load_weights`).

    Args:
        mean: per-channel mean (one value, or one per channel). ``None`` means 0.
        std: per-channel standard deviation, each > 0. ``None`` means 1.
            With both ``None`` the layer is the identity.

    Shape:
        - Input: ``[B, C, *]`` with ``C`` equal to the number of values (or any ``C`` for one value).
        - Output: same as the input.
    """

    mean: torch.Tensor | None
    std: torch.Tensor | None

    def __init__(self, mean: Stats = None, std: Stats = None) -> None:
        super().__init__()
        self.register_buffer("mean", None, persistent=False)
        self.register_buffer("std", None, persistent=False)
        self.set_(mean, std)

    @property
    def is_identity(self) -> bool:
        return self.mean is None and self.std is None

    def set_(self, mean: Stats, std: Stats) -> Normalize:
        """Replaces the statistics (``None`` for both makes the layer the identity); returns ``self``.

        The new buffers take the device and dtype of the current ones (CPU float32 when the layer was
        the identity).
        """
        m, s = _as_stats(mean, "mean"), _as_stats(std, "std")
        if s is not None and not bool((s > 0).all()):
            raise ValueError(f"std must be > 0 for every channel, got {s.tolist()}")
        if m is not None and s is not None and m.numel() != s.numel() and 1 not in (m.numel(), s.numel()):
            raise ValueError(f"mean and std must have the same number of values, got {m.numel()} and {s.numel()}")
        if m is not None or s is not None:
            # A missing half becomes its neutral value so forward needs no branch per buffer.
            n = max(t.numel() for t in (m, s) if t is not None)
            m = torch.zeros(n) if m is None else m.expand(n).clone()
            s = torch.ones(n) if s is None else s.expand(n).clone()
            ref = self.mean if self.mean is not None else None
            if ref is not None:
                m, s = m.to(device=ref.device, dtype=ref.dtype), s.to(device=ref.device, dtype=ref.dtype)
        self.mean, self.std = m, s
        return self

    @property
    def num_channels(self) -> int | None:
        """How many channels the statistics are for (``None`` for the identity)."""
        return None if self.mean is None else self.mean.numel()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mean is None or self.std is None:
            return x
        n = self.mean.numel()
        if x.dim() < 2 or (n != 1 and x.shape[1] != n):
            raise ValueError(f"Normalize has statistics for {n} channels, got an input of shape {tuple(x.shape)}")
        view = (1, n) + (1,) * (x.dim() - 2)
        # Cast the statistics to the input's dtype (e.g. a bfloat16 batch under a float32 model) rather
        # than promoting the activations; .to is a no-op when they already match.
        mean = self.mean.to(device=x.device, dtype=x.dtype).view(view)
        std = self.std.to(device=x.device, dtype=x.dtype).view(view)
        return (x - mean) / std

    def extra_repr(self) -> str:
        if self.mean is None or self.std is None:
            return "identity"
        fmt = lambda t: "[" + ", ".join(f"{v:.4g}" for v in t.tolist()) + "]"  # noqa: E731
        return f"mean={fmt(self.mean)}, std={fmt(self.std)}"


class ImageClassifier(nn.Module):
    """Base class of every architecture: ``normalize`` -> backbone -> global pooling -> ``fc``.

    Subclasses register their layers in forward order (so ``state_dict()`` reads input to output),
    set ``feature_dim`` and implement :meth:`forward_maps` (normalised input -> last feature map)
    and :meth:`stages`.

    Attributes:
        normalize: the input normalisation, applied first inside ``forward`` (inputs are in ``[0, 1]``).
        fc: the classification head (torchvision naming).
        feature_dim: size of the penultimate embedding (``fc.in_features``).
        in_channels: number of input channels.
        arch: the name the model was created under (``models.create``), or the class name.
        min_input_size: the smallest input side the network is meant for: the total stride of the
            ImageNet-style networks (32 for ResNet-18/50 and EfficientNet-Lite), 1 for the small-input ones.
        input_size: ``None`` (default): the backbone sees inputs at their own size. An int ``s``:
            inputs are resized (bilinear) to ``s x s`` inside :meth:`prepare_input`, so a backbone
            pretrained at 224 px runs on 28-32 px images while attacks and ``eps`` stay in the
            images' own pixel space.
    """

    normalize: Normalize
    fc: nn.Linear
    feature_dim: int
    in_channels: int
    arch: str
    input_size: int | None = None
    # The smallest input side the network is meant for: below an ImageNet-style network's total stride its
    # last feature map would be under one pixel; the small-input networks take any size.
    min_input_size: int = 1

    def __init__(self, *, in_channels: int, mean: Stats = None, std: Stats = None) -> None:
        super().__init__()
        self.in_channels = check_int(in_channels, "in_channels", 1)
        self.arch = type(self).__name__
        self.normalize = Normalize(mean, std)
        n = self.normalize.num_channels
        if n is not None and n not in (1, self.in_channels):
            raise ValueError(
                f"mean/std must have one value or one per input channel ({self.in_channels}), got {n} values"
            )

    @property
    def num_classes(self) -> int:
        return self.fc.out_features

    def forward_maps(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised input ``[B, C, H, W]`` -> the last feature map ``[B, feature_dim, h, w]``."""
        raise NotImplementedError

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        """``[0, 1]`` images -> what the first backbone layer takes: resized to ``input_size`` (when
        set), a one-channel (grey) image repeated over ``in_channels`` (as torchvision's
        ``Grayscale(3)`` does, so RGB-pretrained weights take Fashion-MNIST), then normalised.

        Both steps happen inside the model so the attacks' perturbations and ``eps`` stay in the
        data's own pixel space (28x28x1 for Fashion-MNIST), whatever the backbone expects.
        """
        size = self.input_size
        if size is not None and tuple(x.shape[-2:]) != (size, size):
            x = nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        if x.dim() == 4 and x.shape[1] == 1 and self.in_channels > 1:
            x = x.expand(-1, self.in_channels, -1, -1)
        return self.normalize(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate embedding: :meth:`prepare_input`, backbone, global average pooling, flatten.

        Shape:
            - x: ``[B, in_channels, H, W]`` (or ``[B, 1, H, W]``) in ``[0, 1]``, any ``H, W`` when
              ``input_size`` is set.
            - Returns: ``[B, feature_dim]``.
        """
        h = self.forward_maps(self.prepare_input(x))
        return torch.flatten(nn.functional.adaptive_avg_pool2d(h, 1), 1)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        """Logits, or ``(embedding, logits)`` with ``return_features=True`` (``logits == fc(embedding)``).

        Shape:
            - x: ``[B, in_channels, H, W]`` in ``[0, 1]``.
            - Returns: logits ``[B, num_classes]``; the embedding is ``[B, feature_dim]``.
        """
        emb = self.forward_features(x)
        logits = self.fc(emb)
        return (emb, logits) if return_features else logits

    def stages(self) -> list[nn.Module]:
        """The backbone as input-to-output blocks ``[stem, layer1, layer2, ...]`` (the head is not a stage).

        Stages are disjoint, hold every parameter except ``fc``'s, and chaining them on a normalised
        input gives :meth:`forward_maps` — so "freeze the first k stages" is
        ``for s in model.stages()[:k]: s.requires_grad_(False)`` (and ``s.eval()`` to freeze BN
        statistics too).
        """
        raise NotImplementedError

    def stage_output_names(self) -> list[str]:
        """Names of the submodules (``named_modules``) whose outputs end the backbone's main stages, input
        to output: the layers the study's layer-wise comparisons (CKA) look at. The ResNets' ``layer1`` ...
        ``layer4``; architectures without such children override it."""
        return [name for name, _ in self.named_children() if name.startswith("layer")]

    def reset_head(self, num_classes: int) -> None:
        """Replaces ``fc`` by a freshly initialised ``Linear(feature_dim, num_classes)`` (same device/dtype)."""
        num_classes = check_int(num_classes, "num_classes", 1)
        old = self.fc.weight
        fc = nn.Linear(self.feature_dim, num_classes, device=old.device, dtype=old.dtype)
        init_linear(fc)
        self.fc = fc


def init_linear(fc: nn.Linear) -> None:
    """PyTorch's default ``Linear`` initialisation (uniform, bound 1/sqrt(fan_in)), written out so every
    architecture documents the same head initialisation."""
    bound = 1.0 / math.sqrt(fc.in_features)
    nn.init.uniform_(fc.weight, -bound, bound)
    if fc.bias is not None:
        nn.init.uniform_(fc.bias, -bound, bound)


def init_conv_bn(module: nn.Module) -> None:
    """He-normal (fan-out) convolutions, BatchNorm weight 1 / bias 0: the usual ResNet initialisation."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution, padding 1, no bias (a BatchNorm follows)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution, no bias: the projection shortcut."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)
