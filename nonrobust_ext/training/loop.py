"""The training loop: one function for pretraining, fine-tuning and training from scratch.

What it guarantees:

- **Nothing lost on failure.** A checkpoint (model, optimiser, position in the data, best-so-far) is
  written atomically at every epoch end (or every ``checkpoint_every`` steps) and when the run is
  interrupted (Ctrl-C, SIGTERM). ``resume=True`` continues where the last checkpoint stopped, and on CPU
  a resumed run computes exactly what an uninterrupted one does: the data order, the attacks' random
  starts and the learning rate are pure functions of (seed, epoch, step), not of how the run got there.
- **Model selection on validation data**, never on the test set: with ``val_data`` the loop evaluates
  at every checkpoint and keeps the best weights by ``select``.
- **Metrics as JSON lines** (``metrics.jsonl``, one line per checkpoint) and a tqdm progress bar that
  stays quiet when not on a terminal.
- **Several GPUs or machines** under ``torchrun``: when ``torch.distributed`` is initialised the model is
  wrapped in DDP, each rank trains on its shard of every batch (``batch_size`` is the global batch) and
  runs its attacks on its own samples with the bare model, evaluation sums counts over ranks, and
  rank 0 alone writes files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import signal
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from .._io import atomic_torch_save, atomic_write, safe_torch_load
from .._progress import progress_bar
from ..attacks import robust_accuracy
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
        if (self.epochs is None) == (self.steps is None):
            raise ValueError(f"give exactly one of epochs and steps, got epochs={self.epochs}, steps={self.steps}")
        for name in ("epochs", "steps", "checkpoint_every"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be an int >= 1 or None, got {value!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {self.batch_size!r}")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        if self.schedule not in ("cosine", "step", "constant"):
            raise ValueError(f"schedule must be 'cosine', 'step' or 'constant', got {self.schedule!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if any(not 0 < m < 1 for m in self.milestones):
            raise ValueError(f"milestones must be fractions of the run in (0, 1), got {self.milestones!r}")
        if self.select not in ("last", "val_accuracy", "val_robust_accuracy"):
            raise ValueError(f"select must be 'last', 'val_accuracy' or 'val_robust_accuracy', got {self.select!r}")
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be an int >= 0, got {self.warmup_steps!r}")

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
    """The schedule's multiplier of the base learning rate at optimiser step ``step`` (0-based)."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, total - config.warmup_steps)
    if config.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    if config.schedule == "step":
        return config.gamma ** sum(progress >= m for m in config.milestones)
    return 1.0


def _as_data(data: Any, name: str) -> TensorData:
    if isinstance(data, TensorData):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        x, y = data
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"{name}: x has {x.shape[0]} samples but y has {y.shape[0]}")
        num_classes = int(y.max()) + 1 if len(y) else 0
        return TensorData(x, y.long(), [str(c) for c in range(num_classes)])
    raise TypeError(
        f"{name} must be a nonrobust_ext.data.TensorData or a pair of tensors (x, y), got {type(data).__name__}"
    )


def _distributed() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _make_optimizer(config: TrainConfig, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov,
                               weight_decay=config.weight_decay)
    return torch.optim.Adam(groups, lr=config.lr, weight_decay=config.weight_decay)


def _step_seed(config: TrainConfig, step: int, rank: int) -> int:
    """The attack seed of one optimiser step on one rank: a function of (seed, step, rank) only."""
    return (config.seed * 1_000_003 + step) * 1_009 + rank


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a scheduler or torchrun stopping the job) takes the same path as Ctrl-C: checkpoint, then exit."""
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def evaluate(
    model: torch.nn.Module,
    data: TensorData,
    *,
    attack: dict[str, Any] | None = None,
    batch_size: int = 256,
    device: torch.device | None = None,
) -> dict[str, float]:
    """Clean accuracy (and robust accuracy under ``attack``, keyword arguments of
    :func:`nonrobust_ext.robust_accuracy` with one ``eps``) on ``data``; under DDP each rank evaluates
    its shard and the counts are summed."""
    rank, world = _distributed()
    shard = data.subset(torch.arange(rank, len(data), world)) if world > 1 else data
    kwargs = dict(attack or {})
    eps = kwargs.pop("eps", 0.0)
    report = robust_accuracy(model, (shard.x, shard.y), eps=[eps], batch_size=batch_size, device=device, **kwargs)
    counts = torch.tensor([report.num_samples, report.clean_correct, report.robust_correct[0]], dtype=torch.float64)
    if world > 1:
        dist.all_reduce(counts)
    n = max(float(counts[0]), 1.0)
    out = {"val_accuracy": float(counts[1]) / n}
    if attack is not None:
        out["val_robust_accuracy"] = float(counts[2]) / n
    return out


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

    Args:
        model: the model (e.g. from :mod:`nonrobust_ext.models`); moved to ``device``.
        objective: a :mod:`nonrobust_ext.training.objectives` objective (``Standard()``,
            ``PGDAdversarial(eps=...)``, ``DM(beta=...)``...).
        data: the training set (``TensorData`` or ``(x, y)``), inputs in [0, 1].
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
    """
    if not isinstance(objective, Objective):
        raise TypeError(f"objective must be a nonrobust_ext.training objective, got {type(objective).__name__}")
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    train_data = _as_data(data, "data")
    val = _as_data(val_data, "val_data") if val_data is not None else None
    if config.select != "last" and val is None:
        raise ValueError(f"select={config.select!r} needs val_data")
    if config.select == "val_robust_accuracy" and val_attack is None:
        raise ValueError("select='val_robust_accuracy' needs val_attack (e.g. {'attack': 'pgd', 'eps': 0.1})")
    if len(train_data) == 0:
        raise ValueError("data holds no samples")
    rank, world = _distributed()
    if config.batch_size % world:
        raise ValueError(f"batch_size {config.batch_size} must be divisible by the {world} DDP ranks")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device)
    out = Path(out_dir) if out_dir is not None else None

    per_epoch = num_batches(len(train_data), config.batch_size // world, world_size=world)
    total = config.steps if config.steps is not None else config.epochs * per_epoch
    if param_groups is None:
        param_groups = [{"params": [p for p in model.parameters() if p.requires_grad]}]
    optimizer = _make_optimizer(config, param_groups)
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    net: Any = model
    if world > 1:
        device_ids = [device.index] if device.type == "cuda" else None
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    state = _State(step=0, epoch=0, batch=0, best=None, history=[])
    resumed_from = 0
    if out is not None and resume and (out / CHECKPOINT).exists():
        state = _load_checkpoint(out / CHECKPOINT, model, optimizer, config, objective, world)
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

    bar = progress_bar(description=description, enabled=progress and rank == 0, total=total, initial=state.step,
                       unit="step")
    running = _Running()
    last_saved = state.step

    def checkpoint() -> int:
        """Log a metrics line (validating if asked) and write the checkpoint; returns the step saved."""
        _checkpoint(model, optimizer, state, running, config, objective, out, val, val_attack,
                    optimizer.param_groups[0]["lr"], world, device)
        return state.step

    try:
        with _sigterm_as_interrupt():
            while state.step < total:
                order = batches(train_data, config.batch_size // world, shuffle=True, seed=config.seed,
                                epoch=state.epoch, rank=rank, world_size=world)
                for index, (x, y) in enumerate(order):
                    if index < state.batch:
                        continue  # resuming inside this epoch: these batches were trained on already
                    if state.step >= total:
                        break
                    factor = learning_rate_factor(config, state.step, total)
                    for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
                        group["lr"] = base * factor
                    train_mode(model)
                    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                    loss, logits = objective(net, model, x, y, seed=_step_seed(config, state.step, rank))
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    running.add(float(loss.detach()), logits.detach(), y)
                    state.step += 1
                    state.batch = index + 1
                    bar.update(1)
                    if config.checkpoint_every is not None and state.step % config.checkpoint_every == 0:
                        last_saved = checkpoint()
                else:
                    state.epoch += 1
                    state.batch = 0
                    if config.checkpoint_every is None and state.step > last_saved:
                        last_saved = checkpoint()
                    continue
                break  # total reached inside the epoch
            state.finished = True
            if state.step > last_saved or not state.history:
                checkpoint()
            else:
                _save(out, model, optimizer, state, config, objective, world)
    except KeyboardInterrupt:
        if out is not None and state.step > last_saved:
            _save(out, model, optimizer, state, config, objective, world)
        raise
    finally:
        bar.close()
    _finish(model, state, config)
    return TrainResult(state.step, state.history, state.best, out, resumed_from)


@dataclasses.dataclass
class _State:
    step: int
    epoch: int
    batch: int  # batches of `epoch` already trained on
    best: dict[str, Any] | None
    history: list[dict[str, Any]]
    finished: bool = False
    best_weights: dict[str, torch.Tensor] | None = None


class _Running:
    """Loss and accuracy of the training batches since the last metrics line."""

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
        self.__init__()
        return out


def _checkpoint(model, optimizer, state: _State, running: _Running, config: TrainConfig, objective: Objective,
                out: Path | None, val: TensorData | None, val_attack: dict[str, Any] | None, lr: float,
                world: int, device: torch.device) -> None:
    line: dict[str, Any] = {"step": state.step, "epoch": state.epoch, "lr": lr, **running.take()}
    if val is not None:
        line.update(evaluate(model, val, attack=val_attack, device=device))
        if config.select != "last":
            value = line[config.select]
            if state.best is None or value > state.best["value"]:
                state.best = {"metric": config.select, "value": value, "step": state.step}
                state.best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
                if out is not None and _rank() == 0:
                    atomic_torch_save({"model": state.best_weights, "best": state.best}, out / BEST)
    state.history.append(line)
    _save(out, model, optimizer, state, config, objective, world)
    if out is not None and _rank() == 0:
        with open(out / METRICS, "a") as f:
            f.write(json.dumps(line) + "\n")


def _rank() -> int:
    return _distributed()[0]


def _save(out: Path | None, model, optimizer, state: _State, config: TrainConfig, objective: Objective,
          world: int) -> None:
    if out is None:
        return
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
                "config": config.as_dict(),
                "objective": objective.describe(),
                "world_size": world,
            },
            out / CHECKPOINT,
        )
    if world > 1:
        dist.barrier()


def _load_checkpoint(path: Path, model, optimizer, config: TrainConfig, objective: Objective, world: int) -> _State:
    ckpt = safe_torch_load(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != _FORMAT:
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
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    state = _State(step=ckpt["step"], epoch=ckpt["epoch"], batch=ckpt["batch"], best=ckpt["best"],
                   history=list(ckpt["history"]), finished=ckpt["finished"])
    if state.best is not None and (path.parent / BEST).exists():
        state.best_weights = safe_torch_load(path.parent / BEST)["model"]
    return state


def _rewrite_metrics(out: Path, history: list[dict[str, Any]]) -> None:
    """metrics.jsonl holds exactly the checkpointed history: lines logged after the last checkpoint of
    an interrupted run are dropped, as the resumed run logs them again."""
    atomic_write(out / METRICS, lambda f: f.write("".join(json.dumps(line) + "\n" for line in history)), binary=False)


def _finish(model, state: _State, config: TrainConfig) -> None:
    if config.select != "last" and state.best_weights is not None:
        model.load_state_dict(state.best_weights)


__all__ = ["TrainConfig", "TrainResult", "evaluate", "learning_rate_factor", "train"]
