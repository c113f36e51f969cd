"""``run_study``: the pipeline's steps composed, in the one direction the data flows —
configuration → tasks → stages (train) → measure → summary → report and plots.

Everything that can refuse a run (the output folder, the data, the weights files, the backbone's
stages, the cache of earlier models) is checked before the first model trains or the first file is
written, so a mistake costs seconds, not an hour of training.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

from ..._io import atomic_write
from ..._platform import environment
from ..._validate import check_bool
from ...attacks._distributed import world as rank_and_world
from .._output import check_output_dir
from . import measure, stages, tasks
from .config import StudyConfig
from .plots import write_plots
from .report import render_report
from .summary import summarise


def run_study(
    config: StudyConfig, out: str | os.PathLike[str], *, fresh: bool = False, progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any] | None:
    """Train (or reuse) the models of every seed, evaluate them, write ``results.json``,
    ``report.md`` and the plots under ``out``, and return the results.

    Under ``torchrun`` (``torch.distributed`` initialised) every rank trains and evaluates its share of
    the test images; rank 0 runs the analyses, writes and returns the results, the other ranks return
    ``None`` once the evaluation is done.

    Args:
        config: what to train and measure.
        out: the output folder (created if missing): ``seed<s>/<stage>`` model folders,
            ``stages.json``, ``results.json``, ``report.md`` and the plots.
        fresh: retrain every stage instead of reusing the finished ones in ``out``.
        progress: show progress bars (they stay quiet when not on a terminal).
        log: where the one-line progress messages go.

    Returns:
        The results (what ``results.json`` holds) on rank 0, ``None`` on the other ranks.

    Raises:
        TypeError: ``config`` is not a :class:`StudyConfig`, or another argument has the wrong type.
        ValueError: ``out`` holds models trained with other training settings (see
            :data:`~.config.TRAINING_FIELDS`) and ``fresh`` is False; or the data cannot carry the
            configuration (classes out of range, too few images for ``shots``, ``freeze_stages``
            more than the backbone has).
        FileNotFoundError: the dataset or the pretrained weights are missing (the message says how
            to get them).
        NotADirectoryError, PermissionError: ``out`` cannot be a folder written to.
    """
    if not isinstance(config, StudyConfig):
        raise TypeError(f"config must be a StudyConfig, got {type(config).__name__}")
    out = check_output_dir(out, "out")
    check_bool(fresh, "fresh")
    check_bool(progress, "progress")
    if not callable(log):
        raise TypeError(f"log must be callable, got {type(log).__name__}")
    rank, world = rank_and_world()
    device = _device(config, world)
    if rank != 0:
        log = lambda _: None  # noqa: E731 - one rank speaks
    started = time.perf_counter()

    # Everything that can refuse the run, before anything trains or is written. The splits draw from
    # their own seeded generators, so splitting every seed now gives the sets splitting later would.
    train_set, test_set = tasks.load(config)
    splits = {seed: tasks.split(config, train_set, test_set, seed) for seed in config.seeds}
    source_weights = stages.imagenet_loaders(config)
    stages.check_architecture(config, splits[config.seeds[0]], source_weights)
    stages.check_cache(config, out, fresh=fresh)
    if rank == 0:
        if fresh and out.exists():
            for seed_dir in out.glob("seed*"):
                shutil.rmtree(seed_dir)
        out.mkdir(parents=True, exist_ok=True)
        stages.record_settings(config, out)
    stages.barrier(world)

    trained, records = {}, {}
    # Every seed is trained before any is evaluated: the evaluation's collectives then never wait on
    # another rank's training.
    for seed in config.seeds:
        log(f"seed {seed}: training {len(config.stages)} models (cached stages are reused)")
        trained[seed], records[seed] = stages.train_all(config, splits[seed], out / f"seed{seed}", seed, progress,
                                                        device, source_weights, rank, world)
    # Every rank evaluates its share of the images of every seed (the records are gathered, so each rank
    # holds them all); then rank 0 alone runs the analyses and writes, while the others leave.
    per_seed: dict[str, Any] = {}
    if world > 1:
        for models in trained.values():
            _same_weights_on_every_rank(models)
    for seed in config.seeds:
        log(f"seed {seed}: evaluating ({config.eval_attack} over eps {list(config.eval_eps)}, AutoAttack, "
            "robustness curves)")
        per_seed[str(seed)] = measure.evaluate_all(config, splits[seed], trained[seed], seed, device, progress,
                                                   distributed=world > 1, cache=out / f"seed{seed}")
        for stage, record in records[seed].items():
            per_seed[str(seed)][stage]["training"] = record
    if rank != 0:
        return None
    for seed in config.seeds:
        log(f"seed {seed}: analyses (CKA, transfer, frequency, features)")
        per_seed[str(seed)]["analyses"] = measure.analyse(config, splits[seed], trained[seed], seed, device, progress)
        del trained[seed]  # free the seed's models before the next seed's analyses
    results = {
        "config": config.as_dict(),
        "stages": list(config.stages),
        "seeds": per_seed,
        "summary": summarise(per_seed, config.eval_eps),
        "seconds": time.perf_counter() - started,
        "world_size": world,
        "environment": environment(device),
    }
    atomic_write(out / "results.json", lambda f: json.dump(results, f, indent=2), binary=False)
    plots = write_plots(results, out)
    atomic_write(out / "report.md", lambda f: f.write(render_report(results, plots)), binary=False)
    return results


def _same_weights_on_every_rank(models: dict[str, torch.nn.Module]) -> None:
    """Every rank's models take rank 0's parameters and buffers (the ones its checkpoints hold). DDP keeps
    the parameters equal, but each rank's last forward updates its own BatchNorm statistics: evaluated as
    they are, the ranks would be measuring different models."""
    for model in models.values():
        for tensor in [*model.parameters(), *model.buffers()]:
            # Collectives take contiguous tensors; channels_last weights travel through a contiguous copy.
            wire = tensor.data if tensor.is_contiguous() else tensor.data.contiguous()
            dist.broadcast(wire, src=0)
            if wire is not tensor.data:
                tensor.data.copy_(wire)


def _device(config: StudyConfig, world: int) -> torch.device:
    """``config.device``; under torchrun a bare ``"cuda"`` is this rank's GPU (``LOCAL_RANK``)."""
    device = torch.device(config.device)
    if world > 1 and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


__all__ = ["run_study"]
