"""bim / mifgsm / difgsm: the momentum and input-diversity updates, parity with torchattacks, and
success on a model trained in the test. The contract every attack keeps (ball, bounds, modes, layouts,
batch consistency, determinism, early stop, ...) is in test_attack_contract.py, bad input in
test_bad_input_attacks.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _helpers import random_batch as _batch

from nonrobust_ext.attacks.pgd import pgd
from nonrobust_ext.attacks.transfer import bim, difgsm, mifgsm

# Each attack with the options that exercise all of its code: momentum, random start, and for
# difgsm a resize range with several sizes and offsets on 8x8 images, applied at every step.
ATTACKS = {
    "bim": (bim, {}),
    "mifgsm": (mifgsm, {"random_start": True}),
    "difgsm": (difgsm, {"decay": 1.0, "resize_rate": 0.6, "diversity_prob": 1.0, "random_start": True}),
}
SEEDED = ["mifgsm", "difgsm"]
# The trained model flattens its feature map, so it is position-sensitive: gradients of shifted,
# shrunken copies at every step barely fool it on the unshifted image (that is a transfer attack's
# trade-off), and how much depends on the seed. Mild diversity keeps the success tests seed-proof.
ON_TRAINED = {"difgsm": {"resize_rate": 0.9, "diversity_prob": 0.5}}


def _attack(name, model, x, y, **kwargs):
    fn, defaults = ATTACKS[name]
    if name in SEEDED and "generator" not in kwargs:
        kwargs.setdefault("seed", 0)
    return fn(model, x, y, **{**defaults, **kwargs})



def _linf(delta: torch.Tensor) -> torch.Tensor:
    return delta.flatten(1).double().abs().amax(dim=1)


# ---------------------------------------------------------------------------------------- semantics


@pytest.mark.parametrize("name", ["mifgsm", "difgsm"])
def test_bfloat16_momentum_stays_in_the_ball(cnn, name):
    x, y = _batch()
    x = x.bfloat16()
    x_adv = _attack(name, cnn.bfloat16(), x, y, eps=0.05, steps=3)
    assert x_adv.dtype == torch.bfloat16
    assert bool((_linf(x_adv - x) <= 0.05 + 2**-7).all()) and bool((_linf(x_adv - x) > 0).all())


def test_difgsm_transforms_come_from_the_seed_not_the_global_generator(cnn):
    """A seeded attack neither reads nor advances torch's global generator."""
    x, y = _batch()
    kwargs = dict(eps=0.05, steps=4, resize_rate=0.6, diversity_prob=0.5, random_start=False)
    state = torch.get_rng_state()
    a = difgsm(cnn, x, y, seed=3, **kwargs)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(1234)
    assert torch.equal(difgsm(cnn, x, y, seed=3, **kwargs), a)
    # Without a random start the seed only reaches the transforms: other seeds give other results.
    assert any(not torch.equal(difgsm(cnn, x, y, seed=s, **kwargs), a) for s in (4, 5, 6))


# ----------------------------------------------------------------------------------- the updates


def test_bim_is_pgd_from_x_with_step_eps_over_steps(cnn):
    x, y = _batch()
    eps = torch.tensor([0.01, 0.02, 0.03, 0.04, 0.05, 0.06])
    want = pgd(cnn, x, y, eps=eps, steps=4, alpha=eps / 4, random_start=False)
    assert torch.equal(bim(cnn, x, y, eps=eps, steps=4), want)
    assert not torch.equal(bim(cnn, x, y, eps=eps, steps=4, alpha=eps / 2), want)


def _reference_mifgsm(model, x, y, eps, alpha, steps, decay, targeted, loss, lo, hi):
    """MI-FGSM written out with autograd and clamps (no fused op), float64."""
    x_adv, momentum = x.clone(), torch.zeros_like(x)
    radius = eps.view(-1, 1, 1, 1)
    for _ in range(steps):
        x_req = x_adv.clone().requires_grad_(True)
        logits = model(x_req)
        if loss == "ce":
            value = F.cross_entropy(logits, y, reduction="none")
            value = -value if targeted else value
        else:
            others = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(1)
            value = logits.gather(1, y[:, None]).squeeze(1) - others
            value = value if targeted else -value
        (grad,) = torch.autograd.grad(value.sum(), x_req)
        momentum = decay * momentum + grad / grad.abs().mean(dim=(1, 2, 3), keepdim=True)
        x_adv = x_adv + alpha.view(-1, 1, 1, 1) * momentum.sign()
        x_adv = torch.maximum(torch.minimum(x_adv, x + radius), x - radius).clamp(lo, hi)
    return x_adv


@pytest.mark.parametrize("targeted,loss", [(False, "ce"), (True, "ce"), (False, "cw")])
def test_mifgsm_matches_the_momentum_formula(cnn, targeted, loss):
    cnn = cnn.double().eval()
    x, y = _batch(n=8, dtype=torch.float64)
    x = x.clamp(0.1, 0.9)
    eps = torch.linspace(0.01, 0.2, 8, dtype=torch.float64)
    alpha = eps / 3
    want = _reference_mifgsm(cnn, x, y, eps, alpha, 6, 0.7, targeted, loss, 0.1, 0.9)
    got = mifgsm(cnn, x, y, eps=eps, alpha=alpha, steps=6, decay=0.7, targeted=targeted, loss=loss, bounds=(0.1, 0.9))
    torch.testing.assert_close(got, want, atol=1e-12, rtol=0)
    # The momentum matters: without it the attack takes other steps.
    assert not torch.equal(mifgsm(cnn, x, y, eps=eps, alpha=alpha, steps=6, decay=0.0, targeted=targeted, loss=loss, bounds=(0.1, 0.9)), got)


class BottomRightPixel(torch.nn.Module):
    """Logits from the bottom-right pixel only: under a diverse-input transform that pixel is padding,
    so the gradient is exactly zero at those steps."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.head = torch.nn.Linear(3, 4)
        self.saw_padding: list[bool] = []

    def forward(self, x):
        pixel = x[:, :, -1, -1]
        self.saw_padding.append(bool((pixel == 0).all()))
        return self.head(pixel)


def test_a_zero_gradient_adds_nothing_to_the_momentum():
    """0 / mean|0| would be NaN and freeze the sample for good; it must add 0 and let later steps move."""
    model = BottomRightPixel()
    x, y = _batch()
    x = x * 0.8 + 0.1  # no zero pixels: zeros are padding
    x_adv = difgsm(model, x, y, eps=0.1, steps=6, decay=1.0, resize_rate=0.6, diversity_prob=0.5, seed=0)
    assert model.saw_padding[0] and not all(model.saw_padding), "the first step must have a zero gradient, a later one not"
    moved = (x_adv - x).abs()
    assert bool((moved[:, :, -1, -1] > 0.05).all()), "later steps should move the pixel the model reads"
    moved[:, :, -1, -1] = 0
    assert float(moved.max()) == 0.0


def test_difgsm_without_diversity_is_mifgsm(cnn):
    x, y = _batch()
    for decay in (0.0, 1.0):
        plain = mifgsm(cnn, x, y, eps=0.05, steps=4, decay=decay)
        assert torch.equal(difgsm(cnn, x, y, eps=0.05, steps=4, decay=decay, diversity_prob=0.0, seed=0), plain)
        assert not torch.equal(difgsm(cnn, x, y, eps=0.05, steps=4, decay=decay, diversity_prob=1.0, resize_rate=0.6, seed=0), plain)


@pytest.mark.parametrize("resize_rate,sizes", [(0.6, {8}), (1.3, {10}), (2.0, {16})])
def test_difgsm_shows_the_model_resized_and_padded_inputs(cnn, resize_rate, sizes):
    """resize_rate < 1 keeps the model's input size, > 1 pads to int(W * resize_rate); the resized
    image inside the zero padding takes several sizes and offsets across steps."""
    x, y = _batch()
    x = x * 0.9 + 0.1  # no zero pixels inside the image: zeros mark the padding
    seen = []
    cnn.features.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    difgsm(cnn, x, y, eps=0.05, steps=12, resize_rate=resize_rate, diversity_prob=1.0, seed=0)
    assert {t.shape[-1] for t in seen} == sizes and len(seen) == 12
    inner = [tuple((t[0, 0] != 0).nonzero().amax(0).tolist() + (t[0, 0] != 0).nonzero().amin(0).tolist()) for t in seen]
    assert len(set(inner)) > 2, f"the resized image should move and change size, got boxes {set(inner)}"
    assert all(bool((t[0, 0, -1] == 0).all() and (t[0, 0, :, -1] == 0).all()) for t in seen)


def test_difgsm_nearest_and_bilinear_differ(cnn):
    x, y = _batch()
    kwargs = dict(eps=0.05, steps=4, resize_rate=0.6, diversity_prob=1.0, seed=0)
    assert not torch.equal(difgsm(cnn, x, y, interpolation="nearest", **kwargs), difgsm(cnn, x, y, interpolation="bilinear", **kwargs))


# -------------------------------------------------------------------------------- torchattacks parity
# A batch of 12 (not a power of two) so that torchattacks' mean-reduced loss scales the gradient by an
# inexact 1/B: the parity then shows that the per-sample L1 normalisation cancels that scale.


def _parity_setup(cnn):
    torchattacks = pytest.importorskip("torchattacks")
    x, y = _batch(n=12, dtype=torch.float64)
    return torchattacks, cnn.double().eval(), x, y


def test_bim_matches_torchattacks(cnn):
    torchattacks, cnn, x, y = _parity_setup(cnn)
    theirs = torchattacks.BIM(cnn, eps=8 / 255, alpha=2 / 255, steps=10)(x, y)
    torch.testing.assert_close(bim(cnn, x, y, eps=8 / 255, alpha=2 / 255, steps=10), theirs, atol=1e-12, rtol=0)


@pytest.mark.parametrize("decay,targeted", [(1.0, False), (0.5, False), (1.0, True)])
def test_mifgsm_matches_torchattacks(cnn, decay, targeted):
    torchattacks, cnn, x, y = _parity_setup(cnn)
    attack = torchattacks.MIFGSM(cnn, eps=8 / 255, alpha=2 / 255, steps=10, decay=decay)
    if targeted:
        attack.set_mode_targeted_by_label(quiet=True)
        y = (y + 1) % 4
    theirs = attack(x, y)
    ours = mifgsm(cnn, x, y, eps=8 / 255, alpha=2 / 255, steps=10, decay=decay, targeted=targeted)
    torch.testing.assert_close(ours, theirs, atol=1e-12, rtol=0)


@pytest.mark.parametrize("decay", [0.0, 1.0])
@pytest.mark.parametrize("resize_rate,diversity_prob", [(0.7, 0.5), (1.3, 0.5), (0.6, 1.0)])
def test_difgsm_matches_torchattacks_under_the_same_global_seed(cnn, decay, resize_rate, diversity_prob):
    """torchattacks resizes bilinearly and draws from the global generator: with interpolation=
    'bilinear', no seed and the same torch.manual_seed, both draw the same transforms."""
    torchattacks, cnn, x, y = _parity_setup(cnn)
    kwargs = dict(eps=8 / 255, alpha=2 / 255, steps=10, decay=decay, resize_rate=resize_rate, diversity_prob=diversity_prob)
    torch.manual_seed(3)
    theirs = torchattacks.DIFGSM(cnn, **kwargs)(x, y)
    their_rng = torch.get_rng_state()
    torch.manual_seed(3)
    ours = difgsm(cnn, x, y, interpolation="bilinear", **kwargs)
    torch.testing.assert_close(ours, theirs, atol=1e-12, rtol=0)
    assert torch.equal(torch.get_rng_state(), their_rng), "both should consume the global generator alike"
    torch.manual_seed(3)
    other = difgsm(cnn, x, y, interpolation="bilinear", **{**kwargs, "diversity_prob": 0.0})
    assert not torch.equal(other, theirs), "the parity must depend on replaying the same transforms"


# ------------------------------------------------------------------------------- trained model


def test_transfer_attacks_fool_a_trained_model_where_random_noise_does_not(trained):
    model, x_test, y_test = trained

    def accuracy(inputs):
        with torch.no_grad():
            return float((model(inputs).argmax(1) == y_test).float().mean())

    eps = 0.25
    clean = accuracy(x_test)
    noise = accuracy((x_test + eps * torch.randint(0, 2, x_test.shape).float().mul(2).sub(1)).clamp(0, 1))
    assert clean > 0.95
    assert noise > 0.9, f"random +-eps noise should not fool the model (accuracy {noise})"
    for name in ATTACKS:
        adversarial = accuracy(_attack(name, model, x_test, y_test, eps=eps, steps=10, **ON_TRAINED.get(name, {})))
        assert adversarial < 0.05, f"{name} at eps={eps} should (accuracy {adversarial})"
    default_difgsm = accuracy(difgsm(model, x_test, y_test, eps=eps, steps=10, seed=0))
    assert default_difgsm < 0.05, f"difgsm with its defaults should (accuracy {default_difgsm})"


@pytest.mark.parametrize("name", ATTACKS)
def test_targeted_attack_reaches_the_target(trained, name):
    model, x, y = trained
    target = (y + 1) % 4
    res = _attack(name, model, x, target, eps=0.3, steps=20, targeted=True, return_result=True, **ON_TRAINED.get(name, {}))
    with torch.no_grad():
        assert torch.equal(model(res.x_adv).argmax(1) == target, res.success)
        assert float((model(x).argmax(1) == target).float().mean()) < 0.05
    assert float(res.success.float().mean()) > 0.9
