"""What is measured on one seed's models: clean and robust accuracy and true-label confidence of
every model (evaluation), then the analyses of the target models against the source models
(layer-wise CKA, attacks on the source features, the transfer matrix, frequency, perturbation
spectra, the feature-robustness ranking).

Under torchrun every rank evaluates its share of the images and gets every record (the evaluation's
counts, outcomes and radii are gathered); rank 0 alone runs the analyses, which are not additive over
shards of the data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import math
from pathlib import Path
from typing import Any

import torch

from ... import __version__, analysis
from ... import data as nxdata
from ..._io import atomic_write
from ..._progress import progress_bar
from ..._validate import check_nonempty
from ...attacks import autoattack, feature_pgd, fooling_rate, pgd, robust_accuracy, uap
from ...attacks._common import eval_mode
from ...attacks._distributed import world
from ...attacks.registry import ATTACKS
from .config import SOURCE_STAGES, TARGET_STAGES, StudyConfig
from .stages import wise_ft
from .tasks import subsample

# The fine-tuned models WiSE-FT interpolates towards the pretrained weights: plain and adversarial fine-tuning.
WISE_BASES = ("finetuned", "adv_finetuned")
# Pairs whose layer-wise similarity the study compares: how much of the (robust) source model each
# target model keeps, against the standard model that never saw the source.
CKA_PAIRS = (("pretrained", "finetuned"), ("pretrained", "standard"), ("pretrained", "adv_finetuned"),
             ("pretrained", "dm_finetuned"), ("robust_pretrained", "robust_finetuned"), ("robust_pretrained", "dm"))

# The feature-robustness ranking is summarised by the share of robust pairs among the most useful
# RANK_SHARES of the useful (class, feature) pairs, most useful (on clean data) first.
RANK_SHARES = (0.1, 0.25, 0.5, 1.0)


def _attack_options(name: str, steps: int, seed: int) -> dict[str, Any]:
    """``steps`` and ``seed`` for the attacks that take them (FGSM takes neither)."""
    accepted = inspect.signature(ATTACKS[name]).parameters
    return {k: v for k, v in (("steps", steps), ("seed", seed)) if k in accepted}


def _on_the_grid(config: StudyConfig, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int,
                 device: torch.device, *, distributed: bool = False) -> Any:
    """``model``'s :class:`~nonrobust_ext.attacks.RobustnessReport` on the study's eps grid (its attack,
    steps and seed)."""
    return robust_accuracy(model, (x, y), eps=list(config.eval_eps), attack=config.eval_attack, device=device,
                           distributed=distributed, **_attack_options(config.eval_attack, config.eval_steps, seed))


def evaluate_all(config: StudyConfig, tasks: nxdata.SourceTarget, trained: dict[str, torch.nn.Module], seed: int,
                 device: torch.device, progress: bool, distributed: bool = False,
                 cache: Path | None = None) -> dict[str, Any]:
    """Clean and robust accuracy and true-label confidence of every model that has a test set (the
    ImageNet source models have none here) on the eps grid; AutoAttack at the largest eps on the target
    models; every model's robustness curve from its FMN radii. Each model's record keeps its per-image
    outcomes (``per_sample``): the paired comparisons between models are computed from them, on the same
    images for every model of a seed. ``distributed``: every rank evaluates its share of the images
    (under torchrun) and all ranks get the same records. ``cache``: the seed's folder: a stage's record
    is kept in its model folder (:data:`EVALUATION_FILE`) under a key of everything it depends on (the
    weights, the images, the evaluation settings) and reused instead of evaluated again."""
    results: dict[str, Any] = {}
    stages = [s for s in trained if s in TARGET_STAGES or not config.imagenet_source]
    eps_max = max(config.eval_eps)
    for stage in progress_bar(stages, enabled=progress, description=f"seed {seed} evaluation", unit="model"):
        model = trained[stage]
        test = subsample(tasks.source_test if stage in SOURCE_STAGES else tasks.target_test,
                         config.eval_samples, seed)
        store = cache / stage / EVALUATION_FILE if cache is not None and (cache / stage).is_dir() else None
        key = _evaluation_key(config, stage, model, test, seed) if store is not None else ""
        cached = _cached_record(store, key)
        if cached is not None:
            results[stage] = cached
            continue
        report = _on_the_grid(config, model, test.x, test.y, seed, device, distributed=distributed)
        record: dict[str, Any] = {
            "task": "source" if stage in SOURCE_STAGES else "target",
            "clean_accuracy": report.clean_accuracy,
            "robust_accuracy": report.robust_accuracy,
            "clean_confidence": report.clean_confidence,
            "adversarial_confidence": report.adversarial_confidence,
            "num_samples": report.num_samples,
            "autoattack": None,
            "curve": None,
        }
        flags = report.as_dict()  # the per-sample outcomes as lists of 0/1
        per_sample: dict[str, Any] = {"clean": flags["correct"], "robust": flags["robust"], "autoattack": None,
                                      "radius": None}
        if config.autoattack_steps and stage in TARGET_STAGES and eps_max > 0:  # the headline is the target task's
            head = subsample(test, config.autoattack_samples, seed)
            result = autoattack(model, head.x.to(device), head.y.to(device), eps=eps_max, seed=seed,
                                steps=config.autoattack_steps, queries=config.autoattack_queries,
                                distributed=distributed, return_result=True)
            record["autoattack"] = {
                "eps": eps_max, "robust_accuracy": result.robust_accuracy, "clean_accuracy": result.clean_accuracy,
                "num_samples": len(head), "settings": result.settings,
                "log": [dataclasses.asdict(line) for line in result.log],
            }
            per_sample["autoattack"] = (~result.success).int().tolist()
        if config.curve_steps:
            sample = subsample(test, config.curve_samples, seed)
            curve = robust_accuracy(model, (sample.x, sample.y), curve=True, attack="fmn", norm="linf",
                                    steps=config.curve_steps, device=device, distributed=distributed)
            written = curve.as_dict()  # JSON has no infinity: a radius never found is None
            record["curve"] = {
                "num_samples": curve.num_samples, "median_radius": written["median_radius"],
                "expected_robustness": curve.expected_robustness(eps_max) if eps_max > 0 else None,
                "eps_max": eps_max, "accuracy": curve.accuracy(list(config.eval_eps)),
            }
            per_sample["radius"] = written["radii"]
        record["per_sample"] = per_sample
        results[stage] = record
        if store is not None and world()[0] == 0:
            _store_record(store, key, record)
    return results


#: A stage's cached evaluation records, in its model folder: evaluation key -> record.
EVALUATION_FILE = "evaluation.json"


def _evaluation_key(config: StudyConfig, stage: str, model: torch.nn.Module, test: nxdata.TensorData,
                    seed: int) -> str:
    """A digest of everything a stage's evaluation record depends on: the model's weights, the test
    images and labels, the evaluation settings, the seed and the library's version."""
    def raw(tensor: torch.Tensor) -> bytes:  # any dtype, as its bytes
        return tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(raw(tensor))
    digest.update(raw(test.x))
    digest.update(raw(test.y))
    settings = {k: v for k, v in config.as_dict().items() if k in EVALUATION_SETTINGS}
    digest.update(json.dumps({"settings": settings, "seed": seed, "target": stage in TARGET_STAGES,
                              "version": __version__}, sort_keys=True).encode())
    return digest.hexdigest()


# The settings an evaluation record depends on (besides the weights and the images).
EVALUATION_SETTINGS = ("eval_eps", "eval_steps", "eval_attack", "autoattack_steps", "autoattack_queries",
                       "autoattack_samples", "curve_steps", "curve_samples")


def _records(store: Path) -> dict[str, Any]:
    """The cached records in ``store``; none where it is missing or damaged (a damaged cache is only a
    cache: the stage is evaluated again)."""
    try:
        records = json.loads(store.read_text()) if store.is_file() else {}
    except (ValueError, UnicodeDecodeError):
        return {}
    return records if isinstance(records, dict) else {}


def _cached_record(store: Path | None, key: str) -> dict[str, Any] | None:
    record = _records(store).get(key) if store is not None else None
    return record if isinstance(record, dict) else None


def _store_record(store: Path, key: str, record: dict[str, Any]) -> None:
    records = _records(store)
    records[key] = record
    atomic_write(store, lambda f: json.dump(records, f), binary=False)


def analyse(config: StudyConfig, tasks: nxdata.SourceTarget, trained: dict[str, torch.nn.Module], seed: int,
            device: torch.device, progress: bool) -> dict[str, Any]:
    """The analyses of one seed's models on ``analysis_samples`` target test images, at the grid's
    largest eps: layer-wise CKA (:data:`CKA_PAIRS`), target accuracy under feature attacks on each
    source model, the transfer matrix between target models, accuracy on low/high-pass images,
    the perturbations' radial spectra, and the feature-robustness ranking."""
    test = subsample(tasks.target_test, config.analysis_samples, seed + 1)
    x, y = test.x, test.y
    eps = max(config.eval_eps)
    targets = {stage: model for stage, model in trained.items() if stage in TARGET_STAGES}
    sources = {stage: model for stage, model in trained.items() if stage in SOURCE_STAGES}
    layers = trained["pretrained"].stage_output_names()
    pairs = [(a, b) for a, b in CKA_PAIRS if a in trained and b in trained]
    wise_bases = [s for s in WISE_BASES if s in trained and "pretrained" in trained] if config.wise_alphas else []
    steps = (len(pairs) + len(sources) + 1 + 3 * len(targets) + (len(sources) + 1 if config.uap_epochs else 0)
             + len(wise_bases))
    bar = progress_bar(description=f"seed {seed} analyses", enabled=progress, total=steps, unit="step")

    def advance(value: Any) -> Any:
        bar.update(1)
        return value

    cka = {f"{a}~{b}": advance(analysis.layer_similarity(trained[a], trained[b], x, layers, method="cka",
                                                         device=device))
           for a, b in pairs}
    # Inherited non-robust features, measured directly: perturbations that move the *source* model's
    # embedding as far as possible (no labels needed: its head is for other classes) and how much
    # accuracy each target model loses on them.
    source_transfer: dict[str, dict[str, float]] = {}
    for source, module in sources.items():
        x_adv = feature_pgd(module.forward_features, x.to(device), eps=eps, steps=config.eval_steps, seed=seed,
                            module=module)
        source_transfer[source] = advance({stage: _accuracy(model, x_adv, y.to(device))
                                           for stage, model in targets.items()})
    matrix = advance(analysis.transfer_matrix(targets, (x, y), eps=eps, steps=config.eval_steps, seed=seed,
                                              device=device))
    frequency = {stage: advance(analysis.accuracy_by_frequency(model, (x, y), list(config.frequency_radii),
                                                               device=device))
                 for stage, model in targets.items()}
    # Each target model's white-box PGD examples (every sample attacked), crafted once for both the
    # perturbation spectrum and the feature ranking.
    crafted = {stage: _craft(model, x, y, eps, config.eval_steps, seed, device) for stage, model in targets.items()}
    spectra = {stage: advance(analysis.perturbation_spectrum(x, crafted[stage], normalize=True).tolist())
               for stage in targets}
    features = {stage: advance(analysis.feature_usefulness(model, (x, y), eps=eps, adversarial=crafted[stage],
                                                           device=device))
                for stage, model in targets.items()}
    universal = _universal(config, sources, targets, x.to(device), eps, seed, advance) if config.uap_epochs else None
    wise = {base: advance(_wise_curve(config, trained["pretrained"], trained[base], x, y, seed, device))
            for base in wise_bases} or None
    bar.close()
    split_radius = len(next(iter(spectra.values()))) // 2
    return {
        "eps": eps,
        "layers": layers,
        "cka": cka,
        "source_feature_attack_accuracy": source_transfer,
        "transfer_accuracy": {src: dict(zip(matrix.names, row, strict=True))
                              for src, row in zip(matrix.names, matrix.accuracy, strict=True)},
        "frequency": {stage: {"low_accuracy": r["low_accuracy"], "high_accuracy": r["high_accuracy"]}
                      for stage, r in frequency.items()},
        "chance_accuracy": 1.0 / len(config.target_classes),
        "robust_usefulness_share": {stage: None if math.isnan(result.robust_share) else result.robust_share
                                    for stage, result in features.items()},
        "feature_ranking": {stage: _ranking_record(result) for stage, result in features.items()},
        "perturbation_spectrum": spectra,
        "spectrum_split_radius": split_radius,
        "perturbation_high_frequency_share": {stage: sum(spectrum[split_radius:])
                                              for stage, spectrum in spectra.items()},
        "uap_fooling_rate": universal,
        "wise_ft": wise,
    }


def _wise_curve(config: StudyConfig, pretrained: torch.nn.Module, finetuned: torch.nn.Module, x: torch.Tensor,
             y: torch.Tensor, seed: int, device: torch.device) -> list[dict[str, Any]]:
    """WiSE-FT: ``finetuned``'s weights interpolated towards ``pretrained``'s at each of
    ``config.wise_alphas`` (the new head kept), each evaluated like the models on the eps grid: one
    fine-tuning run, a whole robustness-accuracy curve, no retraining."""
    out = []
    for alpha in config.wise_alphas:
        mixed = wise_ft(pretrained, finetuned, alpha)
        report = _on_the_grid(config, mixed, x, y, seed, device)
        out.append({"alpha": alpha, "clean_accuracy": report.clean_accuracy,
                    "robust_accuracy": report.robust_accuracy})
        del mixed
    return out


def _universal(config: StudyConfig, sources: dict[str, torch.nn.Module], targets: dict[str, torch.nn.Module],
               x: torch.Tensor, eps: float, seed: int, advance: Any) -> dict[str, dict[str, float]]:
    """The paper's preference analysis: a universal perturbation crafted on each source model (on its
    own predictions over the target images: its head is for other classes, no labels are needed),
    and how often it changes each target model's prediction; ``"noise"``: a random-sign perturbation
    of the same radius, the control. Source -> (model -> fooling rate), the source itself included."""
    out: dict[str, dict[str, float]] = {}
    for source, module in sources.items():
        result = uap(module, x, eps=eps, epochs=config.uap_epochs, seed=seed, return_result=True)
        rates = {stage: fooling_rate(model, x, result.perturbation) for stage, model in targets.items()}
        out[source] = advance({source: result.fooling_rate, **rates})
    signs = torch.randint(0, 2, tuple(x.shape[1:]), generator=torch.Generator().manual_seed(seed)) * 2 - 1
    noise = (signs * eps).to(x.dtype).to(x.device)
    out["noise"] = advance({stage: fooling_rate(model, x, noise) for stage, model in targets.items()})
    return out


def _ranking_record(result: analysis.FeatureUsefulness) -> dict[str, Any]:
    """How many (class, feature) pairs are useful, and which fraction of the most useful ones stays
    useful under attack (``None`` when no pair is useful)."""
    ranking, n = result.ranking, len(result.ranking)

    def robust_fraction(share: float) -> float | None:
        top = ranking[:max(1, math.ceil(share * n))]
        return sum(r["robust"] for r in top) / len(top) if n else None

    return {"num_useful": n, "robust_fraction_top": [robust_fraction(q) for q in RANK_SHARES]}


def _craft(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int, seed: int,
           device: torch.device, batch_size: int = 256) -> torch.Tensor:
    """L-inf PGD examples of every sample of ``(x, y)`` on ``model``, on the CPU."""
    return torch.cat([pgd(model, x[i:i + batch_size].to(device), y[i:i + batch_size].to(device), eps=eps,
                          steps=steps, seed=seed).cpu() for i in range(0, len(x), batch_size)])


def _accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """``model``'s accuracy on ``(x, y)`` in eval mode (an accuracy over no samples is an error)."""
    check_nonempty(len(y), "y")
    with torch.no_grad(), eval_mode(model):
        return float((model(x).argmax(1) == y).float().mean())

__all__ = ["CKA_PAIRS", "RANK_SHARES", "analyse", "evaluate_all"]
