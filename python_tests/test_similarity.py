"""Known-answer tests of the representation-similarity measures (nonrobust_ext.analysis.similarity) and of
activation collection (nonrobust_ext.analysis.activations).

The numpy oracles below are the textbook forms: N x N centred Gram matrices for CKA, the unbiased HSIC of Song et
al. (2012) on raw (uncentred) Gram matrices, and CCA by eigen-decomposition of S_xx^-1 S_xy S_yy^-1 S_yx.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from _helpers import SmallCNN

from nonrobust_ext import analysis
from nonrobust_ext.analysis import (
    CKAMatrix,
    MinibatchCKA,
    cca,
    collect_activations,
    layer_similarity,
    linear_cka,
    minibatch_cka,
    plot_layer_similarity,
    pwcca,
    similarity,
    svcca,
)
from nonrobust_ext.analysis import cka as cka_module

# ----------------------------------------------------------------------------------------------- numpy oracles


def np_cka(x: np.ndarray, y: np.ndarray) -> float:
    n = x.shape[0]
    h = np.eye(n) - 1.0 / n
    k, l_ = h @ x @ x.T @ h, h @ y @ y.T @ h
    return float((k * l_).sum() / np.sqrt((k * k).sum() * (l_ * l_).sum()))


def np_hsic_unbiased(k: np.ndarray, l_: np.ndarray) -> float:
    n = k.shape[0]
    k, l_ = k.copy(), l_.copy()
    np.fill_diagonal(k, 0.0)
    np.fill_diagonal(l_, 0.0)
    one = np.ones(n)
    return float(
        (np.trace(k @ l_) + (one @ k @ one) * (one @ l_ @ one) / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * (one @ k @ l_ @ one))
        / (n * (n - 3))
    )


def np_cka_debiased(x: np.ndarray, y: np.ndarray) -> float:
    k, l_ = x @ x.T, y @ y.T  # raw Gram matrices: the estimator must not depend on centring
    return np_hsic_unbiased(k, l_) / np.sqrt(np_hsic_unbiased(k, k) * np_hsic_unbiased(l_, l_))


def np_cca(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Canonical correlations (descending) and the x-side directions, by eigen-decomposition."""
    d1 = x.shape[1]
    c = np.cov(x.T, y.T)
    sxx, syy, sxy = c[:d1, :d1], c[d1:, d1:], c[:d1, d1:]
    m = np.linalg.solve(sxx, sxy) @ np.linalg.solve(syy, sxy.T)
    w, v = np.linalg.eig(m)
    order = np.argsort(-w.real)
    k = min(d1, y.shape[1])
    return np.sqrt(np.clip(w.real[order][:k], 0.0, None)), v.real[:, order][:, :k]


def np_pwcca(x: np.ndarray, y: np.ndarray) -> float:
    rho, a = np_cca(x, y)
    xc = x - x.mean(0)
    h = xc @ a
    h /= np.linalg.norm(h, axis=0)
    alpha = np.abs(h.T @ xc).sum(1)
    return float((alpha * rho).sum() / alpha.sum())


# ------------------------------------------------------------------------------------------------------- data


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def related(n: int = 300, d1: int = 12, d2: int = 9, seed: int = 0, noise: float = 1.0):
    """Two representations sharing a 5-dimensional signal, with different scales per feature and offsets."""
    g = gen(seed)
    z = torch.randn(n, 5, generator=g, dtype=torch.float64)
    x = z @ torch.randn(5, d1, generator=g, dtype=torch.float64) + 0.5 * torch.randn(n, d1, generator=g, dtype=torch.float64)
    y = z @ torch.randn(5, d2, generator=g, dtype=torch.float64) + noise * torch.randn(n, d2, generator=g, dtype=torch.float64)
    return x + 3.0, y - 7.0


def orthogonal(d: int, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen(seed), dtype=torch.float64))
    return q


def invertible(d: int, seed: int) -> torch.Tensor:
    a = torch.randn(d, d, generator=gen(seed), dtype=torch.float64)
    return a + d**0.5 * torch.eye(d, dtype=torch.float64)  # well conditioned


# ----------------------------------------------------------------------------------------------- known answers

SELF_METHODS = {
    "cka": lambda x, y: linear_cka(x, y),
    "cka_debiased": lambda x, y: linear_cka(x, y, debiased=True),
    "cca_unregularised": lambda x, y: cca(x, y, epsilon=0.0).mean,
    "cca": lambda x, y: cca(x, y).mean,
    "svcca": lambda x, y: svcca(x, y),
    "pwcca": lambda x, y: pwcca(x, y),
}


@pytest.mark.parametrize("method", list(SELF_METHODS))
def test_self_similarity_is_one(method):
    x, _ = related()
    assert SELF_METHODS[method](x, x.clone()) == pytest.approx(1.0, abs=1e-5)
    # and a different representation is clearly below 1 (the measure is not constant)
    _, y = related()
    assert SELF_METHODS[method](x, y) < 0.95


@pytest.mark.parametrize("debiased", [False, True])
def test_cka_invariant_to_orthogonal_transform_and_isotropic_scaling(debiased):
    x, y = related()
    base = linear_cka(x, y, debiased=debiased)
    x2 = 3.7 * x @ orthogonal(x.shape[1], 1) + 11.0
    y2 = 0.02 * y @ orthogonal(y.shape[1], 2)
    assert linear_cka(x2, y2, debiased=debiased) == pytest.approx(base, rel=1e-10)
    assert linear_cka(x, x2, debiased=debiased) == pytest.approx(1.0, abs=1e-10)


@pytest.mark.parametrize("debiased", [False, True])
def test_cka_not_invariant_to_anisotropic_scaling(debiased):
    x, _ = related()
    scale = torch.linspace(0.1, 10.0, x.shape[1], dtype=torch.float64)
    assert linear_cka(x, x * scale, debiased=debiased) < 0.95


def test_cca_and_svcca_invariant_to_invertible_linear_maps():
    x, y = related()
    a, b = invertible(x.shape[1], 3), invertible(y.shape[1], 4)
    base = cca(x, y, epsilon=0.0).correlations
    moved = cca(x @ a, y @ b, epsilon=0.0).correlations
    torch.testing.assert_close(moved, base, rtol=0, atol=1e-10)
    assert svcca(x @ a, y @ b, keep=1.0, epsilon=0.0) == pytest.approx(svcca(x, y, keep=1.0, epsilon=0.0), abs=1e-10)
    # a variance-based reduction is only invariant to orthogonal maps and isotropic scaling
    assert svcca(2.0 * x @ orthogonal(x.shape[1], 5), y, keep=0.9) == pytest.approx(svcca(x, y, keep=0.9), abs=1e-10)
    # PWCCA weights come from x: any invertible map of y leaves it unchanged
    assert pwcca(x, y @ b, epsilon=0.0) == pytest.approx(pwcca(x, y, epsilon=0.0), abs=1e-10)
    # linear CKA, by contrast, does change under a non-orthogonal map (the invariances differ as documented)
    assert abs(linear_cka(x @ a, y) - linear_cka(x, y)) > 1e-3


# ------------------------------------------------------------------------------------------------ numpy parity


@pytest.mark.parametrize("shape", [(60, 7, 5), (40, 3, 1), (12, 200, 150)])  # the last takes the Gram route
def test_cka_matches_numpy(shape):
    n, d1, d2 = shape
    x, y = related(n, d1, d2, seed=7)
    assert linear_cka(x, y) == pytest.approx(np_cka(x.numpy(), y.numpy()), rel=1e-10)
    assert linear_cka(x, y, debiased=True) == pytest.approx(np_cka_debiased(x.numpy(), y.numpy()), rel=1e-8, abs=1e-12)


def test_cka_float32_input():
    x, y = related(80, 6, 4, seed=8)
    want = np_cka(x.numpy(), y.numpy())
    assert linear_cka(x.float(), y.float()) == pytest.approx(want, rel=1e-5)
    assert linear_cka(x, y) == pytest.approx(want, rel=1e-10)


def test_hsic_routes_agree_with_the_reference():
    """The two routes of the biased HSIC (compiled op in feature space, row blocks of the Gram matrices) give the
    reference twin's value."""
    from nonrobust_ext import reference

    x, y = related(100, 9, 6, seed=9)
    want = float(reference.linear_hsic(x, y))
    assert cka_module._linear_hsic(x, y) == pytest.approx(want, rel=1e-10)
    xc, yc = x - x.mean(0), y - y.mean(0)
    assert float(cka_module._gram_inner(xc, yc)) == pytest.approx(want, rel=1e-10)
    # wide inputs (D1 D2 > N (D1 + D2)) take the Gram route inside _linear_hsic
    wx, wy = related(12, 200, 150, seed=9)
    assert cka_module._linear_hsic(wx, wy) == pytest.approx(float(reference.linear_hsic(wx, wy)), rel=1e-10)


def test_cca_matches_numpy_eigendecomposition():
    x, y = related(200, 6, 4, seed=10)
    rho, _ = np_cca(x.numpy(), y.numpy())
    res = cca(x, y, epsilon=0.0)
    np.testing.assert_allclose(res.correlations.numpy(), rho, atol=1e-9)
    assert torch.all(res.correlations[:-1] >= res.correlations[1:])
    # the weights give unit-variance canonical variates with exactly those correlations
    u = (x - res.x_mean) @ res.x_weights
    v = (y - res.y_mean) @ res.y_weights
    corr = np.corrcoef(u.numpy().T, v.numpy().T)[:4, 4:]
    np.testing.assert_allclose(np.diag(corr), rho, atol=1e-9)
    np.testing.assert_allclose(u.std(0).numpy(), 1.0, atol=1e-9)
    # the default (tiny) ridge changes little
    np.testing.assert_allclose(cca(x, y).correlations.numpy(), rho, atol=1e-4)


def test_pwcca_matches_numpy():
    x, y = related(200, 6, 4, seed=11)
    assert pwcca(x, y, epsilon=0.0) == pytest.approx(np_pwcca(x.numpy(), y.numpy()), abs=1e-9)
    # x = strong shared signal + weak unrelated units: the spurious correlations of the weak directions count
    # fully in the plain mean, hardly in PWCCA
    g = gen(12)
    z = torch.randn(400, 3, generator=g, dtype=torch.float64)
    x = torch.cat([10.0 * z, 0.1 * torch.randn(400, 3, generator=g, dtype=torch.float64)], 1)
    y = torch.cat([z + 0.1 * torch.randn(400, 3, generator=g, dtype=torch.float64), torch.randn(400, 3, generator=g, dtype=torch.float64)], 1)
    plain = cca(x, y, epsilon=0.0).mean
    assert plain < 0.6
    assert pwcca(x, y, epsilon=0.0) > 0.95


def test_svcca_reduction_keeps_requested_dimensions():
    x, y = related(300, 12, 9, seed=12, noise=0.05)
    # 5 shared directions carry nearly all the variance of y: keep=5 finds the shared signal
    assert svcca(x, y, keep=5) > 0.95
    assert svcca(x, y, keep=5) > cca(x, y).mean
    with pytest.raises(ValueError, match="keep"):
        svcca(x, y, keep=13)
    with pytest.raises(ValueError, match="keep"):
        svcca(x, y, keep=1.5)


def test_cca_drops_degenerate_directions_with_ridge():
    x, y = related(200, 6, 4, seed=13)
    dead = torch.cat([x, torch.zeros(200, 1, dtype=x.dtype), x[:, :1] * 2.0], 1)  # a dead unit and a duplicate
    res = cca(dead, dead)
    assert res.correlations.numel() == 6
    assert res.mean == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="rank-deficient"):
        cca(dead, y, epsilon=0.0)


# ------------------------------------------------------------------------------------------- estimator behaviour


def test_debiased_close_to_biased_for_large_n():
    x, y = related(4000, 8, 6, seed=14)
    biased, debiased = linear_cka(x, y), linear_cka(x, y, debiased=True)
    assert abs(biased - debiased) < 0.01
    assert 0.2 < debiased < 0.99


def test_independent_features_debiased_cka_near_zero():
    g = gen(15)
    x = torch.randn(200, 64, generator=g, dtype=torch.float64)
    y = torch.randn(200, 64, generator=g, dtype=torch.float64)
    assert linear_cka(x, y) > 0.2  # the biased estimator's well-known upward bias
    assert abs(linear_cka(x, y, debiased=True)) < 0.05


def test_minibatch_accumulation():
    x, y = related(600, 10, 7, seed=16)
    z = torch.randn(600, 5, generator=gen(17), dtype=torch.float64)
    # one batch holding everything: exactly the full-batch debiased estimate
    acc = MinibatchCKA(["x", "y"], ["y", "z"])
    acc.update({"x": x, "y": y}, {"y": y, "z": z})
    full = acc.compute()
    assert full[0, 0] == pytest.approx(linear_cka(x, y, debiased=True), rel=1e-10)
    assert full[1, 0] == pytest.approx(1.0, abs=1e-12)
    assert full[0, 1] == pytest.approx(linear_cka(x, z, debiased=True), rel=1e-8, abs=1e-12)
    # minibatches: the sums of per-batch unbiased HSICs
    acc = MinibatchCKA(2, 1)
    hxy = hxx = hyy = 0.0
    for i in range(0, 600, 100):
        xb, yb = x[i : i + 100], y[i : i + 100]
        acc.update([xb, yb], [yb])
        xc, yc = xb - xb.mean(0), yb - yb.mean(0)
        hxy += cka_module._unbiased_hsic(xc, yc)
        hxx += cka_module._unbiased_hsic(xc, xc)
        hyy += cka_module._unbiased_hsic(yc, yc)
    mb = acc.compute()
    assert mb.shape == (2, 1)
    assert mb[0, 0] == pytest.approx(hxy / (hxx * hyy) ** 0.5, rel=1e-10)
    assert mb[1, 0] == pytest.approx(1.0, abs=1e-12)
    # ... which estimates the same quantity as the full-batch estimator
    assert mb[0, 0] == pytest.approx(float(full[0, 0]), abs=0.03)
    assert acc.num_batches == 6 and acc.num_samples == 600
    acc.update([x[:3], y[:3]], [y[:3]])  # too small for the unbiased estimator: skipped and counted
    assert acc.skipped_samples == 3 and acc.num_batches == 6
    with pytest.raises(ValueError, match="same minibatch"):
        acc.update([x[:10], y[:11]], [y[:10]])
    with pytest.raises(ValueError, match="no minibatch"):
        MinibatchCKA(1).compute()


# ------------------------------------------------------------------------------------------------------ errors


def test_input_errors():
    x, y = related(50, 4, 3)
    with pytest.raises(ValueError, match="same inputs"):
        linear_cka(x, y[:49])
    with pytest.raises(ValueError, match="at least 2"):
        linear_cka(x[:1], y[:1])
    with pytest.raises(ValueError, match="at least 4"):
        linear_cka(x[:3], y[:3], debiased=True)
    with pytest.raises(ValueError, match=r"x must be a matrix \[N, D\]"):
        linear_cka(x[:, 0], y)
    with pytest.raises(ValueError, match=r"y must be a matrix"):
        cca(x, y[None])
    bad = x.clone()
    bad[3, 1] = float("nan")
    for fn in (linear_cka, svcca, pwcca, lambda a, b: cca(a, b)):
        with pytest.raises(ValueError, match=r"x holds 1 NaN value"):
            fn(bad, y)
    with pytest.raises(ValueError, match="y is constant"):
        linear_cka(x, torch.full_like(y, 0.1))
    with pytest.raises(ValueError, match=r"N > D \+ 1"):
        cca(x[:4], y[:4], epsilon=0.0)
    with pytest.warns(UserWarning, match="close to 1"):
        cca(x[:4], y[:4])
    with pytest.raises(ValueError, match="epsilon"):
        cca(x, y, epsilon=-1.0)


# ------------------------------------------------------------------------------------------ collect_activations


@pytest.fixture
def cnn_pair():
    torch.manual_seed(0)
    a = SmallCNN()
    b = SmallCNN()
    b.load_state_dict(a.state_dict())
    with torch.no_grad():  # a "fine-tuned" copy: the last layers drift more
        b.features[4].weight.add_(0.3 * torch.randn_like(b.features[4].weight))
        b.head.weight.add_(torch.randn_like(b.head.weight))
    x = torch.rand(96, 3, 8, 8, generator=gen(20))
    return a, b, x


def all_hooks(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def test_collect_activations_shapes_modes_hooks(cnn_pair):
    model, _, x = cnn_pair
    model.train()
    model.features[1].eval()  # a frozen BatchNorm inside a training model must stay so
    layers = ["features.0", "features.4", "head"]
    acts = collect_activations(model, x, layers, batch_size=40)
    assert list(acts) == layers
    assert [tuple(a.shape) for a in acts.values()] == [(96, 8), (96, 16), (96, 4)]
    flat = collect_activations(model, x, ["features.0"], pool="flatten")["features.0"]
    none = collect_activations(model, x, ["features.0"], pool="none")["features.0"]
    assert flat.shape == (96, 8 * 8 * 8) and none.shape == (96, 8, 8, 8)
    torch.testing.assert_close(acts["features.0"], none.mean((2, 3)))
    custom = collect_activations(model, x, ["features.4"], pool=lambda t: t.amax((2, 3)))["features.4"]
    assert custom.shape == (96, 16)
    # eval mode inside (BatchNorm running stats used), flags restored after, no hooks left
    assert model.modes_seen and not any(model.modes_seen)
    assert model.training and not model.features[1].training and model.features[0].training
    assert all_hooks(model) == 0
    with torch.no_grad():
        model.eval()
        want = model.head(model.features(x))
    torch.testing.assert_close(acts["head"], want)
    # an iterable of (x, y) batches gives the same
    loader = [(x[i : i + 32], torch.zeros(len(x[i : i + 32]))) for i in range(0, 96, 32)]
    torch.testing.assert_close(collect_activations(model, loader, layers)["head"], acts["head"])


def test_collect_activations_errors_remove_hooks(cnn_pair):
    model, _, x = cnn_pair
    with pytest.raises(ValueError, match=r"no submodule 'features\.9'.*did you mean"):
        collect_activations(model, x, ["features.9"])
    with pytest.raises(ValueError, match="pool"):
        collect_activations(model, x, ["head"], pool="max")

    def broken(_):
        raise RuntimeError("boom")

    model.train()
    with pytest.raises(RuntimeError, match="boom"):
        collect_activations(model, x, ["features.0", "head"], pool=broken)
    assert all_hooks(model) == 0 and model.training

    class Shared(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 4)
            self.act = torch.nn.ReLU()

        def forward(self, z):
            return self.act(self.lin(self.act(z)))

    shared = Shared()
    with pytest.raises(ValueError, match="more than once"):
        collect_activations(shared, torch.randn(8, 4), ["act"])
    assert all_hooks(shared) == 0
    with pytest.raises(ValueError, match="no data"):
        collect_activations(model, [], ["head"])


# ----------------------------------------------------------------------------------------- models, end to end


def test_layer_similarity_model_pair(cnn_pair):
    a, b, x = cnn_pair
    layers = ["features.0", "features.4", "head"]
    for method in ("cka", "svcca", "pwcca", "cca"):
        same = layer_similarity(a, a, x, layers, method=method)
        assert list(same) == layers
        assert all(v == pytest.approx(1.0, abs=1e-5) for v in same.values()), (method, same)
    pair = layer_similarity(a, b, x, layers)
    assert pair["features.0"] == pytest.approx(1.0, abs=1e-9)  # untouched layer
    assert pair["head"] < pair["features.4"] < 0.999  # drift grows with depth
    acts_a = collect_activations(a, x, layers)
    acts_b = collect_activations(b, x, layers)
    assert pair["features.4"] == pytest.approx(linear_cka(acts_a["features.4"], acts_b["features.4"]), rel=1e-12)
    cross = layer_similarity(a, b, x, ["features.4"], layers_b=["head"], method="cka", debiased=True)
    assert cross["features.4"] == pytest.approx(linear_cka(acts_a["features.4"], acts_b["head"], debiased=True))
    with pytest.raises(ValueError, match="layers_b"):
        layer_similarity(a, b, x, layers, layers_b=["head"])
    with pytest.raises(ValueError, match="method"):
        layer_similarity(a, b, x, layers, method="rsa")
    assert all_hooks(a) == 0 and all_hooks(b) == 0


def test_minibatch_cka_models(cnn_pair):
    a, b, x = cnn_pair
    layers = ["features.0", "features.4", "head"]
    whole = minibatch_cka(a, b, x, layers, batch_size=96)
    assert isinstance(whole, CKAMatrix) and whole.matrix.shape == (3, 3)
    acts_a = collect_activations(a, x, layers)
    acts_b = collect_activations(b, x, layers)
    for i, la in enumerate(layers):
        for j, lb in enumerate(layers):
            assert whole.matrix[i, j] == pytest.approx(linear_cka(acts_a[la], acts_b[lb], debiased=True), rel=1e-8, abs=1e-10)
    # batches of 40: 40 + 40 + 16 inputs; the unbiased estimate from batches tracks the full one
    mb = minibatch_cka(a, b, x, layers, batch_size=40)
    assert mb.num_batches == 3 and mb.num_samples == 96 and mb.skipped_samples == 0
    assert mb.paired()["features.0"] == pytest.approx(1.0, abs=1e-10)
    torch.testing.assert_close(mb.matrix, whole.matrix, atol=0.15, rtol=0)
    self_ = minibatch_cka(a, a, x, layers, ["head"], batch_size=48)
    assert self_.matrix.shape == (3, 1) and self_.matrix[2, 0] == pytest.approx(1.0, abs=1e-10)
    assert all_hooks(a) == 0 and all_hooks(b) == 0
    assert set(mb.as_dict()) >= {"matrix", "layers_a", "layers_b"}


# ------------------------------------------------------------------------------------------------------- plots


def test_plot_layer_similarity(tmp_path):
    pytest.importorskip("matplotlib")
    one = plot_layer_similarity({"a": 1.0, "b": 0.8, "c": 0.5}, tmp_path / "one.png", title="CKA")
    two = plot_layer_similarity({"ft": {"a": 1.0, "b": 0.7}, "std": {"a": 0.6, "b": 0.3}}, tmp_path / "sub" / "two.png")
    mat = CKAMatrix(torch.rand(2, 3, dtype=torch.float64), ["a", "b"], ["c", "d", "e"])
    heat = plot_layer_similarity(mat, tmp_path / "heat.png")
    for p in (one, two, heat):
        assert p.exists() and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        plot_layer_similarity({"a": 1.0}, tmp_path / "x.png")


def test_public_exports():
    for name in ("collect_activations", "linear_cka", "minibatch_cka", "MinibatchCKA", "cca", "svcca", "pwcca",
                 "layer_similarity", "plot_layer_similarity", "CCAResult", "CKAMatrix"):
        assert name in analysis.__all__ and hasattr(analysis, name)
        if name != "collect_activations":
            # the similarity module still offers every measure under its old import path
            assert getattr(similarity, name) is getattr(analysis, name) and name in similarity.__all__
