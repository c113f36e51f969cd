"""Attacks composed from the compiled ops, and the robustness evaluation built on them."""

from ._common import AttackResult
from .evaluate import RobustnessReport, robust_accuracy
from .pgd import fgsm, pgd

__all__ = ["AttackResult", "RobustnessReport", "fgsm", "pgd", "robust_accuracy"]
