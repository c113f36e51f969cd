"""pgd / fgsm: restarts, losses, FGSM's closed form, amp, parity with torchattacks, and success on a
model trained in the test. The contract every attack keeps (ball, bounds, modes, layouts, batch
consistency, determinism, early stop, ...) is in test_attack_contract.py, bad input in
test_bad_input_attacks.py."""

from __future__ import annotations

import pytest
import torch
from _helpers import random_batch as _batch

import nonrobust_ext

NORMS = ["linf", "l2"]



# ---------------------------------------------------------------------------------------- semantics


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
