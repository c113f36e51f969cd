"""Exact resume whenever the interrupt comes.

A run interrupted by SIGINT or SIGTERM and then resumed must end bit for bit where an uninterrupted
run ends: every state_dict entry (BatchNorm running statistics and ``num_batches_tracked``
included), the optimiser state, the best-weights file and the metrics history. The signal is a real
one (``os.kill``), delivered

1. deterministically from hooks at every phase of a step — after a training forward pass (BatchNorm
   statistics already updated), inside an attack's forward passes (PGD-AT), mid-backward, after
   ``optimizer.step``, while the next batch is fetched, inside validation and inside a checkpoint
   write — at many occurrences spread over the run, for a BatchNorm model under the Standard
   objective and under PGD-AT; and
2. to real subprocesses, killed after several different delays.

Whatever moment the signal lands at, the assertion is the same, so the tests are not timing-flaky.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from _helpers import pattern_task
from torch.optim.optimizer import register_optimizer_step_post_hook

import nonrobust_ext._io
from nonrobust_ext import training
from nonrobust_ext.data import TensorData
from nonrobust_ext.training import TrainConfig
from nonrobust_ext.training import loop as training_loop

HERE = Path(__file__).resolve().parent
SIGNALS = {"SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM}


class BNNet(torch.nn.Module):
    """A tiny classifier whose BatchNorm statistics change at every training forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 6, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(6)
        self.fc = torch.nn.Linear(6 * 16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.conv(x)))
        return self.fc(torch.nn.functional.avg_pool2d(h, 2).flatten(1))


def _net(seed: int = 0) -> BNNet:
    torch.manual_seed(seed)
    return BNNet()


def _data(n: int, seed: int) -> TensorData:
    x, y = pattern_task(n, seed=seed)
    return TensorData(x, y, ["a", "b", "c", "d"])


TRAIN, VAL = _data(96, seed=1), _data(48, seed=2)  # 3 batches of 32 an epoch
CONFIG = TrainConfig(epochs=3, batch_size=32, lr=0.05, momentum=0.9, weight_decay=5e-4, seed=0,
                     select="val_accuracy")
OBJECTIVES = {"standard": training.Standard(), "pgd": training.PGDAdversarial(eps=0.1, steps=2)}


def _run(objective: str, out: Path, *, model: BNNet | None = None) -> training.TrainResult:
    return training.train(model if model is not None else _net(), OBJECTIVES[objective], TRAIN, config=CONFIG,
                          out_dir=out, val_data=VAL, progress=False)


# ---------------------------------------------------------------------------------- what must be equal


def _without_seconds(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Metrics lines without their wall-clock field (the only one a resumed run cannot reproduce)."""
    return [{k: v for k, v in line.items() if k != "seconds"} for line in lines]


def _assert_identical(a: Any, b: Any, where: str) -> None:
    """Equal bit for bit: tensors by torch.equal (dtype and shape too), containers entry by entry."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), f"{where}: keys {list(a)} vs {list(b)}"
        for key in a:
            _assert_identical(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), f"{where}: {a!r} vs {b!r}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_identical(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} vs {b!r}"


def _final_state(out: Path, model: torch.nn.Module, result: training.TrainResult) -> dict[str, Any]:
    """Everything a finished run leaves behind, minus wall-clock times."""
    checkpoint = torch.load(out / training_loop.CHECKPOINT, weights_only=True)
    checkpoint["history"] = _without_seconds(checkpoint["history"])
    checkpoint["running"] = {k: v for k, v in checkpoint["running"].items() if k != "seconds"}
    metrics = [json.loads(line) for line in (out / training_loop.METRICS).read_text().splitlines()]
    return {
        "model": model.state_dict(),
        "checkpoint": checkpoint,
        "best.pt": torch.load(out / training_loop.BEST, weights_only=True),
        "metrics.jsonl": _without_seconds(metrics),
        "result": (result.steps, _without_seconds(result.history), result.best),
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, dict[str, Any]]:
    """Each objective's uninterrupted run, and how often each phase happens in it."""
    out = {}
    for name in OBJECTIVES:
        folder = tmp_path_factory.mktemp(f"reference_{name}")
        model = _net()
        with _injector(model, None, "", 0) as injector:
            result = _run(name, folder, model=model)
        state = _final_state(folder, model, result)
        assert state["checkpoint"]["finished"] and result.steps == 9
        out[name] = {"state": state, "counts": dict(injector.counts)}
    return out


# ------------------------------------------------------------------------------- deterministic injection


class Injector:
    """Counts each phase of the run and sends ``sig`` to this process at the ``at``-th occurrence of
    ``phase`` — only while the training loop's handler is installed, so a stray SIGTERM can never
    reach pytest's own."""

    def __init__(self, sig: signal.Signals | None, phase: str, at: int, times: int = 1) -> None:
        self.sig, self.phase, self.at, self.times = sig, phase, at, times
        self.counts: collections.Counter[str] = collections.Counter()
        self.in_validation = False
        self.sent = 0

    def fire(self, phase: str) -> None:
        self.counts[phase] += 1
        if self.sig is None or phase != self.phase or self.counts[phase] != self.at:
            return
        handler = signal.getsignal(self.sig)
        assert isinstance(getattr(handler, "__self__", None), training.InterruptRequests), (
            f"{self.sig.name} is not handled by the training loop during {phase}"
        )
        for _ in range(self.times):
            self.sent += 1
            os.kill(os.getpid(), self.sig)


@contextlib.contextmanager
def _injector(model: torch.nn.Module, sig: signal.Signals | None, phase: str, at: int,
              times: int = 1) -> Iterator[Injector]:
    """Hooks at every phase of a training step, reporting to an :class:`Injector`."""
    injector = Injector(sig, phase, at, times)

    def on_forward(module: torch.nn.Module, inputs: Any, output: Any) -> None:
        if injector.in_validation:
            injector.fire("validation")
        else:
            injector.fire("train_forward" if module.training else "attack_forward")

    real_evaluate, real_save, real_batches = training_loop._evaluate, torch.save, training_loop.batches

    def evaluate(*args: Any, **kwargs: Any) -> dict[str, float]:
        injector.in_validation = True
        try:
            return real_evaluate(*args, **kwargs)
        finally:
            injector.in_validation = False

    def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        real_save(obj, f, *args, **kwargs)
        injector.fire("checkpoint_write")  # written to the temporary file, not yet renamed over the old one

    def batches(*args: Any, **kwargs: Any) -> Iterator[Any]:
        for batch in real_batches(*args, **kwargs):
            injector.fire("next_batch")
            yield batch

    handles = [
        model.register_forward_hook(on_forward),
        model.conv.weight.register_post_accumulate_grad_hook(lambda p: injector.fire("backward")),
        register_optimizer_step_post_hook(lambda *a: injector.fire("optimizer_step")),
    ]
    patches = [(training_loop, "_evaluate", evaluate), (nonrobust_ext._io.torch, "save", save),
               (training_loop, "batches", batches)]
    originals = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    for owner, name, value in patches:
        setattr(owner, name, value)
    try:
        yield injector
    finally:
        for owner, name, value in originals:
            setattr(owner, name, value)
        for handle in handles:
            handle.remove()


PHASES = ("train_forward", "attack_forward", "backward", "optimizer_step", "next_batch", "validation",
          "checkpoint_write")


def _moments(count: int, how_many: int) -> list[int]:
    """``how_many`` occurrences spread over 1..count, first and last included."""
    if count <= how_many:
        return list(range(1, count + 1))
    return sorted({1 + round(i * (count - 1) / (how_many - 1)) for i in range(how_many)})


def _cases(picks: dict[str, tuple[int, ...]]) -> list[Any]:
    """(signal, objective, phase, index): ``picks`` maps each signal to indices into the moments
    :func:`_moments` chooses (they depend on the reference run, so they are resolved in the test)."""
    return [pytest.param(sig, objective, phase, i, id=f"{sig}-{objective}-{phase}-{i}")
            for objective in OBJECTIVES for phase in PHASES
            if not (phase == "attack_forward" and objective == "standard")
            for sig, indices in picks.items() for i in indices]


def _interrupt_and_resume(tmp_path: Path, reference: dict[str, Any], sig: str, objective: str, phase: str,
                          index: int, how_many: int, times: int = 1) -> None:
    moments = _moments(reference[objective]["counts"][phase], how_many)
    if index >= len(moments):
        pytest.skip(f"{phase} happens only {len(moments)} times in this run")
    model = _net()
    with _injector(model, SIGNALS[sig], phase, moments[index], times) as injector, \
            pytest.raises(KeyboardInterrupt):
        _run(objective, tmp_path, model=model)
    assert injector.sent == times
    # The handlers in force before training are back (pytest's SIGINT handler, the default SIGTERM).
    assert not isinstance(getattr(signal.getsignal(SIGNALS[sig]), "__self__", None), training.InterruptRequests)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]

    # With a checkpoint, start from other weights: everything must come from it. Without one (the
    # signal came before the first step ended) the run starts over, from the same initial weights.
    resumed = _net(seed=123) if (tmp_path / training_loop.CHECKPOINT).exists() else _net()
    result = _run(objective, tmp_path, model=resumed)
    _assert_identical(reference[objective]["state"], _final_state(tmp_path, resumed, result), "run")


@pytest.mark.parametrize("sig, objective, phase, index", _cases({"SIGINT": (1,), "SIGTERM": (2,)}))
def test_a_signal_at_any_phase_of_a_step_resumes_bit_for_bit(tmp_path, reference, sig, objective, phase, index):
    """Every phase of both objectives: SIGINT at its middle occurrence, SIGTERM at its last."""
    _interrupt_and_resume(tmp_path, reference, sig, objective, phase, index, how_many=3)


@pytest.mark.slow
@pytest.mark.parametrize("sig, objective, phase, index", _cases({"SIGINT": tuple(range(6)),
                                                                  "SIGTERM": tuple(range(6))}))
def test_a_signal_at_many_more_moments_resumes_bit_for_bit(tmp_path, reference, sig, objective, phase, index):
    """Six occurrences of every phase spread over the run, first and last included (every one where
    a phase happens less often), both signals, both objectives."""
    _interrupt_and_resume(tmp_path, reference, sig, objective, phase, index, how_many=6)


def test_the_interrupted_step_completes_and_is_saved(tmp_path, reference):
    """A signal after a step's forward pass: that step finishes, the checkpoint records it (not the
    step before, whose state BatchNorm has already left behind)."""
    model = _net()
    with _injector(model, signal.SIGINT, "train_forward", 5), pytest.raises(KeyboardInterrupt, match="after step 5"):
        _run("standard", tmp_path, model=model)
    saved = torch.load(tmp_path / training_loop.CHECKPOINT, weights_only=True)
    assert saved["step"] == 5 and saved["epoch"] == 1 and saved["batch"] == 2 and not saved["finished"]
    _assert_identical(saved["model"], model.state_dict(), "checkpoint vs the model in memory")


@pytest.mark.parametrize("phase", ["train_forward", "optimizer_step"])
def test_a_second_signal_stops_at_once_and_the_last_checkpoint_stands(tmp_path, reference, phase):
    """Ctrl-C twice: the escape hatch for a step that hangs. Nothing of the step is saved."""
    model = _net()
    with _injector(model, signal.SIGINT, phase, 5, times=2), pytest.raises(KeyboardInterrupt, match="at once"):
        _run("standard", tmp_path, model=model)
    saved = torch.load(tmp_path / training_loop.CHECKPOINT, weights_only=True)
    assert saved["step"] == 3  # the epoch end before step 5, the last checkpoint written
    resumed = _net(seed=7)
    result = _run("standard", tmp_path, model=resumed)
    assert result.resumed_from == 3
    _assert_identical(reference["standard"]["state"], _final_state(tmp_path, resumed, result), "run")


def test_a_keyboard_interrupt_raised_mid_step_saves_nothing(tmp_path, reference):
    """A KeyboardInterrupt that is no signal (raised by code inside the step, after optimizer.step)
    may leave the step half done: the last checkpoint stands, and the resumed run is still exact."""
    model = _net()
    calls = {"n": 0}

    def raise_on_the_fifth_step(*args: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt

    handle = register_optimizer_step_post_hook(raise_on_the_fifth_step)
    try:
        with pytest.raises(KeyboardInterrupt):
            _run("standard", tmp_path, model=model)
    finally:
        handle.remove()
    assert torch.load(tmp_path / training_loop.CHECKPOINT, weights_only=True)["step"] == 3
    resumed = _net(seed=5)
    result = _run("standard", tmp_path, model=resumed)
    _assert_identical(reference["standard"]["state"], _final_state(tmp_path, resumed, result), "run")


def test_an_ignored_signal_stays_ignored(tmp_path, reference):
    """A process started with SIGINT ignored (nohup, a shell's background job) asked not to be
    interrupted: the loop leaves the disposition alone and the run completes."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        model = _net()
        sent = []

        def send(*args: Any) -> None:
            if not sent:
                assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
                os.kill(os.getpid(), signal.SIGINT)
                sent.append(1)

        handle = register_optimizer_step_post_hook(send)
        try:
            result = _run("standard", tmp_path, model=model)
        finally:
            handle.remove()
        assert sent and result.steps == 9
    finally:
        signal.signal(signal.SIGINT, previous)
    _assert_identical(reference["standard"]["state"], _final_state(tmp_path, model, result), "run")


def test_training_in_another_thread_leaves_the_signal_handlers_alone(tmp_path, reference):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    seen: list[Any] = []
    model = _net()

    def record(*args: Any) -> None:
        seen.append((signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)))

    handle = register_optimizer_step_post_hook(record)
    results: list[training.TrainResult] = []
    try:
        thread = threading.Thread(target=lambda: results.append(_run("standard", tmp_path, model=model)))
        thread.start()
        thread.join()
    finally:
        handle.remove()
    assert results and set(seen) == {before}
    _assert_identical(reference["standard"]["state"], _final_state(tmp_path, model, results[0]), "run")


# ------------------------------------------------------------------------------------- real processes


_SCRIPT = textwrap.dedent("""
    import os, signal, sys, time
    import torch
    sys.path.insert(0, {here!r})
    # Whatever the parent's disposition (a shell may start background jobs with SIGINT ignored), Ctrl-C
    # is Python's KeyboardInterrupt here, as in an interactive run.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from torch.optim.optimizer import register_optimizer_step_post_hook
    from test_resume import _net, _run

    out, objective = sys.argv[1], sys.argv[2]
    started = os.path.join(out, "started")
    model = _net()

    def pause(*args):
        # Slow every phase a little, so a signal sent after a delay lands in any of them; say when
        # the first training step is under way (the parent's delays count from there).
        if os.environ.get("SLOW"):
            time.sleep(0.02)
        if not os.path.exists(started):
            open(started, "w").close()

    model.register_forward_hook(pause)
    model.conv.weight.register_post_accumulate_grad_hook(pause)
    register_optimizer_step_post_hook(pause)
    _run(objective, out, model=model)
    torch.save(model.state_dict(), os.path.join(out, "final.pt"))
""")


def _start(script: Path, out: Path, objective: str, slow: bool) -> subprocess.Popen:
    out.mkdir(exist_ok=True)
    (out / "started").unlink(missing_ok=True)
    env = {**os.environ, "SLOW": "1"} if slow else {k: v for k, v in os.environ.items() if k != "SLOW"}
    return subprocess.Popen([sys.executable, str(script), str(out), objective], env=env, stderr=subprocess.PIPE,
                            text=True)


@pytest.mark.slow
@pytest.mark.parametrize("objective", list(OBJECTIVES))
def test_a_process_killed_by_signals_again_and_again_resumes_bit_for_bit(tmp_path, objective):
    """One run stopped by SIGINT and SIGTERM in turn, each after another delay from the start of its
    first step, and resumed after each; then compared with a run that was never interrupted. A
    signal may land anywhere — in any phase of a step, in validation, in a checkpoint write, after
    the end — and the result must be the same."""
    script = tmp_path / "run.py"
    script.write_text(_SCRIPT.format(here=str(HERE)))
    run = tmp_path / "interrupted"
    outcomes = []
    for sig, delay in (("SIGINT", 0.0), ("SIGTERM", 0.15), ("SIGINT", 0.4), ("SIGTERM", 0.8)):
        proc = _start(script, run, objective, slow=True)
        for _ in range(6000):  # until the first step is under way (or the process is gone)
            if (run / "started").exists() or proc.poll() is not None:
                break
            time.sleep(0.01)
        time.sleep(delay)
        proc.send_signal(SIGNALS[sig])
        _, err = proc.communicate(timeout=600)
        if proc.returncode == 0:
            outcomes.append("finished")  # the signal came after the process had ended
        elif f"training stopped by {sig}" in err or f"{sig} received as training finished" in err:
            outcomes.append("stopped")  # the loop's checkpoint-then-raise
        else:
            # After train() had returned (saving final.pt, shutting down): the signal's own default
            # action, a KeyboardInterrupt or termination. Never a crash.
            lines = err.strip().splitlines()
            assert proc.returncode == -SIGNALS[sig] or (lines and lines[-1].startswith("KeyboardInterrupt")), \
                err[-3000:]
            outcomes.append("default")
    assert "stopped" in outcomes, outcomes  # at least one signal reached a running step
    finish = _start(script, run, objective, slow=False)
    _, err = finish.communicate(timeout=600)
    assert finish.returncode == 0, err[-3000:]

    clean_dir = tmp_path / "clean"
    clean = _start(script, clean_dir, objective, slow=False)
    _, err = clean.communicate(timeout=600)
    assert clean.returncode == 0, err[-3000:]
    for name in ("final.pt", training_loop.BEST):
        _assert_identical(torch.load(clean_dir / name, weights_only=True), torch.load(run / name, weights_only=True),
                          name)
    a, b = (torch.load(d / training_loop.CHECKPOINT, weights_only=True) for d in (clean_dir, run))
    for ckpt in (a, b):
        ckpt["history"] = _without_seconds(ckpt["history"])
        ckpt["running"].pop("seconds")
    _assert_identical(a, b, "checkpoint.pt")


# ------------------------------------------------------------------------------------- verified files


def test_resume_from_a_checkpoint_with_a_flipped_byte_is_refused_never_carried_on(tmp_path, reference):
    """60 flips spread over a finished run's checkpoint.pt: resuming either raises a ValueError that
    names the file, says it is corrupt and what to do (resume=False, or delete it), or — a flip in
    padding — resumes from exactly the original state (and, the run being finished, returns it)."""
    source = tmp_path / "source"
    _run("standard", source)
    original = (source / training_loop.CHECKPOINT).read_bytes()
    best = (source / training_loop.BEST).read_bytes()
    refused = 0
    for k in range(60):
        position = round(k * (len(original) - 1) / 59)
        run = tmp_path / f"run{k}"
        run.mkdir()
        corrupt = bytearray(original)
        corrupt[position] ^= 0xFF
        (run / training_loop.CHECKPOINT).write_bytes(bytes(corrupt))
        (run / training_loop.BEST).write_bytes(best)
        model = _net(seed=11)
        try:
            result = _run("standard", run, model=model)
        except ValueError as error:
            message = str(error)
            assert "checkpoint.pt" in message and "corrupt" in message, (position, message)
            assert "resume=False" in message and "delete it" in message, message
            refused += 1
            continue
        _assert_identical(reference["standard"]["state"]["model"], model.state_dict(), f"flip at {position}")
        assert result.steps == 9
    # Measured: 44 of 60 (the small records of this tiny run leave more of the file to alignment padding).
    assert refused >= 30, refused


def test_a_corrupt_best_weights_file_is_refused_on_resume(tmp_path):
    _run("standard", tmp_path)
    data = bytearray((tmp_path / training_loop.BEST).read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the tensor data
    (tmp_path / training_loop.BEST).write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"best\.pt.*corrupt.*resume=False"):
        _run("standard", tmp_path)
