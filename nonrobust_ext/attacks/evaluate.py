"""Robustness evaluation: clean and robust accuracy over an eps grid, with true-label confidence, or
the whole robustness curve from a minimal-norm attack's per-sample radii (``curve=True``).

Samples the model already misclassifies are not attacked (they are counted as non-robust and their
clean input stands in for the adversarial one): the attack runs on the correctly classified part
of each batch only, which saves work in proportion to the error rate.

Every argument and every batch is checked before anything is counted: an accuracy is a count over
samples the model really classified, never a number over zero samples, over labels that broadcast
against images of another length, or over NaN images.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal, Union, overload

import torch

from .._progress import progress_bar
from .._validate import (
    check_bool,
    check_int,
    check_nonempty,
    check_optional_int,
    check_real,
    check_sequence,
    is_real,
    resolve_device,
)
from . import _distributed
from ._common import (
    LogitsSelector,
    check_finite_logits,
    check_images,
    check_labels,
    check_model,
    check_selector,
    clean_logits,
    eval_mode,
    select_logits,
)
from .curve import RobustnessCurve
from .registry import ATTACKS, MINIMAL_NORM, SPECS, AttackFn

Data = Union[Iterable[Any], tuple[torch.Tensor, torch.Tensor]]


@dataclasses.dataclass
class RobustnessReport:
    """What :func:`robust_accuracy` measured.

    A report exists only over at least one sample, with one count and one confidence per radius:
    constructing one otherwise raises ``ValueError``, so its accuracies are always counts divided by
    the samples they were counted over.

    Attributes:
        eps: the radii, in the order given.
        num_samples: samples evaluated (>= 1).
        clean_correct: correctly classified clean samples.
        robust_correct: per eps, samples still correct under attack.
        clean_confidence: mean softmax probability of the true label on clean inputs.
        adversarial_confidence: per eps, the same on the adversarial inputs (clean inputs for samples
            that were not attacked because they were already misclassified).
        correct: ``[N]`` bool, per sample in data order: classified correctly (``None`` when the report
            was built from counts alone).
        robust: ``[len(eps), N]`` bool: still correct under attack at each eps (``None`` likewise).
            Two models evaluated on the same data can be compared sample by sample (paired).
    """

    eps: list[float]
    num_samples: int
    clean_correct: int
    robust_correct: list[int]
    clean_confidence: float
    adversarial_confidence: list[float]
    # Not compared by ==: two reports are equal when their numbers are (tensors have no truth value).
    correct: torch.Tensor | None = dataclasses.field(default=None, compare=False)
    robust: torch.Tensor | None = dataclasses.field(default=None, compare=False)

    def __post_init__(self) -> None:
        check_nonempty(check_int(self.num_samples, "num_samples"), "the evaluated data")
        check_int(self.clean_correct, "clean_correct", 0, self.num_samples)
        if len(self.robust_correct) != len(self.eps) or len(self.adversarial_confidence) != len(self.eps):
            raise ValueError(f"robust_correct and adversarial_confidence must hold one value per eps "
                             f"({len(self.eps)}), got {len(self.robust_correct)} and "
                             f"{len(self.adversarial_confidence)}")
        for i, count in enumerate(self.robust_correct):
            check_int(count, f"robust_correct[{i}]", 0, self.clean_correct)
        if self.correct is not None and (self.correct.shape != (self.num_samples,)
                                         or int(self.correct.sum()) != self.clean_correct):
            raise ValueError("correct must hold one flag per sample and count clean_correct")
        if self.robust is not None and (self.robust.shape != (len(self.eps), self.num_samples)
                                        or self.robust.sum(1).tolist() != list(self.robust_correct)):
            raise ValueError("robust must hold one flag per eps and sample and count robust_correct")

    @property
    def clean_accuracy(self) -> float:
        return self.clean_correct / self.num_samples

    @property
    def robust_accuracy(self) -> list[float]:
        return [c / self.num_samples for c in self.robust_correct]

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly: the per-sample flags as lists of 0/1."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name in ("correct", "robust"):
            if out[name] is not None:
                out[name] = out[name].int().tolist()
        out["clean_accuracy"] = self.clean_accuracy
        out["robust_accuracy"] = self.robust_accuracy
        return out


def _checked_batch(x: object, y: object, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` of one batch, checked as an attack checks its input (the message says which batch)."""
    try:
        x = check_images(x)
        # Labels may sit on another device than the images: both move to the evaluation device.
        y = check_labels(y.to(x.device) if isinstance(y, torch.Tensor) else y, x)
    except (TypeError, ValueError) as error:
        raise type(error)(f"{where}: {error}") from None
    return x, y


def _batches(data: Data, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The ``(x, y)`` batches of ``data``, each checked before it is yielded."""
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        x, y = _checked_batch(data[0], data[1], "data")
        for i in range(0, len(x), batch_size):
            yield x[i : i + batch_size], y[i : i + batch_size]
        return
    if isinstance(data, (torch.Tensor, str, bytes)) or not isinstance(data, Iterable):
        raise TypeError(f"data must be a pair of tensors (x, y) or an iterable of (x, y) batches, "
                        f"got {type(data).__name__}")
    for index, batch in enumerate(data):
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise TypeError(f"data must yield (x, y) batches, e.g. a DataLoader over (image, label) pairs; "
                            f"batch {index} is a {type(batch).__name__}")
        yield _checked_batch(batch[0], batch[1], f"data batch {index}")


def _radii(eps: object) -> list[float]:
    """``eps`` as a non-empty list of finite radii >= 0 (a list, tuple or 1-D tensor/array)."""
    if is_real(eps) or getattr(eps, "ndim", None) == 0:
        raise TypeError(f"eps must be a list of radii (e.g. eps=[{eps}]), got a single number")
    if isinstance(eps, torch.Tensor) or (hasattr(eps, "__array__") and hasattr(eps, "tolist")):
        if eps.ndim != 1:  # type: ignore[attr-defined]
            raise ValueError(f"eps must list the radii in one dimension, got shape {tuple(eps.shape)}")  # type: ignore[attr-defined]
        eps = eps.tolist()  # type: ignore[attr-defined]
    radii = check_sequence(eps, "eps", nonempty=False)
    if not radii:
        raise ValueError("eps must list at least one radius")
    return [check_real(e, "eps", low=0.0) for e in radii]


@overload
def robust_accuracy(
    model: torch.nn.Module, data: Data, *, eps: Sequence[float] | None = ..., curve: Literal[False] = ...,
    attack: str | AttackFn | None = ..., device: torch.device | str | None = ..., logits: LogitsSelector = ...,
    batch_size: int = ..., max_batches: int | None = ..., progress: bool = ..., distributed: bool = ...,
    **attack_kwargs: Any,
) -> RobustnessReport: ...
@overload
def robust_accuracy(
    model: torch.nn.Module, data: Data, *, eps: None = ..., curve: Literal[True],
    attack: str | AttackFn | None = ..., device: torch.device | str | None = ..., logits: LogitsSelector = ...,
    batch_size: int = ..., max_batches: int | None = ..., progress: bool = ..., distributed: bool = ...,
    **attack_kwargs: Any,
) -> RobustnessCurve: ...
def robust_accuracy(
    model: torch.nn.Module,
    data: Data,
    *,
    eps: Sequence[float] | None = None,
    curve: bool = False,
    attack: str | AttackFn | None = None,
    device: torch.device | str | None = None,
    logits: LogitsSelector = None,
    batch_size: int = 256,
    max_batches: int | None = None,
    progress: bool = False,
    distributed: bool = False,
    **attack_kwargs: Any,
) -> RobustnessReport | RobustnessCurve:
    """Clean and robust accuracy of ``model`` for every radius in ``eps``, or (``curve=True``) at every
    radius at once.

    For each batch: one clean forward; then for each eps the attack runs on the samples that are
    still correctly classified (compaction), and a sample counts as robust if the model still
    classifies its adversarial input correctly.

    With ``curve=True`` a minimal-norm attack runs once on the correctly classified samples of each
    batch instead, and each sample's radius is the norm of the closest point it found that the model
    (evaluated again on it, as for a fixed eps) misclassifies: 0 for samples misclassified clean (not
    attacked), ``inf`` where it found none. The :class:`~nonrobust_ext.attacks.curve.RobustnessCurve`
    then gives the robust accuracy at any radius (``curve.accuracy(eps)``), the median radius and the
    expected robustness over a range.

    Args:
        model: the classifier (evaluated in eval mode; its modes are restored afterwards).
        data: an iterable of ``(x, y)`` batches (e.g. a DataLoader), or a pair of tensors
            ``(x, y)`` split into batches of ``batch_size``. Each ``x`` a finite floating-point
            batch, each ``y`` its ``[B]`` integer labels.
        eps: the radii to evaluate, a list of finite numbers >= 0 (0 gives the clean accuracy);
            required without ``curve``, refused with it (use ``curve.accuracy(eps)``).
        curve: return the robustness curve from a minimal-norm attack's per-sample radii instead of
            the accuracies at ``eps``.
        attack: without ``curve``: a name in :data:`ATTACKS` (default ``"pgd"``: ``"fgsm"``,
            ``"bim"``, ...) or a callable ``attack(model, x, y, eps=..., **attack_kwargs)`` returning
            the adversarial batch. With ``curve``: a minimal-norm attack of the norm asked for,
            ``"fmn"`` (the default; ``norm="linf"`` or ``"l2"``, default ``"linf"``), or
            ``"deepfool"`` or ``"cw_l2"`` (``norm="l2"`` only, the norm their results carry).
        device: where to evaluate (default: where the model's parameters are).
        logits: where the logits are in the model's output (index, key or callable); also passed to
            named attacks.
        batch_size: batch size when ``data`` is a pair of tensors (>= 1).
        max_batches: stop after this many batches (>= 1; None: all of them).
        progress: show a progress bar (tqdm, when installed).
        distributed: under ``torchrun`` (an initialised process group; every rank passes the same
            data), rank ``r`` attacks batches ``r, r + world, ...`` and the per-sample outcomes are
            summed over the ranks: every rank returns the whole evaluation, equal to one process's
            (the attacks' randomness must come from ``seed``, which restarts for every batch).
        attack_kwargs: passed to the attack (e.g. ``steps=20, norm="l2", seed=0``). With the iterative
            attacks (``pgd``, ``bim``, ``apgd``, ``mifgsm``, ``difgsm``), ``early_stop=True`` gives
            the same robust accuracy for much less work when most samples fall early, but the
            adversarial confidence is then measured at each sample's first fooling point rather than
            after all steps, so it is off by default.

    Returns:
        A :class:`RobustnessReport` over at least one sample, or with ``curve=True`` a
        :class:`~nonrobust_ext.attacks.curve.RobustnessCurve` over at least one sample.

    Raises:
        TypeError: an argument, a batch or its labels of the wrong type; a keyword argument the named
            attack does not take; ``eps`` missing without ``curve``.
        ValueError: a bad value (eps NaN, infinite, negative or empty, or given with ``curve``;
            with ``curve`` an attack that is not a minimal-norm one of the norm asked for;
            batch_size or max_batches < 1;
            a device that does not exist here;
            x and y of different lengths; NaN or infinite images; labels outside the model's
            classes; NaN logits), or data that holds no samples.
    """
    check_model(model)
    curve = check_bool(curve, "curve")
    if curve and eps is not None:
        raise ValueError("eps is not used with curve=True: the curve holds every radius; read the robust "
                         "accuracy at eps with curve.accuracy(eps)")
    if not curve and eps is None:
        raise TypeError("robust_accuracy needs eps, a list of radii (or curve=True for the whole robustness curve)")
    batch_size = check_int(batch_size, "batch_size", 1)
    max_batches = check_optional_int(max_batches, "max_batches", 1)
    progress = check_bool(progress, "progress")
    distributed = check_bool(distributed, "distributed")
    _distributed.require_group(distributed)
    logits = check_selector(logits)
    if curve:
        return _robustness_curve(model, data, attack="fmn" if attack is None else attack, device=device,
                                 logits=logits, batch_size=batch_size, max_batches=max_batches, progress=progress,
                                 distributed=distributed, attack_kwargs=attack_kwargs)
    eps_list = _radii(eps)
    if attack is None:
        attack = "pgd"
    if isinstance(attack, str):
        if attack not in ATTACKS:
            raise ValueError(f"attack must be one of {sorted(ATTACKS)} or a callable, got {attack!r}")
        attack_fn = ATTACKS[attack]
        attack_kwargs = {"logits": logits, **attack_kwargs}
        _check_attack_kwargs(attack, attack_fn, attack_kwargs)
    elif callable(attack):
        attack_fn = attack
    else:
        raise TypeError(f"attack must be a name or a callable, got {type(attack).__name__}")
    device = resolve_device(model, device)

    batches: Iterable[tuple[torch.Tensor, torch.Tensor]] = progress_bar(
        _batches(data, batch_size), description="robust accuracy", enabled=progress, unit="batch")

    rank, world = _distributed.world() if distributed else (0, 1)
    correct_parts, clean_p_parts, robust_parts, adv_p_parts = [], [], [], []
    with eval_mode(model):
        for index, (x, y) in enumerate(batches):
            if max_batches is not None and index >= max_batches:
                break
            x, y = x.to(device), y.to(device).long()
            # Every rank classifies every batch (cheap next to the attacks, and a bad batch then raises on
            # all ranks alike); each attacks only its own batches, leaving zeros in the others' rows.
            z = clean_logits(model, x, y, logits)
            correct = z.argmax(1) == y
            clean_p = true_label_probability(z, y).double()
            correct_parts.append(correct.cpu())
            clean_p_parts.append(clean_p.cpu())
            robust = torch.zeros(len(eps_list), len(y), dtype=torch.bool, device=x.device)
            adv_p = torch.zeros(len(eps_list), len(y), dtype=torch.float64, device=x.device)
            if index % world == rank:
                keep = correct.nonzero().squeeze(1)
                for k, e in enumerate(eps_list):
                    robust[k], adv_p[k] = correct, clean_p
                    if e > 0 and len(keep):
                        x_adv = attack_fn(model, x[keep], y[keep], eps=e, **attack_kwargs)
                        _check_adversarial(x_adv, x[keep])
                        with torch.no_grad():
                            adv_logits = check_finite_logits(select_logits(model(x_adv), logits))
                        robust[k, keep] = adv_logits.argmax(1) == y[keep]
                        adv_p[k, keep] = true_label_probability(adv_logits, y[keep]).double()
            robust_parts.append(robust.cpu())
            adv_p_parts.append(adv_p.cpu())
    correct_all = torch.cat(correct_parts) if correct_parts else torch.zeros(0, dtype=torch.bool)
    total = len(correct_all)
    check_nonempty(total, "data")
    robust_all, adv_p_all = torch.cat(robust_parts, dim=1), torch.cat(adv_p_parts, dim=1)
    if distributed:  # a process group alone says nothing: each rank may be evaluating its own data
        _distributed.sum_parts_(robust_all)
        _distributed.sum_parts_(adv_p_all)
    return RobustnessReport(
        eps=eps_list,
        num_samples=total,
        clean_correct=int(correct_all.sum()),
        robust_correct=[int(c) for c in robust_all.sum(1)],
        clean_confidence=float(torch.cat(clean_p_parts).sum()) / total,
        adversarial_confidence=[float(c) / total for c in adv_p_all.sum(1)],
        correct=correct_all,
        robust=robust_all,
    )


def _robustness_curve(
    model: torch.nn.Module,
    data: Data,
    *,
    attack: object,
    device: torch.device | str | None,
    logits: LogitsSelector,
    batch_size: int,
    max_batches: int | None,
    progress: bool,
    distributed: bool,
    attack_kwargs: dict[str, Any],
) -> RobustnessCurve:
    """:func:`robust_accuracy` with ``curve=True`` (its arguments already checked but for the attack)."""
    name, norm, attack_fn, attack_kwargs = _curve_attack(attack, attack_kwargs, logits)
    device = resolve_device(model, device)
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]] = progress_bar(
        _batches(data, batch_size), description="robustness curve", enabled=progress, unit="batch")

    rank, world = _distributed.world() if distributed else (0, 1)
    radii: list[torch.Tensor] = []
    clean_correct = 0
    with eval_mode(model):
        for index, (x, y) in enumerate(batches):
            if max_batches is not None and index >= max_batches:
                break
            x, y = x.to(device), y.to(device).long()
            correct = clean_logits(model, x, y, logits).argmax(1) == y
            clean_correct += int(correct.sum())
            # Zeros in the other ranks' batches: the sum over ranks is every batch's radii.
            radius = torch.zeros(len(y), dtype=torch.float64)
            keep = correct.nonzero().squeeze(1)
            if len(keep) and index % world == rank:
                radius[keep.cpu()] = _fooling_radii(model, attack_fn(model, x[keep], y[keep], **attack_kwargs),
                                                    y[keep], logits)
            radii.append(radius)
    all_radii = _gathered(radii, distributed)
    check_nonempty(len(all_radii), "data")
    return RobustnessCurve(norm=norm, attack=name, radii=all_radii, num_samples=len(all_radii),
                           clean_correct=clean_correct)


def _gathered(radii: list[torch.Tensor], distributed: bool) -> torch.Tensor:
    """The per-batch radii of the whole evaluation, in data order, as one ``[N]`` float64 CPU tensor;
    ``distributed``: each rank's own batches summed with the others' (zeros there; ``inf + 0`` stays ``inf``)."""
    if not radii:
        return torch.zeros(0, dtype=torch.float64)
    return _distributed.sum_parts_(torch.cat(radii)) if distributed else torch.cat(radii)


def _curve_attack(
    attack: object, attack_kwargs: dict[str, Any], logits: LogitsSelector
) -> tuple[str, str, AttackFn, dict[str, Any]]:
    """``(name, norm, fn, kwargs)`` of the minimal-norm attack a curve is measured with: the named attack
    must search for the smallest perturbation in the norm asked for (``norm=`` in ``attack_kwargs``,
    default its first norm), and is called with ``return_result=True``."""
    if not isinstance(attack, str) or attack not in MINIMAL_NORM:
        shown = attack if isinstance(attack, str) else type(attack).__name__
        raise ValueError(f"attack must be a minimal-norm attack ({', '.join(repr(n) for n in MINIMAL_NORM)}) with "
                         f"curve=True, got {shown!r}: a fixed-radius attack gives no per-sample radius; pass "
                         "eps=[...] without curve for it")
    spec = SPECS[attack]
    kwargs = {"logits": logits, **attack_kwargs}
    norm = kwargs.pop("norm", spec.norms[0])
    if norm not in spec.norms:
        raise ValueError(f"attack={attack!r} measures {', '.join(spec.norms)} radii only, got norm={norm!r}; "
                         f"use attack='fmn' for norm='linf'")
    if spec.takes("norm"):
        kwargs["norm"] = norm
    if "return_result" in kwargs:
        raise TypeError("return_result is set by robust_accuracy; do not pass it to the attack")
    if kwargs.get("targeted"):
        raise ValueError("targeted=True has no place in a robustness curve: the radii are those of untargeted "
                         "attacks on the true labels")
    _check_attack_kwargs(attack, spec.fn, kwargs)
    return attack, norm, spec.fn, {**kwargs, "return_result": True}


def _fooling_radii(model: torch.nn.Module, result: Any, y: torch.Tensor, logits: LogitsSelector) -> torch.Tensor:
    """``[B]`` float64 CPU: the distance a minimal-norm attack's result reports (``radius``, or ``l2``)
    where the model, evaluated again on its point, misclassifies it; ``inf`` elsewhere. The second
    verdict makes the radius one the model really fails at, as a fixed-eps evaluation would count it
    (an attack's own verdict can differ in a borderline case: another batch, another precision)."""
    distance = result.radius if hasattr(result, "radius") else result.l2
    with torch.no_grad():
        adv_logits = check_finite_logits(select_logits(model(result.x_adv), logits))
    fooled = result.success & (adv_logits.argmax(1) != y)
    return torch.where(fooled, distance.double(), math.inf).cpu()


def true_label_probability(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``[B]`` softmax probability of the true label (the study's confidence measure), in float32."""
    return torch.softmax(logits.float(), dim=1).gather(1, y[:, None]).squeeze(1)


def _check_attack_kwargs(name: str, fn: AttackFn, kwargs: dict[str, Any]) -> None:
    """Refuse, before any batch is attacked, keyword arguments the named attack does not take."""
    parameters = inspect.signature(fn).parameters
    reserved = {"model", "x", "y", "eps"}
    for key in kwargs:
        if key in reserved:
            raise TypeError(f"{key} is set by robust_accuracy; do not pass it to the attack")
        if key not in parameters:
            accepted = sorted(p for p in parameters if p not in reserved)
            raise TypeError(f"{key} is not an option of attack={name!r} (it takes {', '.join(accepted)})")


def _check_adversarial(x_adv: object, x: torch.Tensor) -> None:
    """What a callable attack returned is an adversarial batch for ``x``."""
    if not isinstance(x_adv, torch.Tensor):
        raise TypeError(f"attack must return the adversarial batch (a tensor), got {type(x_adv).__name__}")
    if x_adv.shape != x.shape:
        raise ValueError(f"attack must return an adversarial batch shaped like its input {tuple(x.shape)}, "
                         f"got {tuple(x_adv.shape)}")
