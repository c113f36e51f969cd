"""Targeted Auto-PGD with the targeted DLR loss (Croce & Hein, ICML 2020): AutoAttack's second stage.

For each image the attack pulls the logits towards each of the ``target_classes`` classes the model
ranks highest after the true one, and the image counts as broken as soon as it is misclassified (as any
class: the target only chooses the direction). The per-target runs are the APGD runs of :mod:`.apgd`;
what this module adds is how they are batched: the target classes of an image are rows of one batch,
and with early stop all rows of an image stop when one of them fools the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, overload

import torch

from .._params import Param, opmath_dtype
from .._validate import check_bool, check_int, check_optional_int, check_real
from ._common import (
    AttackResult,
    FiniteWatch,
    LogitsSelector,
    Model,
    Precision,
    check_batch,
    check_model,
    check_selector,
    check_start,
    clean_logits,
    eval_mode,
    keep_better,
    ranked_targets,
    resolve_amp,
    resolve_generator,
    target_rows,
)
from .apgd import _single_run
from .threat import Bounds, ThreatModel


@dataclass
class TargetedAPGDResult(AttackResult):
    """What targeted APGD found, per sample: an :class:`AttackResult` (``loss`` is the targeted DLR
    loss at ``x_adv`` for the kept target, ``restart`` the restart it came from) with

    Attributes:
        target: ``[B]`` the target class of the run whose point was kept.
    """

    target: torch.Tensor


def targeted_dlr_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    r"""Targeted difference of logits ratio, per sample, to maximise.

    :math:`-\dfrac{z_y - z_t}{z_{\pi_1} - (z_{\pi_3} + z_{\pi_4})/2 + 10^{-12}}` with :math:`\pi` ordering
    the logits decreasingly (the authors' definition). With exactly 3 classes there is no
    :math:`z_{\pi_4}`: the denominator is then :math:`z_{\pi_1} - z_{\pi_3}`, the untargeted DLR's.

    Shape:
        logits: ``[B, K]`` with ``K >= 3``; labels: ``[B, 2]``, the true class then the target class;
        returns ``[B]`` in float32 (float64 for float64 logits).
    """
    z = logits.to(opmath_dtype(logits.dtype))
    top = z.topk(min(4, z.shape[1]), dim=1).values
    low = top[:, 2] if z.shape[1] == 3 else (top[:, 2] + top[:, 3]) / 2
    true = z.gather(1, labels[:, :1]).squeeze(1)
    target = z.gather(1, labels[:, 1:]).squeeze(1)
    return -(true - target) / (top[:, 0] - low + 1e-12)


@overload
def apgd_targeted(
    model: Model, x: torch.Tensor, y: torch.Tensor, *, eps: Param, steps: int = ..., norm: str = ...,
    target_classes: int = ..., target_batch: int | None = ..., restarts: int = ..., rho: float = ...,
    bounds: Bounds = ..., scale: Param = ..., early_stop: bool = ..., logits: LogitsSelector = ...,
    seed: int | None = ..., generator: torch.Generator | None = ..., x_init: torch.Tensor | None = ...,
    amp: torch.dtype | None = ..., return_result: Literal[False] = ...,
) -> torch.Tensor: ...
@overload
def apgd_targeted(
    model: Model, x: torch.Tensor, y: torch.Tensor, *, eps: Param, steps: int = ..., norm: str = ...,
    target_classes: int = ..., target_batch: int | None = ..., restarts: int = ..., rho: float = ...,
    bounds: Bounds = ..., scale: Param = ..., early_stop: bool = ..., logits: LogitsSelector = ...,
    seed: int | None = ..., generator: torch.Generator | None = ..., x_init: torch.Tensor | None = ...,
    amp: torch.dtype | None = ..., return_result: Literal[True],
) -> TargetedAPGDResult: ...
def apgd_targeted(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: Param,
    steps: int = 100,
    norm: str = "linf",
    target_classes: int = 9,
    target_batch: int | None = None,
    restarts: int = 1,
    rho: float = 0.75,
    bounds: Bounds = (0.0, 1.0),
    scale: Param = 1.0,
    early_stop: bool = True,
    logits: LogitsSelector = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    x_init: torch.Tensor | None = None,
    amp: torch.dtype | None = None,
    return_result: bool = False,
) -> torch.Tensor | TargetedAPGDResult:
    r"""Targeted APGD-DLR (APGD-T): an APGD run towards each of the model's most likely wrong classes.

    For every sample the targets are the ``target_classes`` classes with the highest clean logits other
    than ``y`` (AutoAttack's "top-9": with ``y`` the top class, ranks 2 to 10), capped at
    ``num_classes - 1``. Each target gets an APGD run (:func:`nonrobust_ext.apgd`: same step-size
    schedule, momentum and checkpoints) that maximises :func:`targeted_dlr_loss`. A sample is *fooled*
    when the model misclassifies it as any class, not only the target (AutoAttack's criterion).

    How the work is organised, and why it is cheaper than one run per target class in turn:

    - the targets of a sample are rows of one batch (``target_batch`` targets at a time; ``None``: all
      of them at once), so a step is one forward/backward over ``samples x targets`` rows instead of
      one small batch per target;
    - with ``early_stop`` (default, see below) every row of a sample stops at the first iterate of any
      of its rows that fools the model, and later steps run the model on the other rows only;
    - later chunks of targets and later restarts run only on the samples not fooled yet.

    Which samples are fooled does not depend on ``early_stop``: it only chooses which fooling point is
    returned (the first one instead of the last one of its run), so it is on by default here, unlike
    :func:`~nonrobust_ext.apgd` where the returned point's confidence is a measured quantity.

    The model runs in eval mode and every submodule's mode is restored afterwards; parameter ``.grad``
    is never written; ``x`` is never modified.

    Args:
        model: a callable mapping a batch to logits (or to a tuple/dict holding them, see ``logits``).
        x: clean batch ``[B, C, *]`` inside ``bounds``.
        y: ``[B]`` true labels.
        eps: radius, a number or one per sample (``[B]``), in threat-model units (see ``scale``).
        steps: gradient steps per target and restart (>= 1).
        norm: ``"linf"`` or ``"l2"``.
        target_classes: how many target classes per sample (>= 1; AutoAttack's standard value 9).
        target_batch: target classes per batch of rows (>= 1), None for all at once. Smaller values
            spend less on samples that fall to the first targets, larger ones less per step on the rest.
        restarts: runs per target (>= 1) from fresh random starts, for the samples not fooled yet.
        rho: APGD's condition-1 threshold in ``(0, 1]``.
        bounds, scale: as in :func:`~nonrobust_ext.apgd`.
        early_stop: stop a sample's rows at its first fooling iterate (see above).
        logits: where the logits are in the model's output: an index, a key or a callable.
        seed, generator: source of the random starts (default: torch's global generator).
        x_init: optional start of every target's first restart, same shape as ``x``.
        amp: ``torch.bfloat16`` or ``torch.float16`` runs the model under ``torch.autocast``.
        return_result: return a :class:`TargetedAPGDResult` instead of the adversarial batch.

    Returns:
        The adversarial batch (same shape, dtype, memory format as ``x``), or a
        :class:`TargetedAPGDResult`: ``success`` (the returned point is misclassified), ``loss``,
        ``steps`` and ``restart`` of the kept run, and its ``target``.

    Raises:
        ValueError: besides the checks every attack makes, a model with fewer than 3 classes (the DLR
            loss divides by the gap between the first and the third logit).

    Shape:
        x: ``[B, C, *]``; y: ``[B]``; eps: scalar or ``[B]``; bounds, scale: scalar or ``[C]``.
    """
    check_model(model)
    check_batch(x, y)
    steps = check_int(steps, "steps", 1)
    target_classes = check_int(target_classes, "target_classes", 1)
    target_batch = check_optional_int(target_batch, "target_batch", 1)
    restarts = check_int(restarts, "restarts", 1)
    threat = ThreatModel.resolve(x, eps=eps, norm=norm, bounds=bounds, scale=scale)
    rho = check_real(rho, "rho", low=0.0, high=1.0, low_inclusive=False)
    early_stop = check_bool(early_stop, "early_stop")
    return_result = check_bool(return_result, "return_result")
    logits = check_selector(logits)
    precision = resolve_amp(amp, x)
    generator = resolve_generator(seed, generator)
    x_init = check_start(x_init, x)
    x = x.detach()
    y = y.long()
    watch = FiniteWatch(x.device)

    with eval_mode(model):
        clean = clean_logits(model, x, y, logits, precision, min_classes=3,
                             who="targeted APGD's DLR loss (it divides by z_pi1 - z_pi3)")
        num_classes = clean.shape[1]
        targets = ranked_targets(clean, y, min(target_classes, num_classes - 1))
        per_pass = targets.shape[1] if target_batch is None else min(target_batch, targets.shape[1])

        # Every sample is attacked, the misclassified ones too (as apgd does): a later chunk or restart
        # skips only the samples an earlier one fooled.
        best = TargetedAPGDResult(
            x_adv=x.clone(), success=torch.zeros_like(y, dtype=torch.bool),
            loss=torch.full_like(y, -torch.inf, dtype=opmath_dtype(x.dtype)),
            steps=torch.zeros_like(y), restart=torch.zeros_like(y), target=torch.full_like(y, -1),
        )
        for r in range(restarts):
            for first in range(0, targets.shape[1], per_pass):
                todo = (~best.success).nonzero()[:, 0]
                if todo.numel() == 0:
                    break
                chunk = targets[todo, first:first + per_pass]
                current = _run_targets(
                    model, x[todo], y[todo], chunk, threat.rows(todo),
                    None if x_init is None or r > 0 else x_init[todo],
                    steps=steps, rho=rho, logits=logits, precision=precision, early_stop=early_stop, watch=watch,
                    generator=generator,
                )
                watch.check()
                current.restart.fill_(r)
                best.put_rows_(todo, keep_better(best.rows(todo), current))
    return best if return_result else best.x_adv


def _run_targets(
    model: Model, x: torch.Tensor, y: torch.Tensor, targets: torch.Tensor, threat: ThreatModel,
    x_init: torch.Tensor | None, *, steps: int, rho: float, logits: LogitsSelector, precision: Precision,
    early_stop: bool, watch: FiniteWatch, generator: torch.Generator | None,
) -> TargetedAPGDResult:
    """One APGD run per (sample, target) pair, all pairs as rows of one batch (:func:`target_rows`),
    reduced to the best row per sample."""
    batch, per_sample = targets.shape
    rows, t_rows = target_rows(targets)
    x_rows, y_rows = x[rows], y[rows]
    threat_rows = threat.rows(rows)
    start = x_rows.clone()
    if x_init is not None:
        start.copy_(x_init[rows])
        threat_rows.project_(start, x_rows)
    else:
        threat_rows.random_init_(start, x_rows, generator=generator)
    result = _single_run(
        model, x_rows, y_rows, start, threat_rows, steps=steps, rho=rho, loss_fn=targeted_dlr_loss,
        targeted=False, logits=logits, check=False, precision=precision, early_stop=early_stop, watch=watch,
        loss_y=torch.stack([y_rows, t_rows], dim=1), groups=rows if early_stop else None,
    )
    every = TargetedAPGDResult(x_adv=result.x_adv, success=result.success, loss=result.loss, steps=result.steps,
                               restart=result.restart, target=t_rows)
    # The more likely target wins a tie: rows are compared in target order.
    best = every.rows(torch.arange(batch, device=x.device))
    for t in range(1, per_sample):
        best = keep_better(best, every.rows(torch.arange(t * batch, (t + 1) * batch, device=x.device)))
    return best


__all__ = ["TargetedAPGDResult", "apgd_targeted", "targeted_dlr_loss"]
