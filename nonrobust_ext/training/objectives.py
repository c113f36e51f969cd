"""Training objectives: standard cross-entropy, PGD adversarial training (Madry et al.), fast FGSM-RS
adversarial training (Wong et al.), TRADES (Zhang et al.), the study's discrepancy-mitigating (DM)
loss, and epsilon scheduling of any of the attack-based ones. Every inner maximisation runs on the
library's own fused attack ops.

An objective is a small dataclass of hyper-parameters with one method::

    loss, logits = objective(net, module, x, y, seed=...)

``net`` is what the outer, differentiable forward calls (the model, or its DDP wrapper); ``module`` is
the bare model the attacks run on (attacks never go through DDP: their input-only backward passes
must not trigger its gradient all-reduce). ``logits`` are the clean-input logits of the batch when
the objective computes them, else those of the inputs it trained on, for the running accuracy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from .. import ops
from .._validate import check_choice, check_int, check_optional_real, check_real
from ..attacks import feature_pgd, fgsm, pgd
from ..attacks._common import eval_mode

Net = Callable[..., Any]


def _check_radius(objective: Objective) -> None:
    """``eps`` and ``alpha`` (when set) of an attack-based objective: finite numbers >= 0.

    Checked with :mod:`nonrobust_ext._validate` as the attacks check them, so ``PGDAdversarial(eps=nan)``
    and ``pgd(eps=nan)`` fail alike: TypeError for a wrong type, ValueError for a wrong value.
    """
    check_real(objective.eps, "eps", low=0.0)  # type: ignore[attr-defined]
    check_optional_real(objective.alpha, "alpha", low=0.0)  # type: ignore[attr-defined]


@dataclasses.dataclass(frozen=True)
class Objective:
    """Base class: ``name`` identifies the objective in checkpoints and reports."""

    name: ClassVar[str] = "objective"
    #: whether the objective trains against attacks (robust validation is then worth its cost)
    adversarial: ClassVar[bool] = False

    def describe(self) -> dict[str, Any]:
        """Name and hyper-parameters, plain data (stored in checkpoints to refuse a mismatched resume)."""
        return {"name": self.name, **dataclasses.asdict(self)}

    def __call__(self, net: Net, module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, seed: int):
        raise NotImplementedError

    def at(self, progress: float) -> Objective:
        """The objective to train with at ``progress`` (the fraction of the run's steps done, in [0, 1]):
        itself, except for objectives that change over the run (:class:`EpsilonScheduled`)."""
        return self


@dataclasses.dataclass(frozen=True)
class Standard(Objective):
    """Cross-entropy on clean inputs."""

    name: ClassVar[str] = "standard"

    def __call__(self, net, module, x, y, *, seed):
        logits = net(x)
        return F.cross_entropy(logits, y), logits


@dataclasses.dataclass(frozen=True)
class _IterativeAttackObjective(Objective):
    """The radius, steps and step size shared by the objectives whose inner maximisation is PGD."""

    eps: float = 8 / 255
    steps: int = 10
    alpha: float | None = None
    adversarial: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _check_radius(self)
        check_int(self.steps, "steps", 1)
        if hasattr(self, "beta"):
            check_real(self.beta, "beta", low=0.0)
        if hasattr(self, "norm"):
            check_choice(self.norm, "norm", ("linf", "l2"))


@dataclasses.dataclass(frozen=True)
class PGDAdversarial(_IterativeAttackObjective):
    """Madry et al. (2018): cross-entropy on L-inf (or L2) PGD examples, random start, ``steps`` steps of
    ``alpha`` (default ``2.5 * eps / steps``). The attack runs the model in eval mode (BatchNorm uses its
    running statistics), the update in train mode."""

    norm: str = "linf"
    name: ClassVar[str] = "pgd"

    def __call__(self, net, module, x, y, *, seed):
        x_adv = pgd(module, x, y, eps=self.eps, steps=self.steps, alpha=self.alpha, norm=self.norm, seed=seed)
        logits = net(x_adv)
        return F.cross_entropy(logits, y), logits


@dataclasses.dataclass(frozen=True)
class FastFGSM(Objective):
    """Wong et al. (2020), "fast is better than free": one FGSM step of ``alpha`` (default
    ``1.25 * eps``) from a uniform random start in the L-inf ball, projected back onto it."""

    eps: float = 8 / 255
    alpha: float | None = None
    name: ClassVar[str] = "fgsm_rs"
    adversarial: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _check_radius(self)

    def __call__(self, net, module, x, y, *, seed):
        x_adv = fgsm(module, x, y, eps=self.eps, alpha=self.alpha, random_start=True, seed=seed)
        logits = net(x_adv)
        return F.cross_entropy(logits, y), logits


@dataclasses.dataclass(frozen=True)
class TRADES(_IterativeAttackObjective):
    """Zhang et al. (2019): ``CE(f(x), y) + beta * KL(softmax f(x) || softmax f(x_adv))`` (batch mean),
    with ``x_adv`` maximising that KL by L-inf PGD from a random start in the ball (the paper starts at
    ``x + 0.001 * N(0, 1)``). Clean and adversarial inputs go through the model as one batch."""

    beta: float = 6.0
    name: ClassVar[str] = "trades"

    def __call__(self, net, module, x, y, *, seed):
        with torch.no_grad(), eval_mode(module):
            p_clean = F.softmax(module(x).float(), dim=1)

        def kl_to_clean(z: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
            return F.kl_div(F.log_softmax(z.float(), dim=1), p_clean, reduction="none").sum(dim=1)

        x_adv = pgd(module, x, y, eps=self.eps, steps=self.steps, alpha=self.alpha, loss=kl_to_clean, seed=seed)
        logits_clean, logits_adv = net(torch.cat([x, x_adv])).split(len(x))
        robust = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits_clean, dim=1), reduction="batchmean")
        return F.cross_entropy(logits_clean, y) + self.beta * robust, logits_clean


@dataclasses.dataclass(frozen=True)
class DM(_IterativeAttackObjective):
    """The study's discrepancy-mitigating fine-tuning loss, a feature-level TRADES::

        CE(h(x), y) + beta * mean_i || phi(x_adv_i) - phi(x_i) ||_2^2

    where ``phi`` is the model's penultimate embedding (``forward_features``), the squared distance is
    summed over features and averaged over the batch, and ``x_adv`` maximises that same distance by
    L-inf PGD from a random start (:func:`nonrobust_ext.attacks.feature_pgd`). (The authors' code also
    divides by the batch size a second time, a TRADES leftover; here ``beta`` multiplies the plain
    batch mean.) The model must accept ``return_features=True`` (every model of
    :mod:`nonrobust_ext.models` does)."""

    beta: float = 1.0
    name: ClassVar[str] = "dm"

    def __call__(self, net, module, x, y, *, seed):
        if not hasattr(module, "forward_features"):
            raise TypeError(
                f"the DM objective needs a model with forward_features(x) -> [B, D] and forward(x, "
                f"return_features=True); {type(module).__name__} has none (use nonrobust_ext.models)"
            )
        x_adv = feature_pgd(module.forward_features, x, eps=self.eps, steps=self.steps, alpha=self.alpha,
                            seed=seed, module=module)
        features, logits = net(torch.cat([x, x_adv]), return_features=True)
        clean_features, adv_features = features.float().split(len(x))
        # The fused op computes the per-sample squared distances in one pass (and differentiates them).
        discrepancy = ops.feature_discrepancy(clean_features, adv_features)[0].mean()
        logits_clean = logits[: len(x)]
        return F.cross_entropy(logits_clean, y) + self.beta * discrepancy, logits_clean


@dataclasses.dataclass(frozen=True)
class EpsilonScheduled(Objective):
    """Epsilon scheduling for robust fine-tuning: an attack-based ``objective`` whose radius grows over
    the run. For the first ``start`` of the steps the radius is 0 (plain cross-entropy: the pretrained
    features are adapted to the task first), then it rises linearly to ``objective.eps`` at ``end``
    of the steps and stays there. The loop asks for the objective of each step (:meth:`at`), so a
    resumed run continues the schedule exactly; the step sizes follow the radius when the objective
    derives them from it (``alpha=None``).

    Attributes:
        objective: the objective at the full radius (``PGDAdversarial``, ``TRADES``, ``FastFGSM``, ``DM``).
        start, end: fractions of the run, ``0 <= start < end <= 1``.
    """

    objective: Objective = PGDAdversarial()
    start: float = 0.25
    end: float = 0.75
    name: ClassVar[str] = "eps_scheduled"
    adversarial: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if not isinstance(self.objective, Objective) or not hasattr(self.objective, "eps"):
            raise TypeError("objective must be a training objective with a radius eps (PGDAdversarial, TRADES, "
                            f"FastFGSM, DM), got {type(self.objective).__name__}")
        check_real(self.start, "start", low=0.0, high=1.0)
        check_real(self.end, "end", low=0.0, high=1.0)
        if not self.start < self.end:
            raise ValueError(f"start must be < end, got start={self.start}, end={self.end}")

    def radius(self, progress: float) -> float:
        """The radius at ``progress`` (a fraction of the run)."""
        share = min(max((progress - self.start) / (self.end - self.start), 0.0), 1.0)
        return self.objective.eps * share  # type: ignore[attr-defined]

    def at(self, progress: float) -> Objective:
        eps = self.radius(progress)
        # At radius 0 every attack returns its input: the objective is the clean cross-entropy, without
        # the attack's forward and backward passes.
        return Standard() if eps == 0 else dataclasses.replace(self.objective, eps=eps)  # type: ignore[type-var]

    def __call__(self, net, module, x, y, *, seed):
        return self.objective(net, module, x, y, seed=seed)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "objective": self.objective.describe(), "start": self.start, "end": self.end}


OBJECTIVES: dict[str, type[Objective]] = {
    cls.name: cls for cls in (Standard, PGDAdversarial, FastFGSM, TRADES, DM)
}


def make_objective(name: str, **hyper_parameters: Any) -> Objective:
    """An objective by name (``standard``, ``pgd``, ``fgsm_rs``, ``trades``, ``dm``) with its hyper-parameters.

    Raises:
        TypeError: ``name`` not a str, or a hyper-parameter of the wrong type.
        ValueError: an unknown name or hyper-parameter, or a hyper-parameter's value out of range,
            NaN or infinite.
    """
    if not isinstance(name, str):
        raise TypeError(f"objective must be a str, one of {sorted(OBJECTIVES)}; got {type(name).__name__}")
    if name not in OBJECTIVES:
        raise ValueError(f"objective must be one of {sorted(OBJECTIVES)}, got {name!r}")
    cls = OBJECTIVES[name]
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(hyper_parameters) - known)
    if unknown:
        raise ValueError(f"objective {name!r} takes {sorted(known) or 'no hyper-parameters'}, got unknown {unknown}")
    return cls(**hyper_parameters)


__all__ = [
    "DM", "OBJECTIVES", "TRADES", "EpsilonScheduled", "FastFGSM", "Objective", "PGDAdversarial", "Standard",
    "make_objective",
]
