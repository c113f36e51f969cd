"""FAB, the fast adaptive boundary attack (Croce and Hein, ICML 2020, "Minimally distorted adversarial
examples with a fast adaptive boundary attack"), in L-inf and L2, untargeted and targeted.

Each step linearises the classifier at the current iterate, projects both the iterate and the clean
point onto the linearised decision boundary intersected with the input box, and moves to a biased
combination of the two projections: towards the boundary, but staying close to the clean point. Once
an iterate fools the model it is pulled back towards the clean point, so the attack keeps shrinking the
perturbation it has found.

This attack does not use the fused step ops: its step is a projection onto a hyperplane within the box
(:func:`nonrobust_ext.ops.box_hyperplane_projection`), not a signed/normalised step inside a ball.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, overload

import torch

from .. import ops
from .._params import Param
from .._validate import check_bool, check_int, check_real
from ._common import (
    AttackResult,
    LogitsSelector,
    Model,
    Precision,
    check_batch,
    check_finite_logits,
    check_logits,
    check_model,
    check_selector,
    eval_mode,
    margin,
    resolve_amp,
    resolve_generator,
    select_logits,
)
from .deepfool import _rows_of_jacobian
from .threat import Bounds, ThreatModel, per_sample


@dataclass
class FABResult(AttackResult):
    """What FAB found, per sample: an :class:`AttackResult` (``x_adv`` is ``x`` itself where
    ``success`` is False; ``loss`` the margin ``max_{k != y} z_k - z_y`` at ``x_adv``, positive where
    it fools the model; ``steps`` the step of its run at which the kept point was found, 0 where
    ``x_adv`` is ``x``; ``restart`` the run that found it, 0 where ``x_adv`` is ``x``) with

    Attributes:
        radius: ``[B]`` norm of ``(x_adv - x) / scale`` in the attack's norm (threat-model units; with
            ``scale=1`` the input's), ``inf`` where ``success`` is False, 0 for samples misclassified
            at ``x``; in the compute dtype (float64 for float64 inputs, float32 otherwise).
    """

    radius: torch.Tensor


@overload
def fab(
    model: Model, x: torch.Tensor, y: torch.Tensor, *, norm: str = ..., eps: Param | None = ..., steps: int = ...,
    restarts: int = ..., target_rank: int | None = ..., alpha_max: float = ..., eta: float = ..., beta: float = ...,
    bounds: Bounds = ..., scale: Param = ..., seed: int | None = ..., generator: torch.Generator | None = ...,
    logits: LogitsSelector = ..., amp: torch.dtype | None = ..., return_result: Literal[False] = ...,
) -> torch.Tensor: ...
@overload
def fab(
    model: Model, x: torch.Tensor, y: torch.Tensor, *, norm: str = ..., eps: Param | None = ..., steps: int = ...,
    restarts: int = ..., target_rank: int | None = ..., alpha_max: float = ..., eta: float = ..., beta: float = ...,
    bounds: Bounds = ..., scale: Param = ..., seed: int | None = ..., generator: torch.Generator | None = ...,
    logits: LogitsSelector = ..., amp: torch.dtype | None = ..., return_result: Literal[True],
) -> FABResult: ...
def fab(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    norm: str = "linf",
    eps: Param | None = None,
    steps: int = 100,
    restarts: int = 1,
    target_rank: int | None = None,
    alpha_max: float = 0.1,
    eta: float = 1.05,
    beta: float = 0.9,
    bounds: Bounds = (0.0, 1.0),
    scale: Param = 1.0,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    logits: LogitsSelector = None,
    amp: torch.dtype | None = None,
    return_result: bool = False,
) -> torch.Tensor | FABResult:
    r"""FAB: the smallest perturbation (in L-inf or L2) that fools the model, or with ``eps`` one within
    ``eps``, found by steps to the linearised decision boundary biased towards the clean point.

    At the iterate ``x_i`` of a sample with clean point ``x_o``, with ``f_k = z_k(x_i) - z_y(x_i)``
    and ``w_k`` its gradient in threat-model units (``u = x / scale``)::

        l       = argmin_{k != y} |f_k| / ||w_k||_q          (q the dual norm: L1 for L-inf, L2 for L2)
        d_i     = P(x_i) - x_i,   d_o = P(x_o) - x_o        (P: projection onto {f_l + w_l . (u - x_i) = 0}
                                                            within the bounds, in the attack's norm)
        alpha   = min(||d_i|| / (||d_i|| + ||d_o||), alpha_max)
        x_{i+1} = clip_bounds((1 - alpha) (x_i + eta d_i) + alpha (x_o + eta d_o))

    and where ``x_{i+1}`` fools the model it is kept if it is the closest so far, then pulled back:
    ``x_{i+1} <- x_o + beta (x_{i+1} - x_o)``. The first run starts at ``x_o`` (where ``d_i = d_o``),
    each further run at a random point at half the radius: ``eps / 2`` with ``eps`` (the authors'
    choice), else half the smallest radius found so far (samples with none found are not restarted).
    ``target_rank = k`` linearises only the boundary between ``y`` and the class ranked ``k``-th by
    the clean logits (FAB-T, as AutoAttack runs it for ``k = 2..10``); success is misclassification
    either way. The paper's hyperparameters are the defaults: ``alpha_max = 0.1``, ``eta = 1.05``,
    ``beta = 0.9``; AutoAttack uses ``steps = 100``.

    The projection (:func:`nonrobust_ext.ops.box_hyperplane_projection`) solves its 1-D dual problem
    per sample (on the CPU by selection in one compiled op, elsewhere by one sort); where the box does
    not reach the hyperplane it returns the box corner that goes furthest towards it (as the authors'
    code). Untargeted steps need the gradient of every ``z_k - z_y``: one backward pass per class
    ``k != y`` over the batch (``num_classes - 1`` passes per step, and a ``[B, num_classes - 1, D]``
    Jacobian: meant for few classes; use ``target_rank`` on many-class models); targeted steps need one
    backward pass of ``z_t - z_y``. Each step also runs one forward pass without a gradient at the new
    point to check it.

    What differs from the authors' code (``fab_pt.py`` of AutoAttack), and why:

    - with ``eps``, a sample stops being attacked (within a run, and in later runs) once a point
      within ``eps`` is found: its success cannot change, and the batch's other samples do not
      depend on it; the authors keep minimising it to the end of the run. The returned point is
      then the first one found within ``eps``, not the closest.
    - without ``eps`` the random restarts start at half the best radius found (the authors, with no
      radius given, fall back to a default ``eps`` per norm);
    - the input bounds may be per channel or open, and distances are in ``scale`` units;
    - every returned point is checked by one last forward pass of the whole batch, so ``success`` is
      the model's verdict on exactly the batch returned.

    The model runs in eval mode and every submodule's mode is restored afterwards; parameter
    ``.grad`` is never written; ``x`` is never modified.

    Args:
        model: a callable (usually an ``nn.Module``) mapping a batch to logits, or to a tuple/dict
            holding them (see ``logits``).
        x: clean batch ``[B, C, *]`` inside ``bounds``.
        y: ``[B]`` true labels.
        norm: ``"linf"`` or ``"l2"``.
        eps: ``None`` for the minimal-norm attack; else the radius, > 0, a number or one per sample
            ``[B]``: ``success`` then means fooled within ``eps`` and further runs attack only the
            samples not yet fooled within it.
        steps: steps per run (>= 1).
        restarts: runs (>= 1); the first starts at ``x``, the others at random points.
        target_rank: ``None`` (untargeted) or ``k`` in ``[2, num_classes]``: attack only the boundary
            to the class ranked ``k``-th by the clean logits.
        alpha_max: the largest weight of the clean point's projection in a step, in ``[0, 1]``.
        eta: the overshoot of the projections, >= 1.
        beta: the backward step's factor towards the clean point, in ``(0, 1]`` (1: none).
        bounds: ``(lo, hi)`` of the input space, numbers or per-channel tensors ``[C]``; ``None`` for
            unbounded inputs.
        scale: per-channel size of one threat-model unit in input units (``1 / std`` for inputs
            normalised outside the model, so that ``eps`` and ``radius`` are in pixel units);
            number or ``[C]``.
        seed, generator: the randomness of the restarts: a seed, or a ``torch.Generator`` (not both);
            neither: torch's global generator.
        logits: where the logits are in the model's output: an index, a key or a callable.
        amp: ``torch.bfloat16`` or ``torch.float16`` runs the model under ``torch.autocast`` (see
            :func:`nonrobust_ext.pgd`); the iterates and projections stay in float32 (or float64).
        return_result: return a :class:`FABResult` (per-sample success, margin, radius) instead of the
            adversarial batch.

    Returns:
        The adversarial batch (same shape, dtype, memory format as ``x``; ``x`` itself where no
        adversarial point was found, or none within ``eps``), or a :class:`FABResult` with
        ``return_result=True``.

    Shape:
        x: ``[B, C, *]``; y: ``[B]``; eps: scalar or ``[B]``; bounds, scale: scalar or ``[C]``.
    """
    check_model(model)
    check_batch(x, y)
    if eps is None:
        threat = ThreatModel.input_space(x, bounds=bounds, scale=scale, norm=norm)
    else:
        per_sample(eps, x, "eps", positive=True)
        threat = ThreatModel.resolve(x, eps=eps, norm=norm, bounds=bounds, scale=scale)
    steps = check_int(steps, "steps", 1)
    restarts = check_int(restarts, "restarts", 1)
    if target_rank is not None:
        target_rank = check_int(target_rank, "target_rank", 2)
    alpha_max = check_real(alpha_max, "alpha_max", low=0.0, high=1.0)
    eta = check_real(eta, "eta", low=1.0)
    beta = check_real(beta, "beta", low=0.0, high=1.0, low_inclusive=False)
    gen = resolve_generator(seed, generator)
    logits = check_selector(logits)
    return_result = check_bool(return_result, "return_result")
    precision = resolve_amp(amp, x)
    x = x.detach()
    y = y.long()

    with eval_mode(model):
        attack = _FAB(model, x, y, threat, logits, precision, target_rank=target_rank, alpha_max=alpha_max,
                      eta=eta, beta=beta, generator=gen)
        attack.run(steps, restarts)
        x_adv, success, loss, radius = attack.finish()
    out = torch.empty_like(x)
    out.copy_(x_adv.to(x.dtype).reshape(x.shape))
    if not return_result:
        return out
    zero = torch.zeros_like(attack.best_step)
    return FABResult(x_adv=out, success=success, loss=loss, steps=torch.where(success, attack.best_step, zero),
                     restart=torch.where(success, attack.best_restart, zero), radius=radius)


class _FAB:
    """The state of one FAB call: the flattened batch in the compute dtype and, per sample, the
    closest adversarial point found so far."""

    def __init__(self, model: Model, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel, logits: LogitsSelector,
                 precision: Precision, *, target_rank: int | None, alpha_max: float, eta: float, beta: float,
                 generator: torch.Generator | None) -> None:
        self.model, self.y, self.threat, self.selector, self.precision = model, y, threat, logits, precision
        self.alpha_max, self.eta, self.beta, self.generator = alpha_max, eta, beta, generator
        self.input_dtype, self.shape = x.dtype, x.shape[1:]
        self.dtype = threat.scale.dtype
        self.dual = "l1" if threat.norm == "linf" else "l2"
        batch = x.shape[0]
        # Flattened in the logical (contiguous) order: the model always sees contiguous batches, so the
        # input's memory layout cannot change the result.
        self.x = x.reshape(batch, -1).to(self.dtype)
        channels = x.shape[1]

        def per_element(value: torch.Tensor) -> torch.Tensor:
            return value.reshape((channels,) + (1,) * (x.dim() - 2)).expand(self.shape).reshape(-1)

        self.unit, self.lo, self.hi = per_element(threat.scale), per_element(threat.lo), per_element(threat.hi)
        with torch.no_grad():
            z = self.forward(self.x, check=True)
        num_classes = z.shape[1]
        if num_classes < 2:
            raise ValueError(f"fab needs a model with at least 2 classes (a boundary to step to), got {num_classes}")
        if target_rank is not None and target_rank > num_classes:
            raise ValueError(f"target_rank must be <= the model's {num_classes} classes, got {target_rank}")
        self.clean_logits = z
        self.correct = z.argmax(dim=1) == y
        # Stable, so that a class tied with y's logit ranks as argmax breaks the tie (lower index first).
        self.target = None
        if target_rank is not None:
            self.target = z.argsort(dim=1, descending=True, stable=True)[:, target_rank - 1]
        self.num_classes = num_classes
        self.best = self.x.clone()
        self.best_radius = torch.where(self.correct, math.inf, 0.0).to(self.dtype)
        self.best_step = torch.zeros(batch, dtype=torch.long, device=x.device)
        self.best_restart = torch.zeros_like(self.best_step)

    # ---------------------------------------------------------------------------------- the model

    def forward(self, points: torch.Tensor, *, check: bool = False) -> torch.Tensor:
        """Logits (compute dtype) at ``points`` ``[n, D]``, refused when NaN or infinite."""
        with self.precision.autocast():
            z = select_logits(self.model(points.to(self.input_dtype).reshape(-1, *self.shape)), self.selector)
        if check:
            check_logits(z, self.y)
        return check_finite_logits(z.detach()).to(self.dtype)

    def linearise(self, points: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None):
        """``(f, w)``: ``f = z_k - z_y`` ``[n, K']`` at ``points`` for the classes attacked (the target, or
        every class but ``y``) and its gradient in threat-model units ``[n, K', D]``."""
        x_req = points.to(self.input_dtype).reshape(-1, *self.shape).requires_grad_(True)
        if target is not None:
            columns = target[:, None]
        else:
            every = torch.arange(self.num_classes, device=y.device).expand(len(y), -1)
            columns = every[every != y[:, None]].reshape(len(y), self.num_classes - 1)
        with torch.enable_grad():
            with self.precision.autocast():
                z = select_logits(self.model(x_req), self.selector)
            check_finite_logits(z.detach())
            z = z.to(self.dtype)
            f = z.gather(1, columns) - z.gather(1, y[:, None])
            w = _rows_of_jacobian(f, x_req, self.precision.loss_scale)
        return f.detach(), w.to(self.dtype) * self.unit

    # ---------------------------------------------------------------------------------- the attack

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return _norm((a - b) / self.unit, self.threat.norm)

    def rounded(self, points: torch.Tensor) -> torch.Tensor:
        """``points`` as the model will see them (in the input's dtype), so that the point kept is the
        point checked."""
        return points.to(self.input_dtype).to(self.dtype)

    def random_start(self, rows: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
        """Points at distance ``radius`` (before the clip to the bounds) from the clean ``rows``."""
        shape = (len(rows), self.x.shape[1])
        device = self.generator.device if self.generator is not None else self.x.device
        if self.threat.norm == "linf":
            t = torch.rand(shape, generator=self.generator, dtype=self.dtype, device=device) * 2 - 1
        else:
            t = torch.randn(shape, generator=self.generator, dtype=self.dtype, device=device)
        t = t.to(self.x.device)
        direction = t / _norm(t, self.threat.norm).clamp_min(torch.finfo(self.dtype).tiny)[:, None]
        start = self.x[rows] + radius[:, None] * direction * self.unit
        return self.rounded(torch.minimum(torch.maximum(start, self.lo), self.hi))

    def run(self, steps: int, restarts: int) -> None:
        eps = self.threat.eps
        for restart in range(restarts):
            if restart == 0:
                rows = self.correct.nonzero().squeeze(1)
                start = self.x[rows]
            else:
                if eps is not None:
                    rows = (self.correct & ~(self.best_radius <= eps)).nonzero().squeeze(1)
                    radius = 0.5 * eps[rows]
                else:
                    rows = (self.correct & torch.isfinite(self.best_radius)).nonzero().squeeze(1)
                    radius = 0.5 * self.best_radius[rows]
                if rows.numel() == 0:
                    break
                start = self.random_start(rows, radius)
            if rows.numel() == 0:
                break
            self.single_run(rows, start, steps, restart)

    def single_run(self, rows: torch.Tensor, start: torch.Tensor, steps: int, restart: int) -> None:
        """``steps`` FAB steps from ``start`` for the samples ``rows``, updating their best points."""
        eps = self.threat.eps
        current = start.clone()
        active = torch.arange(len(rows), device=rows.device)
        room_up = ((self.hi - self.x[rows]) / self.unit).clamp_min(0)
        room_down = ((self.x[rows] - self.lo) / self.unit).clamp_min(0)
        for step in range(1, steps + 1):
            if active.numel() == 0:
                break
            index = rows[active]
            point, clean, y = current[active], self.x[index], self.y[index]
            f, w = self.linearise(point, y, None if self.target is None else self.target[index])
            dual = _norm(w, self.dual)
            # A class whose margin has no gradient cannot be reached by a linear step.
            nearness = torch.where(dual > 0, f.abs() / dual, torch.full_like(dual, math.inf))
            nearest = nearness.argmin(dim=1)
            f_l = f.gather(1, nearest[:, None]).squeeze(1)
            w_l = w[torch.arange(len(index), device=w.device), nearest]
            # The hyperplane f_l + w_l . (u - u_i) = 0 asks of a step d from x_i: w_l . d = -f_l, and
            # of a step from the clean point: w_l . d = -f_l - w_l . (u_o - u_i).
            need_point = -f_l
            need_clean = -f_l - (w_l * (clean - point) / self.unit).sum(dim=1)
            up_point = ((self.hi - point) / self.unit).clamp_min(0)
            down_point = ((point - self.lo) / self.unit).clamp_min(0)
            d = ops.box_hyperplane_projection(
                torch.cat([w_l, w_l]), torch.cat([need_point, need_clean]),
                torch.cat([up_point, room_up[active]]), torch.cat([down_point, room_down[active]]), self.threat.norm,
            )
            d_point, d_clean = d[: len(index)], d[len(index):]
            a_point, a_clean = _norm(d_point, self.threat.norm), _norm(d_clean, self.threat.norm)
            total = a_point + a_clean
            alpha = torch.where(total > 0, a_point / total, torch.zeros_like(total)).clamp(0, self.alpha_max)[:, None]
            moved = ((1 - alpha) * (point + self.eta * d_point * self.unit)
                     + alpha * (clean + self.eta * d_clean * self.unit))
            moved = self.rounded(torch.minimum(torch.maximum(moved, self.lo), self.hi))
            # A step that overflows (a near-flat margin on unbounded inputs) is no step.
            moved = torch.where(torch.isfinite(moved).all(dim=1, keepdim=True), moved, point)
            with torch.no_grad():
                fooled = self.forward(moved).argmax(dim=1) != y
            radius = self.distance(moved, clean)
            closer = fooled & (radius < self.best_radius[index])
            kept = index[closer]
            self.best[kept] = moved[closer]
            self.best_radius[kept] = radius[closer]
            self.best_step[kept] = step
            self.best_restart[kept] = restart
            # Pulled back towards the clean point, the next steps look for a closer crossing.
            pulled = clean + self.beta * (moved - clean)
            current[active] = torch.where(fooled[:, None], self.rounded(pulled), moved)
            if eps is not None:
                active = active[~(self.best_radius[index] <= eps[index])]

    def finish(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x_adv, success, loss, radius)``: the best points (within ``eps`` where given), checked by
        one forward pass of the whole batch; ``x`` where none was found or the check fails."""
        keep = torch.isfinite(self.best_radius) & self.correct
        if self.threat.eps is not None:
            keep &= self.best_radius <= self.threat.eps
        candidate = torch.where(keep[:, None], self.best, self.x)
        with torch.no_grad():
            z = self.forward(candidate)
        success = z.argmax(dim=1) != self.y
        # A kept point that the whole-batch pass does not find adversarial (rounding of a point at the
        # boundary) is not reported as one: x is returned there, and described.
        reverted = keep & ~success
        x_adv = torch.where(reverted[:, None], self.x, candidate)
        loss = torch.where(reverted, -margin(self.clean_logits, self.y), -margin(z, self.y))
        radius = torch.where(success, self.distance(x_adv, self.x), torch.full_like(self.best_radius, math.inf))
        return x_adv, success, loss, radius


def _norm(t: torch.Tensor, norm: str) -> torch.Tensor:
    """The norm of ``t`` over its last dimension: ``"linf"``, ``"l2"`` or ``"l1"``."""
    if norm == "linf":
        return t.abs().amax(dim=-1)
    if norm == "l1":
        return t.abs().sum(dim=-1)
    return t.norm(dim=-1)
