"""Auto-PGD (Croce & Hein, ICML 2020): PGD with momentum and a step size that adapts per sample.

The step and the projections run on the fused attack-step ops with one step size per sample, which is
what APGD's per-sample step-size schedule needs.
"""

from __future__ import annotations

from typing import Literal, overload

import torch

from .._params import Param, opmath_dtype
from .._validate import check_bool, check_int, check_real
from ._common import (
    AttackResult,
    FiniteWatch,
    LogitsSelector,
    LossFn,
    Model,
    Precision,
    check_batch,
    check_model,
    check_selector,
    check_start,
    eval_mode,
    input_gradient,
    keep_better,
    margin,
    resolve_amp,
    resolve_generator,
    resolve_loss,
    succeeded,
)
from .threat import Bounds, ThreatModel

# The checkpoint schedule as fractions of the step budget (see checkpoint_schedule): the first interval
# is 22% of it, each later one 3% shorter than the one before, but never shorter than 6%.
_FIRST_INTERVAL = 0.22
_INTERVAL_DECREASE = 0.03
_MIN_INTERVAL = 0.06
# Weight of the new projected step in each update; the remaining 1 - 0.75 repeats the previous step.
_STEP_WEIGHT = 0.75


@overload
def apgd(
    model: Model, x: torch.Tensor, y: torch.Tensor, *, eps: Param, steps: int = ..., norm: str = ...,
    loss: str | LossFn = ..., restarts: int = ..., rho: float = ..., targeted: bool = ..., bounds: Bounds = ...,
    scale: Param = ..., early_stop: bool = ..., logits: LogitsSelector = ..., seed: int | None = ...,
    generator: torch.Generator | None = ..., x_init: torch.Tensor | None = ..., amp: torch.dtype | None = ...,
    return_result: Literal[False] = ...,
) -> torch.Tensor: ...
@overload
def apgd(
    model: Model, x: torch.Tensor, y: torch.Tensor, *, eps: Param, steps: int = ..., norm: str = ...,
    loss: str | LossFn = ..., restarts: int = ..., rho: float = ..., targeted: bool = ..., bounds: Bounds = ...,
    scale: Param = ..., early_stop: bool = ..., logits: LogitsSelector = ..., seed: int | None = ...,
    generator: torch.Generator | None = ..., x_init: torch.Tensor | None = ..., amp: torch.dtype | None = ...,
    return_result: Literal[True],
) -> AttackResult: ...
def apgd(
    model: Model,
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
    early_stop: bool = False,
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
        early_stop: stop attacking a sample at the first iterate that fools the model and return
            that point (without it, the *last* fooling iterate is returned); later steps run the
            model only on the samples not yet fooled. Which samples are fooled is the same either
            way, for less work.
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
        model), ``loss`` (the attack loss there), ``steps`` (gradient steps run for the kept restart;
        with early stop, until the sample was fooled) and ``restart`` (its index).

    Shape:
        x: ``[B, C, *]``; y: ``[B]``; eps: scalar or ``[B]``; bounds, scale: scalar or ``[C]``.
    """
    check_model(model)
    check_batch(x, y)
    steps = check_int(steps, "steps", 1)
    restarts = check_int(restarts, "restarts", 1)
    threat = ThreatModel.resolve(x, eps=eps, norm=norm, bounds=bounds, scale=scale)
    rho = check_real(rho, "rho", low=0.0, high=1.0, low_inclusive=False)
    loss_fn = _resolve_apgd_loss(loss, targeted)
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
        best: AttackResult | None = None
        for r in range(restarts):
            if best is None:
                todo, x_sub, y_sub, threat_sub = None, x, y, threat
            else:
                # Later restarts only pay for the samples no restart has fooled yet.
                todo = (~best.success).nonzero()[:, 0]
                if todo.numel() == 0:
                    break
                x_sub, y_sub, threat_sub = x[todo], y[todo], threat.rows(todo)
            start = x_sub.clone()
            if r == 0 and x_init is not None:
                start.copy_(x_init.detach())
                # The start can be what is returned (if no step beats its loss): project it onto the
                # ball and the bounds with a zero-length step.
                threat_sub.project_(start, x_sub)
            else:
                threat_sub.random_init_(start, x_sub, generator=generator)
            current = _single_run(
                model, x_sub, y_sub, start, threat_sub, steps=steps, rho=rho, loss_fn=loss_fn, targeted=targeted,
                logits=logits, check=best is None, precision=precision, early_stop=early_stop, watch=watch,
            )
            # Before any verdict is kept: a NaN logit on the way voids it.
            watch.check()
            current.restart.fill_(r)
            if best is None:
                best = current
            else:
                assert todo is not None
                best.put_rows_(todo, keep_better(best.rows(todo), current))
    assert best is not None
    return best if return_result else best.x_adv


def _single_run(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    start: torch.Tensor,
    threat: ThreatModel,
    *,
    steps: int,
    rho: float,
    loss_fn: LossFn,
    targeted: bool,
    logits: LogitsSelector,
    check: bool,
    precision: Precision,
    early_stop: bool,
    watch: FiniteWatch,
    loss_y: torch.Tensor | None = None,
    groups: torch.Tensor | None = None,
) -> AttackResult:
    """One APGD run from ``start``. Without early stop every sample runs all ``steps``; with it a
    sample stops at its first fooling iterate, and each step runs the model on the others only (the
    per-sample state of the stopped samples is left as it was: they never step again).

    ``y`` decides success; ``loss_y`` (default ``y``) is what ``loss_fn`` receives, one row per sample
    (the targeted DLR loss needs the true label and the target). ``groups`` (``[B]`` long) ties rows
    that attack the same image (one per target class): with early stop, every row of a group stops as
    soon as one of them fools the model."""
    if loss_y is None:
        loss_y = y
    num_groups = 0 if groups is None else int(groups.max()) + 1
    zero_grad = torch.zeros_like(x)
    compute_dtype = opmath_dtype(x.dtype)
    eps = threat.eps
    assert eps is not None

    x_cur = start
    grad, z, loss = input_gradient(model, x_cur, loss_y, loss_fn, logits, check=check, precision=precision,
                                   watch=watch)
    x_best, grad_best, loss_best = x_cur.clone(), grad.clone(), loss.clone()
    fooled = succeeded(z, y, targeted)
    x_fooled, loss_fooled = x_cur.clone(), loss.clone()  # meaningful where `fooled`
    x_prev = x_cur
    taken = torch.zeros_like(loss, dtype=torch.long)

    step_size = 2 * eps
    checkpoints = set(checkpoint_schedule(steps))
    last_checkpoint = 0
    increases = torch.zeros_like(loss, dtype=torch.long)
    loss_last = loss
    loss_best_at_checkpoint = loss_best.clone()
    # "Not halved at the last checkpoint" must be false at the first checkpoint: there was none.
    halved_at_checkpoint = torch.ones_like(fooled)

    for i in range(steps):
        if early_stop:
            done = fooled if groups is None else _any_in_group(fooled, groups, num_groups)
            rows = (~done).nonzero().squeeze(1)
            if rows.numel() == 0:
                break
            # While every sample is still attacked, the full batch is used as it is: gathering all rows
            # would copy every tensor twice per step for the same values.
            view = _Rows(None if rows.numel() == done.numel() else rows)
        else:
            view = _Rows(None)
        sub = threat if view.index is None else threat.rows(view.index)
        x_c, x_p, x_0, g = view(x_cur), view(x_prev), view(x), view(grad)
        # z = P(x_k + eta * step): one fused op with the per-sample step size.
        z_point = x_c.clone()
        sub.step_(z_point, g, x_0, alpha=view(step_size))
        # The first step has no previous step to repeat, so it is the plain projected step. Its
        # (zero) momentum term is still computed: the arithmetic then matches the reference
        # implementation's bit for bit.
        step_weight = _STEP_WEIGHT if i > 0 else 1.0
        x_k, x_km1 = x_c.to(compute_dtype), x_p.to(compute_dtype)
        combined = x_k + (z_point.to(compute_dtype) - x_k) * step_weight + (x_k - x_km1) * (1 - step_weight)
        x_next = torch.empty_like(x_c).copy_(combined)
        # The momentum combination can leave the ball and the bounds: project (a zero-step op call).
        sub.step_(x_next, view(zero_grad), x_0, alpha=0.0)
        x_prev, x_cur = x_cur, view.merged(x_cur, x_next)

        g_new, z, l_new = input_gradient(model, x_next, view(loss_y), loss_fn, logits, precision=precision,
                                         watch=watch)
        grad, loss = view.merged(grad, g_new), view.merged(loss, l_new)
        now_fooled = view.merged(torch.zeros_like(fooled), succeeded(z, view(y), targeted))
        taken += view.merged(torch.zeros_like(taken), torch.ones_like(l_new, dtype=torch.long))
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
        steps=taken,
        restart=torch.zeros_like(increases),
    )


class _Rows:
    """The samples a step works on: all of them (``index`` None: tensors pass through untouched, so the
    full-batch arithmetic is exactly that of the reference implementation) or the rows ``index``."""

    def __init__(self, index: torch.Tensor | None) -> None:
        self.index = index

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        return t if self.index is None else t[self.index]

    def merged(self, full: torch.Tensor, part: torch.Tensor) -> torch.Tensor:
        """``full`` with its rows replaced by ``part`` (a new tensor; ``part`` itself without rows)."""
        if self.index is None:
            return part
        out = full.clone()
        out[self.index] = part
        return out


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


def _any_in_group(flags: torch.Tensor, groups: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Per row, whether any row of its group has ``flags`` set (``groups``: ``[B]`` indices < ``num_groups``)."""
    counts = torch.zeros(num_groups, dtype=torch.long, device=flags.device)
    return counts.index_add_(0, groups, flags.long())[groups] > 0


def _copy_where_(dst: torch.Tensor, src: torch.Tensor, mask: torch.Tensor) -> None:
    """``dst[mask] = src[mask]`` over the batch dimension, in place and without a host sync."""
    dst.copy_(torch.where(mask.reshape((-1,) + (1,) * (dst.dim() - 1)), src, dst))


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
        if check_bool(targeted, "targeted"):
            raise ValueError("loss='dlr' is untargeted: the targeted DLR needs the true labels as well as "
                             "the targets; use loss='ce' with targeted=True")
        return dlr_loss
    return resolve_loss(loss, targeted, extra=("dlr",))


__all__ = ["apgd", "checkpoint_schedule", "dlr_loss"]
