"""``report.md`` from ``results.json`` alone: every number in it is a value of the results rounded
to 3 places. The claims' verdicts are those of the paired comparisons stored in the summary
(:func:`.summary.comparisons`): each claim sentence gives the difference and its confidence
interval. Sentences about numbers without per-image records (source models, analyses, training)
describe them with :func:`.summary.versus` and judge no claim.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .config import SOURCE_STAGES, STAGES, TARGET_STAGES
from .measure import RANK_SHARES
from .plots import PLOTS
from .summary import ABOVE, BELOW, PGD_AT_VARIANTS, WITHIN, present, versus

# A run's best validation accuracy in its last LATE_BEST share of steps may not have levelled off yet.
LATE_BEST = 0.2


def _eps(value: float) -> str:
    """An eps as the report prints it: 3 decimals, and as k/255 when it is one (8/255 = 0.031)."""
    k = round(value * 255)
    return f"{value:.3f} ({k}/255)" if k and abs(value * 255 - k) < 1e-6 else f"{value:.3f}"


def _fmt(stat: dict[str, float] | None, places: int = 3) -> str:
    return "n/a" if stat is None else f"{stat['mean']:.{places}f} ± {stat['std']:.{places}f}"


def render_report(results: dict[str, Any], plots: Sequence[str] = ()) -> str:
    """``report.md`` from ``results`` alone: every number in it is a value of ``results`` rounded to 3
    places; every claim is judged by its paired comparison (difference and interval stated), and
    results without per-image records (older ones) are rendered without verdicts. ``plots`` are the
    PNG files written next to it."""
    cfg, summary = results["config"], results["summary"]
    compared = summary.get("comparisons") or []
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
        f"{'-' + str(cfg['eval_steps']) if cfg['eval_attack'] != 'fgsm' else ''} on the eps grid; "
        f"{_headline_settings(cfg)}; adversarial training and DM at eps {_eps(cfg['train_eps'])}"
        + (f"; the WiSE-FT arm mixes the weights at alpha {cfg['wise_alpha']:.3f}" if "wise_finetuned" in targets
           else "") + ".",
        "",
        _method(compared, seeds),
        "",
        "## Summary",
        "",
        *_summary_findings(summary, compared),
        "",
        f"## Target task: accuracy (clean, then under {attack} at each eps; AutoAttack at the largest)",
        "",
        *_accuracy_table(summary, targets, eps),
        "",
        "### Paired comparisons",
        "",
        *_comparison_table(compared),
    ]
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
    return "\n".join(lines + _provenance(results))


def _provenance(results: dict[str, Any]) -> list[str]:
    """Where and how long the run took (results of older versions recorded no machine)."""
    env = results.get("environment")
    if not env:
        return []
    where = env["gpu"] or f"{env['cpu']} ({env['threads']} threads, CPU kernels {env['cpu_isa']})"
    processes = results.get("world_size", 1)
    return [f"Computed in {results['seconds'] / 60:.0f} min on {where}, device {env['device']}"
            + (f", {processes} processes" if processes > 1 else "")
            + f"; nonrobust_ext {env['nonrobust_ext']}, torch {env['torch']}, Python {env['python']}. "
            "Training is not bit-identical across machines, thread counts and versions: a rerun elsewhere "
            "gives somewhat different models, and the intervals are what should carry over.", ""]


def _paragraph(sentences: Sequence[str]) -> str:
    return " ".join(sentences) if sentences else "(Not enough models for this comparison.)"


def _table(title: str, note: str, columns: list[str], rows: dict[str, list[dict[str, float] | None]],
           findings: Sequence[str] = ()) -> list[str]:
    out = ["", f"## {title}", "", note, "", "| | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    out += [f"| {name} | " + " | ".join(_fmt(v) for v in values) + " |" for name, values in rows.items()]
    return out + ["", _paragraph(findings)]


def _method(compared: list[dict[str, Any]], seeds: int) -> str:
    """How the claims are judged: the paired bootstrap, on how many images, and its limits."""
    if not compared:
        return ("These results have no per-image records, so no claim is judged here: the tables give mean ± "
                "standard deviation over seeds only. Rerun the study with this version for paired comparisons "
                "with confidence intervals.")
    first = compared[0]
    images = sorted({n for c in compared for n in c["images"]})
    per_seed = f"{images[0]}" if len(images) == 1 else f"{images[0]} to {images[-1]}"
    text = (f"Claims are judged by paired comparisons: every seed evaluates all target models on the same "
            f"{per_seed} test images, so each claim rests on the per-image differences a - b (correct or robust "
            "0/1; for the expected robustness, min(r, eps) / eps with r the minimal L-inf radius that fools the "
            "model, FMN). The difference is the mean over seeds of each seed's mean difference. Its "
            f"{first['level']:.0%} interval is a hierarchical percentile bootstrap ({first['resamples']} resamples: "
            "the seeds drawn with replacement, then within each drawn seed its images with replacement). A claim "
            "holds when the interval excludes 0 on the claimed side, is reversed when it excludes 0 on the other "
            "side, and is undecided otherwise. Each interval covers one comparison: with this many comparisons a "
            "few may exclude 0 by chance. Mean ± standard deviation over seeds in the tables only describe the "
            "numbers; sentences comparing numbers without per-image records (source models, analyses, training) "
            "call a gap no larger than the larger standard deviation *within the seed-to-seed spread* and judge "
            "no claim.")
    if seeds == 1 or not first["seed_level"]:
        text += (" With one seed only the images are resampled: the intervals ignore seed-to-seed variation "
                 "(training runs, splits), so they are too narrow for claims about the methods; run several seeds.")
    return text


# How the comparisons' metrics read in a sentence.
METRIC_WORDS = {"clean_accuracy": "clean accuracy", "robust_accuracy": "robust accuracy",
                "autoattack_accuracy": "AutoAttack accuracy", "expected_robustness": "expected robustness"}


def _scope(c: dict[str, Any]) -> str:
    """What an interval is over: ``95% CI over 3 seeds x 500 images``."""
    images = sorted(set(c["images"]))
    count = str(images[0]) if len(images) == 1 else "/".join(str(n) for n in c["images"])
    seeds = f"{c['seeds']} seed{'s' if c['seeds'] > 1 else ''}"
    text = f"{c['level']:.0%} CI over {seeds} x {count} images"
    return text if c["seed_level"] else text + ", ignoring seed-to-seed variation"


def _difference(c: dict[str, Any]) -> str:
    """``a minus b <metric> [at eps]: d [low, high] (95% CI over ...)``."""
    at = "" if c["eps"] is None else f" at {_eps(c['eps'])}"
    return (f"{c['a']} minus {c['b']} {METRIC_WORDS[c['metric']]}{at}: {c['mean']:.3f} "
            f"[{c['low']:.3f}, {c['high']:.3f}] ({_scope(c)})")


def _claim(summary: dict[str, Any], compared: list[dict[str, Any]], claim_text: str, a: str, b: str, *,
           clean: bool) -> list[str]:
    """The claim ``claim_text`` about ``a`` against ``b`` (on clean accuracy, or under attack) with the
    comparisons that judge it: inline when one, nested when several; "not judged" when the results
    hold none (no per-image records, or no attacked eps); nothing when a model is missing."""
    if a not in summary or b not in summary:
        return []
    sentences = [f"{_difference(c)}: the claim {c['verdict']}." for c in compared
                 if c["a"] == a and c["b"] == b and (c["metric"] == "clean_accuracy") == clean]
    if not sentences:
        why = "these results have no per-image records" if not compared else "no paired comparison for it here"
        return [f"- {claim_text}: not judged, {why}."]
    if len(sentences) == 1:
        return [f"- {claim_text}: {sentences[0]}"]
    return [f"- {claim_text}:"] + [f"  - {s}" for s in sentences]


def _accuracy_table(summary: dict[str, Any], targets: list[str], eps: list[float]) -> list[str]:
    """The target models' accuracy, mean ± std over seeds; AutoAttack and expected-robustness
    columns where some model has them."""
    top = _eps(max(eps))
    extra = [(key, title) for key, title in (("autoattack_accuracy", f"AutoAttack {top}"),
                                             ("expected_robustness", f"expected robustness 0..{top}"),
                                             ("median_radius", "median L-inf radius (FMN)"))
             if any(summary[s].get(key) for s in targets)]
    out = ["| model | " + " | ".join([f"eps {e:.3f}" for e in eps] + [t for _, t in extra]) + " |",
           "|---|" + "---:|" * (len(eps) + len(extra))]
    for stage in targets:
        row = summary[stage]
        cells = [_fmt(s) for s in row["robust_accuracy"]]
        cells += [(_fmt(row[key], 4 if key == "median_radius" else 3) if row.get(key) else _missing(key))
                  for key, _ in extra]
        out.append(f"| {stage} | " + " | ".join(cells) + " |")
    return out


def _headline_settings(cfg: dict[str, Any]) -> str:
    """How AutoAttack and the robustness curves ran (older results.json files recorded neither)."""
    parts = []
    steps = cfg.get("autoattack_steps")
    if steps:
        standard = steps == 100 and cfg.get("autoattack_queries") == 5000
        parts.append(f"AutoAttack ({'the standard evaluation' if standard else 'a reduced budget'}: APGD-CE, "
                     f"APGD-T and FAB-T with {steps} steps, Square with {cfg.get('autoattack_queries')} queries) on "
                     f"{cfg.get('autoattack_samples')} of each seed's test images at the largest eps")
    if cfg.get("curve_steps"):
        parts.append(f"robustness curves from FMN-{cfg['curve_steps']} minimal L-inf radii on "
                     f"{cfg.get('curve_samples')} images")
    return "; ".join(parts) if parts else "no AutoAttack or robustness curves in these results"


def _missing(key: str) -> str:
    """What an empty cell of the accuracy table means."""
    return "none found (half the images or more)" if key == "median_radius" else "not run"


def _comparison_table(compared: list[dict[str, Any]]) -> list[str]:
    """Every paired comparison: the difference a - b, its interval and the claim's verdict."""
    if not compared:
        return ["(No per-image records: no paired comparisons.)"]
    out = ["| a - b | metric | eps | difference | CI | claim: a is ... b | verdict |",
           "|---|---|---:|---:|---|---|---|"]
    for c in compared:
        at = "-" if c["eps"] is None else _eps(c["eps"])
        out.append(f"| {c['a']} - {c['b']} | {METRIC_WORDS[c['metric']]} | {at} | {c['mean']:.3f} | "
                   f"[{c['low']:.3f}, {c['high']:.3f}] | {c['wanted']} | {c['verdict']} |")
    return out + ["", f"Intervals: {_scope(compared[0])}."]


def _compare(what: str, a: str, sa: dict[str, float], b: str, sb: dict[str, float]) -> str:
    """One descriptive sentence: ``a``'s ``what`` against ``b``'s in :func:`.summary.versus`'s words."""
    return f"{what}: {a} {sa['mean']:.3f} is {versus(sa, sb)} {b}'s {sb['mean']:.3f}."


def _pairwise(summary: dict[str, Any], a: str, b: str, key: str, eps: list[float], what: str) -> list[str]:
    """``a`` against ``b`` on ``summary[...][key]`` at every eps of the grid."""
    if a not in summary or b not in summary:
        return []
    return [_compare(f"{what[0].upper()}{what[1:]} at eps {e:.3f}", a, summary[a][key][k], b, summary[b][key][k])
            for k, e in enumerate(eps)]


# The robust fine-tuning arms from the standard pretrained weights, as the summary names them.
ROBUST_ARMS = {"adv_finetuned": "Adversarial (PGD-AT) fine-tuning", "dm_finetuned": "DM fine-tuning",
               "trades_finetuned": "TRADES fine-tuning",
               "lpft_finetuned": "PGD-AT fine-tuning after a linear probe (LP-FT)",
               "epssched_finetuned": "PGD-AT fine-tuning with epsilon scheduling",
               "frozenbn_finetuned": "PGD-AT fine-tuning with the pretrained BatchNorm statistics",
               "wise_finetuned": "WiSE-FT (plain fine-tuning's weights mixed with the pretrained ones, no training)"}


def _summary_findings(summary: dict[str, Any], compared: list[dict[str, Any]]) -> list[str]:
    """The paper's claims, each with the paired comparisons that judge it in this run."""
    out = _claim(summary, compared, "*Fine-tuning from pretrained weights gives a more accurate model* (finetuned "
                 "above standard, clean)", "finetuned", "standard", clean=True)
    out += _claim(summary, compared, "*... but a less robust one* (finetuned below standard under attack)",
                  "finetuned", "standard", clean=False)
    inherited = _get(summary, "analyses", "source_feature_attack_accuracy", "pretrained")
    if inherited and "finetuned" in inherited and "standard" in inherited:
        out.append(f"- *The non-robustness is inherited from the pretrained features* (perturbations of the "
                   f"pretrained model's features hurt the fine-tuned model more than the standard one): not judged, "
                   f"this analysis has no per-image records ({inherited['finetuned']['mean']:.3f} vs "
                   f"{inherited['standard']['mean']:.3f} accuracy kept, mean over seeds).")
    for arm, method in ROBUST_ARMS.items():
        out += _remedy_finding(summary, compared, arm, "finetuned",
                               f"{method} from the same pretrained weights removes the non-robustness")
    for variant in PGD_AT_VARIANTS:
        out += _claim(summary, compared, f"*{ROBUST_ARMS[variant]} is more robust than plain PGD-AT fine-tuning* "
                      f"({variant} above adv_finetuned under attack: what the change itself buys)", variant,
                      "adv_finetuned", clean=False)
    out += _remedy_finding(summary, compared, "dm", "robust_finetuned",
                           "Robust pretraining plus DM fine-tuning repairs it", clean_baseline="finetuned")
    return out or ["- (The comparisons need the fine-tuned and the standard model.)"]


def _remedy_finding(summary: dict[str, Any], compared: list[dict[str, Any]], remedy: str, baseline: str,
                    claim_text: str, clean_baseline: str | None = None) -> list[str]:
    """The claim that ``remedy`` is more robust than ``baseline``, and that it costs clean accuracy
    against ``clean_baseline`` (the baseline by default); nothing when a model is missing."""
    clean_baseline = clean_baseline or baseline
    return (_claim(summary, compared, f"*{claim_text}* ({remedy} above {baseline} under attack)", remedy, baseline,
                   clean=False)
            + _claim(summary, compared, f"*... at a cost in clean accuracy* ({remedy} below {clean_baseline}, clean)",
                     remedy, clean_baseline, clean=True))


def _source_findings(summary: dict[str, Any], eps: list[float]) -> list[str]:
    """The source models' numbers side by side: they have no per-image records, so no verdict."""
    if "pretrained" not in summary or "robust_pretrained" not in summary:
        return []
    k = len(eps) - 1
    robust, plain = summary["robust_pretrained"], summary["pretrained"]
    return [f"Clean source accuracy: robust_pretrained {robust['clean_accuracy']['mean']:.3f}, pretrained "
            f"{plain['clean_accuracy']['mean']:.3f}; at eps {eps[k]:.3f}: robust_pretrained "
            f"{robust['robust_accuracy'][k]['mean']:.3f}, pretrained {plain['robust_accuracy'][k]['mean']:.3f} "
            "(means over seeds; the source models have no per-image records, so no verdict)."]


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
    universal = a.get("uap_fooling_rate")  # older results.json files have none
    if universal:
        models = [stage for stage in STAGES if any(stage in row for row in universal.values())]
        lines += _table(
            f"Universal perturbations crafted on the source models (eps {eps:.3f})",
            "Rows: the source model the one perturbation for all images is crafted on (on its own predictions), "
            "and `noise`, a random-sign perturbation of the same radius; columns: the share of the images whose "
            "predicted class it changes, on the source model itself and on each target model.",
            models, {row: [rates.get(m) for m in models] for row, rates in universal.items()},
            _universal_findings(universal),
        )
    wise = a.get("wise_ft")  # older results.json files have none
    if wise:
        grid = cfg["eval_eps"]
        attacked = [k for k, e in enumerate(grid) if e > 0]
        lines += _table(
            "WiSE-FT: fine-tuned weights interpolated towards the pretrained ones",
            "Each row: a fine-tuned model's weights mixed as (1 - alpha) pretrained + alpha fine-tuned (its new head "
            f"kept), evaluated without retraining on the analysis images ({cfg['eval_attack']} at each eps): "
            "alpha 1 is the fine-tuned model, alpha 0 the pretrained backbone.",
            ["clean"] + [f"eps {grid[k]:.3f}" for k in attacked],
            {f"{base} alpha {point['alpha']['mean']:.3f}": [point["clean_accuracy"],
                                                             *(point["robust_accuracy"][k] for k in attacked)]
             for base, curve in wise.items() for point in curve},
            _wise_findings(wise),
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


def _universal_findings(universal: dict[str, Any]) -> list[str]:
    out = _pair_findings(universal.get("pretrained", {}), "Fooling rate of the pretrained model's universal "
                         "perturbation")
    out += _pair_findings(universal.get("robust_pretrained", {}), "Fooling rate of the robust pretrained model's "
                          "universal perturbation", "dm", "robust_finetuned")
    if out:
        out.append("A model its source's universal perturbation fools more has kept more of the source's non-robust "
                   "directions (the paper's preference analysis; compare with the noise row).")
    return out


def _wise_findings(wise: dict[str, Any]) -> list[str]:
    """Per fine-tuned model: the mixing weight with the highest robust accuracy at the largest eps, next
    to the fine-tuned model itself (alpha 1), means over seeds (no per-image records: described only)."""
    out = []
    for base, curve in wise.items():
        best = max(reversed(curve), key=lambda point: point["robust_accuracy"][-1]["mean"])  # ties: the larger alpha
        tuned = curve[-1]
        if best is tuned:
            out.append(f"WiSE-FT on {base}: no mixing weight beats the fine-tuned model itself (alpha "
                       f"{tuned['alpha']['mean']:.3f}: robust accuracy {tuned['robust_accuracy'][-1]['mean']:.3f} at "
                       f"the largest eps, clean {tuned['clean_accuracy']['mean']:.3f}).")
            continue
        out.append(f"WiSE-FT on {base}: robust accuracy at the largest eps peaks at alpha "
                   f"{best['alpha']['mean']:.3f} ({best['robust_accuracy'][-1]['mean']:.3f}, clean "
                   f"{best['clean_accuracy']['mean']:.3f}) against {tuned['robust_accuracy'][-1]['mean']:.3f} "
                   f"(clean {tuned['clean_accuracy']['mean']:.3f}) at alpha {tuned['alpha']['mean']:.3f}.")
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
