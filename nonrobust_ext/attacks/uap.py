"""Universal adversarial perturbations (Moosavi-Dezfooli et al., CVPR 2017): one image-agnostic
perturbation, added to every input, that changes the model's prediction on most of them.

The seed paper crafts them on the ImageNet-pretrained model and asks whether they still fool the models
fine-tuned from it (its "preference" analysis: do the pretrained model's non-robust directions survive
fine-tuning?). Here a UAP is found by stochastic sign-gradient ascent on the perturbation itself (the
SGD formulation of Shafahi et al., AAAI 2020, instead of the original's per-image DeepFool loop): each
mini-batch's cross-entropy, taken against the model's own clean predictions on the inputs it does not
fool yet, is ascended through one shared perturbation, projected back onto the eps-ball by the same
fused step op the per-sample attacks use.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, overload

import torch
import torch.nn.functional as F

from .._progress import progress_bar
from .._validate import (
    check_bool,
    check_choice,
    check_images,
    check_int,
    check_nonempty,
    check_optional_real,
    check_real,
)
from ._common import LogitsSelector, Model, check_finite_logits, check_model, check_selector, eval_mode, select_logits
from .threat import Bounds, ThreatModel


@dataclasses.dataclass
class UAPResult:
    """A universal perturbation and how often it fools the model it was crafted on.

    Attributes:
        perturbation: ``x.shape[1:]``: the perturbation (added to every input, the sum clipped to the
            bounds); of the epoch with the highest fooling rate.
        fooling_rate: the share of the crafting inputs whose predicted class it changes.
        history: the fooling rate after each epoch, over all the crafting inputs.
        settings: what was run (eps, norm, epochs, batch size, step size, seed, number of inputs).
    """

    perturbation: torch.Tensor
    fooling_rate: float
    history: list[float]
    settings: dict[str, Any]


@overload
def uap(model: Model, data: Any, *, eps: float, norm: str = ..., epochs: int = ..., batch_size: int = ...,
        alpha: float | None = ..., seed: int = ..., bounds: Bounds = ..., logits: LogitsSelector = ...,
        progress: bool = ..., return_result: Literal[False] = ...) -> torch.Tensor: ...
@overload
def uap(model: Model, data: Any, *, eps: float, norm: str = ..., epochs: int = ..., batch_size: int = ...,
        alpha: float | None = ..., seed: int = ..., bounds: Bounds = ..., logits: LogitsSelector = ...,
        progress: bool = ..., return_result: Literal[True]) -> UAPResult: ...
def uap(
    model: Model,
    data: Any,
    *,
    eps: float,
    norm: str = "linf",
    epochs: int = 5,
    batch_size: int = 128,
    alpha: float | None = None,
    seed: int = 0,
    bounds: Bounds = (0.0, 1.0),
    logits: LogitsSelector = None,
    progress: bool = False,
    return_result: bool = False,
) -> torch.Tensor | UAPResult:
    """A universal adversarial perturbation of radius ``eps`` for ``model`` on the inputs ``data``.

    Starting from zero, each epoch visits the inputs in a seeded random order, in mini-batches; on each
    one the perturbation ``v`` takes one step of size ``alpha`` up the gradient (its sign for L-inf,
    its direction for L2) of ``sum_i CE(f(clip(x_i + v)), p_i)`` over the inputs the current ``v`` does
    not fool yet (``p_i`` the model's clean prediction: a UAP is about changing predictions, no label
    is needed), and is projected back onto the ball. After every epoch the fooling rate over all the
    inputs is measured; the perturbation of the best epoch is returned.

    The model runs in eval mode and every submodule's mode is restored; parameter ``.grad`` is never
    written; ``data`` is never modified.

    Args:
        model: the classifier (a callable returning logits, or a tuple/dict holding them: ``logits``).
        data: the inputs: a tensor ``[N, C, ...]``, a ``(x, y)`` pair or a
            :class:`~nonrobust_ext.data.TensorData` (labels are not used).
        eps: the radius (> 0, a number: one perturbation for all inputs).
        norm: ``"linf"`` or ``"l2"``.
        epochs: passes over the data (>= 1).
        batch_size: inputs per step (>= 1).
        alpha: step size (> 0); default ``max(eps / 10, 2.5 * eps / steps)`` with ``steps`` the run's
            total (``epochs`` times the mini-batches per epoch): a short run still reaches the ball's surface.
        seed: seed of the visiting order.
        bounds: ``(lo, hi)`` of the input space (``x + v`` is clipped to it), or ``None``.
        logits: where the logits are in the model's output.
        progress: a progress bar over the steps.
        return_result: return a :class:`UAPResult` (fooling rate, per-epoch history) instead of the
            perturbation.

    Returns:
        The perturbation ``[C, ...]``, or a :class:`UAPResult`.

    Raises:
        TypeError, ValueError: a bad argument, named in the message (eps <= 0, NaN or not a number; an
            unknown norm; no inputs; NaN or infinite inputs; inputs outside ``bounds``...).
    """
    check_model(model)
    x = _inputs(data)
    eps = check_real(eps, "eps", low=0.0, low_inclusive=False)
    norm = check_choice(norm, "norm", ("linf", "l2"))
    epochs = check_int(epochs, "epochs", 1)
    batch_size = check_int(batch_size, "batch_size", 1)
    alpha = check_optional_real(alpha, "alpha", low=0.0, low_inclusive=False)
    steps_per_epoch = -(-len(x) // batch_size)
    # Default: a tenth of the radius, or larger where the run is short, so that its steps add up to at
    # least 2.5 radii (a short run still reaches the ball's surface, as PGD's 2.5 * eps / steps does).
    step = max(eps / 10, 2.5 * eps / (epochs * steps_per_epoch)) if alpha is None else alpha
    seed = check_int(seed, "seed", 0, 2**63 - 1)
    logits = check_selector(logits)
    progress = check_bool(progress, "progress")
    return_result = check_bool(return_result, "return_result")
    inputs = ThreatModel.resolve(x, eps=eps, norm=norm, bounds=bounds)  # checks x against the bounds
    # The perturbation as a batch of one around 0, unbounded: the fused step op ascends and projects it.
    zero = torch.zeros((1,) + tuple(x.shape[1:]), dtype=inputs.scale.dtype, device=x.device)
    ball = ThreatModel.resolve(zero, eps=eps, norm=norm, bounds=None)
    generator = torch.Generator().manual_seed(seed)

    with eval_mode(model):
        clean = _predictions(model, x, logits, batch_size)
        v = zero.clone()
        best, best_rate, history = v.clone(), -1.0, []
        bar = progress_bar(description="UAP", enabled=progress, total=epochs * steps_per_epoch, unit="step")
        for _ in range(epochs):
            order = torch.randperm(len(x), generator=generator).to(x.device)
            for start in range(0, len(x), batch_size):
                rows = order[start:start + batch_size]
                grad = _ascent_direction(model, x[rows], clean[rows], v, inputs, logits)
                if grad is not None:
                    ball.step_(v, grad, zero, alpha=step)
                bar.update(1)
            rate = _fooling_rate(model, x, clean, v[0], inputs, logits, batch_size)
            history.append(rate)
            if rate > best_rate:
                best, best_rate = v.clone(), rate
        bar.close()

    perturbation = best[0].to(x.dtype)
    if not return_result:
        return perturbation
    return UAPResult(perturbation=perturbation, fooling_rate=best_rate, history=history,
                     settings={"eps": eps, "norm": norm, "epochs": epochs, "batch_size": batch_size, "alpha": step,
                               "seed": seed, "inputs": len(x)})


def fooling_rate(model: Model, data: Any, perturbation: torch.Tensor, *, bounds: Bounds = (0.0, 1.0),
                 batch_size: int = 256, logits: LogitsSelector = None) -> float:
    """The share of the inputs whose predicted class ``perturbation`` changes: ``argmax f(clip(x + v))
    != argmax f(x)``, for any model (a UAP crafted on one model, measured on another).

    Args:
        model: the classifier.
        data: the inputs, as for :func:`uap`.
        perturbation: ``x.shape[1:]``, finite.
        bounds: the input space (``x + v`` is clipped to it), or ``None``.
        batch_size: inputs per forward pass (>= 1).
        logits: where the logits are in the model's output.

    Raises:
        TypeError, ValueError: a bad argument, named in the message (a perturbation of another shape or
            with NaN values, no inputs...).
    """
    check_model(model)
    x = _inputs(data)
    v = check_images(perturbation, "perturbation", min_dim=1)
    if tuple(v.shape) != tuple(x.shape[1:]):
        raise ValueError(f"perturbation must have the inputs' shape {tuple(x.shape[1:])}, got {tuple(v.shape)}")
    batch_size = check_int(batch_size, "batch_size", 1)
    logits = check_selector(logits)
    inputs = ThreatModel.input_space(x, bounds=bounds)
    with eval_mode(model):
        clean = _predictions(model, x, logits, batch_size)
        return _fooling_rate(model, x, clean, v.to(x.device), inputs, logits, batch_size)


# ------------------------------------------------------------------------------------------ helpers


def _inputs(data: Any) -> torch.Tensor:
    """The input tensor of ``data`` (a tensor, an ``(x, y)`` pair or anything with ``.x``), checked."""
    if isinstance(data, (tuple, list)) and len(data) == 2:
        data = data[0]
    elif not isinstance(data, torch.Tensor) and hasattr(data, "x"):
        data = data.x
    if not isinstance(data, torch.Tensor):
        raise TypeError(f"data must be a tensor of inputs, an (x, y) pair or a TensorData, got {type(data).__name__}")
    x = check_images(data, "data")
    check_nonempty(len(x), "data", "inputs")
    return x.detach()


def _predictions(model: Model, x: torch.Tensor, logits: LogitsSelector, batch_size: int,
                 perturbation: torch.Tensor | None = None, inputs: ThreatModel | None = None) -> torch.Tensor:
    """``[N]`` the model's predicted classes at ``x`` (plus ``perturbation``, clipped), batch by batch."""
    out = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            xb = x[start:start + batch_size]
            if perturbation is not None and inputs is not None:
                xb = inputs.clip(xb + perturbation.to(xb.dtype))
            out.append(check_finite_logits(select_logits(model(xb), logits)).argmax(dim=1))
    return torch.cat(out)


def _fooling_rate(model: Model, x: torch.Tensor, clean: torch.Tensor, v: torch.Tensor, inputs: ThreatModel,
                  logits: LogitsSelector, batch_size: int) -> float:
    return float((_predictions(model, x, logits, batch_size, v, inputs) != clean).float().mean())


def _ascent_direction(model: Model, x: torch.Tensor, clean: torch.Tensor, v: torch.Tensor, inputs: ThreatModel,
                      logits: LogitsSelector) -> torch.Tensor | None:
    """The gradient, with respect to ``v`` ``[1, C, ...]``, of the cross-entropy against the clean
    predictions summed over the inputs ``v`` does not fool yet; ``None`` when it fools them all."""
    v_req = v.detach().requires_grad_(True)
    with torch.enable_grad():
        z = check_finite_logits(select_logits(model(inputs.clip(x + v_req.to(x.dtype))), logits))
        not_fooled = z.detach().argmax(dim=1) == clean
        if not bool(not_fooled.any()):
            return None
        loss = (F.cross_entropy(z.float(), clean, reduction="none") * not_fooled).sum()
        (grad,) = torch.autograd.grad(loss, v_req)
    return grad


__all__ = ["UAPResult", "fooling_rate", "uap"]
