"""Attacks composed from the compiled ops, and the robustness evaluation built on them."""

from ._common import AttackResult
from .apgd import apgd, dlr_loss
from .cw import CWResult, cw_l2
from .deepfool import DeepFoolResult, deepfool
from .evaluate import RobustnessReport, robust_accuracy
from .feature import feature_pgd
from .pgd import fgsm, pgd
from .transfer import bim, difgsm, mifgsm

__all__ = [
    "AttackResult", "CWResult", "DeepFoolResult", "RobustnessReport",
    "apgd", "bim", "cw_l2", "dlr_loss", "deepfool", "difgsm", "feature_pgd", "fgsm", "mifgsm", "pgd", "robust_accuracy",
]
