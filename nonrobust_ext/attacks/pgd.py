"""Projected gradient descent (Madry et al., 2018) and FGSM / FGSM-RS on the fused attack-step ops."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .. import ops
from .._params import Param
from ._common import (
    AttackResult,
    Bounds,
    LogitsSelector,
    LossFn,
    autocast_for,
    check_batch,
    check_int,
    check_logits,
    eval_mode,
    keep_better,
    outcome_at,
    parse_bounds,
    per_sample,
    per_sample_loss,
    resolve_generator,
    resolve_loss,
    scale_param,
    select_logits,
    succeeded,
)

_STEP_OPS: dict[str, Callable[..., None]] = {"linf": ops.linf_step_, "l2": ops.l2_step_}


def pgd(
    model: Callable[[torch.Tensor], object],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: Param,
    steps: int = 10,
    alpha: Param | None = None,
    norm: str = "linf",
    random_start: bool = True,
    restarts: int = 1,
    targeted: bool = False,
    loss: str | LossFn = "ce",
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
    r"""Projected gradient ascent on the attack loss inside an L-inf or L2 ball.

    Each step (one fused kernel after the model's forward and input-gradient pass)::

        linf: x' <- clip_bounds( clip_[x-eps, x+eps]( x' + alpha * sign(grad) ) )
        l2:   x' <- clip_bounds( x + P_eps( x' - x + alpha * grad / ||grad|| ) )

    The model runs in eval mode and every submodule's mode is restored afterwards; parameter
    ``.grad`` is never written; ``x`` is never modified.

    Args:
        model: a callable (usually an ``nn.Module``) mapping a batch to logits, or to a tuple/dict
            holding them (see ``logits``).
        x: clean batch ``[B, C, *]`` inside ``bounds``.
        y: ``[B]`` true labels (untargeted) or target labels (``targeted=True``).
        eps: radius, a number or one per sample (``[B]``), in threat-model units (see ``scale``).
        steps: gradient steps per restart (>= 1).
        alpha: step size, number or ``[B]``; default ``2.5 * eps / steps`` (Madry et al.).
        norm: ``"linf"`` or ``"l2"``.
        random_start: start each restart uniformly in the ball (the first restart starts at
            ``x_init`` instead, when given).
        restarts: independent runs; per sample the result of the most successful restart is kept
            (success first, then the higher loss).
        targeted: move towards class ``y`` instead of away from it.
        loss: ``"ce"`` (cross-entropy), ``"cw"`` (margin) or ``callable(logits, y) -> [B]`` to maximise.
        bounds: ``(lo, hi)`` of the input space, numbers or per-channel tensors ``[C]``; ``None`` for
            unbounded inputs. For inputs normalised *outside* the model use
            ``bounds=((0 - mean) / std, (1 - mean) / std)`` and ``scale=1 / std``.
        scale: per-channel size of one threat-model unit in input units (``1 / std`` for inputs
            normalised outside the model, so eps stays in pixel units); number or ``[C]``.
        early_stop: freeze samples as soon as the attack succeeds on them (fewer steps, same
            success); restarts then only run on samples not yet fooled.
        logits: where the logits are in the model's output: an index, a key or a callable.
        seed, generator: source of the random starts (default: torch's global generator, so
            ``torch.manual_seed`` makes attacks reproducible).
        x_init: optional starting point of the first restart, same shape as ``x``.
        amp: ``torch.bfloat16`` or ``torch.float16`` runs every forward of the model under
            ``torch.autocast`` in that dtype; the attack state, the gradient and the step stay in
            ``x``'s dtype. float16 gradients are loss-scaled (the step only uses the gradient's sign
            or direction, so the scale cancels).
        return_result: return an :class:`AttackResult` (per-sample success, loss, steps) instead of
            the adversarial batch.

    Returns:
        The adversarial batch (same shape, dtype, memory format as ``x``), or an
        :class:`AttackResult` with ``return_result=True``.

    Shape:
        x: ``[B, C, *]``; y: ``[B]``; eps, alpha: scalar or ``[B]``; bounds, scale: scalar or ``[C]``.
    """
    check_batch(x, y)
    steps = check_int(steps, "steps", 1)
    autocast, loss_scale = autocast_for(amp, x)
    restarts = check_int(restarts, "restarts", 1)
    if norm not in _STEP_OPS:
        raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
    eps_t = per_sample(eps, x, "eps")
    alpha_t = 2.5 * eps_t / steps if alpha is None else per_sample(alpha, x, "alpha")
    scale_t = scale_param(scale, x)
    lo, hi = parse_bounds(bounds, x)
    loss_fn = resolve_loss(loss, targeted)
    generator = resolve_generator(seed, generator)
    if x_init is not None:
        if not isinstance(x_init, torch.Tensor) or x_init.shape != x.shape:
            raise ValueError(f"x_init must be a tensor shaped like x {tuple(x.shape)}")
    step_op = _STEP_OPS[norm]
    x = x.detach()
    y = y.long()
    params = {"eps": eps_t, "lo": lo, "hi": hi, "scale": scale_t}

    logits_checked = False
    with eval_mode(model):
        best: AttackResult | None = None
        for r in range(restarts):
            # With early stop, later restarts only work on samples no restart has fooled yet.
            active = None
            if early_stop:
                active = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
                if best is not None:
                    active = ~best.success
                    if not bool(active.any()):
                        break
            x_adv = x.clone()
            if r == 0 and x_init is not None:
                x_adv.copy_(x_init.detach())
            elif random_start:
                ops.random_init_(x_adv, x, norm=norm, active=active, generator=generator, **params)
            taken = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
            for _ in range(steps):
                x_req = x_adv.detach().requires_grad_(True)
                with torch.enable_grad(), autocast():
                    z = select_logits(model(x_req), logits)
                    if not logits_checked:
                        check_logits(z, y)
                        logits_checked = True
                    value = per_sample_loss(loss_fn, z, y)
                if active is not None:
                    active = active & ~succeeded(z.detach(), y, targeted)
                    if not bool(active.any()):
                        break
                (grad,) = torch.autograd.grad(value.sum() * loss_scale, x_req)
                step_op(x_adv, grad.to(x_adv.dtype), x, alpha=alpha_t, active=active, **params)
                taken += 1 if active is None else active.long()
            if restarts == 1 and not return_result:
                return x_adv
            with autocast():
                success, value = outcome_at(model, x_adv, y, loss_fn, logits, targeted)
            current = AttackResult(x_adv, success, value, taken, torch.full_like(taken, r))
            best = current if best is None else keep_better(best, current)
    assert best is not None
    return best if return_result else best.x_adv


def fgsm(
    model: Callable[[torch.Tensor], object],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: Param,
    random_start: bool = False,
    alpha: Param | None = None,
    targeted: bool = False,
    loss: str | LossFn = "ce",
    bounds: Bounds = (0.0, 1.0),
    scale: Param = 1.0,
    logits: LogitsSelector = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    return_result: bool = False,
) -> torch.Tensor | AttackResult:
    """Fast gradient sign method (Goodfellow et al., 2015), and FGSM-RS (Wong et al., 2020).

    Without random start: ``x' = clip_bounds(x + eps * sign(grad))`` (``alpha`` defaults to ``eps``).
    With ``random_start=True`` (the step of "fast is better than free" adversarial training): start
    uniformly in the eps-ball, step ``alpha`` (default ``1.25 * eps``), project back onto the ball.

    Args: as :func:`pgd`, with one L-inf step.

    Returns:
        The adversarial batch, or an :class:`AttackResult` with ``return_result=True``.
    """
    check_batch(x, y)
    if alpha is None:
        alpha = per_sample(eps, x, "eps") * (1.25 if random_start else 1.0)
    return pgd(
        model, x, y, eps=eps, steps=1, alpha=alpha, norm="linf", random_start=random_start, restarts=1,
        targeted=targeted, loss=loss, bounds=bounds, scale=scale, logits=logits, seed=seed,
        generator=generator, return_result=return_result,
    )
