"""Attacks composed from the compiled ops, and the robustness evaluation built on them.

- :mod:`.threat`: the threat model every attack resolves once (eps, norm, bounds, scale, step size);
- :mod:`.pgd`, :mod:`.apgd`, :mod:`.apgd_targeted`, :mod:`.transfer`: fixed-radius attacks (PGD/FGSM, Auto-PGD and
  its targeted DLR version, BIM/MI-FGSM/DI-FGSM);
- :mod:`.square`: the Square Attack, a score-based (gradient-free) fixed-radius attack;
- :mod:`.deepfool`, :mod:`.cw`, :mod:`.fab`, :mod:`.fmn`: minimal-norm attacks (FAB also with a radius, for AutoAttack);
- :mod:`.autoattack`: AutoAttack, the standard cascade of APGD-CE, APGD-T, FAB-T and Square;
- :mod:`.feature`: feature-space PGD (no labels); :mod:`.uap`: universal perturbations (one for all inputs);
- :mod:`.registry`: the attacks by name and what each is; :mod:`.evaluate`: robust accuracy, and
  :mod:`.curve` the robustness curve it gives from a minimal-norm attack.
"""

from ._common import AttackResult
from .apgd import apgd, dlr_loss
from .apgd_targeted import TargetedAPGDResult, apgd_targeted, targeted_dlr_loss
from .autoattack import AutoAttackResult, StageLog, autoattack
from .curve import RobustnessCurve
from .cw import CWResult, cw_l2
from .deepfool import DeepFoolResult, deepfool
from .evaluate import RobustnessReport, robust_accuracy
from .fab import FABResult, fab
from .feature import feature_pgd
from .fmn import FMNResult, fmn
from .pgd import fgsm, pgd
from .registry import ATTACKS, MINIMAL_NORM, SPECS, AttackSpec
from .square import SquareResult, square
from .threat import ThreatModel
from .transfer import bim, difgsm, mifgsm
from .uap import UAPResult, fooling_rate, uap

__all__ = [
    "ATTACKS", "MINIMAL_NORM", "SPECS", "AttackResult", "AttackSpec", "AutoAttackResult", "CWResult",
    "DeepFoolResult", "FABResult", "FMNResult", "RobustnessCurve", "RobustnessReport", "SquareResult", "StageLog",
    "TargetedAPGDResult", "ThreatModel", "UAPResult", "apgd", "apgd_targeted", "autoattack", "bim", "cw_l2",
    "deepfool", "difgsm", "dlr_loss", "fab", "feature_pgd", "fgsm", "fmn", "fooling_rate", "mifgsm", "pgd",
    "robust_accuracy", "square", "targeted_dlr_loss", "uap",
]
