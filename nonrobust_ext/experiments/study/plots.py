"""The report's PNG plots, drawn from ``results.json``'s summary alone (matplotlib is optional: without
it there are no plots and the report says so)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..._io import atomic_write
from .config import TARGET_STAGES
from .measure import RANK_SHARES
from .summary import present

PLOTS = {
    "robust_accuracy.png": "Robust accuracy against eps (target task)",
    "confidence.png": "True-label confidence, clean and at the largest eps",
    "cka.png": "Layer-wise CKA with the source models",
    "transfer.png": "Transfer between the target models",
    "spectra.png": "Radial power spectrum of each model's PGD perturbations",
    "feature_ranking.png": "Robust fraction of the most useful features",
    "validation.png": "Validation accuracy during training (target models)",
}


def write_plots(results: dict[str, Any], out: Path) -> list[str]:
    """The report's PNG plots; an empty list (and a note in the report) without matplotlib."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return []
    summary, eps = results["summary"], results["config"]["eval_eps"]
    a = summary["analyses"]
    targets = present(TARGET_STAGES, summary)
    attack = results["config"]["eval_attack"].upper()

    written: list[str] = []

    def save(fig: Figure, name: str) -> None:
        fig.tight_layout()
        atomic_write(out / name, lambda f: fig.savefig(f, format="png", dpi=110))
        written.append(name)

    fig = Figure(figsize=(5.5, 3.6))
    ax = fig.subplots()
    for stage in targets:
        stats = summary[stage]["robust_accuracy"]
        ax.errorbar(eps, [s["mean"] for s in stats], yerr=[s["std"] for s in stats], marker="o", capsize=3, label=stage)
    ax.set(xlabel="L-inf eps", ylabel="accuracy", title=f"Robust accuracy ({attack}), mean ± std over seeds")
    ax.legend(fontsize=8)
    save(fig, "robust_accuracy.png")

    fig = Figure(figsize=(5.5, 3.6))
    ax = fig.subplots()
    width = 0.38
    first = "clean" if eps[0] == 0 else f"eps {eps[0]:g}"
    for k, (label, index) in enumerate(((first, 0), (f"eps {eps[-1]:g}", len(eps) - 1))):
        values = [summary[s]["adversarial_confidence"][index] for s in targets]
        ax.bar([i + (k - 0.5) * width for i in range(len(targets))], [v["mean"] for v in values], width,
               yerr=[v["std"] for v in values], capsize=3, label=label)
    ax.set_xticks(range(len(targets)), targets, fontsize=8)
    ax.set(ylabel="mean true-label probability", title="True-label confidence")
    ax.legend(fontsize=8)
    save(fig, "confidence.png")

    curves = {s: summary[s]["training"]["val_curve"] for s in targets
              if (summary[s].get("training") or {}).get("val_curve")}
    if curves:
        fig = Figure(figsize=(5.5, 3.6))
        ax = fig.subplots()
        for stage, curve in curves.items():
            mean = [a["mean"] for a in curve["val_accuracy"]]
            std = [a["std"] for a in curve["val_accuracy"]]
            ax.errorbar([s["mean"] for s in curve["step"]], mean, yerr=std, marker=".", capsize=2, label=stage)
        ax.set(xlabel="optimiser step", ylabel="validation accuracy",
               title="Validation accuracy during training, mean ± std")
        ax.legend(fontsize=8)
        save(fig, "validation.png")

    fig = Figure(figsize=(5.5, 3.6))
    ax = fig.subplots()
    for pair, values in a["cka"].items():
        ax.errorbar(a["layers"], [values[layer]["mean"] for layer in a["layers"]],
                    yerr=[values[layer]["std"] for layer in a["layers"]], marker="o", capsize=3, label=pair)
    ax.set(ylabel="linear CKA", title="Similarity to the source models, per layer")
    ax.legend(fontsize=7)
    save(fig, "cka.png")

    names = list(a["transfer_accuracy"])
    matrix = [[a["transfer_accuracy"][src][dst]["mean"] for dst in names] for src in names]
    fig = Figure(figsize=(5.2, 4.2))
    ax = fig.subplots()
    image = ax.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(names)), names, rotation=30, fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", color="white" if value < 0.5 else "black")
    ax.set(xlabel="evaluated on", ylabel="crafted on", title="Accuracy under transferred PGD")
    fig.colorbar(image, ax=ax)
    save(fig, "transfer.png")

    fig = Figure(figsize=(5.5, 3.6))
    ax = fig.subplots()
    for stage, spectrum in a["perturbation_spectrum"].items():
        ax.plot([s["mean"] for s in spectrum], label=stage)
    ax.set(xlabel="radial frequency", ylabel="share of perturbation power", yscale="log",
           title="Spectrum of PGD perturbations")
    ax.legend(fontsize=8)
    save(fig, "spectra.png")

    fig = Figure(figsize=(5.5, 3.6))
    ax = fig.subplots()
    shares = [100 * q for q in RANK_SHARES]
    for stage, record in a["feature_ranking"].items():
        if record["robust_fraction_top"] is not None:
            ax.errorbar(shares, [f["mean"] for f in record["robust_fraction_top"]],
                        yerr=[f["std"] for f in record["robust_fraction_top"]], marker="o", capsize=3, label=stage)
    ax.set(xlabel="most useful features (% of the useful (class, feature) pairs)", ylabel="fraction robust",
           xscale="log", title=f"Features still useful under PGD (eps {a['eps']['mean']:g})")
    ax.set_xticks(shares, [f"{q:.0%}" for q in RANK_SHARES])
    ax.legend(fontsize=8)
    save(fig, "feature_ranking.png")
    return sorted(written, key=list(PLOTS).index)



__all__ = ["PLOTS", "write_plots"]
