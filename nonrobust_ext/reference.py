"""Pure-PyTorch twins of every compiled op, name for name and argument for argument with
:mod:`nonrobust_ext.ops`.

They define the ops' semantics: the tests compare the kernels against them and the benchmarks use
them as the eager baseline. They compute in the kernels' compute dtype (float32 for float16/bfloat16,
float64 for float64) and round once when writing back, as the kernels do.

They refuse the same bad arguments as the wrappers and kernels together, with the same exception types
and in the same order (the checks are the Python mirror of the kernels' prologues, in
:mod:`nonrobust_ext._params`): Python parameter values (as the wrappers do), then devices, dtypes,
shapes, memory overlap of ``x_adv``, and on CPU the parameter tensors' values (as the CPU kernels do);
tensors on a CUDA device are not read, and a NaN there propagates in the kernel and in the twin alike.
A NaN in a data tensor is never refused, and propagates the same way as in the kernels.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from ._params import (
    Param,
    check_box_projection_args,
    check_class_stats_args,
    check_feature_pair,
    check_int,
    check_label_range,
    check_square_proposal_args,
    check_step_args,
    check_step_memory,
    check_step_param_values,
    opmath_dtype,
    step_param_tensors,
)
from ._validate import check_tensor


class _StepParams(NamedTuple):
    """The parameters broadcast against ``x_adv``: per sample ``[B, 1, ...]``, per channel ``[1, C, 1, ...]``."""

    eps: torch.Tensor
    alpha: torch.Tensor | None
    scale: torch.Tensor
    lo: torch.Tensor
    hi: torch.Tensor


def _step_params(op: str, x_adv: torch.Tensor, grad: torch.Tensor | None, x: torch.Tensor, *, eps: Param,
                 alpha: Param | None, scale: Param, lo: Param, hi: Param, active: torch.Tensor | None) -> _StepParams:
    """The kernels' prologue (csrc/common/step_args.h) in Python: every check, in the kernels' order,
    then the parameters broadcast for the formulas."""
    for name, t in (("x_adv", x_adv), ("grad", grad), ("x", x)):
        if name != "grad" or t is not None:
            check_tensor(t, name)
    if x_adv.requires_grad:  # the kernels' autograd wrapper (csrc/ops.cpp)
        raise ValueError(f"{op}: x_adv requires grad; attack-state updates are not differentiable, pass a detached "
                         "tensor")
    eps_t, alpha_t, scale_t, lo_t, hi_t = step_param_tensors(x_adv, eps=eps, alpha=alpha, scale=scale, lo=lo, hi=hi)
    check_step_args(op, x_adv, grad, x, eps_t, alpha_t, scale_t, lo_t, hi_t, active)
    given = {"eps": eps, "alpha": alpha, "scale": scale, "lo": lo, "hi": hi}
    check_step_memory(op, x_adv, grad=grad, x=x, active=active,
                      **{k: v for k, v in given.items() if isinstance(v, torch.Tensor)})
    if x_adv.device.type == "cpu":
        check_step_param_values(op, eps_t, alpha_t, scale_t, lo_t, hi_t)
    return _broadcast(x_adv, eps_t, alpha_t, scale_t, lo_t, hi_t)


def _broadcast(x_adv: torch.Tensor, eps: torch.Tensor, alpha: torch.Tensor | None, scale: torch.Tensor,
               lo: torch.Tensor, hi: torch.Tensor) -> _StepParams:
    """1-D parameter tensors (one value, or one per sample / channel) shaped to broadcast against ``x_adv``."""
    B, C = x_adv.shape[0], x_adv.shape[1]
    sample_shape = (B,) + (1,) * (x_adv.dim() - 1)
    channel_shape = (1, C) + (1,) * (x_adv.dim() - 2)
    return _StepParams(
        eps.expand(B).reshape(sample_shape),
        None if alpha is None else alpha.expand(B).reshape(sample_shape),
        scale.expand(C).reshape(channel_shape),
        lo.expand(C).reshape(channel_shape),
        hi.expand(C).reshape(channel_shape),
    )


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
    params = _step_params("linf_step_", x_adv, grad, x, eps=eps, alpha=alpha, scale=scale, lo=lo, hi=hi,
                          active=active)
    _linf_update(x_adv, grad, x, params, active)


def _linf_update(x_adv: torch.Tensor, grad: torch.Tensor, x: torch.Tensor, params: _StepParams,
                 active: torch.Tensor | None) -> None:
    """The L-inf step's formula on checked, broadcast parameters."""
    e, a, s, lo_t, hi_t = params
    acc = opmath_dtype(x_adv.dtype)
    xv = x.to(acc)
    radius = e * s
    g = grad.to(acc)
    # sign(NaN) is NaN here, as in the kernels (torch.sign gives 0): a NaN gradient is never a zero step.
    v = x_adv.to(acc) + a * s * torch.where(torch.isnan(g), g, torch.sign(g))
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
    params = _step_params("l2_step_", x_adv, grad, x, eps=eps, alpha=alpha, scale=scale, lo=lo, hi=hi,
                          active=active)
    _l2_update(x_adv, grad, x, params, active)


def _l2_update(x_adv: torch.Tensor, grad: torch.Tensor, x: torch.Tensor, params: _StepParams,
               active: torch.Tensor | None) -> None:
    """The L2 step's formula on checked, broadcast parameters."""
    e, a, s, lo_t, hi_t = params
    acc = opmath_dtype(x_adv.dtype)
    g = grad.to(acc)
    xv = x.to(acc)

    def sample_norm(t: torch.Tensor) -> torch.Tensor:
        return t.flatten(1).double().norm(dim=1).to(acc).reshape(e.shape)

    step = a / (sample_norm(g * s) + 1e-12)
    d = (x_adv.to(acc) - xv) / s + step * g * s
    dn = sample_norm(d)
    factor = torch.where(dn > e, e / dn, torch.ones_like(dn))
    # min(1, eps/|d|) propagating NaN: a NaN norm or eps makes the sample NaN, never unprojected.
    factor = torch.where(torch.isnan(dn) | torch.isnan(e), dn + e, factor)
    v = xv + factor * d * s
    v = torch.minimum(torch.maximum(v, lo_t), hi_t)
    _write(x_adv, v, active)


def linf_step_formula_(x_adv: torch.Tensor, grad: torch.Tensor, x: torch.Tensor, *, eps: torch.Tensor,
                       alpha: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, scale: torch.Tensor,
                       active: torch.Tensor | None = None) -> None:
    """:func:`linf_step_`'s formula alone, without its argument checks: the eager expression the
    benchmarks time the fused op against, and compile with ``torch.compile`` (the checks read
    parameter values, which a fair baseline does not pay for and which break the compiled graph).
    Parameters are 1-D tensors in the compute dtype (one value, or one per sample / channel)."""
    _linf_update(x_adv, grad, x, _broadcast(x_adv, eps, alpha, scale, lo, hi), active)


def l2_step_formula_(x_adv: torch.Tensor, grad: torch.Tensor, x: torch.Tensor, *, eps: torch.Tensor,
                     alpha: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, scale: torch.Tensor,
                     active: torch.Tensor | None = None) -> None:
    """:func:`l2_step_`'s formula alone, without its argument checks (see :func:`linf_step_formula_`)."""
    _l2_update(x_adv, grad, x, _broadcast(x_adv, eps, alpha, scale, lo, hi), active)


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
        raise ValueError(f"random_init_: norm must be 'linf' or 'l2', got {norm!r}")
    if seed is None:
        seed = draw_seed(generator)
    elif generator is not None:
        raise ValueError("pass either seed or generator to random_init_, not both")
    else:
        seed = check_int(seed, "seed", -(2**63), 2**63 - 1)
    e, _, s, lo_t, hi_t = _step_params("random_init_", x_adv, None, x, eps=eps, alpha=None, scale=scale, lo=lo, hi=hi,
                                       active=active)
    acc = opmath_dtype(x_adv.dtype)
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


def class_feature_stats(
    features: torch.Tensor, labels: torch.Tensor, *, num_classes: int, covariance: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Twin of :func:`nonrobust_ext.ops.class_feature_stats`: bincount, then two index_add passes
    (class sums, then squared deviations from the class means) in the compute dtype."""
    check_tensor(features, "features")
    check_tensor(labels, "labels")
    check_int(num_classes, "num_classes", 1)
    check_class_stats_args(features, labels, num_classes)
    check_label_range(labels, num_classes)
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
    check_tensor(clean, "clean")
    check_tensor(adv, "adv")
    check_feature_pair("feature_discrepancy", "clean", clean, "adv", adv, same_width=True)
    acc = opmath_dtype(clean.dtype)
    diff = adv.to(acc) - clean.to(acc)
    return (diff * diff).sum(1), diff.abs().sum(0) / max(diff.shape[0], 1)


def linear_hsic(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Twin of :func:`nonrobust_ext.ops.linear_hsic`: explicitly centred copies and the cross-covariance
    product, all in float64 (the op's value is float64 too; its products run in the compute dtype)."""
    check_tensor(x, "x")
    check_tensor(y, "y")
    check_feature_pair("linear_hsic", "x", x, "y", y, same_width=False)
    if x.shape[0] == 0:
        return torch.zeros((), dtype=torch.float64, device=x.device)
    xc = x.double() - x.double().mean(0)
    yc = y.double() - y.double().mean(0)
    return (xc.transpose(0, 1) @ yc).square().sum()


def box_hyperplane_projection(w: torch.Tensor, c: torch.Tensor, up: torch.Tensor, down: torch.Tensor,
                              norm: str) -> torch.Tensor:
    """Twin of :func:`nonrobust_ext.ops.box_hyperplane_projection`: the breakpoints sorted, ``g`` at each
    of them by cumulative sums, and the segment holding ``|c|`` solved in closed form."""
    check_box_projection_args(w, c, up, down, norm)
    sign = torch.where(c < 0, -1.0, 1.0).to(w.dtype)[:, None]
    v = w * sign
    moving = v != 0
    room = torch.where(v > 0, up, down)
    room = torch.where(moving, room, torch.zeros_like(room))
    magnitude = v.abs()
    if norm == "linf":
        weight, tau = magnitude, room
    else:
        weight = magnitude * magnitude
        tau = torch.where(moving, room / torch.where(moving, magnitude, torch.ones_like(magnitude)),
                          torch.zeros_like(room))
    tau_sorted, order = tau.sort(dim=1)
    weight_sorted = weight.gather(1, order)
    # weight * tau is 0 for non-moving coordinates (tau 0) and inf for an open side (tau inf).
    below = (weight_sorted * tau_sorted).cumsum(dim=1)
    # Suffix sums of the weights (the slope of g beyond each breakpoint), exactly 0 past the last.
    suffix = weight_sorted.flip(1).cumsum(dim=1).flip(1)
    beyond = torch.cat([suffix[:, 1:], torch.zeros_like(suffix[:, :1])], dim=1)
    at_breakpoints = below + torch.where(beyond > 0, tau_sorted * beyond, torch.zeros_like(beyond))
    goal = c.abs()[:, None]
    segment = (at_breakpoints < goal).sum(dim=1, keepdim=True)
    reachable = segment < tau.shape[1]
    # g(s) = below[k - 1] + s * suffix[k] on the segment k between breakpoints k - 1 and k.
    before = torch.cat([torch.zeros_like(below[:, :1]), below], dim=1).gather(1, segment)
    slope = torch.cat([suffix, torch.zeros_like(suffix[:, :1])], dim=1).gather(1, segment)
    s = torch.where(slope > 0, (goal - before) / torch.where(slope > 0, slope, torch.ones_like(slope)),
                    torch.zeros_like(slope)).clamp_min(0)
    s = torch.where(reachable, s, torch.full_like(s, math.inf))
    along = torch.minimum(s, tau)
    if norm == "l2":
        # The corner (s = inf) is room itself; tau * |w| would round it.
        along = torch.where(torch.isinf(s), room, along * magnitude)
    return torch.where(moving, torch.sign(v) * along, torch.zeros_like(along))


def square_linf_proposal(current: torch.Tensor, low: torch.Tensor, high: torch.Tensor, rows: torch.Tensor,
                         top: torch.Tensor, left: torch.Tensor, side: int,
                         up: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Twin of :func:`nonrobust_ext.ops.square_linf_proposal`: window masks and two selections for the
    first draw, then the next draws for the rows no earlier draw changed (few: memory stays that of one
    batch, which matters where this twin is what runs, on a GPU)."""
    check_square_proposal_args(current, low, high, rows, top, left, side, up)
    was, lo, hi = current[rows], low[rows], high[rows]
    height, width = current.shape[2:]
    r = torch.arange(height, device=current.device)
    c = torch.arange(width, device=current.device)
    in_rows = (r >= top[:, None]) & (r < top[:, None] + side)
    in_cols = (c >= left[:, None]) & (c < left[:, None] + side)
    window = (in_rows[:, :, None] & in_cols[:, None, :])[:, None]  # [n, 1, H, W]

    def draw(k: int, at: torch.Tensor | slice) -> tuple[torch.Tensor, torch.Tensor]:
        faces = torch.where(up[at, k, :, None, None], hi[at], lo[at])
        proposal = torch.where(window[at], faces, was[at])
        # A change inside the window (NaN counts as one, as != says).
        return proposal, ((proposal != was[at]) & window[at]).flatten(1).any(dim=1)

    proposal, changed = draw(0, slice(None))
    for k in range(1, up.shape[1]):
        if bool(changed.all()):
            break
        stuck = (~changed).nonzero().squeeze(1)
        proposal[stuck], changed[stuck] = draw(k, stuck)
    return proposal, changed


__all__ = [
    "box_hyperplane_projection", "class_feature_stats", "feature_discrepancy", "l2_step_", "linear_hsic",
    "linf_step_", "random_init_", "square_linf_proposal",
]
