r"""The CCA family: canonical correlations, SVCCA and PWCCA between two representations of the same inputs.

- **CCA** (canonical correlations): directions of ``X [N, D1]`` and ``Y [N, D2]`` whose projections correlate
  most. Invariant to any invertible linear transform of either side, so it needs N well above D (or a ridge) to
  mean anything.
- **SVCCA** (Raghu et al. 2017): an SVD reduction of each side first, which drops the noise directions.
- **PWCCA** (Morcos et al. 2018): correlations weighted by how much of X each canonical direction accounts for.

Everything runs in float64 on the inputs' device, from QR decompositions (no covariance matrix is formed).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any

import torch

from .._validate import check_int, check_real, is_int, is_real
from ._inputs import center, matrix_pair

__all__ = ["CCAResult", "cca", "pwcca", "svcca"]


@dataclasses.dataclass
class CCAResult:
    r"""Canonical correlation analysis of two representations.

    Attributes:
        correlations: ``[k]`` canonical correlations in [0, 1], descending; ``k = min(rank X, rank Y)``, which
            is ``min(D1, D2)`` for full-rank inputs.
        x_weights: ``[D1, k]``: the canonical variates are ``(X - x_mean) @ x_weights`` (unit variance when
            unregularised; column ``i`` pairs with ``y``'s column ``i`` at correlation ``correlations[i]``).
        y_weights: ``[D2, k]``, the same for ``Y``.
        x_mean: ``[D1]``, y_mean: ``[D2]``: the column means removed before the analysis.
        epsilon: the relative ridge used.
    """

    correlations: torch.Tensor
    x_weights: torch.Tensor
    y_weights: torch.Tensor
    x_mean: torch.Tensor
    y_mean: torch.Tensor
    epsilon: float

    @property
    def mean(self) -> float:
        """Mean canonical correlation (the "mean CCA similarity")."""
        return float(self.correlations.mean())

    def as_dict(self) -> dict[str, Any]:
        """Plain data (correlations and their mean) for a JSON report."""
        return {"correlations": self.correlations.tolist(), "mean": self.mean, "epsilon": self.epsilon}


def _rank(xc: torch.Tensor) -> int:
    """Numerical rank of centred data, at float32 resolution (activations are rarely more precise than that, so
    features that are linear combinations of others up to float32 rounding count as dependent)."""
    s = torch.linalg.svdvals(xc)
    tol = max(xc.shape) * torch.finfo(torch.float32).eps * float(s[0])
    return int((s > tol).sum())


def _whiten(xc: torch.Tensor, epsilon: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``Q = Xc R^-1`` and ``R`` with ``R^T R = Xc^T Xc + lam I``, ``lam = epsilon * trace(Xc^T Xc) / D``.

    Through the QR decomposition of ``[Xc; sqrt(lam) I]`` (no covariance is formed, so no condition number is
    squared); unregularised, ``Q`` has orthonormal columns spanning ``Xc``.
    """
    n, d = xc.shape
    if epsilon == 0.0:
        return torch.linalg.qr(xc)
    lam = epsilon * float((xc * xc).sum()) / d
    aug = torch.cat([xc, math.sqrt(lam) * torch.eye(d, dtype=xc.dtype, device=xc.device)])
    q, r = torch.linalg.qr(aug)
    return q[:n], r


_Side = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _cca_core(x: torch.Tensor, y: torch.Tensor, epsilon: float) -> tuple[torch.Tensor, torch.Tensor, _Side, _Side]:
    """Centred x, the correlations, and per side ``(Q, R, singular vectors)`` of ``svd(Qx^T Qy)``.

    Only ``min(rank X, rank Y)`` canonical pairs exist; the directions beyond (constant units, duplicated
    features), which a ridge maps to zero, are dropped rather than reported as zero correlations.
    """
    n, d1 = x.shape
    d2 = y.shape[1]
    xc = center(x, "x")
    yc = center(y, "y")
    ranks = []
    for name, mat in (("x", xc), ("y", yc)):
        d = mat.shape[1]
        # Centring uses up one degree of freedom: N - 1 <= D centred samples span their whole space.
        if epsilon == 0.0 and n - 1 <= d:
            raise ValueError(
                f"{name} has N={n} samples for D={d} features: unregularised CCA needs N > D + 1 (otherwise every "
                "canonical correlation is trivially 1); pass epsilon > 0, reduce the dimension first (svcca), "
                "or use more samples"
            )
        rank = _rank(mat)
        if epsilon == 0.0 and rank < d:
            raise ValueError(
                f"{name} is rank-deficient (rank {rank} < D={d}: constant or linearly dependent features, e.g. dead "
                "units); pass epsilon > 0 or use svcca"
            )
        ranks.append(rank)
    if epsilon > 0 and n - 1 <= max(ranks):
        warnings.warn(
            f"CCA with N={n} samples for D=({d1}, {d2}) features: the leading canonical correlations are close to 1 "
            "whatever the data (only the ridge epsilon holds them back); reduce the dimension first (svcca) or use "
            "more samples",
            stacklevel=3,
        )
    qx, rx = _whiten(xc, epsilon)
    qy, ry = _whiten(yc, epsilon)
    u, s, vh = torch.linalg.svd(qx.T @ qy, full_matrices=False)
    k = min(ranks)
    # Rounding can put a perfect correlation a few ulps above 1.
    rho = s[:k].clamp(0.0, 1.0)
    return xc, rho, (qx, rx, u[:, :k]), (qy, ry, vh[:k].T)


def cca(x: torch.Tensor, y: torch.Tensor, *, epsilon: float = 1e-6) -> CCAResult:
    r"""Canonical correlation analysis: directions ``a_i``, ``b_i`` maximising ``corr(Xc a_i, Yc b_i)``, each pair
    uncorrelated with the previous ones.

    With the (ridge-regularised) covariances ``S_xx + lam_x I``, ``S_yy + lam_y I`` and the cross-covariance
    ``S_xy``, the canonical correlations are the singular values of the whitened cross-covariance::

        rho = svd( (S_xx + lam_x I)^(-1/2)  S_xy  (S_yy + lam_y I)^(-1/2) ),   lam_x = epsilon * tr(S_xx) / D1

    computed in float64 from the QR decompositions of the centred (ridge-augmented) data, never forming a
    covariance. Unregularised (``epsilon=0``) CCA is invariant to any invertible linear map of either side and
    needs ``N > D + 1``; the default small ridge keeps rank-deficient inputs (dead units, duplicated features) usable.

    Args:
        x: first representation.
        y: second representation (same inputs).
        epsilon: ridge relative to each side's mean variance (``>= 0``).

    Returns:
        A :class:`CCAResult` (``correlations`` descending, ``min(rank X, rank Y)`` of them; ``.mean``).

    Shape:
        x: ``[N, D1]``, y: ``[N, D2]``.

    Raises:
        ValueError: different N, N < 2, NaNs, constant inputs; with ``epsilon=0``: ``N <= D + 1`` or rank-deficient
            inputs. Warns (UserWarning) when ``N <= rank + 1`` with a ridge.
    """
    epsilon = check_real(epsilon, "epsilon", low=0.0)
    x, y = matrix_pair(x, y, min_n=2, what="cca")
    n = x.shape[0]
    _, rho, (_, rx, u), (_, ry, v) = _cca_core(x, y, epsilon)
    scale = math.sqrt(n - 1)
    x_weights = torch.linalg.solve_triangular(rx, u, upper=True) * scale
    y_weights = torch.linalg.solve_triangular(ry, v, upper=True) * scale
    return CCAResult(rho, x_weights, y_weights, x.mean(0), y.mean(0), epsilon)


def _svd_reduce(x: torch.Tensor, keep: float | int, name: str) -> torch.Tensor:
    """The top singular directions of centred ``x`` explaining ``keep`` of its variance (or ``keep`` of them)."""
    xc = center(x, name)
    u, s, _ = torch.linalg.svd(xc, full_matrices=False)
    if isinstance(keep, int):
        if keep > s.numel():
            raise ValueError(f"keep={keep} dimensions, but {name} has only min(N, D)={s.numel()}")
        k = keep
    else:
        var = s * s
        frac = torch.cumsum(var, 0) / var.sum()
        # Smallest k whose leading directions explain at least `keep` of the variance (rounding-tolerant).
        k = int((frac < keep - 1e-12).sum()) + 1
        k = min(k, s.numel())
    return u[:, :k] * s[:k]


def _check_keep(keep: object) -> float | int:
    """An int number of directions (>= 1) or a fraction of variance in (0, 1]."""
    if is_int(keep):
        return check_int(keep, "keep", 1)
    if is_real(keep):
        return check_real(keep, "keep", low=0.0, high=1.0, low_inclusive=False)
    raise TypeError(f"keep must be a float in (0, 1] or an int >= 1, got {type(keep).__name__} {keep!r}")


def svcca(x: torch.Tensor, y: torch.Tensor, *, keep: float | int = 0.99, epsilon: float = 1e-6) -> float:
    r"""SVCCA similarity (Raghu et al. 2017): mean canonical correlation after an SVD reduction of each side.

    ``X' = U_k S_k`` from ``svd(Xc)`` keeping the fewest directions that explain ``keep`` of the variance (or
    exactly ``keep`` directions when it is an int), the same for ``Y``, then::

        SVCCA = mean_i rho_i( CCA(X', Y') )

    The reduction drops the noise directions that make plain CCA meaningless when D is not << N. Invariant to
    orthogonal transforms and isotropic scaling of either side; with no reduction (``keep=1.0``) to any
    invertible linear map, as CCA.

    Args:
        x: first representation.
        y: second representation (same inputs).
        keep: fraction of variance to keep, in (0, 1], or an int number of directions.
        epsilon: CCA ridge (see :func:`cca`).

    Returns:
        The mean canonical correlation of the reduced representations.

    Shape:
        x: ``[N, D1]``, y: ``[N, D2]``.
    """
    epsilon = check_real(epsilon, "epsilon", low=0.0)
    keep = _check_keep(keep)
    x, y = matrix_pair(x, y, min_n=2, what="svcca")
    xr = _svd_reduce(x, keep, "x")
    yr = _svd_reduce(y, keep, "y")
    _, rho, _, _ = _cca_core(xr, yr, epsilon)
    return float(rho.mean())


def pwcca(x: torch.Tensor, y: torch.Tensor, *, epsilon: float = 1e-6) -> float:
    r"""Projection-weighted CCA (Morcos et al. 2018): canonical correlations weighted by how much of ``X`` each
    canonical direction accounts for.

    With ``h_i = Xc a_i / ||Xc a_i||`` the canonical variates of ``X`` and ``x_j`` the centred activation of unit
    ``j`` over the N inputs::

        alpha_i = sum_j |<h_i, x_j>|,     PWCCA = sum_i alpha_i rho_i / sum_i alpha_i

    Directions that carry little of ``X``'s activity (often noise with a spurious correlation) count less than in
    the plain mean. Not symmetric: the weights come from ``x`` (pass the representation whose structure you care
    about, e.g. the fine-tuned model's layer, first). Invariant to invertible linear maps of ``y``.

    Args:
        x: representation that defines the weights.
        y: second representation (same inputs).
        epsilon: CCA ridge (see :func:`cca`).

    Returns:
        The weighted mean canonical correlation.

    Shape:
        x: ``[N, D1]``, y: ``[N, D2]``.
    """
    epsilon = check_real(epsilon, "epsilon", low=0.0)
    x, y = matrix_pair(x, y, min_n=2, what="pwcca")
    xc, rho, (qx, _, u), _ = _cca_core(x, y, epsilon)
    h = qx @ u
    h = h / h.norm(dim=0, keepdim=True).clamp_min(torch.finfo(h.dtype).tiny)
    alpha = (h.T @ xc).abs().sum(1)
    return float((alpha * rho).sum() / alpha.sum())


