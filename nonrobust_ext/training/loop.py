"""The training loop: one function for pretraining, fine-tuning and training from scratch.

What it guarantees:

- **Nothing lost on failure.** A checkpoint (model, optimiser, position in the data, best-so-far,
  the running training metrics) is written atomically at every epoch end (or every
  ``checkpoint_every`` steps). ``resume=True`` continues where the last checkpoint stopped, and on
  CPU a resumed run computes exactly what an uninterrupted one does: the data order, the attacks'
  random starts and the learning rate are pure functions of (seed, epoch, step), not of how the run
  got there.
- **Interrupts take effect at a step boundary.** While :func:`train` runs, SIGINT (Ctrl-C) and
  SIGTERM (a scheduler, torchrun) only record the request (see :class:`InterruptRequests`); after
  the step in progress has completed — forward, backward, optimiser step, and any validation or
  checkpoint write due at that step — the loop writes a checkpoint and raises
  ``KeyboardInterrupt``. So the saved state is always the state after a whole number of steps, and
  the resumed run ends bit for bit where an uninterrupted one ends, whenever the signal came. A
  second signal while the first is pending stops at once (the escape hatch for a step that hangs),
  and a ``KeyboardInterrupt`` raised any other way (by code inside the objective, or delivered
  outside the main thread) saves nothing: in both cases the last checkpoint stands.
- **Verified files.** Checkpoints are read through :func:`nonrobust_ext._io.safe_torch_load`, which
  checks every record's checksum: a corrupted ``checkpoint.pt`` or ``best.pt`` raises a ``ValueError``
  naming the file instead of resuming from changed weights. No checkpoint holding a NaN or infinite
  value is ever written: a loss that becomes non-finite stops the run with a ``FloatingPointError``
  naming the step.
- **Model selection on validation data**, never on the test set: with ``val_data`` the loop evaluates
  at every checkpoint and keeps the best weights by ``select``.
- **Metrics as JSON lines** (``metrics.jsonl``, one line per checkpoint) and a tqdm progress bar that
  stays quiet when not on a terminal.
- **Several GPUs or machines** under ``torchrun``: when ``torch.distributed`` is initialised the model is
  wrapped in DDP, each rank trains on its shard of every batch (``batch_size`` is the global batch) and
  runs its attacks on its own samples with the bare model, evaluation sums counts over ranks, the
  ranks agree at every step boundary on whether to stop, and rank 0 alone writes files.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import torch
import torch.distributed as dist

from .._io import atomic_torch_save, atomic_write, safe_torch_load
from .._progress import progress_bar
from .._validate import (
    check_bool,
    check_choice,
    check_finite,
    check_images,
    check_int,
    check_labels,
    check_nonempty,
    check_optional_int,
    check_real,
    check_reals,
    resolve_device,
)
from ..attacks import robust_accuracy
from ..attacks._distributed import world as rank_and_world
from ..data import TensorData, batches, num_batches
from .finetune import train_mode
from .objectives import Objective

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
METRICS = "metrics.jsonl"
_FORMAT = "nonrobust_ext.train/1"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings. Give exactly one of ``epochs`` and ``steps``.

    Attributes:
        epochs: passes over the training data.
        steps: optimiser steps in total (for few-shot sets: 100 images at batch 128 is one step an
            epoch, so train by steps).
        batch_size: the global batch (split evenly over DDP ranks).
        optimizer: ``"sgd"`` (with ``momentum``, ``nesterov``) or ``"adam"``.
        lr, weight_decay: base learning rate and L2 weight decay (parameter groups may set their own lr).
        schedule: ``"cosine"`` (to 0 over the run), ``"step"`` (times ``gamma`` at each fraction of the
            run in ``milestones``) or ``"constant"``; after ``warmup_steps`` of linear warm-up.
        seed: seeds the data order and every attack's random start.
        checkpoint_every: optimiser steps between checkpoints (``None``: at every epoch end).
        select: which weights the run ends with: ``"last"``, or the best by ``"val_accuracy"`` or
            ``"val_robust_accuracy"`` (needs ``val_data``, and ``val_attack`` for the robust one).

    Raises:
        TypeError: a setting of the wrong type (``steps=1.5``, ``lr="0.1"``, ``nesterov=1``).
        ValueError: both or neither of ``epochs`` and ``steps``; a value out of range, NaN or
            infinite (``lr`` > 0, ``momentum`` in [0, 1), ``weight_decay`` >= 0, ``gamma`` > 0,
            ``milestones`` in (0, 1), counts >= 1, ``warmup_steps`` and ``seed`` >= 0); an unknown
            ``optimizer``, ``schedule`` or ``select``; ``nesterov`` without momentum.
    """

    epochs: int | None = None
    steps: int | None = None
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    milestones: tuple[float, ...] = (0.5, 0.75)
    gamma: float = 0.1
    warmup_steps: int = 0
    seed: int = 0
    checkpoint_every: int | None = None
    select: str = "last"

    def __post_init__(self) -> None:
        for name in ("epochs", "steps", "checkpoint_every"):
            check_optional_int(getattr(self, name), name, 1)
        if (self.epochs is None) == (self.steps is None):
            raise ValueError(f"give exactly one of epochs and steps, got epochs={self.epochs}, steps={self.steps}")
        check_int(self.batch_size, "batch_size", 1)
        check_choice(self.optimizer, "optimizer", ("sgd", "adam"))
        # Every real setting is finite: lr=inf or momentum=nan can only produce NaN weights.
        check_real(self.lr, "lr", low=0.0, low_inclusive=False)
        # momentum >= 1 never forgets a gradient: the velocity grows without bound.
        check_real(self.momentum, "momentum", low=0.0, high=1.0, high_inclusive=False)
        check_bool(self.nesterov, "nesterov")
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov=True needs momentum > 0, got momentum=0")
        check_real(self.weight_decay, "weight_decay", low=0.0)
        check_choice(self.schedule, "schedule", ("cosine", "step", "constant"))
        # Fractions of the run strictly inside it; stored as a tuple so configs compare and hash alike.
        milestones = check_reals(self.milestones, "milestones", nonempty=False, low=0.0, high=1.0,
                                 low_inclusive=False, high_inclusive=False)
        object.__setattr__(self, "milestones", milestones)
        check_real(self.gamma, "gamma", low=0.0, low_inclusive=False)
        check_int(self.warmup_steps, "warmup_steps", 0)
        check_int(self.seed, "seed", 0)
        check_choice(self.select, "select", ("last", "val_accuracy", "val_robust_accuracy"))

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "milestones": list(self.milestones)}


@dataclasses.dataclass
class TrainResult:
    """What a run produced.

    Attributes:
        steps: optimiser steps taken in total (including before a resume).
        history: the metrics lines of the run, oldest first.
        best: ``{"metric", "value", "step"}`` of the kept weights when ``select`` is not ``"last"``.
        out_dir: where the checkpoint and metrics are (None without one).
        resumed_from: the step the run resumed from (0 for a fresh run).
    """

    steps: int
    history: list[dict[str, Any]]
    best: dict[str, Any] | None
    out_dir: Path | None
    resumed_from: int

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1] if self.history else {}


def learning_rate_factor(config: TrainConfig, step: int, total: int) -> float:
    """The schedule's multiplier of the base learning rate at optimiser step ``step`` (0-based) of a
    run of ``total`` steps.

    Raises:
        TypeError: ``config`` not a :class:`TrainConfig`; ``step`` or ``total`` not an int.
        ValueError: ``step < 0`` or ``total < 1``.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    check_int(step, "step", 0)
    check_int(total, "total", 1)
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, total - config.warmup_steps)
    if config.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    if config.schedule == "step":
        return config.gamma ** sum(progress >= m for m in config.milestones)
    return 1.0


def _as_data(data: Any, name: str) -> TensorData:
    """``data`` as a :class:`TensorData`, checked where it enters: a pair of tensors or a set with no
    samples, NaN or infinite pixels, or float labels is refused with ``name`` in the message."""
    if isinstance(data, TensorData):
        check_nonempty(len(data), name)
        # A set is checked when made, but its tensors may have been changed in place since.
        check_finite(data.x, f"{name}.x")
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        x = check_images(data[0], f"{name} x", min_dim=4)
        if x.dim() != 4:
            raise ValueError(f"{name} x must be [N, C, H, W], got shape {tuple(x.shape)}")
        y = check_labels(data[1], f"{name} y", n=x.shape[0], device=x.device, nonnegative=True)
        check_nonempty(len(y), name)
        num_classes = int(y.max()) + 1
        return TensorData(x, y.long(), [str(c) for c in range(num_classes)])
    raise TypeError(
        f"{name} must be a nonrobust_ext.data.TensorData or a pair of tensors (x, y), got {type(data).__name__}"
    )


def _rank() -> int:
    return rank_and_world()[0]


def _any_rank(flag: bool, device: torch.device) -> bool:
    """``flag`` or'ed over the DDP ranks (the flag itself without DDP): every rank must take the
    same branch at a step boundary, or the ones that carry on wait forever for the ones that stopped."""
    rank, world = rank_and_world()
    if world == 1:
        return flag
    on = device if dist.get_backend() == "nccl" else torch.device("cpu")
    value = torch.tensor([1.0 if flag else 0.0], device=on)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def _make_optimizer(config: TrainConfig, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov,
                               weight_decay=config.weight_decay)
    return torch.optim.Adam(groups, lr=config.lr, weight_decay=config.weight_decay)


def _step_seed(config: TrainConfig, step: int, rank: int) -> int:
    """The attack seed of one optimiser step on one rank: a function of (seed, step, rank) only."""
    return (config.seed * 1_000_003 + step) * 1_009 + rank


class InterruptRequests:
    """SIGINT and SIGTERM turned into a request the training loop acts on at its next step boundary.

    A context manager: on entry (in the main thread only — Python runs signal handlers there, and
    only there may they be installed) it installs a handler for SIGINT and SIGTERM that records the
    signal and returns, so the step in progress runs to its end with its state consistent; on exit
    the previous handlers are restored. A signal whose previous handler was ``SIG_IGN`` stays
    ignored (a job started with ``nohup``, or in the background by a shell, asked not to be
    interrupted). A *second* signal while one is pending raises ``KeyboardInterrupt`` at once, from
    wherever the loop is: a step that hangs (a stuck collective, a deadlocked data source) can still
    be stopped, and that stop saves nothing, so the last checkpoint stands.

    Attributes:
        requested: the name of the first signal received (``"SIGINT"``, ``"SIGTERM"``), or ``None``.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> InterruptRequests:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                previous = signal.getsignal(sig)
                if previous is signal.SIG_IGN or previous is None:  # None: installed outside Python; leave it
                    continue
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()
        if exc_type is None and self.requested is not None:
            # Received after the loop's last look (training had finished, its state saved): the caller
            # still asked to stop, and a study training several models must not go on to the next.
            raise KeyboardInterrupt(f"{self.requested} received as training finished; everything was saved")

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.requested is not None:
            raise KeyboardInterrupt(
                f"{name} while stopping after {self.requested}: stopped at once, mid-step; nothing was saved "
                "from this step, the last checkpoint stands"
            )
        self.requested = name


def evaluate(
    model: torch.nn.Module,
    data: TensorData | Sequence[torch.Tensor],
    *,
    attack: dict[str, Any] | None = None,
    batch_size: int = 256,
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """Clean accuracy (and robust accuracy under ``attack``) of ``model`` on ``data``; under DDP each
    rank evaluates its shard and the counts are summed.

    Args:
        model: the classifier.
        data: a :class:`TensorData` or a pair of tensors ``(x, y)``; at least one sample, every pixel finite.
        attack: keyword arguments of :func:`nonrobust_ext.robust_accuracy` with one ``eps`` (a number
            >= 0; default 0), e.g. ``{"attack": "pgd", "eps": 0.1, "steps": 10}``.
        batch_size: samples per evaluation batch (>= 1).
        device: where to evaluate (default: where the model is).

    Returns:
        ``{"val_accuracy": ...}``, plus ``"val_robust_accuracy"`` with ``attack``.

    Raises:
        TypeError: ``model`` not an ``nn.Module``, ``data`` not a set, ``attack`` not a dict, a
            setting of the wrong type.
        ValueError: no samples (an accuracy over zero samples is not a number), NaN pixels, a bad
            ``eps`` or ``batch_size``.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    data = _as_data(data, "data")
    check_int(batch_size, "batch_size", 1)
    _attack_kwargs(attack, "attack")
    return _evaluate(model, data, attack=attack, batch_size=batch_size, device=device)


def _evaluate(model: torch.nn.Module, data: TensorData, *, attack: dict[str, Any] | None, batch_size: int = 256,
              device: torch.device | str | None) -> dict[str, float]:
    """:func:`evaluate` of arguments already checked (the loop validates at every checkpoint)."""
    kwargs = _attack_kwargs(attack, "attack")
    eps = kwargs.pop("eps", 0.0)
    rank, world = rank_and_world()
    shard = data.subset(torch.arange(rank, len(data), world)) if world > 1 else data
    if len(shard):
        report = robust_accuracy(model, (shard.x, shard.y), eps=[eps], batch_size=batch_size, device=device,
                                 **kwargs)
        counts = torch.tensor([report.num_samples, report.clean_correct, report.robust_correct[0]],
                              dtype=torch.float64)
    else:  # more DDP ranks than samples: this rank adds nothing, the sum over ranks is still checked below
        counts = torch.zeros(3, dtype=torch.float64)
    if world > 1:
        dist.all_reduce(counts)
    n = check_nonempty(int(counts[0]), "data")
    out = {"val_accuracy": float(counts[1]) / n}
    if attack is not None:
        out["val_robust_accuracy"] = float(counts[2]) / n
    return out


def _attack_kwargs(attack: object, name: str) -> dict[str, Any]:
    """The keyword arguments of a validation attack, its one ``eps`` checked where it enters."""
    if attack is None:
        return {}
    if not isinstance(attack, dict):
        raise TypeError(f"{name} must be a dict of robust_accuracy keyword arguments or None, "
                        f"got {type(attack).__name__}")
    kwargs = dict(attack)
    if "eps" in kwargs:
        kwargs["eps"] = check_real(kwargs["eps"], f"{name}['eps']", low=0.0)
    return kwargs


def train(
    model: torch.nn.Module,
    objective: Objective,
    data: TensorData | Sequence[torch.Tensor],
    *,
    config: TrainConfig,
    out_dir: str | os.PathLike[str] | None = None,
    resume: bool = True,
    param_groups: list[dict[str, Any]] | None = None,
    val_data: TensorData | Sequence[torch.Tensor] | None = None,
    val_attack: dict[str, Any] | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
    description: str = "train",
) -> TrainResult:
    """Train ``model`` in place on ``data`` with ``objective``.

    Interrupts: while this runs, SIGINT and SIGTERM (main thread) are acted on at the next step
    boundary — the step in progress completes, a checkpoint is written (with ``out_dir``), then
    ``KeyboardInterrupt`` is raised; previous handlers are restored on return. A second signal stops
    at once without saving. A ``KeyboardInterrupt`` raised any other way (by the objective's own code,
    or delivered outside the main thread) may land mid-step, so it saves nothing: the last
    checkpoint stands and ``resume=True`` continues from it. See :class:`InterruptRequests`.

    Args:
        model: the model (e.g. from :mod:`nonrobust_ext.models`); moved to ``device``.
        objective: a :mod:`nonrobust_ext.training.objectives` objective (``Standard()``,
            ``PGDAdversarial(eps=...)``, ``DM(beta=...)``...).
        data: the training set (``TensorData`` or ``(x, y)``), inputs in [0, 1], at least one sample.
        config: the optimisation settings.
        out_dir: where ``checkpoint.pt``, ``best.pt`` and ``metrics.jsonl`` go; ``None`` keeps nothing
            (no resume).
        resume: continue from ``out_dir/checkpoint.pt`` when it exists (a finished run returns at
            once); ``False`` starts over and overwrites it.
        param_groups: optimiser parameter groups (e.g. from
            :func:`~nonrobust_ext.training.prepare_finetune`); default: every parameter that requires grad.
        val_data: validation set, evaluated at every checkpoint.
        val_attack: robust validation: keyword arguments of :func:`nonrobust_ext.robust_accuracy`
            with one ``eps`` (e.g. ``{"attack": "pgd", "eps": 0.1, "steps": 10}``).
        device: where to train (default: where the model is).
        progress: show a progress bar (on a terminal, rank 0 only).
        description: the progress bar's label.

    Returns:
        A :class:`TrainResult`. The model holds the selected weights (``config.select``).

    Raises:
        TypeError: an argument of the wrong type (the message names it).
        ValueError: empty data, NaN or infinite pixels, settings that contradict each other, an
            ``out_dir`` that is a file, a checkpoint that is corrupt or written by a different run.
        FloatingPointError: the training loss became NaN or infinite (the run stops before saving
            anything from that step; the message names the step and what to try).
        KeyboardInterrupt: SIGINT / SIGTERM, after the checkpoint at the step boundary.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(objective, Objective):
        raise TypeError(f"objective must be a nonrobust_ext.training objective, got {type(objective).__name__}")
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    train_data = _as_data(data, "data")
    val = _as_data(val_data, "val_data") if val_data is not None else None
    _attack_kwargs(val_attack, "val_attack")
    check_bool(resume, "resume")
    check_bool(progress, "progress")
    if not isinstance(description, str):
        raise TypeError(f"description must be a str, got {type(description).__name__}")
    if out_dir is not None and not isinstance(out_dir, (str, os.PathLike)):
        raise TypeError(f"out_dir must be a str, os.PathLike or None, got {type(out_dir).__name__}")
    out = Path(out_dir) if out_dir is not None else None
    if out is not None and out.exists() and not out.is_dir():
        raise ValueError(f"out_dir {os.fspath(out)!r} is a file, not a folder")
    if config.select != "last" and val is None:
        raise ValueError(f"select={config.select!r} needs val_data")
    if config.select == "val_robust_accuracy" and val_attack is None:
        raise ValueError("select='val_robust_accuracy' needs val_attack (e.g. {'attack': 'pgd', 'eps': 0.1})")
    rank, world = rank_and_world()
    if config.batch_size % world:
        raise ValueError(f"batch_size {config.batch_size} must be divisible by the {world} DDP ranks")
    device = resolve_device(model, device)
    model.to(device)

    per_epoch = num_batches(len(train_data), config.batch_size // world, world_size=world)
    total = config.steps if config.steps is not None else config.epochs * per_epoch
    if param_groups is None:
        param_groups = [{"params": [p for p in model.parameters() if p.requires_grad]}]
        if not param_groups[0]["params"]:
            raise ValueError("model has no parameters that require grad: nothing to train")
    optimizer = _make_optimizer(config, param_groups)
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    net: Any = model
    if world > 1:
        device_ids = [device.index] if device.type == "cuda" else None
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    interrupts = InterruptRequests()
    with interrupts:
        state = _State(step=0, epoch=0, batch=0, best=None, history=[])
        running = _Running()
        resumed_from = 0
        if out is not None and resume and (out / CHECKPOINT).exists():
            state = _load_checkpoint(out / CHECKPOINT, model, optimizer, config, objective, world)
            running.restore(state.running)
            resumed_from = state.step
            if state.finished:
                _finish(model, state, config)
                return TrainResult(state.step, state.history, state.best, out, resumed_from)
        if out is not None and rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            if resumed_from == 0:  # starting over: an old run's files must not be resumed or selected later
                for name in (CHECKPOINT, BEST):
                    (out / name).unlink(missing_ok=True)
            _rewrite_metrics(out, state.history)

        bar = progress_bar(description=description, enabled=progress and rank == 0, total=total,
                           initial=state.step, unit="step")
        # The step of the checkpoint on disk: none yet for a fresh run, which starts at step 0 anyway.
        saved_step = state.step

        def checkpoint() -> None:
            """Log a metrics line (validating if asked) and write the checkpoint."""
            nonlocal saved_step
            _checkpoint(model, optimizer, state, running, config, objective, out, val, val_attack,
                        optimizer.param_groups[0]["lr"], world, device)
            saved_step = state.step

        def stop_if_interrupted() -> None:
            """At a step boundary (every state consistent): act on a pending SIGINT / SIGTERM."""
            nonlocal saved_step
            if not _any_rank(interrupts.requested is not None, device):
                return
            if out is not None and state.step > saved_step:
                _save(out, model, optimizer, state, running, config, objective, world)
                saved_step = state.step
            saved = out is not None and (out / CHECKPOINT).exists()
            where = (f"; the checkpoint in {os.fspath(out)} is at step {saved_step}, run again with resume=True "
                     "to continue" if saved else "")
            raise KeyboardInterrupt(
                f"training stopped by {interrupts.requested or 'another rank'} after step {state.step} of "
                f"{total}{where}"
            )

        try:
            while state.step < total:
                order = batches(train_data, config.batch_size // world, shuffle=True, seed=config.seed,
                                epoch=state.epoch, rank=rank, world_size=world)
                for index, (x, y) in enumerate(order):
                    if index < state.batch:
                        continue  # resuming inside this epoch: these batches were trained on already
                    if state.step >= total:
                        break
                    stop_if_interrupted()
                    factor = learning_rate_factor(config, state.step, total)
                    for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
                        group["lr"] = base * factor
                    train_mode(model)
                    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                    step_objective = objective.at(state.step / total)  # a schedule's objective of this step
                    loss, logits = step_objective(net, model, x, y, seed=_step_seed(config, state.step, rank))
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    loss_value = float(loss.detach())
                    if _any_rank(not math.isfinite(loss_value), device):
                        raise _diverged(loss_value, state, index, optimizer, saved_step, out)
                    running.add(loss_value, logits.detach(), y)
                    state.step += 1
                    state.batch = index + 1
                    bar.update(1)
                    if config.checkpoint_every is not None and state.step % config.checkpoint_every == 0:
                        checkpoint()
                else:
                    state.epoch += 1
                    state.batch = 0
                    if config.checkpoint_every is None and state.step > saved_step:
                        checkpoint()
                    continue
                break  # total reached inside the epoch
            state.finished = True
            if state.step > saved_step or not state.history:
                checkpoint()
            else:
                _save(out, model, optimizer, state, running, config, objective, world)
            stop_if_interrupted()  # a signal during the last step or the final checkpoint still stops the caller
        finally:
            bar.close()
    _finish(model, state, config)
    return TrainResult(state.step, state.history, state.best, out, resumed_from)


def _diverged(loss: float, state: _State, index: int, optimizer: torch.optim.Optimizer, saved_at: int,
              out: Path | None) -> FloatingPointError:
    lr = optimizer.param_groups[0]["lr"]
    kept = (f"the checkpoint of step {saved_at} in {os.fspath(out)} is kept (nothing from this step was saved)"
            if out is not None and saved_at > 0 else "nothing from this step was saved")
    return FloatingPointError(
        f"training diverged: the loss is {loss} at step {state.step + 1} (epoch {state.epoch}, batch {index}, "
        f"learning rate {lr:.4g}); {kept}. Try a lower lr, a warm-up (warmup_steps), a smaller eps or beta "
        "for adversarial objectives, and check the data and the model for values that overflow"
    )


@dataclasses.dataclass
class _State:
    step: int
    epoch: int
    batch: int  # batches of `epoch` already trained on
    best: dict[str, Any] | None
    history: list[dict[str, Any]]
    finished: bool = False
    best_weights: dict[str, torch.Tensor] | None = None
    running: dict[str, Any] | None = None  # the running metrics stored in the checkpoint


class _Running:
    """Loss and accuracy of the training batches since the last metrics line.

    Saved with every checkpoint (:meth:`state`), so the first metrics line after a resume averages
    over the same batches as an uninterrupted run's; ``seconds`` counts the time spent, not the
    wall-clock span, across the interruption.
    """

    def __init__(self) -> None:
        self.loss = 0.0
        self.correct = 0
        self.count = 0
        self.batches = 0
        self.started = time.perf_counter()

    def add(self, loss: float, logits: torch.Tensor, y: torch.Tensor) -> None:
        self.loss += loss
        self.batches += 1
        self.correct += int((logits.argmax(1) == y).sum())
        self.count += len(y)

    def take(self) -> dict[str, float]:
        out = {
            "train_loss": self.loss / max(self.batches, 1),
            "train_accuracy": self.correct / max(self.count, 1),
            "seconds": time.perf_counter() - self.started,
        }
        self.__init__()  # type: ignore[misc]
        return out

    def state(self) -> dict[str, Any]:
        return {"loss": self.loss, "correct": self.correct, "count": self.count, "batches": self.batches,
                "seconds": time.perf_counter() - self.started}

    def restore(self, saved: dict[str, Any] | None) -> None:
        if saved:
            self.loss, self.correct = float(saved["loss"]), int(saved["correct"])
            self.count, self.batches = int(saved["count"]), int(saved["batches"])
            self.started = time.perf_counter() - float(saved["seconds"])


def _checkpoint(model, optimizer, state: _State, running: _Running, config: TrainConfig, objective: Objective,
                out: Path | None, val: TensorData | None, val_attack: dict[str, Any] | None, lr: float,
                world: int, device: torch.device) -> None:
    _refuse_non_finite(model, optimizer, state.step)
    line: dict[str, Any] = {"step": state.step, "epoch": state.epoch, "lr": lr, **running.take()}
    if val is not None:
        line.update(_evaluate(model, val, attack=val_attack, device=device))
        if config.select != "last":
            value = line[config.select]
            if state.best is None or value > state.best["value"]:
                state.best = {"metric": config.select, "value": value, "step": state.step}
                state.best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
                if out is not None and _rank() == 0:
                    atomic_torch_save({"model": state.best_weights, "best": state.best}, out / BEST)
    state.history.append(line)
    _save(out, model, optimizer, state, running, config, objective, world)
    if out is not None and _rank() == 0:
        with open(out / METRICS, "a") as f:
            f.write(json.dumps(line) + "\n")


def _refuse_non_finite(model: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int) -> None:
    """A FloatingPointError instead of a checkpoint holding NaN or infinite weights, statistics or
    optimiser state (a finite loss does not guarantee finite weights after a huge update)."""
    tensors = [(f"model {k}", v) for k, v in model.state_dict().items()]
    tensors += [(f"optimizer state {name}", v) for slot in optimizer.state.values() for name, v in slot.items()
                if isinstance(v, torch.Tensor)]
    for name, value in tensors:
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise FloatingPointError(
                f"training diverged: after step {step} the {name} holds NaN or infinite values, so no checkpoint "
                "is written. Try a lower lr, a warm-up (warmup_steps), or check the data and the objective"
            )


def _save(out: Path | None, model, optimizer, state: _State, running: _Running, config: TrainConfig,
          objective: Objective, world: int) -> None:
    if out is None:
        return
    _refuse_non_finite(model, optimizer, state.step)
    if _rank() == 0:
        atomic_torch_save(
            {
                "format": _FORMAT,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "step": state.step,
                "epoch": state.epoch,
                "batch": state.batch,
                "finished": state.finished,
                "best": state.best,
                "history": state.history,
                "running": running.state(),
                "config": config.as_dict(),
                "objective": objective.describe(),
                "world_size": world,
            },
            out / CHECKPOINT,
        )
    if world > 1:
        dist.barrier()


_START_OVER = "delete it (or pass resume=False, or another out_dir) to start over"


def _load_checkpoint(path: Path, model, optimizer, config: TrainConfig, objective: Objective, world: int) -> _State:
    try:
        ckpt = safe_torch_load(path)
    except ValueError as error:
        raise ValueError(f"cannot resume from {os.fspath(path)!r}: {error}. It cannot be trusted: {_START_OVER}") \
            from error
    keys = ("model", "optimizer", "step", "epoch", "batch", "finished", "best", "history")
    if not isinstance(ckpt, dict) or ckpt.get("format") != _FORMAT or any(k not in ckpt for k in keys):
        raise ValueError(f"{path} is not a nonrobust_ext training checkpoint; pass resume=False or another out_dir")
    mismatched = {
        key: (ckpt[key], now)
        for key, now in (("config", config.as_dict()), ("objective", objective.describe()), ("world_size", world))
        if ckpt.get(key) != now
    }
    if mismatched:
        details = "; ".join(f"{key}: checkpoint {old!r} vs now {new!r}" for key, (old, new) in mismatched.items())
        raise ValueError(
            f"cannot resume from {path}: it was written by a different run ({details}). Use another out_dir, "
            "or resume=False to start over"
        )
    for key, value in ckpt["model"].items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ValueError(f"cannot resume from {os.fspath(path)!r}: its model entry {key!r} holds NaN or infinite "
                             f"values (a diverged run); {_START_OVER}")
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    state = _State(step=ckpt["step"], epoch=ckpt["epoch"], batch=ckpt["batch"], best=ckpt["best"],
                   history=list(ckpt["history"]), finished=ckpt["finished"], running=ckpt.get("running"))
    if state.best is not None:
        state.best_weights = _load_best(path.parent / BEST, state.best)
    return state


def _load_best(path: Path, best: dict[str, Any]) -> dict[str, torch.Tensor] | None:
    """The kept best weights, when ``best.pt`` belongs to the checkpoint's best record.

    ``best.pt`` is written just before the checkpoint that records it, so a run stopped between the
    two writes leaves a ``best.pt`` newer than the checkpoint; the resumed run retraces those steps
    and writes it again. Until then (and if it is missing) there are no weights to select.
    """
    if not path.exists():
        return None
    try:
        saved = safe_torch_load(path)
    except ValueError as error:
        raise ValueError(f"cannot resume: {error}. The best weights cannot be trusted: {_START_OVER}") from error
    if not isinstance(saved, dict) or "model" not in saved:
        raise ValueError(f"{path} is not a nonrobust_ext best-weights file; {_START_OVER}")
    if saved.get("best") != best:
        warnings.warn(f"{path} records {saved.get('best')} but the checkpoint records {best}: written by a "
                      "later step before the run stopped; the resumed run writes it again", stacklevel=3)
        return None
    return saved["model"]


def _rewrite_metrics(out: Path, history: list[dict[str, Any]]) -> None:
    """metrics.jsonl holds exactly the checkpointed history: lines logged after the last checkpoint of
    an interrupted run are dropped, as the resumed run logs them again."""
    atomic_write(out / METRICS, lambda f: f.write("".join(json.dumps(line) + "\n" for line in history)), binary=False)


def _finish(model, state: _State, config: TrainConfig) -> None:
    if config.select == "last" or state.best is None:
        return
    if state.best_weights is None:
        raise RuntimeError(
            f"the run selects {config.select} and recorded its best at step {state.best['step']}, but those weights "
            f"are missing ({BEST} was deleted, or belonged to another step); rerun with resume=False"
        )
    model.load_state_dict(state.best_weights)


__all__ = ["InterruptRequests", "TrainConfig", "TrainResult", "evaluate", "learning_rate_factor", "train"]
