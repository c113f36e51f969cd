"""pgd / fgsm: invariants, semantics users rely on, argument errors, parity with torchattacks, and
success on a model trained in the test."""

from __future__ import annotations

import pytest
import torch
from _helpers import SmallCNN

import nonrobust_ext

NORMS = ["linf", "l2"]


def _batch(n=6, channels=3, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, channels, 8, 8, generator=g, dtype=dtype)
    y = torch.randint(0, 4, (n,), generator=g)
    return x, y


def _ball_norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    flat = delta.flatten(1).double()
    return flat.abs().amax(dim=1) if norm == "linf" else flat.norm(dim=1)


# ------------------------------------------------------------------------------------- invariants


@pytest.mark.parametrize("norm", NORMS)
def test_result_is_inside_the_ball_and_the_bounds(cnn, norm):
    x, y = _batch()
    eps = torch.tensor([0.0, 0.01, 0.03, 0.1, 0.3, 1.0])
    x_adv = nonrobust_ext.pgd(cnn, x, y, eps=eps, steps=5, norm=norm, seed=0)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert bool((x_adv >= 0).all() and (x_adv <= 1).all())
    assert bool((_ball_norm(x_adv - x, norm) <= eps.double() * (1 + 1e-6) + 1e-7).all())
    assert torch.equal(x_adv[0], x[0])  # eps = 0 gives x


@pytest.mark.parametrize("norm", NORMS)
def test_eps_zero_returns_x(cnn, norm):
    x, y = _batch()
    assert torch.equal(nonrobust_ext.pgd(cnn, x, y, eps=0.0, steps=3, norm=norm), x)


@pytest.mark.parametrize("norm", NORMS)
def test_batch_consistency(cnn, norm):
    """A sample attacked alone equals the same sample attacked inside the batch (same start)."""
    cnn = cnn.double()
    x, y = _batch(dtype=torch.float64)
    start = (x + 0.02 * torch.randn_like(x)).clamp(0, 1)
    full = nonrobust_ext.pgd(cnn, x, y, eps=0.05, steps=4, norm=norm, x_init=start)
    for i in (0, 3, 5):
        alone = nonrobust_ext.pgd(cnn, x[i : i + 1], y[i : i + 1], eps=0.05, steps=4, norm=norm, x_init=start[i : i + 1])
        torch.testing.assert_close(alone[0], full[i], atol=1e-10, rtol=0)


@pytest.mark.parametrize("norm", NORMS)
def test_scalar_and_per_sample_eps_agree(cnn, norm):
    x, y = _batch()
    a = nonrobust_ext.pgd(cnn, x, y, eps=0.03, steps=3, norm=norm, seed=1)
    b = nonrobust_ext.pgd(cnn, x, y, eps=torch.full((6,), 0.03), steps=3, norm=norm, seed=1)
    assert torch.equal(a, b)


def test_eps_as_a_list(cnn):
    x, y = _batch()
    eps = [0.01, 0.02, 0.03, 0.04, 0.05, 0.06]
    assert torch.equal(
        nonrobust_ext.pgd(cnn, x, y, eps=eps, steps=2, seed=0),
        nonrobust_ext.pgd(cnn, x, y, eps=torch.tensor(eps), steps=2, seed=0),
    )


@pytest.mark.parametrize("norm", NORMS)
def test_deterministic_under_a_seed(cnn, norm):
    x, y = _batch()
    a = nonrobust_ext.pgd(cnn, x, y, eps=0.05, steps=3, norm=norm, seed=5)
    b = nonrobust_ext.pgd(cnn, x, y, eps=0.05, steps=3, norm=norm, seed=5)
    torch.manual_seed(9)
    c = nonrobust_ext.pgd(cnn, x, y, eps=0.05, steps=3, norm=norm)
    torch.manual_seed(9)
    d = nonrobust_ext.pgd(cnn, x, y, eps=0.05, steps=3, norm=norm)
    e = nonrobust_ext.pgd(cnn, x, y, eps=0.05, steps=3, norm=norm, seed=6)
    assert torch.equal(a, b) and torch.equal(c, d)
    assert not torch.equal(a, e)


def test_parameter_grads_untouched_input_untouched_modes_restored(cnn):
    x, y = _batch()
    x_before = x.clone()
    cnn.train()
    cnn.features[1].eval()  # a frozen BatchNorm inside a training model must stay frozen
    for p in cnn.parameters():
        p.grad = None
    cnn.head.weight.grad = torch.full_like(cnn.head.weight, 7.0)
    cnn.modes_seen.clear()
    nonrobust_ext.pgd(cnn, x, y, eps=0.05, steps=3, restarts=2, seed=0)
    assert cnn.modes_seen and not any(cnn.modes_seen), "the attack must run the model in eval mode"
    assert cnn.training and not cnn.features[1].training and cnn.head.training
    assert torch.equal(cnn.head.weight.grad, torch.full_like(cnn.head.weight, 7.0))
    assert all(p.grad is None for name, p in cnn.named_parameters() if name != "head.weight")
    assert torch.equal(x, x_before)


def test_channels_last_is_preserved(cnn):
    x, y = _batch()
    x = x.contiguous(memory_format=torch.channels_last)
    x_adv = nonrobust_ext.pgd(cnn, x, y, eps=0.05, steps=2, seed=0)
    assert x_adv.is_contiguous(memory_format=torch.channels_last)
    ref = nonrobust_ext.pgd(cnn, x.contiguous(), y, eps=0.05, steps=2, seed=0)
    torch.testing.assert_close(x_adv, ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("output,selector", [("tuple", 1), ("tuple", -1), ("dict", "logits"), ("dict", lambda o: o["logits"])])
def test_models_returning_tuples_and_dicts(output, selector):
    torch.manual_seed(0)
    plain = SmallCNN()
    wrapped = SmallCNN(output=output)
    wrapped.load_state_dict(plain.state_dict())
    x, y = _batch()
    want = nonrobust_ext.pgd(plain, x, y, eps=0.05, steps=3, seed=2)
    got = nonrobust_ext.pgd(wrapped, x, y, eps=0.05, steps=3, seed=2, logits=selector)
    assert torch.equal(got, want)
    with pytest.raises(TypeError, match="logits="):
        nonrobust_ext.pgd(wrapped, x, y, eps=0.05, steps=3)


class Normalize(torch.nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


@pytest.mark.parametrize("norm", NORMS)
def test_normalisation_inside_or_outside_the_model_agree(cnn, norm):
    """Per-channel bounds and scale let users attack normalised inputs with eps in pixel units."""
    cnn = cnn.double()
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
    inside = torch.nn.Sequential(Normalize(mean, std), cnn).double()
    m, s = torch.tensor(mean, dtype=torch.float64), torch.tensor(std, dtype=torch.float64)
    view = (1, 3, 1, 1)
    x, y = _batch(dtype=torch.float64)
    start = (x + 0.02 * torch.randn_like(x)).clamp(0, 1)
    pixel = nonrobust_ext.pgd(inside, x, y, eps=0.05, steps=4, norm=norm, x_init=start)
    normalised = nonrobust_ext.pgd(
        cnn, (x - m.view(view)) / s.view(view), y, eps=0.05, steps=4, norm=norm,
        x_init=(start - m.view(view)) / s.view(view), bounds=(-m / s, (1 - m) / s), scale=1 / s,
    )
    torch.testing.assert_close(normalised * s.view(view) + m.view(view), pixel, atol=1e-9, rtol=0)


@pytest.mark.parametrize("norm", NORMS)
def test_restarts_keep_the_per_sample_worst_case(cnn, norm):
    x, y = _batch(n=16)
    one = nonrobust_ext.pgd(cnn, x, y, eps=0.02, steps=2, norm=norm, seed=3, return_result=True)
    many = nonrobust_ext.pgd(cnn, x, y, eps=0.02, steps=2, norm=norm, seed=3, restarts=4, return_result=True)
    # Restart 0 of `many` is `one` (same seed stream); the kept result is never worse, per sample.
    assert bool((many.success >= one.success).all())
    same = many.success == one.success
    assert bool((many.loss[same] >= one.loss[same] - 1e-6).all())
    assert int(many.restart.max()) > 0, "with 4 restarts some sample should improve on restart 0"
    with torch.no_grad():
        logits = cnn.eval()(many.x_adv)
    torch.testing.assert_close(
        torch.nn.functional.cross_entropy(logits, y, reduction="none"), many.loss, atol=1e-5, rtol=0
    )
    assert torch.equal(logits.argmax(1) != y, many.success)


def test_early_stop_freezes_fooled_samples(cnn):
    x, y = _batch(n=32)
    full = nonrobust_ext.pgd(cnn, x, y, eps=0.3, steps=10, seed=0, return_result=True)
    early = nonrobust_ext.pgd(cnn, x, y, eps=0.3, steps=10, seed=0, early_stop=True, return_result=True)
    assert bool(early.success.any())
    assert int(early.steps.sum()) < int(full.steps.sum())
    assert bool((early.steps <= 10).all()) and bool((full.steps == 10).all())


@pytest.mark.parametrize("loss", ["cw", lambda z, y: -z.gather(1, y[:, None]).squeeze(1)])
def test_other_losses(cnn, loss):
    x, y = _batch()
    x_adv = nonrobust_ext.pgd(cnn, x, y, eps=0.05, steps=3, loss=loss, seed=0)
    assert float((x_adv - x).abs().max()) <= 0.05 + 1e-6


def test_fgsm_and_fgsm_rs(cnn):
    x, y = _batch()
    x_adv = nonrobust_ext.fgsm(cnn, x, y, eps=0.03)
    x_req = x.clone().requires_grad_(True)
    cnn.eval()
    loss = torch.nn.functional.cross_entropy(cnn(x_req), y, reduction="sum")
    (g,) = torch.autograd.grad(loss, x_req)
    torch.testing.assert_close(x_adv, (x + 0.03 * g.sign()).clamp(0, 1), atol=1e-6, rtol=0)
    rs = nonrobust_ext.fgsm(cnn, x, y, eps=0.03, random_start=True, seed=0)
    assert float((rs - x).abs().max()) <= 0.03 + 1e-6
    assert not torch.equal(rs, x_adv)


# ------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(eps=-0.1), ValueError, "eps must be >= 0"),
        (dict(eps=float("nan")), ValueError, "eps must be finite"),
        (dict(eps=torch.ones(5) * 0.1), ValueError, "eps must be one value or one per sample"),
        (dict(eps=0.1, steps=0), ValueError, "steps must be >= 1"),
        (dict(eps=0.1, steps=2.5), TypeError, "steps must be an int"),
        (dict(eps=0.1, restarts=0), ValueError, "restarts must be >= 1"),
        (dict(eps=0.1, norm="l1"), ValueError, "norm must be one of 'linf', 'l2', got 'l1'"),
        (dict(eps=0.1, loss="hinge"), ValueError, "loss must be 'ce', 'cw' or a callable"),
        (dict(eps=0.1, alpha=-1.0), ValueError, "alpha must be >= 0"),
        (dict(eps=0.1, bounds=(1.0, 0.0)), ValueError, "bounds must have lo <= hi"),
        (dict(eps=0.1, bounds=(float("nan"), 1.0)), ValueError, "bounds must not be NaN"),
        (dict(eps=0.1, bounds=("0", 1.0)), TypeError, "bounds"),
        (dict(eps="0.1"), TypeError, "eps must be a number"),
        (dict(eps=0.1, bounds=(0.2, 1.0)), ValueError, "x has values outside bounds"),
        (dict(eps=0.1, scale=[1.0, 0.0, 1.0]), ValueError, "scale must be > 0"),
        (dict(eps=0.1, scale=float("nan")), ValueError, "scale must be > 0 and finite"),
        (dict(eps=0.1, seed=1, generator=torch.Generator()), ValueError, "seed or generator"),
        (dict(eps=0.1, x_init=torch.zeros(2, 3, 8, 8)), ValueError, "x_init"),
    ],
)
def test_bad_arguments_name_the_argument(cnn, kwargs, error, match):
    x, y = _batch()
    with pytest.raises(error, match=match):
        nonrobust_ext.pgd(cnn, x, y, **kwargs)


def test_bad_inputs_name_the_argument(cnn):
    x, y = _batch()
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        nonrobust_ext.pgd(cnn, (x * 255).to(torch.uint8), y, eps=0.1)
    with pytest.raises(TypeError, match="y must hold integer class indices"):
        nonrobust_ext.pgd(cnn, x, y.float(), eps=0.1)
    with pytest.raises(ValueError, match=r"y must have shape \[B\] = \[6\]"):
        nonrobust_ext.pgd(cnn, x, y[:4], eps=0.1)
    with pytest.raises(ValueError, match=r"labels y must be in \[0, 4\)"):
        nonrobust_ext.pgd(cnn, x, y + 4, eps=0.1)
    with pytest.raises(ValueError, match="x must be a batch"):
        nonrobust_ext.pgd(cnn, x[0, 0, 0], y[:1], eps=0.1)
    with pytest.raises(ValueError, match="loss must return one value per sample"):
        nonrobust_ext.pgd(cnn, x, y, eps=0.1, loss=lambda z, t: z.sum())


# ------------------------------------------------------------------------------------------------ amp


def test_amp_bfloat16_keeps_fp32_state_and_fools_the_model(trained):
    model, x, y = trained
    res = nonrobust_ext.pgd(model, x, y, eps=0.25, steps=10, seed=0, amp=torch.bfloat16, return_result=True)
    assert res.x_adv.dtype == torch.float32
    assert float((res.x_adv - x).abs().max()) <= 0.25 + 1e-6
    with torch.no_grad():
        accuracy = float((model(res.x_adv).argmax(1) == y).float().mean())
    assert accuracy < 0.05
    fp32 = nonrobust_ext.pgd(model, x, y, eps=0.25, steps=10, seed=0, return_result=True)
    assert abs(float(res.success.float().mean()) - float(fp32.success.float().mean())) < 0.02


def test_amp_float16_scales_the_loss_and_warns_on_cpu(trained):
    model, x, y = trained
    with pytest.warns(UserWarning, match="float16 on CPU"):
        x_adv = nonrobust_ext.pgd(model, x[:64], y[:64], eps=0.25, steps=5, seed=0, amp=torch.float16, norm="l2")
    assert torch.isfinite(x_adv).all()
    assert bool(((x_adv - x[:64]).flatten(1).norm(dim=1) <= 0.25 + 1e-5).all())
    assert not torch.equal(x_adv, x[:64])


def test_amp_rejects_other_dtypes(cnn):
    x, y = _batch()
    with pytest.raises(ValueError, match="amp must be None, torch.bfloat16 or torch.float16"):
        nonrobust_ext.pgd(cnn, x, y, eps=0.1, amp=torch.float32)


# -------------------------------------------------------------------------------- torchattacks parity


def test_linf_matches_torchattacks_pgd_from_the_same_start(cnn):
    torchattacks = pytest.importorskip("torchattacks")
    cnn = cnn.double().eval()
    x, y = _batch(n=16, dtype=torch.float64)
    eps, alpha, steps = 8 / 255, 2 / 255, 10
    torch.manual_seed(123)
    theirs = torchattacks.PGD(cnn, eps=eps, alpha=alpha, steps=steps, random_start=True)(x, y)
    torch.manual_seed(123)  # replay torchattacks' random start: uniform(-eps, eps), clamp to [0, 1]
    start = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
    ours = nonrobust_ext.pgd(cnn, x, y, eps=eps, alpha=alpha, steps=steps, x_init=start)
    # Both clip x_adv to the same ball; the one-ulp differences between x + clamp(x_adv - x) and
    # clamp(x_adv, x - eps, x + eps) stay one ulp.
    torch.testing.assert_close(ours, theirs, atol=1e-12, rtol=0)


def test_l2_matches_torchattacks_pgdl2_from_the_same_start(cnn):
    torchattacks = pytest.importorskip("torchattacks")
    cnn = cnn.double().eval()
    x, y = _batch(n=16, dtype=torch.float64)
    eps, alpha, steps = 0.5, 0.1, 10
    torch.manual_seed(7)
    theirs = torchattacks.PGDL2(cnn, eps=eps, alpha=alpha, steps=steps, random_start=True)(x, y)
    torch.manual_seed(7)  # replay torchattacks' random start: Gaussian direction, radius eps * U
    delta = torch.empty_like(x).normal_()
    n = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    r = torch.zeros_like(n).uniform_(0, 1)
    start = (x + delta * r / n * eps).clamp(0, 1)
    ours = nonrobust_ext.pgd(cnn, x, y, eps=eps, alpha=alpha, steps=steps, norm="l2", x_init=start)
    # torchattacks divides by ||g|| + 1e-10, we by ||g|| + 1e-12: a relative 1e-10 difference at most.
    torch.testing.assert_close(ours, theirs, atol=1e-8, rtol=0)


# ------------------------------------------------------------------------------- trained model


def test_pgd_fools_a_trained_model_where_random_noise_does_not(trained):
    model, x_test, y_test = trained

    def accuracy(inputs):
        with torch.no_grad():
            return float((model(inputs).argmax(1) == y_test).float().mean())

    eps = 0.25
    clean = accuracy(x_test)
    noise = accuracy((x_test + eps * torch.randint(0, 2, x_test.shape).float().mul(2).sub(1)).clamp(0, 1))
    adversarial = accuracy(nonrobust_ext.pgd(model, x_test, y_test, eps=eps, steps=10, seed=0))
    adversarial_l2 = accuracy(nonrobust_ext.pgd(model, x_test, y_test, eps=eps * 8, steps=10, norm="l2", seed=0))
    fgsm = accuracy(nonrobust_ext.fgsm(model, x_test, y_test, eps=eps))
    assert clean > 0.95
    assert noise > 0.9, f"random +-eps noise should not fool the model (accuracy {noise})"
    assert adversarial < 0.05, f"PGD at eps={eps} should (accuracy {adversarial})"
    assert adversarial_l2 < 0.05, f"L2 PGD at eps={eps * 8} should (accuracy {adversarial_l2})"
    assert fgsm < 0.3


def test_targeted_attack_reaches_the_target(trained):
    model, x, y = trained
    target = (y + 1) % 4
    res = nonrobust_ext.pgd(model, x, target, eps=0.3, steps=20, targeted=True, seed=0, return_result=True)
    with torch.no_grad():
        assert torch.equal(model(res.x_adv).argmax(1) == target, res.success)
        assert float((model(x).argmax(1) == target).float().mean()) < 0.05
    assert float(res.success.float().mean()) > 0.95
