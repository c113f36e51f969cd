"""uap / fooling_rate: one perturbation for all inputs. Exact on a linear model (the best universal
perturbation of a two-class linear model is known), far stronger than noise on a trained CNN, inside
the ball, reproducible, leaves the model and the data as they were; bad input named."""

from __future__ import annotations

import pytest
import torch

import nonrobust_ext
from nonrobust_ext.attacks.uap import UAPResult, fooling_rate, uap


def _linear_two_class(dim: int = 48, n: int = 400, seed: int = 0):
    """A two-class linear model and inputs it all assigns to class 0, with their margins
    ``m_i = (w0 - w1) . x_i + b0 - b1 > 0``."""
    g = torch.Generator().manual_seed(seed)
    model = torch.nn.Linear(dim, 2)
    with torch.no_grad():
        model.weight.copy_(torch.randn(2, dim, generator=g))
        model.bias.copy_(torch.tensor([2.0, 0.0]))
    x = torch.rand(4 * n, dim, generator=g)
    with torch.no_grad():
        margin = (model(x)[:, 0] - model(x)[:, 1])
    keep = margin > 0
    return model, x[keep][:n], margin[keep][:n], (model.weight[0] - model.weight[1]).detach()


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_on_a_linear_model_it_is_the_best_universal_perturbation(norm):
    """Every input predicted class 0: the perturbation that lowers every margin most is
    ``-eps sign(d)`` (L-inf) or ``-eps d / |d|`` (L2) with ``d = w0 - w1``, and it fools exactly the
    inputs with ``m_i < eps |d|_1`` (resp. ``|d|_2``), the most any perturbation in the ball can."""
    model, x, margin, d = _linear_two_class()
    eps = 0.05 if norm == "linf" else 0.2
    best = -eps * d.sign() if norm == "linf" else -eps * d / d.norm()
    reach = eps * (d.abs().sum() if norm == "linf" else d.norm())
    exact = float((margin < reach).float().mean())
    assert 0.2 < exact < 0.9, "the radius should fool some inputs, not all"
    res = uap(model, x, eps=eps, norm=norm, epochs=2, batch_size=50, bounds=None, return_result=True)
    assert isinstance(res, UAPResult)
    torch.testing.assert_close(res.perturbation, best, atol=1e-6, rtol=1e-5)
    assert res.fooling_rate == pytest.approx(exact, abs=1 / len(x))
    assert res.fooling_rate == fooling_rate(model, x, res.perturbation, bounds=None)


def test_on_a_trained_cnn_it_fools_far_more_than_noise_inside_the_ball(ten_class):
    model, x, _ = ten_class
    eps = 0.1
    res = uap(model, x, eps=eps, epochs=3, batch_size=32, return_result=True)
    assert res.perturbation.shape == x.shape[1:]
    assert float(res.perturbation.abs().max()) <= eps * (1 + 1e-6)
    assert len(res.history) == 3 and res.fooling_rate == max(res.history)
    noise = (torch.randint(0, 2, x.shape[1:], generator=torch.Generator().manual_seed(0)) * 2 - 1).float() * eps
    assert res.fooling_rate >= fooling_rate(model, x, noise) + 0.3
    l2 = uap(model, x, eps=1.0, norm="l2", epochs=2, batch_size=32)
    assert float(l2.norm()) <= 1.0 * (1 + 1e-5)


def test_reproducible_and_the_model_and_data_untouched(ten_class):
    model, x, y = ten_class
    before = x.clone()
    model.zero_grad(set_to_none=True)
    model.train()
    try:
        a = uap(model, (x, y), eps=0.1, epochs=1, batch_size=64, seed=3)
        assert model.training, "the model's mode is restored"
    finally:
        model.eval()
    b = uap(model, x, eps=0.1, epochs=1, batch_size=64, seed=3)
    assert torch.equal(a, b)
    assert torch.equal(x, before)
    assert all(p.grad is None for p in model.parameters())


def test_fooling_rate_of_nothing_is_zero_and_it_is_public(ten_class):
    model, x, _ = ten_class
    assert fooling_rate(model, x, torch.zeros(x.shape[1:])) == 0.0
    assert nonrobust_ext.uap is uap and nonrobust_ext.fooling_rate is fooling_rate


@pytest.mark.parametrize("options, error, match", [
    ({"eps": 0.0}, ValueError, "eps"),
    ({"eps": float("nan")}, ValueError, "eps"),
    ({"eps": torch.full((4,), 0.1)}, TypeError, "eps"),
    ({"eps": 0.1, "norm": "l1"}, ValueError, "norm"),
    ({"eps": 0.1, "epochs": 0}, ValueError, "epochs"),
    ({"eps": 0.1, "batch_size": 0}, ValueError, "batch_size"),
    ({"eps": 0.1, "alpha": 0.0}, ValueError, "alpha"),
    ({"eps": 0.1, "seed": -1}, ValueError, "seed"),
])
def test_bad_options_are_named(ten_class, options, error, match):
    model, x, _ = ten_class
    with pytest.raises(error, match=match):
        uap(model, x[:8], **options)


def test_bad_data_is_named(ten_class):
    model, x, _ = ten_class
    with pytest.raises(ValueError, match="data holds no inputs"):
        uap(model, x[:0], eps=0.1)
    bad = x[:8].clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="data"):
        uap(model, bad, eps=0.1)
    with pytest.raises(ValueError, match="bounds|outside"):
        uap(model, x[:8] + 2.0, eps=0.1)
    with pytest.raises(TypeError, match="data must be"):
        uap(model, [1, 2, 3], eps=0.1)
    with pytest.raises(ValueError, match="perturbation must have the inputs' shape"):
        fooling_rate(model, x, torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match="perturbation"):
        fooling_rate(model, x, torch.full(x.shape[1:], float("nan")))
