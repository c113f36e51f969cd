r"""Feature usefulness and robustness (Ilyas et al., 2019, "Adversarial examples are not bugs, they are
features").

A feature is a function ``f`` from inputs to reals; here the coordinates of a model's penultimate
embedding (``model.forward_features``) or of any user-supplied ``features`` callable. For a binary task
with labels ``y in {-1, +1}``, Ilyas et al. call ``f`` *useful* when ``E[y f(x)]`` is large (with ``f``
standardised), and *robustly useful* when it stays large under adversarial perturbation of ``x``.

Multi-class data is read one-vs-rest: for each class ``c`` the task ``y_c = +1`` (label ``c``) against
``y_c = -1`` (any other label). Ilyas et al.'s binary tasks are balanced, so each one-vs-rest task is
reweighted to be balanced too (the positives and the negatives each carry half the weight), and the
feature is standardised on clean data under that balanced weighting. With ``mu_+ / mu_-`` the mean of
feature ``d`` on the positives / negatives and ``sigma`` its balanced standard deviation on clean data::

    usefulness[c, d] = E_bal[y_c * (f_d(x) - m) / sigma] = (mu_+ - mu_-) / (2 * sigma)

which lies in ``[-1, 1]``: 1 for a feature equal to the label sign ``y_c``, about 0 for a feature
independent of the label. Under attack the same clean standardisation is applied to the features of
the adversarial inputs, so ``adversarial[c, d] = (mu_+^adv - mu_-^adv) / (2 * sigma)``.

The worst case of Ilyas et al.'s definition (an infimum over perturbations *per feature*) would need one
attack per feature and class; here the perturbation is the one an attack on the *model* finds (PGD on
its classification loss by default) -- the perturbation that matters for the model's robustness, and
the same one for every feature.

Computation: per batch, the clean and adversarial features go through the compiled class-statistics op
(:func:`nonrobust_ext.stats.class_stats`, one pass, float64) and the per-class counts, means and sums of
squared deviations are merged across batches (:func:`nonrobust_ext.stats.merge_class_stats`); the balanced
statistics are assembled from those class moments around the pooled mean, so a feature with a large
offset keeps its digits (raw second moments ``E[f^2] - E[f]^2`` would cancel them).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from typing import Any

import torch

from .._progress import progress_bar
from .._validate import check_bool, check_finite, check_nonempty, check_optional_int, check_real
from ..attacks._common import LogitsSelector, eval_mode
from ..data import TensorData
from ..stats import ClassStats, class_stats, merge_class_stats
from ._inputs import (
    AttackFn,
    Data,
    FeatureFn,
    attack_name,
    check_images,
    check_labels_below,
    check_model,
    embed,
    feature_fn,
    labelled_batches,
    nan_to_none,
    pyplot_figure,
    resolve_attack,
    resolve_device,
    run_attack,
)

# --------------------------------------------------------------------------------------------------
# Feature usefulness.
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class FeatureUsefulness:
    """What :func:`feature_usefulness` measured.

    Attributes:
        clean: ``[K, D]`` usefulness of feature ``d`` for the one-vs-rest task of class ``c`` on clean inputs.
        adversarial: ``[K, D]`` the same on the adversarial inputs (clean standardisation).
        ranking: the (class, feature) pairs useful on clean data (``clean >= threshold``), most useful
            first, each a dict ``{"class", "feature", "clean", "adversarial", "robust"}`` where
            ``robust`` says the pair is still useful under attack (``adversarial >= robust_threshold``).
        robust_share: the share of the total clean usefulness of those pairs that survives the attack:
            ``sum(clamp(adversarial, 0, clean)) / sum(clean)`` over the useful pairs (NaN when no pair
            is useful).
        threshold, robust_threshold: the usefulness thresholds used.
        eps: the attack radius.
        attack: the attack's name.
        class_counts: samples per class (a class without samples has usefulness 0 throughout).
        num_samples: samples evaluated.
    """

    clean: torch.Tensor
    adversarial: torch.Tensor
    ranking: list[dict[str, Any]]
    robust_share: float
    threshold: float
    robust_threshold: float
    eps: float
    attack: str
    class_counts: list[int]
    num_samples: int

    @property
    def robust_useful(self) -> list[dict[str, Any]]:
        """The useful pairs that stay useful under attack, most useful (clean) first."""
        return [r for r in self.ranking if r["robust"]]

    @property
    def non_robust_useful(self) -> list[dict[str, Any]]:
        """The useful pairs that the attack makes useless, most useful (clean) first."""
        return [r for r in self.ranking if not r["robust"]]

    def summary(self, top: int = 5) -> dict[str, Any]:
        """Plain counts and shares (JSON-ready), with the ``top`` pairs of each kind."""
        useful = len(self.ranking)
        robust = len(self.robust_useful)
        clean_total = float(sum(r["clean"] for r in self.ranking))
        return {
            "num_samples": self.num_samples,
            "num_classes": int(self.clean.shape[0]),
            "num_features": int(self.clean.shape[1]),
            "attack": self.attack,
            "eps": self.eps,
            "threshold": self.threshold,
            "robust_threshold": self.robust_threshold,
            "num_useful": useful,
            "num_robust_useful": robust,
            "num_non_robust_useful": useful - robust,
            "robust_fraction": robust / useful if useful else None,
            "robust_share": nan_to_none(self.robust_share),
            "clean_usefulness_total": clean_total,
            "mean_abs_clean": float(self.clean.abs().mean()) if self.clean.numel() else 0.0,
            "mean_abs_adversarial": float(self.adversarial.abs().mean()) if self.adversarial.numel() else 0.0,
            "top_robust_useful": self.robust_useful[:top],
            "top_non_robust_useful": self.non_robust_useful[:top],
        }

    def as_dict(self) -> dict[str, Any]:
        """Everything as plain data (the ``[K, D]`` matrices as nested lists)."""
        return {
            **self.summary(top=0),
            "clean": self.clean.tolist(),
            "adversarial": self.adversarial.tolist(),
            "ranking": list(self.ranking),
            "class_counts": list(self.class_counts),
        }


def _pad_classes(stats: ClassStats, num_classes: int) -> ClassStats:
    """``stats`` with empty classes appended up to ``num_classes`` (labels seen later in an iterable)."""
    grow = num_classes - stats.num_classes
    if grow <= 0:
        return stats
    return ClassStats(
        torch.cat([stats.count, stats.count.new_zeros(grow)]),
        torch.cat([stats.mean, stats.mean.new_zeros(grow, stats.dim)]),
        torch.cat([stats.m2, stats.m2.new_zeros(grow, *stats.m2.shape[1:])]),
    )


def _balanced_usefulness(
    count: torch.Tensor, mean: torch.Tensor, m2: torch.Tensor, other_mean: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    r"""Balanced one-vs-rest usefulness from per-class counts, means and sums of squared deviations (float64).

    For class ``c`` the positives are its rows and the negatives every other row. With the negatives' mean
    ``mu_-`` and population variance ``v_-`` assembled from the other classes' moments around the pooled mean
    ``M`` (``e = mu_- - M``, ``dev_k = mean_k - M``)::

        mu_-      = M + (sum_k n_k dev_k - n_c dev_c) / n_-
        n_- v_-   = sum_{k != c} m2_k + sum_{k != c} n_k dev_k^2 - n_- e^2
        sigma^2   = (v_+ + v_-) / 2 + (mu_+ - mu_-)^2 / 4                (the balanced mixture's variance)
        usefulness = (mu_+ - mu_-) / (2 sigma)

    Deviations from the pooled mean are small, so no digits are lost to cancellation (unlike raw second
    moments). Rows of classes without positives or negatives, and features whose balanced deviation is
    below ``1e-12`` of their root mean square (constant, dead units), are 0.
    """
    n = count[:, None]
    total = count.sum()
    n_neg = total - n
    ok = (n > 0) & (n_neg > 0)
    safe_n, safe_neg = n.clamp_min(1), n_neg.clamp_min(1)
    pooled = (n * mean).sum(0, keepdim=True) / total
    dev = mean - pooled
    weighted = n * dev
    e = (weighted.sum(0, keepdim=True) - weighted) / safe_neg
    mu_pos, mu_neg = mean, pooled + e
    between = (weighted * dev).sum(0, keepdim=True) - weighted * dev
    m2_neg = (m2.sum(0, keepdim=True) - m2 + between - n_neg * e * e).clamp_min(0)
    diff = mu_pos - mu_neg
    var_bal = 0.5 * (m2 / safe_n + m2_neg / safe_neg) + 0.25 * diff * diff
    sigma = var_bal.sqrt()
    mean_bal = 0.5 * (mu_pos + mu_neg)
    # A constant feature (dead unit) is useless; guard the division relative to the feature's scale.
    tiny = 1e-12 * (var_bal + mean_bal * mean_bal).sqrt().clamp_min(1e-30)
    valid = ok & (sigma > tiny)
    denom = torch.where(valid, 2 * sigma, torch.ones_like(sigma))
    clean = torch.where(valid, diff / denom, torch.zeros_like(sigma))
    other = None
    if other_mean is not None:
        weighted_other = n * other_mean
        other_neg = (weighted_other.sum(0, keepdim=True) - weighted_other) / safe_neg
        other = torch.where(valid, (other_mean - other_neg) / denom, torch.zeros_like(sigma))
    return clean, other


def usefulness_from_moments(
    count: torch.Tensor, sum_clean: torch.Tensor, sumsq_clean: torch.Tensor, sum_other: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Balanced one-vs-rest usefulness from per-class raw moments (see the module docstring).

    The sums are turned into class means and sums of squared deviations, ``m2 = sumsq - sum^2 / n``, and
    scored as :func:`feature_usefulness` scores the class statistics of the compiled op. (Raw second moments
    lose digits to cancellation for features with a large offset; :func:`feature_usefulness` never forms them.)

    Args:
        count: ``[K]`` samples per class (>= 0, at least one sample in all).
        sum_clean, sumsq_clean: ``[K, D]`` per-class sums of the clean features and of their squares.
        sum_other: optional ``[K, D]`` per-class sums of the features of other inputs (adversarial),
            scored with the clean standardisation.

    Returns:
        ``(clean [K, D], other [K, D] or None)`` in float64; rows of classes without positives or negatives,
        and features with zero clean variance, are 0.

    Raises:
        TypeError: a non-tensor argument.
        ValueError: shapes that do not match, NaN/Inf, negative counts, no sample at all.
    """
    count = check_finite(count, "count").double()
    if count.dim() != 1:
        raise ValueError(f"count must be a 1-D tensor [K], got shape {tuple(count.shape)}")
    if bool((count < 0).any()):
        raise ValueError("count must hold counts >= 0")
    check_nonempty(int(count.sum()), "count")
    shape = (count.shape[0], -1)
    named = {"sum_clean": sum_clean, "sumsq_clean": sumsq_clean}
    if sum_other is not None:
        named["sum_other"] = sum_other
    for name, t in named.items():
        check_finite(t, name)
        if t.dim() != 2 or t.shape[0] != shape[0] or t.shape != sum_clean.shape:
            raise ValueError(f"{name} must have shape [K, D] = {tuple(sum_clean.shape)} with K = {shape[0]} "
                             f"(one row per class of count), got {tuple(t.shape)}")
    n = count[:, None].clamp_min(1)
    mean = sum_clean.double() / n
    m2 = (sumsq_clean.double() - sum_clean.double() * mean).clamp_min(0)
    other_mean = None if sum_other is None else sum_other.double() / n
    return _balanced_usefulness(count, mean, m2, other_mean)


def feature_usefulness(
    model: torch.nn.Module,
    data: Data,
    *,
    attack: str | AttackFn = "pgd",
    eps: float,
    features: FeatureFn | None = None,
    threshold: float = 0.1,
    robust_threshold: float | None = None,
    num_classes: int | None = None,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    logits: LogitsSelector = None,
    progress: bool = False,
    adversarial: torch.Tensor | None = None,
    **attack_kwargs: Any,
) -> FeatureUsefulness:
    r"""Usefulness of every embedding feature for every class, on clean and on adversarial inputs.

    For each batch the features of the clean inputs and of their adversarial versions
    (``attack(model, x, y, eps=eps, **attack_kwargs)``, untargeted on the true labels, every sample
    attacked) go through the compiled class-statistics op (:func:`nonrobust_ext.stats.class_stats`, in
    float64), and the per-class counts, means and sums of squared deviations of the batches are merged;
    the balanced one-vs-rest usefulness is computed from them at the end (see the module docstring)::

        usefulness[c, d] = (mu_+ - mu_-) / (2 sigma)           (clean features, balanced std sigma)
        adversarial[c, d] = (mu_+^adv - mu_-^adv) / (2 sigma)  (same clean sigma)

    A pair ``(c, d)`` is *useful* when ``usefulness >= threshold``, *robustly useful* when moreover
    ``adversarial >= robust_threshold`` (default ``threshold``), non-robustly useful otherwise.
    (A feature useful with the opposite sign is the feature ``-f_d``: it shows as a negative entry and
    is not ranked.)

    Args:
        model: the classifier the attack runs on (evaluated in eval mode, its modes restored).
        data: a :class:`~nonrobust_ext.data.TensorData`, a pair ``(x, y)`` or an iterable of batches.
        attack: a name of :data:`nonrobust_ext.attacks.registry.ATTACKS` (``"pgd"``, ...) or a callable
            ``attack(model, x, y, eps=..., **attack_kwargs)`` returning the adversarial batch.
        eps: the attack radius (>= 0; 0 scores the clean inputs twice).
        features: ``callable(x) -> [B, D]`` (further dimensions are flattened); default
            ``model.forward_features``.
        threshold: usefulness above which a pair counts as useful (``rho`` of Ilyas et al.).
        robust_threshold: adversarial usefulness above which a useful pair counts as robust
            (``gamma``); default ``threshold``.
        num_classes: K (>= 2); default the data's class count (``TensorData``) or the largest label + 1.
            Every label must be below it.
        batch_size: batch size when ``data`` is a set or a pair of tensors.
        device: where to evaluate (default: the model's device); batches are moved there.
        logits: where the logits are in the model's output (passed to named attacks).
        progress: show a progress bar (tqdm).
        adversarial: the adversarial inputs, already crafted (e.g. once for several analyses), one per
            sample of ``data`` (a pair or ``TensorData``); no attack runs then, and ``eps`` only labels
            the result.
        attack_kwargs: passed to the attack (e.g. ``steps=10, seed=0``).

    Returns:
        A :class:`FeatureUsefulness`.

    Shape:
        clean, adversarial: ``[K, D]``.

    Raises:
        TypeError, ValueError: bad arguments (each names its argument); NaN/Inf in the images, the adversarial
            inputs or the features; labels outside ``[0, num_classes)``; no samples.
    """
    check_model(model)
    eps = check_real(eps, "eps", low=0.0)
    threshold = check_real(threshold, "threshold")
    robust_threshold = threshold if robust_threshold is None else check_real(robust_threshold, "robust_threshold")
    num_classes = check_optional_int(num_classes, "num_classes", 2)
    check_bool(progress, "progress")
    if num_classes is None and isinstance(data, TensorData):
        num_classes = data.num_classes
    embed_fn = feature_fn(model, features)
    attack_fn, kwargs = resolve_attack(attack, logits, attack_kwargs)
    dev = resolve_device(model, device)
    batches = labelled_batches(data, batch_size)
    crafted: Iterator[torch.Tensor] | None = None
    if adversarial is not None:
        x_all = data.x if isinstance(data, TensorData) else data[0] if isinstance(data, tuple) else None
        if not isinstance(adversarial, torch.Tensor) or x_all is None or adversarial.shape != x_all.shape:
            raise ValueError("adversarial must be a tensor shaped like the inputs of data, which must be a pair "
                             f"(x, y) or a TensorData; got {type(adversarial).__name__} "
                             f"{tuple(getattr(adversarial, 'shape', ()))} for data of type {type(data).__name__}")
        crafted = iter(check_images(adversarial, "adversarial").split(batch_size))
    known = num_classes or 0
    stats: ClassStats | None = None
    with eval_mode(model):
        for x, y in progress_bar(batches, enabled=progress, description="feature usefulness"):
            x, y = x.to(dev), y.to(dev)
            if num_classes is not None:
                check_labels_below(y, num_classes, "data labels", f"num_classes={num_classes}")
            x_adv = next(crafted).to(dev) if crafted is not None else run_attack(attack_fn, model, x, y, eps, kwargs)
            clean = embed(embed_fn, x)
            adv = embed(embed_fn, x_adv)
            widths = {clean.shape[1], adv.shape[1]} | (set() if stats is None else {stats.dim // 2})
            if len(widths) > 1:
                raise ValueError(f"features must have the same width for every batch and input, got {sorted(widths)}")
            known = max(known, int(y.max()) + 1)
            batch = class_stats(torch.cat([clean, adv], dim=1).double(), y, num_classes=known)
            stats = batch if stats is None else merge_class_stats(_pad_classes(stats, known), batch)
    assert stats is not None  # labelled_batches raised if data held no sample
    width = stats.dim // 2
    count, mean, m2 = stats.count.cpu(), stats.mean.cpu(), stats.m2.cpu()
    clean_u, adv_u = _balanced_usefulness(count, mean[:, :width], m2[:, :width], mean[:, width:])
    assert adv_u is not None
    clean_u, adv_u = clean_u.float(), adv_u.float()
    useful = (clean_u >= threshold).nonzero().tolist()
    ranking = [
        {"class": c, "feature": d, "clean": float(clean_u[c, d]), "adversarial": float(adv_u[c, d]),
         "robust": bool(adv_u[c, d] >= robust_threshold)}
        for c, d in useful
    ]
    ranking.sort(key=lambda r: -r["clean"])
    clean_total = sum(r["clean"] for r in ranking)
    kept = sum(min(max(r["adversarial"], 0.0), r["clean"]) for r in ranking)
    share = kept / clean_total if ranking and clean_total > 0 else math.nan
    return FeatureUsefulness(
        clean=clean_u, adversarial=adv_u, ranking=ranking, robust_share=float(share), threshold=threshold,
        robust_threshold=robust_threshold, eps=eps, attack=attack_name(attack),
        class_counts=[int(c) for c in count.tolist()], num_samples=int(count.sum()),
    )


def plot_feature_usefulness(result: FeatureUsefulness, path: str, *, title: str | None = None) -> None:
    """Scatter of clean vs adversarial usefulness of every (class, feature) pair, saved to ``path``
    (needs matplotlib). Pairs right of the threshold are useful; above the robust threshold, robust."""
    if not isinstance(result, FeatureUsefulness):
        raise TypeError(f"result must be a FeatureUsefulness, got {type(result).__name__}")
    figure = pyplot_figure()(figsize=(4.5, 4.0))
    ax = figure.subplots()
    ax.scatter(result.clean.flatten().tolist(), result.adversarial.flatten().tolist(), s=6, alpha=0.5)
    ax.axvline(result.threshold, color="grey", lw=0.8, ls="--")
    ax.axhline(result.robust_threshold, color="grey", lw=0.8, ls=":")
    ax.plot([-1, 1], [-1, 1], color="black", lw=0.5)
    ax.set_xlabel("usefulness (clean)")
    ax.set_ylabel(f"usefulness under {result.attack} (eps={result.eps:g})")
    ax.set_title(title or f"robust share {result.robust_share:.2f}")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


__all__ = ["FeatureUsefulness", "feature_usefulness", "plot_feature_usefulness", "usefulness_from_moments"]
