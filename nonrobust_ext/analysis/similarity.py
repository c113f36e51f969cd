r"""Representation similarity between layers of two models: linear CKA (biased, debiased, minibatch), CCA,
SVCCA and PWCCA.

The study's evidence that a fine-tuned model inherits its pretrained source's features is layer-wise similarity
between the two models on the same inputs. Every measure here compares two activation matrices ``X [N, D1]`` and
``Y [N, D2]`` whose rows are the same N inputs (the feature dimensions may differ), e.g. as returned by
:func:`nonrobust_ext.analysis.collect_activations`:

- **linear CKA** (Kornblith et al. 2019): invariant to orthogonal transforms and isotropic scaling of either side,
  not to arbitrary invertible ones; 1 for identical representations. The plain estimator is biased upwards for
  few samples and many features (independent random features score well above 0); the debiased one (unbiased HSIC,
  Song et al. 2012; Nguyen et al. 2021) is not, and its minibatch form (:class:`MinibatchCKA`) handles data sets
  whose activations do not fit in memory.
- **CCA** (canonical correlations), **SVCCA** (Raghu et al. 2017: SVD reduction first) and **PWCCA** (Morcos et
  al. 2018: correlations weighted by how much of X each canonical direction accounts for). CCA is invariant to any
  invertible linear transform of either side, so it needs N well above D (or regularisation) to mean anything.

All computations run in float64 on the inputs' device; inputs may be any floating dtype.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import torch

from .. import ops as _ops
from .._progress import progress_bar
from ..attacks._common import eval_mode
from .activations import (
    Data,
    Pool,
    _batches,
    _check_batch_size,
    _LayerRecorder,
    _model_device,
    collect_activations,
)

__all__ = [
    "CCAResult",
    "CKAMatrix",
    "MinibatchCKA",
    "cca",
    "layer_similarity",
    "linear_cka",
    "minibatch_cka",
    "plot_layer_similarity",
    "pwcca",
    "svcca",
]

_METHODS = ("cka", "svcca", "pwcca", "cca")

# A representation whose centred sum of squares is below this fraction of its raw sum of squares is constant up to
# float64 rounding of its mean (relative spread ~1e-14): similarity to it is undefined.
_CONSTANT_RTOL = 1e-28


# --------------------------------------------------------------------------------------------------- validation


def _as_matrix(t: Any, name: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        try:
            t = torch.as_tensor(t)
        except (TypeError, ValueError, RuntimeError) as e:
            raise TypeError(f"{name} must be a tensor [N, D], got {type(t).__name__}") from e
    if t.ndim != 2:
        raise ValueError(
            f"{name} must be a matrix [N, D] (one row per input), got shape {tuple(t.shape)}"
            + ("; use reshape(-1, 1) for a single feature" if t.ndim == 1 else "")
        )
    if t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"{name} must be real-valued, got dtype {t.dtype}")
    t = t.to(torch.float64)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return t


def _check_pair(x: Any, y: Any, *, min_n: int, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Both inputs as float64 matrices on x's device, with the same number of rows (at least ``min_n``)."""
    x = _as_matrix(x, "x")
    y = _as_matrix(y, "y").to(x.device)
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"x and y must hold the same inputs (rows): x has N={x.shape[0]}, y has N={y.shape[0]}"
        )
    if x.shape[0] < min_n:
        raise ValueError(f"{what} needs at least {min_n} samples (rows), got N={x.shape[0]}")
    if x.shape[1] == 0 or y.shape[1] == 0:
        raise ValueError(f"x and y need at least one feature (column), got D1={x.shape[1]}, D2={y.shape[1]}")
    return x, y


def _center(x: torch.Tensor, name: str) -> torch.Tensor:
    """Column-centred copy; refuses a representation that is constant over the samples."""
    xc = x - x.mean(0, keepdim=True)
    ss_c = float((xc * xc).sum())
    ss = float((x * x).sum())
    if ss_c <= _CONSTANT_RTOL * ss or ss_c == 0.0:
        raise ValueError(f"{name} is constant over the N samples (zero variance): its similarity is undefined")
    return xc


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
    matrices; the compiled op ``nonrobust_ext.ops.linear_hsic`` is used for the feature-space form when the
    extension has it.

    Shape:
        x: ``[N, D1]``, y: ``[N, D2]`` float64 (centred or not).
    """
    n, d1 = x.shape
    d2 = y.shape[1]
    xc = x - x.mean(0, keepdim=True)
    yc = y if y is x else y - y.mean(0, keepdim=True)
    if n * (d1 + d2) < d1 * d2:
        return float(_gram_inner(xc, yc))
    op = getattr(_ops, "linear_hsic", None)
    if op is not None:
        # Centred float64 inputs: the op's ||X^T Y - N mx my^T|| form then has no cancellation to lose digits to.
        return float(op(xc, yc))
    cross = xc.T @ yc
    return float((cross * cross).sum())


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
    x, y = _check_pair(x, y, min_n=4 if debiased else 2, what="debiased linear_cka" if debiased else "linear_cka")
    xc = _center(x, "x")
    yc = _center(y, "y")
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
    if isinstance(layers, int) and not isinstance(layers, bool):
        if layers < 1:
            raise ValueError(f"{arg} must be a positive number of layers or a list of names, got {layers}")
        return [str(i) for i in range(layers)]
    if isinstance(layers, str):
        return [layers]
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

    def _gather(self, acts: Mapping[str, torch.Tensor] | Sequence[torch.Tensor], names: list[str], arg: str):
        if isinstance(acts, Mapping):
            missing = [n for n in names if n not in acts]
            if missing:
                raise ValueError(f"{arg} lacks layers {missing} (has {list(acts)})")
            mats = [acts[n] for n in names]
        else:
            mats = list(acts)
            if len(mats) != len(names):
                raise ValueError(f"{arg} has {len(mats)} activation matrices, expected {len(names)}")
        return [_as_matrix(m, f"{arg}[{n!r}]") for m, n in zip(mats, names, strict=True)]

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


def minibatch_cka(
    model_a: torch.nn.Module,
    model_b: torch.nn.Module,
    data: Data,
    layers_a: Sequence[str],
    layers_b: Sequence[str] | None = None,
    *,
    batch_size: int = 256,
    pool: Pool = "mean",
    device: torch.device | str | None = None,
    progress: bool = False,
) -> CKAMatrix:
    r"""Layer-by-layer minibatch CKA between two models on the same inputs (Nguyen et al. 2021).

    Both models see each batch; the outputs of ``layers_a`` (model A) and ``layers_b`` (model B) are pooled as in
    :func:`~nonrobust_ext.analysis.collect_activations` and fed to :class:`MinibatchCKA`, so only one batch of
    activations is held at a time::

        CKA_mb(i, j) = sum_t HSIC_1(K_i^t, L_j^t) / sqrt( sum_t HSIC_1(K_i^t, K_i^t) sum_t HSIC_1(L_j^t, L_j^t) )

    Models run in eval mode under no_grad (training flags restored, hooks removed afterwards). ``model_b`` may be
    ``model_a`` (self-similarity; one forward pass per batch).

    Args:
        model_a, model_b: the two networks (e.g. pretrained and fine-tuned).
        data: input tensor ``[N, ...]`` or an iterable of ``x`` / ``(x, y)`` batches.
        layers_a: submodule names of model A (rows).
        layers_b: submodule names of model B (columns); default ``layers_a``.
        batch_size: minibatch size when ``data`` is a tensor (at least 4; the last batch is skipped if smaller).
        pool: how layer outputs become ``[m, D]`` (see ``collect_activations``).
        device: where both models run (inputs moved there); default each model's own device.
        progress: show a progress bar.

    Returns:
        A :class:`CKAMatrix` (``matrix [len(layers_a), len(layers_b)]``).

    Shape:
        each layer's pooled output: ``[m, D_layer]``.
    """
    _check_batch_size(batch_size)
    if isinstance(data, torch.Tensor) and batch_size < 4:
        raise ValueError(f"batch_size must be at least 4 for the unbiased HSIC, got {batch_size}")
    if isinstance(layers_a, str):
        layers_a = [layers_a]
    if layers_b is None:
        layers_b = list(layers_a)
    elif isinstance(layers_b, str):
        layers_b = [layers_b]
    acc = MinibatchCKA(list(layers_a), list(layers_b))
    same = model_b is model_a
    if same:
        rec_a = _LayerRecorder(model_a, list(dict.fromkeys([*layers_a, *layers_b])), pool, "layers_a/layers_b")
        rec_b = None
    else:
        rec_a = _LayerRecorder(model_a, layers_a, pool, "layers_a")
        rec_b = _LayerRecorder(model_b, layers_b, pool, "layers_b")
    dev_a = torch.device(device) if device is not None else _model_device(model_a, torch.device("cpu"))
    dev_b = torch.device(device) if device is not None else _model_device(model_b, dev_a)
    with rec_a, eval_mode(model_a), torch.no_grad():
        if rec_b is None:
            for xb in progress_bar(_batches(data, batch_size), enabled=progress, description="minibatch CKA"):
                out = rec_a.run(xb.to(dev_a))
                acc.update(out, out)
        else:
            with rec_b, eval_mode(model_b):
                for xb in progress_bar(_batches(data, batch_size), enabled=progress, description="minibatch CKA"):
                    out_a = rec_a.run(xb.to(dev_a))
                    out_b = rec_b.run(xb.to(dev_b))
                    acc.update(out_a, {k: v.to(dev_a) for k, v in out_b.items()})
    return acc.result()


# ------------------------------------------------------------------------------------------------ CCA family


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


def _check_epsilon(epsilon: float) -> float:
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not math.isfinite(epsilon) or epsilon < 0:
        raise ValueError(f"epsilon must be a finite number >= 0, got {epsilon!r}")
    return float(epsilon)


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
    xc = _center(x, "x")
    yc = _center(y, "y")
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
    epsilon = _check_epsilon(epsilon)
    x, y = _check_pair(x, y, min_n=2, what="cca")
    n = x.shape[0]
    _, rho, (_, rx, u), (_, ry, v) = _cca_core(x, y, epsilon)
    scale = math.sqrt(n - 1)
    x_weights = torch.linalg.solve_triangular(rx, u, upper=True) * scale
    y_weights = torch.linalg.solve_triangular(ry, v, upper=True) * scale
    return CCAResult(rho, x_weights, y_weights, x.mean(0), y.mean(0), epsilon)


def _svd_reduce(x: torch.Tensor, keep: float | int, name: str) -> torch.Tensor:
    """The top singular directions of centred ``x`` explaining ``keep`` of its variance (or ``keep`` of them)."""
    xc = _center(x, name)
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
    epsilon = _check_epsilon(epsilon)
    if isinstance(keep, bool) or not isinstance(keep, (int, float)):
        raise TypeError(f"keep must be a float in (0, 1] or an int >= 1, got {keep!r}")
    if isinstance(keep, int) and keep < 1:
        raise ValueError(f"keep must be an int >= 1 or a float in (0, 1], got {keep}")
    if isinstance(keep, float) and not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must be a fraction of variance in (0, 1], got {keep}")
    x, y = _check_pair(x, y, min_n=2, what="svcca")
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
    epsilon = _check_epsilon(epsilon)
    x, y = _check_pair(x, y, min_n=2, what="pwcca")
    xc, rho, (qx, _, u), _ = _cca_core(x, y, epsilon)
    h = qx @ u
    h = h / h.norm(dim=0, keepdim=True).clamp_min(torch.finfo(h.dtype).tiny)
    alpha = (h.T @ xc).abs().sum(1)
    return float((alpha * rho).sum() / alpha.sum())


# ------------------------------------------------------------------------------------------------ model pairs


def layer_similarity(
    model_a: torch.nn.Module,
    model_b: torch.nn.Module,
    data: Data,
    layers: Sequence[str],
    *,
    method: str = "cka",
    pool: Pool = "mean",
    layers_b: Sequence[str] | None = None,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    debiased: bool = False,
    keep: float | int = 0.99,
    epsilon: float = 1e-6,
    progress: bool = False,
) -> dict[str, float]:
    r"""Similarity of corresponding layers of two models on the same inputs (e.g. pretrained vs fine-tuned).

    For each ``i``: ``sim(acts_a[layers[i]], acts_b[layers_b[i]])`` with the activations of
    :func:`~nonrobust_ext.analysis.collect_activations` (all N inputs held in memory, on the CPU) and ``sim`` one of::

        "cka"    linear_cka(debiased=debiased)
        "svcca"  svcca(keep=keep, epsilon=epsilon)
        "pwcca"  pwcca(acts_a, acts_b, epsilon=epsilon)     (weights from model A's layer)
        "cca"    mean canonical correlation, cca(epsilon=epsilon).mean

    For data sets too large to hold, use :func:`minibatch_cka`.

    Args:
        model_a, model_b: the two networks (``model_b`` may be ``model_a``).
        data: input tensor ``[N, ...]`` or an iterable of ``x`` / ``(x, y)`` batches (iterated once per model).
        layers: submodule names of model A.
        method: ``"cka"``, ``"svcca"``, ``"pwcca"`` or ``"cca"``.
        pool: how layer outputs become ``[N, D]`` (see ``collect_activations``).
        layers_b: submodule names of model B, paired with ``layers`` in order; default ``layers``.
        batch_size, device, progress: as ``collect_activations``.
        debiased, keep, epsilon: options of the measure (see above).

    Returns:
        ``{layers[i]: similarity}`` in order.

    Shape:
        each pooled layer output: ``[N, D_layer]``.
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    if isinstance(layers, str):
        layers = [layers]
    layers = list(layers)
    layers_b = list(layers) if layers_b is None else ([layers_b] if isinstance(layers_b, str) else list(layers_b))
    if len(layers_b) != len(layers):
        raise ValueError(f"layers_b must pair with layers: got {len(layers_b)} names for {len(layers)}")
    if model_b is not model_a and isinstance(data, Iterator):
        raise TypeError(
            "data must be a tensor or a re-iterable collection (e.g. a DataLoader), not a one-shot iterator: "
            "it is read once per model"
        )

    kw: dict[str, Any] = {"pool": pool, "batch_size": batch_size, "device": device, "progress": progress}
    if model_b is model_a:
        acts_a = acts_b = collect_activations(model_a, data, list(dict.fromkeys([*layers, *layers_b])), **kw)
    else:
        acts_a = collect_activations(model_a, data, layers, **kw)
        acts_b = collect_activations(model_b, data, layers_b, **kw)
    result: dict[str, float] = {}
    for name_a, name_b in zip(layers, layers_b, strict=True):
        xa, xb = acts_a[name_a], acts_b[name_b]
        if xa.ndim != 2 or xb.ndim != 2:
            xa, xb = xa.reshape(xa.shape[0], -1), xb.reshape(xb.shape[0], -1)
        if method == "cka":
            result[name_a] = linear_cka(xa, xb, debiased=debiased)
        elif method == "svcca":
            result[name_a] = svcca(xa, xb, keep=keep, epsilon=epsilon)
        elif method == "pwcca":
            result[name_a] = pwcca(xa, xb, epsilon=epsilon)
        else:
            result[name_a] = cca(xa, xb, epsilon=epsilon).mean
    return result


# ------------------------------------------------------------------------------------------------------ plots

PlotInput = Union[Mapping[str, float], Mapping[str, Mapping[str, float]], CKAMatrix]


def plot_layer_similarity(
    result: PlotInput,
    path: str | Path,
    *,
    title: str | None = None,
    ylabel: str = "similarity",
) -> Path:
    """Save a plot of layer similarities as an image (needs matplotlib: ``pip install matplotlib``).

    - ``{layer: value}`` (from :func:`layer_similarity`): one curve over the layers;
    - ``{series: {layer: value}}``: one curve per series (e.g. "fine-tuned vs pretrained" and
      "standard vs pretrained"), with a legend;
    - a :class:`CKAMatrix` (from :func:`minibatch_cka`): a heat map.

    Args:
        result: what to plot (see above).
        path: output file; the format follows the suffix (``.png``, ``.pdf``, ``.svg``); parent folders are
            created.
        title: figure title.
        ylabel: y-axis label of the curves.

    Returns:
        The path written.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError(
            "plot_layer_similarity needs matplotlib: pip install matplotlib (or the plot extra: "
            "pip install 'nonrobust_ext[plot]')"
        ) from e
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(result, CKAMatrix):
        la, lb = len(result.layers_a), len(result.layers_b)
        fig = Figure(figsize=(1.0 + 0.5 * lb + 1.5, 1.0 + 0.5 * la + 1.0), layout="constrained")
        ax = fig.add_subplot()
        im = ax.imshow(result.matrix.cpu().numpy(), vmin=0.0, vmax=1.0, cmap="magma", origin="lower")
        ax.set_xticks(range(lb), result.layers_b, rotation=60, ha="right")
        ax.set_yticks(range(la), result.layers_a)
        ax.set_xlabel("model B layer")
        ax.set_ylabel("model A layer")
        fig.colorbar(im, ax=ax, label="CKA")
    else:
        if not isinstance(result, Mapping) or not result:
            raise TypeError(
                "result must be a non-empty {layer: value} dict, a {series: {layer: value}} dict or a CKAMatrix"
            )
        first = next(iter(result.values()))
        series = dict(result) if isinstance(first, Mapping) else {"": result}
        layers = list(dict.fromkeys(name for s in series.values() for name in s))
        fig = Figure(figsize=(max(4.0, 0.45 * len(layers) + 2.0), 3.6), layout="constrained")
        ax = fig.add_subplot()
        pos = {name: i for i, name in enumerate(layers)}
        for label, values in series.items():
            xs = [pos[name] for name in values]
            ax.plot(xs, [float(v) for v in values.values()], marker="o", label=label or None)
        ax.set_xticks(range(len(layers)), layers, rotation=60, ha="right")
        ax.set_ylabel(ylabel)
        ax.set_xlabel("layer")
        ax.grid(alpha=0.3)
        if len(series) > 1 or next(iter(series)):
            ax.legend()
    if title:
        ax.set_title(title)
    fig.savefig(path, dpi=120)
    return path
