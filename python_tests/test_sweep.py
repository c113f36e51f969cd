"""nonrobust-ext sweep: the study's pair at every value of a training factor, models that do not depend
on the factor trained and evaluated once, finished points reused, a table of paired gaps; bad input
refused before anything trains."""

from __future__ import annotations

import json

import pytest
from test_study import TINY

from nonrobust_ext import cli
from nonrobust_ext.experiments import study, sweep
from nonrobust_ext.experiments.study import StudyConfig

# One robust arm (WiSE-FT: it trains nothing, so it costs the sweep an evaluation per point).
SMALL = {**TINY, "seeds": (0,), "uap_epochs": 0, "wise_alphas": (), "methods": ("wise",)}


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    summary = sweep.run_sweep(StudyConfig(**SMALL), [("freeze_stages", (0, 1))], out, progress=False,
                              log=lambda _: None)
    return out, summary


@pytest.mark.slow
def test_a_sweep_reports_the_paired_gap_at_every_point_and_trains_shared_models_once(swept):
    out, summary = swept
    assert [p["label"] for p in summary["points"]] == ["freeze_stages=0", "freeze_stages=1"]
    assert json.loads((out / sweep.SWEEP_FILE).read_text()) == summary
    first, second = (out / "points" / p["label"] / "seed0" for p in summary["points"])
    # freeze_stages changes the fine-tuned models only: the second point links the first's standard and
    # source models (trained once), and their evaluation records are reused with them
    for stage in ("standard", "pretrained", "robust_pretrained"):
        assert (second / stage).is_symlink() and (second / stage).resolve() == (first / stage).resolve()
    assert not (second / "finetuned").is_symlink()
    assert len(json.loads((first / "standard" / "evaluation.json").read_text())) == 1
    results = [json.loads((out / "points" / p["label"] / "results.json").read_text()) for p in summary["points"]]
    standard = [{k: v for k, v in r["seeds"]["0"]["standard"].items() if k != "training"} for r in results]
    assert standard[0] == standard[1]
    for point in summary["points"]:
        gaps = {(c["a"], c["b"], c["metric"]) for c in point["comparisons"]}
        assert {("finetuned", "standard", m) for m in ("clean_accuracy", "robust_accuracy", "autoattack_accuracy",
                                                       "expected_robustness")} <= gaps
        assert ("wise_finetuned", "finetuned", "expected_robustness") in gaps  # the arm asked for, against plain
        assert not point["reused"] and point["seconds"] > 0
    report = (out / sweep.REPORT_FILE).read_text()
    assert "## finetuned - standard" in report and "| freeze_stages |" in report
    assert "## wise_finetuned - finetuned" in report
    assert report.count("\n| 0 |") >= 1 and report.count("\n| 1 |") >= 1


@pytest.mark.slow
def test_a_finished_point_is_never_retrained_and_a_new_value_adds_only_its_point(swept, monkeypatch):
    out, _ = swept
    calls = []
    real = sweep.run_study
    monkeypatch.setattr(sweep, "run_study", lambda config, folder, **kw: calls.append(folder) or real(config, folder, **kw))
    again = sweep.run_sweep(StudyConfig(**SMALL), [("freeze_stages", (0, 1))], out, progress=False, log=lambda _: None)
    assert calls == [] and all(p["reused"] for p in again["points"])
    # an interrupted sweep is a sweep with some points finished: the rest run, the finished are kept
    more = sweep.run_sweep(StudyConfig(**SMALL), [("freeze_stages", (0, 1, 2))], out, progress=False,
                           log=lambda _: None)
    assert [p["reused"] for p in more["points"]] == [True, True, False]
    assert [f.name for f in calls] == ["freeze_stages=2"]


def test_what_a_model_depends_on():
    config = StudyConfig(**SMALL)
    changed = StudyConfig(**{**SMALL, "head_lr": 0.5, "freeze_stages": 1})
    assert sweep.stage_key(config, "standard") == sweep.stage_key(changed, "standard")
    assert sweep.stage_key(config, "pretrained") == sweep.stage_key(changed, "pretrained")
    assert sweep.stage_key(config, "finetuned") != sweep.stage_key(changed, "finetuned")
    shots = StudyConfig(**{**SMALL, "shots": 4})
    assert sweep.stage_key(config, "pretrained") == sweep.stage_key(shots, "pretrained")
    assert sweep.stage_key(config, "standard") != sweep.stage_key(shots, "standard")


@pytest.mark.parametrize("argv, message", [
    ([], "--vary: give at least one factor"),
    (["--vary", "bogus=1,2"], "unknown factor 'bogus'"),
    (["--vary", "shots"], "is not FACTOR=v1,v2"),
    (["--vary", "steps=1,2"], "steps does not change training"),
    (["--vary", "methods=adv"], "methods is not a factor"),
    (["--vary", "shots="], "shots has no values"),
    (["--vary", "shots=5,5"], "lists a value twice"),
    (["--vary", "shots=5", "--vary", "shots=6"], "given twice"),
    (["--vary", "shots=a"], "--vary shots: must be an int"),
    (["--vary", "shots=-1,5"], "--vary shots=-1: shots must be >= 1"),
    (["--vary", "shots=5,10", "--shots", "5"], "--vary shots and --shots both set it"),
    (["--vary", "target-classes=1,2"], "cannot be swept"),
])
def test_bad_sweeps_exit_2_with_one_line_before_anything_is_written(tmp_path, capsys, argv, message):
    code = cli.main(["sweep", "--out", str(tmp_path / "out"), "--quick", *argv])
    err = capsys.readouterr().err
    assert code == cli.EXIT_USER_ERROR and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_every_training_setting_is_a_factor_and_no_evaluation_setting_is():
    names = set(sweep.factor_names().values())
    assert names == set(study.TRAINING_FIELDS) - {"methods"}
    assert not names & {"eval_eps", "eval_steps", "autoattack_steps", "curve_steps", "uap_epochs"}


@pytest.mark.parametrize("factors", [
    [{"name": "shots", "values": [5, 10]}],
    [{"name": "backbone", "values": ["resnet8", "resnet18"]}],  # not numeric: labelled positions
    [{"name": "shots", "values": [5, 10]}, {"name": "head_lr", "values": [0.01, 0.1]}],  # a grid
], ids=["numeric", "categorical", "grid"])
def test_the_sweep_plot_is_drawn_for_any_factor(tmp_path, factors):
    pytest.importorskip("matplotlib")
    import itertools

    points = []
    for combination in itertools.product(*(f["values"] for f in factors)):
        values = dict(zip((f["name"] for f in factors), combination, strict=True))
        points.append({"label": ",".join(f"{k}={v}" for k, v in values.items()), "values": values, "comparisons": [
            {"a": "finetuned", "b": "standard", "metric": "clean_accuracy", "eps": None, "mean": 0.1, "low": 0.0,
             "high": 0.2}]})
    path = tmp_path / sweep.PLOT_FILE
    assert sweep._plot({"factors": factors, "points": points}, path) == sweep.PLOT_FILE
    assert path.stat().st_size > 1000
