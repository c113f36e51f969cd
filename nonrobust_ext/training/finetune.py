"""Fine-tuning set-ups: which parameters train, at which learning rate, and a new head.

The study varies exactly these factors: full fine-tuning, freezing the first k stages, a linear probe
(only the head trains), and separate learning rates for the head and the backbone. "Standard" training
is the same architecture from scratch, which needs nothing from here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from .._validate import check_bool, check_choice, check_int, check_optional_int, check_optional_real

_MODES = ("full", "freeze", "linear")
_FROZEN_ATTR = "_nonrobust_ext_frozen"
# Modules kept in eval mode while training, their parameters still trained (frozen BatchNorm statistics).
_EVAL_ATTR = "_nonrobust_ext_eval"


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    """How to fine-tune.

    Attributes:
        mode: ``"full"`` (every parameter trains), ``"freeze"`` (the first ``freeze_stages`` stages of
            ``model.stages()`` are frozen) or ``"linear"`` (only the head ``model.fc`` trains).
        freeze_stages: stages frozen with ``mode="freeze"`` (>= 1).
        num_classes: replace the head with a new, randomly initialised one for this many classes
            (``None`` keeps the head).
        head_lr, backbone_lr: learning rates of the head and of the rest (``None``: the optimiser's
            base learning rate).
        freeze_bn: keep every BatchNorm layer's running statistics at the pretrained ones (the layers
            stay in eval mode while training; their affine weights still train): the observation of
            TWINS (Liu et al., CVPR 2023) that adversarial fine-tuning keeps more of the pretrained
            robustness with the pretrained statistics.

    Raises:
        TypeError: a setting of the wrong type (``freeze_stages=1.5``, ``head_lr="0.1"``).
        ValueError: an unknown ``mode``; ``freeze_stages`` without ``mode="freeze"`` or < 1 with it;
            a learning rate <= 0, NaN or infinite; ``num_classes`` < 1.
    """

    mode: str = "full"
    freeze_stages: int = 0
    num_classes: int | None = None
    head_lr: float | None = None
    backbone_lr: float | None = None
    freeze_bn: bool = False

    def __post_init__(self) -> None:
        check_bool(self.freeze_bn, "freeze_bn")
        check_choice(self.mode, "mode", _MODES)
        check_int(self.freeze_stages, "freeze_stages", 0)
        if self.mode == "freeze" and self.freeze_stages < 1:
            raise ValueError(f"freeze_stages must be an int >= 1 with mode='freeze', got {self.freeze_stages!r}")
        if self.mode != "freeze" and self.freeze_stages:
            raise ValueError(f"freeze_stages={self.freeze_stages} needs mode='freeze', got mode={self.mode!r}")
        for name in ("head_lr", "backbone_lr"):
            check_optional_real(getattr(self, name), name, low=0.0, low_inclusive=False)
        check_optional_int(self.num_classes, "num_classes", 1)


def prepare_finetune(model: torch.nn.Module, config: FinetuneConfig) -> list[dict[str, Any]]:
    """Set ``model`` up for fine-tuning (new head, frozen parameters) and return the optimiser's
    parameter groups (``{"params": [...], "lr": ...}``; ``lr`` only where the config sets one).

    Frozen parameters get ``requires_grad=False`` and frozen stages' BatchNorm layers stay in eval
    mode during training (their running statistics are part of what was pretrained):
    :func:`train_mode` re-applies that after every ``model.train()``.

    Raises:
        TypeError: ``model`` without a linear head ``fc`` (or ``reset_head`` when ``num_classes`` is set),
            ``config`` not a :class:`FinetuneConfig`.
        ValueError: more stages to freeze than the model has.
    """
    if not isinstance(config, FinetuneConfig):
        raise TypeError(f"config must be a FinetuneConfig, got {type(config).__name__}")
    if not hasattr(model, "fc") or not isinstance(model.fc, torch.nn.Linear):
        raise TypeError(
            f"fine-tuning needs a model with a linear head `fc` (nonrobust_ext.models); got {type(model).__name__}"
        )
    if config.num_classes is not None:
        if not hasattr(model, "reset_head"):
            raise TypeError(f"{type(model).__name__} has no reset_head(num_classes) to replace its head")
        model.reset_head(config.num_classes)
    frozen: list[torch.nn.Module] = []
    if config.mode == "freeze":
        stages = list(model.stages())
        if config.freeze_stages > len(stages):
            raise ValueError(f"freeze_stages={config.freeze_stages} but the model has {len(stages)} stages")
        frozen = stages[: config.freeze_stages]
    elif config.mode == "linear":
        frozen = [m for name, m in model.named_children() if name != "fc"]
    for module in frozen:
        module.requires_grad_(False)
    setattr(model, _FROZEN_ATTR, frozen)
    statistics = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    setattr(model, _EVAL_ATTR, statistics if config.freeze_bn else [])

    head = [p for p in model.fc.parameters() if p.requires_grad]
    head_ids = {id(p) for p in head}
    backbone = [p for p in model.parameters() if p.requires_grad and id(p) not in head_ids]
    groups: list[dict[str, Any]] = []
    for params, lr in ((backbone, config.backbone_lr), (head, config.head_lr)):
        if params:
            groups.append({"params": params, **({"lr": lr} if lr is not None else {})})
    return groups


def train_mode(model: torch.nn.Module) -> None:
    """``model.train()``, keeping the modules frozen by :func:`prepare_finetune` (and with ``freeze_bn``
    its BatchNorm layers) in eval mode."""
    model.train()
    for module in (*getattr(model, _FROZEN_ATTR, []), *getattr(model, _EVAL_ATTR, [])):
        module.eval()


__all__ = ["FinetuneConfig", "prepare_finetune", "train_mode"]
