"""Typed wrappers of the compiled ops (``torch.ops.nonrobust_ext.*``): the kernel API.

Each wrapper accepts Python numbers as well as tensors for the per-sample (``eps``, ``alpha``: one
value or ``[B]``) and per-channel (``scale``, ``lo``, ``hi``: one value or ``[C]``) parameters, and
calls the op. Inputs are batches ``[B, C, ...]``; any dense layout (contiguous, channels_last) runs
in place without copies. The pure-PyTorch twin of each op, with the same semantics, is in
:mod:`nonrobust_ext.reference`.
"""

from __future__ import annotations

import torch

from ._params import Param, as_param_tensor, check_int

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

    Shape:
        x_adv, grad, x: ``[B, C, *]``, same dtype and device.
    """
    _ops.linf_step_(
        x_adv,
        grad,
        x,
        as_param_tensor(eps, x_adv, "eps"),
        as_param_tensor(alpha, x_adv, "alpha"),
        as_param_tensor(scale, x_adv, "scale"),
        as_param_tensor(lo, x_adv, "lo"),
        as_param_tensor(hi, x_adv, "hi"),
        active,
    )


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

    Args: as :func:`linf_step_`.
    """
    _ops.l2_step_(
        x_adv,
        grad,
        x,
        as_param_tensor(eps, x_adv, "eps"),
        as_param_tensor(alpha, x_adv, "alpha"),
        as_param_tensor(scale, x_adv, "scale"),
        as_param_tensor(lo, x_adv, "lo"),
        as_param_tensor(hi, x_adv, "hi"),
        active,
    )


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
    reproducible, independent of memory layout, and the same on CPU and CUDA.

    Args:
        seed: the noise seed; if None one is drawn from ``generator`` (or torch's default generator,
            so ``torch.manual_seed`` makes it reproducible).
        Others: as :func:`linf_step_`.
    """
    if seed is None:
        seed = draw_seed(generator)
    elif generator is not None:
        raise ValueError("pass either seed or generator to random_init_, not both")
    _ops.random_init_(
        x_adv,
        x,
        as_param_tensor(eps, x_adv, "eps"),
        as_param_tensor(scale, x_adv, "scale"),
        as_param_tensor(lo, x_adv, "lo"),
        as_param_tensor(hi, x_adv, "hi"),
        active,
        int(seed),
        norm,
    )


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

    Shape:
        features ``[N, D]`` (float32, float64, bfloat16, float16; any strides), labels ``[N]``;
        count ``[K]``, mean ``[K, D]``, m2 ``[K, D]`` or ``[K, D, D]``.
    """
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
        float64 for float64); sums are carried in float64.

    Shape:
        clean, adv ``[N, D]``, same dtype and device (any strides); sq_dist ``[N]``, mean_abs_change ``[D]``.
    """
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
        A float64 scalar (0 when N, D1 or D2 is 0).

    Shape:
        x ``[N, D1]``, y ``[N, D2]``, same dtype and device.
    """
    return _ops.linear_hsic(x, y)


__all__ = [
    "class_feature_stats", "draw_seed", "feature_discrepancy", "l2_step_", "linear_hsic", "linf_step_",
    "random_init_",
]
