"""What every attack shares: argument validation, model handling, losses, the result type.

Every check raises a ``TypeError``/``ValueError`` that names the argument: attacks are called from
training loops where a silent clamp or a crash deep in a kernel costs hours. The threat model (eps,
norm, bounds, scale, step size) is resolved in :mod:`.threat`.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any, Union

import torch
import torch.nn.functional as F

from .. import _validate
from .._validate import check_bool, check_finite, check_images, check_int  # noqa: F401  (check_images: re-exported for the attacks)

Model = Callable[[torch.Tensor], Any]
LogitsSelector = Union[None, int, str, Callable[[Any], torch.Tensor]]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]



def check_labels(y: object, x: torch.Tensor, name: str = "y") -> torch.Tensor:
    """``[B]`` integer class indices on ``x``'s device (their range is checked against the model's
    classes at the first forward, :func:`check_logits`)."""
    return _validate.check_labels(y, name, n=x.shape[0], device=x.device)


def check_batch(x: torch.Tensor, y: torch.Tensor) -> None:
    """``x`` a finite floating-point batch (:func:`check_images`), ``y`` its labels (:func:`check_labels`)."""
    check_images(x)
    check_labels(y, x)


def check_start(x_init: object, x: torch.Tensor) -> torch.Tensor | None:
    """``None``, or a finite starting point shaped like ``x`` on its device.

    Raises:
        TypeError: not a tensor, or not floating point.
        ValueError: another shape or device, or a NaN/infinite value.
    """
    if x_init is None:
        return None
    if not isinstance(x_init, torch.Tensor):
        raise TypeError(f"x_init must be a tensor shaped like x, got {type(x_init).__name__}")
    if x_init.shape != x.shape:
        raise ValueError(f"x_init must be a tensor shaped like x {tuple(x.shape)}, got {tuple(x_init.shape)}")
    if not x_init.is_floating_point():
        raise TypeError(f"x_init must be a floating-point tensor, got {x_init.dtype}")
    if x_init.device != x.device:
        raise ValueError(f"x_init is on {x_init.device} but x is on {x.device}")
    return check_finite(x_init, "x_init")


def check_model(model: object, name: str = "model") -> None:
    """A callable (usually an ``nn.Module``)."""
    if not callable(model):
        raise TypeError(f"{name} must be callable (an nn.Module or a function of a batch), got {type(model).__name__}")


def check_selector(logits: object) -> LogitsSelector:
    """``None``, an index, a key or a callable."""
    if logits is None or callable(logits) or isinstance(logits, str) or (
            isinstance(logits, int) and not isinstance(logits, bool)):
        return logits  # type: ignore[return-value]
    raise TypeError(f"logits must be None, an index, a key or a callable, got {type(logits).__name__} {logits!r}")


def resolve_generator(seed: int | None, generator: torch.Generator | None) -> torch.Generator | None:
    """The generator an attack draws its randomness from: a fresh one seeded with ``seed``, the one
    given, or None (torch's global generator).

    Raises:
        TypeError: ``seed`` is not an int, or ``generator`` not a ``torch.Generator``.
        ValueError: both are given, or ``seed`` is outside ``[-2**63, 2**64 - 1]``.
    """
    if seed is not None:
        # The range torch.Generator.manual_seed takes (a negative seed wraps around).
        seed = check_int(seed, "seed", -(2**63), 2**64 - 1)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if seed is not None and generator is not None:
        raise ValueError("pass either seed or generator, not both")
    if seed is not None:
        return torch.Generator().manual_seed(seed)
    return generator


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
    if not isinstance(amp, torch.dtype):
        raise TypeError(f"amp must be None, torch.bfloat16 or torch.float16, got {type(amp).__name__} {amp!r}")
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
def eval_mode(model: object) -> Iterator[None]:
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
    """The logits are ``[B, num_classes]`` and every label names one of the classes."""
    if logits.dim() != 2 or logits.shape[0] != y.shape[0]:
        raise ValueError(f"the model's logits must be [B, num_classes] with B={y.shape[0]}, got {tuple(logits.shape)}")
    num_classes = logits.shape[1]
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"labels y must be in [0, {num_classes}) for a {num_classes}-class model, "
                         f"got min {int(y.min())}, max {int(y.max())}")


NONFINITE_LOGITS = (
    "the model's output holds NaN or infinite logits: no class can be read from them, so no sample can be "
    "called fooled or robust. Check the model (a float16 forward overflows above 65504) and its input"
)
NONFINITE_LOSS = (
    "loss returned NaN or infinite values for finite logits: the attack has no gradient to follow; "
    "check the loss function"
)


def check_finite_logits(logits: torch.Tensor) -> torch.Tensor:
    """``logits``, refused (``ValueError``) when any is NaN or infinite: a NaN logit's argmax is no
    prediction, and counting it as "fooled" would report an attack's success that never happened."""
    if logits.numel() and not bool(torch.isfinite(logits).all()):
        raise ValueError(NONFINITE_LOGITS)
    return logits


class FiniteWatch:
    """Whether any logits (or loss) an attack saw were NaN or infinite, collected on the device
    without a host synchronisation (so a CUDA graph can capture it and the eager loop does not stall)
    and raised on by :meth:`check` before the attack returns anything."""

    def __init__(self, device: torch.device, message: str = NONFINITE_LOGITS) -> None:
        self.message = message
        # The first problem seen, as a code: 0 none, 1 non-finite logits, 2 a non-finite loss at finite
        # logits. The first one is the cause: a NaN loss becomes a NaN gradient, the step carries it into
        # the iterate (the ops propagate NaN), and the next logits are NaN only because of it.
        self.first = torch.zeros((), dtype=torch.uint8, device=device)

    def note(self, logits: torch.Tensor, loss: torch.Tensor | None = None) -> None:
        """Record whether ``logits`` (and ``loss``) hold a non-finite value, unless a problem is
        already recorded."""
        code = torch.where(~torch.isfinite(logits.detach()).all(), 1, 0).to(torch.uint8)
        if loss is not None:
            bad_loss = ~torch.isfinite(loss.detach()).all()
            code = torch.where((code == 0) & bad_loss, 2, code).to(torch.uint8)
        torch.where(self.first == 0, code, self.first, out=self.first)

    def check(self) -> None:
        """Raise ``ValueError`` for the first non-finite value recorded (one host synchronisation)."""
        first = int(self.first)
        if first == 1:
            raise ValueError(self.message)
        if first == 2:
            raise ValueError(NONFINITE_LOSS)


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``z_y - max_{j != y} z_j`` per sample."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), -math.inf)
    return true - others.amax(dim=1)


def _upcast(z: torch.Tensor) -> torch.Tensor:
    """Half/bfloat16 logits to float32 for the loss; float32/float64 stay as they are."""
    return z if z.dtype in (torch.float32, torch.float64) else z.float()


def resolve_loss(loss: str | LossFn, targeted: bool, *, extra: tuple[str, ...] = ()) -> LossFn:
    """The per-sample loss the attack *maximises*.

    ``"ce"``: cross-entropy to y (untargeted) or minus cross-entropy to the target y (targeted).
    ``"cw"``: Carlini-Wagner margin, ``max_{j != y} z_j - z_y`` (untargeted) or ``z_t - max_{j != t} z_j``
    (targeted), unclipped. A callable ``loss(logits, y) -> [B]`` is used as given (maximised).
    ``extra`` names further string losses the caller resolves itself (only for the message).

    Raises:
        TypeError: ``loss`` is neither a string nor a callable; ``targeted`` is not a bool.
        ValueError: an unknown loss name.
    """
    targeted = check_bool(targeted, "targeted")
    names = ", ".join(repr(n) for n in ("ce", *extra, "cw"))
    if callable(loss):
        return loss
    if not isinstance(loss, str):
        raise TypeError(f"loss must be {names} or a callable (logits, y) -> per-sample loss, "
                        f"got {type(loss).__name__}")
    if loss == "ce":
        if targeted:
            return lambda z, y: -F.cross_entropy(_upcast(z), y, reduction="none")
        return lambda z, y: F.cross_entropy(_upcast(z), y, reduction="none")
    if loss == "cw":
        if targeted:
            return lambda z, y: margin(_upcast(z), y)
        return lambda z, y: -margin(_upcast(z), y)
    raise ValueError(f"loss must be {names} or a callable (logits, y) -> per-sample loss, got {loss!r}")


def per_sample_loss(loss_fn: LossFn, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``loss_fn(logits, y)``, checked to be one value per sample."""
    value = loss_fn(logits, y)
    if not isinstance(value, torch.Tensor) or value.shape != (y.shape[0],):
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(f"loss must return one value per sample, shape [{y.shape[0]}], got {shape}")
    return value


def clean_logits(model: Model, x: torch.Tensor, y: torch.Tensor, logits: LogitsSelector,
                 precision: Precision | None = None, *, min_classes: int = 1, who: str = "") -> torch.Tensor:
    """The model's finite logits at the clean ``x`` (no autograd, under ``precision``'s autocast),
    checked against ``y`` (:func:`check_logits`); ``min_classes``: the fewest classes ``who`` (the
    message's subject) can work with (``ValueError`` otherwise)."""
    with torch.no_grad(), (precision.autocast() if precision is not None else contextlib.nullcontext()):
        z = check_finite_logits(select_logits(model(x), logits))
    check_logits(z, y)
    if z.shape[1] < min_classes:
        raise ValueError(f"{who} needs a model with at least {min_classes} classes, the model has {z.shape[1]}")
    return z


def ranked_targets(clean: torch.Tensor, y: torch.Tensor, count: int) -> torch.Tensor:
    """``[B, count]``: per sample, the ``count`` classes with the highest clean logits other than ``y``,
    most likely first (the targets of AutoAttack's targeted stages)."""
    ranked = clean.float().masked_fill(F.one_hot(y, clean.shape[1]).bool(), -math.inf)
    return ranked.argsort(dim=1, descending=True, stable=True)[:, :count]


def target_rows(targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The (sample, target) pairs of ``targets`` ``[B, T]`` as rows of one batch, target-major (row
    ``t * B + i`` is sample ``i`` towards ``targets[i, t]``): ``(sample index, target)`` per row, so that
    ``reshape(T, B)`` of any per-row result lines the targets of a sample up in one column."""
    batch, per_sample = targets.shape
    return torch.arange(batch, device=targets.device).repeat(per_sample), targets.t().reshape(-1)


def succeeded(logits: torch.Tensor, y: torch.Tensor, targeted: bool) -> torch.Tensor:
    """``[B]`` bool: misclassified (untargeted) or classified as ``y`` (targeted). The logits must be
    finite (checked by the caller: :func:`check_finite_logits` or a :class:`FiniteWatch`)."""
    pred = logits.argmax(dim=1)
    return pred == y if targeted else pred != y


@dataclass
class AttackResult:
    """What an attack found, per sample; the base of every attack's richer result
    (``return_result=True``).

    Attributes:
        x_adv: the adversarial batch, same shape, dtype and memory format as x.
        success: ``[B]`` bool: the model misclassifies ``x_adv`` (untargeted) or classifies it as the
            target (targeted).
        loss: ``[B]`` the attack loss at ``x_adv``: the quantity a fixed-radius attack maximises; for
            the minimal-norm attacks the margin ``max_{j != y} z_j - z_y`` (untargeted) or
            ``z_t - max_{j != t} z_j`` (targeted), positive where ``x_adv`` fools the model.
        steps: ``[B]`` steps taken to reach ``x_adv`` (fewer than the budget with early stop).
        restart: ``[B]`` index of the run whose result was kept (a restart; for ``cw_l2`` the search
            step of the constant ``c``).
    """

    x_adv: torch.Tensor
    success: torch.Tensor
    loss: torch.Tensor
    steps: torch.Tensor
    restart: torch.Tensor

    def rows(self, index: torch.Tensor) -> AttackResult:
        """The samples ``index`` of this result (same class, every per-sample field indexed)."""
        return type(self)(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def put_rows_(self, index: torch.Tensor, other: AttackResult) -> None:
        """Write ``other``'s samples into the rows ``index`` of this result, in place."""
        for f in fields(self):
            getattr(self, f.name)[index] = getattr(other, f.name)


def outcome_at(
    model: Model,
    x_adv: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn,
    logits: LogitsSelector,
    targeted: bool,
    precision: Precision | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(success, loss)`` per sample at ``x_adv``: one forward without autograd (under the attack's
    autocast, so that success means success in the precision the attack ran the model in). The
    logits are checked finite here (a ``ValueError`` otherwise): this is the result's verdict."""
    with torch.no_grad(), (precision.autocast() if precision is not None else contextlib.nullcontext()):
        z = check_finite_logits(select_logits(model(x_adv), logits))
        value = per_sample_loss(loss_fn, z, y).detach()
    if value.numel() and not bool(torch.isfinite(value).all()):
        raise ValueError(NONFINITE_LOSS)
    return succeeded(z, y, targeted), value


def input_gradient(
    model: Model,
    x_adv: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn,
    logits: LogitsSelector = None,
    *,
    check: bool = False,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    precision: Precision | None = None,
    watch: FiniteWatch | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradient of ``sum(loss_fn(model(transform(x_adv)), y))`` with respect to ``x_adv`` only.

    Only the input gets a gradient (``torch.autograd.grad``): parameter ``.grad`` is never written.
    ``transform`` is applied inside the graph (e.g. diverse-input resizing). ``check`` validates the
    logits' shape and the label range (do it on an attack's first forward). ``precision`` runs the
    forward under the attack's autocast; the gradient is returned unscaled, in ``x_adv``'s dtype.
    ``watch`` records non-finite logits or losses (see :class:`FiniteWatch`).

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
        if watch is not None:
            watch.note(z, value)
        grad = scaled_input_gradient(value, x_req, precision)
    return grad, z.detach(), value.detach()


def keep_better(best: AttackResult, new: AttackResult) -> AttackResult:
    """Per sample, the more successful result (success first, then the higher loss; ``best`` wins a
    tie). Every field is taken from the same result, whatever the subclass (a targeted run's target
    comes with its point)."""
    better = (new.success & ~best.success) | ((new.success == best.success) & (new.loss > best.loss))
    return type(best)(**{
        f.name: torch.where(better.reshape((-1,) + (1,) * (getattr(best, f.name).dim() - 1)),
                            getattr(new, f.name), getattr(best, f.name))
        for f in fields(best)
    })
