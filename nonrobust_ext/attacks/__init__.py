"""Attacks composed from the compiled ops, and the robustness evaluation built on them."""

from ._common import AttackResult
from .cw import CWResult, cw_l2
from .deepfool import DeepFoolResult, deepfool
from .evaluate import RobustnessReport, robust_accuracy
from .pgd import fgsm, pgd
from .transfer import bim, difgsm, mifgsm

__all__ = [
    "AttackResult", "CWResult", "DeepFoolResult", "RobustnessReport",
    "bim", "cw_l2", "deepfool", "difgsm", "fgsm", "mifgsm", "pgd", "robust_accuracy",
]
