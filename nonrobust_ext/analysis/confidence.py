r"""True-label confidence on clean and adversarial inputs (the study's Figure 1).

The confidence of a sample is the softmax probability the model gives its true label. A model that leans
on non-robust features is confident on clean inputs and loses that confidence under small attacks; the
histograms of the two show how far its mass moves.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from .._progress import progress_bar
from .._validate import check_bool, check_int, check_real
from ..attacks._common import LogitsSelector, eval_mode
from ..attacks.evaluate import true_label_probability
from ._inputs import (
    AttackFn,
    Data,
    attack_name,
    check_model,
    labelled_batches,
    logits_of,
    pyplot_figure,
    resolve_attack,
    resolve_device,
    run_attack,
)


def _histogram(p: torch.Tensor, bins: int) -> torch.Tensor:
    # Bin k holds [k / bins, (k + 1) / bins); the last bin also holds p == 1.
    index = (p * bins).floor().long().clamp(0, bins - 1)
    return torch.bincount(index.cpu(), minlength=bins)


def confidence(
    model: torch.nn.Module,
    data: Data,
    *,
    attack: str | AttackFn = "pgd",
    eps: float,
    bins: int = 20,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    logits: LogitsSelector = None,
    progress: bool = False,
    **attack_kwargs: Any,
) -> dict[str, Any]:
    r"""Softmax probability of the true label, ``p_y(x) = softmax(model(x))_y``, on clean inputs and on
    their adversarial versions (``attack(model, x, y, eps=eps, **attack_kwargs)``, every sample
    attacked, misclassified ones included).

    Args:
        model: the classifier; eval mode, modes restored.
        data: a ``TensorData``, a pair ``(x, y)`` or an iterable of batches.
        attack: a name of :data:`nonrobust_ext.attacks.registry.ATTACKS` or a callable
            ``attack(model, x, y, eps=..., **attack_kwargs)``.
        eps: the radius (>= 0; 0 gives the clean confidence twice).
        bins: histogram bins over ``[0, 1]`` (equal widths).
        batch_size, device, logits, progress: as :func:`nonrobust_ext.robust_accuracy`.
        attack_kwargs: passed to the attack (e.g. ``steps=10, seed=0``).

    Returns:
        ``{"clean_mean", "adversarial_mean", "clean_hist", "adversarial_hist", "bin_edges",
        "clean_accuracy", "adversarial_accuracy", "num_samples", "eps", "attack"}``: the histograms are
        the fraction of samples per bin (each sums to 1), ``bin_edges`` has ``bins + 1`` entries.
    """
    check_model(model)
    eps = check_real(eps, "eps", low=0.0)
    bins = check_int(bins, "bins", 1)
    check_bool(progress, "progress")
    attack_fn, kwargs = resolve_attack(attack, logits, attack_kwargs)
    dev = resolve_device(model, device)
    n = 0
    sums = [0.0, 0.0]
    correct = [0, 0]
    hists = [torch.zeros(bins, dtype=torch.long), torch.zeros(bins, dtype=torch.long)]
    with eval_mode(model):
        for x, y in progress_bar(labelled_batches(data, batch_size), enabled=progress, description="confidence"):
            x, y = x.to(dev), y.to(dev)
            z_clean = logits_of(model, x, logits, y)  # checks the labels against the model before attacking
            z_adv = logits_of(model, run_attack(attack_fn, model, x, y, eps, kwargs), logits)
            n += len(y)
            for k, z in enumerate((z_clean, z_adv)):
                p = true_label_probability(z, y)
                sums[k] += float(p.double().sum())
                correct[k] += int((z.argmax(1) == y).sum())
                hists[k] += _histogram(p, bins)
    return {
        "clean_mean": sums[0] / n,
        "adversarial_mean": sums[1] / n,
        "clean_hist": [c / n for c in hists[0].tolist()],
        "adversarial_hist": [c / n for c in hists[1].tolist()],
        "bin_edges": [k / bins for k in range(bins + 1)],
        "clean_accuracy": correct[0] / n,
        "adversarial_accuracy": correct[1] / n,
        "num_samples": n,
        "eps": eps,
        "attack": attack_name(attack),
    }


def plot_confidence(results: Mapping[str, Mapping[str, Any]], path: str, *, title: str | None = None) -> None:
    """Histograms of the true-label confidence, clean (solid) and adversarial (dashed), one colour per
    model (``{name: confidence(...)}``), saved to ``path`` (needs matplotlib)."""
    if not isinstance(results, Mapping) or not results:
        raise TypeError("results must be a non-empty dict {model name: confidence result}")
    figure = pyplot_figure()(figsize=(5.5, 3.8))
    ax = figure.subplots()
    for name, r in results.items():
        edges = r["bin_edges"]
        line = ax.stairs(r["clean_hist"], edges, label=f"{name} clean (mean {r['clean_mean']:.2f})")
        ax.stairs(r["adversarial_hist"], edges, ls="--", color=line.get_edgecolor(),
                  label=f"{name} adversarial (mean {r['adversarial_mean']:.2f})")
    ax.set_xlabel("softmax probability of the true label")
    ax.set_ylabel("fraction of samples")
    ax.legend(fontsize=7)
    first = next(iter(results.values()))
    ax.set_title(title or f"true-label confidence, {first.get('attack', 'attack')} eps={first.get('eps', 0):g}")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


__all__ = ["confidence", "plot_confidence"]
