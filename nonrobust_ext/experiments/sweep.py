"""Sweeps over the study's factors: the fine-tuned-versus-standard comparison (and the robust arms
asked for) at every value of one or more training settings, as a table and a plot of the gaps, each
with its paired confidence interval.

Every point is a whole study in its own folder (``points/<factor=value,...>``), so an interrupted sweep
resumes where it stopped and a finished point (its ``results.json`` written for the same settings) is
never trained or evaluated again. A trained model that does not depend on the varied factor (the
from-scratch ``standard`` model when the fine-tuning learning rates vary; the source models trained on
the source task when a fine-tuning setting varies) is trained once: later points link its folder, and its
evaluation record, cached there under a key of its weights, images and settings, is reused with it.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .._io import atomic_write
from ._output import check_output_dir
from ._settings import settings
from .study import StudyConfig, run_study
from .study.config import SOURCE_STAGES, TRAINING_FIELDS
from .study.stages import ARM_CHOICE

# Not a factor: the arms to train are chosen with --methods, not compared along a sweep.
NOT_FACTORS = ("methods",)
# The comparisons a sweep reports: the paper's pair, then each robust arm against plain fine-tuning.
PAIRS = (("finetuned", "standard"),)
# Settings that only the fine-tuned stages (or their attacks) read: the from-scratch model ignores them.
_FINETUNE_ONLY = ("head_lr", "backbone_lr", "freeze_stages", "dm_beta", "train_eps", "train_steps",
                  "robust_pretrained", "source_epochs")
# Settings that only the target stages read: the source models trained on the source task ignore them.
_TARGET_ONLY = ("shots", "target_steps", "standard_steps", "freeze_stages", "head_lr", "backbone_lr", "dm_beta")
SWEEP_FILE, REPORT_FILE, PLOT_FILE = "sweep.json", "sweep.md", "sweep.png"


def factor_names() -> dict[str, str]:
    """Every name a factor may be given by (its option without dashes, or its setting's name) -> the
    setting's name, for the settings that change training."""
    out = {}
    for s in settings(StudyConfig):
        if s.name in TRAINING_FIELDS and s.name not in NOT_FACTORS:
            out[s.option.lstrip("-")] = s.name
            out[s.name] = s.name
    return out


def parse_factors(texts: Sequence[str], parse: Callable[[str, str], Any]) -> list[tuple[str, tuple[Any, ...]]]:
    """``["shots=5,10,20", ...]`` -> ``[("shots", (5, 10, 20)), ...]``.

    Args:
        texts: the ``--vary`` values.
        parse: ``parse(setting name, text) -> value`` (the command line's parser of that setting).

    Raises:
        ValueError: no factor; a text without ``=``; an unknown factor; a setting that does not change
            training (it would only re-evaluate the same models); a list-valued setting; no value; a
            value given twice; a factor given twice.
    """
    if not texts:
        raise ValueError("--vary: give at least one factor, e.g. --vary shots=5,10,20")
    names = factor_names()
    evaluation = {s.option.lstrip("-"): s.name for s in settings(StudyConfig)}
    evaluation.update({s.name: s.name for s in settings(StudyConfig)})
    kinds = {s.name: s.kind for s in settings(StudyConfig)}
    out: list[tuple[str, tuple[Any, ...]]] = []
    for text in texts:
        factor, sep, values = text.partition("=")
        factor = factor.strip().lstrip("-")
        if not sep or not factor:
            raise ValueError(f"--vary: {text!r} is not FACTOR=v1,v2,... (e.g. shots=5,10,20)")
        if factor not in names:
            if factor in evaluation and evaluation[factor] not in NOT_FACTORS:
                raise ValueError(f"--vary: {factor} does not change training: the same models would only be "
                                 "re-evaluated; give it as an option of the sweep instead")
            if factor in evaluation:
                raise ValueError(f"--vary: {factor} is not a factor (choose the arms with --methods)")
            options = sorted({s.option.lstrip("-") for s in settings(StudyConfig)
                              if s.name in set(names.values()) and s.kind in (int, float, str)})
            raise ValueError(f"--vary: unknown factor {factor!r}; the factors are the settings that change training: "
                             + ", ".join(options))
        name = names[factor]
        if kinds[name] not in (int, float, str):
            raise ValueError(f"--vary: {factor} takes a list of values itself; it cannot be swept here")
        items = [v.strip() for v in values.split(",") if v.strip()]
        if not items:
            raise ValueError(f"--vary: {factor} has no values")
        parsed = tuple(parse(name, v) for v in items)
        if len(set(parsed)) != len(parsed):
            raise ValueError(f"--vary: {factor} lists a value twice: {items}")
        if any(name == n for n, _ in out):
            raise ValueError(f"--vary: {factor} is given twice")
        out.append((name, parsed))
    return out


def sweep_points(base: StudyConfig, factors: Sequence[tuple[str, Sequence[Any]]]) -> list[tuple[str, StudyConfig]]:
    """Every combination of the factors' values: ``(label, config)``, the label naming the point's folder.
    Each config is validated here, before anything trains.

    Raises:
        ValueError, TypeError: a value the study refuses (the message names its setting).
    """
    names = [name for name, _ in factors]
    out = []
    for values in itertools.product(*(v for _, v in factors)):
        assignment = dict(zip(names, values, strict=True))
        label = ",".join(f"{name}={_text(value)}" for name, value in assignment.items())
        try:
            out.append((label, dataclasses.replace(base, **assignment)))
        except (TypeError, ValueError) as error:
            raise type(error)(f"--vary {label}: {error}") from None
    return out


def run_sweep(base: StudyConfig, factors: Sequence[tuple[str, Sequence[Any]]], out: str | os.PathLike[str], *,
              fresh: bool = False, progress: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the study at every point of the sweep (reusing what is done), then write ``sweep.json``,
    ``sweep.md`` and (with matplotlib) ``sweep.png`` under ``out``.

    Returns:
        What ``sweep.json`` holds: the factors, and per point its settings, the paired differences of
        each compared pair (clean, robust at every eps, AutoAttack, expected robustness), whether it was
        reused, and its seconds.
    """
    out = check_output_dir(out, "out")
    points = sweep_points(base, factors)
    started = time.perf_counter()
    records = []
    for number, (label, config) in enumerate(points, start=1):
        folder = out / "points" / label
        previous = _finished(folder, config) if not fresh else None
        if previous is not None:
            log(f"point {number}/{len(points)} {label}: finished earlier, reused")
            results, reused, seconds = previous, True, 0.0
        else:
            log(f"point {number}/{len(points)} {label}")
            if not fresh:
                _link_shared_stages(out, points[: number - 1], label, config)
            t0 = time.perf_counter()
            results = run_study(config, folder, fresh=fresh, progress=progress, log=log)
            reused, seconds = False, time.perf_counter() - t0
            assert results is not None  # a sweep runs in one process
        records.append({"label": label, "values": {name: getattr(config, name) for name, _ in factors},
                        "reused": reused, "seconds": seconds, "comparisons": _gaps(results)})
    summary = {"factors": [{"name": n, "values": list(v)} for n, v in factors], "base": base.as_dict(),
               "points": records, "seconds": time.perf_counter() - started}
    atomic_write(out / SWEEP_FILE, lambda f: json.dump(summary, f, indent=2), binary=False)
    plot = _plot(summary, out / PLOT_FILE)
    atomic_write(out / REPORT_FILE, lambda f: f.write(render_sweep(summary, plot)), binary=False)
    return summary


def _finished(folder: Path, config: StudyConfig) -> dict[str, Any] | None:
    """The point's results when its ``results.json`` was written for exactly these settings."""
    path = folder / "results.json"
    if not path.is_file():
        return None
    try:
        results = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        return None
    return results if isinstance(results, dict) and results.get("config") == config.as_dict() else None


def stage_key(config: StudyConfig, stage: str) -> dict[str, Any]:
    """The training settings a stage's model depends on (two points with the same key train the same
    model for a seed): which arms are trained changes no model (the study's cache rule, ARM_CHOICE)."""
    ignored = set(ARM_CHOICE)
    if stage == "standard":
        ignored |= set(_FINETUNE_ONLY)
        if config.standard_steps is not None:
            ignored.add("target_steps")
    elif stage in SOURCE_STAGES:
        ignored |= set(_TARGET_ONLY)
    settings_ = config.as_dict()
    return {k: settings_[k] for k in TRAINING_FIELDS if k not in ignored}


def _link_shared_stages(out: Path, earlier: Sequence[tuple[str, StudyConfig]], label: str,
                        config: StudyConfig) -> None:
    """Link into the point's folder every stage an earlier point trained with the same key."""
    for seed in config.seeds:
        for stage in config.stages:
            here = out / "points" / label / f"seed{seed}" / stage
            if here.exists() or here.is_symlink():
                continue
            key = stage_key(config, stage)
            for other_label, other in earlier:
                there = out / "points" / other_label / f"seed{seed}" / stage
                if seed in other.seeds and stage in other.stages and stage_key(other, stage) == key and there.is_dir():
                    here.parent.mkdir(parents=True, exist_ok=True)
                    here.symlink_to(os.path.relpath(there.resolve(), here.parent.resolve()), target_is_directory=True)
                    break


def _gaps(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The point's paired comparisons of :data:`PAIRS` and of each robust arm against ``finetuned``."""
    compared = results["summary"].get("comparisons") or []
    wanted = set(PAIRS) | {(c["a"], c["b"]) for c in compared if c["b"] == "finetuned"}
    return [{k: c[k] for k in ("a", "b", "metric", "eps", "mean", "low", "high", "verdict") if k in c}
            for c in compared if (c["a"], c["b"]) in wanted]


def _text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


# ------------------------------------------------------------------------------------------- report


_METRIC_WORDS = {"clean_accuracy": "clean", "robust_accuracy": "robust", "autoattack_accuracy": "AutoAttack",
                 "expected_robustness": "expected robustness"}


def render_sweep(summary: dict[str, Any], plot: str | None = None) -> str:
    """``sweep.md``: per compared pair a table of the paired differences against the factors' values."""
    names = [f["name"] for f in summary["factors"]]
    lines = ["# Sweep: " + " x ".join(f"{f['name']} in {f['values']}" for f in summary["factors"]), "",
             f"{len(summary['points'])} points, {summary['seconds']:.0f} s in all (points reused from an earlier run "
             "cost nothing); each point is a whole study under `points/`, its report there. Every cell is the "
             "paired difference a - b over the same test images (mean over seeds) with its 95% bootstrap "
             "interval and the claim's verdict (see a point's report for the method).", ""]
    pairs = list(dict.fromkeys((c["a"], c["b"]) for p in summary["points"] for c in p["comparisons"]))
    for a, b in pairs:
        columns = list(dict.fromkeys((c["metric"], c["eps"]) for p in summary["points"] for c in p["comparisons"]
                                     if (c["a"], c["b"]) == (a, b)))
        lines += [f"## {a} - {b}", "",
                  "| " + " | ".join(names) + " | " + " | ".join(_column(m, e) for m, e in columns) + " | seconds |",
                  "|" + "---|" * len(names) + "---:|" * (len(columns) + 1)]
        for point in summary["points"]:
            cells = {(c["metric"], c["eps"]): c for c in point["comparisons"] if (c["a"], c["b"]) == (a, b)}
            row = [_text(point["values"][n]) for n in names]
            row += [_cell(cells.get(column)) for column in columns]
            row.append("reused" if point["reused"] else f"{point['seconds']:.0f}")
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    if not pairs:
        lines.append("(No paired comparisons: the points have no per-image records for these pairs.)")
    if plot:
        lines += [f"![the gaps against the factor]({plot})", ""]
    return "\n".join(lines)


def _column(metric: str, eps: float | None) -> str:
    return _METRIC_WORDS.get(metric, metric) + ("" if eps is None else f" @ {eps:.4g}")


def _cell(c: dict[str, Any] | None) -> str:
    if c is None:
        return "n/a"
    return f"{c['mean']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}] {c['verdict'].split(' (')[0]}"


def _plot(summary: dict[str, Any], path: Path) -> str | None:
    """The fine-tuned-minus-standard gaps at every point, with their intervals: against the factor's
    values when one numeric factor is swept, at evenly spaced, labelled positions otherwise (a factor
    such as the backbone, or a grid of several)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    factors = summary["factors"]
    numeric = len(factors) == 1 and all(isinstance(v, (int, float)) for v in factors[0]["values"])
    labels = [point["label"] for point in summary["points"]]
    figure, axis = plt.subplots(figsize=(6 if numeric else max(6.0, 0.9 * len(labels)), 4))
    series: dict[tuple[str, Any], list[tuple[float, float, float, float]]] = {}
    for position, point in enumerate(summary["points"]):
        at = float(point["values"][factors[0]["name"]]) if numeric else float(position)
        for c in point["comparisons"]:
            if (c["a"], c["b"]) == PAIRS[0]:
                series.setdefault((c["metric"], c["eps"]), []).append((at, c["mean"], c["low"], c["high"]))
    for (metric, eps), values in series.items():
        xs, means, lows, highs = zip(*sorted(values), strict=True)
        axis.errorbar(xs, means, yerr=[[m - lo for m, lo in zip(means, lows, strict=True)],
                                       [hi - m for m, hi in zip(means, highs, strict=True)]],
                      marker="o", capsize=3, label=_column(metric, eps))
    axis.axhline(0.0, color="grey", linewidth=0.8)
    if numeric:
        axis.set_xlabel(factors[0]["name"])
    else:
        axis.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=7)
        axis.set_xlabel(", ".join(f["name"] for f in factors))
    axis.set_ylabel("finetuned - standard")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path.name


__all__ = ["PAIRS", "factor_names", "parse_factors", "render_sweep", "run_sweep", "stage_key", "sweep_points"]
