"""Class-conditional feature statistics on top of the compiled op: per-class moments that merge
across batches and DDP ranks.

::

    stats = class_stats(features, labels, num_classes=10)            # one batch: count, mean, m2
    total = ClassStats.zeros(10, 512)                                  # or accumulate over a loader:
    for x, y in loader:
        total = merge_class_stats(total, class_stats(embed(x), y, num_classes=10))
    total = all_reduce_class_stats(total)                              # the same on every DDP rank
    total.variance                                                     # [K, D], unbiased

Every entry point checks what enters (:mod:`nonrobust_ext._validate`): features finite, labels integers in
``[0, num_classes)`` one per row, at least one row; a :class:`ClassStats` holds consistent shapes and finite
moments. Representation similarity (linear CKA, biased, debiased and minibatch) is in
:mod:`nonrobust_ext.analysis.cka`, on top of the compiled ``linear_hsic``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import ops
from ._validate import check_bool, check_finite, check_int, check_nonempty, check_same_device, check_tensor

__all__ = ["ClassStats", "all_reduce_class_stats", "class_stats", "merge_class_stats"]


@dataclass(frozen=True)
class ClassStats:
    """Per-class moments of features.

    Attributes:
        count: ``[K]`` float64, rows per class (exact integers).
        mean: ``[K, D]`` class means (0 for an empty class).
        m2: ``[K, D]`` sums of squared deviations from the class mean, or ``[K, D, D]`` scatter
            matrices (:attr:`has_covariance`).
    """

    count: torch.Tensor
    mean: torch.Tensor
    m2: torch.Tensor

    def __post_init__(self) -> None:
        for name in ("count", "mean", "m2"):
            check_tensor(getattr(self, name), name)
        if self.count.dim() != 1:
            raise ValueError(f"count must be a 1-D tensor [K], got shape {tuple(self.count.shape)}")
        k = self.count.shape[0]
        if self.mean.dim() != 2 or self.mean.shape[0] != k:
            raise ValueError(f"mean must have shape [K, D] with K = {k} (one row per class of count), "
                             f"got {tuple(self.mean.shape)}")
        d = self.mean.shape[1]
        if tuple(self.m2.shape) not in ((k, d), (k, d, d)):
            raise ValueError(f"m2 must have shape [K, D] = [{k}, {d}] or [K, D, D] = [{k}, {d}, {d}], "
                             f"got {tuple(self.m2.shape)}")
        for name in ("count", "mean", "m2"):
            t = getattr(self, name)
            if not t.is_floating_point():
                raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}")
            check_finite(t, name)
        check_same_device([("count", self.count), ("mean", self.mean), ("m2", self.m2)])
        if self.count.device.type != "meta" and k and bool((self.count < 0).any()):
            raise ValueError("count must hold row counts >= 0")

    @classmethod
    def zeros(
        cls,
        num_classes: int,
        dim: int,
        *,
        covariance: bool = False,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> ClassStats:
        """The statistics of no rows: the identity of :func:`merge_class_stats`."""
        check_int(num_classes, "num_classes", 1)
        check_int(dim, "dim", 0)
        check_bool(covariance, "covariance")
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
        shape = (num_classes, dim, dim) if covariance else (num_classes, dim)
        return cls(
            torch.zeros(num_classes, dtype=torch.float64, device=device),
            torch.zeros(num_classes, dim, dtype=dtype, device=device),
            torch.zeros(shape, dtype=dtype, device=device),
        )

    @property
    def num_classes(self) -> int:
        return self.count.shape[0]

    @property
    def dim(self) -> int:
        return self.mean.shape[1]

    @property
    def has_covariance(self) -> bool:
        return self.m2.dim() == 3

    def var(self, correction: int = 1) -> torch.Tensor:
        """Per-class variances ``m2 / (count - correction)``, ``[K, D]``; NaN where
        ``count <= correction`` (as ``torch.var``)."""
        check_int(correction, "correction", 0)
        m2 = torch.diagonal(self.m2, dim1=1, dim2=2) if self.has_covariance else self.m2
        return m2 / self._denominator(correction).unsqueeze(1)

    def cov(self, correction: int = 1) -> torch.Tensor:
        """Per-class covariance matrices ``m2 / (count - correction)``, ``[K, D, D]``; needs statistics
        computed with ``covariance=True``."""
        check_int(correction, "correction", 0)
        if not self.has_covariance:
            raise ValueError("these statistics have no covariance: compute them with covariance=True")
        return self.m2 / self._denominator(correction).view(-1, 1, 1)

    @property
    def variance(self) -> torch.Tensor:
        """Unbiased per-class variances, ``[K, D]``."""
        return self.var(1)

    @property
    def covariance(self) -> torch.Tensor:
        """Unbiased per-class covariance matrices, ``[K, D, D]``."""
        return self.cov(1)

    def _denominator(self, correction: int) -> torch.Tensor:
        d = (self.count - correction).to(self.mean.dtype)
        return torch.where(d > 0, d, torch.full_like(d, math.nan))

    def total(self) -> ClassStats:
        """All classes pooled into one (``K = 1``): the statistics of every row regardless of label.

        Raises:
            ValueError: the statistics hold no row (pooled moments of nothing are not defined).
        """
        n = self.count.double()
        check_nonempty(int(n.sum()), "these statistics", "rows")
        mean = (n.unsqueeze(1) * self.mean.double()).sum(0) / n.sum()
        delta = self.mean.double() - mean  # each class's offset from the pooled mean
        if self.has_covariance:
            spread = (n.view(-1, 1, 1) * delta.unsqueeze(2) * delta.unsqueeze(1)).sum(0)
        else:
            spread = (n.unsqueeze(1) * delta * delta).sum(0)
        m2 = self.m2.double().sum(0) + spread
        return ClassStats(
            self.count.sum().reshape(1), mean.unsqueeze(0).to(self.mean.dtype), m2.unsqueeze(0).to(self.m2.dtype)
        )

    def merge(self, other: ClassStats) -> ClassStats:
        """Same as :func:`merge_class_stats`."""
        return merge_class_stats(self, other)


def class_stats(
    features: torch.Tensor, labels: torch.Tensor, *, num_classes: int, covariance: bool = False
) -> ClassStats:
    """Per-class count, mean and sum of squared deviations of ``features`` (one pass of the compiled
    :func:`nonrobust_ext.ops.class_feature_stats`).

    Args:
        features: ``[N, D]`` float32/float64/bfloat16/float16 (other floating dtypes are converted to
            float32).
        labels: ``[N]`` integer labels in ``[0, num_classes)``.
        num_classes: K.
        covariance: also the per-class scatter matrices (``m2`` is then ``[K, D, D]``).

    Returns:
        :class:`ClassStats`, with mean and m2 in float32 (float64 for float64 features).

    Raises:
        TypeError: a non-tensor, non-floating features, non-integer labels, a bad ``num_classes``/``covariance``.
        ValueError: features not ``[N, D]``, NaN/Inf features, no rows (``N = 0``: use :meth:`ClassStats.zeros`
            for the statistics of nothing), labels not one per row or outside ``[0, num_classes)``, features and
            labels on different devices.
    """
    check_tensor(features, "features")
    check_tensor(labels, "labels")
    num_classes = check_int(num_classes, "num_classes", 1)
    covariance = check_bool(covariance, "covariance")
    if features.dim() != 2:
        raise ValueError(f"features must be a 2-D [N, D] tensor, got shape {tuple(features.shape)}")
    if not features.is_floating_point():
        raise TypeError(f"features must be a floating-point tensor, got {features.dtype}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"labels must be an integer tensor, got {labels.dtype}")
    if labels.dim() != 1 or labels.shape[0] != features.shape[0]:
        raise ValueError(
            f"labels must have shape [{features.shape[0]}] (one per row of features), got {tuple(labels.shape)}"
        )
    check_nonempty(features.shape[0], "features", "rows")
    check_same_device([("features", features), ("labels", labels)])
    check_finite(features, "features")
    if labels.device.type != "meta":
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(f"labels must be in [0, num_classes) = [0, {num_classes}), got values in [{lo}, {hi}]")
    if features.dtype not in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
        features = features.float()
    count, mean, m2 = ops.class_feature_stats(
        features, labels.to(torch.int64), num_classes=num_classes, covariance=covariance
    )
    return ClassStats(count, mean, m2)


def _check_compatible(a: ClassStats, b: ClassStats) -> None:
    for name, s in (("a", a), ("b", b)):
        if not isinstance(s, ClassStats):
            raise TypeError(f"{name} must be a ClassStats, got {type(s).__name__}")
    check_same_device([("a", a.mean), ("b", b.mean)])
    if a.num_classes != b.num_classes or a.dim != b.dim:
        raise ValueError(f"b has {b.num_classes} classes x {b.dim} features but a has {a.num_classes} x {a.dim}")
    if a.has_covariance != b.has_covariance:
        raise ValueError("a and b must both have covariance (m2 [K, D, D]) or both not")


def merge_class_stats(a: ClassStats, b: ClassStats) -> ClassStats:
    """The statistics of the union of two disjoint sets of rows (Chan, Golub & LeVeque's update)::

        n = n_a + n_b,   delta = mean_b - mean_a
        mean = mean_a + delta * n_b / n
        m2   = m2_a + m2_b + delta delta^T * n_a n_b / n       (elementwise square without covariance)

    computed in float64 and returned in the wider of the two dtypes. Empty classes stay 0.
    """
    _check_compatible(a, b)
    dtype = torch.promote_types(a.mean.dtype, b.mean.dtype)
    n_a, n_b = a.count.double(), b.count.double()
    n = n_a + n_b
    safe = n.clamp(min=1)
    delta = b.mean.double() - a.mean.double()
    mean = a.mean.double() + delta * (n_b / safe).unsqueeze(1)
    weight = n_a * n_b / safe
    if a.has_covariance:
        spread = weight.view(-1, 1, 1) * delta.unsqueeze(2) * delta.unsqueeze(1)
    else:
        spread = weight.unsqueeze(1) * delta * delta
    m2 = a.m2.double() + b.m2.double() + spread
    return ClassStats(a.count + b.count, mean.to(dtype), m2.to(dtype))


def all_reduce_class_stats(stats: ClassStats, group=None) -> ClassStats:
    """Merges every rank's statistics (each rank passing the statistics of its own rows), so that each
    rank gets those of all rows.

    Two all-reduces of float64 sums, stable like :func:`merge_class_stats`: first the counts and
    ``count * mean`` (giving the global means), then each rank's ``m2`` re-centred on the global mean,
    ``m2_r + n_r (mean_r - mean)(mean_r - mean)^T``, whose sum is the global ``m2``. Deviations from the
    global mean are small, so nothing is lost to cancellation (unlike summing raw second moments).

    Args:
        stats: this rank's statistics, on a device the process group's backend accepts (CPU for gloo,
            CUDA for NCCL).
        group: the process group (default: the whole world).
    """
    import torch.distributed as dist

    if not isinstance(stats, ClassStats):
        raise TypeError(f"stats must be a ClassStats, got {type(stats).__name__}")
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("all_reduce_class_stats needs an initialised torch.distributed process group")
    count = stats.count.double()
    first = torch.cat([count.unsqueeze(1), stats.mean.double() * count.unsqueeze(1)], dim=1)
    dist.all_reduce(first, group=group)
    n = first[:, 0]
    mean = first[:, 1:] / n.clamp(min=1).unsqueeze(1)
    delta = stats.mean.double() - mean
    if stats.has_covariance:
        m2 = stats.m2.double() + count.view(-1, 1, 1) * delta.unsqueeze(2) * delta.unsqueeze(1)
    else:
        m2 = stats.m2.double() + count.unsqueeze(1) * delta * delta
    dist.all_reduce(m2, group=group)
    return ClassStats(n, mean.to(stats.mean.dtype), m2.to(stats.m2.dtype))
