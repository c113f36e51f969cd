"""apgd: x_init projection, the result, restarts, losses, the DLR loss and the checkpoint schedule,
strength on a model trained in the test, and parity with torchattacks.APGD. The contract every attack
keeps (ball, bounds, modes, layouts, batch consistency, determinism, early stop, ...) is in
test_attack_contract.py, bad input in test_bad_input_attacks.py."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _helpers import SmallCNN
from _helpers import ball_norm as _ball_norm
from _helpers import random_batch as _batch

import nonrobust_ext
from nonrobust_ext.attacks._common import margin
from nonrobust_ext.attacks.apgd import apgd, checkpoint_schedule, dlr_loss

NORMS = ["linf", "l2"]




def _near_start(x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (x + 0.02 * torch.randn(x.shape, generator=g, dtype=x.dtype)).clamp(0, 1)


# ---------------------------------------------------------------------------------------- semantics


@pytest.mark.parametrize("norm", NORMS)
def test_x_init_is_projected_onto_the_ball_and_the_bounds(cnn, norm):
    """x_init can be the returned point (the loss may never rise above it), so it must be projected."""
    x, y = _batch()
    far = x + torch.where(torch.rand_like(x) > 0.5, 0.5, -0.5)
    x_adv = apgd(cnn, x, y, eps=0.05, steps=3, norm=norm, x_init=far)
    assert bool((x_adv >= 0).all() and (x_adv <= 1).all())
    assert bool((_ball_norm(x_adv - x, norm) <= 0.05 * (1 + 1e-6)).all())


@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_result_describes_the_returned_batch(cnn, loss):
    x, y = _batch(n=16)
    res = apgd(cnn, x, y, eps=0.1, steps=10, loss=loss, seed=0, return_result=True)
    with torch.no_grad():
        logits = cnn.eval()(res.x_adv)
    assert torch.equal(logits.argmax(1) != y, res.success)
    want = F.cross_entropy(logits, y, reduction="none") if loss == "ce" else dlr_loss(logits, y)
    torch.testing.assert_close(res.loss, want, atol=1e-5, rtol=0)
    assert bool((res.steps == 10).all()) and bool((res.restart == 0).all())


def test_restarts_keep_the_per_sample_worst_case(cnn):
    x, y = _batch(n=16)
    one = apgd(cnn, x, y, eps=0.02, steps=5, seed=3, return_result=True)
    many = apgd(cnn, x, y, eps=0.02, steps=5, seed=3, restarts=4, return_result=True)
    # Restart 0 of `many` is `one` (same seed stream); the kept result is never worse, per sample.
    assert bool((many.success >= one.success).all())
    same = many.success == one.success
    assert bool((many.loss[same] >= one.loss[same] - 1e-6).all())
    assert int(many.restart.max()) > 0, "with 4 restarts some sample should improve on restart 0"
    # Fooled samples are not attacked again: they keep restart 0's point.
    assert torch.equal(many.x_adv[one.success], one.x_adv[one.success])
    with torch.no_grad():
        logits = cnn.eval()(many.x_adv)
    assert torch.equal(logits.argmax(1) != y, many.success)
    torch.testing.assert_close(F.cross_entropy(logits, y, reduction="none"), many.loss, atol=1e-5, rtol=0)


@pytest.mark.parametrize("loss", ["cw", lambda z, y: -z.gather(1, y[:, None]).squeeze(1)])
def test_other_losses(cnn, loss):
    x, y = _batch()
    res = apgd(cnn, x, y, eps=0.05, steps=5, loss=loss, seed=0, return_result=True)
    assert float((res.x_adv - x).abs().max()) <= 0.05 + 1e-6
    with torch.no_grad():
        logits = cnn.eval()(res.x_adv)
    want = loss(logits, y) if callable(loss) else -margin(logits, y)
    torch.testing.assert_close(res.loss, want, atol=1e-5, rtol=0)


def test_targeted_ce_moves_towards_the_target(trained):
    model, x, y = trained
    x, y = x[:128], y[:128]
    target = (y + 1) % 4
    res = apgd(model, x, target, eps=0.3, steps=20, targeted=True, seed=0, return_result=True)
    with torch.no_grad():
        assert torch.equal(model(res.x_adv).argmax(1) == target, res.success)
    assert float(res.success.float().mean()) > 0.95


# ---------------------------------------------------------------------------- DLR and the schedule


def test_dlr_loss_formula_and_invariance():
    z = torch.tensor([[3.0, 1.0, 0.5, -1.0], [0.0, 2.0, 1.0, 4.0]], dtype=torch.float64)
    y = torch.tensor([0, 1])
    # Sample 0 is classified correctly: -(3 - 1) / (3 - 0.5). Sample 1 is not: -(2 - 4) / (4 - 1).
    torch.testing.assert_close(dlr_loss(z, y), torch.tensor([-2 / 2.5, 2 / 3], dtype=torch.float64))
    # Shifting and rescaling the logits leaves it unchanged (unlike the cross-entropy).
    torch.testing.assert_close(dlr_loss(7.0 * z - 3.0, y), dlr_loss(z, y))


def test_dlr_needs_three_classes():
    two_class = SmallCNN(num_classes=2)
    x, y = _batch()
    with pytest.raises(ValueError, match="loss='dlr' needs at least 3 classes"):
        apgd(two_class, x, y % 2, eps=0.05, steps=2, loss="dlr")
    apgd(two_class, x, y % 2, eps=0.05, steps=2, loss="ce")  # the model itself is fine


def test_checkpoints_follow_the_published_schedule():
    # p = 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99 of 100 iterations (Croce & Hein, 2020, Sec. 3.2).
    assert checkpoint_schedule(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoint_schedule(50) == [11, 21, 30, 38, 45]
    assert checkpoint_schedule(1) == [1]


# ------------------------------------------------------------------------------- trained model


def test_apgd_is_at_least_as_strong_as_pgd_and_far_stronger_than_noise(trained):
    model, x, y = trained
    x, y = x[:128], y[:128]

    def accuracy(inputs):
        with torch.no_grad():
            return float((model(inputs).argmax(1) == y).float().mean())

    eps = 0.125  # where PGD-10 leaves about half the samples classified correctly
    noise = accuracy((x + eps * torch.randint(0, 2, x.shape).float().mul(2).sub(1)).clamp(0, 1))
    pgd10 = accuracy(nonrobust_ext.pgd(model, x, y, eps=eps, steps=10, seed=0))
    apgd_ce = accuracy(apgd(model, x, y, eps=eps, steps=20, seed=0))
    apgd_dlr = accuracy(apgd(model, x, y, eps=eps, steps=20, loss="dlr", seed=0))
    assert 0.2 < pgd10 < 0.9, f"eps={eps} no longer separates the attacks (PGD-10 accuracy {pgd10})"
    assert apgd_ce <= pgd10 + 0.01, (apgd_ce, pgd10)
    assert apgd_dlr <= pgd10 + 0.01, (apgd_dlr, pgd10)
    assert noise > 0.9 and max(apgd_ce, apgd_dlr) < noise - 0.3, (noise, apgd_ce, apgd_dlr)
    apgd_l2 = accuracy(apgd(model, x, y, eps=0.75, steps=20, norm="l2", seed=0))
    pgd_l2 = accuracy(nonrobust_ext.pgd(model, x, y, eps=0.75, steps=10, norm="l2", seed=0))
    assert 0.2 < pgd_l2 < 0.9 and apgd_l2 <= pgd_l2 + 0.01, (apgd_l2, pgd_l2)


# -------------------------------------------------------------------------------- torchattacks parity


def _paper_apgd_class(torchattacks):
    """torchattacks.APGD with condition 1 computed as the paper states it, like apgd does: the first
    step of the first interval is compared with the loss at the start (torchattacks compares it with a
    zero from a not yet filled row of its loss history), losses are compared at full precision (it
    stores that history in float32) and the inequality is strict (it uses <=)."""

    class PaperAPGD(torchattacks.APGD):
        def attack_single_run(self, x_in, y_in):
            self._labels, self._losses = y_in, []
            return super().attack_single_run(x_in, y_in)

        def get_logits(self, inputs, *args, **kwargs):
            z = super().get_logits(inputs, *args, **kwargs)
            if hasattr(self, "_losses"):  # every forward inside a run: the start, then one per step
                loss = self.dlr_loss(z, self._labels) if self.loss == "dlr" else F.cross_entropy(z, self._labels, reduction="none")
                self._losses.append(loss.detach().numpy())
            return z

        def check_oscillation(self, x, j, k, y5, k3=0.75):
            window = np.stack(self._losses[j + 1 - k : j + 2])  # the losses at x^(j+1-k) .. x^(j+1)
            return (window[1:] > window[:-1]).sum(axis=0) < k * k3

    return PaperAPGD


def _replay_torchattacks_start(model, x, y, eps, norm, seed=None):
    """torchattacks' random start, drawn from torch's global RNG after the same seeding: a float32
    direction with its L-inf (L2) norm scaled to eps; with its default `cheap` mode only the samples
    the model classifies correctly are attacked, so only they draw noise."""
    attacked = torch.ones_like(y, dtype=torch.bool)
    if seed is not None:
        torch.manual_seed(seed)
        with torch.no_grad():
            attacked = model(x).argmax(1) == y
    n = int(attacked.sum())
    if norm == "linf":
        t = 2 * torch.rand(x[attacked].shape) - 1
        direction = t / t.reshape(n, -1).abs().max(1, keepdim=True)[0].reshape(-1, 1, 1, 1)
    else:
        t = torch.randn(x[attacked].shape)
        direction = t / ((t**2).sum(dim=(1, 2, 3), keepdim=True).sqrt() + 1e-12)
    start = x.clone()
    start[attacked] = (x[attacked] + eps * torch.ones([n, 1, 1, 1]) * direction).clamp(0, 1)
    return start


@pytest.fixture(scope="module")
def parity_setup(trained):
    model, x, y = trained
    return copy.deepcopy(model).double(), x[:64].double(), y[:64]


# Dyadic eps: torchattacks builds its step size 2 * eps in float32, which is exact only for these.
@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_linf_matches_torchattacks_apgd_from_the_same_start(parity_setup, loss):
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = parity_setup
    eps, steps, seed = 0.125, 30, 3
    start = _replay_torchattacks_start(model, x, y, eps, "linf", seed=seed)
    ours = apgd(model, x, y, eps=eps, steps=steps, loss=loss, x_init=start, return_result=True)

    theirs = _paper_apgd_class(torchattacks)(model, eps=eps, steps=steps, seed=seed, loss=loss)(x, y)
    with torch.no_grad():
        robust = model(theirs).argmax(1) == y
    assert 0.1 < float(robust.float().mean()) < 0.9, "the batch should mix fooled and robust samples"
    assert torch.equal(~ours.success, robust)
    # Same arithmetic step for step (the fused step op clips exactly as torch.clamp does): bit-equal.
    # torchattacks returns x where the attack failed; we return the highest-loss point there.
    torch.testing.assert_close(ours.x_adv[~robust], theirs[~robust], atol=0, rtol=0)

    # Unmodified torchattacks: condition 1 differs in the details above, which moves a few borderline
    # checkpoint decisions; the robust samples are the same but for at most one or two in 64.
    unmodified = torchattacks.APGD(model, eps=eps, steps=steps, seed=seed, loss=loss)(x, y)
    with torch.no_grad():
        robust_unmodified = model(unmodified).argmax(1) == y
    assert int((robust_unmodified != ~ours.success).sum()) <= 2


@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_linf_single_run_matches_torchattacks_on_every_sample(parity_setup, loss):
    """torchattacks' single run attacks every sample (also the clean-misclassified ones) and reports
    both points apgd chooses from: the last fooling iterate and the highest-loss point with its loss."""
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = parity_setup
    eps, steps = 0.125, 30
    torch.manual_seed(11)
    start = _replay_torchattacks_start(model, x, y, eps, "linf")
    ours = apgd(model, x, y, eps=eps, steps=steps, loss=loss, x_init=start, return_result=True)
    torch.manual_seed(11)
    attack = _paper_apgd_class(torchattacks)(model, eps=eps, steps=steps, loss=loss)
    x_best, robust, loss_best, x_fooled = attack.attack_single_run(x, y)
    assert bool(robust.any()) and not bool(robust.all())
    assert torch.equal(~ours.success, robust)
    torch.testing.assert_close(ours.x_adv[~robust], x_fooled[~robust], atol=0, rtol=0)
    torch.testing.assert_close(ours.x_adv[robust], x_best[robust], atol=0, rtol=0)
    torch.testing.assert_close(ours.loss[robust], loss_best[robust], atol=0, rtol=0)


def test_l2_matches_torchattacks_apgd_from_the_same_start(parity_setup):
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = parity_setup
    eps, steps, seed = 0.75, 20, 0
    start = _replay_torchattacks_start(model, x, y, eps, "l2", seed=seed)
    ours = apgd(model, x, y, eps=eps, steps=steps, norm="l2", x_init=start, return_result=True)
    theirs = _paper_apgd_class(torchattacks)(model, norm="L2", eps=eps, steps=steps, seed=seed)(x, y)
    with torch.no_grad():
        robust = model(theirs).argmax(1) == y
    assert 0.1 < float(robust.float().mean()) < 0.9
    assert torch.equal(~ours.success, robust)
    # The fused L2 step projects with d * eps / ||d||, torchattacks with d / (||d|| + 1e-12) * eps:
    # 1e-12 relative differences per step, which the momentum iteration amplifies over 20 steps.
    torch.testing.assert_close(ours.x_adv[~robust], theirs[~robust], atol=1e-7, rtol=0)
