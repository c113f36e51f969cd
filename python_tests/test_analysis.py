"""nonrobust_ext.analysis: feature usefulness, robust / non-robust datasets, frequency analysis,
transferability and true-label confidence. Known answers on planted data, invariants on a small CNN
trained here on the synthetic pattern task (seconds on two CPU cores)."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from _helpers import DEVICES, pattern_task

from nonrobust_ext import analysis as A
from nonrobust_ext import pgd, robust_accuracy
from nonrobust_ext.data import TensorData
from nonrobust_ext.training import TrainConfig

CLASSES = [f"c{k}" for k in range(4)]


class Net(torch.nn.Module):
    """A small classifier with the library's model interface: forward_features and return_features."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
            torch.nn.Linear(8 * 64, 32), torch.nn.ReLU(),
        )
        self.fc = torch.nn.Linear(32, 4)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        emb = self.body(x)
        logits = self.fc(emb)
        return (emb, logits) if return_features else logits


def _fit(seed: int, x: torch.Tensor, y: torch.Tensor, epochs: int = 3) -> Net:
    torch.manual_seed(seed)
    model = Net()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        for i in range(0, len(x), 128):
            loss = torch.nn.functional.cross_entropy(model(x[i : i + 128]), y[i : i + 128])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def task():
    """Two standard models trained with different seeds, the training set and a held-out test set."""
    x, y = pattern_task(1024, seed=1)
    x_test, y_test = pattern_task(256, seed=2)
    return {
        "a": _fit(0, x, y), "b": _fit(1, x, y),
        "train": TensorData(x, y, CLASSES), "test": TensorData(x_test, y_test, CLASSES),
    }


# --------------------------------------------------------------------------------------------------
# Frequency decomposition and spectra: known answers.
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (1, 1, 7, 9), (5, 6)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_decomposition_sums_to_the_image(shape, dtype):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0), dtype=dtype)
    for radius in (0, 1, 1.5, 2.7, 100):
        low, high = A.frequency_decomposition(x, radius)
        assert low.shape == x.shape and low.dtype == dtype and high.dtype == dtype
        torch.testing.assert_close(low + high, x)


def test_decomposition_radius_zero_is_the_mean_and_large_radius_keeps_everything():
    x = torch.rand(3, 2, 8, 8, generator=torch.Generator().manual_seed(1))
    low, high = A.frequency_decomposition(x, 0)
    torch.testing.assert_close(low, x.mean(dim=(-2, -1), keepdim=True).expand_as(x), atol=1e-6, rtol=0)
    corner = math.hypot(4, 4)
    low, high = A.frequency_decomposition(x, corner)
    torch.testing.assert_close(low, x, atol=1e-6, rtol=0)
    assert high.abs().max() < 1e-6


def test_decomposition_parts_live_in_their_bands():
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    radius = 2.2
    low, high = A.frequency_decomposition(x, radius)
    dist = A.radius_grid(8, 8).double()
    spec_low = torch.fft.fftshift(torch.fft.fft2(low), dim=(-2, -1)).abs()
    spec_high = torch.fft.fftshift(torch.fft.fft2(high), dim=(-2, -1)).abs()
    assert spec_low[..., dist > radius].max() < 1e-9
    assert spec_high[..., dist <= radius].max() < 1e-9
    # Both parts carry real signal (the test would pass trivially with low == 0 or high == 0).
    assert spec_low[..., dist <= radius].max() > 0.1 and spec_high[..., dist > radius].max() > 0.1


def test_perturbation_spectrum_of_low_and_high_frequency_perturbations():
    x = torch.rand(3, 2, 8, 8, generator=torch.Generator().manual_seed(3))
    i = torch.arange(8, dtype=torch.float32)
    smooth = 0.03 + 0.02 * torch.cos(2 * math.pi * i / 8)[:, None] * torch.ones(8)  # radii 0 and 1 only
    spectrum = A.perturbation_spectrum(x, x + smooth)
    assert spectrum.shape == (round(math.hypot(4, 4)) + 1,)
    assert spectrum[:2].sum() > 0.999 * spectrum.sum() and spectrum[2:].sum() < 1e-10
    checker = 0.02 * (-1.0) ** (i[:, None] + i[None, :])  # the Nyquist corner, radius 4 * sqrt(2)
    spectrum = A.perturbation_spectrum(x, x + checker, normalize=True)
    assert spectrum[-1] > 0.999 and abs(float(spectrum.sum()) - 1) < 1e-6
    # Parseval: ring means times ring sizes add up to the mean squared norm per image and channel.
    delta = 0.05 * torch.randn(3, 2, 8, 8, generator=torch.Generator().manual_seed(4))
    rings = A.radius_grid(8, 8).round().long().flatten()
    power = A.perturbation_spectrum(x, x + delta)
    total = float((power * torch.bincount(rings)).sum())
    assert total == pytest.approx(float(delta.square().sum()) / 6, rel=1e-4)


def test_adversarial_spectrum_and_accuracy_by_frequency(task):
    model, test = task["a"], task["test"]
    spectrum = A.adversarial_spectrum(model, test, eps=0.1, steps=3, seed=0, normalize=True)
    assert spectrum.shape == (7,) and abs(float(spectrum.sum()) - 1) < 1e-5 and bool((spectrum >= 0).all())
    result = A.accuracy_by_frequency(model, test, [0, 2, 100])
    json.dumps(result)
    assert result["num_samples"] == len(test) and result["radii"] == [0.0, 2.0, 100.0]
    assert result["clean_accuracy"] > 0.95
    # Everything passes the low-pass filter at a radius past the corner; only the mean at radius 0.
    assert result["low_accuracy"][2] == result["clean_accuracy"]
    assert result["low_accuracy"][0] < result["clean_accuracy"] - 0.2


# --------------------------------------------------------------------------------------------------
# Band-limited robustness.
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("band", ["low", "high"])
@pytest.mark.parametrize("method", ["pgd", "noise"])
def test_band_limited_attack_stays_in_band_and_ball(task, norm, band, method):
    model, test = task["a"], task["test"]
    x, y = test.x[:64], test.y[:64]
    eps = 0.15 if norm == "linf" else 1.0
    radius = 1.5
    x_adv = A.band_limited_attack(model, x, y, eps=eps, radius=radius, band=band, method=method, norm=norm,
                                  steps=4, bounds=None)
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert float(size.max()) <= eps * (1 + 1e-5) and float(size.max()) > 0.3 * eps
    spectrum = A.perturbation_spectrum(x, x_adv)  # rings round(|k|): radius 1.5 splits rings {0, 1} | {2, ...}
    inside, outside = (spectrum[:2], spectrum[2:]) if band == "low" else (spectrum[2:], spectrum[:2])
    assert float(outside.sum()) < 1e-8 * float(inside.sum())


def test_band_limited_robustness_known_answers(task):
    model, test = task["a"], task["test"]
    clean = robust_accuracy(model, (test.x, test.y), eps=[0.0]).clean_accuracy
    # Every frequency in the band: as strong as PGD; random noise of the same size does nothing.
    full = A.band_limited_robustness(model, test, eps=0.15, radius=100, band="low", steps=5)
    white_box = robust_accuracy(model, (test.x, test.y), eps=[0.15], steps=5, seed=0).robust_accuracy[0]
    noise = A.band_limited_robustness(model, test, eps=0.15, radius=100, band="low", method="noise")
    assert full <= white_box + 0.05 and full < 0.3 and noise > 0.9
    # An empty band (high frequencies above the corner) and eps = 0 leave the clean accuracy.
    assert A.band_limited_robustness(model, test, eps=0.15, radius=100, band="high") == clean
    assert A.band_limited_robustness(model, test, eps=0.0, radius=2, band="high") == clean


# --------------------------------------------------------------------------------------------------
# Transferability.
# --------------------------------------------------------------------------------------------------


def test_transfer_matrix_diagonal_is_white_box_robust_accuracy(task):
    models = {"a": task["a"], "b": task["b"]}
    # Some wrong labels, so that the samples a model misclassifies (not attacked) matter, and an eps
    # where the outcome depends on the random start.
    test = task["test"]
    y = test.y.clone()
    y[::3] = (y[::3] + 1) % 4
    noisy = TensorData(test.x, y, CLASSES)
    tm = A.transfer_matrix(models, noisy, eps=0.12, steps=5, seed=0, batch_size=100)
    for name, model in models.items():
        report = robust_accuracy(model, (noisy.x, noisy.y), eps=[0.12], attack="pgd", steps=5, seed=0, batch_size=100)
        assert tm.white_box[name] == report.robust_accuracy[0]
        assert tm.clean_accuracy[name] == report.clean_accuracy < 0.9
        assert 0.1 < tm.white_box[name] < 0.7


def test_transfer_matrix_shows_partial_transfer(task):
    models = {"a": task["a"], "b": task["b"]}
    tm = A.transfer_matrix(models, task["test"], eps=0.15, steps=5, seed=0)
    # The attack works in white box and transfers only partly between independently trained models.
    assert tm["a", "a"] < 0.2 and tm["b", "b"] < 0.2
    assert tm["a", "b"] > tm["b", "b"] + 0.1 and tm["b", "a"] > tm["a", "a"] + 0.1
    out = tm.as_dict()
    json.dumps(out)
    assert out["names"] == ["a", "b"] and tm.to_tensor().shape == (2, 2)
    with pytest.raises(KeyError, match="'c'"):
        tm["a", "c"]


def test_transfer_matrix_at_eps_zero_is_clean_accuracy(task):
    tm = A.transfer_matrix({"a": task["a"], "b": task["b"]}, task["test"], eps=0.0)
    for s in ("a", "b"):
        for t in ("a", "b"):
            assert tm[s, t] == tm.clean_accuracy[t]


# --------------------------------------------------------------------------------------------------
# Feature usefulness.
# --------------------------------------------------------------------------------------------------


def _planted(n: int = 2000):
    """Pixel (0, 0) and pixel (0, 1) equal 1 for class 0 and 0 otherwise; the rest is noise."""
    g = torch.Generator().manual_seed(5)
    y = torch.randint(0, 4, (n,), generator=g)
    x = torch.rand(n, 1, 8, 8, generator=g)
    x[:, 0, 0, 0] = (y == 0).float()
    x[:, 0, 0, 1] = (y == 0).float()
    return x, y


def _planted_features(x: torch.Tensor) -> torch.Tensor:
    # feature 0: the label sign of class 0; feature 1: a noise pixel; feature 2: the label sign again.
    return torch.stack([2 * x[:, 0, 0, 0] - 1, x[:, 0, 5, 5], 2 * x[:, 0, 0, 1] - 1], dim=1)


def _erase_pixel(model, x, y, *, eps):
    """An 'attack' that wipes out feature 0 and leaves feature 2 alone."""
    out = x.clone()
    out[:, 0, 0, 0] = 0.0
    return out


def test_feature_usefulness_known_answers():
    x, y = _planted()
    result = A.feature_usefulness(torch.nn.Identity(), (x, y), attack=_erase_pixel, eps=1.0,
                                  features=_planted_features, threshold=0.2, num_classes=4)
    assert result.clean.shape == (4, 3) and result.adversarial.shape == (4, 3)
    assert float(result.clean[0, 0]) == pytest.approx(1.0, abs=1e-6)
    assert float(result.clean[0, 2]) == pytest.approx(1.0, abs=1e-6)
    assert float(result.clean[:, 1].abs().max()) < 0.1  # noise: about 0
    assert float(result.adversarial[0, 0]) == pytest.approx(0.0, abs=1e-6)  # wiped out by the attack
    assert float(result.adversarial[0, 2]) == pytest.approx(1.0, abs=1e-6)  # untouched: robust
    assert [(r["class"], r["feature"]) for r in result.robust_useful] == [(0, 2)]
    assert [(r["class"], r["feature"]) for r in result.non_robust_useful] == [(0, 0)]
    assert result.robust_share == pytest.approx(0.5, abs=1e-6)
    summary = result.summary()
    json.dumps(summary)
    json.dumps(result.as_dict())
    assert summary["num_useful"] == 2 and summary["num_robust_useful"] == 1
    assert sum(result.class_counts) == result.num_samples == len(y)


def test_feature_usefulness_of_a_standard_model(task):
    model, test = task["a"], task["test"]
    clean_only = A.feature_usefulness(model, test, eps=0.0)
    torch.testing.assert_close(clean_only.adversarial, clean_only.clean)
    assert clean_only.robust_share == pytest.approx(1.0)
    attacked = A.feature_usefulness(model, test, eps=0.15, steps=5, seed=0)
    torch.testing.assert_close(attacked.clean, clean_only.clean)
    assert attacked.clean.shape == (4, 32)
    assert len(attacked.ranking) > 4 and attacked.ranking[0]["clean"] >= attacked.ranking[-1]["clean"]
    assert 0.0 <= attacked.robust_share < 0.5
    assert float(attacked.adversarial.abs().mean()) < float(attacked.clean.abs().mean())
    # Any features callable works, e.g. on a model without forward_features.
    seq = torch.nn.Sequential(model.body, model.fc)
    with pytest.raises(TypeError, match="forward_features"):
        A.feature_usefulness(seq, test, eps=0.1)
    via_callable = A.feature_usefulness(seq, test, eps=0.0, features=seq[0])
    torch.testing.assert_close(via_callable.clean, clean_only.clean)


def test_feature_usefulness_of_adversarial_inputs_crafted_before(task):
    """Adversarial inputs crafted once (for several analyses) give what attacking inside gives, batch
    for batch, and no attack runs."""
    model, test = task["a"], task["test"]
    attacked = A.feature_usefulness(model, test, eps=0.15, steps=5, seed=0, batch_size=64)
    crafted = torch.cat([pgd(model, test.x[i:i + 64], test.y[i:i + 64], eps=0.15, steps=5, seed=0)
                         for i in range(0, len(test), 64)])

    def no_attack(*args, **kwargs):
        raise AssertionError("the attack ran although the adversarial inputs were given")

    given = A.feature_usefulness(model, test, eps=0.15, batch_size=64, attack=no_attack, adversarial=crafted)
    torch.testing.assert_close(given.adversarial, attacked.adversarial)
    assert given.ranking == attacked.ranking
    with pytest.raises(ValueError, match="adversarial must be a tensor shaped like the inputs"):
        A.feature_usefulness(model, test, eps=0.15, adversarial=crafted[:-1])


# The oracle: feature usefulness as the library computed it before it ran on the compiled class-statistics op
# (per-class float64 sums of the float32 features, of their squares and of the adversarial features, grown as
# larger labels appear, then the balanced one-vs-rest formula on those raw moments), written out here verbatim.


def _old_usefulness_from_moments(count, sum_clean, sumsq_clean, sum_other):
    n = count[:, None]
    total_n = count.sum()
    n_neg = total_n - n
    ok = (n > 0) & (n_neg > 0)
    safe_n, safe_neg = n.clamp_min(1), n_neg.clamp_min(1)
    mu_pos = sum_clean / safe_n
    mu_neg = (sum_clean.sum(0, keepdim=True) - sum_clean) / safe_neg
    sq_pos = sumsq_clean / safe_n
    sq_neg = (sumsq_clean.sum(0, keepdim=True) - sumsq_clean) / safe_neg
    mean_bal = 0.5 * (mu_pos + mu_neg)
    var_bal = (0.5 * (sq_pos + sq_neg) - mean_bal.square()).clamp_min(0)
    sigma = var_bal.sqrt()
    tiny = 1e-12 * (0.5 * (sq_pos + sq_neg)).sqrt().clamp_min(1e-30)
    valid = ok & (sigma > tiny)
    denom = torch.where(valid, 2 * sigma, torch.ones_like(sigma))
    clean = torch.where(valid, (mu_pos - mu_neg) / denom, torch.zeros_like(sigma))
    a_pos = sum_other / safe_n
    a_neg = (sum_other.sum(0, keepdim=True) - sum_other) / safe_neg
    other = torch.where(valid, (a_pos - a_neg) / denom, torch.zeros_like(sigma))
    return clean, other


def _old_feature_usefulness(batches, num_classes=0):
    """``batches``: ``(clean features, adversarial features, labels)`` per batch, as the old loop saw them."""
    k, count, sums = num_classes, None, {}
    for clean, adv, y in batches:
        clean, adv = clean.float(), adv.float()
        values = {"clean": clean, "sq": clean.square(), "adv": adv}
        k = max(k, int(y.max()) + 1)
        d = clean.shape[1]
        if count is None:
            count = torch.zeros(k, dtype=torch.float64)
            sums = {name: torch.zeros(k, d, dtype=torch.float64) for name in values}
        elif k > count.shape[0]:
            grow = k - count.shape[0]
            count = torch.cat([count, torch.zeros(grow, dtype=torch.float64)])
            sums = {n: torch.cat([t, torch.zeros(grow, d, dtype=torch.float64)]) for n, t in sums.items()}
        count.index_add_(0, y, torch.ones(len(y), dtype=torch.float64))
        for name, v in values.items():
            sums[name].index_add_(0, y, v.double())
    clean_u, adv_u = _old_usefulness_from_moments(count, sums["clean"], sums["sq"], sums["adv"])
    return clean_u.float(), adv_u.float(), count


def _direct_usefulness(f, y, num_classes):
    """The definition, two-pass in float64: per class, the balanced mixture of its rows and all other rows."""
    f = f.double()
    out = torch.zeros(num_classes, f.shape[1], dtype=torch.float64)
    for c in range(num_classes):
        pos, neg = f[y == c], f[y != c]
        if len(pos) == 0 or len(neg) == 0:
            continue
        mu_pos, mu_neg = pos.mean(0), neg.mean(0)
        var = 0.5 * (pos.var(0, correction=0) + neg.var(0, correction=0)) + 0.25 * (mu_pos - mu_neg).square()
        out[c] = torch.where(var > 0, (mu_pos - mu_neg) / (2 * var.sqrt()).clamp_min(1e-300), 0.0)
    return out


def _rows(f):
    """A 'model' input that is the feature row itself: features=_rows reads it back."""
    return f.reshape(f.shape[0], -1)


def test_feature_usefulness_equals_the_old_computation_on_a_trained_model(task):
    """On the classification model's own embedding, clean and under PGD, in batches: the compiled-op path gives
    the numbers of the old per-class raw-moment computation to float32 round-off."""
    model, test = task["a"], task["test"]
    crafted = torch.cat([pgd(model, test.x[i:i + 64], test.y[i:i + 64], eps=0.15, steps=3, seed=0)
                         for i in range(0, len(test), 64)])
    got = A.feature_usefulness(model, test, eps=0.15, adversarial=crafted, batch_size=64, threshold=0.05)
    with torch.no_grad():
        batches = [(model.forward_features(test.x[i:i + 64]), model.forward_features(crafted[i:i + 64]),
                    test.y[i:i + 64]) for i in range(0, len(test), 64)]
    clean, adv, count = _old_feature_usefulness(batches, num_classes=4)
    torch.testing.assert_close(got.clean, clean, rtol=0, atol=2e-6)
    torch.testing.assert_close(got.adversarial, adv, rtol=0, atol=2e-6)
    assert got.class_counts == [int(c) for c in count]
    assert float(clean.abs().max()) > 0.5 and float((clean - adv).abs().max()) > 0.1  # not a trivial comparison
    # and the library's own raw-moment entry point gives them too
    f = torch.cat([b[0] for b in batches]).double()
    a = torch.cat([b[1] for b in batches]).double()
    onehot = torch.nn.functional.one_hot(test.y, 4).double()
    mine = A.usefulness_from_moments(onehot.sum(0), onehot.T @ f, onehot.T @ f.square(), onehot.T @ a)
    torch.testing.assert_close(mine[0].float(), clean, rtol=0, atol=2e-6)
    torch.testing.assert_close(mine[1].float(), adv, rtol=0, atol=2e-6)


def test_feature_usefulness_equals_the_old_computation_on_awkward_features():
    """Imbalanced classes, a class without samples, dead (constant) units, features of very different scales and
    offsets, a labels range that grows over an iterable of batches of uneven sizes."""
    g = torch.Generator().manual_seed(7)
    n, d = 700, 9
    y = torch.cat([torch.zeros(400, dtype=torch.long), torch.randint(1, 4, (300,), generator=g)])  # no class 4
    y = y[torch.randperm(n, generator=g)]
    scale = torch.tensor([1e-3, 1.0, 30.0, 1.0, 1.0, 1.0, 0.0, 5.0, 1.0])  # unit 6 is dead
    offset = torch.tensor([0.0, 100.0, -3.0, 0.0, 7.0, 0.0, 2.5, 0.0, -50.0])
    signal = torch.nn.functional.one_hot(y, 5).float() @ torch.randn(5, d, generator=g)
    f = (offset + scale * (signal + torch.randn(n, d, generator=g))).float()

    def shift(model, x, y, *, eps):  # the 'attack': a fixed, feature-dependent move of every row
        return x + 0.3 * scale * torch.sin(37.0 * x)

    f_adv = shift(None, f, None, eps=1.0)

    cuts = [0, 50, 51, 300, 512, 700]  # labels 0..3 appear gradually; one batch of a single row
    order = torch.argsort(y, stable=True)  # the first batches see only the low labels
    batches = [(f[order[a:b]].reshape(-1, 1, 1, d), y[order[a:b]]) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    got = A.feature_usefulness(torch.nn.Identity(), batches, attack=shift, eps=1.0, features=_rows)
    want_clean, want_adv, count = _old_feature_usefulness(
        [(f[order[a:b]], f_adv[order[a:b]], y[order[a:b]]) for a, b in zip(cuts[:-1], cuts[1:], strict=True)])
    assert got.clean.shape == (4, d) and got.class_counts == [int(c) for c in count]
    torch.testing.assert_close(got.clean, want_clean, rtol=0, atol=2e-6)
    torch.testing.assert_close(got.adversarial, want_adv, rtol=0, atol=2e-6)
    assert bool((got.clean[:, 6] == 0).all())  # the dead unit is useless
    # With num_classes=5 the empty class has a zero row; the other rows are unchanged.
    five = A.feature_usefulness(torch.nn.Identity(), batches, attack=shift, eps=1.0, features=_rows, num_classes=5)
    assert bool((five.clean[4] == 0).all()) and five.class_counts[4] == 0
    torch.testing.assert_close(five.clean[:4], got.clean, rtol=0, atol=0)
    # Both agree with the definition, computed directly in float64.
    torch.testing.assert_close(got.clean.double(), _direct_usefulness(f, y, 4), rtol=0, atol=2e-6)


def test_feature_usefulness_keeps_its_digits_with_a_large_offset():
    """A feature of spread 1e-3 around 1e4 (float64): the class-statistics op centres its sums, so the result is
    the definition's to round-off, where the old raw moments (E[f^2] - E[f]^2) cancel most of their digits."""
    g = torch.Generator().manual_seed(8)
    n = 4000
    y = torch.randint(0, 3, (n,), generator=g)
    f = 1e4 + 1e-3 * (torch.nn.functional.one_hot(y, 3).double() + torch.randn(n, 3, generator=g,
                                                                                 dtype=torch.float64))
    exact = _direct_usefulness(f, y, 3)
    got = A.feature_usefulness(torch.nn.Identity(), (f.reshape(n, 1, 1, 3), y), eps=0.0, features=_rows)
    torch.testing.assert_close(got.clean.double(), exact, rtol=0, atol=1e-6)
    onehot = torch.nn.functional.one_hot(y, 3).double()
    old, _ = _old_usefulness_from_moments(onehot.sum(0), onehot.T @ f, onehot.T @ f.square(), onehot.T @ f)
    assert float((old - exact).abs().max()) > 1e-3  # the test can fail: the old formula is off here


# --------------------------------------------------------------------------------------------------
# Robust and non-robust datasets.
# --------------------------------------------------------------------------------------------------


def test_non_robust_dataset_labels_and_ball(task):
    model, train = task["a"], task["train"].subset(torch.arange(256))
    det = A.non_robust_dataset(model, train, eps=1.0, steps=10, targets="deterministic")
    assert torch.equal(det.y, (train.y + 1) % 4) and det.classes == CLASSES
    delta = (det.x - train.x).flatten(1)
    assert float(delta.norm(dim=1).max()) <= 1.0 + 1e-4 and float(delta.norm(dim=1).mean()) > 0.5
    assert float(det.x.min()) >= 0.0 and float(det.x.max()) <= 1.0
    # The source model sees the targets: the attack reached them.
    assert float((model(det.x).argmax(1) == det.y).float().mean()) > 0.9
    rand = A.non_robust_dataset(model, train, eps=1.0, steps=2, targets="random", seed=3)
    again = A.non_robust_dataset(model, train, eps=1.0, steps=2, targets="random", seed=3)
    other = A.non_robust_dataset(model, train, eps=1.0, steps=2, targets="random", seed=4)
    assert torch.equal(rand.y, again.y) and torch.equal(rand.x, again.x) and not torch.equal(rand.y, other.y)
    assert set(rand.y.tolist()) == {0, 1, 2, 3}


def test_model_trained_on_non_robust_dataset_beats_chance(task):
    model, test = task["a"], task["test"]
    d_rand = A.non_robust_dataset(model, task["train"].subset(torch.arange(512)), eps=1.0, steps=10,
                                  targets="random", seed=0)
    config = TrainConfig(steps=16, batch_size=128, optimizer="adam", lr=3e-3, weight_decay=0.0)
    result = A.train_and_test(d_rand, test, Net, config=config, attack={"attack": "pgd", "eps": 0.05, "steps": 2},
                              seed=0)
    json.dumps(result)
    assert result["train_size"] == 512 and result["test_size"] == len(test) and result["steps"] == 16
    assert result["clean_accuracy"] > 0.5  # chance is 0.25
    assert 0.0 <= result["robust_accuracy"] <= result["clean_accuracy"] and result["eps"] == 0.05


def test_robust_dataset_matches_the_representation(task):
    model, data = task["a"], task["train"].subset(torch.arange(48))
    # One step of 1e-9 stays at the start images: other images of the set, drawn by the seed.
    starts = A.robust_dataset(model, data, steps=1, lr=1e-9, seed=0)
    exact = "donot_use_mm_for_euclid_dist"  # the matmul shortcut is only accurate to ~1e-3 here
    nearest = torch.cdist(starts.x.flatten(1), data.x.flatten(1), compute_mode=exact).min(dim=1)
    assert float(nearest.values.max()) < 1e-4
    assert not bool((nearest.indices == torch.arange(len(data))).any())
    d_r = A.robust_dataset(model, data, steps=25, lr=0.1, seed=0)
    assert torch.equal(d_r.y, data.y) and d_r.classes == CLASSES
    assert float(d_r.x.min()) >= 0.0 and float(d_r.x.max()) <= 1.0
    before = A.representation_distance(model, starts.x, data.x)
    after = A.representation_distance(model, d_r.x, data.x)
    assert float((after < before).float().mean()) > 0.9 and float(after.mean()) < 0.3 * float(before.mean())


# --------------------------------------------------------------------------------------------------
# Confidence.
# --------------------------------------------------------------------------------------------------


def test_confidence_drops_under_attack(task):
    model, test = task["a"], task["test"]
    result = A.confidence(model, test, eps=0.1, steps=5, seed=0, bins=10)
    json.dumps(result)
    assert result["adversarial_mean"] < result["clean_mean"] - 0.1
    assert len(result["clean_hist"]) == 10 and len(result["bin_edges"]) == 11
    assert sum(result["clean_hist"]) == pytest.approx(1.0) and sum(result["adversarial_hist"]) == pytest.approx(1.0)
    report = robust_accuracy(model, (test.x, test.y), eps=[0.0])
    assert result["clean_mean"] == pytest.approx(report.clean_confidence, abs=1e-6)
    assert result["clean_accuracy"] == report.clean_accuracy
    same = A.confidence(model, test, eps=0.0)
    assert same["adversarial_mean"] == same["clean_mean"] and same["adversarial_hist"] == same["clean_hist"]


def test_data_forms_agree(task):
    model, test = task["a"], task["test"]
    as_set = A.confidence(model, test, eps=0.0, batch_size=100)
    as_pair = A.confidence(model, (test.x, test.y), eps=0.0, batch_size=100)
    as_batches = A.confidence(model, [(test.x[i : i + 100], test.y[i : i + 100]) for i in range(0, 256, 100)],
                              eps=0.0)
    assert as_set["clean_hist"] == as_pair["clean_hist"] == as_batches["clean_hist"]
    assert as_set["clean_mean"] == pytest.approx(as_batches["clean_mean"], abs=1e-9)


# --------------------------------------------------------------------------------------------------
# Model handling, errors, plots, devices.
# --------------------------------------------------------------------------------------------------


def test_models_run_in_eval_mode_and_are_restored(cnn):
    cnn.train()
    g = torch.Generator().manual_seed(6)
    data = (torch.rand(16, 3, 8, 8, generator=g), torch.randint(0, 4, (16,), generator=g))
    stats = cnn.features[1].running_mean.clone()
    A.confidence(cnn, data, eps=0.05, steps=2)
    A.transfer_matrix({"cnn": cnn}, data, eps=0.05, steps=2)
    A.feature_usefulness(cnn, data, eps=0.05, steps=2, features=cnn.features, num_classes=4)
    A.accuracy_by_frequency(cnn, data, [1])
    A.band_limited_robustness(cnn, data, eps=0.05, radius=1, band="high", steps=2)
    A.robust_dataset(cnn, TensorData(data[0], data[1], CLASSES), steps=2, features=cnn.features)
    A.non_robust_dataset(cnn, TensorData(data[0], data[1], CLASSES), eps=0.5, steps=2)
    assert cnn.training and cnn.features[1].training
    assert cnn.modes_seen and not any(cnn.modes_seen)
    assert torch.equal(cnn.features[1].running_mean, stats)
    assert all(p.grad is None for p in cnn.parameters())


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda m, d: A.frequency_decomposition(torch.rand(2, 8, 8), -1), ValueError, "radius"),
        (lambda m, d: A.frequency_decomposition(torch.ones(2, 8, 8, dtype=torch.long), 1), TypeError, "x must"),
        (lambda m, d: A.perturbation_spectrum(torch.rand(2, 8, 8), torch.rand(2, 8, 7)), ValueError, "x_adv"),
        (lambda m, d: A.accuracy_by_frequency(m, d, []), ValueError, "radii"),
        (lambda m, d: A.band_limited_robustness(m, d, eps=0.1, radius=1, band="mid"), ValueError, "band"),
        (lambda m, d: A.band_limited_robustness(m, d, eps=-1, radius=1, band="low"), ValueError, "eps"),
        (lambda m, d: A.band_limited_robustness(m, d, eps=0.1, radius=1, band="low", norm="l1"), ValueError,
         "norm"),
        (lambda m, d: A.transfer_matrix({}, d, eps=0.1), ValueError, "models"),  # empty: a wrong value
        (lambda m, d: A.transfer_matrix([m], d, eps=0.1), TypeError, "models"),
        (lambda m, d: A.transfer_matrix({"a": m}, d, eps=0.1, attack="nope"), ValueError, "attack"),
        (lambda m, d: A.confidence(m, d, eps=0.1, bins=0), ValueError, "bins"),
        (lambda m, d: A.confidence(m, d, eps=0.1, batch_size=0), ValueError, "batch_size"),
        (lambda m, d: A.confidence(m, 3, eps=0.1), TypeError, "data"),
        (lambda m, d: A.confidence(m, d, eps="big"), TypeError, "eps"),
        (lambda m, d: A.feature_usefulness(m, d, eps=0.1, features=3), TypeError, "features"),
        (lambda m, d: A.non_robust_dataset(m, d, eps=0.5, targets="all"), ValueError, "targets"),
        (lambda m, d: A.non_robust_dataset(m, d, eps=0.5, targeted=False), TypeError, "targeted"),
        (lambda m, d: A.robust_dataset(m, d, steps=0), ValueError, "steps"),
        (lambda m, d: A.robust_dataset(m, d, lr=0.0), ValueError, "lr"),
        (lambda m, d: A.train_and_test(d, d, Net, config={}), TypeError, "config"),
    ],
)
def test_errors_name_the_argument(task, call, error, match):
    with pytest.raises(error, match=match):
        call(task["a"], task["test"])


def test_plots(task, tmp_path):
    pytest.importorskip("matplotlib")
    model, test = task["a"], task["test"]
    tm = A.transfer_matrix({"a": model, "b": task["b"]}, test, eps=0.1, steps=1)
    tm.plot(str(tmp_path / "transfer.png"))
    conf = A.confidence(model, test, eps=0.1, steps=1)
    A.plot_confidence({"a": conf}, str(tmp_path / "confidence.png"))
    A.plot_accuracy_by_frequency({"a": A.accuracy_by_frequency(model, test, [1, 2])}, str(tmp_path / "freq.png"))
    A.plot_perturbation_spectra({"a": A.adversarial_spectrum(model, test, eps=0.1, steps=1)},
                                str(tmp_path / "spectrum.png"))
    A.plot_feature_usefulness(A.feature_usefulness(model, test, eps=0.0), str(tmp_path / "usefulness.png"))
    for name in ("transfer", "confidence", "freq", "spectrum", "usefulness"):
        assert (tmp_path / f"{name}.png").stat().st_size > 1000


@pytest.mark.parametrize("device", DEVICES)
def test_batches_follow_the_model_to_its_device(task, device):
    model = copy.deepcopy(task["a"]).to(device)
    test = task["test"].subset(torch.arange(64))  # stays on the CPU
    on_device = A.confidence(model, test, eps=0.1, steps=2, seed=0)
    tm = A.transfer_matrix({"m": model}, test, eps=0.1, steps=2, seed=0)
    fu = A.feature_usefulness(model, test, eps=0.1, steps=2, seed=0)
    freq = A.accuracy_by_frequency(model, test, [2])
    band = A.band_limited_robustness(model, test, eps=0.1, radius=2, band="high", steps=2)
    nr = A.non_robust_dataset(model, test.subset(torch.arange(32)), eps=0.5, steps=2)
    assert nr.x.device.type == "cpu" and fu.clean.device.type == "cpu"
    cpu = model.cpu()
    assert on_device["clean_mean"] == pytest.approx(A.confidence(cpu, test, eps=0.0)["clean_mean"], abs=1e-4)
    assert tm.clean_accuracy["m"] == pytest.approx(on_device["clean_accuracy"])
    assert 0.0 <= band <= 1.0 and 0.0 <= freq["high_accuracy"][0] <= 1.0
