"""What every attack shares: argument validation, model handling, losses.

Every check raises a ``TypeError``/``ValueError`` that names the argument: attacks are called from
training loops where a silent clamp or a crash deep in a kernel costs hours.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

import torch
import torch.nn.functional as F

from .._params import Param, opmath_dtype
from .._validate import check_int, check_real  # noqa: F401  (re-exported for the attacks)

LogitsSelector = Union[None, int, str, Callable[[Any], torch.Tensor]]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Bounds = Union[None, tuple[Param, Param]]

_FLOAT_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def check_batch(x: torch.Tensor, y: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a tensor, got {type(x).__name__}")
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(
            f"x must be a floating-point tensor (float32/float64/bfloat16/float16), got {x.dtype}; "
            "convert images with x.float() / 255"
        )
    if x.dim() < 2:
        raise ValueError(f"x must be a batch [B, C, ...], got shape {tuple(x.shape)}")
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"y must be a tensor of class indices, got {type(y).__name__}")
    if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
        raise TypeError(f"y must hold integer class indices, got dtype {y.dtype}")
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"y must have shape [B] = [{x.shape[0]}] to match x, got {tuple(y.shape)}")
    if y.device != x.device:
        raise ValueError(f"y is on {y.device} but x is on {x.device}")


def per_sample(value: Param, x: torch.Tensor, name: str, *, positive: bool = False) -> torch.Tensor:
    """``value`` as a ``[B]`` tensor in the kernels' compute dtype, checked finite and >= 0 (> 0)."""
    if isinstance(value, (bool, str, bytes)) or not isinstance(value, (int, float, torch.Tensor, Sequence)):
        raise TypeError(f"{name} must be a number or a tensor of one value per sample, got {type(value).__name__}")
    t = torch.as_tensor(value, dtype=opmath_dtype(x.dtype), device=x.device).reshape(-1)
    if t.numel() not in (1, x.shape[0]):
        raise ValueError(f"{name} must be one value or one per sample ({x.shape[0]}), got {t.numel()} values")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite, got {t.tolist() if t.numel() < 8 else t}")
    bad = (t <= 0) if positive else (t < 0)
    if bool(bad.any()):
        what = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be {what}, got {t[bad][0].item():g}")
    return t.expand(x.shape[0]).contiguous()


def per_channel(value: Param, x: torch.Tensor, name: str) -> torch.Tensor:
    if isinstance(value, (bool, str, bytes)) or not isinstance(value, (int, float, torch.Tensor, Sequence)):
        raise TypeError(f"{name} must be a number or one value per channel, got {type(value).__name__}")
    t = torch.as_tensor(value, dtype=opmath_dtype(x.dtype), device=x.device).reshape(-1)
    if t.numel() not in (1, x.shape[1]):
        raise ValueError(f"{name} must be one value or one per channel ({x.shape[1]}), got {t.numel()} values")
    return t.expand(x.shape[1]).contiguous()


def scale_param(scale: Param, x: torch.Tensor) -> torch.Tensor:
    """Per-channel ``scale``, checked finite and > 0."""
    t = per_channel(scale, x, "scale")
    if not bool(((t > 0) & torch.isfinite(t)).all()):
        raise ValueError(f"scale must be > 0 and finite per channel, got {t.tolist()}")
    return t


def resolve_generator(seed: int | None, generator: torch.Generator | None) -> torch.Generator | None:
    """The generator an attack draws its randomness from: a fresh one seeded with ``seed``, the one
    given, or None (torch's global generator)."""
    if seed is not None and generator is not None:
        raise ValueError("pass either seed or generator, not both")
    if seed is not None:
        return torch.Generator().manual_seed(int(seed))
    return generator


def parse_bounds(bounds: Bounds, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``(lo, hi)``; checks lo <= hi and that x lies inside them."""
    if bounds is None:
        inf = math.inf
        return per_channel(-inf, x, "bounds"), per_channel(inf, x, "bounds")
    if not isinstance(bounds, Sequence) or isinstance(bounds, str) or len(bounds) != 2:
        raise TypeError("bounds must be None or a pair (lo, hi) of numbers or per-channel tensors")
    lo, hi = per_channel(bounds[0], x, "bounds[0]"), per_channel(bounds[1], x, "bounds[1]")
    if bool(torch.isnan(lo).any() or torch.isnan(hi).any()):
        raise ValueError(f"bounds must not be NaN, got lo={lo.tolist()} hi={hi.tolist()}")
    if bool((lo > hi).any()):
        raise ValueError(f"bounds must have lo <= hi per channel, got lo={lo.tolist()} hi={hi.tolist()}")
    shape = (1, x.shape[1]) + (1,) * (x.dim() - 2)
    below = x < lo.reshape(shape).to(x.dtype)
    above = x > hi.reshape(shape).to(x.dtype)
    if bool(below.any()) or bool(above.any()):
        raise ValueError(
            f"x has values outside bounds (lo={lo.tolist()}, hi={hi.tolist()}): min {x.min().item():g}, "
            f"max {x.max().item():g}. Pass the bounds of your input space (e.g. per-channel bounds "
            "for normalised inputs) or bounds=None"
        )
    return lo, hi




# A float16 loss is multiplied by this before the backward pass so small input gradients do not
# flush to zero; the gradient is divided by it again before any attack uses it.
FLOAT16_LOSS_SCALE = 2.0**12


@dataclass(frozen=True)
class Precision:
    """How an attack runs the model: under ``torch.autocast`` in ``dtype`` (``None``: as it is), with
    the loss multiplied by ``loss_scale`` before each backward pass. The attack's own state, the
    gradient it uses and its steps stay in the input's dtype."""

    device_type: str
    dtype: torch.dtype | None = None
    loss_scale: float = 1.0

    def autocast(self, *, cache_enabled: bool = True) -> contextlib.AbstractContextManager[Any]:
        """The forward pass's context. ``cache_enabled=False`` while a CUDA graph is captured: the
        autocast weight cache must not outlive the capture."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype, cache_enabled=cache_enabled)


def resolve_amp(amp: torch.dtype | None, x: torch.Tensor) -> Precision:
    """The :class:`Precision` for an attack's ``amp`` argument."""
    if amp is None:
        return Precision(x.device.type)
    if amp not in (torch.bfloat16, torch.float16):
        raise ValueError(f"amp must be None, torch.bfloat16 or torch.float16, got {amp!r}")
    if amp == torch.float16 and x.device.type == "cpu":
        warnings.warn(
            "amp=torch.float16 on CPU is emulated and much slower than float32; use torch.bfloat16 on CPU",
            stacklevel=3,
        )
    return Precision(x.device.type, amp, FLOAT16_LOSS_SCALE if amp == torch.float16 else 1.0)


def scaled_input_gradient(value: torch.Tensor, x_req: torch.Tensor, precision: Precision | None) -> torch.Tensor:
    """``d sum(value) / d x_req`` through the loss scale of ``precision``, returned unscaled."""
    scale = 1.0 if precision is None else precision.loss_scale
    (grad,) = torch.autograd.grad(value.sum() * scale if scale != 1.0 else value.sum(), x_req)
    return grad.div_(scale) if scale != 1.0 else grad


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode for the attack; every submodule's own training flag is restored afterwards (a model
    with frozen, eval-mode BatchNorm inside a training model stays that way)."""
    flags = [(m, m.training) for m in model.modules()] if isinstance(model, torch.nn.Module) else []
    if isinstance(model, torch.nn.Module):
        model.eval()
    try:
        yield
    finally:
        for m, was_training in flags:
            m.training = was_training


def select_logits(output: Any, selector: LogitsSelector) -> torch.Tensor:
    """The logits tensor out of a model's output (a tensor, tuple/list or dict)."""
    if selector is None:
        if isinstance(output, torch.Tensor):
            return output
        raise TypeError(
            f"the model returned a {type(output).__name__}, not a tensor: pass logits=<index>, "
            "logits='<key>' or logits=<callable> to say where the logits are"
        )
    if callable(selector):
        out = selector(output)
    elif isinstance(selector, int) and isinstance(output, (tuple, list)):
        out = output[selector]
    elif isinstance(selector, str) and isinstance(output, Mapping):
        out = output[selector]
    else:
        raise TypeError(f"logits={selector!r} cannot select from a model output of type {type(output).__name__}")
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"logits={selector!r} selected a {type(out).__name__}, not a tensor")
    return out


def check_logits(logits: torch.Tensor, y: torch.Tensor) -> None:
    if logits.dim() != 2 or logits.shape[0] != y.shape[0]:
        raise ValueError(f"the model's logits must be [B, num_classes] with B={y.shape[0]}, got {tuple(logits.shape)}")
    num_classes = logits.shape[1]
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"labels y must be in [0, {num_classes}) for a {num_classes}-class model, "
                         f"got min {int(y.min())}, max {int(y.max())}")


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``z_y - max_{j != y} z_j`` per sample."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), -math.inf)
    return true - others.amax(dim=1)


def _upcast(z: torch.Tensor) -> torch.Tensor:
    """Half/bfloat16 logits to float32 for the loss; float32/float64 stay as they are."""
    return z if z.dtype in (torch.float32, torch.float64) else z.float()


def resolve_loss(loss: str | LossFn, targeted: bool) -> LossFn:
    """The per-sample loss the attack *maximises*.

    ``"ce"``: cross-entropy to y (untargeted) or minus cross-entropy to the target y (targeted).
    ``"cw"``: Carlini-Wagner margin, ``max_{j != y} z_j - z_y`` (untargeted) or ``z_t - max_{j != t} z_j``
    (targeted), unclipped. A callable ``loss(logits, y) -> [B]`` is used as given (maximised).
    """
    if callable(loss):
        return loss
    if loss == "ce":
        if targeted:
            return lambda z, y: -F.cross_entropy(_upcast(z), y, reduction="none")
        return lambda z, y: F.cross_entropy(_upcast(z), y, reduction="none")
    if loss == "cw":
        if targeted:
            return lambda z, y: margin(_upcast(z), y)
        return lambda z, y: -margin(_upcast(z), y)
    raise ValueError(f"loss must be 'ce', 'cw' or a callable (logits, y) -> per-sample loss, got {loss!r}")


def per_sample_loss(loss_fn: LossFn, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    value = loss_fn(logits, y)
    if not isinstance(value, torch.Tensor) or value.shape != (y.shape[0],):
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(f"loss must return one value per sample, shape [{y.shape[0]}], got {shape}")
    return value


def succeeded(logits: torch.Tensor, y: torch.Tensor, targeted: bool) -> torch.Tensor:
    pred = logits.argmax(dim=1)
    return pred == y if targeted else pred != y


@dataclass
class AttackResult:
    """What an attack found, per sample.

    Attributes:
        x_adv: the adversarial batch, same shape, dtype and memory format as x.
        success: ``[B]`` bool: misclassified (untargeted) or classified as the target (targeted).
        loss: ``[B]`` the attack loss at ``x_adv`` (the quantity maximised).
        steps: ``[B]`` gradient steps taken for the kept restart (fewer than ``steps`` with early stop).
        restart: ``[B]`` index of the restart whose result was kept.
    """

    x_adv: torch.Tensor
    success: torch.Tensor
    loss: torch.Tensor
    steps: torch.Tensor
    restart: torch.Tensor


def outcome_at(
    model: Callable[[torch.Tensor], Any],
    x_adv: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn,
    logits: LogitsSelector,
    targeted: bool,
    precision: Precision | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(success, loss)`` per sample at ``x_adv``: one forward without autograd (under the attack's
    autocast, so that success means success in the precision the attack ran the model in)."""
    with torch.no_grad(), (precision.autocast() if precision is not None else contextlib.nullcontext()):
        z = select_logits(model(x_adv), logits)
        return succeeded(z, y, targeted), per_sample_loss(loss_fn, z, y).detach()


def input_gradient(
    model: Callable[[torch.Tensor], Any],
    x_adv: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn,
    logits: LogitsSelector = None,
    *,
    check: bool = False,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    precision: Precision | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradient of ``sum(loss_fn(model(transform(x_adv)), y))`` with respect to ``x_adv`` only.

    Only the input gets a gradient (``torch.autograd.grad``): parameter ``.grad`` is never written.
    ``transform`` is applied inside the graph (e.g. diverse-input resizing). ``check`` validates the
    logits' shape and the label range (do it on an attack's first forward). ``precision`` runs the
    forward under the attack's autocast; the gradient is returned unscaled, in ``x_adv``'s dtype.

    Returns:
        ``(grad, logits, loss)``: grad shaped like ``x_adv``, detached ``[B, K]`` logits and ``[B]`` loss.
        With ``transform``, logits and loss are those of ``transform(x_adv)``, not of ``x_adv``.
    """
    x_req = x_adv.detach().requires_grad_(True)
    autocast = precision.autocast() if precision is not None else contextlib.nullcontext()
    with torch.enable_grad():
        with autocast:
            z = select_logits(model(x_req if transform is None else transform(x_req)), logits)
        if check:
            check_logits(z, y)
        value = per_sample_loss(loss_fn, z, y)
        grad = scaled_input_gradient(value, x_req, precision)
    return grad, z.detach(), value.detach()


def keep_better(best: AttackResult, new: AttackResult) -> AttackResult:
    """Per sample, the more successful result (success first, then the higher loss)."""
    better = (new.success & ~best.success) | ((new.success == best.success) & (new.loss > best.loss))
    mask = better.reshape((-1,) + (1,) * (best.x_adv.dim() - 1))
    return AttackResult(
        x_adv=torch.where(mask, new.x_adv, best.x_adv),
        success=torch.where(better, new.success, best.success),
        loss=torch.where(better, new.loss, best.loss),
        steps=torch.where(better, new.steps, best.steps),
        restart=torch.where(better, new.restart, best.restart),
    )
