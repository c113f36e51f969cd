"""Building models by name: ``create`` and ``available``."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from ._base import ImageClassifier, Stats, check_positive_int
from ._torchvision import create_torchvision
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
}

TORCHVISION_PREFIX = "torchvision:"


def available() -> list[str]:
    """The built-in architecture names, sorted (``"torchvision:<name>"`` is accepted too, see :func:`create`)."""
    return sorted(_BUILDERS)


def create(name: str, *, num_classes: int, in_channels: int = 3, mean: Stats = None, std: Stats = None,
           **kwargs: Any) -> ImageClassifier:
    """Builds a randomly initialised classifier by name.

    Args:
        name: one of :func:`available` (``"resnet8"``, ``"resnet18_small"``, ``"preact_resnet18"``,
            ``"wrn16_4"``, ``"wrn28_10"`` for 28-32 px inputs; ``"resnet18"``, ``"resnet50"``,
            ``"wide_resnet50_2"`` ImageNet-style with torchvision's state-dict keys), or
            ``"torchvision:<name>"`` for any torchvision classification model (needs torchvision).
        num_classes: outputs of the head (>= 1).
        in_channels: input channels (>= 1; 3 for torchvision models).
        mean, std: per-channel input normalisation inside the model (one value or one per channel);
            ``None`` for both feeds ``[0, 1]`` pixels unchanged.
        **kwargs: architecture options: ``zero_init_residual`` (ResNets), ``dropout`` (PreAct / WRN);
            for torchvision models, anything ``torchvision.models.get_model`` accepts.

    Returns:
        An :class:`ImageClassifier` (``model(x)`` -> logits, ``model(x, return_features=True)`` ->
        ``(embedding, logits)``), in training mode, on the CPU, float32.

    Raises:
        ValueError: unknown name (the message lists :func:`available`), bad ``num_classes`` /
            ``in_channels`` / ``mean`` / ``std``, or an option the architecture does not take.
        ImportError: a ``"torchvision:"`` name when torchvision cannot be imported.
    """
    if not isinstance(name, str):
        raise ValueError(f"name must be a string, got {type(name).__name__}; available: {available()}")
    num_classes = check_positive_int(num_classes, "num_classes")
    in_channels = check_positive_int(in_channels, "in_channels")
    if name.startswith(TORCHVISION_PREFIX):
        model = create_torchvision(name[len(TORCHVISION_PREFIX):], num_classes=num_classes, in_channels=in_channels,
                                   mean=mean, std=std, **kwargs)
        return model
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
    return model
