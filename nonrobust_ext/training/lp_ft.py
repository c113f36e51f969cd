"""LP-FT (Kumar et al., ICLR 2022): fine-tune in two phases, a linear probe first (only the new head
trains, on the frozen pretrained features), then every layer from there. Starting the full phase with
a head that already fits the features keeps the large early gradients of a random head from distorting
the pretrained features, the ones whose robustness (or non-robustness) the study follows.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..data import TensorData
from .finetune import FinetuneConfig, prepare_finetune
from .loop import TrainConfig, TrainResult, train
from .objectives import Objective, Standard

#: The phases' folders under ``out_dir``: each has its own checkpoints, so each resumes on its own.
PHASES = ("probe", "finetune")


def linear_probe_then_finetune(
    model: torch.nn.Module,
    objective: Objective,
    data: TensorData | Sequence[torch.Tensor],
    *,
    probe: TrainConfig,
    finetune: TrainConfig,
    setup: FinetuneConfig | None = None,
    probe_objective: Objective | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    resume: bool = True,
    **train_options: Any,
) -> tuple[TrainResult, TrainResult]:
    """LP-FT: a linear probe, then full fine-tuning from the probed head.

    1. The head is replaced (``setup.num_classes``) and trained alone for ``probe`` with
       ``probe_objective`` (default: cross-entropy, as in the paper), every other layer frozen (their
       BatchNorm statistics too);
    2. every parameter is unfrozen, ``setup`` applied (frozen stages, learning rates, frozen BatchNorm
       statistics; its ``num_classes`` is not applied again: the probed head stays), and the model
       trained for ``finetune`` with ``objective``.

    Args:
        model: a model with a linear head ``fc`` (:mod:`nonrobust_ext.models`), trained in place.
        objective: the fine-tuning phase's objective (``Standard()``, ``PGDAdversarial(...)``, ``DM(...)``...).
        data: the training set.
        probe, finetune: the two phases' optimisation settings.
        setup: the fine-tuning set-up (default: full fine-tuning, the head kept).
        probe_objective: the probe's objective (default ``Standard()``).
        out_dir: with it, each phase checkpoints under ``out_dir/probe`` and ``out_dir/finetune`` and
            resumes there (a finished probe is not retrained).
        resume: as in :func:`~nonrobust_ext.training.train`.
        **train_options: passed to both phases' :func:`~nonrobust_ext.training.train` (``val_data``,
            ``val_attack``, ``device``, ``progress``...).

    Returns:
        ``(probe result, fine-tuning result)``.

    Raises:
        TypeError, ValueError: as :func:`~nonrobust_ext.training.prepare_finetune` and
            :func:`~nonrobust_ext.training.train` raise them (the message names the argument).
    """
    setup = FinetuneConfig() if setup is None else setup
    if not isinstance(setup, FinetuneConfig):
        raise TypeError(f"setup must be a FinetuneConfig, got {type(setup).__name__}")
    if setup.mode == "linear":
        raise ValueError("setup.mode='linear' would leave nothing to the fine-tuning phase: LP-FT's probe is its "
                         "first phase already; use 'full' or 'freeze'")
    probe_objective = Standard() if probe_objective is None else probe_objective
    folders = [None, None] if out_dir is None else [Path(out_dir) / phase for phase in PHASES]
    for key in ("param_groups", "config"):
        if key in train_options:
            raise TypeError(f"linear_probe_then_finetune sets {key} itself (pass probe / finetune / setup)")
    describe = train_options.pop("description", "LP-FT")

    groups = prepare_finetune(model, FinetuneConfig(mode="linear", num_classes=setup.num_classes))
    first = train(model, probe_objective, data, config=probe, out_dir=folders[0], resume=resume,
                  param_groups=groups, description=f"{describe}: probe", **train_options)
    model.requires_grad_(True)
    groups = prepare_finetune(model, dataclasses.replace(setup, num_classes=None))
    second = train(model, objective, data, config=finetune, out_dir=folders[1], resume=resume,
                   param_groups=groups, description=f"{describe}: fine-tune", **train_options)
    return first, second


__all__ = ["PHASES", "linear_probe_then_finetune"]
