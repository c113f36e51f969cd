"""autoattack: the cascade (APGD-CE, APGD-T, FAB-T, Square on the points still robust), its log, its
verification of every claimed point, reproducibility, parity with torchattacks' AutoAttack, bad input."""

from __future__ import annotations

import pytest
import torch
from _helpers import DEVICES, ball_norm

import nonrobust_ext
from nonrobust_ext.attacks.autoattack import AutoAttackResult, autoattack

# A cheap cascade for the tests that check its mechanics (the standard budget is for the parity test).
CHEAP = {"steps": 10, "queries": 50, "target_classes": 3}


@pytest.mark.parametrize("norm, eps", [("linf", 0.05), ("l2", 0.3)])
def test_points_are_adversarial_inside_the_ball_and_the_log_adds_up(ten_class, norm, eps):
    model, x, y = ten_class
    x, y = x[:64], y[:64]
    res = autoattack(model, x, y, eps=eps, norm=norm, return_result=True, **CHEAP)
    assert isinstance(res, AutoAttackResult) and res.attacks == ("apgd-ce", "apgd-t", "fab-t", "square")
    assert bool((ball_norm(res.x_adv - x, norm) <= eps * (1 + 1e-5) + 1e-7).all())
    assert bool((res.x_adv >= 0).all() and (res.x_adv <= 1).all())
    with torch.no_grad():
        clean_pred, adv_pred = model(x).argmax(1), model(res.x_adv).argmax(1)
    assert torch.equal(res.success, adv_pred != y), "success is the model's verdict on x_adv"
    assert torch.equal(res.broken_by == -1, clean_pred != y)
    assert torch.equal(res.x_adv[res.broken_by < 0], x[res.broken_by < 0]), "unbroken samples are returned as x"
    assert res.clean_accuracy == pytest.approx(float((clean_pred == y).float().mean()))
    assert res.robust_accuracy == pytest.approx(float((~res.success).float().mean()))
    # The log: robust accuracy never rises along the cascade and ends at the result's; each stage
    # attacks what the one before left.
    accuracies = [line.robust_accuracy for line in res.log]
    assert accuracies == sorted(accuracies, reverse=True) and accuracies[-1] == res.robust_accuracy
    assert res.log[0].attacked == int((clean_pred == y).sum())
    for before, after in zip(res.log, res.log[1:], strict=False):
        assert after.attacked == before.attacked - before.broken
    assert sum(line.broken for line in res.log) == int((res.broken_by >= 0).sum())
    assert 0 < res.robust_accuracy < res.clean_accuracy, "the radius should leave some samples robust"
    assert "apgd-t" in res.summary() and res.settings["standard"] is False


def test_the_first_stage_is_apgd_ce_and_the_cascade_is_never_weaker(ten_class):
    """AutoAttack's first stage is APGD-CE on the correctly classified samples, with the first block's
    generator: run alone with that generator it breaks exactly the same samples; the whole cascade
    breaks at least those."""
    model, x, y = ten_class
    eps, seed = 0.04, 3
    # The model itself (no channels-last copy), so that both runs do the same arithmetic.
    res = autoattack(model, x, y, eps=eps, seed=seed, channels_last=False, return_result=True, **CHEAP)
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    alone = nonrobust_ext.apgd(model, x[correct], y[correct], eps=eps, steps=CHEAP["steps"], early_stop=True,
                               generator=torch.Generator().manual_seed(seed << 24), return_result=True)
    assert torch.equal(res.broken_by[correct] == 0, alone.success)
    assert int((res.broken_by >= 0).sum()) >= int(alone.success.sum())
    assert res.log[0].broken == int(alone.success.sum())


def test_reproducible_under_a_seed(ten_class):
    model, x, y = ten_class
    x, y = x[:48], y[:48]
    a = autoattack(model, x, y, eps=0.05, seed=1, return_result=True, **CHEAP)
    b = autoattack(model, x, y, eps=0.05, seed=1, return_result=True, **CHEAP)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.broken_by, b.broken_by)
    assert torch.equal(autoattack(model, x, y, eps=0.05, seed=1, **CHEAP), a.x_adv)


class _GradBatchSizes(torch.nn.Module):
    """The model, recording the batch size of every call made with autograd on."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model, self.sizes = model, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            self.sizes.append(x.shape[0])
        return self.model(x)


def test_apgd_t_batches_as_many_targets_as_fit_in_batch_size(ten_class):
    """batch_size bounds the rows of an APGD-T pass (samples x targets batched together): with room for
    all 3 targets of 16 samples, a pass has 48 rows; with room for 20 rows, no pass has more."""
    model, x, y = ten_class
    x, y = x[:16], y[:16]
    with torch.no_grad():
        assert bool((model(x).argmax(1) == y).all()), "the test wants 16 clean-correct samples"
    options = {**CHEAP, "channels_last": False, "return_result": True, "eps": 0.03}
    runs = {}
    for batch_size in (64, 20):
        recorder = _GradBatchSizes(model)
        res = autoattack(recorder, x, y, batch_size=batch_size, **options)
        runs[batch_size] = (res, recorder.sizes)
    (wide, wide_sizes), (narrow, narrow_sizes) = runs[64], runs[20]
    todo = wide.log[1].attacked  # the samples APGD-T ran on
    assert todo > 0
    assert max(wide_sizes) == 3 * todo, "all three targets in one pass"
    assert narrow.log[1].attacked > 20 // 3, "the test wants more APGD-T rows than fit in 20 with 3 targets"
    assert max(narrow_sizes) <= 20
    assert 3 * narrow.log[1].attacked not in narrow_sizes


def test_model_modes_grads_and_input_untouched(ten_class):
    model, x, y = ten_class
    x, y = x[:16].clone(), y[:16]
    before = x.clone()
    model.zero_grad(set_to_none=True)
    model.train()
    try:
        autoattack(model, x, y, eps=0.05, **CHEAP)
        assert model.training, "the model's mode is restored"
    finally:
        model.eval()
    assert torch.equal(x, before)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.slow
@pytest.mark.parametrize("norm, eps", [("linf", 0.04), ("l2", 0.25)])
def test_robust_accuracy_within_one_point_of_torchattacks_autoattack(ten_class, norm, eps):
    """The standard cascade, standard budget, against torchattacks' AutoAttack on the same 200 images:
    within 1 point of robust accuracy."""
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = ten_class
    theirs = torchattacks.AutoAttack(model, norm="Linf" if norm == "linf" else "L2", eps=eps, version="standard",
                                     n_classes=10, seed=0)(x, y)
    with torch.no_grad():
        their_accuracy = float((model(theirs).argmax(1) == y).float().mean())
    ours = autoattack(model, x, y, eps=eps, norm=norm, return_result=True)
    assert 0 < their_accuracy < 0.9, "the radius should leave some, not all, samples robust"
    assert abs(ours.robust_accuracy - their_accuracy) <= 0.01 + 1e-9, (ours.robust_accuracy, their_accuracy)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("norm, eps", [("linf", 0.05), ("l2", 0.3)])
def test_the_cascade_on_a_device_agrees_with_the_cpu(ten_class, device, norm, eps):
    """Every stage runs on the device (Square draws its randomness on the CPU: the same windows); the
    device's arithmetic differs in the last bits, so a sample on the boundary may fall either way."""
    model, x, y = ten_class
    x, y = x[:64], y[:64]
    cpu = autoattack(model, x, y, eps=eps, norm=norm, seed=2, return_result=True, **CHEAP)
    on_device = autoattack(model.to(device), x.to(device), y.to(device), eps=eps, norm=norm, seed=2,
                           return_result=True, **CHEAP)
    model.to("cpu")
    assert on_device.x_adv.device.type == device
    assert bool((ball_norm(on_device.x_adv.cpu() - x, norm) <= eps * (1 + 1e-5) + 1e-7).all())
    assert abs(int(on_device.success.sum()) - int(cpu.success.sum())) <= 2
    assert [line.attack for line in on_device.log] == [line.attack for line in cpu.log]


def test_is_public():
    assert nonrobust_ext.autoattack is autoattack


# ------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("options, error, match", [
    ({"eps": 0.0}, ValueError, "eps must be > 0"),
    ({"eps": -0.1}, ValueError, "eps"),
    ({"eps": float("nan")}, ValueError, "eps"),
    ({"eps": 0.1, "version": "plus"}, ValueError, "version"),
    ({"eps": 0.1, "norm": "l1"}, ValueError, "norm"),
    ({"eps": 0.1, "steps": 0}, ValueError, "steps"),
    ({"eps": 0.1, "queries": 0}, ValueError, "queries"),
    ({"eps": 0.1, "target_classes": 0}, ValueError, "target_classes"),
    ({"eps": 0.1, "batch_size": 0}, ValueError, "batch_size"),
    ({"eps": 0.1, "seed": -1}, ValueError, "seed"),
])
def test_bad_options_are_named(ten_class, options, error, match):
    model, x, y = ten_class
    with pytest.raises(error, match=match):
        autoattack(model, x[:4], y[:4], **options)


def test_bad_data_is_named(ten_class):
    model, x, y = ten_class
    x, y = x[:4], y[:4]
    with pytest.raises(ValueError, match="labels y must be in"):
        autoattack(model, x, torch.tensor([0, 1, 2, 10]), eps=0.1)
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        autoattack(model, bad, y, eps=0.1)
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        autoattack(lambda t: t.flatten(1)[:, :10], x.flatten(2), y, eps=0.1)
    two = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))
    with pytest.raises(ValueError, match="at least 3 classes"):
        autoattack(two, x, y % 2, eps=0.1)
    with pytest.raises(RuntimeError, match="process group"):
        autoattack(model, x, y, eps=0.1, distributed=True)


# ------------------------------------------------------------------------ the channels-last copy


class _FlattensWithView(torch.nn.Module):
    """A conv model whose forward ``.view``s an activation: it fails on channels-last activations."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, 4, 3, padding=1)
        self.head = torch.nn.LazyLinear(10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x))
        return self.head(h.view(h.shape[0], -1))


def test_a_cpu_conv_model_is_attacked_through_a_channels_last_copy_that_finds_the_same(ten_class):
    """On the CPU a conv model runs as a channels-last copy by default; the copy is the same function
    (up to rounding), so the cascade breaks the same samples (a sample on the boundary may fall either
    way), and the model itself is left as it was."""
    model, x, y = ten_class
    weights = {name: (p.data_ptr(), p.stride()) for name, p in model.named_parameters()}
    copied = autoattack(model, x, y, eps=0.05, seed=4, return_result=True, **CHEAP)
    plain = autoattack(model, x, y, eps=0.05, seed=4, channels_last=False, return_result=True, **CHEAP)
    assert copied.settings["channels_last"] is True and plain.settings["channels_last"] is False
    assert 0 < int(plain.success.sum()) < len(y)
    assert int((copied.success != plain.success).sum()) <= 2
    assert {name: (p.data_ptr(), p.stride()) for name, p in model.named_parameters()} == weights
    assert bool((ball_norm(copied.x_adv - x, "linf") <= 0.05 * (1 + 1e-5) + 1e-7).all())


def test_no_copy_where_it_cannot_help_or_cannot_be_made(ten_class):
    model, x, y = ten_class
    x, y = x[:16], y[:16]
    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(x[0].numel(), 10))
    assert autoattack(mlp, x, y, eps=0.05, return_result=True, **CHEAP).settings["channels_last"] is False
    already = model.to(memory_format=torch.channels_last)  # nothing left to convert
    assert autoattack(already, x, y, eps=0.05, return_result=True, **CHEAP).settings["channels_last"] is False
    viewing = _FlattensWithView(x.shape[1])
    viewing(x)  # materialise the lazy head
    # auto: the copy fails on its first batch, so the model itself is attacked, silently
    assert autoattack(viewing, x, y % 10, eps=0.05, return_result=True, **CHEAP).settings["channels_last"] is False
    # asked for: the same, with a warning that says why
    with pytest.warns(UserWarning, match="channels_last=True: attacking the model as it is: the channels-last copy"):
        res = autoattack(viewing, x, y % 10, eps=0.05, channels_last=True, return_result=True, **CHEAP)
    assert res.settings["channels_last"] is False
    with pytest.warns(UserWarning, match="not an nn.Module"):
        autoattack(lambda t: mlp(t), x, y, eps=0.05, channels_last=True, **CHEAP)


def test_channels_last_must_be_a_bool_or_none(ten_class):
    model, x, y = ten_class
    with pytest.raises(TypeError, match="channels_last"):
        autoattack(model, x[:4], y[:4], eps=0.1, channels_last="yes")
