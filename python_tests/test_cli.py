"""The command line: `nonrobust-ext info`, a tiny `demo` end to end, the options built from the configs' field
descriptions, and error messages that name the option the user typed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nonrobust_ext.cli import main
from nonrobust_ext.experiments.demo import DemoConfig, run_demo


def test_info_prints_build_info(capsys):
    assert main(["info"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert {"torch_version", "with_cuda", "cpu_isa"} <= set(info)


@pytest.mark.slow
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


def test_the_study_options_are_built_from_the_configs_descriptions(capsys):
    """Every StudyConfig setting is an option, with the help and choices written once in the config."""
    import dataclasses

    from nonrobust_ext.experiments._settings import settings
    from nonrobust_ext.experiments.study import EVAL_ATTACKS, SELECT_RULES, StudyConfig

    described = {s.name: s for s in settings(StudyConfig)}
    assert set(described) == {f.name for f in dataclasses.fields(StudyConfig)}  # no setting without an option
    assert described["eval_eps"].option == "--eps" and described["eval_attack"].choices == EVAL_ATTACKS
    assert described["select"].choices == SELECT_RULES
    with pytest.raises(SystemExit) as exited:
        main(["study", "--help"])
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for s in described.values():
        assert s.option in text, s.name
        assert " ".join(s.help.split()[:4]) in text, s.name
    assert "{" + ",".join(EVAL_ATTACKS) + "}" in text and "{" + ",".join(SELECT_RULES) + "}" in text
    for group in ("data:", "models and training:", "evaluation (changing these re-evaluates cached models):"):
        assert group in text


def test_the_demo_options_are_built_from_its_config(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    text = capsys.readouterr().out
    for option in ("--out", "--seed", "--epochs", "--steps", "--eps"):
        assert option in text


@pytest.mark.parametrize("message, kwargs, expected", [
    # a setting's field name becomes its option
    ("eval_steps must be >= 1, got 0", {}, "--steps must be >= 1, got 0"),
    ("eval_eps[1] must be finite, got inf", {}, "--eps[1] must be finite, got inf"),
    ("shots must be >= 1, got 0", {}, "--shots must be >= 1, got 0"),
    # a one-word setting is an ordinary word elsewhere in a message: only the leading one is renamed
    ("seeds lists [1] more than once; shots and seeds", {}, "--seeds lists [1] more than once; shots and seeds"),
    # a snake_case setting is renamed anywhere; a snake_case word that is no setting stays
    ("source_classes and target_classes overlap", {}, "--source-classes and --target-classes overlap"),
    ("shots_per_class=3 but ...", {}, "shots_per_class=3 but ..."),
    # a message on several lines becomes one
    ("files not found.\n\nOr run on generated data", {}, "files not found. Or run on generated data"),
    # a setting read from the --config file keeps its JSON key and the message names the file
    ("eval_steps must be >= 1, got 0", {"from_file": {"eval_steps"}, "config_file": Path("c.json")},
     "--config c.json: eval_steps must be >= 1, got 0"),
    ("unknown study settings ['x']", {"config_file": Path("c.json"), "about_file": True},
     "--config c.json: unknown study settings ['x']"),
    ("--config: no file at c.json", {"config_file": Path("c.json"), "about_file": True}, "--config: no file at c.json"),
    # not about a setting: unchanged
    ("out: /x is a file; give a folder", {}, "--out: /x is a file; give a folder"),
    ("the model has 4 stages", {}, "the model has 4 stages"),
])
def test_user_message_names_what_the_user_typed(message, kwargs, expected):
    from nonrobust_ext.cli import _option_names, user_message
    from nonrobust_ext.experiments.study import StudyConfig

    assert user_message(message, _option_names(StudyConfig, out="--out"), **kwargs) == expected


@pytest.mark.parametrize("field, value, error", [
    ("steps", 0, ValueError), ("steps", 1.5, TypeError), ("epochs", 0, ValueError), ("seed", -1, ValueError),
    ("eps_grid", (0.0, float("nan")), ValueError), ("eps_grid", (), ValueError), ("batch_size", 0, ValueError),
    ("train_samples", 0, ValueError), ("test_samples", 0, ValueError), ("num_classes", 1, ValueError),
    ("image_size", 1, ValueError), ("restarts", 0, ValueError), ("out", None, TypeError), ("out", 3, TypeError),
])
def test_demo_config_refuses_bad_values_naming_them(field, value, error):
    with pytest.raises(error, match=rf"^{field}"):
        DemoConfig(**{field: value})


def test_run_demo_checks_a_config_changed_after_it_was_made(tmp_path):
    cfg = DemoConfig(out=tmp_path)
    cfg.steps = 0
    with pytest.raises(ValueError, match="^steps must be >= 1"):
        run_demo(cfg, log=lambda *_: None)
    assert not (tmp_path / "results.json").exists()
