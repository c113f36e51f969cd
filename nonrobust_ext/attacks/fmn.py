"""Fast Minimum-Norm attack (Pintor, Roli, Brendel and Biggio, NeurIPS 2021): the smallest L-inf or L2
perturbation that fools the model, found by normalised gradient steps inside an eps-ball whose radius
adapts per sample, shrinking while the iterate is adversarial and growing while it is not.

The L2 step is exactly the fused L2 op (normalised-gradient step, projection onto the per-sample ball,
clip to the bounds). The L-inf step is not the fused L-inf op's: FMN steps along the L2-normalised
gradient in every norm (the paper's Algorithm 1), while the op steps along ``sign(grad)``, so the
L-inf step is taken here and the op only projects (a zero-length step with the per-sample radius).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal, overload

import torch

from .._params import Param
from .._validate import check_bool, check_int, check_optional_int, check_optional_real, check_real
from ._common import (
    AttackResult,
    FiniteWatch,
    LogitsSelector,
    LossFn,
    Model,
    check_batch,
    check_finite_logits,
    check_model,
    check_selector,
    clean_logits,
    eval_mode,
    input_gradient,
    margin,
    per_sample_loss,
    ranked_targets,
    resolve_amp,
    select_logits,
    succeeded,
    target_rows,
)
from .threat import Bounds, ThreatModel

# The paper's initial step sizes (Pintor et al. 2021, experimental setup). The step is the
# L2-normalised gradient times alpha, so it moves one coordinate by about alpha / sqrt(d): in L2,
# alpha = 1 is a step of norm 1, already large next to typical minimal L2 radii; in L-inf the step
# must reach the corners of the ball (where the L-inf optimum of a linear boundary lies) before the
# projection clips it, which needs alpha / sqrt(d) above the radius, hence the larger 10.
DEFAULT_ALPHA_INIT = {"linf": 10.0, "l2": 1.0}
# The final step size, as a fraction of the initial one, when alpha_final is not given (the paper's
# and the reference implementations' default).
_ALPHA_FINAL_FRACTION = 0.01


@dataclass
class FMNResult(AttackResult):
    """What FMN found, per sample: an :class:`AttackResult` (``x_adv`` is ``x`` itself where no
    iterate fooled the model; ``success``: some iterate fooled it and ``x_adv`` is the closest such
    iterate; ``loss`` the margin at ``x_adv``, see :class:`AttackResult`; ``steps`` the gradient steps
    taken before the kept iterate, 0 for ``x``; ``restart`` 0) with

    Attributes:
        radius: ``[B]`` norm of ``(x_adv - x) / scale`` in the attack's ``norm`` (threat-model units):
            0 for samples the model misclassifies at ``x`` (untargeted) or already classifies as the
            target, ``inf`` where no adversarial point was found; in the compute dtype (float64 for
            float64 inputs, float32 otherwise).
    """

    radius: torch.Tensor


@overload
def fmn(
    model: Model, x: torch.Tensor, y: torch.Tensor, *, norm: str = ..., steps: int = ...,
    alpha_init: float | None = ..., alpha_final: float | None = ..., gamma_init: float = ..., gamma_final: float = ...,
    targeted: bool = ..., target_classes: int | None = ..., bounds: Bounds = ..., scale: Param = ...,
    logits: LogitsSelector = ..., amp: torch.dtype | None = ..., return_result: Literal[False] = ...,
) -> torch.Tensor: ...
@overload
def fmn(
    model: Model, x: torch.Tensor, y: torch.Tensor, *, norm: str = ..., steps: int = ...,
    alpha_init: float | None = ..., alpha_final: float | None = ..., gamma_init: float = ..., gamma_final: float = ...,
    targeted: bool = ..., target_classes: int | None = ..., bounds: Bounds = ..., scale: Param = ...,
    logits: LogitsSelector = ..., amp: torch.dtype | None = ..., return_result: Literal[True],
) -> FMNResult: ...
def fmn(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    norm: str = "linf",
    steps: int = 100,
    alpha_init: float | None = None,
    alpha_final: float | None = None,
    gamma_init: float = 0.05,
    gamma_final: float = 0.001,
    targeted: bool = False,
    target_classes: int | None = None,
    bounds: Bounds = (0.0, 1.0),
    scale: Param = 1.0,
    logits: LogitsSelector = None,
    amp: torch.dtype | None = None,
    return_result: bool = False,
) -> torch.Tensor | FMNResult:
    r"""Fast Minimum-Norm attack, L-inf or L2: the closest adversarial point its iterates pass through.

    In threat-model units (``u = x / scale``), from :math:`\delta_0 = 0` with no adversarial point known,
    each step :math:`k = 0, \dots, K - 1` evaluates the logit difference
    :math:`L = z_y - \max_{j \ne y} z_j` (untargeted; :math:`\max_{j \ne t} z_j - z_t` targeted, so that
    :math:`L < 0` means fooled) and its gradient :math:`g` at :math:`x + \delta_k`, then::

        eps_k   = min(eps_{k-1} (1 - gamma_k), ||delta*||)     the iterate fools the model
                = eps_{k-1} (1 + gamma_k)                      it does not, an adversarial point is known
                = (||delta_k|| + |L| / ||g||_dual)(1 + gamma_k) it does not, none known yet
        eps_k   = min(eps_k, largest ||delta|| inside the bounds)
        delta_{k+1} = clip_bounds( P_{eps_k}( delta_k - alpha_k g / ||g||_2 ) )

    where ``||.||`` is the attack's norm, ``||.||_dual`` its dual (L1 for L-inf, L2 for L2; the third
    line is the distance to the linearised decision boundary), ``P`` the projection onto the ball and
    :math:`\delta^*` the smallest fooling perturbation seen so far. ``alpha`` and ``gamma`` follow a
    cosine annealing, :math:`a_k = a_{final} + (a_{init} - a_{final})(1 + \cos(\pi k / K)) / 2`.
    Every iterate is checked as it is evaluated, and after the last step the final iterate once more
    (one forward pass without a gradient; the reference implementations never evaluate it).

    The paper's algorithm without its optional extras (no random start, no initial attack with a
    boundary search: the result is deterministic), with one change: the paper sets the radius to the
    linearised estimate itself, which puts the ball's surface on the linearised boundary; where the
    margin is (locally) linear the iterate then lands exactly on the boundary, rounding decides whether
    it fools the model, and if not the same estimate repeats at every step (on linear models 3 of 64
    samples were never fooled in 100 steps). Growing the estimate by the ``(1 + gamma_k)`` of the
    second case crosses the boundary; the shrinking steps then bring the radius back to it.

    The loss follows the strongest other class at each step, so the attack converges to the boundary
    of that class, which need not be the nearest one (on random linear models FMN lands within 0.01%
    of the exact minimum where it is, and 1.1-1.5x above it on the few samples where it is not).
    ``target_classes=k`` removes that blind spot for k times the work: one targeted run towards each of
    the ``k`` classes the model ranks highest after ``y`` (the runs are rows of one batch), and per
    sample the smallest radius found by any of them. The smallest perturbation that fools the model
    makes *some* class the top one, and the targeted run towards that class looks for exactly that
    perturbation: with every class targeted, a linear model's exact minimum is found for every sample.
    Samples adversarial at ``x`` keep ``eps = 0`` and are returned as ``x`` with radius 0.

    The model runs in eval mode and every submodule's mode is restored afterwards; parameter ``.grad``
    is never written; ``x`` is never modified.

    Args:
        model: a callable (usually an ``nn.Module``) mapping a batch to logits, or to a tuple/dict
            holding them (see ``logits``).
        x: clean batch ``[B, C, *]`` inside ``bounds``.
        y: ``[B]`` true labels (untargeted) or target labels (``targeted=True``).
        norm: ``"linf"`` or ``"l2"``, the norm minimised (and reported in ``radius``).
        steps: gradient steps (>= 1); each costs one forward and one backward pass.
        alpha_init: initial step size, > 0; ``None``: the paper's, 10 for L-inf and 1 for L2 (see
            :data:`DEFAULT_ALPHA_INIT`). The step is the L2-normalised gradient times ``alpha`` in
            threat-model units, in both norms.
        alpha_final: final step size, in ``[0, alpha_init]``; ``None``: ``alpha_init / 100``.
        gamma_init: initial relative change of the radius per step, in ``(0, 1)``.
        gamma_final: final relative change of the radius, in ``[0, gamma_init]``.
        targeted: move towards class ``y`` instead of away from it.
        target_classes: untargeted only: run targeted towards each of this many most likely wrong
            classes (>= 1, capped at ``num_classes - 1``) and keep the smallest radius (see above);
            ``None``: one untargeted run.
        bounds: ``(lo, hi)`` of the input space, numbers or per-channel tensors ``[C]``; ``None`` for
            unbounded inputs.
        scale: per-channel size of one threat-model unit in input units (``1 / std`` for inputs
            normalised outside the model, so that the perturbation is minimal, and ``radius``
            reported, in pixel units); number or ``[C]``.
        logits: where the logits are in the model's output: an index, a key or a callable.
        amp: ``torch.bfloat16`` or ``torch.float16`` runs the model under ``torch.autocast`` (see
            :func:`nonrobust_ext.pgd`); the iterates, radii and steps stay in ``x``'s precision.
        return_result: return an :class:`FMNResult` (per-sample success, margin, radius) instead of
            the adversarial batch.

    Returns:
        The adversarial batch (same shape, dtype, memory format as ``x``): per sample the smallest
        fooling iterate, ``x`` where none fooled the model; or an :class:`FMNResult` with
        ``return_result=True``.

    Shape:
        x: ``[B, C, *]``; y: ``[B]``; bounds, scale: scalar or ``[C]``.
    """
    check_model(model)
    check_batch(x, y)
    threat = ThreatModel.input_space(x, bounds=bounds, scale=scale, norm=norm)
    steps = check_int(steps, "steps", 1)
    alpha_init = check_optional_real(alpha_init, "alpha_init", low=0.0, low_inclusive=False)
    if alpha_init is None:
        alpha_init = DEFAULT_ALPHA_INIT[threat.norm]
    alpha_final = check_optional_real(alpha_final, "alpha_final", low=0.0, high=alpha_init)
    if alpha_final is None:
        alpha_final = alpha_init * _ALPHA_FINAL_FRACTION
    # gamma < 1 keeps a shrinking radius positive.
    gamma_init = check_real(gamma_init, "gamma_init", low=0.0, high=1.0, low_inclusive=False, high_inclusive=False)
    gamma_final = check_real(gamma_final, "gamma_final", low=0.0, high=gamma_init)
    targeted = check_bool(targeted, "targeted")
    target_classes = check_optional_int(target_classes, "target_classes", 1)
    if target_classes is not None and targeted:
        raise ValueError("target_classes chooses the targets of an untargeted attack; with targeted=True, y "
                         "already holds the targets")
    logits = check_selector(logits)
    return_result = check_bool(return_result, "return_result")
    if target_classes is not None:
        options = dict(norm=norm, steps=steps, alpha_init=alpha_init, alpha_final=alpha_final, gamma_init=gamma_init,
                       gamma_final=gamma_final, bounds=bounds, scale=scale, logits=logits, amp=amp)
        result = _smallest_over_targets(model, x, y, target_classes, options)
        return result if return_result else result.x_adv
    precision = resolve_amp(amp, x)
    x = x.detach()
    y = y.long()
    watch = FiniteWatch(x.device)
    loss_fn: LossFn = (lambda z, t: margin(z, t)) if targeted else (lambda z, t: -margin(z, t))

    compute_dtype = threat.scale.dtype
    unit = threat.channel_view(threat.scale, x)
    lo, hi = threat.channel_view(threat.lo, x), threat.channel_view(threat.hi, x)
    # The farthest any point inside the bounds is from x: no radius beyond it constrains anything, and
    # capping there keeps the radius finite where the bounds are (the ops take finite radii only).
    x_c = x.to(compute_dtype)
    farthest = threat.distance(x_c + torch.maximum(x_c - lo, hi - x_c), x_c)
    largest_finite = torch.finfo(compute_dtype).max

    batch = x.shape[0]
    x_adv = x.clone()
    best = _Best(x, batch, compute_dtype)
    eps = torch.full((batch,), math.inf, dtype=compute_dtype, device=x.device)
    with eval_mode(model):
        for k in range(steps):
            cosine = (1 + math.cos(math.pi * k / steps)) / 2
            alpha = alpha_final + (alpha_init - alpha_final) * cosine
            gamma = gamma_final + (gamma_init - gamma_final) * cosine
            grad, z, loss = input_gradient(model, x_adv, y, loss_fn, logits, check=k == 0, precision=precision,
                                           watch=watch)
            fooled = succeeded(z, y, targeted)
            size = threat.distance(x_adv, x)
            best.record(k, x_adv, fooled, size, loss)

            # The gradient in threat-model units; the loss is minus the logit difference, so its
            # magnitude over the dual norm is the linearised distance to the boundary.
            g_unit = (grad.to(compute_dtype) * unit).flatten(1)
            dual = g_unit.abs().sum(dim=1) if threat.norm == "linf" else g_unit.norm(dim=1)
            # A flat margin (zero gradient) puts the linearised boundary at infinity.
            to_boundary = torch.where(dual > 0, size + loss.to(compute_dtype).abs() / dual, math.inf)
            # The linearised estimate is grown like a known radius: taken as it is, the ball's surface
            # lies on the linearised boundary and a (locally) linear margin can keep the iterate there.
            eps = torch.where(
                fooled,
                torch.minimum(eps * (1 - gamma), best.size),
                torch.where(best.found, eps, to_boundary) * (1 + gamma),
            )
            eps = torch.minimum(eps, farthest)
            # Unbounded inputs leave an infinite radius there, and NaN logits a NaN one (the watch
            # reports those before anything is returned): the ops take finite radii only, and an
            # unbounded ball is the largest finite one.
            eps = torch.nan_to_num(eps, nan=0.0, posinf=largest_finite)
            ball = dataclasses.replace(threat, eps=eps)
            if threat.norm == "l2":
                ball.step_(x_adv, grad, x, alpha=alpha)
            else:
                # In threat-model units the step is alpha * g / ||g||_2; in input units scale times that.
                direction = g_unit / g_unit.norm(dim=1, keepdim=True).clamp_min(1e-12)
                moved = x_adv.to(compute_dtype) + alpha * direction.reshape(x.shape) * unit
                x_adv.copy_(moved)
                ball.project_(x_adv, x)

        # The last step's iterate has not been evaluated yet.
        with torch.no_grad(), precision.autocast():
            z = select_logits(model(x_adv), logits)
            loss = per_sample_loss(loss_fn, z, y)
        watch.note(z, loss)
        best.record(steps, x_adv, succeeded(z, y, targeted), threat.distance(x_adv, x), loss)
    # Before any verdict is returned: a NaN logit on the way voids it.
    watch.check()
    if not return_result:
        return best.x_adv
    return FMNResult(
        x_adv=best.x_adv, success=best.found, loss=best.loss, steps=best.steps,
        restart=torch.zeros_like(best.steps), radius=best.size,
    )


def _smallest_over_targets(model: Model, x: torch.Tensor, y: torch.Tensor, count: int,
                           options: dict[str, Any]) -> FMNResult:
    """FMN with ``target_classes=count``: a targeted run towards each of the ``count`` most likely wrong
    classes (target-major rows of one batch) and, per sample, the run with the smallest fooling radius."""
    with eval_mode(model):
        clean = clean_logits(model, x.detach(), y, options["logits"], resolve_amp(options["amp"], x))
    targets = ranked_targets(clean, y.long(), min(count, clean.shape[1] - 1))
    batch, per_sample = targets.shape
    rows, t_rows = target_rows(targets)
    runs = fmn(model, x[rows], t_rows, targeted=True, return_result=True, **options)
    radius = torch.where(runs.success, runs.radius, math.inf).reshape(per_sample, batch)
    chosen = radius.argmin(dim=0) * batch + torch.arange(batch, device=x.device)
    best = runs.rows(chosen)
    # A targeted run that reaches its class fools the model; the loss reported is the untargeted margin
    # at the kept point, as an untargeted run reports it.
    with torch.no_grad(), eval_mode(model), resolve_amp(options["amp"], x).autocast():
        z = check_finite_logits(select_logits(model(best.x_adv), options["logits"]))
    best.loss = (-margin(z.to(best.loss.dtype), y.long())).to(best.loss.dtype)
    best.x_adv = torch.empty_like(x).copy_(best.x_adv)  # x's memory format, as every attack returns
    return best


class _Best:
    """Per sample, the closest fooling iterate seen so far (``x`` with size ``inf`` until one is seen),
    with its margin and step; until then the margin is that at ``x``."""

    def __init__(self, x: torch.Tensor, batch: int, dtype: torch.dtype) -> None:
        self.x_adv = x.clone()
        self.found = torch.zeros(batch, dtype=torch.bool, device=x.device)
        self.size = torch.full((batch,), math.inf, dtype=dtype, device=x.device)
        self.loss = torch.zeros(batch, dtype=dtype, device=x.device)
        self.steps = torch.zeros(batch, dtype=torch.long, device=x.device)

    def record(self, k: int, x_adv: torch.Tensor, fooled: torch.Tensor, size: torch.Tensor,
               loss: torch.Tensor) -> None:
        """Keep iterate ``k`` (``x_adv`` after ``k`` steps) where it fools the model and is closer."""
        loss = loss.to(self.loss.dtype)
        if k == 0:
            self.loss.copy_(loss)  # the margin at x, kept where nothing will fool the model
        closer = fooled & (size < self.size)
        # In place, so that x_adv keeps x's layout (channels_last, strides), and without a host sync.
        self.x_adv.copy_(torch.where(closer.reshape((-1,) + (1,) * (x_adv.dim() - 1)), x_adv, self.x_adv))
        self.size = torch.where(closer, size, self.size)
        self.loss = torch.where(closer, loss, self.loss)
        self.steps = torch.where(closer, k, self.steps)
        self.found = self.found | fooled


__all__ = ["DEFAULT_ALPHA_INIT", "FMNResult", "fmn"]
