"""Iterative transfer attacks: BIM / I-FGSM, MI-FGSM (momentum) and DI-FGSM / M-DI-FGSM (input diversity).

They are the white-box attacks whose adversarial examples transfer best to other models, used to
measure how much non-robustness a fine-tuned model shares with its pretrained source.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .. import ops
from .._params import Param, opmath_dtype
from ._common import (
    AttackResult,
    Bounds,
    LogitsSelector,
    LossFn,
    check_batch,
    check_int,
    check_real,
    eval_mode,
    input_gradient,
    outcome_at,
    parse_bounds,
    per_sample,
    resolve_amp,
    resolve_generator,
    resolve_loss,
    scale_param,
)
from .pgd import pgd

_INTERPOLATIONS = ("nearest", "bilinear")


def bim(
    model: Callable[[torch.Tensor], object],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: Param,
    steps: int = 10,
    alpha: Param | None = None,
    targeted: bool = False,
    loss: str | LossFn = "ce",
    bounds: Bounds = (0.0, 1.0),
    scale: Param = 1.0,
    early_stop: bool = False,
    logits: LogitsSelector = None,
    amp: torch.dtype | None = None,
    return_result: bool = False,
) -> torch.Tensor | AttackResult:
    r"""Basic iterative method / I-FGSM (Kurakin et al., 2017): L-inf PGD from the clean input.

    Each step::

        x' <- clip_bounds( clip_[x-eps, x+eps]( x' + alpha * sign(grad) ) ),    x'_0 = x

    Deterministic: no random start, no restarts. Model mode, parameter ``.grad`` and ``x`` are left
    as they were (see :func:`pgd`).

    Args:
        model: a callable mapping a batch to logits, or to a tuple/dict holding them (see ``logits``).
        x: clean batch ``[B, C, *]`` inside ``bounds``.
        y: ``[B]`` true labels (untargeted) or target labels (``targeted=True``).
        eps: L-inf radius, a number or one per sample (``[B]``), in threat-model units (see ``scale``).
        steps: gradient steps (>= 1).
        alpha: step size, number or ``[B]``; default ``eps / steps`` (the last step can reach the
            ball's surface, none overshoots it).
        targeted, loss, bounds, scale, early_stop, logits, amp, return_result: as :func:`pgd`.

    Returns:
        The adversarial batch (same shape, dtype, memory format as ``x``), or an
        :class:`AttackResult` with ``return_result=True``.

    Shape:
        x: ``[B, C, *]``; y: ``[B]``; eps, alpha: scalar or ``[B]``; bounds, scale: scalar or ``[C]``.
    """
    check_batch(x, y)
    steps = check_int(steps, "steps", 1)
    if alpha is None:
        alpha = per_sample(eps, x, "eps") / steps
    return pgd(
        model, x, y, eps=eps, steps=steps, alpha=alpha, norm="linf", random_start=False, restarts=1,
        targeted=targeted, loss=loss, bounds=bounds, scale=scale, early_stop=early_stop, logits=logits,
        amp=amp, return_result=return_result,
    )


def mifgsm(
    model: Callable[[torch.Tensor], object],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: Param,
    steps: int = 10,
    alpha: Param | None = None,
    decay: float = 1.0,
    random_start: bool = False,
    targeted: bool = False,
    loss: str | LossFn = "ce",
    bounds: Bounds = (0.0, 1.0),
    scale: Param = 1.0,
    logits: LogitsSelector = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    amp: torch.dtype | None = None,
    return_result: bool = False,
) -> torch.Tensor | AttackResult:
    r"""Momentum iterative FGSM (Dong et al., 2018).

    Each step accumulates the per-sample L1-normalised gradient into a momentum and steps along its
    sign (one fused kernel after the model's forward and input-gradient pass)::

        g  <- decay * g + grad / mean(|grad|)          (mean over each sample's elements; g_0 = 0)
        x' <- clip_bounds( clip_[x-eps, x+eps]( x' + alpha * sign(g) ) )

    A sample whose gradient is exactly zero adds nothing to its momentum. ``decay=0`` is I-FGSM
    (:func:`bim`). Model mode, parameter ``.grad`` and ``x`` are left as they were (see :func:`pgd`).

    Args:
        model: a callable mapping a batch to logits, or to a tuple/dict holding them (see ``logits``).
        x: clean batch ``[B, C, *]`` inside ``bounds``.
        y: ``[B]`` true labels (untargeted) or target labels (``targeted=True``).
        eps: L-inf radius, a number or one per sample (``[B]``), in threat-model units (see ``scale``).
        steps: gradient steps (>= 1).
        alpha: step size, number or ``[B]``; default ``eps / steps``.
        decay: momentum decay factor ``mu`` (>= 0); 1.0 in the paper.
        random_start: start uniformly in the eps-ball instead of at ``x``.
        targeted, loss, bounds, scale, logits, amp, return_result: as :func:`pgd`.
        seed, generator: source of the random start (default: torch's global generator).

    Returns:
        The adversarial batch (same shape, dtype, memory format as ``x``), or an
        :class:`AttackResult` with ``return_result=True`` (``steps`` is ``steps`` and ``restart`` 0
        for every sample).

    Shape:
        x: ``[B, C, *]``; y: ``[B]``; eps, alpha: scalar or ``[B]``; bounds, scale: scalar or ``[C]``.
    """
    check_batch(x, y)
    return _momentum_attack(
        model, x, y, eps=eps, steps=steps, alpha=alpha, decay=decay, random_start=random_start,
        targeted=targeted, loss=loss, bounds=bounds, scale=scale, logits=logits,
        generator=resolve_generator(seed, generator), transform=None, amp=amp,
        return_result=return_result,
    )


def difgsm(
    model: Callable[[torch.Tensor], object],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: Param,
    steps: int = 10,
    alpha: Param | None = None,
    decay: float = 0.0,
    resize_rate: float = 0.9,
    diversity_prob: float = 0.5,
    interpolation: str = "nearest",
    random_start: bool = False,
    targeted: bool = False,
    loss: str | LossFn = "ce",
    bounds: Bounds = (0.0, 1.0),
    scale: Param = 1.0,
    logits: LogitsSelector = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    amp: torch.dtype | None = None,
    return_result: bool = False,
) -> torch.Tensor | AttackResult:
    r"""Diverse-input iterative FGSM, DI-FGSM, and with ``decay > 0`` M-DI-FGSM (Xie et al., 2019).

    The gradient of each step is taken through a random input transformation ``T``, applied with
    probability ``diversity_prob`` (else ``T`` is the identity), the rest is :func:`mifgsm`::

        grad = d loss(model(T(x'))) / d x'
        g  <- decay * g + grad / mean(|grad|)
        x' <- clip_bounds( clip_[x-eps, x+eps]( x' + alpha * sign(g) ) )

    ``T`` resizes the ``W x W`` image to ``r x r`` and zero-pads it at a random offset (at least one
    pixel of padding at the bottom and the right) to ``P x P``. With ``resize_rate < 1``, ``r`` is
    uniform in ``[int(W * resize_rate), W)`` and ``P = W``: the model sees its usual input size.
    With ``resize_rate > 1`` (the paper's 299 -> [299, 330) -> 330 is ``resize_rate=1.104``), ``r``
    is uniform in ``[W, int(W * resize_rate))`` and ``P = int(W * resize_rate)``, which needs a model
    that accepts larger inputs. One transformation per step is shared by the whole batch.

    Every step draws, in this order, ``r``, the top and the left padding (``torch.randint``) and
    the coin (``torch.rand``), whether or not the coin applies ``T``: from torch's global generator
    (unless ``seed``/``generator`` is given) this is the sampling of ``torchattacks.DIFGSM``, which
    resizes with ``interpolation="bilinear"``.

    Args:
        model: a callable mapping a batch to logits, or to a tuple/dict holding them (see ``logits``).
        x: clean batch ``[B, C, W, W]`` inside ``bounds``.
        y: ``[B]`` true labels (untargeted) or target labels (``targeted=True``).
        eps: L-inf radius, a number or one per sample (``[B]``), in threat-model units (see ``scale``).
        steps: gradient steps (>= 1).
        alpha: step size, number or ``[B]``; default ``eps / steps``.
        decay: momentum decay factor (>= 0); 0 is DI-FGSM, 1.0 is M-DI-FGSM as in the paper.
        resize_rate: sets the resize range as above; ``int(W * resize_rate)`` must be >= 1 and differ
            from ``W``.
        diversity_prob: probability of transforming the input at a step, in [0, 1].
        interpolation: ``"nearest"`` (the paper) or ``"bilinear"`` (torchattacks).
        random_start: start uniformly in the eps-ball instead of at ``x``.
        targeted, loss, bounds, scale, logits, amp, return_result: as :func:`pgd`.
        seed, generator: source of the random start and the transformations (default: torch's global
            generator, so ``torch.manual_seed`` makes attacks reproducible).

    Returns:
        The adversarial batch (same shape, dtype, memory format as ``x``), or an
        :class:`AttackResult` with ``return_result=True`` (success and loss of the untransformed
        ``x_adv``; ``steps`` is ``steps`` and ``restart`` 0 for every sample).

    Shape:
        x: ``[B, C, W, W]``; y: ``[B]``; eps, alpha: scalar or ``[B]``; bounds, scale: scalar or ``[C]``.
    """
    check_batch(x, y)
    if x.dim() != 4 or x.shape[2] != x.shape[3]:
        raise ValueError(f"difgsm needs square images [B, C, W, W] for its resizing, got x of shape {tuple(x.shape)}")
    resize_rate = check_real(resize_rate, "resize_rate", low=0.0, low_inclusive=False)
    smallest, padded = _resize_range(x.shape[-1], resize_rate)
    diversity_prob = check_real(diversity_prob, "diversity_prob", low=0.0, high=1.0)
    if interpolation not in _INTERPOLATIONS:
        raise ValueError(f"interpolation must be 'nearest' or 'bilinear', got {interpolation!r}")
    generator = resolve_generator(seed, generator)
    device = generator.device if generator is not None else torch.device("cpu")

    def diverse_input(image: torch.Tensor) -> torch.Tensor:
        size = int(torch.randint(smallest, padded, (1,), generator=generator, device=device))
        top = int(torch.randint(0, padded - size, (1,), generator=generator, device=device))
        left = int(torch.randint(0, padded - size, (1,), generator=generator, device=device))
        if not bool(torch.rand(1, generator=generator, device=device) < diversity_prob):
            return image
        resized = F.interpolate(image, size=(size, size), mode=interpolation)
        return F.pad(resized, (left, padded - size - left, top, padded - size - top))

    return _momentum_attack(
        model, x, y, eps=eps, steps=steps, alpha=alpha, decay=decay, random_start=random_start,
        targeted=targeted, loss=loss, bounds=bounds, scale=scale, logits=logits, generator=generator,
        transform=diverse_input, amp=amp, return_result=return_result,
    )


def _momentum_attack(
    model: Callable[[torch.Tensor], object],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: Param,
    steps: int,
    alpha: Param | None,
    decay: float,
    random_start: bool,
    targeted: bool,
    loss: str | LossFn,
    bounds: Bounds,
    scale: Param,
    logits: LogitsSelector,
    generator: torch.Generator | None,
    transform: Callable[[torch.Tensor], torch.Tensor] | None,
    amp: torch.dtype | None,
    return_result: bool,
) -> torch.Tensor | AttackResult:
    """The MI-FGSM loop, with the gradient taken through ``transform`` when given."""
    steps = check_int(steps, "steps", 1)
    precision = resolve_amp(amp, x)
    eps_t = per_sample(eps, x, "eps")
    alpha_t = eps_t / steps if alpha is None else per_sample(alpha, x, "alpha")
    decay = check_real(decay, "decay", low=0.0)
    scale_t = scale_param(scale, x)
    lo, hi = parse_bounds(bounds, x)
    loss_fn = resolve_loss(loss, targeted)
    x = x.detach()
    y = y.long()
    params = {"eps": eps_t, "lo": lo, "hi": hi, "scale": scale_t}
    # Half-precision momentum would lose the small normalised terms whose sign decides the step.
    momentum = torch.zeros_like(x, dtype=opmath_dtype(x.dtype))
    sample_dims = tuple(range(1, x.dim()))
    tiny = torch.finfo(momentum.dtype).tiny

    with eval_mode(model):
        x_adv = x.clone()
        if random_start:
            ops.random_init_(x_adv, x, norm="linf", generator=generator, **params)
        for step in range(steps):
            grad, _, _ = input_gradient(
                model, x_adv, y, loss_fn, logits, check=step == 0, transform=transform, precision=precision
            )
            grad = grad.to(momentum.dtype)
            # clamp_min: an all-zero gradient (saturated model) must add 0, not 0/0 = NaN.
            l1_mean = grad.abs().mean(dim=sample_dims, keepdim=True).clamp_min(tiny)
            momentum.mul_(decay).add_(grad / l1_mean)
            # The op needs grad in x's dtype and only reads its sign: cast the sign, not the values,
            # so that no momentum entry underflows to zero in float16.
            direction = momentum if momentum.dtype == x.dtype else momentum.sign().to(x.dtype)
            ops.linf_step_(x_adv, direction, x, alpha=alpha_t, **params)
        if not return_result:
            return x_adv
        success, value = outcome_at(model, x_adv, y, loss_fn, logits, targeted, precision)
    taken = torch.full((x.shape[0],), steps, dtype=torch.long, device=x.device)
    return AttackResult(x_adv, success, value, taken, torch.zeros_like(taken))


def _resize_range(width: int, resize_rate: float) -> tuple[int, int]:
    """``(smallest resized size, padded size)``; the resized size is drawn from ``[smallest, padded)``."""
    scaled = int(width * resize_rate)
    smallest, padded = (scaled, width) if resize_rate < 1 else (width, scaled)
    if smallest < 1 or smallest >= padded:
        raise ValueError(
            f"resize_rate={resize_rate:g} gives no resize range for {width}x{width} images "
            f"(int({width} * resize_rate) = {scaled}); choose a rate whose scaled size is in [1, {width}) or > {width}"
        )
    return smallest, padded
