"""DeepFool (Moosavi-Dezfooli, Fawzi and Frossard, CVPR 2016): a minimal L2 perturbation by linearising
the classifier around the current point and stepping to the nearest linearised decision boundary.

This attack does not use the fused step ops: its step is a per-sample projection onto a hyperplane
chosen among several classes, not a PGD-style signed/normalised step inside a ball, and its cost is
dominated by the one backward pass per candidate class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, overload

import torch

from .._params import Param
from .._validate import check_bool, check_int
from ._common import (
    AttackResult,
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
    select_logits,
    succeeded,
)
from .threat import Bounds, ThreatModel, per_sample


@dataclass
class DeepFoolResult(AttackResult):
    """What DeepFool found, per sample: an :class:`AttackResult` (``loss`` is the margin
    ``max_{k != y} z_k - z_y`` at ``x_adv``, positive where it fools the model; ``steps`` the
    linearised steps taken, 0 for samples the model already misclassifies; ``restart`` 0) with

    Attributes:
        l2: ``[B]`` L2 norm of ``(x_adv - x) / scale`` (threat-model units; with ``scale=1`` the
            input's), in the compute dtype: float64 for float64 inputs, float32 otherwise.
    """

    l2: torch.Tensor


@overload
def deepfool(
    model: Model, x: torch.Tensor, y: torch.Tensor, *, steps: int = ..., overshoot: Param = ...,
    num_classes: int | None = ..., bounds: Bounds = ..., scale: Param = ..., logits: LogitsSelector = ...,
    amp: torch.dtype | None = ..., return_result: Literal[False] = ...,
) -> torch.Tensor: ...
@overload
def deepfool(
    model: Model, x: torch.Tensor, y: torch.Tensor, *, steps: int = ..., overshoot: Param = ...,
    num_classes: int | None = ..., bounds: Bounds = ..., scale: Param = ..., logits: LogitsSelector = ...,
    amp: torch.dtype | None = ..., return_result: Literal[True],
) -> DeepFoolResult: ...
def deepfool(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    steps: int = 50,
    overshoot: Param = 0.02,
    num_classes: int | None = None,
    bounds: Bounds = (0.0, 1.0),
    scale: Param = 1.0,
    logits: LogitsSelector = None,
    amp: torch.dtype | None = None,
    return_result: bool = False,
) -> torch.Tensor | DeepFoolResult:
    r"""DeepFool, L2 version: repeatedly step to the nearest boundary of the linearised classifier.

    At the current point ``x_i`` of a sample still classified as ``y``, with ``f_k = z_k(x_i) - z_y(x_i)``
    and ``w_k = grad_u f_k`` (the gradient in threat-model units ``u = x / scale``, that is
    ``scale * grad_x f_k``) for every candidate class ``k != y``::

        l   = argmin_k |f_k| / ||w_k||_2
        r_i = |f_l| / ||w_l||_2^2 * w_l                    (a step in u; scale * r_i in x)
        x_{i+1} = clip_bounds( x_i + (1 + overshoot) * scale * r_i )

    until the model misclassifies the sample or ``steps`` steps are taken. Without clipping this is
    the paper's ``x + (1 + overshoot) * sum_i r_i``; applying the overshoot and the clip at every step
    is torchattacks' convention, which this function reproduces. Samples already misclassified are
    returned unchanged. Where the bounds cut steps short, the sample approaches the boundary
    geometrically and may stop within rounding of it: its success is then fragile (re-evaluating
    in another precision or batch can flip it).

    The batch is processed together: each step costs one forward pass and one input-gradient backward
    pass per candidate class over the samples still classified correctly (finished samples drop
    out). The model runs in eval mode and every submodule's mode is restored afterwards; parameter
    ``.grad`` is never written; ``x`` is never modified.

    Args:
        model: a callable (usually an ``nn.Module``) mapping a batch to logits, or to a tuple/dict
            holding them (see ``logits``).
        x: clean batch ``[B, C, *]`` inside ``bounds``.
        y: ``[B]`` true labels.
        steps: the most linearised steps per sample (>= 1).
        overshoot: the step multiplier minus one, a number or one per sample (``[B]``), >= 0; it
            pushes the sample past the boundary, which the linearisation alone only reaches.
        num_classes: how many classes to consider: ``None`` for all of them, or ``k >= 2`` for the
            ``k`` classes with the largest clean logits (the true class and ``k - 1`` candidates, the
            paper's choice for many-class models: ``k - 1`` backward passes per step instead of
            ``num_classes - 1``).
        bounds: ``(lo, hi)`` of the input space, numbers or per-channel tensors ``[C]``; ``None`` for
            unbounded inputs.
        scale: per-channel size of one threat-model unit in input units (``1 / std`` for inputs
            normalised outside the model, so that the perturbation is minimal, and ``l2`` reported,
            in pixel units); number or ``[C]``.
        logits: where the logits are in the model's output: an index, a key or a callable.
        amp: ``torch.bfloat16`` or ``torch.float16`` runs the model under ``torch.autocast`` (see
            :func:`nonrobust_ext.pgd`). The linearisation then uses half-precision logits, so the
            boundary estimate, and with it the minimal norm, is coarser than in float32.
        return_result: return a :class:`DeepFoolResult` (per-sample success, margin, steps, L2 norm)
            instead of the adversarial batch.

    Returns:
        The adversarial batch (same shape, dtype, memory format as ``x``), or a
        :class:`DeepFoolResult` with ``return_result=True``.

    Shape:
        x: ``[B, C, *]``; y: ``[B]``; overshoot: scalar or ``[B]``; bounds, scale: scalar or ``[C]``.
    """
    check_model(model)
    check_batch(x, y)
    steps = check_int(steps, "steps", 1)
    threat = ThreatModel.input_space(x, bounds=bounds, scale=scale)
    overshoot_t = per_sample(overshoot, x, "overshoot")
    if num_classes is not None:
        num_classes = check_int(num_classes, "num_classes", 2)
    logits = check_selector(logits)
    return_result = check_bool(return_result, "return_result")
    precision = resolve_amp(amp, x)
    x = x.detach()
    y = y.long()
    compute_dtype = threat.scale.dtype
    # The scale per element of a flattened sample, for the Jacobian rows [rows, classes, C * H * W].
    unit = threat.scale.reshape((-1,) + (1,) * (x.dim() - 2)).expand(x.shape[1:]).reshape(-1)

    x_adv = x.clone()
    active = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    taken = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    candidates: torch.Tensor | None = None
    with eval_mode(model):
        for _ in range(steps):
            rows = active.nonzero().squeeze(1)
            if rows.numel() == 0:
                break
            x_req = x_adv[rows].requires_grad_(True)
            with torch.enable_grad():
                with precision.autocast():
                    z = select_logits(model(x_req), logits)
                z = z.to(compute_dtype)
                if candidates is None:
                    check_logits(z, y)
                    candidates = _candidate_classes(z.detach(), y, num_classes)
                check_finite_logits(z.detach())
                still_correct = ~succeeded(z.detach(), y[rows], targeted=False)
                active[rows] = still_correct
                if not bool(still_correct.any()):
                    break
                # Rows already fooled stay in the graph (their forward is done) but get no step.
                cand = candidates[rows]
                f = z.gather(1, cand) - z.gather(1, y[rows, None])
                w = _rows_of_jacobian(f, x_req, precision.loss_scale)
            f = f.detach().to(compute_dtype)
            # Gradients in threat-model units (u = x / scale): d f / d u = scale * d f / d x.
            w = w.to(compute_dtype) * unit
            w_norm = w.norm(dim=2)
            # A class whose margin has no gradient cannot be reached by a linear step.
            distance = torch.where(w_norm > 0, f.abs() / w_norm, torch.full_like(w_norm, torch.inf))
            nearest = distance.argmin(dim=1)
            reachable = still_correct & torch.isfinite(distance.gather(1, nearest[:, None]).squeeze(1))
            f_l = f.gather(1, nearest[:, None])
            w_l = w[torch.arange(len(rows), device=x.device), nearest]
            norm_l = w_norm.gather(1, nearest[:, None])
            # Unreachable rows divide by zero here; they are not written back.
            step = (1 + overshoot_t[rows, None]) * f_l.abs() / norm_l**2 * w_l * unit
            moved = threat.clip(x_req.detach().to(compute_dtype) + step.reshape(x_req.shape))
            # A step that overflows (a near-flat margin on unbounded inputs) is no step: the sample
            # stops where it is rather than at an infinite distance.
            reachable &= torch.isfinite(moved).flatten(1).all(dim=1)
            moved = moved.to(x.dtype)
            x_adv[rows[reachable]] = moved[reachable]
            taken[rows[reachable]] += 1
            active[rows] = reachable
        if not return_result:
            return x_adv
        with torch.no_grad(), precision.autocast():
            z = check_finite_logits(select_logits(model(x_adv), logits)).to(compute_dtype)
    return DeepFoolResult(
        x_adv=x_adv, success=succeeded(z, y, targeted=False), loss=-margin(z, y), steps=taken,
        restart=torch.zeros_like(taken), l2=threat.distance(x_adv, x, "l2"),
    )


def _candidate_classes(z: torch.Tensor, y: torch.Tensor, num_classes: int | None) -> torch.Tensor:
    """``[B, k - 1]`` classes each sample may be pushed to: every class but ``y``, or the top-``k``
    classes by clean logit but ``y`` (samples whose ``y`` is outside the top-``k`` are misclassified
    and never stepped, so their row only needs the right width)."""
    total = z.shape[1]
    if num_classes is None:
        num_classes = total
    elif num_classes > total:
        raise ValueError(f"num_classes must be <= the model's {total} classes, got {num_classes}")
    if num_classes == total:
        # Index order, as torchattacks, so ties between equally near boundaries resolve alike.
        order = torch.arange(total, device=z.device).expand(z.shape[0], total)
    else:
        order = z.argsort(dim=1, descending=True)[:, :num_classes]
    keep = order != y[:, None]
    # Each row holds y at most once; dropping it (or the last entry when y is absent) leaves k - 1.
    drop_last = keep.all(dim=1)
    keep[drop_last, -1] = False
    return order[keep].reshape(z.shape[0], num_classes - 1)


def _rows_of_jacobian(f: torch.Tensor, x: torch.Tensor, loss_scale: float = 1.0) -> torch.Tensor:
    """``[B, K, D]``: the gradient of each column of ``f`` ``[B, K]`` with respect to ``x`` ``[B, *]``.

    One backward pass per column over the whole batch: samples do not interact in eval mode, so the
    gradient of a column's sum holds each sample's own row of the Jacobian. Each backward pass runs
    on the column times ``loss_scale`` (float16 autocast) and is divided by it again.
    """
    columns = f.shape[1]
    rows = [
        torch.autograd.grad(f[:, k].sum() * loss_scale, x, retain_graph=k + 1 < columns)[0].flatten(1)
        for k in range(columns)
    ]
    jacobian = torch.stack(rows, dim=1)
    return jacobian.div_(loss_scale) if loss_scale != 1.0 else jacobian
