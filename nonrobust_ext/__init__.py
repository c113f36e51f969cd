"""nonrobust_ext: fast adversarial attacks as compiled torch ops, and tools to study how pretraining
transfers non-robustness (Zhang et al., AAAI 2023).

Public surface:
    pgd, fgsm            attacks users call from their own training code (nonrobust_ext.attacks)
    apgd                 APGD-CE / APGD-DLR (Croce & Hein), for credible robustness evaluations
    autoattack           AutoAttack (standard): APGD-CE, APGD-T, FAB-T, Square on the points still robust
    apgd_targeted        APGD-T: targeted DLR towards the most likely wrong classes (AutoAttack's 2nd stage)
    square               the Square Attack: score-based, no gradients (AutoAttack's last stage)
    bim, mifgsm, difgsm  iterative and transfer attacks (I-FGSM, momentum, diverse inputs)
    deepfool, cw_l2      minimal-perturbation attacks (L2)
    fmn                  FMN: fast minimum-norm (L-inf, L2); robust_accuracy(curve=True) builds curves on it
    fab                  FAB: minimal perturbation (L-inf, L2), targeted form for AutoAttack (FAB-T)
    uap, fooling_rate    a universal perturbation (one for all inputs) and how often it fools any model
    robust_accuracy      clean/robust accuracy and true-label confidence over an eps grid
    AttackResult         the richer result of an attack (``return_result=True``)
    ops                  typed wrappers of the compiled ops (torch.ops.nonrobust_ext.*)
    reference            pure-PyTorch twins of every op
    build_info()         how the extension was built

Subpackages: ``attacks`` (imported here: the attacks above, the threat model, the registry of attacks
by name) and, imported on use, ``models`` (architectures, weights loading), ``data`` (datasets,
source/target splits), ``training`` (objectives, fine-tuning, the training loop), ``analysis``
(representation similarity, feature usefulness, frequency, transfer), ``stats`` (per-class feature
statistics), ``experiments`` (the study and the demo behind the ``nonrobust-ext`` command).
"""

from __future__ import annotations

from typing import Any

import torch  # noqa: F401  (the compiled module needs libtorch loaded first)

from ._loader import load_extension

_C, _build_config = load_extension()

from . import _meta, ops, reference  # noqa: E402, F401  (_meta registers the fake kernels)
from .attacks import (  # noqa: E402
    AttackResult,
    CWResult,
    DeepFoolResult,
    RobustnessReport,
    apgd,
    apgd_targeted,
    autoattack,
    bim,
    cw_l2,
    deepfool,
    difgsm,
    fab,
    fgsm,
    fmn,
    fooling_rate,
    mifgsm,
    pgd,
    robust_accuracy,
    square,
    uap,
)

__version__ = "0.1.0"


def build_info() -> dict[str, Any]:
    """How the compiled extension was built.

    Returns:
        A dict with ``torch_version`` (the torch it was compiled against), ``with_cuda``,
        ``cuda_version``, ``cuda_archs`` (comma-separated, e.g. ``"80,90"``), ``cpu_isas_compiled``,
        ``cpu_isa`` (the vector ISA the CPU kernels use on this machine: ``avx512``, ``avx2`` or
        ``baseline``; ``NONROBUST_EXT_CPU_ISA`` overrides it), ``compiler`` and ``build_type``.
    """
    return dict(_C.build_info())


__all__ = [
    "AttackResult", "CWResult", "DeepFoolResult", "RobustnessReport", "apgd", "apgd_targeted", "autoattack", "bim",
    "build_info", "cw_l2", "deepfool", "difgsm", "fab", "fgsm", "fmn", "fooling_rate", "mifgsm", "ops", "pgd",
    "reference", "robust_accuracy", "square", "uap",
]
