"""Auto-PGD (Croce & Hein, ICML 2020): PGD with momentum and a step size that adapts per sample.

The step and the projections run on the fused attack-step ops with one step size per sample, which is
what APGD's per-sample step-size schedule needs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from .. import ops
from .._params import Param, opmath_dtype
from ._common import (
    AttackResult,
    Bounds,
    LogitsSelector,
    LossFn,
    Precision,
    check_batch,
    check_int,
    check_real,
    eval_mode,
    input_gradient,
    keep_better,
    margin,
    parse_bounds,
    per_sample,
    resolve_amp,
    resolve_generator,
    resolve_loss,
    scale_param,
    succeeded,
)

_STEP_OPS: dict[str, Callable[..., None]] = {"linf": ops.linf_step_, "l2": ops.l2_step_}

# The checkpoint schedule as fractions of the step budget (see checkpoint_schedule): the first interval
# is 22% of it, each later one 3% shorter than the one before, but never shorter than 6%.
_FIRST_INTERVAL = 0.22
_INTERVAL_DECREASE = 0.03
_MIN_INTERVAL = 0.06
# Weight of the new projected step in each update; the remaining 1 - 0.75 repeats the previous step.
_STEP_WEIGHT = 0.75


def apgd(
    model: Callable[[torch.Tensor], object],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: Param,
    steps: int = 100,
    norm: str = "linf",
    loss: str | LossFn = "ce",
    restarts: int = 1,
    rho: float = 0.75,
    targeted: bool = False,
    bounds: Bounds = (0.0, 1.0),
    scale: Param = 1.0,
    logits: LogitsSelector = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    x_init: torch.Tensor | None = None,
    amp: torch.dtype | None = None,
    return_result: bool = False,
) -> torch.Tensor | AttackResult:
    r"""Auto-PGD: momentum PGD whose per-sample step size halves when progress stalls.

    From a random start :math:`x^{(0)}` in the ball, with :math:`\eta^{(0)} = 2\,\epsilon`, the first
    step is a plain projected step and every later one adds momentum (:math:`\alpha = 0.75`)::

        z       = P( x_k + eta * step(grad f(x_k)) )        step = sign (linf) or g / ||g|| (l2)
        x_{k+1} = P( x_k + alpha * (z - x_k) + (1 - alpha) * (x_k - x_{k-1}) )

    where ``P`` projects onto the eps-ball around ``x`` and the input bounds. At checkpoints
    :math:`w_j` (22% of ``steps``, then intervals 3% shorter each time, at least 6%) the step size of a
    sample is halved, and its iterate and gradient reset to its highest-loss point so far, when

    1. the loss rose in fewer than ``rho * (w_j - w_{j-1})`` of the steps since the last checkpoint, or
    2. its step size was not halved at the last checkpoint and its best loss has not risen since.

    Per sample the attack returns the last iterate that fooled the model if one did (what an evaluation
    needs: the reference implementation's ``x_best_adv``), else the highest-loss point. Restarts after
    the first attack only the samples no restart has fooled yet, from fresh random starts, and keep the
    per-sample better result (success first, then the higher loss).

    Deliberate differences from the authors' code (and torchattacks' port of it), all small:

    - The random start is uniform in the ball (:func:`nonrobust_ext.ops.random_init_`); their L-inf start
      puts one coordinate on the boundary and their L2 start is on the sphere. Pass ``x_init`` to choose.
    - Condition 1 follows the paper: a strict ``<``, losses compared at full precision, and the first
      step of the first interval compared with the loss at the start (their code uses ``<=``, keeps
      that loss history in float32 and compares the first step with an unfilled zero).
    - Samples whose attack fails return their highest-loss point rather than ``x``; clean-misclassified
      samples are attacked like the others rather than returned as they are.

    The model runs in eval mode and every submodule's mode is restored afterwards; parameter ``.grad``
    is never written; ``x`` is never modified.

    Args:
        model: a callable (usually an ``nn.Module``) mapping a batch to logits, or to a tuple/dict
            holding them (see ``logits``).
        x: clean batch ``[B, C, *]`` inside ``bounds``.
        y: ``[B]`` true labels (untargeted) or target labels (``targeted=True``).
        eps: radius, a number or one per sample (``[B]``), in threat-model units (see ``scale``).
        steps: gradient steps per restart (>= 1); the checkpoint schedule scales with it.
        norm: ``"linf"`` or ``"l2"``.
        loss: ``"ce"`` (cross-entropy), ``"dlr"`` (difference of logits ratio,
            :math:`-(z_y - \max_{i \ne y} z_i) / (z_{\pi_1} - z_{\pi_3} + 10^{-12})` with :math:`\pi`
            sorting the logits in decreasing order, see :func:`dlr_loss`; needs at least 3 classes and
            is untargeted only), ``"cw"`` (margin) or ``callable(logits, y) -> [B]`` to maximise.
        restarts: number of runs (>= 1), see above.
        rho: condition-1 threshold in ``(0, 1]``, the fraction of steps that must raise the loss.
        targeted: move towards class ``y`` (maximises minus the cross-entropy to ``y``).
        bounds: ``(lo, hi)`` of the input space, numbers or per-channel tensors ``[C]``; ``None`` for
            unbounded inputs.
        scale: per-channel size of one threat-model unit in input units (``1 / std`` for inputs
            normalised outside the model); number or ``[C]``.
        logits: where the logits are in the model's output: an index, a key or a callable.
        seed, generator: source of the random starts (default: torch's global generator).
        x_init: optional start of the first restart, same shape as ``x``; it is projected onto the ball
            and the bounds.
        amp: ``torch.bfloat16`` or ``torch.float16`` runs the model under ``torch.autocast`` (see
            :func:`nonrobust_ext.pgd`); the iterates, losses and step sizes stay in ``x``'s dtype.
        return_result: return an :class:`AttackResult` instead of the adversarial batch.

    Returns:
        The adversarial batch (same shape, dtype, memory format as ``x``), or with
        ``return_result=True`` an :class:`AttackResult`: ``success`` (the returned point fools the
        model), ``loss`` (the attack loss there), ``steps`` (gradient steps run for the kept restart)
        and ``restart`` (its index).

    Shape:
        x: ``[B, C, *]``; y: ``[B]``; eps: scalar or ``[B]``; bounds, scale: scalar or ``[C]``.
    """
    check_batch(x, y)
    steps = check_int(steps, "steps", 1)
    restarts = check_int(restarts, "restarts", 1)
    precision = resolve_amp(amp, x)
    if norm not in _STEP_OPS:
        raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
    rho = check_real(rho, "rho", low=0.0, high=1.0, low_inclusive=False)
    eps_t = per_sample(eps, x, "eps")
    scale_t = scale_param(scale, x)
    lo, hi = parse_bounds(bounds, x)
    loss_fn = _resolve_apgd_loss(loss, targeted)
    generator = resolve_generator(seed, generator)
    if x_init is not None and (not isinstance(x_init, torch.Tensor) or x_init.shape != x.shape):
        raise ValueError(f"x_init must be a tensor shaped like x {tuple(x.shape)}")
    x = x.detach()
    y = y.long()
    channel_params = {"lo": lo, "hi": hi, "scale": scale_t}

    with eval_mode(model):
        best: AttackResult | None = None
        for r in range(restarts):
            if best is None:
                todo, x_sub, y_sub, eps_sub = None, x, y, eps_t
            else:
                # Later restarts only pay for the samples no restart has fooled yet.
                todo = (~best.success).nonzero()[:, 0]
                if todo.numel() == 0:
                    break
                x_sub, y_sub, eps_sub = x[todo], y[todo], eps_t[todo]
            start = x_sub.clone()
            if r == 0 and x_init is not None:
                start.copy_(x_init.detach())
                # The start can be what is returned (if no step beats its loss): project it onto the
                # ball and the bounds with a zero-length step.
                _STEP_OPS[norm](start, torch.zeros_like(start), x_sub, eps=eps_sub, alpha=0.0, **channel_params)
            else:
                ops.random_init_(start, x_sub, eps=eps_sub, norm=norm, generator=generator, **channel_params)
            current = _single_run(
                model, x_sub, y_sub, start, eps_sub, channel_params, steps=steps, norm=norm, rho=rho,
                loss_fn=loss_fn, targeted=targeted, logits=logits, check=best is None, precision=precision,
            )
            current.restart.fill_(r)
            if best is None:
                best = current
            else:
                merged = keep_better(_select(best, todo), current)
                for field in dataclasses.fields(AttackResult):
                    getattr(best, field.name)[todo] = getattr(merged, field.name)
    assert best is not None
    return best if return_result else best.x_adv


def _single_run(
    model: Callable[[torch.Tensor], object],
    x: torch.Tensor,
    y: torch.Tensor,
    start: torch.Tensor,
    eps: torch.Tensor,
    channel_params: dict[str, torch.Tensor],
    *,
    steps: int,
    norm: str,
    rho: float,
    loss_fn: LossFn,
    targeted: bool,
    logits: LogitsSelector,
    check: bool,
    precision: Precision,
) -> AttackResult:
    """One APGD run from ``start``; every sample runs all ``steps``."""
    step_op = _STEP_OPS[norm]
    params = {"eps": eps, **channel_params}
    zero_grad = torch.zeros_like(x)
    compute_dtype = opmath_dtype(x.dtype)

    x_cur = start
    grad, z, loss = input_gradient(model, x_cur, y, loss_fn, logits, check=check, precision=precision)
    x_best, grad_best, loss_best = x_cur.clone(), grad.clone(), loss.clone()
    fooled = succeeded(z, y, targeted)
    x_fooled, loss_fooled = x_cur.clone(), loss.clone()  # meaningful where `fooled`
    x_prev = x_cur

    step_size = 2 * eps
    checkpoints = set(checkpoint_schedule(steps))
    last_checkpoint = 0
    increases = torch.zeros_like(loss, dtype=torch.long)
    loss_last = loss
    loss_best_at_checkpoint = loss_best.clone()
    # "Not halved at the last checkpoint" must be false at the first checkpoint: there was none.
    halved_at_checkpoint = torch.ones_like(fooled)

    for i in range(steps):
        # z = P(x_k + eta * step): one fused op with the per-sample step size.
        z_point = x_cur.clone()
        step_op(z_point, grad, x, alpha=step_size, **params)
        # The first step has no previous step to repeat, so it is the plain projected step. Its
        # (zero) momentum term is still computed: the arithmetic then matches the reference
        # implementation's bit for bit.
        step_weight = _STEP_WEIGHT if i > 0 else 1.0
        x_k, x_km1 = x_cur.to(compute_dtype), x_prev.to(compute_dtype)
        combined = x_k + (z_point.to(compute_dtype) - x_k) * step_weight + (x_k - x_km1) * (1 - step_weight)
        x_next = torch.empty_like(x_cur).copy_(combined)
        # The momentum combination can leave the ball and the bounds: project (a zero-step op call).
        step_op(x_next, zero_grad, x, alpha=0.0, **params)
        x_prev, x_cur = x_cur, x_next

        grad, z, loss = input_gradient(model, x_cur, y, loss_fn, logits, precision=precision)
        now_fooled = succeeded(z, y, targeted)
        _copy_where_(x_fooled, x_cur, now_fooled)
        loss_fooled = torch.where(now_fooled, loss, loss_fooled)
        fooled = fooled | now_fooled

        increases += loss > loss_last
        loss_last = loss
        improved = loss > loss_best
        _copy_where_(x_best, x_cur, improved)
        _copy_where_(grad_best, grad, improved)
        loss_best = torch.where(improved, loss, loss_best)

        if i + 1 in checkpoints:
            too_few_increases = increases < rho * (i + 1 - last_checkpoint)
            stalled = ~halved_at_checkpoint & (loss_best <= loss_best_at_checkpoint)
            halve = too_few_increases | stalled
            step_size = torch.where(halve, step_size / 2, step_size)
            # Restart the halved samples from their best point, with the gradient there. Their next
            # momentum term is (best point - start of this step), as in the reference implementation.
            _copy_where_(x_cur, x_best, halve)
            _copy_where_(grad, grad_best, halve)
            halved_at_checkpoint = halve
            loss_best_at_checkpoint = loss_best.clone()
            increases.zero_()
            last_checkpoint = i + 1

    _copy_where_(x_best, x_fooled, fooled)
    return AttackResult(
        x_adv=x_best,
        success=fooled,
        loss=torch.where(fooled, loss_fooled, loss_best),
        steps=torch.full_like(increases, steps),
        restart=torch.zeros_like(increases),
    )


def checkpoint_schedule(steps: int) -> list[int]:
    r"""The iteration counts :math:`w_1 < w_2 < ... <= steps` after which APGD checks its progress.

    The paper's schedule, :math:`p_0 = 0`, :math:`p_1 = 0.22`,
    :math:`p_{j+1} = p_j + \max(p_j - p_{j-1} - 0.03, 0.06)`, :math:`w_j = p_j \cdot steps`, in whole
    iterations: the three fractions are rounded down once (to at least one iteration), as the authors'
    code does, which gives the published checkpoints exactly for 100 steps.
    """
    interval = max(int(_FIRST_INTERVAL * steps), 1)
    decrease = max(int(_INTERVAL_DECREASE * steps), 1)
    shortest = max(int(_MIN_INTERVAL * steps), 1)
    schedule = []
    checkpoint = interval
    while checkpoint <= steps:
        schedule.append(checkpoint)
        interval = max(interval - decrease, shortest)
        checkpoint += interval
    return schedule


def _copy_where_(dst: torch.Tensor, src: torch.Tensor, mask: torch.Tensor) -> None:
    """``dst[mask] = src[mask]`` over the batch dimension, in place and without a host sync."""
    dst.copy_(torch.where(mask.reshape((-1,) + (1,) * (dst.dim() - 1)), src, dst))


def _select(result: AttackResult, index: torch.Tensor) -> AttackResult:
    """The samples ``index`` of a result."""
    return AttackResult(**{field.name: getattr(result, field.name)[index] for field in dataclasses.fields(result)})


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r"""Difference of logits ratio (Croce & Hein, 2020), per sample, to maximise (untargeted).

    :math:`\mathrm{DLR}(z, y) = -\dfrac{z_y - \max_{i \ne y} z_i}{z_{\pi_1} - z_{\pi_3} + 10^{-12}}`
    with :math:`\pi` ordering the logits decreasingly. Dividing by a logit range makes it invariant to
    shifting and rescaling the logits, so a model cannot mask its gradients by inflating them.

    Shape:
        logits: ``[B, K]`` with ``K >= 3``; y: ``[B]``; returns ``[B]`` in float32, or float64 for
        float64 logits.
    """
    if logits.shape[1] < 3:
        raise ValueError(f"loss='dlr' needs at least 3 classes (it divides by z_pi1 - z_pi3), "
                         f"the model has {logits.shape[1]}; use loss='ce'")
    z = logits.to(opmath_dtype(logits.dtype))
    top = z.topk(3, dim=1).values
    return -margin(z, y) / (top[:, 0] - top[:, 2] + 1e-12)


def _resolve_apgd_loss(loss: str | LossFn, targeted: bool) -> LossFn:
    """The per-sample loss to maximise: ``"dlr"`` here, the others from :func:`resolve_loss`."""
    if loss == "dlr":
        if targeted:
            raise ValueError("loss='dlr' is untargeted: the targeted DLR needs the true labels as well as "
                             "the targets; use loss='ce' with targeted=True")
        return dlr_loss
    if not callable(loss) and loss not in ("ce", "cw"):
        raise ValueError(f"loss must be 'ce', 'dlr', 'cw' or a callable (logits, y) -> per-sample loss, got {loss!r}")
    return resolve_loss(loss, targeted)


__all__ = ["apgd", "checkpoint_schedule", "dlr_loss"]
