"""Training: objectives learn, PGD-AT buys robustness, fine-tuning modes freeze what they say, the loop
checkpoints atomically and resumes exactly, selection uses validation data, DDP matches one process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from _helpers import pattern_task

import nonrobust_ext
from nonrobust_ext import training
from nonrobust_ext.data import TensorData
from nonrobust_ext.training import FinetuneConfig, TrainConfig

HERE = Path(__file__).resolve().parent


class TinyNet(torch.nn.Module):
    """The model interface the training side relies on (forward_features, return_features, fc,
    stages, reset_head), at test size: [B, 1, 8, 8] inputs."""

    def __init__(self, num_classes: int = 4, batch_norm: bool = True) -> None:
        super().__init__()
        norm = torch.nn.BatchNorm2d(8) if batch_norm else torch.nn.Identity()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), norm, torch.nn.ReLU())
        self.layer1 = torch.nn.Sequential(torch.nn.Conv2d(8, 16, 3, padding=1, stride=2), torch.nn.ReLU())
        self.pool = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())
        self.fc = torch.nn.Linear(64, num_classes)
        self.feature_dim = 64

    def forward_features(self, x):
        return self.pool(self.layer1(self.stem(x)))

    def forward(self, x, return_features=False):
        features = self.forward_features(x)
        logits = self.fc(features)
        return (features, logits) if return_features else logits

    def stages(self):
        return [self.stem, self.layer1]

    def reset_head(self, num_classes):
        self.fc = torch.nn.Linear(self.feature_dim, num_classes)


def _task(n: int, seed: int) -> TensorData:
    x, y = pattern_task(n, seed=seed)
    return TensorData(x, y, ["a", "b", "c", "d"])


def _net(seed: int = 0, **kwargs) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet(**kwargs)


def _accuracy(model, data: TensorData, eps: float = 0.0) -> float:
    report = nonrobust_ext.robust_accuracy(model, (data.x, data.y), eps=[eps], attack="pgd", steps=10, seed=0)
    return report.robust_accuracy[0]


FAST = dict(batch_size=64, lr=0.05, weight_decay=0.0, seed=0)

# ------------------------------------------------------------------------------------------- objectives


@pytest.mark.parametrize(
    "objective",
    [
        training.Standard(),
        training.PGDAdversarial(eps=0.05, steps=3),
        training.FastFGSM(eps=0.05),
        training.TRADES(eps=0.05, steps=3, beta=3.0),
        training.DM(eps=0.05, steps=3, beta=0.5),
    ],
    ids=lambda o: o.name,
)
def test_every_objective_lowers_its_loss(objective):
    data = _task(512, seed=1)
    model = _net()
    config = TrainConfig(steps=24, checkpoint_every=8, **{**FAST, "lr": 0.1})
    result = training.train(model, objective, data, config=config, progress=False)
    losses = [line["train_loss"] for line in result.history]
    assert len(losses) == 3
    assert losses[-1] < 0.7 * losses[0], losses
    assert result.steps == 24


@pytest.mark.parametrize("objective", [training.PGDAdversarial(eps=0.08, steps=5),
                                       training.TRADES(eps=0.08, steps=5, beta=6.0)], ids=lambda o: o.name)
def test_adversarial_training_buys_robustness_standard_training_does_not(objective):
    train_data, test = _task(1024, seed=1), _task(512, seed=2)
    config = TrainConfig(epochs=4, **FAST)
    standard = _net()
    training.train(standard, training.Standard(), train_data, config=config, progress=False)
    robust = _net()
    training.train(robust, objective, train_data, config=config, progress=False)
    assert _accuracy(standard, test) > 0.9 and _accuracy(robust, test) > 0.9
    standard_robust, robust_robust = _accuracy(standard, test, 0.08), _accuracy(robust, test, 0.08)
    # Measured: 0.16 vs 0.96 (PGD-AT).
    assert robust_robust > standard_robust + 0.4, (standard_robust, robust_robust)


def test_dm_needs_a_model_with_features():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4))
    with pytest.raises(TypeError, match="forward_features"):
        training.train(model, training.DM(eps=0.1, steps=1), _task(64, 1), config=TrainConfig(steps=1, **FAST),
                       progress=False)


def test_make_objective_by_name_and_errors():
    assert training.make_objective("trades", beta=2.0) == training.TRADES(beta=2.0)
    with pytest.raises(ValueError, match="objective must be one of"):
        training.make_objective("madry")
    with pytest.raises(ValueError, match="unknown \\['gamma'\\]"):
        training.make_objective("pgd", gamma=1)
    with pytest.raises(ValueError, match="eps must be >= 0, got -1"):
        training.PGDAdversarial(eps=-1.0)


# ------------------------------------------------------------------------------------------ fine-tuning


def test_freezing_stages_keeps_their_weights_and_batchnorm_statistics():
    model = _net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    groups = training.prepare_finetune(model, FinetuneConfig(mode="freeze", freeze_stages=1, num_classes=3))
    data = _task(256, seed=1)
    data = TensorData(data.x, data.y % 3, ["a", "b", "c"])
    training.train(model, training.Standard(), data, config=TrainConfig(steps=10, **FAST), param_groups=groups,
                   progress=False)
    after = model.state_dict()
    for key in before:
        if key.startswith("stem."):
            assert torch.equal(before[key], after[key]), f"{key} is frozen but changed"
    assert not torch.equal(before["layer1.0.weight"], after["layer1.0.weight"])
    assert after["fc.weight"].shape == (3, 64)


def test_linear_probe_trains_only_the_head():
    model = _net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    groups = training.prepare_finetune(model, FinetuneConfig(mode="linear"))
    training.train(model, training.Standard(), _task(256, 1), config=TrainConfig(steps=10, **FAST),
                   param_groups=groups, progress=False)
    changed = {k for k, v in model.state_dict().items() if not torch.equal(before[k], v)}
    assert changed == {"fc.weight", "fc.bias"}


def test_head_and_backbone_learning_rates():
    model = _net()
    groups = training.prepare_finetune(model, FinetuneConfig(head_lr=0.1, backbone_lr=0.001))
    assert [g.get("lr") for g in groups] == [0.001, 0.1]
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in model.fc.parameters()}
    # The schedule scales each group's own rate (the optimiser holds these same group dicts).
    config = TrainConfig(steps=2, schedule="step", milestones=(0.5,), gamma=0.5, **FAST)
    training.train(model, training.Standard(), _task(128, 1), config=config, param_groups=groups, progress=False)
    assert [g["lr"] for g in groups] == [0.0005, 0.05]


def test_finetune_config_errors():
    with pytest.raises(ValueError, match="mode must be one of"):
        FinetuneConfig(mode="partial")
    with pytest.raises(ValueError, match="freeze_stages must be an int >= 1"):
        FinetuneConfig(mode="freeze")
    with pytest.raises(ValueError, match="freeze_stages=5 but the model has 2 stages"):
        training.prepare_finetune(_net(), FinetuneConfig(mode="freeze", freeze_stages=5))


# ----------------------------------------------------------------------------------------- the loop


def test_learning_rate_schedules():
    cosine = TrainConfig(steps=100)
    assert training.learning_rate_factor(cosine, 0, 100) == 1.0
    assert abs(training.learning_rate_factor(cosine, 50, 100) - 0.5) < 1e-12
    step = TrainConfig(steps=100, schedule="step", milestones=(0.5, 0.75), gamma=0.1)
    assert [training.learning_rate_factor(step, s, 100) for s in (0, 49, 50, 74, 75, 99)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01]
    )
    warm = TrainConfig(steps=100, warmup_steps=4, schedule="constant")
    assert [training.learning_rate_factor(warm, s, 100) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]


def test_train_config_errors():
    with pytest.raises(ValueError, match="exactly one of epochs and steps"):
        TrainConfig()
    with pytest.raises(ValueError, match="optimizer must be"):
        TrainConfig(steps=1, optimizer="lbfgs")
    with pytest.raises(ValueError, match="select='val_accuracy' needs val_data"):
        training.train(_net(), training.Standard(), _task(64, 1), config=TrainConfig(steps=1, select="val_accuracy"),
                       progress=False)


class InterruptAt(training.PGDAdversarial):
    """PGD-AT interrupted on its n-th call, after its forward passes (mid-step): by a real SIGINT
    (Ctrl-C), or by a KeyboardInterrupt raised from inside the objective."""

    def __call__(self, net, module, x, y, *, seed):
        calls = getattr(module, "_calls", 0) + 1
        module._calls = calls
        out = super().__call__(net, module, x, y, seed=seed)
        if calls == int(os.environ.get("NONROBUST_TEST_INTERRUPT_AT", "0")):
            if os.environ["NONROBUST_TEST_INTERRUPT_BY"] == "signal":
                os.kill(os.getpid(), signal.SIGINT)
            else:
                raise KeyboardInterrupt
        return out


# Call 6 is mid-epoch (4 steps per epoch: epoch 1, batch 2), call 8 the last of an epoch and call 9 the first.
@pytest.mark.parametrize("interrupt_at", [6, 8, 9])
@pytest.mark.parametrize("by", ["signal", "raise"])
def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(tmp_path, monkeypatch, interrupt_at, by):
    """A signal takes effect at the end of the step it lands in: that step completes and is saved.
    A KeyboardInterrupt raised mid-step saves nothing: the last checkpoint (an epoch end) stands."""
    data = _task(256, seed=1)  # 4 batches of 64 per epoch
    config = TrainConfig(epochs=3, **FAST)
    objective = InterruptAt(eps=0.1, steps=2)

    reference = _net()
    training.train(reference, objective, data, config=config, out_dir=tmp_path / "full", progress=False)

    monkeypatch.setenv("NONROBUST_TEST_INTERRUPT_AT", str(interrupt_at))
    monkeypatch.setenv("NONROBUST_TEST_INTERRUPT_BY", by)
    model = _net()
    with pytest.raises(KeyboardInterrupt):
        training.train(model, objective, data, config=config, out_dir=tmp_path / "run", progress=False)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the previous handler is back
    saved = torch.load(tmp_path / "run" / training.loop.CHECKPOINT, weights_only=True)
    expected = interrupt_at if by == "signal" else 4 * ((interrupt_at - 1) // 4)
    assert saved["step"] == expected and not saved["finished"]
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]

    monkeypatch.delenv("NONROBUST_TEST_INTERRUPT_AT")
    resumed = _net(seed=123)  # different initial weights: everything must come from the checkpoint
    result = training.train(resumed, objective, data, config=config, out_dir=tmp_path / "run", progress=False)
    assert result.resumed_from == expected
    for (key, a), b in zip(reference.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), key
    lines = [json.loads(line) for line in (tmp_path / "run" / training.loop.METRICS).read_text().splitlines()]
    assert [line["step"] for line in lines] == [4, 8, 12]


def test_a_finished_run_is_reused_and_a_different_run_is_refused(tmp_path):
    data = _task(128, seed=1)
    config = TrainConfig(steps=4, **FAST)
    model = _net()
    training.train(model, training.Standard(), data, config=config, out_dir=tmp_path, progress=False)
    again = _net(seed=5)
    result = training.train(again, training.Standard(), data, config=config, out_dir=tmp_path, progress=False)
    assert result.resumed_from == 4 and result.steps == 4
    for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="written by a different run.*lr"):
        training.train(_net(), training.Standard(), data, config=TrainConfig(steps=4, **{**FAST, "lr": 0.01}),
                       out_dir=tmp_path, progress=False)
    # resume=False starts over in the same folder.
    fresh = training.train(_net(), training.Standard(), data, config=TrainConfig(steps=2, **FAST), out_dir=tmp_path,
                           resume=False, progress=False)
    assert fresh.resumed_from == 0 and fresh.steps == 2


def test_a_killed_process_resumes_from_its_last_checkpoint(tmp_path):
    """SIGKILL gives no chance to save: the run resumes from the last periodic checkpoint, which the
    atomic write guarantees is complete, and still ends where an uninterrupted run ends."""
    script = textwrap.dedent(f"""
        import os, sys, torch
        sys.path.insert(0, {str(HERE)!r})
        from test_training import TinyNet, _task, FAST
        from nonrobust_ext import training
        class Slow(training.Standard):
            def __call__(self, net, module, x, y, *, seed):
                if os.environ.get("SLOW"):
                    import time; time.sleep(0.05)
                return super().__call__(net, module, x, y, seed=seed)
        torch.manual_seed(0)
        model = TinyNet()
        training.train(model, Slow(), _task(256, 1), config=training.TrainConfig(epochs=40, **FAST),
                       out_dir=sys.argv[1], progress=False)
        torch.save(model.state_dict(), os.path.join(sys.argv[1], "final.pt"))
    """)
    path = tmp_path / "run.py"
    path.write_text(script)
    run = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(path), str(run)], env={**os.environ, "SLOW": "1"})
    checkpoint = run / training.loop.CHECKPOINT
    for _ in range(600):
        if checkpoint.exists() and torch.load(checkpoint, weights_only=True)["step"] >= 8:
            break
        if proc.poll() is not None:
            break
        import time

        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    step = torch.load(checkpoint, weights_only=True)["step"]
    assert 8 <= step < 160
    subprocess.run([sys.executable, str(path), str(run)], check=True)
    subprocess.run([sys.executable, str(path), str(tmp_path / "clean")], check=True)
    resumed = torch.load(run / "final.pt", weights_only=True)
    clean = torch.load(tmp_path / "clean" / "final.pt", weights_only=True)
    for key in clean:
        assert torch.equal(resumed[key], clean[key]), key


def test_validation_selects_the_best_checkpoint(tmp_path):
    train_data, val = _task(256, seed=1), _task(256, seed=3)
    config = TrainConfig(steps=12, checkpoint_every=2, select="val_accuracy", **{**FAST, "lr": 0.5})
    model = _net()
    result = training.train(model, training.Standard(), train_data, config=config, val_data=val, out_dir=tmp_path,
                            progress=False)
    accuracies = [line["val_accuracy"] for line in result.history]
    assert result.best["value"] == max(accuracies)
    assert training.evaluate(model, val)["val_accuracy"] == pytest.approx(max(accuracies))
    assert (tmp_path / training.loop.BEST).exists()


def test_robust_validation_reports_robust_accuracy():
    model = _net()
    config = TrainConfig(steps=4, checkpoint_every=2, select="val_robust_accuracy", **FAST)
    result = training.train(model, training.Standard(), _task(128, 1), config=config, val_data=_task(128, 3),
                            val_attack={"attack": "pgd", "eps": 0.1, "steps": 3, "seed": 0}, progress=False)
    assert all(line["val_robust_accuracy"] <= line["val_accuracy"] for line in result.history)


# ---------------------------------------------------------------------------------------------- DDP

_DDP_WORKER = textwrap.dedent("""
    import os, sys, torch, torch.distributed as dist
    sys.path.insert(0, sys.argv[3])
    from _helpers import end_gloo_worker
    from test_training import TinyNet, _task, FAST
    from nonrobust_ext import training

    def main(rank, world, store_path, out):
        dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank, world_size=world)
        config = training.TrainConfig(steps=6, **FAST)
        torch.manual_seed(0)
        standard = TinyNet(batch_norm=False)
        result = training.train(standard, training.Standard(), _task(256, 1), config=config, val_data=_task(64, 3),
                                progress=False)
        torch.manual_seed(0)
        robust = TinyNet(batch_norm=False)
        training.train(robust, training.PGDAdversarial(eps=0.1, steps=2), _task(256, 1), config=config,
                       out_dir=os.path.join(out, "pgd"), progress=False)
        torch.save({"standard": standard.state_dict(), "robust": robust.state_dict(),
                    "val": result.history[-1]["val_accuracy"]}, os.path.join(out, f"rank{rank}.pt"))
        end_gloo_worker()

    if __name__ == "__main__":
        import torch.multiprocessing as mp
        mp.spawn(main, args=(2, sys.argv[1], sys.argv[2]), nprocs=2)
""")


def test_ddp_with_two_gloo_processes_matches_one_process(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(_DDP_WORKER)
    subprocess.run([sys.executable, str(script), str(tmp_path / "store"), str(tmp_path), str(HERE)], check=True,
                   timeout=300)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    torch.manual_seed(0)
    single = TinyNet(batch_norm=False)
    result = training.train(single, training.Standard(), _task(256, 1), config=TrainConfig(steps=6, **FAST),
                            val_data=_task(64, 3), progress=False)
    for key, value in single.state_dict().items():
        for kind in ("standard", "robust"):
            assert torch.equal(ranks[0][kind][key], ranks[1][kind][key]), f"ranks disagree on {kind} {key}"
        # Each rank trains on its half of every global batch; the all-reduced mean gradient is the
        # single process's up to the order of the float sums.
        torch.testing.assert_close(ranks[0]["standard"][key], value, atol=1e-5, rtol=1e-5)
    # Evaluation sums the ranks' counts: the same accuracy as one process on the whole set.
    assert ranks[0]["val"] == ranks[1]["val"] == pytest.approx(result.history[-1]["val_accuracy"])
    # Rank 0 alone wrote the PGD-AT run's files.
    assert (tmp_path / "pgd" / training.loop.CHECKPOINT).exists()


def test_pretrain_save_load_finetune_with_dm_on_a_library_model(tmp_path):
    """The study's path end to end at toy scale: pretrain a resnet8 on source classes, save it, load it
    into a new model for 5 target classes (new head, first two stages frozen) and fine-tune with DM."""
    from nonrobust_ext import data, models

    source = data.synthetic(128, num_classes=10, shape=(1, 28, 28), seed=1)
    pretrained = models.create("resnet8", num_classes=10, in_channels=1, mean=[0.5], std=[0.25])
    training.train(pretrained, training.Standard(), source, config=TrainConfig(steps=2, **FAST), progress=False)
    models.save_weights(pretrained, tmp_path / "pretrained.pt")

    target = data.synthetic(64, num_classes=5, shape=(1, 28, 28), seed=2)
    model = models.create("resnet8", num_classes=10, in_channels=1)
    report = models.load_weights(model, tmp_path / "pretrained.pt")
    assert report.normalization_from_file and model.normalize.mean.flatten().tolist() == [0.5]
    groups = training.prepare_finetune(model, FinetuneConfig(mode="freeze", freeze_stages=2, num_classes=5,
                                                             head_lr=0.1, backbone_lr=0.01))
    frozen = {k: v.clone() for k, v in model.state_dict().items() if k.startswith(("conv1", "bn1", "layer1"))}
    assert frozen, "resnet8's first two stages should hold parameters"
    result = training.train(model, training.DM(eps=0.05, steps=2, beta=0.5), target,
                            config=TrainConfig(steps=3, **FAST), param_groups=groups, progress=False)
    assert result.steps == 3 and model.fc.out_features == 5
    for key, value in frozen.items():
        assert torch.equal(model.state_dict()[key], value), key


def test_dm_loss_is_cross_entropy_plus_beta_times_the_mean_squared_feature_distance():
    from nonrobust_ext.attacks import feature_pgd

    model = _net(batch_norm=False)  # no BatchNorm: the joint clean+adversarial forward equals two forwards
    x, y = pattern_task(32, seed=4)
    loss, _ = training.DM(eps=0.05, steps=2, beta=0.7)(model, model, x, y, seed=3)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    x_adv = feature_pgd(model.forward_features, x, eps=0.05, steps=2, seed=3, module=model)
    distance = (model.forward_features(x_adv) - model.forward_features(x)).square().sum(dim=1).mean()
    expected = torch.nn.functional.cross_entropy(model(x), y) + 0.7 * distance
    torch.testing.assert_close(loss, expected)
    for got, want in zip(grads, torch.autograd.grad(expected, list(model.parameters())), strict=True):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


# ------------------------------------------------------------------- robust fine-tuning methods (issue 16)


def test_epsilon_scheduling_is_clean_then_a_linear_ramp_then_the_full_radius():
    scheduled = training.EpsilonScheduled(training.PGDAdversarial(eps=0.08, steps=3), start=0.25, end=0.75)
    assert [scheduled.radius(p) for p in (0.0, 0.25, 0.5, 0.75, 1.0)] == pytest.approx([0, 0, 0.04, 0.08, 0.08])
    assert scheduled.at(0.1) == training.Standard()  # radius 0: the clean loss, no attack run
    half = scheduled.at(0.5)
    assert type(half) is training.PGDAdversarial and half.eps == pytest.approx(0.04) and half.steps == 3
    assert scheduled.at(0.9) == training.PGDAdversarial(eps=0.08, steps=3)
    assert training.Standard().at(0.5) == training.Standard()
    assert scheduled.describe() == {"name": "eps_scheduled", "start": 0.25, "end": 0.75,
                                    "objective": training.PGDAdversarial(eps=0.08, steps=3).describe()}
    with pytest.raises(ValueError, match="start must be < end"):
        training.EpsilonScheduled(training.TRADES(), start=0.5, end=0.5)
    with pytest.raises(TypeError, match="objective must be a training objective with a radius"):
        training.EpsilonScheduled(training.Standard())
    with pytest.raises(ValueError, match="end"):
        training.EpsilonScheduled(training.TRADES(), end=1.5)


def test_epsilon_scheduled_training_lowers_its_loss_and_buys_robustness():
    train_data, test = _task(1024, seed=1), _task(512, seed=2)
    config = TrainConfig(epochs=4, **FAST)
    standard = _net()
    training.train(standard, training.Standard(), train_data, config=config, progress=False)
    scheduled = _net()
    objective = training.EpsilonScheduled(training.PGDAdversarial(eps=0.08, steps=5))
    result = training.train(scheduled, objective, train_data, config=TrainConfig(epochs=4, **FAST), progress=False)
    losses = [line["train_loss"] for line in result.history]
    assert losses[1] < losses[0], losses  # the clean first quarter learns; later epochs train against attacks
    assert _accuracy(scheduled, test) > 0.9
    assert _accuracy(scheduled, test, 0.08) > _accuracy(standard, test, 0.08) + 0.4


def test_an_interrupted_epsilon_scheduled_run_resumes_exactly(tmp_path, monkeypatch):
    """The schedule depends on the step alone: a run interrupted in its ramp continues it exactly."""
    data = _task(256, seed=1)
    config = TrainConfig(epochs=3, **FAST)
    objective = training.EpsilonScheduled(InterruptAt(eps=0.1, steps=2), start=0.25, end=0.75)
    reference = _net()
    training.train(reference, objective, data, config=config, out_dir=tmp_path / "full", progress=False)
    monkeypatch.setenv("NONROBUST_TEST_INTERRUPT_AT", "3")  # the attack's 3rd call: step 6 of 12, in the ramp
    monkeypatch.setenv("NONROBUST_TEST_INTERRUPT_BY", "signal")
    with pytest.raises(KeyboardInterrupt):
        training.train(_net(), objective, data, config=config, out_dir=tmp_path / "run", progress=False)
    monkeypatch.delenv("NONROBUST_TEST_INTERRUPT_AT")
    resumed = _net(seed=123)
    result = training.train(resumed, objective, data, config=config, out_dir=tmp_path / "run", progress=False)
    assert 0 < result.resumed_from < 12
    for (key, a), b in zip(reference.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), key


def test_frozen_batchnorm_keeps_the_pretrained_statistics_and_trains_the_rest():
    model = _net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    groups = training.prepare_finetune(model, FinetuneConfig(freeze_bn=True))
    result = training.train(model, training.Standard(), _task(256, 1), config=TrainConfig(steps=10, **FAST),
                            param_groups=groups, progress=False)
    after = model.state_dict()
    for key in ("stem.1.running_mean", "stem.1.running_var", "stem.1.num_batches_tracked"):
        assert torch.equal(before[key], after[key]), key
    for key in ("stem.1.weight", "stem.0.weight", "layer1.0.weight", "fc.weight"):  # BN's affine weights train
        assert not torch.equal(before[key], after[key]), key
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"] or len(result.history) == 1
    # Without the option the statistics move.
    plain = _net()
    training.train(plain, training.Standard(), _task(256, 1), config=TrainConfig(steps=10, **FAST),
                   param_groups=training.prepare_finetune(plain, FinetuneConfig()), progress=False)
    assert not torch.equal(before["stem.1.running_mean"], plain.state_dict()["stem.1.running_mean"])
    with pytest.raises(TypeError, match="freeze_bn"):
        FinetuneConfig(freeze_bn=1)


@pytest.fixture(scope="module")
def standard_pretrained() -> dict[str, torch.Tensor]:
    """A toy model trained without attacks (accurate, not robust): the pretrained weights the robust
    fine-tuning methods start from, as the study's arms start from the ImageNet weights."""
    model = _net()
    training.train(model, training.Standard(), _task(1024, seed=1), config=TrainConfig(epochs=4, **FAST),
                   progress=False)
    return {k: v.clone() for k, v in model.state_dict().items()}


PGD_AT = training.PGDAdversarial(eps=0.08, steps=5)


# The study's arms (--methods) as training options: (objective, FinetuneConfig options, LP-FT probe first).
@pytest.mark.parametrize("objective, setup, probe", [
    (PGD_AT, {}, False),
    (training.TRADES(eps=0.08, steps=5, beta=6.0), {}, False),
    (training.EpsilonScheduled(PGD_AT, start=0.25, end=0.75), {}, False),
    (PGD_AT, {}, True),
    (PGD_AT, {"freeze_bn": True}, False),
], ids=["pgd_at", "trades", "eps_schedule", "lp_ft", "frozen_bn"])
def test_each_robust_fine_tuning_method_lowers_its_loss_and_beats_plain_fine_tuning_under_attack(
        standard_pretrained, objective, setup, probe):
    train_data, test = _task(1024, seed=1), _task(512, seed=2)
    tune = TrainConfig(steps=64, **{**FAST, "lr": 0.01})

    def from_pretrained() -> TinyNet:
        torch.manual_seed(3)
        model = _net()
        model.load_state_dict(standard_pretrained)
        return model

    plain = from_pretrained()
    training.train(plain, training.Standard(), train_data, config=tune, progress=False,
                   param_groups=training.prepare_finetune(plain, FinetuneConfig(num_classes=4)))
    model = from_pretrained()
    config = FinetuneConfig(num_classes=4, **setup)
    if probe:
        _, run = training.linear_probe_then_finetune(model, objective, train_data, probe=TrainConfig(steps=16, **FAST),
                                                     finetune=tune, setup=config, progress=False)
    else:
        run = training.train(model, objective, train_data, config=tune, progress=False,
                             param_groups=training.prepare_finetune(model, config))
    assert run.steps == 64
    # Its loss falls: the method's own objective at full strength (the scheduled one's last radius), on
    # the training images, before (the pretrained weights) and after fine-tuning.
    losses = (_objective_loss(objective, from_pretrained(), train_data), _objective_loss(objective, model, train_data))
    assert losses[1] < 0.5 * losses[0], losses  # measured: PGD-AT 3.12 -> 0.47, frozen BN 3.12 -> 1.13
    assert _accuracy(model, test) > 0.9
    accs = {"plain": _accuracy(plain, test, 0.08), "method": _accuracy(model, test, 0.08)}
    # Measured (2-core Xeon, AVX-512), robust accuracy at eps 0.08: plain fine-tuning 0.033; PGD-AT 0.898,
    # TRADES 0.965, eps scheduling 0.471, LP-FT 0.947, frozen BN 0.631. On this one-BatchNorm toy the
    # frozen statistics cost robustness against PGD-AT with batch statistics, and at lr 0.1 the run
    # collapses to chance (the frozen statistics no longer normalise what the moving convolution
    # produces); on the study's backbone it is the other way round (docs/arms_quick).
    assert accs["method"] > accs["plain"] + 0.3, accs


def _objective_loss(objective: training.Objective, model: TinyNet, data: TensorData) -> float:
    """``objective`` at the end of its schedule, on ``data``, the model in eval mode."""
    model.eval()
    loss, _ = objective.at(1.0)(model, model, data.x[:512], data.y[:512], seed=0)
    return float(loss.detach())


def test_wise_ft_interpolates_every_shared_weight_and_keeps_the_new_head():
    pretrained = _net(seed=0, num_classes=4)
    finetuned = _net(seed=1, num_classes=3)  # a new head: other classes
    before = {k: v.clone() for k, v in finetuned.state_dict().items()}
    for alpha in (0.0, 0.3, 1.0):
        mixed = training.interpolate_weights(pretrained, finetuned, alpha)
        state, start = mixed.state_dict(), pretrained.state_dict()
        for key, value in state.items():
            if key.startswith("fc.") or key.endswith("num_batches_tracked"):
                assert torch.equal(value, before[key]), key  # not shared (shape) or not a weight
            else:
                torch.testing.assert_close(value, (1 - alpha) * start[key] + alpha * before[key])
    for key, value in finetuned.state_dict().items():
        assert torch.equal(value, before[key]), "finetuned itself is left as it was"
    assert training.interpolate_weights(pretrained.state_dict(), finetuned, 0.5).fc.out_features == 3
    # A new head with the old one's shape (as many classes) is kept only when asked: its rows are other classes.
    same_shape = _net(seed=2, num_classes=4)
    mixed = training.interpolate_weights(pretrained, same_shape, 0.5, keep=("fc",)).state_dict()
    assert torch.equal(mixed["fc.weight"], same_shape.fc.weight) and torch.equal(mixed["fc.bias"], same_shape.fc.bias)
    torch.testing.assert_close(mixed["stem.0.weight"], (pretrained.stem[0].weight + same_shape.stem[0].weight) / 2)
    assert not torch.equal(training.interpolate_weights(pretrained, same_shape, 0.5).fc.weight, same_shape.fc.weight)
    with pytest.raises(TypeError, match="keep must be a sequence of module names"):
        training.interpolate_weights(pretrained, finetuned, 0.5, keep="fc")
    with pytest.raises(ValueError, match="alpha"):
        training.interpolate_weights(pretrained, finetuned, 1.5)
    with pytest.raises(ValueError, match="shares no weight"):
        training.interpolate_weights(torch.nn.Linear(2, 2), finetuned, 0.5)
    with pytest.raises(TypeError, match="pretrained must be"):
        training.interpolate_weights("weights.pt", finetuned, 0.5)


def test_wise_ft_from_a_robust_model_trades_robustness_for_accuracy_along_alpha():
    """A robust model fine-tuned without attacks loses robustness; interpolating back towards it
    recovers some: robust accuracy at alpha 0.5 is above the fine-tuned model's (alpha 1)."""
    train_data, test = _task(1024, seed=1), _task(512, seed=2)
    robust = _net()
    training.train(robust, training.PGDAdversarial(eps=0.08, steps=5), train_data, config=TrainConfig(epochs=4, **FAST),
                   progress=False)
    tuned = training.interpolate_weights(robust, robust, 1.0)  # a copy, fine-tuned below
    training.train(tuned, training.Standard(), train_data, config=TrainConfig(epochs=4, **{**FAST, "lr": 0.1}),
                   progress=False)
    robust_acc = {alpha: _accuracy(training.interpolate_weights(robust, tuned, alpha), test, 0.08)
                  for alpha in (0.0, 0.5, 1.0)}
    # Measured (2-core Xeon, AVX-512): 0.961 at alpha 0, 0.955 at 0.5, 0.896 at 1.
    assert robust_acc[0.5] > robust_acc[1.0] + 0.02, robust_acc


def test_lp_ft_probes_the_head_then_tunes_everything_and_resumes_each_phase(tmp_path):
    model = _net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = _task(256, seed=1)
    data = TensorData(data.x, data.y % 3, ["a", "b", "c"])
    probe, tune = TrainConfig(steps=6, **FAST), TrainConfig(steps=6, **FAST)
    first, second = training.linear_probe_then_finetune(
        model, training.Standard(), data, probe=probe, finetune=tune, setup=FinetuneConfig(num_classes=3),
        out_dir=tmp_path, progress=False)
    assert (first.steps, second.steps) == (6, 6) and model.fc.out_features == 3
    probed = torch.load(tmp_path / "probe" / training.loop.CHECKPOINT, weights_only=True)["model"]
    # the probe moved the head alone (a new one: 3 classes); the fine-tuning moved the backbone too
    assert all(torch.equal(before[k], v) for k, v in probed.items() if not k.startswith("fc."))
    assert not torch.equal(before["stem.0.weight"], model.state_dict()["stem.0.weight"])
    assert all(p.requires_grad for p in model.parameters())
    assert second.history[-1]["train_loss"] < first.history[0]["train_loss"]
    again = _net(seed=9)
    a, b = training.linear_probe_then_finetune(again, training.Standard(), data, probe=probe, finetune=tune,
                                                setup=FinetuneConfig(num_classes=3), out_dir=tmp_path, progress=False)
    assert (a.resumed_from, b.resumed_from) == (6, 6)
    for x, y in zip(model.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(x, y)
    with pytest.raises(ValueError, match="setup.mode='linear'"):
        training.linear_probe_then_finetune(_net(), training.Standard(), data, probe=probe, finetune=tune,
                                            setup=FinetuneConfig(mode="linear"))


def test_lp_ft_from_a_robust_model_keeps_more_robustness_than_plain_fine_tuning():
    """The probe fits the new head before the backbone moves: less of the robust features is lost."""
    train_data, test = _task(1024, seed=1), _task(512, seed=2)
    robust = _net()
    training.train(robust, training.PGDAdversarial(eps=0.08, steps=5), train_data, config=TrainConfig(epochs=4, **FAST),
                   progress=False)
    state = {k: v.clone() for k, v in robust.state_dict().items()}
    tune = TrainConfig(epochs=2, **{**FAST, "lr": 0.1})

    def fresh() -> TinyNet:
        model = _net()
        model.load_state_dict(state)
        return model

    torch.manual_seed(3)
    plain = fresh()
    training.train(plain, training.Standard(), train_data, config=tune, progress=False,
                   param_groups=training.prepare_finetune(plain, FinetuneConfig(num_classes=4)))
    torch.manual_seed(3)
    lp_ft = fresh()
    training.linear_probe_then_finetune(lp_ft, training.Standard(), train_data, probe=TrainConfig(epochs=2, **FAST),
                                        finetune=tune, setup=FinetuneConfig(num_classes=4), progress=False)
    accs = {"plain": _accuracy(plain, test, 0.08), "lp_ft": _accuracy(lp_ft, test, 0.08)}
    # Measured (2-core Xeon, AVX-512): 0.816 against 0.248, both 1.0 clean.
    assert accs["lp_ft"] > accs["plain"] + 0.2, accs
