"""Pure-PyTorch twins of every compiled op, name for name and argument for argument with
:mod:`nonrobust_ext.ops`.

They define the ops' semantics: the tests compare the kernels against them and the benchmarks use
them as the eager baseline. They compute in the kernels' compute dtype (float32 for float16/bfloat16,
float64 for float64) and round once when writing back, as the kernels do.
"""

from __future__ import annotations

import math

import torch

from ._params import Param, as_param_tensor, check_int, opmath_dtype


def _per_sample(value: Param, like: torch.Tensor, name: str) -> torch.Tensor:
    t = as_param_tensor(value, like, name)
    return t.expand(like.shape[0]).reshape((like.shape[0],) + (1,) * (like.dim() - 1))


def _per_channel(value: Param, like: torch.Tensor, name: str) -> torch.Tensor:
    t = as_param_tensor(value, like, name)
    return t.expand(like.shape[1]).reshape((1, like.shape[1]) + (1,) * (like.dim() - 2))


def _write(x_adv: torch.Tensor, new: torch.Tensor, active: torch.Tensor | None) -> None:
    if active is not None:
        mask = active.reshape((x_adv.shape[0],) + (1,) * (x_adv.dim() - 1))
        new = torch.where(mask, new, x_adv.to(new.dtype))
    x_adv.copy_(new)


def linf_step_(
    x_adv: torch.Tensor,
    grad: torch.Tensor,
    x: torch.Tensor,
    *,
    eps: Param,
    alpha: Param,
    lo: Param = 0.0,
    hi: Param = 1.0,
    scale: Param = 1.0,
    active: torch.Tensor | None = None,
) -> None:
    """Twin of :func:`nonrobust_ext.ops.linf_step_`."""
    acc = opmath_dtype(x_adv.dtype)
    e, a = _per_sample(eps, x_adv, "eps"), _per_sample(alpha, x_adv, "alpha")
    s = _per_channel(scale, x_adv, "scale")
    lo_t, hi_t = _per_channel(lo, x_adv, "lo"), _per_channel(hi, x_adv, "hi")
    xv = x.to(acc)
    radius = e * s
    v = x_adv.to(acc) + a * s * torch.sign(grad.to(acc))
    v = torch.minimum(torch.maximum(v, xv - radius), xv + radius)
    v = torch.minimum(torch.maximum(v, lo_t), hi_t)
    _write(x_adv, v, active)


def l2_step_(
    x_adv: torch.Tensor,
    grad: torch.Tensor,
    x: torch.Tensor,
    *,
    eps: Param,
    alpha: Param,
    lo: Param = 0.0,
    hi: Param = 1.0,
    scale: Param = 1.0,
    active: torch.Tensor | None = None,
) -> None:
    """Twin of :func:`nonrobust_ext.ops.l2_step_`."""
    acc = opmath_dtype(x_adv.dtype)
    e, a = _per_sample(eps, x_adv, "eps"), _per_sample(alpha, x_adv, "alpha")
    s = _per_channel(scale, x_adv, "scale")
    lo_t, hi_t = _per_channel(lo, x_adv, "lo"), _per_channel(hi, x_adv, "hi")
    g = grad.to(acc)
    xv = x.to(acc)

    def sample_norm(t: torch.Tensor) -> torch.Tensor:
        return t.flatten(1).double().norm(dim=1).to(acc).reshape(e.shape)

    step = a / (sample_norm(g * s) + 1e-12)
    d = (x_adv.to(acc) - xv) / s + step * g * s
    dn = sample_norm(d)
    factor = torch.where(dn > e, e / dn, torch.ones_like(dn))
    v = xv + factor * d * s
    v = torch.minimum(torch.maximum(v, lo_t), hi_t)
    _write(x_adv, v, active)


# The counter-based hash of csrc/common/counter_rng.h, in int64 arithmetic: values are uint32 held in
# int64, and both multipliers are below 2^31, so no product overflows.
_RNG_MASK = 0xFFFFFFFF
_RNG_MUL1 = 0x7FEB352D
_RNG_MUL2 = 0x5BD1E995
_RNG_STREAM_MUL = 0x2545F491
_RNG_STREAM_UNIFORM, _RNG_STREAM_ANGLE, _RNG_STREAM_RADIUS = 1, 2, 3


def _mix32(v):
    """The 32-bit finaliser on a Python int or an int64 tensor of uint32 values."""
    v = v ^ (v >> 16)
    v = (v * _RNG_MUL1) & _RNG_MASK
    v = v ^ (v >> 15)
    v = (v * _RNG_MUL2) & _RNG_MASK
    return v ^ (v >> 16)


def _stream_key(seed: int, stream: int) -> int:
    seed &= (1 << 64) - 1
    lo, hi = seed & _RNG_MASK, seed >> 32
    return _mix32(lo ^ _mix32(hi ^ ((stream * _RNG_STREAM_MUL) & _RNG_MASK)))


def _draw(key: int, index: torch.Tensor) -> torch.Tensor:
    return _mix32(_mix32((index & _RNG_MASK) ^ key) ^ (index >> 32))


def _uniform01(bits: torch.Tensor) -> torch.Tensor:
    return (bits >> 8).to(torch.float32) * 2.0**-24


def _uniform01_open0(bits: torch.Tensor) -> torch.Tensor:
    return ((bits >> 8) + 1).to(torch.float32) * 2.0**-24


def random_init_(
    x_adv: torch.Tensor,
    x: torch.Tensor,
    *,
    eps: Param,
    norm: str = "linf",
    lo: Param = 0.0,
    hi: Param = 1.0,
    scale: Param = 1.0,
    active: torch.Tensor | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> None:
    """Twin of :func:`nonrobust_ext.ops.random_init_` (the same random numbers for the same seed)."""
    from .ops import draw_seed

    if norm not in ("linf", "l2"):
        raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
    if seed is None:
        seed = draw_seed(generator)
    acc = opmath_dtype(x_adv.dtype)
    e = _per_sample(eps, x_adv, "eps")
    s = _per_channel(scale, x_adv, "scale")
    lo_t, hi_t = _per_channel(lo, x_adv, "lo"), _per_channel(hi, x_adv, "hi")
    index = torch.arange(x_adv.numel(), device=x_adv.device, dtype=torch.int64).reshape(x_adv.shape)
    xv = x.to(acc)
    if norm == "linf":
        u = _uniform01(_draw(_stream_key(seed, _RNG_STREAM_UNIFORM), index)).to(acc)
        v = xv + e * s * (2 * u - 1)
    else:
        u1 = _uniform01_open0(_draw(_stream_key(seed, _RNG_STREAM_UNIFORM), index))
        u2 = _uniform01(_draw(_stream_key(seed, _RNG_STREAM_ANGLE), index))
        z = torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2 * math.pi * u2)
        per_sample = max(1, x_adv.numel() // max(1, x_adv.shape[0]))
        sq = z.double().flatten(1).pow(2).sum(dim=1)
        batch_index = torch.arange(x_adv.shape[0], device=x_adv.device, dtype=torch.int64)
        u_r = _uniform01_open0(_draw(_stream_key(seed, _RNG_STREAM_RADIUS), batch_index)).double()
        radius = e.double().flatten() * u_r ** (1.0 / per_sample)
        coef = torch.where(sq > 0, radius / sq.sqrt(), torch.zeros_like(sq)).to(acc).reshape(e.shape)
        v = xv + coef * z.to(acc) * s
    v = torch.minimum(torch.maximum(v, lo_t), hi_t)
    _write(x_adv, v, active)


# ------------------------------------------------------------------------------ feature statistics


def _check_feature_matrix(t: torch.Tensor, name: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(t).__name__}")
    if t.dim() != 2:
        raise ValueError(f"{name} must be a 2-D [N, D] tensor, got shape {tuple(t.shape)}")
    if t.dtype not in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
        raise TypeError(f"{name} must be float32, float64, bfloat16 or float16, got {t.dtype}")


def class_feature_stats(
    features: torch.Tensor, labels: torch.Tensor, *, num_classes: int, covariance: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Twin of :func:`nonrobust_ext.ops.class_feature_stats`: bincount, then two index_add passes
    (class sums, then squared deviations from the class means) in the compute dtype."""
    check_int(num_classes, "num_classes", 1)
    _check_feature_matrix(features, "features")
    if labels.dtype != torch.int64:
        raise TypeError(f"labels must be int64, got {labels.dtype}")
    if labels.dim() != 1 or labels.shape[0] != features.shape[0]:
        raise ValueError(f"labels must have shape [{features.shape[0]}] (one per row of features), "
                         f"got {tuple(labels.shape)}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must be in [0, num_classes) = [0, {num_classes}), got values in "
                         f"[{int(labels.min())}, {int(labels.max())}]")
    acc = opmath_dtype(features.dtype)
    x = features.to(acc)
    K, D = num_classes, x.shape[1]
    count = torch.bincount(labels, minlength=K).double()
    mean = x.new_zeros(K, D).index_add_(0, labels, x) / count.clamp(min=1).to(acc).unsqueeze(1)
    dev = x - mean.index_select(0, labels)
    if covariance:
        m2 = x.new_zeros(K, D, D).index_add_(0, labels, dev.unsqueeze(2) * dev.unsqueeze(1))
    else:
        m2 = x.new_zeros(K, D).index_add_(0, labels, dev * dev)
    return count, mean, m2


def feature_discrepancy(clean: torch.Tensor, adv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Twin of :func:`nonrobust_ext.ops.feature_discrepancy`, in the compute dtype."""
    _check_feature_matrix(clean, "clean")
    _check_feature_matrix(adv, "adv")
    if clean.shape != adv.shape:
        raise ValueError(f"adv has shape {tuple(adv.shape)} but clean has shape {tuple(clean.shape)}")
    acc = opmath_dtype(clean.dtype)
    diff = adv.to(acc) - clean.to(acc)
    return (diff * diff).sum(1), diff.abs().sum(0) / max(diff.shape[0], 1)


def linear_hsic(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Twin of :func:`nonrobust_ext.ops.linear_hsic`: explicitly centred copies and the cross-covariance
    product, all in float64 (the op's value is float64 too; its products run in the compute dtype)."""
    _check_feature_matrix(x, "x")
    _check_feature_matrix(y, "y")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"y has {y.shape[0]} rows but x has {x.shape[0]}")
    if x.shape[0] == 0:
        return torch.zeros((), dtype=torch.float64, device=x.device)
    xc = x.double() - x.double().mean(0)
    yc = y.double() - y.double().mean(0)
    return (xc.transpose(0, 1) @ yc).square().sum()


__all__ = [
    "class_feature_stats", "feature_discrepancy", "l2_step_", "linear_hsic", "linf_step_", "random_init_",
]
