"""A synthetic, learnable image-classification task that needs no files."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .._validate import check_int, check_ints, check_real
from .tensor_data import TensorData

#: The seed the class patterns are drawn from, fixed and independent of the sample seed, so sets drawn
#: with different seeds (train / test) are samples of one task.
PATTERN_SEED = 20230207

#: The seeds ``torch.Generator.manual_seed`` takes.
TORCH_SEED_RANGE = (-(2**63), 2**64 - 1)


def class_patterns(num_classes: int, shape: Sequence[int], *, pattern_seed: int = PATTERN_SEED) -> torch.Tensor:
    """The per-class mean images of :func:`synthetic`: grey 0.5 plus a random +-0.2 pattern per
    pixel, smoothed over 2x2 blocks so the task has spatial structure a conv net can use.

    Shape:
        ``[num_classes, *shape]``
    """
    num_classes = check_int(num_classes, "num_classes", 1)
    shape = check_ints(shape, "shape", 1)
    if len(shape) != 3:
        raise ValueError(f"shape must be (C, H, W), got {shape!r}")
    pattern_seed = check_int(pattern_seed, "pattern_seed", *TORCH_SEED_RANGE)
    g = torch.Generator().manual_seed(pattern_seed)
    c, h, w = shape
    coarse = torch.rand(num_classes, c, (h + 1) // 2, (w + 1) // 2, generator=g) * 2 - 1
    fine = coarse.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)[:, :, :h, :w]
    return 0.5 + 0.2 * fine


def synthetic(
    n: int,
    *,
    num_classes: int = 10,
    shape: Sequence[int] = (1, 28, 28),
    seed: int = 0,
    noise: float = 0.3,
    pattern_seed: int = PATTERN_SEED,
) -> TensorData:
    """A learnable task: each class is a fixed random image pattern; a sample is its class's
    pattern plus Gaussian pixel noise, clipped to [0, 1].

    ``x = clip(pattern[y] + noise * N(0, 1), 0, 1)`` with balanced, shuffled labels. The patterns
    come from ``pattern_seed`` alone (fixed by default), the labels and noise from ``seed``: a model
    trained on ``synthetic(n, seed=1)`` generalises to ``synthetic(n, seed=2)``.

    Args:
        n: number of samples (>= 1).
        num_classes: number of classes (>= 2); each appears ``n // num_classes`` or one more times.
        shape: image shape ``(C, H, W)``.
        seed: the samples' seed (labels and noise).
        noise: standard deviation of the pixel noise (>= 0); at the default 0.3 a single pixel says
            little, but a linear model over all pixels separates the classes well.
        pattern_seed: the class patterns' seed; change it for a different task.

    Returns:
        A :class:`TensorData`, x float32 in [0, 1], classes ``["class0", "class1", ...]``.

    Shape:
        - x: ``[n, *shape]``
        - y: ``[n]``

    Raises:
        TypeError: an argument of the wrong type (``n=1.5``, ``shape="28"``).
        ValueError: ``n < 1``, ``num_classes < 2``, a shape that is not three ints >= 1, a negative,
            NaN or infinite ``noise``, a seed outside what ``torch.Generator`` takes.
    """
    n = check_int(n, "n", 1)
    num_classes = check_int(num_classes, "num_classes", 2)
    shape = check_ints(shape, "shape", 1)
    if len(shape) != 3:
        raise ValueError(f"shape must be (C, H, W), got {shape!r}")
    noise = check_real(noise, "noise", low=0.0)
    seed = check_int(seed, "seed", *TORCH_SEED_RANGE)
    pattern_seed = check_int(pattern_seed, "pattern_seed", *TORCH_SEED_RANGE)

    patterns = class_patterns(num_classes, shape, pattern_seed=pattern_seed)
    g = torch.Generator().manual_seed(seed)
    y = (torch.arange(n) % num_classes)[torch.randperm(n, generator=g)]
    x = patterns[y] + float(noise) * torch.randn(n, *shape, generator=g)
    return TensorData(x.clamp_(0.0, 1.0), y, [f"class{k}" for k in range(num_classes)])
