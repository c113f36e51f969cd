"""The attack speed features: ``amp`` (autocast for the model, fp32 state) on every attack, float16 loss
scaling, and ``pgd(cuda_graph=True)`` (CUDA only; on CPU it must warn and compute the same steps)."""

from __future__ import annotations

import functools
import warnings

import pytest
import torch
from _helpers import CUDA

import nonrobust_ext
from nonrobust_ext.attacks._common import Precision, scaled_input_gradient

# Every attack with arguments that make it quick on the 8x8 pattern task; each takes `amp`.
ATTACKS = {
    "pgd": functools.partial(nonrobust_ext.pgd, eps=0.25, steps=5, seed=0),
    "pgd_l2": functools.partial(nonrobust_ext.pgd, eps=2.0, steps=5, norm="l2", seed=0),
    "fgsm": functools.partial(nonrobust_ext.fgsm, eps=0.25),
    "bim": functools.partial(nonrobust_ext.bim, eps=0.25, steps=5),
    "mifgsm": functools.partial(nonrobust_ext.mifgsm, eps=0.25, steps=5),
    "difgsm": functools.partial(nonrobust_ext.difgsm, eps=0.25, steps=5, seed=0),
    "apgd": functools.partial(nonrobust_ext.apgd, eps=0.25, steps=5, seed=0),
    "deepfool": functools.partial(nonrobust_ext.deepfool, steps=20),
    "cw_l2": functools.partial(nonrobust_ext.cw_l2, steps=30, lr=0.05, c=5.0),
}
# Radius each attack is held to (L-inf for the eps-ball attacks, L2 for pgd_l2; None: minimal-norm).
RADIUS = {"pgd": 0.25, "fgsm": 0.25, "bim": 0.25, "mifgsm": 0.25, "difgsm": 0.25, "apgd": 0.25, "pgd_l2": 2.0}


class AutocastRecorder(torch.nn.Module):
    """Wraps a model and records, for every forward, the CPU autocast dtype in effect (or None)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.seen: list[torch.dtype | None] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        enabled = torch.is_autocast_enabled(x.device.type)
        self.seen.append(torch.get_autocast_dtype(x.device.type) if enabled else None)
        return self.model(x)


def _success_rate(model, x_adv, y) -> float:
    with torch.no_grad():
        return float((model(x_adv).argmax(1) != y).float().mean())


@pytest.mark.parametrize("name", list(ATTACKS))
def test_every_forward_of_every_attack_runs_under_the_requested_autocast(trained, name):
    model, x, y = trained
    recorder = AutocastRecorder(model)
    x_adv = ATTACKS[name](recorder, x[:64], y[:64], amp=torch.bfloat16)
    assert recorder.seen, "the attack never called the model"
    assert set(recorder.seen) == {torch.bfloat16}
    # The attack's own state stays in x's dtype and inside the threat model.
    assert x_adv.dtype == torch.float32 and x_adv.shape == x[:64].shape
    assert bool(((x_adv >= 0) & (x_adv <= 1)).all())
    if name in RADIUS:
        delta = (x_adv - x[:64]).flatten(1)
        size = delta.norm(dim=1) if name == "pgd_l2" else delta.abs().amax(dim=1)
        assert float(size.max()) <= RADIUS[name] * (1 + 1e-5)
    # Without amp nothing runs under autocast.
    recorder.seen.clear()
    ATTACKS[name](recorder, x[:8], y[:8])
    assert set(recorder.seen) == {None}


@pytest.mark.parametrize("name", list(ATTACKS))
def test_bfloat16_attacks_fool_the_trained_model_as_often_as_float32(trained, name):
    model, x, y = trained
    x, y = x[:256], y[:256]
    full = _success_rate(model, ATTACKS[name](model, x, y), y)
    mixed = _success_rate(model, ATTACKS[name](model, x, y, amp=torch.bfloat16), y)
    assert full > 0.5, f"{name} should fool the trained model in float32 (success {full:.3f})"
    # bf16 logits carry 8 mantissa bits: a few samples near the boundary may land either way.
    assert abs(mixed - full) <= 0.05, f"{name}: success {mixed:.3f} with bf16 autocast vs {full:.3f} in float32"


@pytest.mark.parametrize("name", list(ATTACKS))
def test_amp_rejects_other_dtypes_in_every_attack(cnn, name):
    x = torch.rand(4, 3, 8, 8)
    y = torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="amp must be None, torch.bfloat16 or torch.float16"):
        ATTACKS[name](cnn, x, y, amp=torch.float64)


def test_the_float16_loss_scale_is_divided_out_of_the_gradient():
    x = torch.randn(5, 3, requires_grad=True)
    value = (x**3).sum(dim=1) * 1e-6
    plain = scaled_input_gradient(value, x, None)
    value = (x**3).sum(dim=1) * 1e-6
    scaled = scaled_input_gradient(value, x, Precision("cpu", None, loss_scale=4096.0))
    # A power-of-two scale is exact in both directions.
    assert torch.equal(plain, scaled)


def test_deepfool_under_float16_autocast_takes_unscaled_steps(trained):
    """DeepFool's step length is |f| / ||grad f||: a loss scale left in the Jacobian would shrink every
    step 4096-fold and the attack would stall far short of the boundary."""
    model, x, y = trained
    x, y = x[:64], y[:64]
    full = nonrobust_ext.deepfool(model, x, y, return_result=True)
    with pytest.warns(UserWarning, match="float16 on CPU"):
        half = nonrobust_ext.deepfool(model, x, y, amp=torch.float16, return_result=True)
    both = full.success & half.success
    assert int(both.sum()) > 48
    ratio = (half.l2[both] / full.l2[both]).median()
    assert 0.8 < float(ratio) < 1.25
    assert float(half.steps.float().mean()) <= float(full.steps.float().mean()) + 1


def test_cw_under_float16_autocast_matches_float32_distances(trained):
    model, x, y = trained
    x, y = x[:64], y[:64]
    kwargs = dict(steps=30, lr=0.05, c=5.0, return_result=True)
    full = nonrobust_ext.cw_l2(model, x, y, **kwargs)
    with pytest.warns(UserWarning, match="float16 on CPU"):
        half = nonrobust_ext.cw_l2(model, x, y, amp=torch.float16, **kwargs)
    both = full.success & half.success
    assert int(both.sum()) > 48
    assert 0.8 < float((half.l2[both] / full.l2[both]).median()) < 1.25


# ------------------------------------------------------------------------------ early stop (compaction)


class BatchSizeRecorder(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(x.shape[0])
        return self.model(x)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_early_stop_keeps_each_sample_where_it_was_first_fooled(trained, norm):
    """Compaction changes which samples the model sees, not the trajectories: a sample stopped after k
    steps sits where the plain attack had it after k steps, and is fooled there."""
    model, x, y = trained
    x, y = x[:128], y[:128]
    eps = 0.12 if norm == "linf" else 1.0
    kwargs = dict(eps=eps, steps=8, alpha=eps / 4, norm=norm, seed=5)
    early = nonrobust_ext.pgd(model, x, y, early_stop=True, return_result=True, **kwargs)
    assert 0 < int(early.success.sum()) < len(y), "the case should mix fooled and robust samples"
    assert len(set(early.steps[early.success].tolist())) > 1, "samples should fall at different steps"
    for k in sorted(set(early.steps.tolist())):
        plain = nonrobust_ext.pgd(model, x, y, **{**kwargs, "steps": max(k, 1)}) if k > 0 else None
        rows = early.steps == k
        expected = plain[rows] if plain is not None else x[rows]
        if k == 0:  # fooled at the start (the random start already fools them)
            expected = nonrobust_ext.pgd(model, x, y, **{**kwargs, "steps": 1}, early_stop=True)[rows]
        torch.testing.assert_close(early.x_adv[rows], expected, atol=1e-6, rtol=0)
    with torch.no_grad():
        fooled = model(early.x_adv).argmax(1) != y
    assert torch.equal(fooled, early.success)


def test_early_stop_runs_the_model_only_on_samples_not_yet_fooled(trained):
    model, x, y = trained
    recorder = BatchSizeRecorder(model)
    res = nonrobust_ext.pgd(recorder, x, y, eps=0.25, steps=10, seed=0, early_stop=True, return_result=True)
    gradient_passes = recorder.sizes[:-1]  # the last forward is the outcome check on the whole batch
    assert gradient_passes[0] == len(y)
    assert gradient_passes == sorted(gradient_passes, reverse=True)
    # Every sample is forwarded at each step it takes, plus once at the step that finds it fooled.
    assert sum(gradient_passes) <= int(res.steps.sum()) + len(y)
    assert sum(gradient_passes) < 0.5 * 10 * len(y)


# ------------------------------------------------------------------------------------------- CUDA graphs


@pytest.mark.parametrize("early_stop", [False, True])
def test_cuda_graph_on_cpu_warns_and_computes_the_eager_steps(cnn, early_stop):
    x = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 4, (16,), generator=torch.Generator().manual_seed(1))
    kwargs = dict(eps=0.1, steps=6, restarts=2, seed=3, early_stop=early_stop, return_result=True)
    eager = nonrobust_ext.pgd(cnn, x, y, **kwargs)
    with pytest.warns(UserWarning, match="CUDA graphs need a CUDA device; running eagerly"):
        graphed = nonrobust_ext.pgd(cnn, x, y, cuda_graph=True, **kwargs)
    for field in ("x_adv", "success", "loss", "steps", "restart"):
        assert torch.equal(getattr(eager, field), getattr(graphed, field)), field


def test_cuda_graph_must_be_a_bool(cnn):
    with pytest.raises(TypeError, match="cuda_graph must be True or False"):
        nonrobust_ext.pgd(cnn, torch.rand(2, 3, 8, 8), torch.zeros(2, dtype=torch.long), eps=0.1, cuda_graph="yes")


def _count_replays(monkeypatch) -> list[int]:
    calls = [0]
    original = torch.cuda.CUDAGraph.replay

    def counting(self):
        calls[0] += 1
        return original(self)

    monkeypatch.setattr(torch.cuda.CUDAGraph, "replay", counting)
    return calls


@pytest.mark.parametrize("device", [CUDA])
@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("early_stop", [False, True])
@pytest.mark.parametrize("amp", [None, torch.bfloat16])
def test_cuda_graph_replays_the_same_steps_as_the_eager_loop(trained, monkeypatch, device, norm, early_stop, amp):
    model, x, y = trained
    model, x, y = model.to(device), x.to(device), y.to(device)
    eps = 0.25 if norm == "linf" else 2.0
    kwargs = dict(eps=eps, steps=8, restarts=2, norm=norm, seed=0, early_stop=early_stop, amp=amp,
                  return_result=True)
    eager = nonrobust_ext.pgd(model, x, y, **kwargs)
    replays = _count_replays(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback
        graphed = nonrobust_ext.pgd(model, x, y, cuda_graph=True, **kwargs)
    # Restart 0: one eager warm-up step, 7 replays; restart 1 (if any sample is left): 8 replays.
    assert replays[0] >= 7
    # The same step kernels run on the same data (they are deterministic: no atomics), yet eager and graphed
    # iterates differ in their last bits on the H200: the difference comes in with the model's gradient
    # (not pinned down: cuDNN's choices under capture are one suspect). L-inf steps along its sign: a sign that rounds
    # differently could move one pixel by one step, so allow a tiny fraction of differing elements. L2
    # steps along g / ||g||: every element then moves by the rounding difference (measured on the H200:
    # at most 1.8e-7 in float32, 1.1e-3 under bfloat16 autocast, in 5-43% of the elements): bound it.
    differ = (eager.x_adv != graphed.x_adv).float().mean()
    gap = (eager.x_adv.double() - graphed.x_adv.double()).abs()
    rows = (gap.flatten(1).amax(1) > 0).float().mean()
    where = (f"{float(differ):.4f} of elements differ, in {float(rows):.3f} of the samples; max |diff| "
             f"{float(gap.max()):.3g}")
    if norm == "linf":
        assert float(differ) < 1e-3, where
    else:
        assert float(gap.max()) <= (1e-5 if amp is None else 1e-2) * eps, where
    assert abs(float(eager.success.float().mean()) - float(graphed.success.float().mean())) <= 1 / len(y)
    if early_stop:
        assert torch.equal(eager.steps, graphed.steps) or float(differ) > 0


@pytest.mark.parametrize("device", [CUDA])
def test_cuda_graph_falls_back_when_the_model_synchronises(trained, device):
    model, x, y = trained
    model, x, y = model.to(device), x[:64].to(device), y[:64].to(device)

    class Synchronising(torch.nn.Module):
        def forward(self, inp):
            if inp.sum().item() < -1:  # a host synchronisation: not capturable
                inp = inp * 0
            return model(inp)

    kwargs = dict(eps=0.25, steps=5, seed=0)
    eager = nonrobust_ext.pgd(Synchronising(), x, y, **kwargs)
    with pytest.warns(UserWarning, match="could not be captured in a CUDA graph"):
        graphed = nonrobust_ext.pgd(Synchronising(), x, y, cuda_graph=True, **kwargs)
    assert float((eager != graphed).float().mean()) < 1e-3
