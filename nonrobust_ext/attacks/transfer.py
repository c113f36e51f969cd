"""Iterative transfer attacks: BIM / I-FGSM, MI-FGSM (momentum) and DI-FGSM / M-DI-FGSM (input diversity).

They are the white-box attacks whose adversarial examples transfer best to other models, used to
measure how much non-robustness a fine-tuned model shares with its pretrained source.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, overload

import torch
import torch.nn.functional as F

from .._params import Param, opmath_dtype
from .._validate import check_bool, check_choice, check_int, check_real
from ._common import (
    AttackResult,
    FiniteWatch,
    LogitsSelector,
    LossFn,
    Model,
    Precision,
    check_batch,
    check_logits,
    check_model,
    check_selector,
    eval_mode,
    input_gradient,
    outcome_at,
    resolve_amp,
    resolve_generator,
    resolve_loss,
    select_logits,
    succeeded,
)
from .pgd import run_pgd
from .threat import Bounds, ThreatModel

_INTERPOLATIONS = ("nearest", "bilinear")


@overload
def bim(
    model: Model, x: torch.Tensor, y: torch.Tensor, *, eps: Param, steps: int = ..., alpha: Param | None = ...,
    targeted: bool = ..., loss: str | LossFn = ..., bounds: Bounds = ..., scale: Param = ...,
    early_stop: bool = ..., logits: LogitsSelector = ..., amp: torch.dtype | None = ...,
    return_result: Literal[False] = ...,
) -> torch.Tensor: ...
@overload
def bim(
    model: Model, x: torch.Tensor, y: torch.Tensor, *, eps: Param, steps: int = ..., alpha: Param | None = ...,
    targeted: bool = ..., loss: str | LossFn = ..., bounds: Bounds = ..., scale: Param = ...,
    early_stop: bool = ..., logits: LogitsSelector = ..., amp: torch.dtype | None = ..., return_result: Literal[True],
) -> AttackResult: ...
def bim(
    model: Model,
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
    check_model(model)
    check_batch(x, y)
    steps = check_int(steps, "steps", 1)
    threat = ThreatModel.resolve(x, eps=eps, norm="linf", bounds=bounds, scale=scale, alpha=alpha,
                                 default_alpha=lambda e: e / steps)
    return run_pgd(
        model, x, y, threat, steps=steps, random_start=False, restarts=1, targeted=targeted, loss=loss,
        early_stop=early_stop, logits=logits, seed=None, generator=None, x_init=None, amp=amp, cuda_graph=False,
        return_result=return_result,
    )


@overload
def mifgsm(
    model: Model, x: torch.Tensor, y: torch.Tensor, *, eps: Param, steps: int = ..., alpha: Param | None = ...,
    decay: float = ..., random_start: bool = ..., targeted: bool = ..., loss: str | LossFn = ...,
    bounds: Bounds = ..., scale: Param = ..., early_stop: bool = ..., logits: LogitsSelector = ...,
    seed: int | None = ..., generator: torch.Generator | None = ..., amp: torch.dtype | None = ...,
    return_result: Literal[False] = ...,
) -> torch.Tensor: ...
@overload
def mifgsm(
    model: Model, x: torch.Tensor, y: torch.Tensor, *, eps: Param, steps: int = ..., alpha: Param | None = ...,
    decay: float = ..., random_start: bool = ..., targeted: bool = ..., loss: str | LossFn = ...,
    bounds: Bounds = ..., scale: Param = ..., early_stop: bool = ..., logits: LogitsSelector = ...,
    seed: int | None = ..., generator: torch.Generator | None = ..., amp: torch.dtype | None = ...,
    return_result: Literal[True],
) -> AttackResult: ...
def mifgsm(
    model: Model,
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
    early_stop: bool = False,
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
        early_stop: stop attacking a sample as soon as it is fooled, keeping that fooling point, as
            :func:`pgd` does (later steps run the model only on the samples not yet fooled).
        seed, generator: source of the random start (default: torch's global generator).

    Returns:
        The adversarial batch (same shape, dtype, memory format as ``x``), or an
        :class:`AttackResult` with ``return_result=True`` (``steps``: the steps each sample took, all
        of them without early stop; ``restart`` 0).

    Shape:
        x: ``[B, C, *]``; y: ``[B]``; eps, alpha: scalar or ``[B]``; bounds, scale: scalar or ``[C]``.
    """
    check_model(model)
    check_batch(x, y)
    steps = check_int(steps, "steps", 1)
    threat = ThreatModel.resolve(x, eps=eps, norm="linf", bounds=bounds, scale=scale, alpha=alpha,
                                 default_alpha=lambda e: e / steps)
    return _momentum_attack(
        model, x, y, threat, steps=steps, decay=decay, random_start=random_start, targeted=targeted, loss=loss,
        early_stop=early_stop, logits=logits, generator=resolve_generator(seed, generator), diversity=None,
        amp=amp, return_result=return_result,
    )


@overload
def difgsm(
    model: Model, x: torch.Tensor, y: torch.Tensor, *, eps: Param, steps: int = ..., alpha: Param | None = ...,
    decay: float = ..., resize_rate: float = ..., diversity_prob: float = ..., interpolation: str = ...,
    random_start: bool = ..., targeted: bool = ..., loss: str | LossFn = ..., bounds: Bounds = ...,
    scale: Param = ..., early_stop: bool = ..., logits: LogitsSelector = ..., seed: int | None = ...,
    generator: torch.Generator | None = ..., amp: torch.dtype | None = ..., return_result: Literal[False] = ...,
) -> torch.Tensor: ...
@overload
def difgsm(
    model: Model, x: torch.Tensor, y: torch.Tensor, *, eps: Param, steps: int = ..., alpha: Param | None = ...,
    decay: float = ..., resize_rate: float = ..., diversity_prob: float = ..., interpolation: str = ...,
    random_start: bool = ..., targeted: bool = ..., loss: str | LossFn = ..., bounds: Bounds = ...,
    scale: Param = ..., early_stop: bool = ..., logits: LogitsSelector = ..., seed: int | None = ...,
    generator: torch.Generator | None = ..., amp: torch.dtype | None = ..., return_result: Literal[True],
) -> AttackResult: ...
def difgsm(
    model: Model,
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
    early_stop: bool = False,
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
        early_stop: stop attacking a sample as soon as it is fooled, keeping that fooling point, as
            :func:`pgd` does. At a step whose input is transformed the gradient's forward pass sees
            the transformed input, so whether ``x'`` itself fools the model takes one more forward
            pass (without a gradient) on the samples still attacked.
        seed, generator: source of the random start and the transformations (default: torch's global
            generator, so ``torch.manual_seed`` makes attacks reproducible).

    Returns:
        The adversarial batch (same shape, dtype, memory format as ``x``), or an
        :class:`AttackResult` with ``return_result=True`` (success and loss of the untransformed
        ``x_adv``; ``steps``: the steps each sample took; ``restart`` 0).

    Shape:
        x: ``[B, C, W, W]``; y: ``[B]``; eps, alpha: scalar or ``[B]``; bounds, scale: scalar or ``[C]``.
    """
    check_model(model)
    check_batch(x, y)
    if x.dim() != 4 or x.shape[2] != x.shape[3]:
        raise ValueError(f"difgsm needs square images [B, C, W, W] for its resizing, got x of shape {tuple(x.shape)}")
    steps = check_int(steps, "steps", 1)
    threat = ThreatModel.resolve(x, eps=eps, norm="linf", bounds=bounds, scale=scale, alpha=alpha,
                                 default_alpha=lambda e: e / steps)
    resize_rate = check_real(resize_rate, "resize_rate", low=0.0, low_inclusive=False)
    smallest, padded = _resize_range(x.shape[-1], resize_rate)
    diversity_prob = check_real(diversity_prob, "diversity_prob", low=0.0, high=1.0)
    interpolation = check_choice(interpolation, "interpolation", _INTERPOLATIONS)
    generator = resolve_generator(seed, generator)
    diversity = _DiverseInputs(smallest, padded, diversity_prob, interpolation, generator)
    return _momentum_attack(
        model, x, y, threat, steps=steps, decay=decay, random_start=random_start, targeted=targeted, loss=loss,
        early_stop=early_stop, logits=logits, generator=generator, diversity=diversity, amp=amp,
        return_result=return_result,
    )


class _DiverseInputs:
    """DI-FGSM's random input transformation, one draw per step: resize to ``r x r`` with ``r`` in
    ``[smallest, padded)``, zero-pad at a random offset to ``padded x padded``, applied with
    probability ``prob``. Every draw takes ``r``, the top and the left padding and the coin, in that
    order, whether or not the coin applies the transformation (torchattacks' sampling)."""

    def __init__(self, smallest: int, padded: int, prob: float, interpolation: str,
                 generator: torch.Generator | None) -> None:
        self.smallest, self.padded, self.prob, self.interpolation = smallest, padded, prob, interpolation
        self.generator = generator
        self.device = generator.device if generator is not None else torch.device("cpu")

    def draw(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """This step's transformation, or ``None`` when the coin leaves the input as it is."""
        g, device, padded = self.generator, self.device, self.padded
        size = int(torch.randint(self.smallest, padded, (1,), generator=g, device=device))
        top = int(torch.randint(0, padded - size, (1,), generator=g, device=device))
        left = int(torch.randint(0, padded - size, (1,), generator=g, device=device))
        if not bool(torch.rand(1, generator=g, device=device) < self.prob):
            return None

        def transform(image: torch.Tensor) -> torch.Tensor:
            resized = F.interpolate(image, size=(size, size), mode=self.interpolation)
            return F.pad(resized, (left, padded - size - left, top, padded - size - top))

        return transform


def _momentum_attack(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    steps: int,
    decay: float,
    random_start: bool,
    targeted: bool,
    loss: str | LossFn,
    early_stop: bool,
    logits: LogitsSelector,
    generator: torch.Generator | None,
    diversity: _DiverseInputs | None,
    amp: torch.dtype | None,
    return_result: bool,
) -> torch.Tensor | AttackResult:
    """The MI-FGSM loop in ``threat``, with the gradient taken through a diverse-input transformation
    drawn at every step when ``diversity`` is given."""
    decay = check_real(decay, "decay", low=0.0)
    random_start = check_bool(random_start, "random_start")
    early_stop = check_bool(early_stop, "early_stop")
    return_result = check_bool(return_result, "return_result")
    loss_fn = resolve_loss(loss, targeted)
    logits = check_selector(logits)
    precision = resolve_amp(amp, x)
    x = x.detach()
    y = y.long()
    # Half-precision momentum would lose the small normalised terms whose sign decides the step.
    momentum = torch.zeros_like(x, dtype=opmath_dtype(x.dtype))
    taken = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    active = torch.ones(x.shape[0], dtype=torch.bool, device=x.device) if early_stop else None
    watch = FiniteWatch(x.device)

    with eval_mode(model):
        x_adv = x.clone()
        if random_start:
            threat.random_init_(x_adv, x, generator=generator)
        for step in range(steps):
            transform = diversity.draw() if diversity is not None else None
            if active is None:
                grad, _, _ = input_gradient(model, x_adv, y, loss_fn, logits, check=step == 0, transform=transform,
                                            precision=precision, watch=watch)
                _momentum_step_(x_adv, momentum, grad, x, threat, decay, rows=None, still=None)
                taken += 1
                continue
            # Early stop: only the samples not yet fooled are attacked (compacted to a smaller batch).
            rows = active.nonzero().squeeze(1)
            if rows.numel() == 0:
                break
            still: torch.Tensor | None = None
            if transform is not None:
                # The gradient's logits will be those of the transformed input: judge x' itself first.
                fooled = _fooled_at(model, x_adv[rows], y[rows], logits, targeted, precision, watch, check=step == 0)
                active[rows] = ~fooled
                rows = rows[~fooled]
                if rows.numel() == 0:
                    break
                grad, _, _ = input_gradient(model, x_adv[rows], y[rows], loss_fn, logits, transform=transform,
                                            precision=precision, watch=watch)
            else:
                grad, z, _ = input_gradient(model, x_adv[rows], y[rows], loss_fn, logits, check=step == 0,
                                            precision=precision, watch=watch)
                still = ~succeeded(z, y[rows], targeted)
                active[rows] = still
                if not bool(still.any()):
                    break
            _momentum_step_(x_adv, momentum, grad, x, threat, decay, rows=rows, still=still)
            taken[rows] += 1 if still is None else still
        watch.check()
        if not return_result:
            return x_adv
        success, value = outcome_at(model, x_adv, y, loss_fn, logits, targeted, precision)
    return AttackResult(x_adv, success, value, taken, torch.zeros_like(taken))


def _fooled_at(
    model: Model,
    x_adv: torch.Tensor,
    y: torch.Tensor,
    logits: LogitsSelector,
    targeted: bool,
    precision: Precision,
    watch: FiniteWatch,
    *,
    check: bool,
) -> torch.Tensor:
    """``[B]`` whether ``x_adv`` fools the model: one forward without a gradient."""
    with torch.no_grad(), precision.autocast():
        z = select_logits(model(x_adv), logits)
    if check:
        check_logits(z, y)
    watch.note(z)
    return succeeded(z, y, targeted)


def _momentum_step_(
    x_adv: torch.Tensor,
    momentum: torch.Tensor,
    grad: torch.Tensor,
    x: torch.Tensor,
    threat: ThreatModel,
    decay: float,
    *,
    rows: torch.Tensor | None,
    still: torch.Tensor | None,
) -> None:
    """``g <- decay * g + grad / mean|grad|`` and one sign step along ``g``, in place, on the samples
    ``rows`` (all when None) of which only ``still`` (all when None) move; ``grad`` holds those rows."""
    grad = grad.to(momentum.dtype)
    sample_dims = tuple(range(1, grad.dim()))
    # clamp_min: an all-zero gradient (saturated model) must add 0, not 0/0 = NaN.
    l1_mean = grad.abs().mean(dim=sample_dims, keepdim=True).clamp_min(torch.finfo(momentum.dtype).tiny)
    if rows is None:
        g = momentum.mul_(decay).add_(grad / l1_mean)
        target, centre, sub = x_adv, x, threat
    else:
        g = momentum[rows].mul_(decay).add_(grad / l1_mean)
        momentum[rows] = g
        target, centre, sub = x_adv[rows], x[rows], threat.rows(rows)
    # The op needs grad in x's dtype and only reads its sign: cast the sign, not the values, so that
    # no momentum entry underflows to zero in float16.
    direction = g if g.dtype == x_adv.dtype else g.sign().to(x_adv.dtype)
    sub.step_(target, direction, centre, active=still)
    if rows is not None:
        x_adv[rows] = target


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
