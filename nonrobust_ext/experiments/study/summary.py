"""The results of every seed summarised (mean ± std over seeds), and the verdict rules that compare
two summarised numbers: the words the report's sentences are chosen by.

The rule, in one place: a gap between two means no larger than the larger of the two standard
deviations is *within the seed-to-seed spread* — the study cannot tell those models apart — and
otherwise one is *above* or *below* the other. A claim that ``a`` is above (below) ``b`` then
*holds*, *is reversed* or *is within the seed-to-seed spread*. With one seed every std is 0, so
any gap counts as a difference (the report says so).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from .config import STAGES

Stat = Mapping[str, float]  # {"mean": ..., "std": ...}

# The per-model results that are summarised over seeds (mean ± std).
SUMMARISED = ("apgd_robust_accuracy", "clean_accuracy", "robust_accuracy", "adversarial_confidence", "training")

# The words of versus(): how one summarised number stands to another.
ABOVE, BELOW, WITHIN = "above", "below", "within the seed-to-seed spread of"


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


def summarise(per_seed: dict[str, Any]) -> dict[str, Any]:
    """Every model's :data:`SUMMARISED` results and the analyses, each number as mean ± std over the
    seeds of ``per_seed`` (seed -> that seed's results, as the measurement step returns them)."""
    summary: dict[str, Any] = {}
    evaluated = [stage for stage in STAGES if stage in next(iter(per_seed.values()))]
    for stage in evaluated:
        summary[stage] = over_seeds([{key: per_seed[s][stage].get(key) for key in SUMMARISED} for s in per_seed])
    summary["analyses"] = over_seeds([per_seed[s]["analyses"] for s in per_seed])
    return summary


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


def claim(verdict: str, wanted: str) -> str:
    """Whether a claim that one model is ``wanted`` (:data:`ABOVE`/:data:`BELOW`) the other
    ``"holds"``, ``"is reversed"`` or ``"is within the seed-to-seed spread"``, given :func:`versus`'s word.

    Raises:
        ValueError: ``verdict`` or ``wanted`` is not a word of :func:`versus`.
    """
    _check_word(verdict, "verdict", (ABOVE, BELOW, WITHIN))
    _check_word(wanted, "wanted", (ABOVE, BELOW))
    if verdict == wanted:
        return "holds"
    return "is within the seed-to-seed spread" if verdict == WITHIN else "is reversed"


def verdict_over_eps(verdicts: Mapping[str, str], wanted: str) -> str:
    """Where over the eps grid (``verdicts``: eps label -> :func:`versus` word) a claim that ``a`` is
    ``wanted`` (:data:`ABOVE`/:data:`BELOW`) relative to ``b`` holds, is reversed, or cannot be told apart.

    Raises:
        ValueError: ``verdicts`` is empty (nothing to judge), or holds a word :func:`versus` does not give.
    """
    _check_word(wanted, "wanted", (ABOVE, BELOW))
    if not verdicts:
        raise ValueError("verdicts is empty: no eps to judge the claim at")
    for eps, word in verdicts.items():
        _check_word(word, f"verdicts[{eps!r}]", (ABOVE, BELOW, WITHIN))
    held = [e for e, v in verdicts.items() if v == wanted]
    reversed_ = [e for e, v in verdicts.items() if v not in (wanted, WITHIN)]
    if held and not reversed_:
        return f"holds at eps {', '.join(held)} (within the spread elsewhere)" if len(held) < len(verdicts) \
            else "holds at every eps"
    if reversed_ and not held:
        return f"is reversed at eps {', '.join(reversed_)}"
    if held:
        return f"is mixed: holds at eps {', '.join(held)}, reversed at eps {', '.join(reversed_)}"
    return "is within the seed-to-seed spread at every eps"


def attacked_verdicts(summary: Mapping[str, Any], a: str, b: str, eps: Sequence[float]) -> dict[str, str]:
    """:func:`versus` of ``a``'s robust accuracy against ``b``'s at every eps > 0, keyed by the eps
    (3 decimals)."""
    return {f"{e:.3f}": versus(summary[a]["robust_accuracy"][k], summary[b]["robust_accuracy"][k])
            for k, e in enumerate(eps) if e > 0}


def _check_word(word: object, name: str, words: tuple[str, ...]) -> None:
    if word not in words:
        raise ValueError(f"{name} must be one of {', '.join(repr(w) for w in words)}, got {word!r}")


__all__ = [
    "ABOVE", "BELOW", "SUMMARISED", "WITHIN", "attacked_verdicts", "claim", "mean_std", "over_seeds", "present",
    "summarise", "verdict_over_eps", "versus",
]
