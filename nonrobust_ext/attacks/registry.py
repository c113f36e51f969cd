"""The attacks known by name, and what each one is.

:data:`ATTACKS` is the evaluation registry: the fixed-radius attacks ``robust_accuracy(attack="...")``,
the analyses and the study's ``--attack`` accept, each called as ``fn(model, x, y, eps=eps, **kwargs)``
and returning the adversarial batch. :data:`MINIMAL_NORM` holds the attacks that search for the
smallest perturbation instead (no ``eps``). :data:`SPECS` describes every one of them: its kind, the
norms it supports, the options it takes (read from its signature, so they cannot drift from the
code) and small settings that run in a fraction of a second and reach all of its code, which the
attack contract tests and the benchmarks' correctness checks use.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import torch

from .apgd import apgd
from .apgd_targeted import apgd_targeted
from .cw import cw_l2
from .deepfool import deepfool
from .fab import fab
from .fmn import fmn
from .pgd import fgsm, pgd
from .square import square
from .transfer import bim, difgsm, mifgsm

AttackFn = Callable[..., torch.Tensor]
Kind = Literal["fixed_radius", "minimal_norm"]


@dataclass(frozen=True)
class AttackSpec:
    """What an attack is, for code that treats attacks generically.

    Attributes:
        name: its name in the registry.
        fn: the attack, ``fn(model, x, y, **kwargs)``.
        kind: ``"fixed_radius"`` (maximises a loss inside the ``eps``-ball: the result lies in the ball)
            or ``"minimal_norm"`` (searches for the smallest perturbation, in one of its ``norms``, that
            fools the model).
        norms: the norms of its threat model (``norm=`` for the attacks that take one).
        smoke: settings that make it quick on tiny inputs (8x8 images) and exercise every code path
            (momentum, random starts, input diversity at every step).
    """

    name: str
    fn: AttackFn
    kind: Kind
    norms: tuple[str, ...]
    smoke: Mapping[str, Any] = field(default_factory=dict)

    @property
    def options(self) -> frozenset[str]:
        """The keyword arguments it takes."""
        return frozenset(inspect.signature(self.fn).parameters) - {"model", "x", "y"}

    def takes(self, option: str) -> bool:
        """Whether it takes the keyword argument ``option`` (e.g. ``"early_stop"``, ``"seed"``)."""
        return option in self.options

    @property
    def randomized(self) -> bool:
        """Whether it draws random numbers (and so takes ``seed`` and ``generator``)."""
        return self.takes("seed")

    @property
    def early_stop(self) -> bool:
        """Whether it can stop attacking the samples it has fooled (``early_stop=True``)."""
        return self.takes("early_stop")


def _spec(name: str, fn: AttackFn, kind: Kind, norms: tuple[str, ...], **smoke: Any) -> AttackSpec:
    return AttackSpec(name, fn, kind, norms, MappingProxyType(smoke))


#: Every attack with labels, by name.
SPECS: Mapping[str, AttackSpec] = MappingProxyType({
    spec.name: spec for spec in (
        _spec("pgd", pgd, "fixed_radius", ("linf", "l2"), steps=3),
        _spec("apgd", apgd, "fixed_radius", ("linf", "l2"), steps=5),
        # Its default early stop would make the step counts depend on the model: off in the smoke settings.
        _spec("apgd_targeted", apgd_targeted, "fixed_radius", ("linf", "l2"), steps=5, target_classes=2,
              early_stop=False),
        _spec("fgsm", fgsm, "fixed_radius", ("linf",), random_start=True),
        _spec("bim", bim, "fixed_radius", ("linf",), steps=3),
        _spec("mifgsm", mifgsm, "fixed_radius", ("linf",), steps=3, random_start=True),
        _spec("difgsm", difgsm, "fixed_radius", ("linf",), steps=3, decay=1.0, resize_rate=0.6, diversity_prob=1.0,
              random_start=True),
        _spec("square", square, "fixed_radius", ("linf", "l2"), queries=20),
        _spec("deepfool", deepfool, "minimal_norm", ("l2",), steps=5),
        _spec("cw_l2", cw_l2, "minimal_norm", ("l2",), c=10.0, steps=10, lr=0.05),
        _spec("fab", fab, "minimal_norm", ("linf", "l2"), steps=3, restarts=2),
        _spec("fmn", fmn, "minimal_norm", ("linf", "l2"), steps=10),
    )
})

#: The evaluation registry: fixed-radius attacks by name.
ATTACKS: dict[str, AttackFn] = {name: spec.fn for name, spec in SPECS.items() if spec.kind == "fixed_radius"}

#: Minimal-norm attacks by name (no ``eps``: they search for the smallest perturbation).
MINIMAL_NORM: dict[str, AttackFn] = {name: spec.fn for name, spec in SPECS.items() if spec.kind == "minimal_norm"}

__all__ = ["ATTACKS", "MINIMAL_NORM", "SPECS", "AttackFn", "AttackSpec"]
