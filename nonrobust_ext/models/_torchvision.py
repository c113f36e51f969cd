"""``models.create("torchvision:<name>")``: any torchvision classification model behind the
:class:`ImageClassifier` interface (normalisation inside, ``fc`` head, ``return_features``).

torchvision is optional: it is imported only here, only when such a name is asked for.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .._validate import check_int
from ._base import ImageClassifier, Stats

BUILTIN_EQUIVALENTS = ("resnet18", "resnet50", "wide_resnet50_2")


def import_torchvision_models() -> Any:
    """``torchvision.models``, or an ``ImportError`` that says why and what to use instead."""
    try:
        import torchvision  # noqa: F401
        from torchvision import models as tv_models
    except Exception as error:  # not only ImportError: a torchvision built for another torch raises RuntimeError
        raise ImportError(
            f"torchvision could not be imported ({type(error).__name__}: {error}); 'torchvision:<name>' models need "
            f"it. The built-in {', '.join(BUILTIN_EQUIVALENTS)} have torchvision's exact state-dict keys and "
            "load torchvision checkpoints with models.load_weights, without torchvision."
        ) from error
    return tv_models


def _last_linear(net: nn.Module) -> tuple[str, nn.Linear | None]:
    """The classification head: the last ``nn.Linear`` in registration order (``fc``, ``classifier.6``,
    ``heads.head``, ... — for torchvision classifiers it is always the output layer)."""
    found: tuple[str, nn.Linear | None] = ("", None)
    for name, m in net.named_modules():
        if isinstance(m, nn.Linear):
            found = (name, m)
    return found


def _replace(net: nn.Module, dotted: str, new: nn.Module) -> None:
    parent_name, _, child = dotted.rpartition(".")
    parent = net.get_submodule(parent_name) if parent_name else net
    setattr(parent, child, new)


class TorchvisionClassifier(ImageClassifier):
    """A torchvision classifier with its head moved to ``fc`` and input normalisation in front.

    The torchvision model's top-level children are registered on this module under their own names, so
    backbone keys are torchvision's; a head stored elsewhere (e.g. ``classifier.6``) becomes ``fc``,
    and :func:`load_weights` maps the torchvision name to ``fc`` (``state_dict_aliases``).
    """

    def __init__(self, net: nn.Module, *, name: str, num_classes: int, mean: Stats = None, std: Stats = None) -> None:
        super().__init__(in_channels=3, mean=mean, std=std)
        head_name, head = _last_linear(net)
        if head is None:
            raise ValueError(f"torchvision model {name!r} has no nn.Linear head to use as the classifier")
        if head.out_features != num_classes:
            raise ValueError(
                f"torchvision model {name!r} was built with {head.out_features} classes, not {num_classes}"
            )
        _replace(net, head_name, nn.Identity())
        # The torchvision module itself is not registered (its children are, below): keys stay torchvision's
        # and are not duplicated under a prefix. Its forward runs on those shared children.
        object.__setattr__(self, "_net", net)
        for child_name, child in net.named_children():
            if child_name == head_name:
                continue
            if child_name in ("normalize", "fc"):
                raise ValueError(f"torchvision model {name!r} has a submodule named {child_name!r}, which clashes")
            self.add_module(child_name, child)
        self.feature_dim = head.in_features
        self.fc = head
        self.arch = f"torchvision:{name}"
        self.state_dict_aliases = {} if head_name == "fc" else {head_name: "fc"}

    def train(self, mode: bool = True) -> TorchvisionClassifier:
        super().train(mode)
        self._net.train(mode)  # some torchvision forwards read the top-level flag (aux heads)
        return self

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        out = self._net(self.prepare_input(x))
        if not isinstance(out, torch.Tensor):  # e.g. InceptionOutputs(logits, aux_logits) in training mode
            out = out.logits if hasattr(out, "logits") else out[0]
        return torch.flatten(out, 1)

    def stages(self) -> list[nn.Module]:
        names = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
        if all(hasattr(self, n) for n in names):
            stem = nn.Sequential(self.conv1, self.bn1, self.relu, self.maxpool)
            return [stem, self.layer1, self.layer2, self.layer3, self.layer4]
        raise NotImplementedError(
            f"stages() is defined for torchvision's ResNet family only, not {self.arch!r}; "
            "freeze submodules by name instead"
        )


def create_torchvision(name: str, *, num_classes: int, in_channels: int = 3, mean: Stats = None,
                       std: Stats = None, **kwargs: Any) -> TorchvisionClassifier:
    """``torchvision.models.get_model(name, num_classes=..., **kwargs)`` wrapped as an ImageClassifier."""
    num_classes = check_int(num_classes, "num_classes", 1)
    if check_int(in_channels, "in_channels", 1) != 3:
        raise ValueError(
            f"in_channels must be 3 for torchvision models, got {in_channels}; the built-in models take any "
            "number of channels"
        )
    tv = import_torchvision_models()
    if hasattr(tv, "list_models"):
        known = set(tv.list_models(module=tv))
        if name not in known:
            raise ValueError(f"unknown torchvision classification model {name!r}; available: {sorted(known)}")
    if hasattr(tv, "get_model"):
        net = tv.get_model(name, num_classes=num_classes, **kwargs)
    else:  # torchvision < 0.14
        builder = getattr(tv, name, None)
        if name.startswith("_") or not callable(builder):
            raise ValueError(f"unknown torchvision model {name!r}")
        net = builder(num_classes=num_classes, **kwargs)
    return TorchvisionClassifier(net, name=name, num_classes=num_classes, mean=mean, std=std)
