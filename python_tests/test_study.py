"""The study command end to end on a tiny synthetic configuration: six models per seed, cached stages,
resume after an interruption, and a report whose every number comes from results.json."""

from __future__ import annotations

import importlib.util
import json
import re

import pytest

from nonrobust_ext import training
from nonrobust_ext.cli import main
from nonrobust_ext.experiments import study
from nonrobust_ext.experiments.study import StudyConfig, run_study

TINY = dict(dataset="synthetic", source_per_class=40, shots=8, seeds=(0, 1), source_epochs=1, target_steps=4,
            batch_size=64, train_steps=2, eval_steps=2, eval_samples=100, eval_eps=(0.0, 0.1), analysis_samples=64)


def _numbers(obj) -> set[str]:
    """Every number in a JSON value, formatted with 3 decimals (how the report prints them)."""
    if isinstance(obj, dict):
        return set().union(*(_numbers(v) for v in obj.values())) if obj else set()
    if isinstance(obj, list):
        return set().union(*(_numbers(v) for v in obj)) if obj else set()
    if isinstance(obj, (int, float)) and not isinstance(obj, bool):
        return {f"{obj:.3f}", str(obj)}
    return set()


def test_quick_study_writes_results_and_a_report_made_of_its_numbers(tmp_path):
    results = run_study(StudyConfig(**TINY), tmp_path, progress=False, log=lambda _: None)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert set(saved["seeds"]) == {"0", "1"}
    for seed in saved["seeds"].values():
        assert set(seed) == {*study.STAGES, "analyses"}
        assert set(seed["analyses"]["cka"]) == {f"{a}~{b}" for a, b in study.CKA_PAIRS}
        for stage in study.STAGES:
            model = seed[stage]
            assert 0 <= model["robust_accuracy"][1] <= model["robust_accuracy"][0] == model["clean_accuracy"]
    assert saved["summary"] == results["summary"]
    report = (tmp_path / "report.md").read_text()
    allowed = _numbers(saved)
    for token in re.findall(r"\d+\.\d+", report):
        assert token in allowed, f"report.md shows {token}, which is not a number of results.json"
    for stage in study.TARGET_STAGES:
        assert f"| {stage} |" in report
    if importlib.util.find_spec("matplotlib") is None:
        assert "No plots: matplotlib is not installed" in report
        return
    for name in study.PLOTS:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"]({name})" in report


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
                       for s in study.STAGES if s != "dm"}
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
