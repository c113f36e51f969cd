"""The robustness curve: robust accuracy at every radius at once, from each sample's smallest fooling
radius (found by a minimal-norm attack, see :func:`~nonrobust_ext.attacks.robust_accuracy` with
``curve=True``).

A sample with radius ``r`` is robust at ``eps`` exactly when ``r > eps``: at ``eps = r`` the attack's
point, at distance ``r``, is inside the ball. So one attack run gives the accuracy at any ``eps``, its
median and its mean over a range, without a grid of fixed-radius attacks.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, overload

import torch

from .._validate import check_int, check_nonempty, check_real, is_real


@dataclasses.dataclass
class RobustnessCurve:
    """Per-sample smallest fooling radii, and the robust accuracy they give at every radius.

    Constructing one checks that it describes at least one sample, with one radius each, none NaN or
    negative, and a zero radius for at least every misclassified sample (``ValueError`` otherwise).

    Attributes:
        norm: the norm of the radii, ``"linf"`` or ``"l2"`` (threat-model units, see ``scale``).
        attack: the minimal-norm attack that found them (its registry name).
        radii: ``[N]`` float64 on the CPU, per sample: 0 if the model misclassifies it clean, else the
            norm of the closest adversarial point the attack found, ``inf`` if it found none.
        num_samples: ``N`` (>= 1).
        clean_correct: correctly classified clean samples.
    """

    norm: str
    attack: str
    radii: torch.Tensor
    num_samples: int
    clean_correct: int

    def __post_init__(self) -> None:
        check_nonempty(check_int(self.num_samples, "num_samples"), "the evaluated data")
        check_int(self.clean_correct, "clean_correct", 0, self.num_samples)
        if not isinstance(self.radii, torch.Tensor) or self.radii.shape != (self.num_samples,):
            shape = tuple(self.radii.shape) if isinstance(self.radii, torch.Tensor) else type(self.radii).__name__
            raise ValueError(f"radii must be a 1-D tensor of one radius per sample ({self.num_samples}), got {shape}")
        self.radii = self.radii.detach().to(device="cpu", dtype=torch.float64)
        if bool(torch.isnan(self.radii).any()) or bool((self.radii < 0).any()):
            raise ValueError("radii must be >= 0 (inf where the attack found nothing), got NaN or negative values")
        if int((self.radii > 0).sum()) > self.clean_correct:
            raise ValueError(f"radii has {int((self.radii > 0).sum())} samples with a radius > 0 but only "
                             f"{self.clean_correct} are correctly classified: a misclassified sample has radius 0")

    @property
    def clean_accuracy(self) -> float:
        return self.clean_correct / self.num_samples

    @overload
    def accuracy(self, eps: float) -> float: ...
    @overload
    def accuracy(self, eps: Sequence[float]) -> list[float]: ...
    def accuracy(self, eps: float | Sequence[float]) -> float | list[float]:
        """The robust accuracy at radius ``eps`` (a number >= 0, or a list of them): the share of samples
        whose radius is larger than ``eps``. ``accuracy(0)`` is the clean accuracy.

        Raises:
            TypeError: ``eps`` is not a number or a list of numbers.
            ValueError: a radius that is NaN, infinite or negative.
        """
        if is_real(eps):
            return self._accuracy(check_real(eps, "eps", low=0.0))
        if isinstance(eps, Sequence) and not isinstance(eps, (str, bytes)):
            return [self._accuracy(check_real(e, f"eps[{i}]", low=0.0)) for i, e in enumerate(eps)]
        raise TypeError(f"eps must be a number or a list of numbers, got {type(eps).__name__} {eps!r}")

    def _accuracy(self, eps: float) -> float:
        return int((self.radii > eps).sum()) / self.num_samples

    @property
    def median_radius(self) -> float:
        """The lower median of the radii: the smallest ``eps`` at which at most half the samples are
        still robust (``accuracy(median_radius) <= 0.5``); ``inf`` when the attack fooled fewer than
        half of them, 0 when at least half are misclassified clean."""
        return float(self.radii.median())

    def expected_robustness(self, eps_max: float) -> float:
        """The robust accuracy averaged over ``eps`` uniform in ``[0, eps_max]``, exactly (no grid):
        ``mean_i min(r_i, eps_max) / eps_max``, the area under the curve up to ``eps_max`` over
        ``eps_max``. 1 when no sample falls below ``eps_max``, 0 when all are misclassified clean.

        Raises:
            TypeError: ``eps_max`` is not a number.
            ValueError: ``eps_max`` is NaN, infinite or <= 0.
        """
        eps_max = check_real(eps_max, "eps_max", low=0.0, low_inclusive=False)
        return float(robustness_per_sample(self.radii, eps_max).mean())

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (radii as a list of floats, ``inf`` written as ``None``)."""
        median = self.median_radius
        return {
            "norm": self.norm,
            "attack": self.attack,
            "num_samples": self.num_samples,
            "clean_correct": self.clean_correct,
            "clean_accuracy": self.clean_accuracy,
            "median_radius": median if math.isfinite(median) else None,
            "radii": [r if math.isfinite(r) else None for r in self.radii.tolist()],
        }


def robustness_per_sample(radii: torch.Tensor, eps_max: float) -> torch.Tensor:
    """Per sample, the share of ``[0, eps_max]`` over which it stays robust: ``min(r, eps_max) / eps_max``
    for its minimal radius ``r`` (``inf``: never fooled, 1; 0: misclassified clean, 0). Its mean is the
    expected robustness (:meth:`RobustnessCurve.expected_robustness`)."""
    return radii.clamp(max=eps_max) / eps_max


__all__ = ["RobustnessCurve", "robustness_per_sample"]
