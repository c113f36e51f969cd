"""Paired comparisons of two models measured on the same test images: the mean per-image difference
and a hierarchical percentile-bootstrap confidence interval, and the verdict on a directional claim
that the interval supports.

Why paired and hierarchical: every seed evaluates all models on the same images, so the per-image
differences cancel the images' shared difficulty (a far smaller spread than comparing two means of
independent samples); and the interval has two sources of noise to carry, the seeds (training runs,
splits) and the images within each seed. Resampling the seeds with replacement, then the images
within each drawn seed, carries both. With one seed the seed level cannot be resampled: the
interval then carries the image noise only and says so (``"seed_level": False``).

Pure Python and torch: the resamples are drawn as one tensor (in chunks that bound the memory).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..._validate import check_choice, check_int, check_real, is_real

# The words of verdict(): a claim that one model is above (below) another.
ABOVE, BELOW = "above", "below"
HOLDS, REVERSED, UNDECIDED = "holds", "is reversed", "is undecided (the 95% interval includes 0)"
# Below this many images in all, a percentile bootstrap interval is too narrow to decide anything (one
# image with a = 1, b = 0 gives [1, 1]): no verdict is drawn from it.
MIN_IMAGES = 20
TOO_FEW = f"is undecided (fewer than {MIN_IMAGES} images: too few for an interval)"

# Resampled values drawn per chunk (float64: 8 bytes each), so that many images or resamples do not
# need one tensor of resamples x seeds x images at once.
_CHUNK_VALUES = 1 << 22


def paired_difference(
    a: Mapping[Any, Sequence[float]], b: Mapping[Any, Sequence[float]], *, resamples: int = 2000,
    level: float = 0.95, seed: int = 0,
) -> dict[str, Any]:
    """The mean of ``a - b`` over paired per-image values and its hierarchical bootstrap interval.

    The difference is the mean over seeds of each seed's mean over images of ``a_i - b_i`` (every seed
    weighs the same, whatever its number of images). Each of the ``resamples`` bootstrap draws picks
    as many seeds as there are, with replacement, and within each picked seed as many images as it
    has, with replacement, and takes the same mean; the interval is the ``(1 - level) / 2`` and
    ``(1 + level) / 2`` quantiles of those draws (percentile bootstrap, linear interpolation).

    Args:
        a, b: seed -> per-image values (0/1 correctness, a robustness score, ...), the same seeds in
            both and, per seed, the same images in the same order (so the same length).
        resamples: bootstrap draws, at least 100.
        level: the interval's coverage, in (0, 1).
        seed: seeds the draws: the same inputs and seed give the same interval.

    Returns:
        ``{"mean", "low", "high"}`` (floats), ``"level"``, ``"seeds"`` (how many), ``"images"`` (the
        number per seed, in ``a``'s order), ``"resamples"`` and ``"seed_level"`` (False with one seed:
        the interval then ignores seed-to-seed variation). JSON-friendly.

    Raises:
        TypeError: ``a`` or ``b`` is not a mapping of sequences of numbers; ``resamples`` or ``seed``
            is not an int; ``level`` is not a number.
        ValueError: ``a`` is empty or a seed has no images; ``b`` has other seeds or, for a seed,
            another number of images; a value is NaN or infinite; ``resamples`` < 100; ``level``
            outside (0, 1).
    """
    resamples = check_int(resamples, "resamples", minimum=100)
    level = check_real(level, "level", low=0, high=1, low_inclusive=False, high_inclusive=False)
    seed = check_int(seed, "seed")
    values_a, values_b = _per_seed(a, "a"), _per_seed(b, "b")
    if set(values_a) != set(values_b):
        raise ValueError(f"b must have the same seeds as a, got {sorted(map(str, values_b))} and "
                         f"{sorted(map(str, values_a))}")
    diffs = []
    for key, va in values_a.items():
        vb = values_b[key]
        if len(vb) != len(va):
            raise ValueError(f"b[{key!r}] must have as many values as a[{key!r}] (the same images), got {len(vb)} "
                             f"and {len(va)}")
        diffs.append(va - vb)
    generator = torch.Generator().manual_seed(seed)
    draws = _bootstrap(diffs, resamples, generator, seed_level=len(diffs) > 1)
    tail = (1 - level) / 2
    low, high = torch.quantile(draws, torch.tensor([tail, 1 - tail], dtype=torch.float64)).tolist()
    return {
        "mean": float(torch.stack([d.mean() for d in diffs]).mean()),
        "low": low,
        "high": high,
        "level": level,
        "seeds": len(diffs),
        "images": [len(d) for d in diffs],
        "resamples": resamples,
        "seed_level": len(diffs) > 1,
    }


def verdict(diff: Mapping[str, Any], wanted: str) -> str:
    """Whether a claim that ``a`` is ``wanted`` (:data:`ABOVE` / :data:`BELOW`) ``b`` holds, given
    :func:`paired_difference`'s ``diff`` of ``a - b``: :data:`HOLDS` when the interval excludes 0 on
    the wanted side, :data:`REVERSED` when it excludes 0 on the other side, else :data:`UNDECIDED`.
    An interval that ends exactly at 0 includes it; an interval over fewer than :data:`MIN_IMAGES`
    images decides nothing (:data:`TOO_FEW`).

    Raises:
        ValueError: ``wanted`` is neither word; ``diff`` has no finite ``low <= high``.
    """
    check_choice(wanted, "wanted", (ABOVE, BELOW))
    if not isinstance(diff, Mapping) or not all(is_real(diff.get(k)) and math.isfinite(diff[k])
                                                for k in ("low", "high")) or diff["low"] > diff["high"]:
        raise ValueError(f"diff must be a paired_difference result with finite low <= high, got {diff!r}")
    if sum(diff.get("images", [MIN_IMAGES])) < MIN_IMAGES:
        return TOO_FEW
    if diff["low"] > 0:
        return HOLDS if wanted == ABOVE else REVERSED
    if diff["high"] < 0:
        return HOLDS if wanted == BELOW else REVERSED
    return UNDECIDED


def _per_seed(values: object, name: str) -> dict[Any, torch.Tensor]:
    """``values`` (seed -> per-image numbers) as float64 tensors, checked."""
    if not isinstance(values, Mapping):
        raise TypeError(f"{name} must be a mapping of seed -> per-image values, got {type(values).__name__}")
    if not values:
        raise ValueError(f"{name} is empty: no seeds to compare")
    out = {}
    for key, row in values.items():
        where = f"{name}[{key!r}]"
        if isinstance(row, (str, bytes)) or not isinstance(row, Sequence) or not all(is_real(v) for v in row):
            raise TypeError(f"{where} must be a list of numbers, got {type(row).__name__}")
        if not row:
            raise ValueError(f"{where} is empty: no images to compare")
        tensor = torch.tensor([float(v) for v in row], dtype=torch.float64)
        if not torch.isfinite(tensor).all():
            raise ValueError(f"{where} must hold finite values (no NaN or inf)")
        out[key] = tensor
    return out


def _bootstrap(diffs: list[torch.Tensor], resamples: int, generator: torch.Generator, *,
               seed_level: bool) -> torch.Tensor:
    """``resamples`` hierarchical bootstrap means of the per-seed differences ``diffs``."""
    num_seeds = len(diffs)
    sizes = torch.tensor([len(d) for d in diffs])
    width = int(sizes.max())
    # Seeds of different sizes share one padded table; draws past a seed's size are masked out.
    table = torch.zeros(num_seeds, width, dtype=torch.float64)
    for s, d in enumerate(diffs):
        table[s, :len(d)] = d
    columns = torch.arange(width)
    out = torch.empty(resamples, dtype=torch.float64)
    chunk = max(1, _CHUNK_VALUES // (num_seeds * width))
    for start in range(0, resamples, chunk):
        count = min(chunk, resamples - start)
        if seed_level:
            picked = torch.randint(num_seeds, (count, num_seeds), generator=generator)
        else:
            picked = torch.arange(num_seeds).expand(count, num_seeds)
        n = sizes[picked].unsqueeze(-1)  # (count, seeds, 1)
        uniform = torch.rand(count, num_seeds, width, generator=generator, dtype=torch.float64)
        # floor(u * n) is uniform over 0..n-1; the minimum guards a product rounded up to n.
        rows = torch.minimum((uniform * n).long(), n - 1)
        drawn = table[picked.unsqueeze(-1), rows] * (columns < n)
        out[start:start + count] = (drawn.sum(-1) / n.squeeze(-1)).mean(-1)
    return out


__all__ = ["ABOVE", "BELOW", "HOLDS", "MIN_IMAGES", "REVERSED", "TOO_FEW", "UNDECIDED", "paired_difference",
           "verdict"]
