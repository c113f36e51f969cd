r"""Transferability of adversarial examples between models: the direct test of shared non-robust features.

Adversarial examples crafted on a source model fool a target model to the extent that both rely on the
same non-robust features. If fine-tuning from pretrained weights carries the pretrained model's
non-robust features into the fine-tuned one, examples crafted on the pretrained (or fine-tuned) model
transfer to the other far better than to a model trained from scratch.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Mapping
from typing import Any

import torch

from .._progress import progress_bar
from .._validate import check_bool, check_int, check_real
from ..attacks._common import LogitsSelector, eval_mode
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


@dataclasses.dataclass
class TransferMatrix:
    """Accuracy of every target model on the adversarial examples of every source model.

    Attributes:
        names: the models, in the order given; rows (sources) and columns (targets) follow it.
        eps: the attack radius.
        attack: the attack's name.
        num_samples: samples evaluated.
        clean_correct: per model, correctly classified clean samples.
        robust_correct: ``[sources][targets]``: samples the target classifies correctly on the source's
            adversarial inputs (the diagonal is white-box robustness).
    """

    names: list[str]
    eps: float
    attack: str
    num_samples: int
    clean_correct: list[int]
    robust_correct: list[list[int]]

    def __post_init__(self) -> None:
        # An accuracy over zero samples is an error, not 0.0: the counts must describe at least one sample.
        check_int(self.num_samples, "num_samples", 1)
        k = len(self.names)
        if len(self.clean_correct) != k or len(self.robust_correct) != k or any(len(r) != k for r in
                                                                                 self.robust_correct):
            raise ValueError(f"clean_correct and robust_correct must have one entry per model ({k}) and "
                             f"robust_correct one row of {k} per source")
        for c in [*self.clean_correct, *(c for row in self.robust_correct for c in row)]:
            check_int(c, "clean_correct/robust_correct entries", 0, self.num_samples)

    @property
    def clean_accuracy(self) -> dict[str, float]:
        """Each model's accuracy on the clean samples."""
        n = self.num_samples
        return {name: c / n for name, c in zip(self.names, self.clean_correct, strict=True)}

    @property
    def accuracy(self) -> list[list[float]]:
        """``[sources][targets]`` robust accuracy of the target on the source's adversarial examples."""
        n = self.num_samples
        return [[c / n for c in row] for row in self.robust_correct]

    @property
    def white_box(self) -> dict[str, float]:
        """The diagonal: each model's robust accuracy under its own attack."""
        acc = self.accuracy
        return {name: acc[i][i] for i, name in enumerate(self.names)}

    def __getitem__(self, pair: tuple[str, str]) -> float:
        """``matrix[source, target]``: the target's accuracy on the source's adversarial examples."""
        source, target = pair
        for name in pair:
            if name not in self.names:
                raise KeyError(f"no model named {name!r}; models: {self.names}")
        return self.accuracy[self.names.index(source)][self.names.index(target)]

    def to_tensor(self) -> torch.Tensor:
        """The accuracy matrix as a ``[S, T]`` float64 tensor."""
        return torch.tensor(self.accuracy, dtype=torch.float64)

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["clean_accuracy"] = self.clean_accuracy
        out["accuracy"] = self.accuracy
        out["white_box"] = self.white_box
        return out

    def plot(self, path: str, *, title: str | None = None) -> None:
        """Heat map of the accuracy matrix (rows: sources, columns: targets) saved to ``path``
        (needs matplotlib)."""
        figure = pyplot_figure()(figsize=(1.2 * len(self.names) + 2.5, 1.0 * len(self.names) + 1.8))
        ax = figure.subplots()
        acc = self.accuracy
        image = ax.imshow(acc, vmin=0.0, vmax=1.0, cmap="viridis")
        for i, row in enumerate(acc):
            for j, value in enumerate(row):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", color="white" if value < 0.5 else "black",
                        fontsize=8)
        ax.set_xticks(range(len(self.names)), self.names, rotation=30, ha="right")
        ax.set_yticks(range(len(self.names)), self.names)
        ax.set_xlabel("target (evaluated)")
        ax.set_ylabel("source (attacked)")
        ax.set_title(title or f"accuracy under transferred {self.attack}, eps={self.eps:g}")
        figure.colorbar(image, ax=ax, fraction=0.046)
        figure.tight_layout()
        figure.savefig(path, dpi=120)


def transfer_matrix(
    models: Mapping[str, torch.nn.Module],
    data: Data,
    *,
    attack: str | AttackFn = "pgd",
    eps: float,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    logits: LogitsSelector = None,
    progress: bool = False,
    **attack_kwargs: Any,
) -> TransferMatrix:
    r"""Robust accuracy of every target model on the adversarial examples crafted on every source model.

    For each batch and each source model ``s``: one attack ``attack(s, x, y, eps=eps, **attack_kwargs)``
    on the samples ``s`` classifies correctly (the samples it already gets wrong have no adversarial
    example to transfer and pass unperturbed, as in :func:`nonrobust_ext.robust_accuracy`), then every
    target model classifies the result. The diagonal is therefore exactly the white-box robust accuracy
    ``robust_accuracy(s, data, eps=[eps], attack=attack, batch_size=batch_size, **attack_kwargs)``
    (with the same seed), and off the diagonal a target is correct only where it classifies the
    source's adversarial (or, for samples the source misclassifies, clean) input correctly.

    Args:
        models: ``{name: model}``; each is evaluated in eval mode, its modes restored, on its own device.
        data: a ``TensorData``, a pair ``(x, y)`` or an iterable of batches.
        attack: a name of :data:`nonrobust_ext.attacks.registry.ATTACKS` or a callable
            ``attack(model, x, y, eps=..., **attack_kwargs)``.
        eps: the radius (>= 0).
        batch_size: batch size when ``data`` is a set or a pair of tensors.
        device: where to run every model (default: each model's own device).
        logits: where the logits are in the models' outputs.
        progress: show a progress bar (tqdm).
        attack_kwargs: passed to the attack (e.g. ``steps=10, seed=0``).

    Returns:
        A :class:`TransferMatrix`.
    """
    if not isinstance(models, Mapping):
        raise TypeError(f"models must be a dict {{name: model}}, got {type(models).__name__}")
    if not models:
        raise ValueError("models must name at least one model, got an empty dict")
    for name, model in models.items():
        if not isinstance(name, str):
            raise TypeError(f"models must be keyed by name (str), got a key of type {type(name).__name__}")
        check_model(model, f"models[{name!r}]")
    eps = check_real(eps, "eps", low=0.0)
    check_bool(progress, "progress")
    attack_fn, kwargs = resolve_attack(attack, logits, attack_kwargs)
    names = list(models)
    nets = [models[name] for name in names]
    devices = [resolve_device(m, device) for m in nets]
    clean_correct = [0] * len(nets)
    robust_correct = [[0] * len(nets) for _ in nets]
    total = 0
    with contextlib.ExitStack() as stack:
        for m in nets:
            stack.enter_context(eval_mode(m))
        for x, y in progress_bar(labelled_batches(data, batch_size), enabled=progress,
                                 description="transfer matrix"):
            total += len(y)
            # Clean predictions of every model, once (each checks the labels against its model).
            clean_ok = []
            for j, (m, dev) in enumerate(zip(nets, devices, strict=True)):
                yd = y.to(dev)
                ok = logits_of(m, x.to(dev), logits, yd).argmax(1) == yd
                clean_ok.append(ok)
                clean_correct[j] += int(ok.sum())
            for i, (source, dev) in enumerate(zip(nets, devices, strict=True)):
                xs, ys = x.to(dev), y.to(dev)
                keep = clean_ok[i].nonzero().squeeze(1)
                x_src = xs.clone()
                if len(keep):
                    x_src[keep] = run_attack(attack_fn, source, xs[keep], ys[keep], eps, kwargs).to(xs.dtype)
                for j, (target, tdev) in enumerate(zip(nets, devices, strict=True)):
                    if j == i:
                        # White box: a sample the source misclassifies stays misclassified (same input).
                        ok = (logits_of(target, x_src[keep].to(tdev), logits).argmax(1) == ys[keep].to(tdev)) \
                            if len(keep) else torch.zeros(0, dtype=torch.bool)
                        robust_correct[i][j] += int(ok.sum())
                    else:
                        ok = logits_of(target, x_src.to(tdev), logits).argmax(1) == ys.to(tdev)
                        robust_correct[i][j] += int(ok.sum())
    return TransferMatrix(names=names, eps=eps, attack=attack_name(attack), num_samples=total,
                          clean_correct=clean_correct, robust_correct=robust_correct)


__all__ = ["TransferMatrix", "transfer_matrix"]
