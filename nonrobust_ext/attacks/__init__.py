from .pgd import AttackResult, fgsm, pgd

__all__ = ["AttackResult", "fgsm", "pgd"]
