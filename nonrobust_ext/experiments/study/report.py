"""``report.md`` from ``results.json`` alone: every number in it is a value of the results rounded
to 3 places, and every sentence under a table is chosen by the verdict rules of :mod:`.summary`
comparing those values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .config import SOURCE_STAGES, STAGES, TARGET_STAGES
from .measure import RANK_SHARES
from .plots import PLOTS
from .summary import ABOVE, BELOW, WITHIN, attacked_verdicts, claim, present, verdict_over_eps, versus

# A run's best validation accuracy in its last LATE_BEST share of steps may not have levelled off yet.
LATE_BEST = 0.2


def _eps(value: float) -> str:
    """An eps as the report prints it: 3 decimals, and as k/255 when it is one (8/255 = 0.031)."""
    k = round(value * 255)
    return f"{value:.3f} ({k}/255)" if k and abs(value * 255 - k) < 1e-6 else f"{value:.3f}"


def _fmt(stat: dict[str, float] | None) -> str:
    return "n/a" if stat is None else f"{stat['mean']:.3f} ± {stat['std']:.3f}"


def render_report(results: dict[str, Any], plots: Sequence[str] = ()) -> str:
    """``report.md`` from ``results`` alone: every number in it is a value of ``results`` rounded to 3
    places, and every sentence under a table is chosen by comparing those values (a gap no larger than
    the seed-to-seed spread is called that). ``plots`` are the PNG files written next to it."""
    cfg, summary = results["config"], results["summary"]
    eps = cfg["eval_eps"]
    seeds = len(cfg["seeds"])
    attack = cfg["eval_attack"].upper()
    targets, sources = present(TARGET_STAGES, summary), present(SOURCE_STAGES, summary)
    if cfg["pretrained"] is None:
        source = f"source classes {cfg['source_classes']} (standing in for ImageNet)"
    else:
        robust = (f"robust ImageNet weights `{cfg['robust_pretrained']}`" if cfg["robust_pretrained"]
                  else "no robust ImageNet weights, so the robust models are left out")
        source = f"source: ImageNet weights `{cfg['pretrained']}` and {robust}"
    lines = [
        "# Does pretraining transfer non-robustness? (nonrobust_ext study)",
        "",
        f"Dataset `{cfg['dataset']}`: {source}; target classes {cfg['target_classes']} with {cfg['shots']} "
        f"training images per class; backbone `{cfg['backbone']}`; {seeds} seed(s), mean ± standard deviation over "
        f"seeds. Robust accuracy: L-inf {attack}"
        f"{'-' + str(cfg['eval_steps']) if cfg['eval_attack'] != 'fgsm' else ''}; adversarial training and DM at "
        f"eps {_eps(cfg['train_eps'])}. A difference no larger than the larger of the two standard deviations is "
        "called *within the seed-to-seed spread*: this study cannot tell such models apart."
        + (" With one seed there is no spread (every standard deviation is 0), so every gap is called a difference: "
           "run several seeds before trusting a verdict." if seeds == 1 else ""),
        "",
        "## Summary",
        "",
        *_summary_findings(summary, eps),
        "",
        f"## Target task: accuracy (clean, then under {attack} at each eps; APGD-CE at the largest)",
        "",
        "| model | " + " | ".join(f"eps {e:.3f}" for e in eps) + f" | APGD eps {max(eps):.3f} |",
        "|---|" + "---:|" * (len(eps) + 1),
    ]
    for stage in targets:
        apgd = summary[stage]["apgd_robust_accuracy"]
        cells = [_fmt(s) for s in summary[stage]["robust_accuracy"]] + [_fmt(apgd) if apgd else "not run"]
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    lines += ["", _paragraph(_accuracy_findings(summary, eps))]
    if sources:
        lines += ["", "## Source task (the pretrained models on held-out source images)", "",
                  "| model | " + " | ".join(f"eps {e:.3f}" for e in eps) + " |", "|---|" + "---:|" * len(eps)]
        for stage in sources:
            lines.append(f"| {stage} | " + " | ".join(_fmt(s) for s in summary[stage]["robust_accuracy"]) + " |")
        lines += ["", _paragraph(_source_findings(summary, eps))]
    lines += ["", "## True-label confidence (softmax probability of the true label)", "",
              "| model | " + " | ".join(f"eps {e:.3f}" for e in eps) + " |", "|---|" + "---:|" * len(eps)]
    for stage in targets:
        lines.append(f"| {stage} | " + " | ".join(_fmt(s) for s in summary[stage]["adversarial_confidence"]) + " |")
    lines += ["", _paragraph(_pairwise(summary, "finetuned", "standard", "adversarial_confidence", eps,
                                       "mean true-label probability"))]
    lines += _training_section(summary, cfg)
    lines += _analysis_sections(summary["analyses"], cfg)
    if plots:
        lines += ["", "## Plots", ""] + [f"![{PLOTS[name]}]({name})" for name in plots] + [""]
    else:
        lines += ["", "(No plots: matplotlib is not installed; `pip install 'nonrobust_ext[plot]'`.)", ""]
    return "\n".join(lines)


def _paragraph(sentences: Sequence[str]) -> str:
    return " ".join(sentences) if sentences else "(Not enough models for this comparison.)"


def _table(title: str, note: str, columns: list[str], rows: dict[str, list[dict[str, float] | None]],
           findings: Sequence[str] = ()) -> list[str]:
    out = ["", f"## {title}", "", note, "", "| | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    out += [f"| {name} | " + " | ".join(_fmt(v) for v in values) + " |" for name, values in rows.items()]
    return out + ["", _paragraph(findings)]


def _compare(what: str, a: str, sa: dict[str, float], b: str, sb: dict[str, float]) -> str:
    """One sentence: ``a``'s ``what`` against ``b``'s, the verdict from :func:`.summary.versus`."""
    return f"{what}: {a} {sa['mean']:.3f} is {versus(sa, sb)} {b}'s {sb['mean']:.3f}."


def _pairwise(summary: dict[str, Any], a: str, b: str, key: str, eps: list[float], what: str) -> list[str]:
    """``a`` against ``b`` on ``summary[...][key]`` at every eps of the grid."""
    if a not in summary or b not in summary:
        return []
    return [_compare(f"{what[0].upper()}{what[1:]} at eps {e:.3f}", a, summary[a][key][k], b, summary[b][key][k])
            for k, e in enumerate(eps)]


# The robust fine-tuning arms from the standard pretrained weights, as the summary names them.
ROBUST_ARMS = {"adv_finetuned": "Adversarial (PGD-AT) fine-tuning", "dm_finetuned": "DM fine-tuning"}


def _summary_findings(summary: dict[str, Any], eps: list[float]) -> list[str]:
    """The paper's claims, each with what this run's numbers say about it."""
    out = []
    if "finetuned" in summary and "standard" in summary:
        ft, st = summary["finetuned"], summary["standard"]
        clean_word = claim(versus(ft["clean_accuracy"], st["clean_accuracy"]), ABOVE)
        attacked = attacked_verdicts(summary, "finetuned", "standard", eps)
        out.append(f"- *Fine-tuning from pretrained weights gives a more accurate model* (fine-tuned vs standard, "
                   f"clean): {clean_word} ({ft['clean_accuracy']['mean']:.3f} vs {st['clean_accuracy']['mean']:.3f}).")
        if attacked:
            out.append(f"- *... but a less robust one* (fine-tuned below standard under attack): "
                       f"{verdict_over_eps(attacked, BELOW)}.")
        analyses = summary["analyses"]
        inherited = analyses["source_feature_attack_accuracy"].get("pretrained")
        if inherited and "finetuned" in inherited and "standard" in inherited:
            word = claim(versus(inherited["finetuned"], inherited["standard"]), BELOW)
            out.append(f"- *The non-robustness is inherited from the pretrained features* (perturbations of the "
                       f"pretrained model's features hurt the fine-tuned model more than the standard one): {word} "
                       f"({inherited['finetuned']['mean']:.3f} vs {inherited['standard']['mean']:.3f} accuracy kept).")
    for arm, method in ROBUST_ARMS.items():
        out += _remedy_finding(summary, arm, "finetuned", eps,
                               f"{method} from the same pretrained weights removes the non-robustness",
                               f"{arm} above finetuned under attack")
    out += _remedy_finding(summary, "dm", "robust_finetuned", eps, "Robust pretraining plus DM fine-tuning repairs it",
                           "DM above robust fine-tuning under attack")
    return out or ["- (The comparisons need the fine-tuned and the standard model.)"]


def _remedy_finding(summary: dict[str, Any], remedy: str, baseline: str, eps: list[float], claim_text: str,
                    comparison: str) -> list[str]:
    """The claim that ``remedy`` is more robust than ``baseline``, judged over the eps grid, with
    ``remedy``'s clean accuracy against the fine-tuned model's; nothing when a model is missing or the
    grid has no eps > 0."""
    if remedy not in summary or baseline not in summary or "finetuned" not in summary:
        return []
    attacked = attacked_verdicts(summary, remedy, baseline, eps)
    if not attacked:
        return []
    robust, ft = summary[remedy]["clean_accuracy"], summary["finetuned"]["clean_accuracy"]
    return [f"- *{claim_text}* ({comparison}): {verdict_over_eps(attacked, ABOVE)}; its clean accuracy "
            f"{robust['mean']:.3f} is {versus(robust, ft)} the fine-tuned model's {ft['mean']:.3f}."]


def _accuracy_findings(summary: dict[str, Any], eps: list[float]) -> list[str]:
    out = _pairwise(summary, "finetuned", "standard", "robust_accuracy", eps, "accuracy")
    if "finetuned" in summary and "standard" in summary and summary["finetuned"]["apgd_robust_accuracy"]:
        out.append(_compare(f"APGD-CE at eps {max(eps):.3f}", "finetuned", summary["finetuned"]["apgd_robust_accuracy"],
                            "standard", summary["standard"]["apgd_robust_accuracy"]))
    k = len(eps) - 1
    for a, b in (("adv_finetuned", "finetuned"), ("dm_finetuned", "finetuned"), ("robust_finetuned", "finetuned"),
                 ("dm", "robust_finetuned")):
        if a in summary and b in summary:
            out.append(_compare(f"At eps {eps[k]:.3f}", a, summary[a]["robust_accuracy"][k], b,
                                summary[b]["robust_accuracy"][k]))
    if "dm" in summary and "finetuned" in summary:
        out.append(_compare("Clean", "dm", summary["dm"]["clean_accuracy"], "finetuned",
                            summary["finetuned"]["clean_accuracy"]))
    return out


def _source_findings(summary: dict[str, Any], eps: list[float]) -> list[str]:
    if "pretrained" not in summary or "robust_pretrained" not in summary:
        return []
    k = len(eps) - 1
    robust, plain = summary["robust_pretrained"], summary["pretrained"]
    clean = (robust["clean_accuracy"], plain["clean_accuracy"])
    attacked = (robust["robust_accuracy"][k], plain["robust_accuracy"][k])
    return [_compare("Clean source accuracy", "robust_pretrained", clean[0], "pretrained", clean[1]),
            _compare(f"At eps {eps[k]:.3f}", "robust_pretrained", attacked[0], "pretrained", attacked[1]),
            "Adversarial training on the source trades clean accuracy for robustness where the first is below and "
            "the second above." if versus(*clean) == BELOW and versus(*attacked) == ABOVE else
            "The robust source model does not show the usual trade (less clean accuracy, more robustness) here."]


def _training_section(summary: dict[str, Any], cfg: dict[str, Any]) -> list[str]:
    records = {s: summary[s]["training"] for s in STAGES if s in summary and summary[s].get("training")}
    if not records:
        return []
    rule = ("its last step (the same fixed budget for every model)" if cfg.get("select", "last") == "last"
            else "its best validation accuracy")
    ended_below = [s for s, r in records.items() if versus(r["val_accuracy_last"], r["val_accuracy_best"]) == BELOW]
    late = [s for s, r in records.items() if r["best_step_fraction"]["mean"] > 1 - LATE_BEST]
    findings = _plateau_findings(records, cfg) + [
        f"Each model is used as it was at {rule}. Validation images are carved from the training images of "
        "each task; the test images never choose anything.",
        f"Ended below its best validation accuracy by more than the spread: {', '.join(ended_below) or 'none'}.",
        f"Best validation accuracy in the last {LATE_BEST:.0%} of the run, so possibly still improving: "
        f"{', '.join(late) or 'none'}.",
    ]
    return _table("Training: validation accuracy", "Clean accuracy on the validation split at the last checkpoint, "
                  "at the best one, and where in the run (share of its steps) the best one was.",
                  ["last", "best", "best at"],
                  {s: [r["val_accuracy_last"], r["val_accuracy_best"], r["best_step_fraction"]]
                   for s, r in records.items()}, findings)


def _plateau_findings(records: dict[str, Any], cfg: dict[str, Any]) -> list[str]:
    """Whether the from-scratch baseline reached a plateau: its validation accuracy over the last third
    of its run against its best before that (the curve is in ``validation.png``)."""
    curve = (records.get("standard") or {}).get("val_curve")
    if not curve or len(curve["val_accuracy"]) < 3:
        return []
    steps = [s["mean"] for s in curve["step"]]
    accuracy = curve["val_accuracy"]
    last_third = [a for s, a in zip(steps, accuracy, strict=True) if s > steps[-1] * 2 / 3]
    before = [a for s, a in zip(steps, accuracy, strict=True) if s <= steps[-1] * 2 / 3]
    if not last_third or not before:
        return []
    late, early = max(last_third, key=lambda a: a["mean"]), max(before, key=lambda a: a["mean"])
    word = versus(late, early)
    verdict = ("still rising: the baseline may be undertrained, give it more --standard-steps" if word == ABOVE
               else "flat: it reached its plateau" if word == WITHIN else "falling: it overfits late")
    return [f"The standard model (from scratch, {int(steps[-1])} steps) is the paper's baseline: its best validation "
            f"accuracy in the last third of its run ({late['mean']:.3f}) against its best before "
            f"({early['mean']:.3f}) is {verdict}."]


def _get(table: dict[str, Any], *keys: str) -> Any:
    """``table[k0][k1]...`` or ``None`` where a key is missing (a model that was left out)."""
    for key in keys:
        if not isinstance(table, dict) or key not in table:
            return None
        table = table[key]
    return table


def _analysis_sections(a: dict[str, Any], cfg: dict[str, Any]) -> list[str]:
    eps = a["eps"]["mean"]
    layers = a["layers"]
    radii = cfg["frequency_radii"]
    targets = list(a["robust_usefulness_share"])
    lines = _table(
        "Layer-wise linear CKA with the source models",
        "On target test images; 1 = the same representation up to rotation and scale.",
        layers, {pair: [v[layer] for layer in layers] for pair, v in a["cka"].items()},
        _cka_findings(a),
    )
    lines += _table(
        f"Accuracy under attacks on the source models' features (eps {eps:.3f})",
        "Rows: the source model whose embedding the perturbation pushes away (feature PGD, no labels); "
        "columns: the target model evaluated on it.",
        targets, {src: [v[t] for t in targets] for src, v in a["source_feature_attack_accuracy"].items()},
        _source_feature_findings(a),
    )
    lines += _table(
        f"Transfer between the target models (PGD at eps {eps:.3f})",
        "Rows: the model the attack is crafted on; columns: the model evaluated; the diagonal is white-box.",
        targets, {src: [v[t] for t in targets] for src, v in a["transfer_accuracy"].items()},
        _transfer_findings(a),
    )
    lines += _table(
        "Accuracy on the low- and high-frequency parts of the test images",
        "Radial FFT split at each radius r: low keeps frequencies below r, high the rest.",
        [f"low r={r}" for r in radii] + [f"high r={r}" for r in radii],
        {m: v["low_accuracy"] + v["high_accuracy"] for m, v in a["frequency"].items()},
        _frequency_findings(a, radii),
    )
    split = int(a["spectrum_split_radius"]["mean"])
    lines += _table(
        "Where the PGD perturbations put their power",
        f"Share of each model's normalised radial perturbation spectrum at radii {split} and above (the upper "
        "half of the radii; the whole spectrum is in `spectra.png`).",
        ["high-frequency share"], {m: [v] for m, v in a["perturbation_high_frequency_share"].items()},
        _pair_findings(a["perturbation_high_frequency_share"], "High-frequency share of the perturbations"),
    )
    ranking = a["feature_ranking"]
    lines += _table(
        "Feature-robustness ranking (Ilyas et al.)",
        "The (class, penultimate feature) pairs useful on clean inputs, ranked by clean usefulness: how many "
        "there are, the fraction still useful under PGD among the most useful "
        + ", ".join(f"{q:.0%}" for q in RANK_SHARES) + " of them, and the share of the total usefulness "
        "that survives the attack.",
        ["useful pairs"] + [f"robust in top {q:.0%}" for q in RANK_SHARES] + ["robust share"],
        {m: [r["num_useful"], *(r["robust_fraction_top"] or [None] * len(RANK_SHARES)),
             a["robust_usefulness_share"][m]] for m, r in ranking.items()},
        _ranking_findings(a),
    )
    return lines


def _pair_findings(values: dict[str, Any], what: str, a: str = "finetuned", b: str = "standard") -> list[str]:
    if values.get(a) is None or values.get(b) is None:
        return []
    return [_compare(what, a, values[a], b, values[b])]


def _cka_findings(a: dict[str, Any]) -> list[str]:
    first, last = a["layers"][0], a["layers"][-1]
    out = []
    for layer in (first, last) if first != last else (last,):
        ft, st = _get(a["cka"], "pretrained~finetuned", layer), _get(a["cka"], "pretrained~standard", layer)
        if ft and st:
            out.append(_compare(f"CKA with the pretrained model at {layer}", "finetuned", ft, "standard", st))
    dm, rf = _get(a["cka"], "robust_pretrained~dm", last), _get(a["cka"], "robust_pretrained~robust_finetuned", last)
    if dm and rf:
        out.append(_compare(f"CKA with the robust pretrained model at {last}", "dm", dm, "robust_finetuned", rf))
    if out:
        out.append("Higher CKA with the source model means more of its representation is kept.")
    return out


def _source_feature_findings(a: dict[str, Any]) -> list[str]:
    table = a["source_feature_attack_accuracy"]
    out = _pair_findings(table.get("pretrained", {}), "Accuracy kept under attacks on the pretrained model's features")
    out += _pair_findings(table.get("robust_pretrained", {}),
                          "Accuracy kept under attacks on the robust pretrained model's features",
                          "dm", "robust_finetuned")
    if out:
        out.append("A model that keeps less accuracy relies more on the features the source model is sensitive to.")
    return out


def _transfer_findings(a: dict[str, Any]) -> list[str]:
    table = a["transfer_accuracy"]
    out = []
    ft_on_st, st_on_ft = _get(table, "finetuned", "standard"), _get(table, "standard", "finetuned")
    if ft_on_st and st_on_ft:
        out.append(f"Attacks crafted on the standard model leave the fine-tuned model {st_on_ft['mean']:.3f} accuracy, "
                   f"{versus(st_on_ft, ft_on_st)} the {ft_on_st['mean']:.3f} that attacks crafted on the fine-tuned "
                   "model leave the standard one.")
    for target in ("dm", "robust_finetuned"):
        column = {src: row[target] for src, row in table.items() if src != target and target in row}
        if column:
            weakest = min(column, key=lambda s: column[s]["mean"])
            out.append(f"The {target} model keeps at least {column[weakest]['mean']:.3f} under any transferred attack "
                       f"(the strongest crafted on {weakest}).")
    return out


def _frequency_findings(a: dict[str, Any], radii: list[float]) -> list[str]:
    low, high = radii[0], radii[-1]
    freq = a["frequency"]
    out = []
    if "finetuned" in freq and "standard" in freq:
        out.append(_compare(f"Low-pass accuracy (r={low})", "finetuned", freq["finetuned"]["low_accuracy"][0],
                            "standard", freq["standard"]["low_accuracy"][0]))
        out.append(_compare(f"High-pass accuracy (r={high})", "finetuned", freq["finetuned"]["high_accuracy"][-1],
                            "standard", freq["standard"]["high_accuracy"][-1]))
    chance = a["chance_accuracy"]["mean"]
    above = [m for m, v in freq.items() if v["high_accuracy"][-1]["mean"] - v["high_accuracy"][-1]["std"] > chance]
    out.append(f"Chance is {chance:.3f}. Above chance on the high-pass images (r={high}) by more than the spread, "
               f"i.e. able to classify from high frequencies alone: {', '.join(above) or 'none'}.")
    return out


def _ranking_findings(a: dict[str, Any]) -> list[str]:
    ranking = a["feature_ranking"]
    out = []
    for k, q in enumerate(RANK_SHARES):
        top = {m: r["robust_fraction_top"][k] if r["robust_fraction_top"] else None for m, r in ranking.items()}
        out += _pair_findings(top, f"Robust fraction of the top {q:.0%} most useful pairs")
    out += _pair_findings(a["robust_usefulness_share"], "Share of the usefulness that survives attack")
    return out

__all__ = ["LATE_BEST", "render_report"]
