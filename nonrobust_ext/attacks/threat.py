"""The threat model every attack works in, resolved and validated once.

An attack's setting is the same handful of values whatever the attack: the radius ``eps`` (one per
sample), the norm, the input bounds ``(lo, hi)`` and the threat-model unit ``scale`` (one per channel),
and for gradient attacks a step size ``alpha`` (one per sample). :meth:`ThreatModel.resolve` turns the
user's numbers, lists or tensors into the tensors the fused ops take, checking each once (a
``TypeError``/``ValueError`` that names the argument); the attacks then only ask it for what they need:
the step, the projection, the random start, the clip to the bounds, the distance in threat-model units.

Minimal-norm attacks (:func:`~nonrobust_ext.deepfool`, :func:`~nonrobust_ext.cw_l2`) have no radius:
their threat model is the input space alone (:meth:`ThreatModel.input_space`, ``eps`` None), which
still gives bounds, scale and the distance their results report.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Union

import torch

from .. import ops
from .._params import Param, opmath_dtype
from .._validate import check_choice, is_real

Bounds = Union[None, tuple[Param, Param]]

#: The fused step op of each norm (one kernel: step, projection onto the ball, clip to the bounds).
STEP_OPS: dict[str, Callable[..., None]] = {"linf": ops.linf_step_, "l2": ops.l2_step_}
NORMS: tuple[str, ...] = tuple(STEP_OPS)

_INTS = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def _real_tensor(value: object, name: str, x: torch.Tensor, what: str) -> torch.Tensor:
    """``value`` (a number, a list of numbers, an array or a real tensor) as a 1-D tensor in the kernels'
    compute dtype on ``x``'s device; not yet checked for NaN or range."""
    dtype = opmath_dtype(x.dtype)
    if not isinstance(value, torch.Tensor) and hasattr(value, "__array__") and hasattr(value, "dtype"):
        value = torch.as_tensor(value)  # a numpy array or scalar
    if isinstance(value, torch.Tensor):
        if value.dtype == torch.bool or value.is_complex() or not (value.is_floating_point() or value.dtype in _INTS):
            raise TypeError(f"{name} must be a real number or a tensor of real numbers, got a {value.dtype} tensor")
        return value.detach().to(device=x.device, dtype=dtype).reshape(-1)
    if is_real(value):
        return torch.tensor([float(value)], dtype=dtype, device=x.device)  # type: ignore[arg-type]
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        for i, v in enumerate(value):
            if not is_real(v):
                raise TypeError(f"{name}[{i}] must be a number, got {type(v).__name__} {v!r}")
        return torch.tensor([float(v) for v in value], dtype=dtype, device=x.device)
    raise TypeError(f"{name} must be a number or {what}, got {type(value).__name__} {value!r}")


def _values(value: object, name: str, x: torch.Tensor, count: int, what: str, *, finite: bool = True) -> torch.Tensor:
    """``value`` as ``count`` values (one value broadcasts), see :func:`_real_tensor`, checked finite
    unless the caller checks it (``finite=False``)."""
    t = _real_tensor(value, name, x, f"one value {what}")
    if t.numel() not in (1, count):
        raise ValueError(f"{name} must be one value or one {what} ({count}), got {t.numel()} values")
    if finite and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite, got {t.tolist() if t.numel() < 8 else t}")
    return t.expand(count).contiguous()


def per_sample(value: Param, x: torch.Tensor, name: str, *, positive: bool = False) -> torch.Tensor:
    """``value`` as a ``[B]`` tensor in the kernels' compute dtype, checked finite and >= 0 (> 0 with
    ``positive``).

    Raises:
        TypeError: not a number, a list of numbers or a real tensor.
        ValueError: neither one value nor one per sample; NaN, infinite or out of range.
    """
    t = _values(value, name, x, x.shape[0], "per sample")
    bad = (t <= 0) if positive else (t < 0)
    if bool(bad.any()):
        raise ValueError(f"{name} must be {'> 0' if positive else '>= 0'}, got {t[bad][0].item():g}")
    return t


def per_channel(value: Param, x: torch.Tensor, name: str, *, positive: bool = False) -> torch.Tensor:
    """``value`` as a ``[C]`` tensor in the kernels' compute dtype, checked finite (and > 0 with
    ``positive``).

    Raises:
        TypeError: not a number, a list of numbers or a real tensor.
        ValueError: neither one value nor one per channel; NaN, infinite or (``positive``) <= 0.
    """
    t = _values(value, name, x, x.shape[1], "per channel", finite=not positive)
    if positive and not bool(((t > 0) & torch.isfinite(t)).all()):
        raise ValueError(f"{name} must be > 0 and finite per channel, got {t.tolist()}")
    return t


def parse_bounds(bounds: Bounds, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``(lo, hi)``, checked never NaN and ``lo <= hi``, with ``x`` inside them. An infinite
    bound is an open side (``bounds=None``: both sides open).

    Raises:
        TypeError: ``bounds`` is not ``None`` or a pair, or an entry is not a number/array/tensor.
        ValueError: NaN, ``lo > hi``, the wrong number of values, or ``x`` outside the bounds.
    """
    channels = x.shape[1]
    if bounds is None:
        inf = torch.full((channels,), math.inf, dtype=opmath_dtype(x.dtype), device=x.device)
        return -inf, inf
    if not isinstance(bounds, Sequence) or isinstance(bounds, (str, bytes)) or len(bounds) != 2:
        raise TypeError(f"bounds must be None or a pair (lo, hi) of numbers or per-channel tensors, got {bounds!r}")
    sides = []
    for i, side in enumerate(bounds):
        t = _real_tensor(side, f"bounds[{i}]", x, "one value per channel")
        if t.numel() not in (1, channels):
            raise ValueError(f"bounds[{i}] must be one value or one per channel ({channels}), "
                             f"got {t.numel()} values")
        sides.append(t.expand(channels).contiguous())
    lo, hi = sides
    if bool(torch.isnan(lo).any() or torch.isnan(hi).any()):
        raise ValueError(f"bounds must not be NaN, got lo={lo.tolist()} hi={hi.tolist()}")
    if bool((lo > hi).any()):
        raise ValueError(f"bounds must have lo <= hi per channel, got lo={lo.tolist()} hi={hi.tolist()}")
    shape = (1, channels) + (1,) * (x.dim() - 2)
    if x.numel() and bool((x < lo.reshape(shape).to(x.dtype)).any() or (x > hi.reshape(shape).to(x.dtype)).any()):
        raise ValueError(
            f"x has values outside bounds (lo={lo.tolist()}, hi={hi.tolist()}): min {x.min().item():g}, "
            f"max {x.max().item():g}. Pass the bounds of your input space (e.g. per-channel bounds "
            "for normalised inputs) or bounds=None"
        )
    return lo, hi


@dataclass(frozen=True)
class ThreatModel:
    """Where an attack may move a batch: the ball of radius ``eps`` (in ``norm``, measured in units of
    ``scale`` per channel) around each sample, intersected with the box ``[lo, hi]`` per channel.

    Build it with :meth:`resolve` (or :meth:`input_space` for a minimal-norm attack), which validates
    every value once. The tensors are in the kernels'
    compute dtype (float64 for float64 inputs, float32 otherwise) on the batch's device.

    Attributes:
        norm: ``"linf"`` or ``"l2"``.
        eps: ``[B]`` radius per sample; ``None`` for minimal-norm attacks (no radius).
        lo, hi: ``[C]`` input bounds per channel (``-inf``/``inf`` for an open side).
        scale: ``[C]`` size of one threat-model unit in input units, per channel (``1 / std`` for
            inputs normalised outside the model, so that ``eps`` stays in pixel units).
        alpha: ``[B]`` step size per sample, for attacks that take fixed-size steps; else ``None``.
    """

    norm: str
    eps: torch.Tensor | None
    lo: torch.Tensor
    hi: torch.Tensor
    scale: torch.Tensor
    alpha: torch.Tensor | None = None

    @classmethod
    def resolve(
        cls,
        x: torch.Tensor,
        *,
        eps: Param,
        norm: str = "linf",
        bounds: Bounds = (0.0, 1.0),
        scale: Param = 1.0,
        alpha: Param | None = None,
        default_alpha: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> ThreatModel:
        """Validate an attack's threat-model arguments against the batch ``x``.

        Args:
            x: the clean batch ``[B, C, *]``, already checked (a finite floating-point tensor).
            eps: radius, a number or one per sample, >= 0.
            norm: ``"linf"`` or ``"l2"``.
            bounds: ``(lo, hi)``, numbers or per-channel values (an infinite one for an open side),
                or ``None`` for unbounded inputs; ``x`` must lie inside.
            scale: threat-model unit per channel, > 0 and finite.
            alpha: step size, a number or one per sample, >= 0; ``None`` for ``default_alpha(eps)``.
            default_alpha: the step size as a function of the ``[B]`` radius when ``alpha`` is None
                (e.g. ``lambda eps: 2.5 * eps / steps``); ``None``: the attack takes no fixed step.

        Returns:
            The resolved :class:`ThreatModel`.

        Raises:
            TypeError: a value of the wrong type (the message names the argument).
            ValueError: a value out of range, NaN or infinite, of the wrong length, or ``x`` outside
                the bounds.
        """
        norm = check_choice(norm, "norm", NORMS)
        eps_t = per_sample(eps, x, "eps")
        scale_t = per_channel(scale, x, "scale", positive=True)
        lo, hi = parse_bounds(bounds, x)
        if alpha is not None:
            alpha_t: torch.Tensor | None = per_sample(alpha, x, "alpha")
        elif default_alpha is not None:
            alpha_t = default_alpha(eps_t)
        else:
            alpha_t = None
        return cls(norm=norm, eps=eps_t, lo=lo, hi=hi, scale=scale_t, alpha=alpha_t)

    @classmethod
    def input_space(cls, x: torch.Tensor, *, bounds: Bounds = (0.0, 1.0), scale: Param = 1.0,
                    norm: str = "l2") -> ThreatModel:
        """The threat model of a minimal-norm attack: no radius, only the bounds, the unit and the
        norm its distances are measured in. Validated as :meth:`resolve` does."""
        norm = check_choice(norm, "norm", NORMS)
        scale_t = per_channel(scale, x, "scale", positive=True)
        lo, hi = parse_bounds(bounds, x)
        return cls(norm=norm, eps=None, lo=lo, hi=hi, scale=scale_t)

    # ------------------------------------------------------------------------- what the ops take

    @property
    def step_op(self) -> Callable[..., None]:
        """The fused step op of the norm: ``op(x_adv, grad, x, eps=, alpha=, lo=, hi=, scale=, active=)``."""
        return STEP_OPS[self.norm]

    @property
    def channel_params(self) -> dict[str, torch.Tensor]:
        """``lo``, ``hi`` and ``scale``: the per-channel keyword arguments of the ops."""
        return {"lo": self.lo, "hi": self.hi, "scale": self.scale}

    @property
    def op_params(self) -> dict[str, torch.Tensor]:
        """``eps``, ``lo``, ``hi`` and ``scale``: the keyword arguments every op of the norm takes."""
        return {"eps": self._radius(), **self.channel_params}

    def rows(self, index: torch.Tensor) -> ThreatModel:
        """The threat model of the samples ``index`` (per-sample values selected, per-channel kept)."""
        return dataclasses.replace(
            self,
            eps=None if self.eps is None else self.eps[index],
            alpha=None if self.alpha is None else self.alpha[index],
        )

    def _radius(self) -> torch.Tensor:
        if self.eps is None:
            raise RuntimeError("this threat model has no radius (a minimal-norm attack's input space)")
        return self.eps

    # ------------------------------------------------------------------------------- operations

    def step_(
        self,
        x_adv: torch.Tensor,
        grad: torch.Tensor,
        x: torch.Tensor,
        *,
        alpha: torch.Tensor | float | None = None,
        active: torch.Tensor | None = None,
    ) -> None:
        """One fused step in place: ascend along ``grad`` by ``alpha`` (default: the threat model's),
        project onto the ball around ``x`` and clip to the bounds; inactive samples are untouched."""
        step = self.alpha if alpha is None else alpha
        if step is None:
            raise RuntimeError("this threat model has no step size: pass alpha")
        self.step_op(x_adv, grad, x, alpha=step, active=active, **self.op_params)

    def project_(self, x_adv: torch.Tensor, x: torch.Tensor) -> None:
        """Project ``x_adv`` onto the ball around ``x`` and the bounds, in place (a zero-length step)."""
        self.step_op(x_adv, torch.zeros_like(x_adv), x, alpha=0.0, **self.op_params)

    def random_init_(
        self,
        x_adv: torch.Tensor,
        x: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        active: torch.Tensor | None = None,
    ) -> None:
        """``x_adv <- clip_bounds(x + delta * scale)`` with ``delta`` uniform in the ball, in place."""
        ops.random_init_(x_adv, x, eps=self._radius(), norm=self.norm, lo=self.lo, hi=self.hi, scale=self.scale,
                         active=active, generator=generator)

    def clip(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` clipped to the bounds per channel (in ``t``'s dtype; the bounds broadcast over ``[B, C, *]``)."""
        shape = (1, t.shape[1]) + (1,) * (t.dim() - 2)
        return torch.minimum(torch.maximum(t, self.lo.reshape(shape).to(t.dtype)), self.hi.reshape(shape).to(t.dtype))

    def channel_view(self, value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """A per-channel ``[C]`` tensor shaped to broadcast over ``like`` ``[B, C, *]``."""
        return value.reshape((1, like.shape[1]) + (1,) * (like.dim() - 2))

    def distance(self, x_adv: torch.Tensor, x: torch.Tensor, norm: str | None = None) -> torch.Tensor:
        """``[B]`` norm of ``(x_adv - x) / scale`` (threat-model units), in the compute dtype."""
        scale = self.channel_view(self.scale, x)
        delta = ((x_adv.to(scale.dtype) - x.to(scale.dtype)) / scale).flatten(1)
        return delta.abs().amax(dim=1) if (norm or self.norm) == "linf" else delta.norm(dim=1)


__all__ = ["NORMS", "STEP_OPS", "Bounds", "ThreatModel", "parse_bounds", "per_channel", "per_sample"]
