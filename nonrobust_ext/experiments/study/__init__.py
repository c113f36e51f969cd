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

The package is the pipeline's steps, each a module, the data flowing one way through them:

- :mod:`.config`    :class:`StudyConfig` (every setting described once; the CLI's options come from it)
- :mod:`.tasks`     the dataset loaded and split per seed (source task, few-shot target task)
- :mod:`.stages`    the training stages, the ``stages.json`` cache guard, ImageNet weights
- :mod:`.measure`   evaluation and analyses of one seed's models
- :mod:`.summary`   mean ± std over seeds, and the claims' paired comparisons (holds / reversed / undecided)
- :mod:`.paired`    the paired per-image difference of two models and its hierarchical bootstrap interval
- :mod:`.report`    ``report.md`` from the results alone
- :mod:`.plots`     the PNG plots
- :mod:`.pipeline`  :func:`run_study`, composing them
"""

from __future__ import annotations

from . import config, measure, paired, pipeline, plots, report, stages, summary, tasks
from .config import (
    EVAL_ATTACKS,
    IMAGENET_CLASSES,
    IMAGENET_MEAN,
    IMAGENET_SIZE,
    IMAGENET_STD,
    METHOD_STAGES,
    METHODS,
    PRESETS,
    SELECT_RULES,
    SOURCE_STAGES,
    STAGES,
    TARGET_STAGES,
    TRAINING_FIELDS,
    StudyConfig,
)
from .measure import CKA_PAIRS, RANK_SHARES
from .pipeline import run_study
from .plots import PLOTS, write_plots
from .report import LATE_BEST, render_report
from .stages import STAGES_FILE, VALIDATIONS
from .summary import SUMMARISED

# The names the single-module study.py had for its data steps, kept for code (and tests) written
# against it; new code uses the step modules' public names.
_load = tasks.load
_split = tasks.split
_subsample = tasks.subsample
_normalisation = tasks.normalisation
_new_model = stages.new_model

__all__ = [
    "CKA_PAIRS", "EVAL_ATTACKS", "IMAGENET_CLASSES", "IMAGENET_MEAN", "IMAGENET_SIZE", "IMAGENET_STD", "LATE_BEST",
    "METHODS", "METHOD_STAGES", "PLOTS", "PRESETS", "RANK_SHARES", "SELECT_RULES", "SOURCE_STAGES", "STAGES",
    "STAGES_FILE", "SUMMARISED", "StudyConfig", "TARGET_STAGES", "TRAINING_FIELDS", "VALIDATIONS", "config",
    "measure", "paired", "pipeline", "plots", "render_report", "report", "run_study", "stages", "summary", "tasks",
    "write_plots",
]
