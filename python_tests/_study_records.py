"""Synthetic per-image records (``per_sample``) on top of a study's results, as the measurement step
writes them, so that the paired comparisons and the report's claim sentences can be tested without
training anything. The committed small-source results (docs/study/small_source) predate per-image
records; the ImageNet-weights ones (docs/study) hold them (:func:`without_per_sample` takes them out)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from nonrobust_ext.experiments.study import TARGET_STAGES
from nonrobust_ext.experiments.study.summary import summarise

DOCS = Path(__file__).resolve().parent.parent / "docs" / "study"

# stage, seed, that seed's record -> (clean accuracy, robust accuracy per eps of the grid)
Rates = Callable[[str, str, dict[str, Any]], tuple[float, Sequence[float]]]


def committed(name: str = "small_source") -> dict[str, Any]:
    """A committed study's results.json (``"small_source"`` or ``""`` for the ImageNet-weights one)."""
    return json.loads((DOCS / name / "results.json").read_text())


def without_per_sample(results: dict[str, Any]) -> dict[str, Any]:
    """``results`` as a study written before per-image records: no ``per_sample`` in any model's
    record and no paired ``comparisons`` in the summary."""
    out = copy.deepcopy(results)
    for seed in out["seeds"].values():
        for record in seed.values():
            if isinstance(record, dict):
                record.pop("per_sample", None)
    out["summary"].pop("comparisons", None)
    return out


def ones(n: int, k: int) -> list[int]:
    """``k`` correct images then ``n - k`` wrong ones: the same images are the easy ones for every
    model, so two models' records differ only where their accuracies do."""
    return [1] * k + [0] * (n - k)


def per_sample(n: int, clean: float, robust: Sequence[float], eps_max: float, *, autoattack: bool = True,
               radii: bool = True) -> dict[str, Any]:
    """A ``per_sample`` record with these accuracies over ``n`` images; AutoAttack as robust as the
    largest eps; the radii: infinite (``None``) for the robust images, growing up to ``eps_max`` for
    the clean-but-fooled ones, 0 for the misclassified ones."""
    k_clean, k_robust = round(clean * n), round(robust[-1] * n)
    radius = [None if i < k_robust else 0.0 if i >= k_clean else eps_max * (i + 1) / n for i in range(n)]
    return {"clean": ones(n, k_clean), "robust": [ones(n, round(r * n)) for r in robust],
            "autoattack": ones(n, k_robust) if autoattack else None, "radius": radius if radii else None}


def _own_rates(stage: str, seed: str, record: dict[str, Any]) -> tuple[float, Sequence[float]]:
    return record["clean_accuracy"], record["robust_accuracy"]


def with_per_sample(results: dict[str, Any], n: int = 200, rates: Rates = _own_rates, *,
                    seeds: Sequence[str] | None = None, **options: bool) -> dict[str, Any]:
    """A copy of ``results`` (only ``seeds``, all by default) whose target models have per-image
    records with the accuracies ``rates`` gives (their own by default), and the summary recomputed."""
    out = copy.deepcopy(results)
    if seeds is not None:
        out["seeds"] = {s: out["seeds"][s] for s in seeds}
        out["config"]["seeds"] = [int(s) for s in seeds]
    eps = out["config"]["eval_eps"]
    for seed, stages in out["seeds"].items():
        for stage, record in stages.items():
            if stage in TARGET_STAGES:
                clean, robust = rates(stage, seed, record)
                record["per_sample"] = per_sample(n, clean, robust, max(eps), **options)
    out["summary"] = summarise(out["seeds"], eps)
    return out
