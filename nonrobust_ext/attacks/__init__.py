"""Attacks composed from the compiled ops, and the robustness evaluation built on them.

- :mod:`.threat`: the threat model every attack resolves once (eps, norm, bounds, scale, step size);
- :mod:`.pgd`, :mod:`.apgd`, :mod:`.transfer`: fixed-radius attacks (PGD/FGSM, Auto-PGD, BIM/MI-FGSM/DI-FGSM);
- :mod:`.deepfool`, :mod:`.cw`, :mod:`.fmn`: minimal-norm attacks;
- :mod:`.feature`: feature-space PGD (no labels);
- :mod:`.registry`: the attacks by name and what each is; :mod:`.evaluate`: robust accuracy, and
  :mod:`.curve` the robustness curve it gives from a minimal-norm attack.
"""

from ._common import AttackResult
from .apgd import apgd, dlr_loss
from .curve import RobustnessCurve
from .cw import CWResult, cw_l2
from .deepfool import DeepFoolResult, deepfool
from .evaluate import RobustnessReport, robust_accuracy
from .feature import feature_pgd
from .fmn import FMNResult, fmn
from .pgd import fgsm, pgd
from .registry import ATTACKS, MINIMAL_NORM, SPECS, AttackSpec
from .threat import ThreatModel
from .transfer import bim, difgsm, mifgsm

__all__ = [
    "ATTACKS", "MINIMAL_NORM", "SPECS", "AttackResult", "AttackSpec", "CWResult", "DeepFoolResult", "FMNResult",
    "RobustnessCurve", "RobustnessReport", "ThreatModel", "apgd", "bim", "cw_l2", "deepfool", "difgsm", "dlr_loss",
    "feature_pgd", "fgsm", "fmn", "mifgsm", "pgd", "robust_accuracy",
]
