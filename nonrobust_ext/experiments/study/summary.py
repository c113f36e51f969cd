"""The results of every seed summarised: mean ± std over seeds (the tables' descriptive numbers) and
the paired comparisons that decide the report's claims.

Verdicts come only from :func:`comparisons`: each claim that one target model is above (below)
another on a metric is judged by the hierarchical bootstrap interval of their paired per-image
difference (:mod:`.paired`), from the ``per_sample`` records of every seed. :func:`versus` only
describes the numbers that have no per-image records (the source models, the analyses, training):
a gap no larger than the larger of the two standard deviations is *within the seed-to-seed spread*,
otherwise one is *above* or *below* the other; it decides no claim.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ...attacks.curve import robustness_per_sample
from .config import STAGES
from .paired import ABOVE, BELOW, paired_difference, verdict

Stat = Mapping[str, float]  # {"mean": ..., "std": ...}

# The per-model results that are summarised over seeds (mean ± std).
SUMMARISED = ("clean_accuracy", "robust_accuracy", "adversarial_confidence", "training")

# The words of versus(): how one summarised number stands to another (ABOVE, BELOW are paired's).
WITHIN = "within the seed-to-seed spread of"

# Arms that are PGD-AT fine-tuning with one change (a linear probe first, a scheduled radius, the
# pretrained BatchNorm statistics): each is also judged against plain PGD-AT fine-tuning (adv_finetuned),
# which isolates what the change itself buys.
PGD_AT_VARIANTS = ("lpft_finetuned", "epssched_finetuned", "frozenbn_finetuned")

# The claims judged by paired comparisons, as (a, b, what a's clean accuracy is claimed to be
# relative to b's, what a's accuracy under attack is claimed to be): ``None`` where the report
# makes no such claim. The remedies are claimed to cost clean accuracy (the usual robustness trade)
# and to be more robust than the fine-tuned model they replace.
CLAIMS = (
    ("finetuned", "standard", ABOVE, BELOW),
    ("adv_finetuned", "finetuned", BELOW, ABOVE),
    ("dm_finetuned", "finetuned", BELOW, ABOVE),
    ("trades_finetuned", "finetuned", BELOW, ABOVE),
    ("lpft_finetuned", "finetuned", BELOW, ABOVE),
    ("epssched_finetuned", "finetuned", BELOW, ABOVE),
    ("frozenbn_finetuned", "finetuned", BELOW, ABOVE),
    ("wise_finetuned", "finetuned", BELOW, ABOVE),
    ("robust_finetuned", "finetuned", BELOW, ABOVE),
    ("dm", "robust_finetuned", None, ABOVE),
    ("dm", "finetuned", BELOW, None),
    *((variant, "adv_finetuned", None, ABOVE) for variant in PGD_AT_VARIANTS),
)

# The metrics compared, per image: clean and robust accuracy (the eval attack at each eps > 0),
# AutoAttack accuracy and the expected robustness (from the minimal radii) at the largest eps.
METRICS = ("clean_accuracy", "robust_accuracy", "autoattack_accuracy", "expected_robustness")


def mean_std(values: Sequence[float]) -> dict[str, float]:
    """Mean and sample standard deviation (``n - 1``; 0 for one value) of ``values``.

    Raises:
        ValueError: ``values`` is empty (no mean of nothing).
    """
    if not values:
        raise ValueError("values is empty: no mean over zero seeds")
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return {"mean": mean, "std": std}


def over_seeds(values: list[Any]) -> Any:
    """Mean ± std over seeds of every number of per-seed records with the same nested keys; strings
    are kept; a number that is missing (``None``) in any seed stays ``None``."""
    first = values[0]
    if any(v is None for v in values):
        return None
    if isinstance(first, str):
        return first
    if isinstance(first, dict):
        return {k: over_seeds([v[k] for v in values]) for k in first}
    if isinstance(first, list):
        return [over_seeds([v[i] for v in values]) for i in range(len(first))]
    return mean_std([float(v) for v in values])


def summarise(per_seed: dict[str, Any], eps: Sequence[float]) -> dict[str, Any]:
    """Every model's :data:`SUMMARISED` results and the analyses, each number as mean ± std over the
    seeds of ``per_seed`` (seed -> that seed's results, as the measurement step returns them); for the
    models with per-image records also their AutoAttack accuracy and expected robustness (``None``
    where not measured); and under ``"comparisons"`` the paired comparisons of :func:`comparisons`
    (``eps``: the evaluation grid the records follow)."""
    summary: dict[str, Any] = {}
    evaluated = [stage for stage in STAGES if stage in next(iter(per_seed.values()))]
    for stage in evaluated:
        summary[stage] = over_seeds([{key: per_seed[s][stage].get(key) for key in SUMMARISED} for s in per_seed])
        for metric in ("autoattack_accuracy", "expected_robustness"):
            values = _per_image(per_seed, stage, metric, len(eps) - 1, max(eps))
            summary[stage][metric] = None if values is None else mean_std([sum(v) / len(v) for v in values.values()])
        # The median FMN radius: None where a seed has no curve or more than half its images unbroken.
        curves = [(per_seed[s][stage].get("curve") or {}).get("median_radius") for s in per_seed]
        summary[stage]["median_radius"] = None if any(c is None for c in curves) else mean_std(curves)
    summary["analyses"] = over_seeds([per_seed[s]["analyses"] for s in per_seed])
    summary["comparisons"] = comparisons(per_seed, eps)
    return summary


def comparisons(per_seed: Mapping[str, Any], eps: Sequence[float], *, resamples: int = 2000,
                seed: int = 0) -> list[dict[str, Any]]:
    """The paired comparisons of :data:`CLAIMS` on every metric the ``per_sample`` records of every
    seed hold: clean accuracy, robust accuracy at each eps > 0 of ``eps``, AutoAttack accuracy and
    expected robustness at ``max(eps)``.

    Returns:
        One JSON-friendly entry per (pair, metric[, eps]) in :data:`CLAIMS` order: ``"a"``, ``"b"``,
        ``"metric"`` (a :data:`METRICS` name), ``"eps"`` (``None`` for clean accuracy),
        ``"wanted"`` (what the claim says ``a`` is relative to ``b``), the
        :func:`~.paired.paired_difference` of ``a - b`` and its ``"verdict"``. Pairs with a model
        missing or without per-image records in some seed are left out.
    """
    eps = [float(e) for e in eps]
    last = len(eps) - 1
    out = []
    for a, b, clean, attacked in CLAIMS:
        judged = [("clean_accuracy", None, clean, 0)] if clean else []
        if attacked and eps[last] > 0:  # a grid without an attacked radius has nothing to attack
            judged += [("robust_accuracy", e, attacked, k) for k, e in enumerate(eps) if e > 0]
            judged += [(m, eps[last], attacked, last) for m in ("autoattack_accuracy", "expected_robustness")]
        for metric, at, wanted, k in judged:
            values_a = _per_image(per_seed, a, metric, k, eps[last])
            values_b = _per_image(per_seed, b, metric, k, eps[last])
            if values_a is None or values_b is None:
                continue
            diff = paired_difference(values_a, values_b, resamples=resamples, seed=seed)
            out.append({"a": a, "b": b, "metric": metric, "eps": at, "wanted": wanted, **diff,
                        "verdict": verdict(diff, wanted)})
    return out


def _per_image(per_seed: Mapping[str, Any], stage: str, metric: str, k: int,
               eps_max: float) -> dict[str, list[float]] | None:
    """Seed -> ``stage``'s per-image values of ``metric`` (the robust ones at the ``k``-th eps), or
    ``None`` where a seed lacks them (model not trained, no per-image records, attack not run)."""
    out = {}
    for s, results in per_seed.items():
        records = (results.get(stage) or {}).get("per_sample")
        if not records:
            return None
        if metric == "clean_accuracy":
            values = records["clean"]
        elif metric == "robust_accuracy":
            values = records["robust"][k]
        elif metric == "autoattack_accuracy":
            values = records.get("autoattack")
        else:
            values = _expected_robustness(records.get("radius"), eps_max)
        if values is None:
            return None
        out[s] = [float(v) for v in values]
    return out


def _expected_robustness(radii: Sequence[float | None] | None, eps_max: float) -> list[float] | None:
    """Per image ``min(r, eps_max) / eps_max`` with ``r`` the minimal radius (``None``: not fooled,
    infinite); ``None`` without radii or without an attacked radius."""
    if radii is None or eps_max <= 0:
        return None
    finite_or_inf = torch.tensor([math.inf if r is None else float(r) for r in radii], dtype=torch.float64)
    return robustness_per_sample(finite_or_inf, eps_max).tolist()


def present(stages: Sequence[str], table: Mapping[str, Any]) -> list[str]:
    """The ``stages`` that ``table`` (a summary, an analysis) has, in study order."""
    return [s for s in stages if s in table]


def _check_stat(stat: object, name: str) -> Stat:
    if not isinstance(stat, Mapping) or "mean" not in stat or "std" not in stat:
        raise ValueError(f"{name} must be a summarised number {{'mean': ..., 'std': ...}}, got {stat!r}")
    if not (math.isfinite(stat["mean"]) and math.isfinite(stat["std"]) and stat["std"] >= 0):
        raise ValueError(f"{name} must have a finite mean and a finite std >= 0, got {dict(stat)}")
    return stat


def versus(x: Stat, y: Stat) -> str:
    """How mean ± std ``x`` stands to ``y``: :data:`WITHIN` when the gap is no larger than the bigger
    std, else :data:`ABOVE` or :data:`BELOW`.

    Raises:
        ValueError: either is missing (``None``) or not a finite mean ± std: there is nothing to compare.
    """
    _check_stat(x, "x")
    _check_stat(y, "y")
    if abs(x["mean"] - y["mean"]) <= max(x["std"], y["std"]):
        return WITHIN
    return ABOVE if x["mean"] > y["mean"] else BELOW


__all__ = [
    "ABOVE", "BELOW", "CLAIMS", "METRICS", "PGD_AT_VARIANTS", "SUMMARISED", "WITHIN", "comparisons", "mean_std",
    "over_seeds", "present", "summarise", "versus",
]
