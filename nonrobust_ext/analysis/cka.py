r"""Linear centred kernel alignment (CKA): biased, debiased, and accumulated over minibatches.

Linear CKA (Kornblith et al. 2019) compares two representations ``X [N, D1]`` and ``Y [N, D2]`` of the same N
inputs; it is invariant to orthogonal transforms and isotropic scaling of either side (not to arbitrary invertible
ones) and is 1 for identical representations. The plain estimator is biased upwards for few samples and many
features (independent random features score well above 0); the debiased one (unbiased HSIC, Song et al. 2012;
Nguyen et al. 2021) is not, and its minibatch form (:class:`MinibatchCKA`) handles data sets whose activations do
not fit in memory. Everything runs in float64 on the inputs' device; the feature-space HSIC is the compiled op
:func:`nonrobust_ext.ops.linear_hsic`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .. import ops as _ops
from .._validate import check_bool, check_int, is_int
from ._inputs import as_matrix, center, matrix_pair

__all__ = ["CKAMatrix", "MinibatchCKA", "linear_cka"]


# ------------------------------------------------------------------------------------------------------- HSIC


def _gram_inner(xc: torch.Tensor, yc: torch.Tensor) -> torch.Tensor:
    """<Xc Xc^T, Yc Yc^T>_F through row blocks of the N x N Gram matrices (never both whole)."""
    n = xc.shape[0]
    step = max(1, min(n, (1 << 22) // max(n, 1)))  # ~32 MB of float64 per block
    total = xc.new_zeros(())
    for i in range(0, n, step):
        total += ((xc[i : i + step] @ xc.T) * (yc[i : i + step] @ yc.T)).sum()
    return total


def _linear_hsic(x: torch.Tensor, y: torch.Tensor) -> float:
    r"""Biased linear HSIC numerator ``||Xc^T Yc||_F^2 = <Xc Xc^T, Yc Yc^T>_F`` (Xc, Yc column-centred), in float64.

    The normalisation ``1/(N-1)^2`` is left out (it cancels in CKA). Computed in feature space (``D1 x D2``) or,
    when that costs more (``N (D1 + D2) < D1 D2``, e.g. flattened conv maps), through row blocks of the Gram
    matrices. The feature-space form is the compiled op :func:`nonrobust_ext.ops.linear_hsic` (every build of
    the extension has it).

    Shape:
        x: ``[N, D1]``, y: ``[N, D2]`` float64 (centred or not).
    """
    n, d1 = x.shape
    d2 = y.shape[1]
    xc = x - x.mean(0, keepdim=True)
    yc = y if y is x else y - y.mean(0, keepdim=True)
    if n * (d1 + d2) < d1 * d2:
        return float(_gram_inner(xc, yc))
    # Centred float64 inputs: the op's ||X^T Y - N mx my^T|| form then has no cancellation to lose digits to.
    return float(_ops.linear_hsic(xc, yc))


def _unbiased_hsic(xc: torch.Tensor, yc: torch.Tensor, hsic: float | None = None) -> float:
    r"""Unbiased linear HSIC (Song et al. 2012) of column-centred ``xc``, ``yc`` without N x N matrices.

    With ``K = Xc Xc^T``, ``L = Yc Yc^T``, and ``K~``, ``L~`` the same with zero diagonals::

        HSIC_1 = [ tr(K~ L~) + 1^T K~ 1 * 1^T L~ 1 / ((N-1)(N-2)) - 2/(N-2) * 1^T K~ L~ 1 ] / (N (N-3))

    The estimator is unchanged by shifting the features, so it may be evaluated on centred data, where ``K 1 = 0``
    and with ``a = diag K``, ``b = diag L`` (squared row norms): ``tr(K~ L~) = ||Xc^T Yc||_F^2 - a.b``,
    ``1^T K~ 1 = -sum(a)`` and ``1^T K~ L~ 1 = a.b``. Needs N >= 4.
    """
    n = xc.shape[0]
    a = (xc * xc).sum(1)
    b = a if yc is xc else (yc * yc).sum(1)
    h = _linear_hsic(xc, yc) if hsic is None else hsic
    ab = float(a @ b)
    sa, sb = float(a.sum()), float(b.sum())
    return (h - ab + sa * sb / ((n - 1) * (n - 2)) - 2.0 * ab / (n - 2)) / (n * (n - 3))


def linear_cka(x: torch.Tensor, y: torch.Tensor, *, debiased: bool = False) -> float:
    r"""Linear centred kernel alignment between two representations of the same N inputs.

    Biased (Kornblith et al. 2019), with ``Xc``, ``Yc`` column-centred::

        CKA(X, Y) = ||Xc^T Yc||_F^2 / ( ||Xc^T Xc||_F * ||Yc^T Yc||_F )

    computed in float64 in feature space (``D x D`` matrices, no ``N x N`` one; flattened high-dimensional maps
    with ``D1 D2 > N (D1 + D2)`` go through row blocks of the Gram matrices instead). In [0, 1]; 1 when ``Y``
    is an orthogonal transform of ``X`` times a scalar; invariant to orthogonal transforms and isotropic
    scaling of either side, but not to non-isotropic scaling.

    Debiased (``debiased=True``): the same ratio with every HSIC replaced by the unbiased estimator of Song et al.
    (2012), as in Nguyen et al. (2021)::

        CKA_1 = HSIC_1(K, L) / sqrt(HSIC_1(K, K) HSIC_1(L, L)),   K = X X^T, L = Y Y^T

    The textbook form needs the ``N x N`` Gram matrices (fine up to a few thousand samples); here it is evaluated
    in ``O(N D1 D2)`` time and ``O(D1 D2)`` memory through the identities in :func:`_unbiased_hsic`, so any N
    works. Close to 0 for independent representations (the biased value is not, when D is not << N); it can be
    slightly negative, and it approaches the biased value as N grows.

    Args:
        x: first representation.
        y: second representation (same inputs, same row order).
        debiased: use the unbiased HSIC estimator (needs N >= 4).

    Returns:
        The CKA value as a Python float.

    Shape:
        x: ``[N, D1]``, y: ``[N, D2]``.

    Raises:
        ValueError: different N, N < 2 (N < 4 when debiased), NaN/inf values, a constant representation.
    """
    debiased = check_bool(debiased, "debiased")
    x, y = matrix_pair(x, y, min_n=4 if debiased else 2, what="debiased linear_cka" if debiased else "linear_cka")
    xc = center(x, "x")
    yc = center(y, "y")
    if not debiased:
        hxy = _linear_hsic(xc, yc)
        hxx = _linear_hsic(xc, xc)
        hyy = _linear_hsic(yc, yc)
        return hxy / math.sqrt(hxx * hyy)
    hxy = _unbiased_hsic(xc, yc)
    hxx = _unbiased_hsic(xc, xc)
    hyy = _unbiased_hsic(yc, yc)
    if hxx <= 0.0 or hyy <= 0.0:
        raise ValueError(
            f"debiased linear_cka: the unbiased self-HSIC is not positive (x: {hxx:.3g}, y: {hyy:.3g}); "
            f"N={x.shape[0]} samples are too few for this estimator"
        )
    return hxy / math.sqrt(hxx * hyy)


# ------------------------------------------------------------------------------------------------ minibatch CKA


@dataclasses.dataclass
class CKAMatrix:
    """Layer-by-layer CKA between two models (or one model with itself).

    Attributes:
        matrix: ``[len(layers_a), len(layers_b)]`` float64, ``matrix[i, j] = CKA(layers_a[i], layers_b[j])``.
        layers_a, layers_b: the layer names (rows, columns).
        num_batches: minibatches accumulated.
        num_samples: inputs accumulated.
        skipped_samples: inputs in batches of fewer than 4, which the unbiased estimator cannot use.
    """

    matrix: torch.Tensor
    layers_a: list[str]
    layers_b: list[str]
    num_batches: int = 0
    num_samples: int = 0
    skipped_samples: int = 0

    def paired(self) -> dict[str, float]:
        """``{layers_a[i]: matrix[i, i]}``: the similarity of corresponding layers (needs as many rows as columns)."""
        if len(self.layers_a) != len(self.layers_b):
            raise ValueError(
                f"paired() needs as many layers on each side, got {len(self.layers_a)} and {len(self.layers_b)}"
            )
        return {name: float(self.matrix[i, i]) for i, name in enumerate(self.layers_a)}

    def as_dict(self) -> dict[str, Any]:
        """Plain data for a JSON report."""
        return {
            "layers_a": list(self.layers_a),
            "layers_b": list(self.layers_b),
            "matrix": self.matrix.tolist(),
            "num_batches": self.num_batches,
            "num_samples": self.num_samples,
            "skipped_samples": self.skipped_samples,
        }


def _names(layers: Sequence[str] | int, arg: str) -> list[str]:
    """Layer names from a list of names, one name, or a number of layers (named ``"0"``, ``"1"``, ...)."""
    if is_int(layers):
        return [str(i) for i in range(check_int(layers, arg, 1))]
    if isinstance(layers, str):
        return [layers]
    if isinstance(layers, (bytes, Mapping)) or not isinstance(layers, Sequence):
        raise TypeError(f"{arg} must be a list of layer names or a number of layers, got {type(layers).__name__}")
    names = [str(n) for n in layers]
    if not names:
        raise ValueError(f"{arg} is empty")
    if len(set(names)) != len(names):
        raise ValueError(f"{arg} has duplicate names")
    return names


class MinibatchCKA:
    r"""Accumulates minibatch CKA (Nguyen et al. 2021) between every layer of one side and every layer of another.

    For each minibatch ``t`` of ``m >= 4`` inputs and each layer pair, the unbiased HSIC of the minibatch's
    Gram matrices is added up; at the end::

        CKA_mb(i, j) = sum_t HSIC_1(K_i^t, L_j^t) / sqrt( sum_t HSIC_1(K_i^t, K_i^t) * sum_t HSIC_1(L_j^t, L_j^t) )

    Each minibatch term is an unbiased estimate of the population HSIC, so the result converges to the same value
    as the full-batch debiased CKA (:func:`linear_cka` with ``debiased=True``) without ever holding more than one
    minibatch of activations; with a single batch holding all N inputs it equals that estimate exactly.

    Memory per update: one ``m x m`` float64 Gram matrix per layer (``8 m^2 (La + Lb)`` bytes; minibatches of a
    few hundred to a couple of thousand inputs are the intended use).

    Args:
        layers_a: names of the row layers (or their number).
        layers_b: names of the column layers (or their number); default: the same as ``layers_a``.

    Example::

        acc = MinibatchCKA(["layer1", "layer2"], ["layer1", "layer2"])
        for xb, _ in loader:
            acc.update(acts_a_of(xb), acts_b_of(xb))     # dicts or lists of [m, D] tensors
        cka = acc.compute()                                # [2, 2]
    """

    def __init__(self, layers_a: Sequence[str] | int, layers_b: Sequence[str] | int | None = None) -> None:
        self.layers_a = _names(layers_a, "layers_a")
        self.layers_b = list(self.layers_a) if layers_b is None else _names(layers_b, "layers_b")
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated."""
        self.hsic_ab = torch.zeros(len(self.layers_a), len(self.layers_b), dtype=torch.float64)
        self.hsic_aa = torch.zeros(len(self.layers_a), dtype=torch.float64)
        self.hsic_bb = torch.zeros(len(self.layers_b), dtype=torch.float64)
        self.num_batches = 0
        self.num_samples = 0
        self.skipped_samples = 0

    def _gather(self, acts: Mapping[str, torch.Tensor] | Sequence[torch.Tensor], names: list[str], arg: str
                ) -> list[torch.Tensor]:
        """The activation matrices of ``names`` out of a dict or a list, each a finite float64 ``[m, D]``."""
        if isinstance(acts, Mapping):
            missing = [n for n in names if n not in acts]
            if missing:
                raise ValueError(f"{arg} lacks layers {missing} (has {list(acts)})")
            mats = [acts[n] for n in names]
        elif isinstance(acts, (list, tuple)):
            mats = list(acts)
            if len(mats) != len(names):
                raise ValueError(f"{arg} has {len(mats)} activation matrices, expected {len(names)}")
        else:
            raise TypeError(f"{arg} must be a dict {{layer name: [m, D]}} or a list of [m, D] matrices, "
                            f"got {type(acts).__name__}")
        return [as_matrix(m, f"{arg}[{n!r}]") for m, n in zip(mats, names, strict=True)]

    @staticmethod
    def _grams(mats: list[torch.Tensor], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Stacked centred Gram matrices flattened ``[L, m*m]`` and their diagonals ``[L, m]``."""
        grams, diags = [], []
        for mat in mats:
            xc = mat.to(device)
            xc = xc - xc.mean(0, keepdim=True)
            k = xc @ xc.T
            grams.append(k.reshape(-1))
            diags.append(k.diagonal())
        return torch.stack(grams), torch.stack(diags)

    def update(
        self,
        acts_a: Mapping[str, torch.Tensor] | Sequence[torch.Tensor],
        acts_b: Mapping[str, torch.Tensor] | Sequence[torch.Tensor] | None = None,
    ) -> None:
        """Add one minibatch (the same ``m`` inputs on both sides).

        Args:
            acts_a: ``{name: [m, D]}`` (or a list in ``layers_a`` order) for the row layers.
            acts_b: the same for the column layers; default ``acts_a`` (self-similarity).

        Raises:
            ValueError: missing layers, different m across layers, NaNs. A batch of fewer than 4 inputs is not
                an error: it is skipped and counted in ``skipped_samples``.
        """
        mats_a = self._gather(acts_a, self.layers_a, "acts_a")
        mats_b = self._gather(acts_a if acts_b is None else acts_b, self.layers_b, "acts_b")
        sizes = {m.shape[0] for m in mats_a + mats_b}
        if len(sizes) != 1:
            raise ValueError(f"every layer must hold the same minibatch: got row counts {sorted(sizes)}")
        m = sizes.pop()
        if m < 4:
            self.skipped_samples += m
            return
        device = mats_a[0].device
        ka, da = self._grams(mats_a, device)
        kb, db = self._grams(mats_b, device)
        # Unbiased HSIC for all pairs at once (see _unbiased_hsic): the centred Gram matrices have zero row sums.
        h = ka @ kb.T
        ab = da @ db.T
        sa, sb = da.sum(1), db.sum(1)
        norm = m * (m - 3)
        hsic_ab = (h - ab + torch.outer(sa, sb) / ((m - 1) * (m - 2)) - 2.0 * ab / (m - 2)) / norm

        def self_hsic(k: torch.Tensor, d: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
            dd = (d * d).sum(1)
            return ((k * k).sum(1) - dd + s * s / ((m - 1) * (m - 2)) - 2.0 * dd / (m - 2)) / norm

        self.hsic_ab += hsic_ab.cpu()
        self.hsic_aa += self_hsic(ka, da, sa).cpu()
        self.hsic_bb += self_hsic(kb, db, sb).cpu()
        self.num_batches += 1
        self.num_samples += m

    def compute(self) -> torch.Tensor:
        """The ``[La, Lb]`` CKA matrix (float64) of everything accumulated.

        Raises:
            ValueError: nothing accumulated, or a layer whose accumulated self-HSIC is not positive (constant
                activations).
        """
        if self.num_batches == 0:
            raise ValueError("MinibatchCKA.compute: no minibatch of at least 4 inputs was accumulated")
        for names, hs, side in ((self.layers_a, self.hsic_aa, "a"), (self.layers_b, self.hsic_bb, "b")):
            bad = [n for n, v in zip(names, hs.tolist(), strict=True) if v <= 0.0]
            if bad:
                raise ValueError(f"layers {bad} of side {side} have no positive variance estimate (constant?)")
        return self.hsic_ab / torch.sqrt(torch.outer(self.hsic_aa, self.hsic_bb))

    def result(self) -> CKAMatrix:
        """:meth:`compute` with the layer names and counts."""
        return CKAMatrix(
            self.compute(),
            list(self.layers_a),
            list(self.layers_b),
            self.num_batches,
            self.num_samples,
            self.skipped_samples,
        )


