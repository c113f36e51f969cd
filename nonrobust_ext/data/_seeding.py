"""Deterministic generators derived from several integers (a seed and a stream: epoch, class, ...)."""

from __future__ import annotations

import torch

_MASK64 = (1 << 64) - 1


def _splitmix64(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def mix(*values: int) -> int:
    """A 63-bit seed from integers, so (seed, epoch) and (seed, epoch + 1) — or (seed, class a) and
    (seed + 1, class a) — give unrelated streams instead of overlapping ones (as ``seed + epoch`` would)."""
    h = 0
    for v in values:
        h = _splitmix64(h ^ (int(v) & _MASK64))
    return h >> 1  # torch.Generator.manual_seed takes any int64-representable non-negative value


def generator(*values: int) -> torch.Generator:
    """A CPU generator seeded with ``mix(*values)``."""
    return torch.Generator().manual_seed(mix(*values))
