"""feature_pgd: the inner maximisation of the DM loss (embedding distance inside the eps-ball)."""

from __future__ import annotations

import pytest
import torch
from _helpers import SmallCNN

import nonrobust_ext
from nonrobust_ext.attacks import feature_pgd


def _embedder(model: SmallCNN):
    return model.features  # [B, 64]


def _distance(embed, x_adv, x):
    with torch.no_grad():
        return (embed(x_adv) - embed(x)).square().sum(dim=1)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_feature_pgd_stays_in_the_ball_and_moves_the_embedding_further_than_its_start(cnn, norm):
    x = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    eps = 0.05 if norm == "linf" else 0.5
    embed = _embedder(cnn.eval())
    start = feature_pgd(embed, x, eps=eps, steps=1, alpha=0.0, norm=norm, seed=1)  # the random start alone
    x_adv = feature_pgd(embed, x, eps=eps, steps=10, norm=norm, seed=1)
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(dim=1) if norm == "linf" else delta.norm(dim=1)
    assert float(size.max()) <= eps * (1 + 1e-5)
    assert bool(((x_adv >= 0) & (x_adv <= 1)).all())
    assert bool((_distance(embed, x_adv, x) > 2 * _distance(embed, start, x)).all())


def test_feature_pgd_runs_the_module_in_eval_mode_and_restores_it(cnn):
    cnn.train()
    x = torch.rand(4, 3, 8, 8)
    seen = []
    cnn.features.register_forward_pre_hook(lambda m, inp: seen.append(m.training))
    feature_pgd(cnn.features, x, eps=0.05, steps=2, seed=0)
    assert seen and not any(seen)
    assert cnn.features.training and cnn.training


def test_feature_pgd_is_reproducible_and_validates(cnn):
    x = torch.rand(4, 3, 8, 8)
    a = feature_pgd(cnn.features, x, eps=0.05, steps=3, seed=7)
    b = feature_pgd(cnn.features, x, eps=0.05, steps=3, seed=7)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="embed must return embeddings"):
        feature_pgd(lambda t: t, x, eps=0.05, steps=1)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        feature_pgd(cnn.features, x, eps=-1.0)
    with pytest.raises(ValueError, match="norm must be"):
        feature_pgd(cnn.features, x, eps=0.1, norm="l1")
    assert nonrobust_ext.attacks.feature_pgd is feature_pgd
