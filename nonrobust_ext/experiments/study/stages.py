"""The training stages of one seed: each model trained (or reused, or resumed, or loaded from ImageNet
weights) in a folder of its own, and the guard that keeps a cache of models trained under other
settings from being reused (``stages.json``).

Every stage is a :func:`nonrobust_ext.training.train` run in ``<out>/seed<s>/<stage>``: a finished
stage is reused, an interrupted one resumes from its last checkpoint.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from ... import data as nxdata
from ... import models, training
from ..._io import atomic_write
from .config import (
    DERIVED,
    FROM,
    IMAGENET_CLASSES,
    PRETRAINED_NAMES,
    SOURCE_STAGES,
    TARGET_STAGES,
    TRAINING_FIELDS,
    StudyConfig,
)
from .tasks import normalisation

STAGES_FILE = "stages.json"
# Training settings a cache may differ in: which arms are trained changes no arm's model (each trains
# from its own seeded initialisation in its own folder), so another --methods reuses the cached arms.
ARM_CHOICE = ("methods",)
# Checkpoints (each with a validation pass) of a target-task run.
VALIDATIONS = 15
# Backbones run in channels_last memory format on the CPU: EfficientNet-Lite0's forward + input
# gradient at 32 px, batch 128, took 0.82 ms an image in channels_last against 2.61 ms contiguous
# (AMD EPYC, 2 cores, 2026-12-04); depthwise convolutions are the reason.
CHANNELS_LAST_BACKBONES = ("efficientnet_lite",)

Loader = Callable[[torch.nn.Module], Any]


def barrier(world: int) -> None:
    """Wait for every rank (a no-op in a single process)."""
    if world > 1:
        dist.barrier()


def check_cache(config: StudyConfig, out: Path, *, fresh: bool) -> None:
    """Refuse to reuse models in ``out`` that were trained with other training settings (reads only).

    Raises:
        ValueError: ``out/stages.json`` records other :data:`TRAINING_FIELDS` values, ``out`` holds
            trained seeds, and ``fresh`` is False (the message lists the differences).
    """
    path = out / STAGES_FILE
    if fresh or not path.is_file():
        return
    try:
        recorded = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not the JSON the study writes ({error}); pass --fresh (fresh=True) to retrain, "
                         "or another --out") from None
    if not isinstance(recorded, dict):
        raise ValueError(f"{path} is not the JSON object the study writes; pass --fresh (fresh=True) to retrain, "
                         "or another --out")
    # A setting that a cache from an older version did not record had its default value then.
    recorded = {**StudyConfig().as_dict(), **recorded}
    settings = training_settings(config)
    changed = {k: (recorded.get(k), v) for k, v in settings.items() if recorded.get(k) != v and k not in ARM_CHOICE}
    if changed and any(out.glob("seed*")):
        details = "; ".join(f"{k}: {old!r} then, {new!r} now" for k, (old, new) in changed.items())
        raise ValueError(
            f"{out} holds models trained with other settings ({details}); pass --fresh (fresh=True) to "
            "retrain them, or another --out"
        )


def training_settings(config: StudyConfig) -> dict[str, Any]:
    """The settings the trained models depend on, as ``stages.json`` records them."""
    return {k: v for k, v in config.as_dict().items() if k in TRAINING_FIELDS}


def record_settings(config: StudyConfig, out: Path) -> None:
    """Write ``out/stages.json``: the training settings the models under ``out`` are trained with."""
    atomic_write(out / STAGES_FILE, lambda f: json.dump(training_settings(config), f, indent=2), binary=False)


def imagenet_loaders(config: StudyConfig) -> dict[str, Loader]:
    """Stage -> how its ImageNet weights are loaded into a 1000-class model (empty when the source
    models are trained). Finds every file now, so a missing package or file stops the run before
    anything trains.

    Raises:
        ImportError: ``pretrained="imagenet"`` and the weights package is not installed (the message
            gives the pip command).
        FileNotFoundError: a weights file is missing (nothing is downloaded at run time).
        ValueError: no ImageNet weights are known for the backbone.
    """
    if not config.imagenet_source:
        return {}
    assert config.pretrained is not None
    loaders: dict[str, Loader] = {}
    if config.pretrained in PRETRAINED_NAMES:
        models.imagenet_weights(config.backbone)  # raises here, before training, when they are missing
        loaders["pretrained"] = functools.partial(models.load_imagenet_weights, arch=config.backbone)
    files = {"pretrained": Path(config.pretrained)} if "pretrained" not in loaders else {}
    if config.robust_pretrained is not None:
        files["robust_pretrained"] = Path(config.robust_pretrained)
    for stage, path in files.items():
        if not path.is_file():
            option = "--pretrained" if stage == "pretrained" else "--robust-pretrained"
            raise FileNotFoundError(f"{option}: no weights file at {path} (nothing is downloaded at run time)")
        loaders[stage] = functools.partial(models.load_weights, path_or_state_dict=path)
    return loaders


def model_inputs(config: StudyConfig, tasks: nxdata.SourceTarget) -> tuple[dict[str, Any], int]:
    """What every model of a seed is built with: its input normalisation and the source head's classes."""
    if config.imagenet_source:
        mean, std = models.imagenet_normalisation(config.backbone)
        return {"in_channels": 3, "mean": mean, "std": std}, IMAGENET_CLASSES
    return normalisation(tasks.source_train.x), len(config.source_classes)


def new_model(config: StudyConfig, normalisation: dict[str, Any], num_classes: int, seed: int) -> torch.nn.Module:
    """A freshly initialised ``config.backbone``, its initialisation drawn from ``seed``."""
    torch.manual_seed(seed)
    model = models.create(config.backbone, num_classes=num_classes, input_size=config.input_size, **normalisation)
    if config.device == "cpu" and models.canonical_name(config.backbone).startswith(CHANNELS_LAST_BACKBONES):
        model = model.to(memory_format=torch.channels_last)
    return model


def check_architecture(config: StudyConfig, tasks: nxdata.SourceTarget, loaders: dict[str, Loader]) -> None:
    """Build the backbone once, the way the stages will, and check what depends on it before anything
    trains: the input size it needs, ``freeze_stages`` against its stages, and that the source weights
    (``loaders``) fit it. Torch's global RNG is left as it was, so the models trained afterwards are
    the same.

    Raises:
        ValueError: the images (resized to ``image_size``) are too small for the backbone,
            ``freeze_stages`` is more than the backbone has, the backbone cannot take the data (e.g. a
            torchvision model with grey images), or a weights file is for another architecture.
    """
    normalise, classes = model_inputs(config, tasks)
    with torch.random.fork_rng(devices=[]):
        model = new_model(config, normalise, classes, 0)
    size = config.input_size or min(tasks.target_train.x.shape[-2:])
    least = getattr(model, "min_input_size", 1)
    if size < least:
        raise ValueError(f"image_size: {size} px is too small for backbone {config.backbone!r}, which downsamples "
                         f"by {least}; use --image-size {least} or more")
    for stage, load in loaders.items():
        try:
            load(model)
        except ValueError as error:
            option = "--pretrained" if stage == "pretrained" else "--robust-pretrained"
            raise ValueError(f"{option}: the weights do not fit backbone {config.backbone!r} (a file for another "
                             f"architecture? pass the matching --backbone): {error}") from None
    if not config.freeze_stages:
        return
    available = len(model.stages())
    if config.freeze_stages > available:
        raise ValueError(f"freeze_stages is {config.freeze_stages} but backbone {config.backbone!r} has "
                         f"{available} stages")


def train_all(config: StudyConfig, tasks: nxdata.SourceTarget, root: Path, seed: int, progress: bool,
              device: torch.device, imagenet: dict[str, Loader], rank: int,
              world: int) -> tuple[dict[str, torch.nn.Module], dict[str, dict[str, float] | None]]:
    """Train (or reuse, or load) every stage of one seed.

    Returns:
        The models by stage, and, per trained stage, :func:`validation_record` of its run.
    """
    trained: dict[str, torch.nn.Module] = {}
    records: dict[str, dict[str, float] | None] = {}
    normalise, source_classes = model_inputs(config, tasks)
    pgd_at = training.PGDAdversarial(eps=config.train_eps, steps=config.train_steps)
    dm = training.DM(eps=config.train_eps, steps=config.train_steps, beta=config.dm_beta)
    objectives: dict[str, training.Objective] = {
        "pretrained": training.Standard(),
        "robust_pretrained": pgd_at,
        "finetuned": training.Standard(),
        "standard": training.Standard(),
        "adv_finetuned": pgd_at,
        "dm_finetuned": dm,
        "trades_finetuned": training.TRADES(eps=config.train_eps, steps=config.train_steps),
        "lpft_finetuned": pgd_at,
        "epssched_finetuned": training.EpsilonScheduled(pgd_at, start=0.25, end=0.75),
        "frozenbn_finetuned": pgd_at,
        "robust_finetuned": training.Standard(),
        "dm": dm,
    }
    weights: dict[str, Loader] = {}
    source_config = training.TrainConfig(epochs=config.source_epochs, batch_size=config.batch_size, lr=config.lr,
                                         seed=seed, select=config.select)
    for stage in (s for s in SOURCE_STAGES if s in config.stages):
        model = new_model(config, normalise, source_classes, seed)
        if stage in imagenet:
            imagenet[stage](model)
            weights[stage] = imagenet[stage]
        else:
            run = training.train(model, objectives[stage], tasks.source_train, config=source_config,
                                 out_dir=root / stage, val_data=tasks.source_val, device=device, progress=progress,
                                 description=f"seed {seed} {stage}")
            records[stage] = validation_record(run)
            path = root / stage / "model.pt"
            weights[stage] = functools.partial(models.load_weights, path_or_state_dict=path)
            if rank == 0:
                models.save_weights(model, path)
            barrier(world)  # the fine-tuning stages of every rank read it
        trained[stage] = model.to(device)
    # A few-shot target set is one batch an epoch: checkpoint (and validate) VALIDATIONS times a run
    # rather than at every step, which would cost more than the training itself.
    num_target = len(config.target_classes)

    def run_of(steps: int) -> training.TrainConfig:
        return training.TrainConfig(steps=steps, batch_size=config.batch_size, lr=config.lr, seed=seed,
                                    select=config.select, checkpoint_every=max(1, math.ceil(steps / VALIDATIONS)))

    for stage in (s for s in TARGET_STAGES if s in config.stages and s not in DERIVED):
        steps = config.steps_of[stage]
        target_config = run_of(steps)
        model = new_model(config, normalise, source_classes, seed + 1000)
        groups = None
        options = {"val_data": tasks.target_val, "device": device, "progress": progress,
                   "description": f"seed {seed} {stage}"}
        if stage in FROM:
            weights[FROM[stage]](model)
            setup = training.FinetuneConfig(
                mode="freeze" if config.freeze_stages else "full", freeze_stages=config.freeze_stages,
                num_classes=num_target, head_lr=config.head_lr, backbone_lr=config.backbone_lr,
                freeze_bn=stage == "frozenbn_finetuned")
            if stage == "lpft_finetuned":  # a PGD-AT linear probe first, in its own folder
                _, run = training.linear_probe_then_finetune(
                    model, objectives[stage], tasks.target_train, probe=run_of(max(1, steps // 4)),
                    finetune=target_config, setup=setup,
                    probe_objective=objectives[stage], out_dir=root / stage, **options)
                records[stage] = validation_record(run)
                trained[stage] = model
                continue
            groups = training.prepare_finetune(model, setup)
        else:
            model.reset_head(num_target)
        run = training.train(model, objectives[stage], tasks.target_train, config=target_config,
                             out_dir=root / stage, param_groups=groups, **options)
        records[stage] = validation_record(run)
        trained[stage] = model
    for stage in (s for s in DERIVED if s in config.stages):
        start, tuned = DERIVED[stage]
        trained[stage] = wise_ft(trained[start], trained[tuned], config.wise_alpha)
        (root / stage).mkdir(parents=True, exist_ok=True)  # where its evaluation is cached
    return trained, records


def wise_ft(pretrained: torch.nn.Module, finetuned: torch.nn.Module, alpha: float) -> torch.nn.Module:
    """WiSE-FT of a study model: ``finetuned``'s weights mixed with ``pretrained``'s at ``alpha``, its head
    (``fc``, always new: the target classes) kept as fine-tuned, even where it has the source head's shape."""
    return training.interpolate_weights(pretrained, finetuned, alpha, keep=("fc",))


def validation_record(run: training.TrainResult) -> dict[str, float] | None:
    """Clean validation accuracy at the last checkpoint and at the best one, and where in the run the
    best one was (a fraction of its steps): whether the fixed budget reached a plateau (best late and
    close to last) or overshot it. ``None`` for a run without validation lines (a cache from before
    validation was logged)."""
    lines = [line for line in run.history if "val_accuracy" in line]
    if not lines or run.steps == 0:
        return None
    best = max(lines, key=lambda line: line["val_accuracy"])  # the first of equals: the earliest best
    return {"val_accuracy_last": lines[-1]["val_accuracy"], "val_accuracy_best": best["val_accuracy"],
            "best_step_fraction": best["step"] / run.steps,
            "val_curve": {"step": [line["step"] for line in lines],
                          "val_accuracy": [line["val_accuracy"] for line in lines]}}


__all__ = [
    "STAGES_FILE", "VALIDATIONS", "barrier", "check_architecture", "check_cache", "imagenet_loaders", "model_inputs",
    "new_model", "record_settings", "train_all", "training_settings", "validation_record", "wise_ft",
]
