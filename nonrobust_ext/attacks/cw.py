"""Carlini-Wagner L2 (Carlini and Wagner, IEEE S&P 2017): the smallest L2 perturbation that makes the
model's logit margin cross ``kappa``, found with Adam in a tanh change of variables that keeps every
iterate inside the input bounds.

This attack does not use the fused step ops: its update is an Adam step on an unconstrained variable,
not a PGD-style signed/normalised step projected onto a ball.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, overload

import torch
import torch.nn.functional as F

from .._params import Param
from .._validate import check_bool, check_int, check_real
from ._common import (
    AttackResult,
    FiniteWatch,
    LogitsSelector,
    Model,
    check_batch,
    check_finite_logits,
    check_logits,
    check_model,
    check_selector,
    eval_mode,
    margin,
    resolve_amp,
    scaled_input_gradient,
    select_logits,
    succeeded,
)
from .threat import Bounds, ThreatModel, per_sample


@dataclass
class CWResult(AttackResult):
    """What Carlini-Wagner found, per sample: an :class:`AttackResult` (``x_adv`` is ``x`` itself
    for samples on which no iterate succeeded; ``success``: some iterate succeeded with margin
    ``kappa`` and ``x_adv`` is the closest such iterate; ``loss`` the margin at ``x_adv``, see
    :class:`AttackResult`; ``steps`` the Adam steps taken before the kept iterate, 0 for ``x``;
    ``restart`` the search step whose iterate was kept, the last one for unsuccessful samples) with

    Attributes:
        l2: ``[B]`` L2 norm of ``(x_adv - x) / scale`` (0 where ``success`` is False), in the compute
            dtype (float64 for float64 inputs, float32 otherwise).
        c: ``[B]`` the constant of the search step whose iterate was kept; for unsuccessful samples
            the last constant tried.
    """

    l2: torch.Tensor
    c: torch.Tensor


@overload
def cw_l2(
    model: Model, x: torch.Tensor, y: torch.Tensor, *, c: Param = ..., kappa: Param = ..., steps: int = ...,
    lr: float = ..., targeted: bool = ..., binary_search_steps: int = ..., bounds: Bounds = ..., scale: Param = ...,
    logits: LogitsSelector = ..., amp: torch.dtype | None = ..., return_result: Literal[False] = ...,
) -> torch.Tensor: ...
@overload
def cw_l2(
    model: Model, x: torch.Tensor, y: torch.Tensor, *, c: Param = ..., kappa: Param = ..., steps: int = ...,
    lr: float = ..., targeted: bool = ..., binary_search_steps: int = ..., bounds: Bounds = ..., scale: Param = ...,
    logits: LogitsSelector = ..., amp: torch.dtype | None = ..., return_result: Literal[True],
) -> CWResult: ...
def cw_l2(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    c: Param = 1.0,
    kappa: Param = 0.0,
    steps: int = 100,
    lr: float = 0.01,
    targeted: bool = False,
    binary_search_steps: int = 1,
    bounds: Bounds = (0.0, 1.0),
    scale: Param = 1.0,
    logits: LogitsSelector = None,
    amp: torch.dtype | None = None,
    return_result: bool = False,
) -> torch.Tensor | CWResult:
    r"""Carlini-Wagner L2 attack: Adam on ``w`` in ``x' = lo + (hi - lo) * (tanh(w) + 1) / 2``,
    starting from ``x' = x``, minimising per sample::

        ||(x' - x) / scale||_2^2 + c * max(z_y(x') - max_{j != y} z_j(x'), -kappa)       (untargeted)
        ||(x' - x) / scale||_2^2 + c * max(max_{j != t} z_j(x') - z_t(x'), -kappa)       (targeted, t = y)

    Every iterate is checked as it is evaluated: one whose margin is past ``kappa`` (untargeted:
    ``max_{j != y} z_j - z_y > kappa``; targeted: ``z_t - max_{j != t} z_j > kappa``; with
    ``kappa = 0`` simply misclassified / classified as ``t``) and closer to ``x`` than the one kept
    so far replaces it. Samples on which no iterate succeeds are returned as ``x``, and so are
    samples already adversarial at ``x`` (the first iterate). All ``steps`` are taken (no early
    abort: in a batch it would tie samples' fates to each other's loss).

    With ``binary_search_steps > 1`` the attack is repeated from ``x`` with a per-sample ``c``:
    halved towards the largest constant known to fail after a success, multiplied by 10 after a
    failure while no success is known (the paper's search); the closest success over all runs is
    kept.

    Matches ``torchattacks.CW`` step for step (same parameterisation, loss and Adam) except that
    torchattacks stops the whole batch early when the summed loss rises, requires only
    misclassification (not margin ``kappa``) for an iterate to be kept, returns the tanh round trip
    of ``x`` (equal to it up to rounding) for samples adversarial from the start, and computes its
    margin as if every logit were positive.

    Input values exactly at a bound map to ``w = +-inf``, where tanh is flat: they stay at that
    bound, as in torchattacks and practically in the paper's code (whose ``0.999999`` shrink gives
    them a finite ``w`` but one that Adam's ``lr``-sized steps take hundreds of steps to move).

    The model runs in eval mode and every submodule's mode is restored afterwards; parameter
    ``.grad`` is never written (the gradient is taken with respect to ``w`` only); ``x`` is never
    modified.

    Args:
        model: a callable (usually an ``nn.Module``) mapping a batch to logits, or to a tuple/dict
            holding them (see ``logits``).
        x: clean batch ``[B, C, *]`` inside ``bounds``.
        y: ``[B]`` true labels (untargeted) or target labels (``targeted=True``).
        c: weight of the margin term, > 0, a number or one per sample (``[B]``); the initial
            constant of the binary search.
        kappa: required confidence margin, >= 0, a number or one per sample (``[B]``).
        steps: Adam steps per search step (>= 1).
        lr: Adam learning rate (> 0).
        targeted: move towards class ``y`` instead of away from it.
        binary_search_steps: runs of ``steps`` Adam steps, each with its own ``c`` (>= 1; 1 = no search).
        bounds: ``(lo, hi)`` of the input space, finite numbers or per-channel tensors ``[C]`` with
            ``lo < hi``. For inputs normalised outside the model use
            ``bounds=((0 - mean) / std, (1 - mean) / std)``.
        scale: per-channel size of one threat-model unit in input units (``1 / std`` for inputs
            normalised outside the model, so that the distance minimised, and ``l2`` reported, is in
            pixel units); number or ``[C]``.
        logits: where the logits are in the model's output: an index, a key or a callable.
        amp: ``torch.bfloat16`` or ``torch.float16`` runs the model under ``torch.autocast`` (see
            :func:`nonrobust_ext.pgd`); ``w``, the distance and Adam stay in float32 (or float64).
        return_result: return a :class:`CWResult` (per-sample success, margin, L2 norm, constant)
            instead of the adversarial batch.

    Returns:
        The adversarial batch (same shape, dtype, memory format as ``x``), or a :class:`CWResult`
        with ``return_result=True``.

    Shape:
        x: ``[B, C, *]``; y: ``[B]``; c, kappa: scalar or ``[B]``; bounds, scale: scalar or ``[C]``.
    """
    check_model(model)
    check_batch(x, y)
    c_t = per_sample(c, x, "c", positive=True)
    kappa_t = per_sample(kappa, x, "kappa")
    steps = check_int(steps, "steps", 1)
    binary_search_steps = check_int(binary_search_steps, "binary_search_steps", 1)
    lr = check_real(lr, "lr", low=0.0, low_inclusive=False)
    targeted = check_bool(targeted, "targeted")
    logits = check_selector(logits)
    return_result = check_bool(return_result, "return_result")
    precision = resolve_amp(amp, x)
    if bounds is None:
        raise ValueError("bounds must be finite for cw_l2 (its change of variables maps onto them), got None")
    threat = ThreatModel.input_space(x, bounds=bounds, scale=scale)
    lo, hi = threat.lo, threat.hi
    if not bool(torch.isfinite(lo).all() and torch.isfinite(hi).all() and (lo < hi).all()):
        raise ValueError(
            f"bounds must be finite with lo < hi per channel for cw_l2, got lo={lo.tolist()} hi={hi.tolist()}"
        )
    x = x.detach()
    y = y.long()
    lo, hi = threat.channel_view(lo, x), threat.channel_view(hi, x)
    unit = threat.channel_view(threat.scale, x)
    half_range = (hi - lo) * 0.5
    x_compute = x.to(lo.dtype)
    unit_range = ((x_compute - lo) / (hi - lo) * 2 - 1).clamp(-1, 1)
    # atanh in its log form: the same start as torchattacks bit for bit (torch.atanh can differ in
    # the last place), so the two Adam trajectories coincide exactly; +-1 still maps to +-inf.
    w_start = 0.5 * torch.log((1 + unit_range) / (1 - unit_range))
    # Untargeted iterates must beat y by kappa, targeted ones must win by kappa: shifting y's logit
    # by kappa turns both into a plain argmax test (and leaves it bit-exact for kappa = 0).
    kappa_shift = (kappa_t if not targeted else -kappa_t)[:, None]

    best_x = x.clone()
    best_distance = torch.full_like(c_t, math.inf)
    best_c = c_t.clone()
    best_step = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    best_search = torch.full_like(best_step, binary_search_steps - 1)
    lower = torch.zeros_like(c_t)
    upper = torch.full_like(c_t, math.inf)
    logits_checked = False
    watch = FiniteWatch(x.device)
    with eval_mode(model):
        for search in range(binary_search_steps):
            w = w_start.clone().requires_grad_(True)
            optimizer = torch.optim.Adam([w], lr=lr)
            found = torch.zeros_like(best_distance, dtype=torch.bool)
            for step in range(steps):
                with torch.enable_grad():
                    x_adv = lo + half_range * (torch.tanh(w) + 1)
                    with precision.autocast():
                        z = select_logits(model(x_adv.to(x.dtype)), logits)
                    if not logits_checked:
                        check_logits(z, y)
                        logits_checked = True
                    watch.note(z)
                    distance = ((x_adv - x_compute) / unit).square().flatten(1).sum(dim=1)
                    y_margin = margin(z.to(lo.dtype), y)
                    hinge = torch.clamp(-y_margin if targeted else y_margin, min=-kappa_t)
                    w.grad = scaled_input_gradient(distance + c_t * hinge, w, precision)
                optimizer.step()
                with torch.no_grad():
                    shifted = z.detach().to(lo.dtype) + kappa_shift * F.one_hot(y, z.shape[1])
                    fooled = succeeded(shifted, y, targeted)
                    if step == 0:
                        # The start is x up to the rounding of the tanh round trip: a sample that
                        # is already adversarial keeps x itself, at distance 0.
                        distance = torch.zeros_like(distance)
                        x_adv = x
                    else:
                        x_adv = torch.minimum(torch.maximum(x_adv, lo), hi).to(x.dtype)
                    closer = fooled & (distance < best_distance)
                    best_distance = torch.where(closer, distance, best_distance)
                    best_c = torch.where(closer, c_t, best_c)
                    best_step = torch.where(closer, step, best_step)
                    best_search = torch.where(closer, search, best_search)
                    mask = closer.reshape((-1,) + (1,) * (x.dim() - 1))
                    best_x.copy_(torch.where(mask, x_adv, best_x))
                    found |= fooled
            # A NaN logit makes `found` meaningless, and with it the next constant: stop here.
            watch.check()
            upper = torch.where(found, torch.minimum(upper, c_t), upper)
            lower = torch.where(found, lower, torch.maximum(lower, c_t))
            c_t = torch.where(torch.isfinite(upper), (lower + upper) / 2, c_t * 10)
        if not return_result:
            return best_x
        with torch.no_grad(), precision.autocast():
            z = check_finite_logits(select_logits(model(best_x), logits)).to(lo.dtype)
    success = torch.isfinite(best_distance)
    best_c = torch.where(success, best_c, lower)
    return CWResult(
        x_adv=best_x, success=success, loss=margin(z, y) if targeted else -margin(z, y), steps=best_step,
        restart=best_search, l2=threat.distance(best_x, x, "l2"), c=best_c,
    )
