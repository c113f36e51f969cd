"""The attacks known by name: what ``robust_accuracy(attack="...")``, the analyses and the study's
``--attack`` accept. Each is called as ``fn(model, x, y, eps=eps, **kwargs)`` and returns the
adversarial batch."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .apgd import apgd
from .pgd import fgsm, pgd
from .transfer import bim, difgsm, mifgsm

AttackFn = Callable[..., torch.Tensor]

#: The evaluation registry: fixed-radius attacks by name.
ATTACKS: dict[str, AttackFn] = {
    "pgd": pgd, "apgd": apgd, "fgsm": fgsm, "bim": bim, "mifgsm": mifgsm, "difgsm": difgsm,
}

__all__ = ["ATTACKS", "AttackFn"]
