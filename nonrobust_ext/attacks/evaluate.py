"""Robustness evaluation: clean and robust accuracy over an eps grid, with true-label confidence.

Samples the model already misclassifies are not attacked (they are counted as non-robust and their
clean input stands in for the adversarial one): the attack runs on the correctly classified part
of each batch only, which saves work in proportion to the error rate.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any, Union

import torch

from ._common import LogitsSelector, eval_mode, select_logits
from .registry import ATTACKS, AttackFn  # noqa: F401  (AttackFn: re-exported)

Data = Union[Iterable[Any], tuple[torch.Tensor, torch.Tensor]]


@dataclasses.dataclass
class RobustnessReport:
    """What :func:`robust_accuracy` measured.

    Attributes:
        eps: the radii, in the order given.
        num_samples: samples evaluated.
        clean_correct: correctly classified clean samples.
        robust_correct: per eps, samples still correct under attack.
        clean_confidence: mean softmax probability of the true label on clean inputs.
        adversarial_confidence: per eps, the same on the adversarial inputs (clean inputs for samples
            that were not attacked because they were already misclassified).
    """

    eps: list[float]
    num_samples: int
    clean_correct: int
    robust_correct: list[int]
    clean_confidence: float
    adversarial_confidence: list[float]

    @property
    def clean_accuracy(self) -> float:
        return self.clean_correct / max(self.num_samples, 1)

    @property
    def robust_accuracy(self) -> list[float]:
        return [c / max(self.num_samples, 1) for c in self.robust_correct]

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["clean_accuracy"] = self.clean_accuracy
        out["robust_accuracy"] = self.robust_accuracy
        return out


def _batches(data: Data, batch_size: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        x, y = data
        for i in range(0, len(x), batch_size):
            yield x[i : i + batch_size], y[i : i + batch_size]
        return
    for batch in data:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise TypeError("data must yield (x, y) batches, e.g. a DataLoader over (image, label) pairs")
        yield batch[0], batch[1]


def true_label_probability(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``[B]`` softmax probability of the true label (the study's confidence measure), in float32."""
    return torch.softmax(logits.float(), dim=1).gather(1, y[:, None]).squeeze(1)


def robust_accuracy(
    model: torch.nn.Module,
    data: Data,
    *,
    eps: Sequence[float],
    attack: str | AttackFn = "pgd",
    device: torch.device | str | None = None,
    logits: LogitsSelector = None,
    batch_size: int = 256,
    max_batches: int | None = None,
    progress: bool = False,
    **attack_kwargs: Any,
) -> RobustnessReport:
    """Clean and robust accuracy of ``model`` for every radius in ``eps``.

    For each batch: one clean forward; then for each eps the attack runs on the samples that are
    still correctly classified (compaction), and a sample counts as robust if the model still
    classifies its adversarial input correctly.

    Args:
        model: the classifier (evaluated in eval mode; its modes are restored afterwards).
        data: an iterable of ``(x, y)`` batches (e.g. a DataLoader), or a pair of tensors
            ``(x, y)`` split into batches of ``batch_size``.
        eps: the radii to evaluate, each >= 0 (0 gives the clean accuracy).
        attack: a name in :data:`ATTACKS` (``"pgd"``, ``"fgsm"``, ``"bim"``, ...) or a callable
            ``attack(model, x, y, eps=..., **attack_kwargs)`` returning the adversarial batch.
        device: where to evaluate (default: where the model's parameters are).
        logits: where the logits are in the model's output (index, key or callable); also passed to
            named attacks.
        batch_size: batch size when ``data`` is a pair of tensors.
        max_batches: stop after this many batches.
        progress: show a progress bar (tqdm, when installed).
        attack_kwargs: passed to the attack (e.g. ``steps=20, norm="l2", seed=0``). With ``pgd`` or
            ``bim``, ``early_stop=True`` gives the same robust accuracy for much less work when most
            samples fall early, but the adversarial confidence is then measured at each sample's first
            fooling point rather than after all steps, so it is off by default.

    Returns:
        A :class:`RobustnessReport`.
    """
    eps_list = [float(e) for e in eps]
    if not eps_list:
        raise ValueError("eps must list at least one radius")
    if any(not e >= 0 for e in eps_list):
        raise ValueError(f"eps must be >= 0, got {eps_list}")
    if isinstance(attack, str):
        if attack not in ATTACKS:
            raise ValueError(f"attack must be one of {sorted(ATTACKS)} or a callable, got {attack!r}")
        attack_fn = ATTACKS[attack]
        attack_kwargs = {"logits": logits, **attack_kwargs}
    elif callable(attack):
        attack_fn = attack
    else:
        raise TypeError(f"attack must be a name or a callable, got {type(attack).__name__}")
    if device is None:
        first = next(iter(model.parameters()), None)
        device = first.device if first is not None else torch.device("cpu")

    batches: Iterable[tuple[torch.Tensor, torch.Tensor]] = _batches(data, batch_size)
    if progress:
        try:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc="robust accuracy", unit="batch")
        except ImportError:
            pass

    total = clean_correct = 0
    robust_correct = [0] * len(eps_list)
    clean_conf = 0.0
    adv_conf = [0.0] * len(eps_list)
    with eval_mode(model):
        for index, (x, y) in enumerate(batches):
            if max_batches is not None and index >= max_batches:
                break
            x, y = x.to(device), y.to(device).long()
            with torch.no_grad():
                clean_logits = select_logits(model(x), logits)
            correct = clean_logits.argmax(1) == y
            clean_p = true_label_probability(clean_logits, y)
            total += len(y)
            clean_correct += int(correct.sum())
            clean_conf += float(clean_p.sum())
            keep = correct.nonzero().squeeze(1)
            for k, e in enumerate(eps_list):
                p = clean_p.clone()
                if e > 0 and len(keep):
                    x_adv = attack_fn(model, x[keep], y[keep], eps=e, **attack_kwargs)
                    with torch.no_grad():
                        adv_logits = select_logits(model(x_adv), logits)
                    robust_correct[k] += int((adv_logits.argmax(1) == y[keep]).sum())
                    p[keep] = true_label_probability(adv_logits, y[keep])
                else:
                    robust_correct[k] += len(keep)
                adv_conf[k] += float(p.sum())
    n = max(total, 1)
    return RobustnessReport(
        eps=eps_list,
        num_samples=total,
        clean_correct=clean_correct,
        robust_correct=robust_correct,
        clean_confidence=clean_conf / n,
        adversarial_confidence=[c / n for c in adv_conf],
    )
