"""AutoAttack (Croce & Hein, ICML 2020): the standard robustness evaluation, a cascade of four
complementary attacks, each run only on the points every earlier attack left robust.

The stages are this library's attacks (:func:`~nonrobust_ext.apgd`,
:func:`~nonrobust_ext.apgd_targeted`, :func:`~nonrobust_ext.fab`, :func:`~nonrobust_ext.square`); this
module only schedules them, verifies what each claims and keeps the log.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any, Literal, overload

import torch

from .._params import Param
from .._progress import progress_bar
from .._validate import check_bool, check_choice, check_int, check_optional_int
from ._common import (
    LogitsSelector,
    Model,
    check_batch,
    check_finite_logits,
    check_model,
    check_selector,
    clean_logits,
    eval_mode,
    select_logits,
)
from ._distributed import gather_rows, max_all, require_group, shard, sum_all, world
from ._layout import attack_model
from .apgd import apgd
from .apgd_targeted import apgd_targeted
from .fab import fab
from .square import square
from .threat import Bounds, ThreatModel, per_sample

#: The versions of the cascade: the attacks run, in order.
VERSIONS: dict[str, tuple[str, ...]] = {"standard": ("apgd-ce", "apgd-t", "fab-t", "square")}

# A point counts as adversarial only if its distance is within eps up to float rounding.
_RADIUS_SLACK = 1e-5


@dataclasses.dataclass
class StageLog:
    """One line of the cascade's log: an attack, how many points it ran on and broke, the robust
    accuracy after it (over the whole batch) and its wall-clock time."""

    attack: str
    attacked: int
    broken: int
    robust_accuracy: float
    seconds: float


@dataclasses.dataclass
class AutoAttackResult:
    """What AutoAttack found.

    Attributes:
        x_adv: the adversarial batch: per sample the first adversarial point found, ``x`` where none was
            (and for samples misclassified clean).
        success: ``[B]`` bool: the model misclassifies ``x_adv`` (clean-misclassified samples included).
        broken_by: ``[B]`` long: the index in ``attacks`` of the attack that broke the sample, ``-1`` for
            samples misclassified clean, ``-2`` for samples still robust.
        attacks: the cascade's attacks, in order.
        clean_accuracy, robust_accuracy: over the batch.
        log: one :class:`StageLog` per attack of the cascade (its time summed over the blocks; under
            ``distributed``, the slowest rank's).
        settings: what was run (norm, eps, version, steps, queries, target classes, seed).
    """

    x_adv: torch.Tensor
    success: torch.Tensor
    broken_by: torch.Tensor
    attacks: tuple[str, ...]
    clean_accuracy: float
    robust_accuracy: float
    log: list[StageLog]
    settings: dict[str, Any]

    def summary(self) -> str:
        """The cascade's log as lines of text (what the authors' code prints)."""
        lines = [f"clean accuracy: {self.clean_accuracy:.2%}"]
        lines += [f"robust accuracy after {s.attack}: {s.robust_accuracy:.2%} (attacked {s.attacked}, broke "
                  f"{s.broken}, {s.seconds:.1f} s)" for s in self.log]
        return "\n".join(lines)


@overload
def autoattack(
    model: Model, x: torch.Tensor, y: torch.Tensor, *, eps: Param, norm: str = ..., version: str = ...,
    seed: int = ..., steps: int = ..., queries: int = ..., target_classes: int = ..., bounds: Bounds = ...,
    batch_size: int = ..., logits: LogitsSelector = ..., channels_last: bool | None = ..., progress: bool = ...,
    distributed: bool = ..., return_result: Literal[False] = ...,
) -> torch.Tensor: ...
@overload
def autoattack(
    model: Model, x: torch.Tensor, y: torch.Tensor, *, eps: Param, norm: str = ..., version: str = ...,
    seed: int = ..., steps: int = ..., queries: int = ..., target_classes: int = ..., bounds: Bounds = ...,
    batch_size: int = ..., logits: LogitsSelector = ..., channels_last: bool | None = ..., progress: bool = ...,
    distributed: bool = ..., return_result: Literal[True],
) -> AutoAttackResult: ...
def autoattack(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: Param,
    norm: str = "linf",
    version: str = "standard",
    seed: int = 0,
    steps: int = 100,
    queries: int = 5000,
    target_classes: int | None = 9,
    bounds: Bounds = (0.0, 1.0),
    batch_size: int = 256,
    logits: LogitsSelector = None,
    channels_last: bool | None = None,
    progress: bool = False,
    distributed: bool = False,
    return_result: bool = False,
) -> torch.Tensor | AutoAttackResult:
    """AutoAttack, standard version: APGD-CE, APGD-T, FAB-T, Square, each on the points still robust.

    1. APGD-CE: :func:`~nonrobust_ext.apgd` with the cross-entropy, ``steps`` steps, one restart;
    2. APGD-T: :func:`~nonrobust_ext.apgd_targeted`, the targeted DLR loss towards each of the
       ``target_classes`` most likely wrong classes, ``steps`` steps each;
    3. FAB-T: :func:`~nonrobust_ext.fab` towards each of the same ranks in turn, ``steps`` steps;
    4. Square: :func:`~nonrobust_ext.square`, ``queries`` queries, the margin loss.

    The defaults are the standard evaluation (Croce & Hein's ``version="standard"``: 100 steps, 9 target
    classes, 5000 queries, one restart each); other ``steps``/``queries``/``target_classes`` give a
    cheaper or stronger cascade, and ``settings`` in the result says what ran. A sample counts as
    broken only when its point is verified: one more forward pass classifies it wrongly, and it lies in
    the eps-ball and the bounds. Per sample the first verified point is kept (the worst case over the
    cascade: robust means robust to all four). Samples the model misclassifies clean are not attacked.
    The stages draw their randomness from generators seeded with ``seed``: a run is reproducible.

    The model runs in eval mode and every submodule's mode is restored afterwards; parameter ``.grad``
    is never written; ``x`` is never modified.

    Args:
        model: the classifier (a callable returning logits, or a tuple/dict holding them: ``logits``).
        x: clean batch ``[B, C, H, W]`` inside ``bounds`` (Square needs images).
        y: ``[B]`` true labels.
        eps: radius (> 0), a number or one per sample.
        norm: ``"linf"`` or ``"l2"``.
        version: ``"standard"`` (the only version: see :data:`VERSIONS`).
        seed: seed of every stage's randomness.
        steps: steps of APGD-CE, of each APGD-T target and of each FAB-T target (>= 1).
        queries: Square's query budget (>= 1).
        target_classes: target classes of APGD-T and FAB-T (>= 1; capped at ``num_classes - 1``).
        bounds: ``(lo, hi)`` of the input space.
        batch_size: rows attacked together (>= 1). The batch is cut into blocks of this size, each
            attacked with its own generator seeded by ``seed`` and the block's index, so the answer
            does not depend on how the blocks are shared among processes.
        logits: where the logits are in the model's output.
        channels_last: run the attacks on a copy of the model with channels-last weights (its
            activations then run channels-last: several times faster on the CPU for convolutional
            models). ``None`` (default): on the CPU, for models with a 2-D convolution not channels-last
            yet; ``True``: wherever possible; ``False``: never. The copy is used only where it gives the
            model's logits on the clean batch (up to rounding); every point is verified on ``model``.
            ``settings["channels_last"]`` says whether it ran.
        progress: a progress bar over the stages.
        distributed: under ``torchrun`` (an initialised process group), each rank attacks its share of
            the blocks and the results are gathered: every rank returns the whole batch's result, the
            one a single process would (every rank must pass the same ``x`` and ``y``).
        return_result: return an :class:`AutoAttackResult` (the log) instead of the adversarial batch.

    Returns:
        The adversarial batch, or an :class:`AutoAttackResult`.

    Raises:
        TypeError, ValueError: a bad argument (named in the message): eps <= 0, NaN or infinite; an
            unknown norm or version; labels outside the model's classes; NaN inputs; a model with fewer
            than 3 classes (APGD-T's DLR loss divides by the gap between the first and third logit).
    """
    check_model(model)
    check_batch(x, y)
    version = check_choice(version, "version", tuple(VERSIONS))
    norm = check_choice(norm, "norm", ("linf", "l2"))
    per_sample(eps, x, "eps", positive=True)
    threat = ThreatModel.resolve(x, eps=eps, norm=norm, bounds=bounds)
    seed = check_int(seed, "seed", 0, 2**31 - 1)
    steps = check_int(steps, "steps", 1)
    queries = check_int(queries, "queries", 1)
    target_classes = check_optional_int(target_classes, "target_classes", 1)
    batch_size = check_int(batch_size, "batch_size", 1)
    logits = check_selector(logits)
    progress = check_bool(progress, "progress")
    distributed = check_bool(distributed, "distributed")
    return_result = check_bool(return_result, "return_result")
    require_group(distributed)
    if x.dim() != 4:
        raise ValueError(f"x must be a batch of images [B, C, H, W] (AutoAttack's Square stage needs them), "
                         f"got shape {tuple(x.shape)}")
    x = x.detach()
    y = y.long()
    attacks = VERSIONS[version]

    with eval_mode(model):
        # The clean pass and its checks run on the whole batch on every rank: a bad label raises on all
        # ranks alike instead of leaving the others waiting in a collective.
        clean = clean_logits(model, x, y, logits, min_classes=3,
                             who="AutoAttack (its APGD-T stage's DLR loss divides by the gap between the first and "
                                 "third logit)")
        runner, copied = attack_model(model, x, clean, logits, channels_last)
        num_classes = clean.shape[1]
        targets = min(target_classes if target_classes is not None else num_classes - 1, num_classes - 1)
        correct = clean.argmax(1) == y
        # Blocks of batch_size rows, each attacked with its own generator (seeded by the seed and the
        # block's index): the answer does not depend on how blocks are shared among ranks.
        blocks = [slice(i, min(i + batch_size, len(y))) for i in range(0, len(y), batch_size)]
        owned = shard(len(blocks)) if distributed else slice(0, len(blocks))
        x_adv_parts, broken_parts = [], []
        totals = torch.zeros(len(attacks), 3, dtype=torch.float64)  # attacked, broken, seconds
        bar = progress_bar(description="AutoAttack", enabled=progress, total=len(blocks[owned]) * len(attacks),
                           unit="stage")
        for number, rows in enumerate(blocks[owned], start=owned.start):
            generator = torch.Generator().manual_seed((seed << 24) + number)
            stages = _stages(norm=norm, steps=steps, queries=queries, targets=targets, bounds=bounds, logits=logits,
                             generator=generator, rows_per_pass=batch_size)
            x_block, broken_block = x[rows].clone(), torch.where(correct[rows], -2, -1)
            for index, name in enumerate(attacks):
                todo = (broken_block == -2).nonzero()[:, 0]
                started = _clock(x)
                if todo.numel():
                    where = todo + rows.start
                    x_sub, y_sub, threat_sub = x[where], y[where], threat.rows(where)
                    assert threat_sub.eps is not None
                    x_stage, success = stages[name](runner, x_sub, y_sub, threat_sub.eps)
                    verified = success & _verify(model, x_stage, x_sub, y_sub, threat_sub, logits)
                    x_block[todo[verified]] = x_stage[verified]
                    broken_block[todo[verified]] = index
                    totals[index] += torch.tensor([todo.numel(), int(verified.sum()), 0.0], dtype=torch.float64)
                totals[index, 2] += _clock(x) - started
                bar.update(1)
            x_adv_parts.append(x_block)
            broken_parts.append(broken_block)
        bar.close()

    x_adv = torch.cat(x_adv_parts) if x_adv_parts else x[:0].clone()
    broken_by = torch.cat(broken_parts) if broken_parts else y[:0].clone()
    if distributed:
        counts = [sum(b.stop - b.start for b in blocks[shard(len(blocks), r)]) for r in range(world()[1])]
        x_adv = gather_rows(x_adv, counts)
        broken_by = gather_rows(broken_by, counts)
        seconds = [max_all(float(t), x.device) for t in totals[:, 2]]
        totals = torch.tensor(sum_all(totals.flatten().tolist(), x.device), dtype=torch.float64).reshape(-1, 3)
        totals[:, 2] = torch.tensor(seconds, dtype=torch.float64)
    if not return_result:
        return x_adv
    # Robust accuracy after each stage: the samples no stage up to it has broken.
    log = [StageLog(attack=name, attacked=int(totals[i, 0]), broken=int(totals[i, 1]),
                    robust_accuracy=float(((broken_by == -2) | (broken_by > i)).float().mean()),
                    seconds=float(totals[i, 2]))
           for i, name in enumerate(attacks)]
    return AutoAttackResult(
        x_adv=x_adv, success=broken_by != -2, broken_by=broken_by, attacks=attacks,
        clean_accuracy=float(correct.float().mean()), robust_accuracy=float((broken_by == -2).float().mean()),
        log=log,
        settings={"version": version, "norm": norm, "steps": steps, "queries": queries, "target_classes": targets,
                  "seed": seed, "standard": (steps, queries, target_classes) == (100, 5000, 9),
                  "channels_last": copied},
    )


Stage = Callable[[Model, torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _stages(*, norm: str, steps: int, queries: int, targets: int, bounds: Bounds, logits: LogitsSelector,
            generator: torch.Generator, rows_per_pass: int) -> dict[str, Stage]:
    """Each attack of the cascade as ``stage(model, x, y, eps) -> (x_adv, success)``; the targeted
    stages batch as many target classes per pass as fit in ``rows_per_pass`` rows (at least one)."""
    common: dict[str, Any] = {"norm": norm, "bounds": bounds, "logits": logits, "generator": generator,
                              "return_result": True}

    def apgd_ce(model: Model, x: torch.Tensor, y: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Early stop changes only which fooling point is returned, not which samples are fooled.
        r = apgd(model, x, y, eps=eps, steps=steps, loss="ce", early_stop=True, **common)
        return r.x_adv, r.success

    def apgd_t(model: Model, x: torch.Tensor, y: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Batched targets share the model's passes, but a bigger batch is not always cheaper per row (on
        # the CPU a small CNN runs ~40% slower per row at 9 x 70 rows than at 70: the activations leave
        # the cache), and later passes skip the samples earlier targets fooled.
        per_pass = max(1, rows_per_pass // len(y))
        r = apgd_targeted(model, x, y, eps=eps, steps=steps, target_classes=targets, target_batch=per_pass, **common)
        return r.x_adv, r.success

    def fab_t(model: Model, x: torch.Tensor, y: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # One target rank at a time, each on the samples the earlier ranks left robust (as the authors).
        x_adv, success = x.clone(), torch.zeros_like(y, dtype=torch.bool)
        for rank in range(2, targets + 2):
            todo = (~success).nonzero()[:, 0]
            if todo.numel() == 0:
                break
            r = fab(model, x[todo], y[todo], eps=eps[todo], steps=steps, target_rank=rank, **common)
            x_adv[todo[r.success]] = r.x_adv[r.success]
            success[todo[r.success]] = True
        return x_adv, success

    def square_stage(model: Model, x: torch.Tensor, y: torch.Tensor,
                     eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r = square(model, x, y, eps=eps, queries=queries, **common)
        return r.x_adv, r.success

    return {"apgd-ce": apgd_ce, "apgd-t": apgd_t, "fab-t": fab_t, "square": square_stage}


def _verify(model: Model, x_adv: torch.Tensor, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel,
            logits: LogitsSelector) -> torch.Tensor:
    """``[B]`` bool: ``x_adv`` is misclassified, inside the eps-ball (up to float rounding) and the bounds."""
    with torch.no_grad():
        z = check_finite_logits(select_logits(model(x_adv), logits))
    assert threat.eps is not None
    inside = threat.distance(x_adv, x) <= threat.eps * (1 + _RADIUS_SLACK) + 1e-7
    in_bounds = (threat.clip(x_adv) == x_adv).flatten(1).all(dim=1)  # clipping to the bounds changes nothing
    return (z.argmax(1) != y) & inside & in_bounds


def _clock(x: torch.Tensor) -> float:
    """Wall-clock seconds, after the device's queued work (a CUDA stage's time is its own)."""
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
    return time.perf_counter()


__all__ = ["VERSIONS", "AutoAttackResult", "StageLog", "autoattack"]
