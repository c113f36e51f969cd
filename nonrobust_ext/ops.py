"""Typed wrappers of the compiled ops (``torch.ops.nonrobust_ext.*``): the kernel API.

Each wrapper accepts Python numbers as well as tensors for the per-sample (``eps``, ``alpha``: one
value or ``[B]``) and per-channel (``scale``, ``lo``, ``hi``: one value or ``[C]``) parameters, and
calls the op. Inputs are batches ``[B, C, ...]``; any dense layout (contiguous, channels_last) runs
in place without copies. The pure-PyTorch twin of each op, with the same semantics and the same
argument checks, is in :mod:`nonrobust_ext.reference`.

Argument checks (the same in the kernels, the fake kernels and the twins; a wrong dtype or argument
type is a ``TypeError``, anything else a ``ValueError`` naming the op and the argument):

- Devices, dtypes, shapes: every tensor argument on ``x_adv``'s (or the features') device, a meta
  tensor mixed with real ones included; checked by every kernel before it touches any memory.
- Memory (the in-place ops): ``x_adv`` may not overlap itself (an expanded view) nor share memory
  with ``grad``, ``x``, a parameter or ``active`` (the same tensor, or two views of one buffer).
- Parameter values: ``eps`` and ``alpha`` finite and >= 0, ``scale`` finite and > 0, ``lo`` and
  ``hi`` not NaN (+-inf means unbounded) and ``lo <= hi``. Checked wherever that is free: Python
  numbers and sequences here, before they become tensors; CPU tensors in the CPU kernels (and here,
  when a CPU tensor is copied to the batch's device). *Tensors already on a CUDA device are not
  checked* (a look at their values would synchronise the device on every step and break CUDA-graph
  capture): there a NaN parameter propagates into the output, in the CUDA kernel exactly as in the
  twin, and ``lo > hi`` clamps every element to ``hi`` in both.
- Data tensors (``x``, ``grad``, ``x_adv``, features) are not scanned for NaN (a full extra pass over
  memory on bandwidth-bound ops): a NaN there propagates into the output, identically in the kernels
  and the twins (never dropped or clamped away). The library's entry points (attacks, analyses) refuse
  non-finite inputs where they enter.
"""

from __future__ import annotations

import torch

from ._params import Param, check_int, step_param_tensors
from ._validate import check_tensor

_ops = torch.ops.nonrobust_ext


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
    """Fused L-inf PGD step, in place.

    ``x_adv <- clip_[lo,hi]( clip_[x - eps*scale, x + eps*scale]( x_adv + alpha*scale*sign(grad) ) )``

    Args:
        x_adv: the adversarial batch, updated in place.
        grad: gradient of the loss to maximise with respect to ``x_adv``.
        x: the clean batch (centre of the eps-ball).
        eps, alpha: radius and step size, one value or one per sample.
        lo, hi: input bounds, one value or one per channel.
        scale: per-channel size of one threat-model unit in input units (``1/std`` when the inputs
            are normalised outside the model); one value or one per channel.
        active: optional bool mask ``[B]``; inactive samples are left untouched.

    Raises:
        TypeError: a tensor argument is not a tensor or has the wrong dtype; a parameter is not a
            number, a sequence of numbers or a real tensor.
        ValueError: a wrong shape, device or parameter value, or ``x_adv`` overlapping itself or an
            input (see the module docstring for which checks run where).

    Shape:
        x_adv, grad, x: ``[B, C, *]``, same dtype and device.
    """
    _check_tensors(x_adv=x_adv, grad=grad, x=x)
    eps_t, alpha_t, scale_t, lo_t, hi_t = step_param_tensors(x_adv, eps=eps, alpha=alpha, scale=scale, lo=lo, hi=hi)
    _ops.linf_step_(x_adv, grad, x, eps_t, alpha_t, scale_t, lo_t, hi_t, active)


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
    """Fused L2 PGD step, in place, with the per-sample norms computed inside the kernel.

    In threat-model units (``u = input / scale``, per channel)::

        d   = (x_adv - x)/scale + alpha * g' / (||g'|| + 1e-12),   g' = grad * scale
        d  <- d * min(1, eps / ||d||)                               (projection onto the L2 ball)
        x_adv <- clip_[lo,hi](x + d * scale)

    A NaN norm (from a NaN in ``grad``, ``x`` or ``x_adv``) or a NaN ``eps`` makes the whole sample
    NaN: the projection is never silently skipped.

    Args, Raises: as :func:`linf_step_`.
    """
    _check_tensors(x_adv=x_adv, grad=grad, x=x)
    eps_t, alpha_t, scale_t, lo_t, hi_t = step_param_tensors(x_adv, eps=eps, alpha=alpha, scale=scale, lo=lo, hi=hi)
    _ops.l2_step_(x_adv, grad, x, eps_t, alpha_t, scale_t, lo_t, hi_t, active)


def _check_tensors(**tensors: object) -> None:
    for name, t in tensors.items():
        check_tensor(t, name)


def draw_seed(generator: torch.Generator | None = None) -> int:
    """A seed for :func:`random_init_` drawn from ``generator`` (or torch's default generator)."""
    device = generator.device if generator is not None else "cpu"
    return int(torch.randint(0, 2**62, (), generator=generator, device=device))


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
    """Random start, in place: ``x_adv <- clip_[lo,hi](x + delta*scale)``.

    ``delta`` is uniform in the L-inf ball (``norm="linf"``) or uniform in the L2 ball
    (``norm="l2"``: Gaussian direction, radius ``eps * U^(1/n)`` with ``n`` elements per sample) of
    radius ``eps``. The noise is a pure function of ``seed`` and each element's logical index, so it is
    reproducible and independent of memory layout. CPU and CUDA draw the same uniform numbers: the
    L-inf start is identical on both; the L2 start's Box-Muller normals go through each device's
    ``log``/``cos``/``sqrt``, so CPU and CUDA may differ in the last bit or two (float32 ulps) there.

    Args:
        seed: the noise seed; if None one is drawn from ``generator`` (or torch's default generator,
            so ``torch.manual_seed`` makes it reproducible).
        Others: as :func:`linf_step_`.

    Raises:
        TypeError, ValueError: as :func:`linf_step_`; also ValueError for a ``norm`` other than
            ``"linf"``/``"l2"`` or both ``seed`` and ``generator`` given.
    """
    _check_tensors(x_adv=x_adv, x=x)
    if seed is None:
        seed = draw_seed(generator)
    elif generator is not None:
        raise ValueError("pass either seed or generator to random_init_, not both")
    else:
        seed = check_int(seed, "seed", -(2**63), 2**63 - 1)
    eps_t, _, scale_t, lo_t, hi_t = step_param_tensors(x_adv, eps=eps, alpha=None, scale=scale, lo=lo, hi=hi)
    _ops.random_init_(x_adv, x, eps_t, scale_t, lo_t, hi_t, active, seed, norm)


# ------------------------------------------------------------------------------ feature statistics


def class_feature_stats(
    features: torch.Tensor, labels: torch.Tensor, *, num_classes: int, covariance: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-class count, mean and sum of squared deviations of features, in one pass.

    For each class ``c``, with ``S_c = {i : labels[i] = c}`` and ``n_c = |S_c|``::

        count[c] = n_c
        mean[c]  = (1/n_c) sum_{i in S_c} features[i]
        m2[c]    = sum_{i in S_c} (features[i] - mean[c])**2                       (covariance=False)
        m2[c]    = sum_{i in S_c} (features[i] - mean[c]) (features[i] - mean[c])^T  (covariance=True)

    An empty class has count 0, mean 0 and m2 0. The variance is ``m2 / (count - 1)``; statistics of
    several batches or ranks merge exactly (:func:`nonrobust_ext.stats.merge_class_stats`). The sums
    are formed around a shift close to each class mean and carried in float64, so a large common
    offset in the features costs no accuracy. Differentiable with respect to ``features``.

    Args:
        features: the feature rows.
        labels: the class of each row, int64 in ``[0, num_classes)`` (anything else raises).
        num_classes: K.
        covariance: return the per-class scatter matrices instead of their diagonals.

    Returns:
        ``(count, mean, m2)``: count float64 (exact integers; a weight in the merge formulas, and not
        differentiable); mean and m2 in the compute dtype (float32 for float32/bfloat16/float16
        features, float64 for float64).

    Raises:
        TypeError: a wrong argument type or dtype (labels must be int64).
        ValueError: a wrong shape, tensors on different devices (a meta tensor among real ones
            included), ``num_classes < 1``, or a label outside ``[0, num_classes)`` (checked by both
            kernels; on CUDA that costs one small device-to-host copy). A NaN feature is not refused:
            it propagates into its class's mean and m2 (in that column; with covariance, its row and
            column of the scatter matrix), as in the twin.

    Shape:
        features ``[N, D]`` (float32, float64, bfloat16, float16; any strides), labels ``[N]``;
        count ``[K]``, mean ``[K, D]``, m2 ``[K, D]`` or ``[K, D, D]``.
    """
    _check_tensors(features=features, labels=labels)
    check_int(num_classes, "num_classes", 1)
    return _ops.class_feature_stats(features, labels, num_classes, bool(covariance))


def feature_discrepancy(clean: torch.Tensor, adv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """How far adversarial features moved from clean ones, per sample and per feature, in one pass.

    With ``e = adv - clean``::

        sq_dist[i]         = sum_d e[i, d]**2          (the DM loss term ||phi(x_adv) - phi(x)||^2)
        mean_abs_change[d] = (1/N) sum_i |e[i, d]|      (0 when N = 0)

    Differentiable with respect to both inputs (the gradient of ``|e|`` at ``e = 0`` is 0, as for
    ``torch.abs``).

    Returns:
        ``(sq_dist, mean_abs_change)`` in the compute dtype (float32 for float32/bfloat16/float16,
        float64 for float64); sums are carried in float64 (partial sums of at most 64 terms per lane or
        thread in the compute dtype). A NaN input gives NaN in its row's ``sq_dist`` and its column's
        ``mean_abs_change``, as in the twin.

    Raises:
        TypeError: not tensors, or a dtype other than float32/float64/bfloat16/float16, or two dtypes.
        ValueError: not 2-D, different shapes, or different devices.

    Shape:
        clean, adv ``[N, D]``, same dtype and device (any strides); sq_dist ``[N]``, mean_abs_change ``[D]``.
    """
    _check_tensors(clean=clean, adv=adv)
    return _ops.feature_discrepancy(clean, adv)


def linear_hsic(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The linear-kernel HSIC numerator ``||Xc^T Yc||_F^2`` with column-centred ``Xc``, ``Yc``.

    Equal to ``tr(K_c L_c)`` for the centred Gram matrices ``K_c = Xc Xc^T``, ``L_c = Yc Yc^T``, but
    computed as ``||X^T Y - N mx my^T||_F^2`` (shifted by the column means for accuracy) in
    ``O(N D1 D2)`` time and ``O(D1 D2)`` memory: never an ``N x N`` matrix, never a centred copy of the
    inputs. The biased HSIC estimate is this value over ``(N - 1)**2``; linear CKA is
    ``linear_hsic(x, y) / sqrt(linear_hsic(x, x) * linear_hsic(y, y))``
    (:func:`nonrobust_ext.analysis.similarity.linear_cka` builds on this op). Differentiable with
    respect to both inputs.

    Returns:
        A float64 scalar (0 when N, D1 or D2 is 0; NaN when an input holds NaN).

    Raises:
        TypeError: not tensors, or a dtype other than float32/float64/bfloat16/float16, or two dtypes.
        ValueError: not 2-D, different numbers of rows, or different devices.

    Shape:
        x ``[N, D1]``, y ``[N, D2]``, same dtype and device.
    """
    _check_tensors(x=x, y=y)
    return _ops.linear_hsic(x, y)


def box_hyperplane_projection(w: torch.Tensor, c: torch.Tensor, up: torch.Tensor, down: torch.Tensor,
                              norm: str) -> torch.Tensor:
    r"""The smallest step ``d`` (in ``norm``) with ``w . d = c`` and ``-down <= d <= up``, per row: FAB's
    projection (:func:`nonrobust_ext.fab`).

    This is the projection of a point ``t`` onto the hyperplane ``{u: w . u = w . t + c}`` within the
    box ``[t - down, t + up]``. Flipping the signs so that ``c >= 0``, every optimal step moves each
    coordinate towards the hyperplane, by at most its room ``r_j`` in that direction (``up`` where
    ``w_j > 0``, ``down`` where ``w_j < 0``), and is ``d_j = sign(w_j) min(s, tau_j) m_j`` for one
    scalar ``s >= 0``: the L-inf radius (``m_j = 1``, ``tau_j = r_j``: the KKT solution of the linear
    program) or the L2 multiplier (``m_j = |w_j|``, ``tau_j = r_j / |w_j|``: a clipped multiple of
    ``w``). ``w . d = g(s) = sum_j a_j min(s, tau_j)`` with ``a_j = |w_j| m_j`` is piecewise linear and
    non-decreasing in ``s``. The CPU kernel finds the segment holding ``g(s) = |c|`` by selection on the
    breakpoints ``tau_j`` (expected linear time per row, sums in float64); the twin
    (:func:`nonrobust_ext.reference.box_hyperplane_projection`, which runs on other devices) sorts them.
    Where the box does not reach the hyperplane (``g(inf) < |c|``) the step is the box corner furthest
    towards it (``d_j = sign(w_j) r_j``), as in the authors' code. Coordinates with ``w_j = 0`` do not
    move. Not differentiable.

    Args:
        w: ``[N, D]`` normals, float32 or float64.
        c: ``[N]`` the change of ``w . u`` asked for.
        up, down: ``[N, D]`` the room to the box in the positive and negative direction, >= 0 (``inf``
            for an open side).
        norm: ``"linf"`` or ``"l2"``.

    Returns:
        ``[N, D]`` (contiguous): the steps.

    Raises:
        TypeError: a dtype other than float32/float64, or two dtypes.
        ValueError: wrong shapes or devices, an unknown norm.
    """
    if w.device.type != "cpu":
        from . import reference

        return reference.box_hyperplane_projection(w, c, up, down, norm)
    return _ops.box_hyperplane_projection(w, c, up, down, norm)


def square_linf_proposal(current: torch.Tensor, low: torch.Tensor, high: torch.Tensor, rows: torch.Tensor,
                         top: torch.Tensor, left: torch.Tensor, side: int,
                         up: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One step's candidates of the L-inf Square attack (:func:`nonrobust_ext.square`), in one pass.

    For each ``i < n``, with ``r = rows[i]``: ``proposal[i]`` is ``current[r]`` with the ``side x side``
    window whose top-left pixel is ``(top[i], left[i])`` replaced, in channel ``c``, by ``high[r]`` where
    ``up[i, k, c]`` and by ``low[r]`` elsewhere (the two faces of the eps-box, already clipped to the
    bounds), for the first draw ``k`` that changes any element (a proposal equal to the current point is
    a wasted query); ``current[r]`` itself where no draw does, and ``changed[i]`` says which. The CPU
    kernel writes each row once; on other devices the twin
    (:func:`nonrobust_ext.reference.square_linf_proposal`) runs. Not differentiable.

    Raises:
        TypeError: a dtype other than float32/float64 for ``current`` (``low`` and ``high`` the same),
            int64 for ``rows``/``top``/``left``, bool for ``up``.
        ValueError: wrong shapes or devices, ``side`` outside ``[1, min(H, W)]``, and on the CPU a row
            index or window position out of range.

    Shape:
        current, low, high ``[N, C, H, W]``; rows, top, left ``[n]``; up ``[n, draws, C]``; proposal
        ``[n, C, H, W]`` (contiguous), changed ``[n]``.
    """
    side = check_int(side, "side", 1)
    if current.device.type != "cpu":
        from . import reference

        return reference.square_linf_proposal(current, low, high, rows, top, left, side, up)
    return _ops.square_linf_proposal(current, low, high, rows, top, left, side, up)


__all__ = [
    "box_hyperplane_projection", "class_feature_stats", "draw_seed", "feature_discrepancy", "l2_step_",
    "linear_hsic", "linf_step_", "random_init_", "square_linf_proposal",
]
