"""The command line: `nonrobust-ext info` and a tiny `demo` end to end."""

from __future__ import annotations

import json

import pytest

from nonrobust_ext.cli import main
from nonrobust_ext.experiments.demo import DemoConfig, run_demo


def test_info_prints_build_info(capsys):
    assert main(["info"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert {"torch_version", "with_cuda", "cpu_isa"} <= set(info)


def test_demo_writes_results_and_a_report_built_from_them(tmp_path):
    cfg = DemoConfig(out=tmp_path, train_samples=1500, test_samples=300, epochs=3, eps_grid=(0.0, 0.15), steps=5)
    results = run_demo(cfg, log=lambda *_: None)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["rows"] == results["rows"]
    report = (tmp_path / "report.md").read_text()
    for row in saved["rows"]:
        assert f"| {row['eps']:.3f} | {row['pgd_accuracy']:.3f} |" in report
    assert saved["clean_accuracy"] > 0.9
    # the demo's point: PGD at the largest eps does far more damage than random noise of that size
    last = saved["rows"][-1]
    assert last["pgd_accuracy"] < 0.2 < last["random_sign_noise_accuracy"]
    assert saved["rows"][0]["pgd_accuracy"] == pytest.approx(saved["clean_accuracy"])


def test_demo_rejects_a_bad_eps_list(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--eps", "0.1,abc"])
    assert "--eps takes comma-separated numbers" in capsys.readouterr().err
