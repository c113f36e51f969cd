"""The transfer study (Zhang et al., AAAI 2023) at a scale this machine carries: six models per seed,
trained in cached stages, evaluated (clean and robust accuracy, true-label confidence) and analysed
(layer-wise CKA, attacks on the source features, transfer matrix, frequency, feature usefulness),
written to ``results.json``, PNG plots and a ``report.md`` generated from those numbers.

The models, per seed (source = one half of the classes, standing in for ImageNet; target = the other
half, relabelled and few-shot):

1. ``pretrained``         standard training on the source
2. ``robust_pretrained``  PGD adversarial training on the source
3. ``finetuned``          from 1, fine-tuned on the target (new head)
4. ``standard``           the same architecture trained on the target from scratch
5. ``robust_finetuned``   from 2, fine-tuned on the target
6. ``dm``                 from 2, fine-tuned on the target with the DM loss

Every stage is a :func:`nonrobust_ext.training.train` run with its own folder: a finished stage is
reused, an interrupted one resumes from its last checkpoint, ``fresh=True`` retrains everything. The
settings the models depend on are recorded in ``stages.json``; re-running with other training
settings is refused (it would silently reuse models trained differently), while the evaluation
settings (eps grid, attack, samples) can change freely and re-evaluate the cached models.

With ImageNet weights (``pretrained="torchvision"`` or a path), stages 1 and 2 are loaded instead of
trained (``robust_pretrained``: a robust ImageNet checkpoint, e.g. the robustness library's; without
one, stages 2, 5 and 6 are left out), the target task is ``target_classes`` of the dataset and the
images are resized to 224 px inside the models (``image_size``). There is then no source test set.

Under ``torchrun`` every rank trains (DDP, each on its shard of every batch); rank 0 alone evaluates,
analyses and writes the report: the analyses (CKA, transfer, ...) are not additive over shards.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from .. import analysis, models, training
from .. import data as nxdata
from .._io import atomic_write
from .._progress import progress_bar
from ..attacks import feature_pgd, pgd, robust_accuracy
from ..attacks._common import eval_mode
from ..attacks.registry import ATTACKS

SOURCE_STAGES = ("pretrained", "robust_pretrained")
TARGET_STAGES = ("finetuned", "standard", "robust_finetuned", "dm")
STAGES = SOURCE_STAGES + TARGET_STAGES
_FROM = {"finetuned": "pretrained", "robust_finetuned": "robust_pretrained", "dm": "robust_pretrained"}
_ROBUST_STAGES = ("robust_pretrained", "robust_finetuned", "dm")

# ImageNet weights: their classes and the input statistics they were trained with.
IMAGENET_CLASSES = 1000
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
IMAGENET_SIZE = 224

# The settings the trained models depend on: a cached stage trained under other values is not reused.
# (Seeds are not here: each seed has its own folder.) Everything else only changes the evaluation.
TRAINING_FIELDS = ("dataset", "data_root", "source_classes", "target_classes", "source_per_class", "shots",
                   "backbone", "source_epochs", "target_steps", "batch_size", "lr", "freeze_stages", "head_lr",
                   "backbone_lr", "train_eps", "train_steps", "dm_beta", "select", "pretrained", "robust_pretrained",
                   "image_size")

# How each trained stage's weights are chosen: its last step, or its best validation accuracy.
SELECT_RULES = ("last", "val_accuracy")
# Checkpoints (each with a validation pass) of a target-task run.
VALIDATIONS = 15


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """What the study trains and measures. The defaults are the built-in default (Fashion-MNIST),
    sized to finish within 20 minutes on a 2-core AVX2 CPU with three seeds.

    Attributes:
        dataset, data_root: a name for :func:`nonrobust_ext.data.load` and where its files are.
        source_classes, target_classes: the class split (original label ids).
        source_per_class: source training images per class (``None``: all); subsampled to fit the
            CPU budget.
        shots: target training images per class (few-shot).
        backbone: a :func:`nonrobust_ext.models.create` name.
        seeds: one full run (splits, initialisations, attacks) per seed.
        source_epochs, target_steps: training length on the source (epochs) and target (optimiser steps).
        batch_size, lr: for every stage.
        freeze_stages: backbone stages frozen during fine-tuning (0 = full fine-tuning).
        head_lr, backbone_lr: fine-tuning learning rates of the head and the backbone (``None``: ``lr``).
        train_eps, train_steps: the L-inf attack of adversarial pretraining and of DM's inner maximisation.
        dm_beta: weight of DM's feature-discrepancy term.
        select: which weights every trained stage ends with: ``"last"`` (the fixed budget's last step,
            the same rule for every model) or ``"val_accuracy"`` (its best clean accuracy on the
            validation split carved from the training data; never the test set). Either way the
            validation accuracy is logged at every checkpoint and reported, to show whether the budget
            reached a plateau.
        eval_eps, eval_steps: the L-inf PGD evaluation grid and its steps.
        apgd_steps: steps of the APGD-CE evaluation of the target models at the largest eps (the
            headline robust accuracy; 0 skips it).
        eval_samples: test images per side evaluated (``None``: all).
        analysis_samples: target test images the analyses (CKA, transfer, frequency, features) use.
        frequency_radii: radii of the low-pass / high-pass split of the frequency analysis.
        eval_attack: the attack of the eps grid, a name of :data:`nonrobust_ext.attacks.registry.ATTACKS`
            (the analyses' attacks stay PGD).
        pretrained: ``None``: stage 1 is trained on the source classes. ``"torchvision"``: torchvision's
            ImageNet weights of ``backbone`` from the local cache (:func:`models.find_torchvision_weights`);
            or a weights file's path (anything :func:`models.load_weights` reads).
        robust_pretrained: with ``pretrained``, a robust ImageNet checkpoint's path for stage 2;
            ``None`` leaves the robust stages out.
        image_size: resize inputs to this size inside every model; ``None``: 224 with ImageNet weights,
            the images' own size otherwise.
        device: where to train and evaluate (``"cuda"`` under torchrun: each rank's ``LOCAL_RANK`` GPU).
    """

    dataset: str = "fashion_mnist"
    data_root: str | None = None
    source_classes: tuple[int, ...] = (0, 1, 2, 3, 4)
    target_classes: tuple[int, ...] = (5, 6, 7, 8, 9)
    source_per_class: int | None = 1200
    shots: int = 20
    backbone: str = "resnet8"
    seeds: tuple[int, ...] = (0, 1, 2)
    source_epochs: int = 3
    target_steps: int = 120
    batch_size: int = 128
    lr: float = 0.05
    freeze_stages: int = 0
    head_lr: float | None = None
    backbone_lr: float | None = None
    train_eps: float = 0.1
    train_steps: int = 3
    dm_beta: float = 1.0
    select: str = "last"
    eval_eps: tuple[float, ...] = (0.0, 0.02, 0.05, 0.1)
    eval_steps: int = 10
    apgd_steps: int = 20
    eval_samples: int | None = 400
    analysis_samples: int = 300
    frequency_radii: tuple[float, ...] = (2.0, 4.0, 8.0)
    eval_attack: str = "pgd"
    pretrained: str | None = None
    robust_pretrained: str | None = None
    image_size: int | None = None
    device: str = "cpu"

    def __post_init__(self) -> None:
        if not self.seeds:
            raise ValueError("seeds must list at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds lists a seed more than once: {self.seeds}")
        if not self.target_classes:
            raise ValueError("target_classes must list at least one class")
        if self.pretrained is None and set(self.source_classes) & set(self.target_classes):
            raise ValueError(
                f"source_classes and target_classes overlap: {self.source_classes} / {self.target_classes}"
            )
        if self.pretrained is None and not self.source_classes:
            raise ValueError("source_classes must list at least one class unless pretrained weights are given")
        if not self.eval_eps or any(not e >= 0 for e in self.eval_eps):
            raise ValueError(f"eval_eps must list radii >= 0, got {self.eval_eps}")
        if self.select not in SELECT_RULES:
            raise ValueError(f"select must be one of {list(SELECT_RULES)}, got {self.select!r}")
        if self.eval_attack not in ATTACKS:
            raise ValueError(f"eval_attack must be one of {sorted(ATTACKS)}, got {self.eval_attack!r}")
        if self.robust_pretrained is not None and self.pretrained is None:
            raise ValueError("robust_pretrained needs pretrained too: both source models come from ImageNet weights, "
                             "or both are trained on the source classes")
        if self.image_size is not None and (isinstance(self.image_size, bool) or not isinstance(self.image_size, int)
                                            or self.image_size < 1):
            raise ValueError(f"image_size must be a positive int or None, got {self.image_size!r}")
        name = models.canonical_name(self.backbone)
        if name not in models.available() and not name.startswith("torchvision:"):
            raise ValueError(f"unknown backbone {self.backbone!r}; available: {models.available()} "
                             "(or 'torchvision:<name>', or 'wrn50')")

    @property
    def imagenet_source(self) -> bool:
        """Whether the source models are ImageNet weights (loaded) rather than trained on source classes."""
        return self.pretrained is not None

    @property
    def stages(self) -> tuple[str, ...]:
        """The stages this configuration trains or loads, in order."""
        if self.imagenet_source and self.robust_pretrained is None:
            return tuple(s for s in STAGES if s not in _ROBUST_STAGES)
        return STAGES

    @property
    def input_size(self) -> int | None:
        return self.image_size if self.image_size is not None else (IMAGENET_SIZE if self.imagenet_source else None)

    @classmethod
    def quick(cls, **overrides: Any) -> StudyConfig:
        """A small configuration that runs end to end in under 3 minutes on a 2-core CPU."""
        small = dict(source_per_class=200, shots=10, seeds=(0, 1), source_epochs=2, target_steps=30,
                     train_steps=3, eval_steps=5, apgd_steps=10, eval_samples=200, eval_eps=(0.0, 0.05, 0.1),
                     analysis_samples=150)
        return cls(**{**small, **overrides})

    def as_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any], **overrides: Any) -> StudyConfig:
        """The configuration :meth:`as_dict` wrote (e.g. ``results.json``'s ``"config"``), with ``overrides``.

        Raises:
            ValueError: a key that is not a field (the message lists them).
        """
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - fields)
        if unknown:
            raise ValueError(f"unknown study settings {unknown}; the settings are {sorted(fields)}")
        merged = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        return cls(**{**merged, **overrides})


def run_study(
    config: StudyConfig, out: str | Path, *, fresh: bool = False, progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any] | None:
    """Train (or reuse) the models of every seed, evaluate them, write ``results.json``,
    ``report.md`` and the plots under ``out``, and return the results.

    Under ``torchrun`` (``torch.distributed`` initialised) every rank trains; rank 0 evaluates,
    writes and returns the results, the other ranks return ``None`` once training is done.

    Raises:
        ValueError: ``out`` holds models trained with other training settings (see
            :data:`TRAINING_FIELDS`) and ``fresh`` is False.
        FileNotFoundError: the dataset or the pretrained weights are missing (the message says how
            to get them).
    """
    out = Path(out)
    rank, world = _distributed()
    device = _device(config, world)
    if rank != 0:
        log = lambda _: None  # noqa: E731 - one rank speaks
    if rank == 0:
        if fresh and out.exists():
            for seed_dir in out.glob("seed*"):
                shutil.rmtree(seed_dir)
        out.mkdir(parents=True, exist_ok=True)
        _check_cache(config, out)
    _barrier(world)
    started = time.perf_counter()
    train_set, test_set = _load(config)
    source_weights = _imagenet_weights(config)
    splits, trained, records = {}, {}, {}
    # Every seed is trained before any is evaluated: under torchrun the other ranks then leave as
    # soon as training is done instead of waiting (and timing out) on rank 0's evaluation.
    for seed in config.seeds:
        log(f"seed {seed}: training {len(config.stages)} models (cached stages are reused)")
        splits[seed] = _split(config, train_set, test_set, seed)
        trained[seed], records[seed] = _train_all(config, splits[seed], out / f"seed{seed}", seed, progress, device,
                                                  source_weights, rank, world)
    if rank != 0:
        return None
    per_seed: dict[str, Any] = {}
    for seed in config.seeds:
        log(f"seed {seed}: evaluating ({config.eval_attack} over eps {list(config.eval_eps)})")
        per_seed[str(seed)] = _evaluate_all(config, splits[seed], trained[seed], seed, device, progress)
        for stage, record in records[seed].items():
            per_seed[str(seed)][stage]["training"] = record
        log(f"seed {seed}: analyses (CKA, transfer, frequency, features)")
        per_seed[str(seed)]["analyses"] = _analyse(config, splits[seed], trained[seed], seed, device, progress)
        del trained[seed]  # free the seed's models before the next seed's evaluation
    results = {
        "config": config.as_dict(),
        "stages": list(config.stages),
        "seeds": per_seed,
        "summary": _summarise(per_seed),
        "seconds": time.perf_counter() - started,
        "world_size": world,
    }
    atomic_write(out / "results.json", lambda f: json.dump(results, f, indent=2), binary=False)
    plots = write_plots(results, out)
    atomic_write(out / "report.md", lambda f: f.write(render_report(results, plots)), binary=False)
    return results


def _distributed() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


def _device(config: StudyConfig, world: int) -> torch.device:
    """``config.device``; under torchrun a bare ``"cuda"`` is this rank's GPU (``LOCAL_RANK``)."""
    device = torch.device(config.device)
    if world > 1 and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


STAGES_FILE = "stages.json"


def _check_cache(config: StudyConfig, out: Path) -> None:
    """Record the training settings in ``out/stages.json``, or refuse when cached models used others."""
    settings = {k: v for k, v in config.as_dict().items() if k in TRAINING_FIELDS}
    path = out / STAGES_FILE
    if path.exists():
        # A setting that a cache from an older version did not record had its default value then.
        recorded = {**StudyConfig().as_dict(), **json.loads(path.read_text())}
        changed = {k: (recorded.get(k), v) for k, v in settings.items() if recorded.get(k) != v}
        if changed and any(out.glob("seed*")):
            details = "; ".join(f"{k}: {old!r} then, {new!r} now" for k, (old, new) in changed.items())
            raise ValueError(
                f"{out} holds models trained with other settings ({details}); pass --fresh (fresh=True) to "
                "retrain them, or another --out"
            )
    atomic_write(path, lambda f: json.dump(settings, f, indent=2), binary=False)


def _imagenet_weights(config: StudyConfig) -> dict[str, Path]:
    """Stage -> the ImageNet weights file it loads (empty when the source models are trained)."""
    if not config.imagenet_source:
        return {}
    assert config.pretrained is not None
    files = {"pretrained": (models.find_torchvision_weights(config.backbone) if config.pretrained == "torchvision"
                            else Path(config.pretrained))}
    if config.robust_pretrained is not None:
        files["robust_pretrained"] = Path(config.robust_pretrained)
    for stage, path in files.items():
        if not path.is_file():
            option = "--pretrained" if stage == "pretrained" else "--robust-pretrained"
            raise FileNotFoundError(f"{option}: no weights file at {path} (nothing is downloaded at run time)")
    return files


def _train_all(config: StudyConfig, split, root: Path, seed: int, progress: bool, device: torch.device,
               imagenet: dict[str, Path], rank: int,
               world: int) -> tuple[dict[str, torch.nn.Module], dict[str, dict[str, float] | None]]:
    """Train (or reuse, or load) every stage of one seed; returns the models and, per trained stage,
    :func:`_validation_record` of its run."""
    trained: dict[str, torch.nn.Module] = {}
    records: dict[str, dict[str, float] | None] = {}
    if config.imagenet_source:
        normalisation: dict[str, Any] = {"in_channels": 3, "mean": IMAGENET_MEAN, "std": IMAGENET_STD}
        source_classes = IMAGENET_CLASSES
    else:
        normalisation = _normalisation(split.source_train.x)
        source_classes = len(config.source_classes)
    objectives: dict[str, training.Objective] = {
        "pretrained": training.Standard(),
        "robust_pretrained": training.PGDAdversarial(eps=config.train_eps, steps=config.train_steps),
        "finetuned": training.Standard(),
        "standard": training.Standard(),
        "robust_finetuned": training.Standard(),
        "dm": training.DM(eps=config.train_eps, steps=config.train_steps, beta=config.dm_beta),
    }
    weights: dict[str, Path] = {}
    source_config = training.TrainConfig(epochs=config.source_epochs, batch_size=config.batch_size, lr=config.lr,
                                         seed=seed, select=config.select)
    for stage in (s for s in SOURCE_STAGES if s in config.stages):
        model = _new_model(config, normalisation, source_classes, seed)
        if stage in imagenet:
            models.load_weights(model, imagenet[stage])
            weights[stage] = imagenet[stage]
        else:
            run = training.train(model, objectives[stage], split.source_train, config=source_config,
                                 out_dir=root / stage, val_data=split.source_val, device=device, progress=progress,
                                 description=f"seed {seed} {stage}")
            records[stage] = _validation_record(run)
            weights[stage] = root / stage / "model.pt"
            if rank == 0:
                models.save_weights(model, weights[stage])
            _barrier(world)  # the fine-tuning stages of every rank read it
        trained[stage] = model.to(device)
    # A few-shot target set is one batch an epoch: checkpoint (and validate) VALIDATIONS times a run
    # rather than at every step, which would cost more than the training itself.
    target_config = training.TrainConfig(steps=config.target_steps, batch_size=config.batch_size, lr=config.lr,
                                         seed=seed, select=config.select,
                                         checkpoint_every=max(1, math.ceil(config.target_steps / VALIDATIONS)))
    num_target = len(config.target_classes)
    for stage in (s for s in TARGET_STAGES if s in config.stages):
        model = _new_model(config, normalisation, source_classes, seed + 1000)
        groups = None
        if stage in _FROM:
            models.load_weights(model, weights[_FROM[stage]])
            mode = "freeze" if config.freeze_stages else "full"
            groups = training.prepare_finetune(model, training.FinetuneConfig(
                mode=mode, freeze_stages=config.freeze_stages, num_classes=num_target,
                head_lr=config.head_lr, backbone_lr=config.backbone_lr))
        else:
            model.reset_head(num_target)
        run = training.train(model, objectives[stage], split.target_train, config=target_config,
                             out_dir=root / stage, param_groups=groups, val_data=split.target_val, device=device,
                             progress=progress, description=f"seed {seed} {stage}")
        records[stage] = _validation_record(run)
        trained[stage] = model
    return trained, records


def _validation_record(run: training.TrainResult) -> dict[str, float] | None:
    """Clean validation accuracy at the last checkpoint and at the best one, and where in the run the
    best one was (a fraction of its steps): whether the fixed budget reached a plateau (best late and
    close to last) or overshot it. ``None`` for a run without validation lines (a cache from before
    validation was logged)."""
    lines = [line for line in run.history if "val_accuracy" in line]
    if not lines or run.steps == 0:
        return None
    best = max(lines, key=lambda line: line["val_accuracy"])  # the first of equals: the earliest best
    return {"val_accuracy_last": lines[-1]["val_accuracy"], "val_accuracy_best": best["val_accuracy"],
            "best_step_fraction": best["step"] / run.steps}


PLOTS = {
    "robust_accuracy.png": "Robust accuracy against eps (target task)",
    "confidence.png": "True-label confidence, clean and at the largest eps",
    "cka.png": "Layer-wise CKA with the source models",
    "transfer.png": "Transfer between the target models",
    "spectra.png": "Radial power spectrum of each model's PGD perturbations",
    "feature_ranking.png": "Robust fraction of the most useful features",
}


def write_plots(results: dict[str, Any], out: Path) -> list[str]:
    """The report's PNG plots; an empty list (and a note in the report) without matplotlib."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return []
    summary, eps = results["summary"], results["config"]["eval_eps"]
    a = summary["analyses"]
    targets = _present(TARGET_STAGES, summary)
    attack = results["config"]["eval_attack"].upper()

    def save(fig: Figure, name: str) -> None:
        fig.tight_layout()
        atomic_write(out / name, lambda f: fig.savefig(f, format="png", dpi=110))

    fig = Figure(figsize=(5.5, 3.6))
    ax = fig.subplots()
    for stage in targets:
        stats = summary[stage]["robust_accuracy"]
        ax.errorbar(eps, [s["mean"] for s in stats], yerr=[s["std"] for s in stats], marker="o", capsize=3, label=stage)
    ax.set(xlabel="L-inf eps", ylabel="accuracy", title=f"Robust accuracy ({attack}), mean ± std over seeds")
    ax.legend(fontsize=8)
    save(fig, "robust_accuracy.png")

    fig = Figure(figsize=(5.5, 3.6))
    ax = fig.subplots()
    width = 0.38
    first = "clean" if eps[0] == 0 else f"eps {eps[0]:g}"
    for k, (label, index) in enumerate(((first, 0), (f"eps {eps[-1]:g}", len(eps) - 1))):
        values = [summary[s]["adversarial_confidence"][index] for s in targets]
        ax.bar([i + (k - 0.5) * width for i in range(len(targets))], [v["mean"] for v in values], width,
               yerr=[v["std"] for v in values], capsize=3, label=label)
    ax.set_xticks(range(len(targets)), targets, fontsize=8)
    ax.set(ylabel="mean true-label probability", title="True-label confidence")
    ax.legend(fontsize=8)
    save(fig, "confidence.png")

    fig = Figure(figsize=(5.5, 3.6))
    ax = fig.subplots()
    for pair, values in a["cka"].items():
        ax.errorbar(a["layers"], [values[layer]["mean"] for layer in a["layers"]],
                    yerr=[values[layer]["std"] for layer in a["layers"]], marker="o", capsize=3, label=pair)
    ax.set(ylabel="linear CKA", title="Similarity to the source models, per layer")
    ax.legend(fontsize=7)
    save(fig, "cka.png")

    names = list(a["transfer_accuracy"])
    matrix = [[a["transfer_accuracy"][src][dst]["mean"] for dst in names] for src in names]
    fig = Figure(figsize=(5.2, 4.2))
    ax = fig.subplots()
    image = ax.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(names)), names, rotation=30, fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", color="white" if value < 0.5 else "black")
    ax.set(xlabel="evaluated on", ylabel="crafted on", title="Accuracy under transferred PGD")
    fig.colorbar(image, ax=ax)
    save(fig, "transfer.png")

    fig = Figure(figsize=(5.5, 3.6))
    ax = fig.subplots()
    for stage, spectrum in a["perturbation_spectrum"].items():
        ax.plot([s["mean"] for s in spectrum], label=stage)
    ax.set(xlabel="radial frequency", ylabel="share of perturbation power", yscale="log",
           title="Spectrum of PGD perturbations")
    ax.legend(fontsize=8)
    save(fig, "spectra.png")

    fig = Figure(figsize=(5.5, 3.6))
    ax = fig.subplots()
    shares = [100 * q for q in RANK_SHARES]
    for stage, record in a["feature_ranking"].items():
        if record["robust_fraction_top"] is not None:
            ax.errorbar(shares, [f["mean"] for f in record["robust_fraction_top"]],
                        yerr=[f["std"] for f in record["robust_fraction_top"]], marker="o", capsize=3, label=stage)
    ax.set(xlabel="most useful features (% of the useful (class, feature) pairs)", ylabel="fraction robust",
           xscale="log", title=f"Features still useful under PGD (eps {a['eps']['mean']:g})")
    ax.set_xticks(shares, [f"{q:.0%}" for q in RANK_SHARES])
    ax.legend(fontsize=8)
    save(fig, "feature_ranking.png")
    return list(PLOTS)


def _present(stages: Sequence[str], table: dict[str, Any]) -> list[str]:
    """The ``stages`` that ``table`` (a summary, an analysis) has, in study order."""
    return [s for s in stages if s in table]


def _load(config: StudyConfig) -> tuple[nxdata.TensorData, nxdata.TensorData]:
    try:
        return (nxdata.load(config.dataset, root=config.data_root, train=True),
                nxdata.load(config.dataset, root=config.data_root, train=False))
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{error}\n\nOr run the study on generated data: --dataset synthetic") from None


def _split(config: StudyConfig, train_set: nxdata.TensorData, test_set: nxdata.TensorData, seed: int):
    # With ImageNet weights the source task is ImageNet: no source classes are drawn from the dataset.
    source = [] if config.imagenet_source else list(config.source_classes)
    split = nxdata.source_target_split(
        train_set, test_set, source_classes=source, target_classes=list(config.target_classes),
        shots_per_class=config.shots, seed=seed,
    )
    if config.source_per_class is not None and source:
        split.source_train = nxdata.few_shot(split.source_train, min(config.source_per_class,
                                             _smallest_class(split.source_train)), seed=seed)
    return split


def _smallest_class(d: nxdata.TensorData) -> int:
    return int(torch.bincount(d.y, minlength=d.num_classes).min())


def _normalisation(source_x: torch.Tensor) -> dict[str, Any]:
    """Input normalisation every model of a seed shares: the source training images' channel statistics."""
    return {"in_channels": source_x.shape[1], "mean": source_x.mean(dim=(0, 2, 3)).tolist(),
            "std": source_x.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist()}


def _new_model(config: StudyConfig, normalisation: dict[str, Any], num_classes: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return models.create(config.backbone, num_classes=num_classes, input_size=config.input_size, **normalisation)


def _subsample(d: nxdata.TensorData, n: int | None, seed: int) -> nxdata.TensorData:
    """At most ``n`` samples of ``d``, drawn with ``seed``, in their original order."""
    if n is None or len(d) <= n:
        return d
    keep = torch.randperm(len(d), generator=torch.Generator().manual_seed(seed))[:n]
    return d.subset(keep.sort().values)


def _attack_options(name: str, steps: int, seed: int) -> dict[str, Any]:
    """``steps`` and ``seed`` for the attacks that take them (FGSM takes neither)."""
    accepted = inspect.signature(ATTACKS[name]).parameters
    return {k: v for k, v in (("steps", steps), ("seed", seed)) if k in accepted}


def _evaluate_all(config: StudyConfig, split, trained: dict[str, torch.nn.Module], seed: int, device: torch.device,
                  progress: bool) -> dict[str, Any]:
    """Clean and robust accuracy and true-label confidence of every model that has a test set (the
    ImageNet source models have none here)."""
    results: dict[str, Any] = {}
    stages = [s for s in trained if s in TARGET_STAGES or not config.imagenet_source]
    for stage in progress_bar(stages, enabled=progress, description=f"seed {seed} evaluation", unit="model"):
        model = trained[stage]
        test = _subsample(split.source_test if stage in SOURCE_STAGES else split.target_test, config.eval_samples,
                          seed)
        report = robust_accuracy(model, (test.x, test.y), eps=list(config.eval_eps), attack=config.eval_attack,
                                 device=device, **_attack_options(config.eval_attack, config.eval_steps, seed))
        apgd = None
        if config.apgd_steps and stage in TARGET_STAGES:  # the headline is the target task's
            apgd = robust_accuracy(model, (test.x, test.y), eps=[max(config.eval_eps)], attack="apgd",
                                   steps=config.apgd_steps, seed=seed, device=device).robust_accuracy[0]
        results[stage] = {
            "task": "source" if stage in SOURCE_STAGES else "target",
            "apgd_robust_accuracy": apgd,
            "clean_accuracy": report.clean_accuracy,
            "robust_accuracy": report.robust_accuracy,
            "clean_confidence": report.clean_confidence,
            "adversarial_confidence": report.adversarial_confidence,
            "num_samples": report.num_samples,
        }
    return results


# Pairs whose layer-wise similarity the study compares: how much of the (robust) source model each
# target model keeps, against the standard model that never saw the source.
CKA_PAIRS = (("pretrained", "finetuned"), ("pretrained", "standard"),
             ("robust_pretrained", "robust_finetuned"), ("robust_pretrained", "dm"))


def _analyse(config: StudyConfig, split, trained: dict[str, torch.nn.Module], seed: int, device: torch.device,
             progress: bool) -> dict[str, Any]:
    test = _subsample(split.target_test, config.analysis_samples, seed + 1)
    x, y = test.x, test.y
    eps = max(config.eval_eps)
    targets = {stage: model for stage, model in trained.items() if stage in TARGET_STAGES}
    sources = {stage: model for stage, model in trained.items() if stage in SOURCE_STAGES}
    layers = [name for name, _ in trained["pretrained"].named_children() if name.startswith("layer")]
    pairs = [(a, b) for a, b in CKA_PAIRS if a in trained and b in trained]
    steps = len(pairs) + len(sources) + 1 + 3 * len(targets)
    bar = progress_bar(description=f"seed {seed} analyses", enabled=progress, total=steps, unit="step")

    def advance(value: Any) -> Any:
        bar.update(1)
        return value

    cka = {f"{a}~{b}": advance(analysis.layer_similarity(trained[a], trained[b], x, layers, method="cka",
                                                         device=device))
           for a, b in pairs}
    # Inherited non-robust features, measured directly: perturbations that move the *source* model's
    # embedding as far as possible (no labels needed: its head is for other classes) and how much
    # accuracy each target model loses on them.
    source_transfer: dict[str, dict[str, float]] = {}
    for source, module in sources.items():
        x_adv = feature_pgd(module.forward_features, x.to(device), eps=eps, steps=config.eval_steps, seed=seed,
                            module=module)
        source_transfer[source] = advance({stage: _accuracy(model, x_adv, y.to(device))
                                           for stage, model in targets.items()})
    matrix = advance(analysis.transfer_matrix(targets, (x, y), eps=eps, steps=config.eval_steps, seed=seed,
                                              device=device))
    frequency = {stage: advance(analysis.accuracy_by_frequency(model, (x, y), list(config.frequency_radii),
                                                               device=device))
                 for stage, model in targets.items()}
    # Each target model's white-box PGD examples (every sample attacked), crafted once for both the
    # perturbation spectrum and the feature ranking.
    crafted = {stage: _craft(model, x, y, eps, config.eval_steps, seed, device) for stage, model in targets.items()}
    spectra = {stage: advance(analysis.perturbation_spectrum(x, crafted[stage], normalize=True).tolist())
               for stage in targets}
    features = {stage: advance(analysis.feature_usefulness(model, (x, y), eps=eps, adversarial=crafted[stage],
                                                           device=device))
                for stage, model in targets.items()}
    bar.close()
    split_radius = len(next(iter(spectra.values()))) // 2
    return {
        "eps": eps,
        "layers": layers,
        "cka": cka,
        "source_feature_attack_accuracy": source_transfer,
        "transfer_accuracy": {src: dict(zip(matrix.names, row, strict=True))
                              for src, row in zip(matrix.names, matrix.accuracy, strict=True)},
        "frequency": {stage: {"low_accuracy": r["low_accuracy"], "high_accuracy": r["high_accuracy"]}
                      for stage, r in frequency.items()},
        "chance_accuracy": 1.0 / len(config.target_classes),
        "robust_usefulness_share": {stage: None if math.isnan(result.robust_share) else result.robust_share
                                    for stage, result in features.items()},
        "feature_ranking": {stage: _ranking_record(result) for stage, result in features.items()},
        "perturbation_spectrum": spectra,
        "spectrum_split_radius": split_radius,
        "perturbation_high_frequency_share": {stage: sum(spectrum[split_radius:])
                                              for stage, spectrum in spectra.items()},
    }


# The feature-robustness ranking is summarised by the share of robust pairs among the most useful
# RANK_SHARES of the useful (class, feature) pairs, most useful (on clean data) first.
RANK_SHARES = (0.1, 0.25, 0.5, 1.0)


def _ranking_record(result: analysis.FeatureUsefulness) -> dict[str, Any]:
    """How many (class, feature) pairs are useful, and which fraction of the most useful ones stays
    useful under attack (``None`` when no pair is useful)."""
    ranking, n = result.ranking, len(result.ranking)

    def robust_fraction(share: float) -> float | None:
        top = ranking[:max(1, math.ceil(share * n))]
        return sum(r["robust"] for r in top) / len(top) if n else None

    return {"num_useful": n, "robust_fraction_top": [robust_fraction(q) for q in RANK_SHARES]}


def _craft(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int, seed: int,
           device: torch.device, batch_size: int = 256) -> torch.Tensor:
    """L-inf PGD examples of every sample of ``(x, y)`` on ``model``, on the CPU."""
    return torch.cat([pgd(model, x[i:i + batch_size].to(device), y[i:i + batch_size].to(device), eps=eps,
                          steps=steps, seed=seed).cpu() for i in range(0, len(x), batch_size)])


def _accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad(), eval_mode(model):
        return float((model(x).argmax(1) == y).float().mean())


def _mean_std(values: Sequence[float]) -> dict[str, float]:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return {"mean": mean, "std": std}


# The per-model results that are summarised over seeds (mean ± std).
SUMMARISED = ("apgd_robust_accuracy", "clean_accuracy", "robust_accuracy", "adversarial_confidence", "training")


def _summarise(per_seed: dict[str, Any]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    evaluated = [stage for stage in STAGES if stage in next(iter(per_seed.values()))]
    for stage in evaluated:
        summary[stage] = _over_seeds([{key: per_seed[s][stage].get(key) for key in SUMMARISED} for s in per_seed])
    summary["analyses"] = _over_seeds([per_seed[s]["analyses"] for s in per_seed])
    return summary



def _over_seeds(values: list[Any]) -> Any:
    """Mean ± std over seeds of every number of per-seed records with the same nested keys; strings
    are kept; a number that is missing (``None``) in any seed stays ``None``."""
    first = values[0]
    if any(v is None for v in values):
        return None
    if isinstance(first, str):
        return first
    if isinstance(first, dict):
        return {k: _over_seeds([v[k] for v in values]) for k in first}
    if isinstance(first, list):
        return [_over_seeds([v[i] for v in values]) for i in range(len(first))]
    return _mean_std([float(v) for v in values])


def _fmt(stat: dict[str, float] | None) -> str:
    return "n/a" if stat is None else f"{stat['mean']:.3f} ± {stat['std']:.3f}"


def render_report(results: dict[str, Any], plots: Sequence[str] = ()) -> str:
    """``report.md`` from ``results`` alone: every number in it is a value of ``results`` rounded to 3
    places, and every sentence under a table is chosen by comparing those values (a gap no larger than
    the seed-to-seed spread is called that). ``plots`` are the PNG files written next to it."""
    cfg, summary = results["config"], results["summary"]
    eps = cfg["eval_eps"]
    seeds = len(cfg["seeds"])
    attack = cfg["eval_attack"].upper()
    targets, sources = _present(TARGET_STAGES, summary), _present(SOURCE_STAGES, summary)
    if cfg["pretrained"] is None:
        source = f"source classes {cfg['source_classes']} (standing in for ImageNet)"
    else:
        robust = (f"robust ImageNet weights `{cfg['robust_pretrained']}`" if cfg["robust_pretrained"]
                  else "no robust ImageNet weights, so the robust models are left out")
        source = f"source: ImageNet weights `{cfg['pretrained']}` and {robust}"
    lines = [
        "# Does pretraining transfer non-robustness? (nonrobust_ext study)",
        "",
        f"Dataset `{cfg['dataset']}`: {source}; target classes {cfg['target_classes']} with {cfg['shots']} "
        f"training images per class; backbone `{cfg['backbone']}`; {seeds} seed(s), mean ± standard deviation over "
        f"seeds. Robust accuracy: L-inf {attack}"
        f"{'-' + str(cfg['eval_steps']) if cfg['eval_attack'] != 'fgsm' else ''}; adversarial pretraining and DM at "
        f"eps {cfg['train_eps']}. A difference no larger than the larger of the two standard deviations is "
        "called *within the seed-to-seed spread*: this study cannot tell such models apart.",
        "",
        "## Summary",
        "",
        *_summary_findings(summary, eps),
        "",
        f"## Target task: accuracy (clean, then under {attack} at each eps; APGD-CE at the largest)",
        "",
        "| model | " + " | ".join(f"eps {e:.3f}" for e in eps) + f" | APGD eps {max(eps):.3f} |",
        "|---|" + "---:|" * (len(eps) + 1),
    ]
    for stage in targets:
        apgd = summary[stage]["apgd_robust_accuracy"]
        cells = [_fmt(s) for s in summary[stage]["robust_accuracy"]] + [_fmt(apgd) if apgd else "not run"]
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    lines += ["", _paragraph(_accuracy_findings(summary, eps))]
    if sources:
        lines += ["", "## Source task (the pretrained models on held-out source images)", "",
                  "| model | " + " | ".join(f"eps {e:.3f}" for e in eps) + " |", "|---|" + "---:|" * len(eps)]
        for stage in sources:
            lines.append(f"| {stage} | " + " | ".join(_fmt(s) for s in summary[stage]["robust_accuracy"]) + " |")
        lines += ["", _paragraph(_source_findings(summary, eps))]
    lines += ["", "## True-label confidence (softmax probability of the true label)", "",
              "| model | " + " | ".join(f"eps {e:.3f}" for e in eps) + " |", "|---|" + "---:|" * len(eps)]
    for stage in targets:
        lines.append(f"| {stage} | " + " | ".join(_fmt(s) for s in summary[stage]["adversarial_confidence"]) + " |")
    lines += ["", _paragraph(_pairwise(summary, "finetuned", "standard", "adversarial_confidence", eps,
                                       "mean true-label probability"))]
    lines += _training_section(summary, cfg)
    lines += _analysis_sections(summary["analyses"], cfg)
    if plots:
        lines += ["", "## Plots", ""] + [f"![{PLOTS[name]}]({name})" for name in plots] + [""]
    else:
        lines += ["", "(No plots: matplotlib is not installed; `pip install 'nonrobust_ext[plot]'`.)", ""]
    return "\n".join(lines)


def _paragraph(sentences: Sequence[str]) -> str:
    return " ".join(sentences) if sentences else "(Not enough models for this comparison.)"


def _table(title: str, note: str, columns: list[str], rows: dict[str, list[dict[str, float] | None]],
           findings: Sequence[str] = ()) -> list[str]:
    out = ["", f"## {title}", "", note, "", "| | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    out += [f"| {name} | " + " | ".join(_fmt(v) for v in values) + " |" for name, values in rows.items()]
    return out + ["", _paragraph(findings)]


def _versus(x: dict[str, float], y: dict[str, float]) -> str:
    """How mean ± std ``x`` stands to ``y``: a gap no larger than the bigger std is not called a difference."""
    if abs(x["mean"] - y["mean"]) <= max(x["std"], y["std"]):
        return "within the seed-to-seed spread of"
    return "above" if x["mean"] > y["mean"] else "below"


def _compare(what: str, a: str, sa: dict[str, float], b: str, sb: dict[str, float]) -> str:
    """One sentence: ``a``'s ``what`` against ``b``'s, the verdict from :func:`_versus`."""
    return f"{what}: {a} {sa['mean']:.3f} is {_versus(sa, sb)} {b}'s {sb['mean']:.3f}."


def _pairwise(summary: dict[str, Any], a: str, b: str, key: str, eps: list[float], what: str) -> list[str]:
    """``a`` against ``b`` on ``summary[...][key]`` at every eps of the grid."""
    if a not in summary or b not in summary:
        return []
    return [_compare(f"{what[0].upper()}{what[1:]} at eps {e:.3f}", a, summary[a][key][k], b, summary[b][key][k])
            for k, e in enumerate(eps)]


def _verdict(verdicts: dict[str, str], wanted: str) -> str:
    """Where over the eps grid (``verdicts``: eps label -> :func:`_versus` word) a claim that ``a`` is
    ``wanted`` ("below"/"above") relative to ``b`` holds, is reversed, or cannot be told apart."""
    held = [e for e, v in verdicts.items() if v == wanted]
    reversed_ = [e for e, v in verdicts.items() if v not in (wanted, "within the seed-to-seed spread of")]
    if held and not reversed_:
        return f"holds at eps {', '.join(held)} (within the spread elsewhere)" if len(held) < len(verdicts) \
            else "holds at every eps"
    if reversed_ and not held:
        return f"is reversed at eps {', '.join(reversed_)}"
    if held:
        return f"is mixed: holds at eps {', '.join(held)}, reversed at eps {', '.join(reversed_)}"
    return "is within the seed-to-seed spread at every eps"


def _claim(verdict: str, wanted: str) -> str:
    """A claim that one model is ``wanted`` ("above"/"below") the other, given :func:`_versus`'s word."""
    if verdict == wanted:
        return "holds"
    return "is within the seed-to-seed spread" if verdict.startswith("within") else "is reversed"


def _attacked_verdicts(summary: dict[str, Any], a: str, b: str, eps: list[float]) -> dict[str, str]:
    """:func:`_versus` of ``a``'s robust accuracy against ``b``'s at every eps > 0, keyed by the eps."""
    return {f"{e:.3f}": _versus(summary[a]["robust_accuracy"][k], summary[b]["robust_accuracy"][k])
            for k, e in enumerate(eps) if e > 0}


def _summary_findings(summary: dict[str, Any], eps: list[float]) -> list[str]:
    """The paper's claims, each with what this run's numbers say about it."""
    out = []
    if "finetuned" in summary and "standard" in summary:
        ft, st = summary["finetuned"], summary["standard"]
        clean_word = _claim(_versus(ft["clean_accuracy"], st["clean_accuracy"]), "above")
        attacked = _attacked_verdicts(summary, "finetuned", "standard", eps)
        out.append(f"- *Fine-tuning from pretrained weights gives a more accurate model* (fine-tuned vs standard, "
                   f"clean): {clean_word} ({ft['clean_accuracy']['mean']:.3f} vs {st['clean_accuracy']['mean']:.3f}).")
        if attacked:
            out.append(f"- *... but a less robust one* (fine-tuned below standard under attack): "
                       f"{_verdict(attacked, 'below')}.")
        analyses = summary["analyses"]
        inherited = analyses["source_feature_attack_accuracy"].get("pretrained")
        if inherited and "finetuned" in inherited and "standard" in inherited:
            word = _claim(_versus(inherited["finetuned"], inherited["standard"]), "below")
            out.append(f"- *The non-robustness is inherited from the pretrained features* (perturbations of the "
                       f"pretrained model's features hurt the fine-tuned model more than the standard one): {word} "
                       f"({inherited['finetuned']['mean']:.3f} vs {inherited['standard']['mean']:.3f} accuracy kept).")
    if "dm" in summary and "robust_finetuned" in summary and "finetuned" in summary:
        dm, ft = summary["dm"], summary["finetuned"]
        attacked = _attacked_verdicts(summary, "dm", "robust_finetuned", eps)
        clean = _versus(dm["clean_accuracy"], ft["clean_accuracy"])
        if attacked:
            out.append(f"- *Robust pretraining plus DM fine-tuning repairs it* (DM above robust fine-tuning under "
                       f"attack): {_verdict(attacked, 'above')}; its clean accuracy "
                       f"{dm['clean_accuracy']['mean']:.3f} is {clean} the fine-tuned model's "
                       f"{ft['clean_accuracy']['mean']:.3f}.")
    return out or ["- (The comparisons need the fine-tuned and the standard model.)"]


def _accuracy_findings(summary: dict[str, Any], eps: list[float]) -> list[str]:
    out = _pairwise(summary, "finetuned", "standard", "robust_accuracy", eps, "accuracy")
    if "finetuned" in summary and "standard" in summary and summary["finetuned"]["apgd_robust_accuracy"]:
        out.append(_compare(f"APGD-CE at eps {max(eps):.3f}", "finetuned", summary["finetuned"]["apgd_robust_accuracy"],
                            "standard", summary["standard"]["apgd_robust_accuracy"]))
    k = len(eps) - 1
    for a, b in (("robust_finetuned", "finetuned"), ("dm", "robust_finetuned")):
        if a in summary and b in summary:
            out.append(_compare(f"At eps {eps[k]:.3f}", a, summary[a]["robust_accuracy"][k], b,
                                summary[b]["robust_accuracy"][k]))
    if "dm" in summary and "finetuned" in summary:
        out.append(_compare("Clean", "dm", summary["dm"]["clean_accuracy"], "finetuned",
                            summary["finetuned"]["clean_accuracy"]))
    return out


def _source_findings(summary: dict[str, Any], eps: list[float]) -> list[str]:
    if "pretrained" not in summary or "robust_pretrained" not in summary:
        return []
    k = len(eps) - 1
    robust, plain = summary["robust_pretrained"], summary["pretrained"]
    clean = (robust["clean_accuracy"], plain["clean_accuracy"])
    attacked = (robust["robust_accuracy"][k], plain["robust_accuracy"][k])
    return [_compare("Clean source accuracy", "robust_pretrained", clean[0], "pretrained", clean[1]),
            _compare(f"At eps {eps[k]:.3f}", "robust_pretrained", attacked[0], "pretrained", attacked[1]),
            "Adversarial training on the source trades clean accuracy for robustness where the first is below and "
            "the second above." if _versus(*clean) == "below" and _versus(*attacked) == "above" else
            "The robust source model does not show the usual trade (less clean accuracy, more robustness) here."]


# A run's best validation accuracy in its last LATE_BEST share of steps may not have levelled off yet.
LATE_BEST = 0.2


def _training_section(summary: dict[str, Any], cfg: dict[str, Any]) -> list[str]:
    records = {s: summary[s]["training"] for s in STAGES if s in summary and summary[s].get("training")}
    if not records:
        return []
    rule = ("its last step (the same fixed budget for every model)" if cfg.get("select", "last") == "last"
            else "its best validation accuracy")
    ended_below = [s for s, r in records.items() if _versus(r["val_accuracy_last"], r["val_accuracy_best"]) == "below"]
    late = [s for s, r in records.items() if r["best_step_fraction"]["mean"] > 1 - LATE_BEST]
    findings = [
        f"Each model is used as it was at {rule}. Validation images are carved from the training images of "
        "each task; the test images never choose anything.",
        f"Ended below its best validation accuracy by more than the spread: {', '.join(ended_below) or 'none'}.",
        f"Best validation accuracy in the last {LATE_BEST:.0%} of the run, so possibly still improving: "
        f"{', '.join(late) or 'none'}.",
    ]
    return _table("Training: validation accuracy", "Clean accuracy on the validation split at the last checkpoint, "
                  "at the best one, and where in the run (share of its steps) the best one was.",
                  ["last", "best", "best at"],
                  {s: [r["val_accuracy_last"], r["val_accuracy_best"], r["best_step_fraction"]]
                   for s, r in records.items()}, findings)


def _get(table: dict[str, Any], *keys: str) -> Any:
    """``table[k0][k1]...`` or ``None`` where a key is missing (a model that was left out)."""
    for key in keys:
        if not isinstance(table, dict) or key not in table:
            return None
        table = table[key]
    return table


def _analysis_sections(a: dict[str, Any], cfg: dict[str, Any]) -> list[str]:
    eps = a["eps"]["mean"]
    layers = a["layers"]
    radii = cfg["frequency_radii"]
    targets = list(a["robust_usefulness_share"])
    lines = _table(
        "Layer-wise linear CKA with the source models",
        "On target test images; 1 = the same representation up to rotation and scale.",
        layers, {pair: [v[layer] for layer in layers] for pair, v in a["cka"].items()},
        _cka_findings(a),
    )
    lines += _table(
        f"Accuracy under attacks on the source models' features (eps {eps:.3f})",
        "Rows: the source model whose embedding the perturbation pushes away (feature PGD, no labels); "
        "columns: the target model evaluated on it.",
        targets, {src: [v[t] for t in targets] for src, v in a["source_feature_attack_accuracy"].items()},
        _source_feature_findings(a),
    )
    lines += _table(
        f"Transfer between the target models (PGD at eps {eps:.3f})",
        "Rows: the model the attack is crafted on; columns: the model evaluated; the diagonal is white-box.",
        targets, {src: [v[t] for t in targets] for src, v in a["transfer_accuracy"].items()},
        _transfer_findings(a),
    )
    lines += _table(
        "Accuracy on the low- and high-frequency parts of the test images",
        "Radial FFT split at each radius r: low keeps frequencies below r, high the rest.",
        [f"low r={r}" for r in radii] + [f"high r={r}" for r in radii],
        {m: v["low_accuracy"] + v["high_accuracy"] for m, v in a["frequency"].items()},
        _frequency_findings(a, radii),
    )
    split = int(a["spectrum_split_radius"]["mean"])
    lines += _table(
        "Where the PGD perturbations put their power",
        f"Share of each model's normalised radial perturbation spectrum at radii {split} and above (the upper "
        "half of the radii; the whole spectrum is in `spectra.png`).",
        ["high-frequency share"], {m: [v] for m, v in a["perturbation_high_frequency_share"].items()},
        _pair_findings(a["perturbation_high_frequency_share"], "High-frequency share of the perturbations"),
    )
    ranking = a["feature_ranking"]
    lines += _table(
        "Feature-robustness ranking (Ilyas et al.)",
        "The (class, penultimate feature) pairs useful on clean inputs, ranked by clean usefulness: how many "
        "there are, the fraction still useful under PGD among the most useful "
        + ", ".join(f"{q:.0%}" for q in RANK_SHARES) + " of them, and the share of the total usefulness "
        "that survives the attack.",
        ["useful pairs"] + [f"robust in top {q:.0%}" for q in RANK_SHARES] + ["robust share"],
        {m: [r["num_useful"], *(r["robust_fraction_top"] or [None] * len(RANK_SHARES)),
             a["robust_usefulness_share"][m]] for m, r in ranking.items()},
        _ranking_findings(a),
    )
    return lines


def _pair_findings(values: dict[str, Any], what: str, a: str = "finetuned", b: str = "standard") -> list[str]:
    if values.get(a) is None or values.get(b) is None:
        return []
    return [_compare(what, a, values[a], b, values[b])]


def _cka_findings(a: dict[str, Any]) -> list[str]:
    first, last = a["layers"][0], a["layers"][-1]
    out = []
    for layer in (first, last) if first != last else (last,):
        ft, st = _get(a["cka"], "pretrained~finetuned", layer), _get(a["cka"], "pretrained~standard", layer)
        if ft and st:
            out.append(_compare(f"CKA with the pretrained model at {layer}", "finetuned", ft, "standard", st))
    dm, rf = _get(a["cka"], "robust_pretrained~dm", last), _get(a["cka"], "robust_pretrained~robust_finetuned", last)
    if dm and rf:
        out.append(_compare(f"CKA with the robust pretrained model at {last}", "dm", dm, "robust_finetuned", rf))
    if out:
        out.append("Higher CKA with the source model means more of its representation is kept.")
    return out


def _source_feature_findings(a: dict[str, Any]) -> list[str]:
    table = a["source_feature_attack_accuracy"]
    out = _pair_findings(table.get("pretrained", {}), "Accuracy kept under attacks on the pretrained model's features")
    out += _pair_findings(table.get("robust_pretrained", {}),
                          "Accuracy kept under attacks on the robust pretrained model's features",
                          "dm", "robust_finetuned")
    if out:
        out.append("A model that keeps less accuracy relies more on the features the source model is sensitive to.")
    return out


def _transfer_findings(a: dict[str, Any]) -> list[str]:
    table = a["transfer_accuracy"]
    out = []
    ft_on_st, st_on_ft = _get(table, "finetuned", "standard"), _get(table, "standard", "finetuned")
    if ft_on_st and st_on_ft:
        out.append(f"Attacks crafted on the standard model leave the fine-tuned model {st_on_ft['mean']:.3f} accuracy, "
                   f"{_versus(st_on_ft, ft_on_st)} the {ft_on_st['mean']:.3f} that attacks crafted on the fine-tuned "
                   "model leave the standard one.")
    for target in ("dm", "robust_finetuned"):
        column = {src: row[target] for src, row in table.items() if src != target and target in row}
        if column:
            weakest = min(column, key=lambda s: column[s]["mean"])
            out.append(f"The {target} model keeps at least {column[weakest]['mean']:.3f} under any transferred attack "
                       f"(the strongest crafted on {weakest}).")
    return out


def _frequency_findings(a: dict[str, Any], radii: list[float]) -> list[str]:
    low, high = radii[0], radii[-1]
    freq = a["frequency"]
    out = []
    if "finetuned" in freq and "standard" in freq:
        out.append(_compare(f"Low-pass accuracy (r={low})", "finetuned", freq["finetuned"]["low_accuracy"][0],
                            "standard", freq["standard"]["low_accuracy"][0]))
        out.append(_compare(f"High-pass accuracy (r={high})", "finetuned", freq["finetuned"]["high_accuracy"][-1],
                            "standard", freq["standard"]["high_accuracy"][-1]))
    chance = a["chance_accuracy"]["mean"]
    above = [m for m, v in freq.items() if v["high_accuracy"][-1]["mean"] - v["high_accuracy"][-1]["std"] > chance]
    out.append(f"Chance is {chance:.3f}. Above chance on the high-pass images (r={high}) by more than the spread, "
               f"i.e. able to classify from high frequencies alone: {', '.join(above) or 'none'}.")
    return out


def _ranking_findings(a: dict[str, Any]) -> list[str]:
    ranking = a["feature_ranking"]
    out = []
    for k, q in enumerate(RANK_SHARES):
        top = {m: r["robust_fraction_top"][k] if r["robust_fraction_top"] else None for m, r in ranking.items()}
        out += _pair_findings(top, f"Robust fraction of the top {q:.0%} most useful pairs")
    out += _pair_findings(a["robust_usefulness_share"], "Share of the usefulness that survives attack")
    return out


__all__ = ["STAGES", "StudyConfig", "render_report", "run_study"]
