"""The compiled feature-statistics ops (class_feature_stats, feature_discrepancy, linear_hsic) against
their pure-PyTorch twins, opcheck, gradcheck, merging, numerical stability, argument checks, and the
Python layer on top (nonrobust_ext.stats: ClassStats, merging, DDP all-reduce)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from _helpers import DEVICES, run_under_isa

from nonrobust_ext import ops, reference, stats

# Every op takes all four feature dtypes on every device.
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
_nrx = torch.ops.nonrobust_ext


def _layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """The same values in another memory layout: rows further apart than D (the kernels read in
    place), columns strided or transposed (the kernels copy once)."""
    n, d = t.shape
    if layout == "row_strided":
        wide = torch.zeros(n, d + 3, dtype=t.dtype, device=t.device)
        wide[:, :d] = t
        return wide[:, :d]
    if layout == "col_strided":
        wide = torch.zeros(n, 2 * d, dtype=t.dtype, device=t.device)
        view = wide[:, ::2]
        view.copy_(t)
        return view
    if layout == "transposed":
        return t.t().contiguous().t()
    return t.contiguous()


def _tol(dtype: torch.dtype) -> dict:
    # The ops accumulate in float64, so against the float64 evaluation of the twin on the same values
    # only the float32 rounding of deviations (and of the outputs) remains.
    return dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------ class_feature_stats

# (N, D, K, layout, label pattern): empty batch, one row, D=1, odd D, many classes with empty ones,
# K=1000, one class cut into several work units (N*D*4 bytes > 2 MiB per class) with long one-pass
# blocks, non-contiguous layouts.
STATS_CASES = [
    (0, 5, 3, "contiguous", "random"),
    (1, 4, 2, "contiguous", "random"),
    (37, 1, 3, "contiguous", "random"),
    (101, 33, 7, "contiguous", "random"),
    (200, 16, 50, "contiguous", "even_only"),
    (3000, 9, 1000, "contiguous", "random"),
    (1200, 2048, 2, "contiguous", "random"),
    (5000, 3, 2, "contiguous", "sorted"),
    (101, 33, 7, "row_strided", "random"),
    (101, 33, 7, "col_strided", "random"),
    (101, 33, 7, "transposed", "random"),
]


def make_features(n, d, k, layout, pattern, dtype, device, *, seed=0, offset=3.0):
    g = torch.Generator().manual_seed(seed)
    if pattern == "even_only":
        labels = 2 * torch.randint(0, (k + 1) // 2, (n,), generator=g)
    else:
        labels = torch.randint(0, k, (n,), generator=g)
        if pattern == "sorted":
            labels = labels.sort().values
    centres = 2 * torch.randn(k, d, generator=g, dtype=torch.float64)
    x = offset + centres[labels] + 0.5 * torch.randn(n, d, generator=g, dtype=torch.float64)
    return _layout(x.to(dtype=dtype, device=device), layout), labels.to(device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n,d,k,layout,pattern", STATS_CASES)
def test_class_feature_stats_matches_reference(n, d, k, layout, pattern, device):
    for dtype in DTYPES:
        x, y = make_features(n, d, k, layout, pattern, dtype, device)
        count, mean, m2 = ops.class_feature_stats(x, y, num_classes=k)
        acc = torch.float64 if dtype == torch.float64 else torch.float32
        assert count.dtype == torch.float64 and mean.dtype == acc and m2.dtype == acc
        assert count.shape == (k,) and mean.shape == (k, d) and m2.shape == (k, d)
        r_count, r_mean, r_m2 = reference.class_feature_stats(x.double(), y, num_classes=k)
        assert torch.equal(count, r_count)
        msg = lambda m, dtype=dtype: f"{dtype}: {m}"  # noqa: E731
        torch.testing.assert_close(mean, r_mean.to(acc), **_tol(dtype), msg=msg)
        torch.testing.assert_close(m2, r_m2.to(acc), **_tol(dtype), msg=msg)
        empty = count == 0
        if pattern == "even_only":
            assert bool(empty[1::2].all())
        assert bool((mean[empty] == 0).all()) and bool((m2[empty] == 0).all())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n,d,k,layout,pattern", [STATS_CASES[i] for i in (0, 1, 3, 4, 8, 10)])
def test_class_feature_stats_covariance_matches_reference(n, d, k, layout, pattern, device):
    for dtype in DTYPES:
        x, y = make_features(n, d, k, layout, pattern, dtype, device)
        count, mean, m2 = ops.class_feature_stats(x, y, num_classes=k, covariance=True)
        assert m2.shape == (k, d, d)
        r_count, r_mean, r_m2 = reference.class_feature_stats(x.double(), y, num_classes=k, covariance=True)
        acc = mean.dtype
        assert torch.equal(count, r_count)
        torch.testing.assert_close(mean, r_mean.to(acc), **_tol(dtype))
        torch.testing.assert_close(m2, r_m2.to(acc), **_tol(dtype))
        # The diagonal is the covariance=False result.
        torch.testing.assert_close(torch.diagonal(m2, dim1=1, dim2=2),
                                   ops.class_feature_stats(x, y, num_classes=k)[2], **_tol(dtype))


def test_class_feature_stats_twin_in_native_dtype():
    """The twin itself, in float32 (what the benchmark times), agrees with its float64 evaluation."""
    x, y = make_features(2000, 24, 10, "contiguous", "random", torch.float32, "cpu")
    got = reference.class_feature_stats(x, y, num_classes=10)
    want = reference.class_feature_stats(x.double(), y, num_classes=10)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b.to(a.dtype), rtol=1e-4, atol=1e-4)


def test_class_feature_stats_does_not_depend_on_thread_count():
    x, y = make_features(6000, 512, 3, "contiguous", "random", torch.float32, "cpu")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = ops.class_feature_stats(x, y, num_classes=3)
        torch.set_num_threads(max(2, threads))
        many = ops.class_feature_stats(x, y, num_classes=3)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(one, many, strict=True):
        assert torch.equal(a, b)


def test_class_stats_merge_of_two_halves_equals_whole():
    for dtype, tol in ((torch.float64, dict(rtol=1e-12, atol=1e-12)), (torch.float32, dict(rtol=2e-6, atol=2e-6))):
        x, y = make_features(3001, 17, 6, "contiguous", "even_only", dtype, "cpu")
        for covariance in (False, True):
            whole = stats.class_stats(x, y, num_classes=6, covariance=covariance)
            a = stats.class_stats(x[:1234], y[:1234], num_classes=6, covariance=covariance)
            b = stats.class_stats(x[1234:], y[1234:], num_classes=6, covariance=covariance)
            merged = stats.merge_class_stats(a, b)
            assert torch.equal(merged.count, whole.count)
            torch.testing.assert_close(merged.mean, whole.mean, **tol)
            # Off-diagonal scatter entries can be near 0: absolute tolerance relative to the matrix.
            m2_tol = dict(rtol=tol["rtol"], atol=tol["atol"] * float(whole.m2.abs().max()))
            torch.testing.assert_close(merged.m2, whole.m2, **m2_tol)
            # Merging with nothing changes nothing; several batches in any grouping agree.
            zero = stats.ClassStats.zeros(6, 17, covariance=covariance, dtype=whole.mean.dtype)
            same = merged.merge(zero)
            assert torch.equal(same.mean, merged.mean) and torch.equal(same.m2, merged.m2)
            thirds = [stats.class_stats(x[i::3], y[i::3], num_classes=6, covariance=covariance) for i in range(3)]
            acc = zero
            for t in thirds:
                acc = acc.merge(t)
            torch.testing.assert_close(acc.m2, whole.m2, **m2_tol)


def test_class_stats_is_stable_with_a_large_common_offset():
    """1e4 + noise of std 0.01 in float32: the naive E[x^2] - E[x]^2 loses every digit; the op keeps the
    variance to float32 precision (against float64 on the very same float32 values)."""
    g = torch.Generator().manual_seed(0)
    n, d, k = 20000, 8, 3
    y = torch.randint(0, k, (n,), generator=g)
    x = (1e4 + 0.01 * torch.randn(n, d, generator=g, dtype=torch.float64)).float()
    exact = reference.class_feature_stats(x.double(), y, num_classes=k)
    want_var = exact[2] / (exact[0] - 1).unsqueeze(1)
    got = stats.class_stats(x, y, num_classes=k)
    torch.testing.assert_close(got.variance.double(), want_var, rtol=1e-4, atol=0)
    torch.testing.assert_close(got.mean.double(), exact[1], rtol=1e-7, atol=0)
    # The test can fail: the naive float32 formula is off by orders of magnitude.
    onehot = torch.nn.functional.one_hot(y, k).float()
    naive = (onehot.T @ (x * x) - (onehot.T @ x) ** 2 / exact[0].float().unsqueeze(1)) / (exact[0] - 1).float().unsqueeze(1)
    assert float(((naive.double() - want_var).abs() / want_var).max()) > 0.1
    cov = stats.class_stats(x, y, num_classes=k, covariance=True).covariance.double()
    want_cov = reference.class_feature_stats(x.double(), y, num_classes=k, covariance=True)[2] / (exact[0] - 1).view(-1, 1, 1)
    torch.testing.assert_close(cov, want_cov, rtol=1e-4, atol=1e-4 * float(want_var.max()))


def test_class_stats_properties():
    x, y = make_features(500, 5, 4, "contiguous", "random", torch.float64, "cpu")
    s = stats.class_stats(x, y, num_classes=4, covariance=True)
    assert s.num_classes == 4 and s.dim == 5 and s.has_covariance
    for c in range(4):
        rows = x[y == c]
        torch.testing.assert_close(s.variance[c], rows.var(0))
        torch.testing.assert_close(s.var(0)[c], rows.var(0, correction=0))
        torch.testing.assert_close(s.covariance[c], torch.cov(rows.T))
    pooled = s.total()
    torch.testing.assert_close(pooled.mean[0], x.mean(0))
    torch.testing.assert_close(pooled.variance[0], x.var(0))
    torch.testing.assert_close(pooled.covariance[0], torch.cov(x.T))
    diag = stats.class_stats(x, y, num_classes=4)
    with pytest.raises(ValueError, match="covariance=True"):
        _ = diag.covariance
    # One row: variance is undefined (NaN), as torch.var; no rows: also NaN, mean 0.
    one = stats.class_stats(x[:1], y[:1], num_classes=4)
    assert bool(one.variance.isnan().all())


# ------------------------------------------------------------------------------ feature_discrepancy

# (N, D, layout of clean, layout of adv): empty, one row, D=1, odd D, D > the 1024-element flush,
# several parallel chunks, non-contiguous and mixed layouts.
DISC_CASES = [
    (0, 5, "contiguous", "contiguous"),
    (5, 0, "contiguous", "contiguous"),
    (1, 7, "contiguous", "contiguous"),
    (50, 1, "contiguous", "contiguous"),
    (65, 33, "contiguous", "contiguous"),
    (9, 3001, "contiguous", "contiguous"),
    (10000, 33, "contiguous", "contiguous"),
    (65, 33, "row_strided", "col_strided"),
    (65, 33, "transposed", "contiguous"),
]


def make_pair(n, d, clean_layout, adv_layout, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    clean = torch.randn(n, d, generator=g, dtype=torch.float64) + 2
    adv = clean + 0.3 * torch.randn(n, d, generator=g, dtype=torch.float64)
    if adv.numel():
        adv.view(-1)[:: max(1, adv.numel() // 5)] = clean.view(-1)[:: max(1, adv.numel() // 5)]  # e = 0 happens
    return (_layout(clean.to(dtype=dtype, device=device), clean_layout),
            _layout(adv.to(dtype=dtype, device=device), adv_layout))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n,d,clean_layout,adv_layout", DISC_CASES)
def test_feature_discrepancy_matches_reference(n, d, clean_layout, adv_layout, device):
    for dtype in DTYPES:
        clean, adv = make_pair(n, d, clean_layout, adv_layout, dtype, device)
        sq, mac = ops.feature_discrepancy(clean, adv)
        acc = torch.float64 if dtype == torch.float64 else torch.float32
        assert sq.dtype == acc and mac.dtype == acc and sq.shape == (n,) and mac.shape == (d,)
        r_sq, r_mac = reference.feature_discrepancy(clean.double(), adv.double())
        torch.testing.assert_close(sq, r_sq.to(acc), **_tol(dtype))
        torch.testing.assert_close(mac, r_mac.to(acc), **_tol(dtype))
        # ... and the twin in the op's own dtype.
        t_sq, t_mac = reference.feature_discrepancy(clean, adv)
        torch.testing.assert_close(sq, t_sq, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(mac, t_mac, rtol=1e-4, atol=1e-4)
    if n == 0:
        assert torch.equal(mac, torch.zeros_like(mac))  # defined as 0, not 0/0


def test_feature_discrepancy_is_the_dm_loss_term():
    """sq_dist is the per-sample ||phi(x_adv) - phi(x)||^2 of the DM loss; its gradient drives the
    inner maximisation and the training step alike."""
    clean = torch.randn(8, 16, requires_grad=True)
    adv = (clean.detach() + 0.1 * torch.randn(8, 16)).requires_grad_()
    sq, _ = ops.feature_discrepancy(clean, adv)
    sq.mean().backward()
    want = (adv.detach() - clean.detach()).pow(2).sum(1).mean()
    torch.testing.assert_close(sq.mean(), want)
    torch.testing.assert_close(adv.grad, 2 * (adv.detach() - clean.detach()) / 8)
    torch.testing.assert_close(clean.grad, -adv.grad)


# ------------------------------------------------------------------------------------- linear_hsic

# (N, D1, D2): empty, one row, odd sizes, wider than tall, and one case long enough for the op's
# blocked product (several row blocks at this width).
HSIC_CASES = [(0, 3, 4), (1, 5, 2), (2, 1, 1), (97, 13, 31), (40, 300, 7)]


def make_activations(n, d1, d2, dtype, device, *, offset=5.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = offset + torch.randn(n, d1, generator=g, dtype=torch.float64).abs()  # post-ReLU-like: large mean
    y = x @ torch.randn(d1, d2, generator=g, dtype=torch.float64) / max(1, d1) ** 0.5
    y = y + 0.5 * torch.randn(n, d2, generator=g, dtype=torch.float64)
    return x.to(dtype=dtype, device=device), y.to(dtype=dtype, device=device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n,d1,d2", HSIC_CASES)
def test_linear_hsic_matches_reference(n, d1, d2, device):
    for dtype in DTYPES:
        x, y = make_activations(n, d1, d2, dtype, device)
        got = ops.linear_hsic(x, y)
        assert got.dtype == torch.float64 and got.shape == ()
        want = reference.linear_hsic(x, y)
        tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got, want, **tol, msg=lambda m, dtype=dtype: f"{dtype}: {m}")


def test_linear_hsic_several_row_blocks_and_a_large_offset():
    """700 rows x 24002 columns: the op works in two row blocks; means of 100 against a spread of 1."""
    g = torch.Generator().manual_seed(1)
    x = (100 + torch.randn(700, 24000, generator=g)).float()
    y = (x[:, :2] * 0.5 + torch.randn(700, 2, generator=g)).float()
    got = ops.linear_hsic(x, y)
    want = reference.linear_hsic(x, y)  # float64, explicitly centred
    torch.testing.assert_close(got, want, rtol=1e-5, atol=0)


def test_linear_hsic_is_stable_with_a_large_common_offset():
    g = torch.Generator().manual_seed(2)
    x = (1e3 + 0.1 * torch.randn(4000, 6, generator=g, dtype=torch.float64)).float()
    y = (x[:, :3] - 1e3 + 0.1 * torch.randn(4000, 3, generator=g, dtype=torch.float64).float()) + 2e3
    want = reference.linear_hsic(x, y)
    torch.testing.assert_close(ops.linear_hsic(x, y), want, rtol=1e-4, atol=0)
    # The test can fail: the unshifted float32 formula X^T Y - N mx my^T is far off.
    n = x.shape[0]
    naive = (x.T @ y - n * x.mean(0).unsqueeze(1) * y.mean(0).unsqueeze(0)).double().square().sum()
    assert abs(float(naive / want) - 1) > 0.01


def _cka(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ops.linear_hsic(x, y) / torch.sqrt(ops.linear_hsic(x, x) * ops.linear_hsic(y, y))


def _gram_cka(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The textbook N x N formulation: centred Gram matrices."""
    h = torch.eye(a.shape[0], dtype=a.dtype) - 1.0 / a.shape[0]
    k, l_ = h @ a @ a.T @ h, h @ b @ b.T @ h
    return (k * l_).sum() / torch.sqrt((k * k).sum() * (l_ * l_).sum())


def test_linear_hsic_gives_cka_known_answers():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(300, 20, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(20, 20, generator=g, dtype=torch.float64))
    assert float(_cka(x, x)) == pytest.approx(1.0, abs=1e-12)
    # Invariant to orthogonal maps, isotropic scaling and translation.
    assert float(_cka(x, 3 * x @ q + 7)) == pytest.approx(1.0, abs=1e-12)
    z = torch.randn(300, 20, generator=g, dtype=torch.float64)
    assert float(_cka(x, z)) < 0.2
    y = x[:, :5] + 0.5 * z[:, :5]
    torch.testing.assert_close(_cka(x, y), _gram_cka(x, y), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(_cka(x.float(), y.float()), _gram_cka(x, y), rtol=1e-5, atol=1e-6)
    # The analysis layer's CKA runs on this op.
    from nonrobust_ext.analysis import similarity

    assert similarity.linear_cka(x, y) == pytest.approx(float(_gram_cka(x, y)), rel=1e-10)


# ----------------------------------------------------------------------------- opcheck / gradcheck


def _opcheck_samples(device):
    """(op, args) for every case above, in every dtype; float inputs require grad (all three ops are
    differentiable, so opcheck also checks the autograd registration)."""
    for n, d, k, layout, pattern in STATS_CASES:
        if n * d > 100_000:
            continue  # the multi-unit case: same code as the others, opcheck would only be slow
        for dtype in DTYPES:
            x, y = make_features(n, d, k, layout, pattern, dtype, device)
            for covariance in (False, True) if d <= 33 else (False,):
                yield _nrx.class_feature_stats.default, (x.detach().requires_grad_(), y, k, covariance)
    for n, d, cl, al in DISC_CASES:
        for dtype in DTYPES:
            clean, adv = make_pair(n, d, cl, al, dtype, device)
            yield _nrx.feature_discrepancy.default, (clean.detach().requires_grad_(), adv.detach().requires_grad_())
    for n, d1, d2 in HSIC_CASES:
        for dtype in DTYPES:
            x, y = make_activations(n, d1, d2, dtype, device)
            yield _nrx.linear_hsic.default, (x.requires_grad_(), y.requires_grad_())


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    count = 0
    for op, args in _opcheck_samples(device):
        # Half types: every check but the AOT-autograd one, which compiles forward and backward and
        # would double the run time for code the float32 samples already cover.
        half = args[0].dtype in (torch.bfloat16, torch.float16)
        utils = ("test_schema", "test_autograd_registration", "test_faketensor") if half else None
        torch.library.opcheck(op, args, test_utils=utils) if utils else torch.library.opcheck(op, args)
        count += 1
    assert count > 100


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(13, 4, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 2, 2, 0, 1, 2, 0, 0, 2, 1, 2, 0, 2])  # class 3 is empty
    for covariance in (False, True):
        def fn(t, covariance=covariance):
            _, mean, m2 = ops.class_feature_stats(t, y, num_classes=4, covariance=covariance)
            return mean, m2
        assert torch.autograd.gradcheck(fn, (x,))
        assert torch.autograd.gradgradcheck(fn, (x,))
    clean = torch.randn(6, 5, generator=g, dtype=torch.float64, requires_grad=True)
    adv = (clean.detach() + torch.randn(6, 5, generator=g, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(ops.feature_discrepancy, (clean, adv))
    a = torch.randn(9, 4, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(9, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(ops.linear_hsic, (a, b))
    assert torch.autograd.gradcheck(lambda t: ops.linear_hsic(t, t), (a,))
    assert torch.autograd.gradcheck(_cka, (a, b))
    # One row: its mean's gradient is 1, its m2 has none.
    one = torch.randn(1, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: ops.class_feature_stats(t, torch.tensor([1]), num_classes=2)[1:], (one,))


def test_count_is_not_differentiable_and_labels_get_no_gradient():
    x = torch.randn(10, 3, requires_grad=True)
    count, mean, m2 = ops.class_feature_stats(x, torch.arange(10) % 3, num_classes=3)
    assert not count.requires_grad and mean.requires_grad and m2.requires_grad


@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_fullgraph(device):
    """A DM-style loss (feature distance + class-mean spread + CKA) compiled in one graph, forward and
    backward equal to eager."""
    g = torch.Generator().manual_seed(5)
    clean = torch.randn(32, 16, generator=g).to(device)
    adv0 = clean + 0.1 * torch.randn(32, 16, generator=g).to(device)
    labels = torch.randint(0, 4, (32,), generator=g).to(device)

    def loss_fn(clean, adv, labels):
        sq, mac = torch.ops.nonrobust_ext.feature_discrepancy(clean, adv)
        _, mean, m2 = torch.ops.nonrobust_ext.class_feature_stats(adv, labels, 4, False)
        hsic = torch.ops.nonrobust_ext.linear_hsic(clean, adv)
        return sq.mean() + mac.sum() + m2.sum() * 1e-3 + mean.square().sum() * 1e-3 + hsic.float() * 1e-6

    compiled = torch.compile(loss_fn, fullgraph=True)
    grads = []
    for fn in (compiled, loss_fn):
        adv = adv0.clone().requires_grad_()
        loss = fn(clean, adv, labels)
        loss.backward()
        grads.append((loss.detach(), adv.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------ errors


def _good_stats_args():
    return torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2]), 3


# A wrong dtype is a TypeError, anything else a ValueError (as at the Python API); the message names the
# op and the argument. The full table of bad inputs, with the twins, is python_tests/test_bad_input_ops.py.
@pytest.mark.parametrize(
    "args,error,match",
    [
        ((torch.randn(6, 4), torch.tensor([0, 1, 3, 0, 1, 2]), 3), ValueError, r"labels must be in \[0, num_classes\) = \[0, 3\), got labels\[2\] = 3"),
        ((torch.randn(6, 4), torch.tensor([0, 1, -1, 0, 1, 2]), 3), ValueError, r"labels must be in \[0, num_classes\).*= -1"),
        ((torch.randn(6), torch.tensor([0, 1, 2, 0, 1, 2]), 3), ValueError, r"features must be a 2-D \[N, D\] tensor"),
        ((torch.randn(6, 4, 1), torch.tensor([0, 1, 2, 0, 1, 2]), 3), ValueError, r"features must be a 2-D \[N, D\] tensor"),
        ((torch.randn(6, 4), torch.tensor([[0, 1, 2, 0, 1, 2]]), 3), ValueError, r"labels must be a 1-D \[N\] tensor"),
        ((torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1]), 3), ValueError, "labels has 5 entries but features has 6 rows"),
        ((torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2], dtype=torch.int32), 3), TypeError, "labels must be int64, got Int"),
        ((torch.randn(6, 4), torch.tensor([0.0, 1, 2, 0, 1, 2]), 3), TypeError, "labels must be int64, got Float"),
        ((torch.ones(6, 4, dtype=torch.int64), torch.tensor([0, 1, 2, 0, 1, 2]), 3), TypeError, "features must be float32, float64, bfloat16 or float16"),
        ((torch.randn(6, 4), torch.tensor([0, 0, 0, 0, 0, 0]), 0), ValueError, "num_classes must be at least 1"),
    ],
)
def test_class_feature_stats_rejects_bad_arguments(args, error, match):
    with pytest.raises(error, match=match) as info:
        _nrx.class_feature_stats(*args)
    assert "class_feature_stats" in str(info.value)


@pytest.mark.parametrize(
    "clean,adv,error,match",
    [
        (torch.randn(4, 3), torch.randn(4, 2), ValueError, r"adv has shape \[4, 2\] but clean has shape \[4, 3\]"),
        (torch.randn(4, 3), torch.randn(5, 3), ValueError, r"adv has shape \[5, 3\] but clean has shape \[4, 3\]"),
        (torch.randn(4, 3), torch.randn(4, 3).double(), TypeError, "adv has dtype Double but clean has dtype Float"),
        (torch.randn(4), torch.randn(4), ValueError, r"clean must be a 2-D \[N, D\] tensor"),
        (torch.randn(4, 3), torch.ones(4, 3, dtype=torch.int32), TypeError, "adv must be float32, float64, bfloat16 or float16"),
    ],
)
def test_feature_discrepancy_rejects_bad_arguments(clean, adv, error, match):
    with pytest.raises(error, match=match) as info:
        _nrx.feature_discrepancy(clean, adv)
    assert "feature_discrepancy" in str(info.value)


@pytest.mark.parametrize(
    "x,y,error,match",
    [
        (torch.randn(4, 3), torch.randn(5, 2), ValueError, "y has 5 rows but x has 4"),
        (torch.randn(4, 3), torch.randn(4, 2).double(), TypeError, "y has dtype Double but x has dtype Float"),
        (torch.randn(4, 3, 2), torch.randn(4, 2), ValueError, r"x must be a 2-D \[N, D\] tensor"),
        (torch.randn(4, 3), torch.ones(4, 2, dtype=torch.int64), TypeError, "y must be float32, float64, bfloat16 or float16"),
    ],
)
def test_linear_hsic_rejects_bad_arguments(x, y, error, match):
    with pytest.raises(error, match=match) as info:
        _nrx.linear_hsic(x, y)
    assert "linear_hsic" in str(info.value)


def test_fake_kernels_check_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        x, y = torch.empty(6, 4), torch.empty(6, dtype=torch.int64)
        count, mean, m2 = _nrx.class_feature_stats(x, y, 3, True)
        assert count.shape == (3,) and mean.shape == (3, 4) and m2.shape == (3, 4, 4)
        with pytest.raises(ValueError, match="labels has 5 entries but features has 6 rows"):
            _nrx.class_feature_stats(x, torch.empty(5, dtype=torch.int64), 3, False)
        sq, mac = _nrx.feature_discrepancy(torch.empty(6, 4, dtype=torch.bfloat16), torch.empty(6, 4, dtype=torch.bfloat16))
        assert sq.dtype == mac.dtype == torch.float32 and sq.shape == (6,) and mac.shape == (4,)
        with pytest.raises(ValueError, match="y has 7 rows but x has 6"):
            _nrx.linear_hsic(x, torch.empty(7, 2))


def test_python_layer_rejects_bad_arguments():
    x, y, k = _good_stats_args()
    with pytest.raises(TypeError, match="num_classes must be an int"):
        ops.class_feature_stats(x, y, num_classes=3.0)
    with pytest.raises(ValueError, match="num_classes must be >= 1"):
        ops.class_feature_stats(x, y, num_classes=0)
    with pytest.raises(TypeError, match="labels must be an integer tensor"):
        stats.class_stats(x, y.float(), num_classes=k)
    with pytest.raises(TypeError, match="features must be a floating-point tensor"):
        stats.class_stats(y.view(-1, 1), y, num_classes=k)
    with pytest.raises(ValueError, match=r"labels must have shape \[6\]"):
        stats.class_stats(x, y[:4], num_classes=k)
    with pytest.raises(ValueError, match=r"labels must be in \[0, num_classes\)"):
        reference.class_feature_stats(x, y, num_classes=2)
    # int32 labels and float16-free dtypes are converted by the Python layer.
    s = stats.class_stats(x, y.int(), num_classes=k)
    assert torch.equal(s.count, torch.tensor([2.0, 2.0, 2.0], dtype=torch.float64))
    a = stats.class_stats(x, y, num_classes=3)
    with pytest.raises(ValueError, match="b has 4 classes x 4 features but a has 3 x 4"):
        stats.merge_class_stats(a, stats.class_stats(x, y, num_classes=4))
    with pytest.raises(ValueError, match="both have covariance"):
        stats.merge_class_stats(a, stats.class_stats(x, y, num_classes=3, covariance=True))
    with pytest.raises(RuntimeError, match="process group"):
        stats.all_reduce_class_stats(a)


# ---------------------------------------------------------------------------------------- DDP

_DDP_WORKER = textwrap.dedent("""
    import sys, torch, torch.distributed as dist
    sys.path.insert(0, sys.argv[3])
    from _helpers import end_gloo_worker
    from nonrobust_ext import stats

    def main(rank, world, store_path, out):
        dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank, world_size=world)
        g = torch.Generator().manual_seed(0)
        x = 1e3 + torch.randn(900, 6, generator=g, dtype=torch.float64)
        y = torch.randint(0, 5, (900,), generator=g)
        y[y == 4] = 3  # class 4 empty everywhere
        results = {}
        for cov in (False, True):
            mine = stats.class_stats(x[rank::world].float(), y[rank::world], num_classes=5, covariance=cov)
            merged = stats.all_reduce_class_stats(mine)
            results[cov] = (merged.count, merged.mean, merged.m2)
        torch.save(results, f"{out}/rank{rank}.pt")
        end_gloo_worker()

    if __name__ == "__main__":
        import torch.multiprocessing as mp
        mp.spawn(main, args=(2, sys.argv[1], sys.argv[2]), nprocs=2)
""")


def test_all_reduce_class_stats_with_two_gloo_processes(tmp_path):
    script = tmp_path / "ddp_stats.py"
    script.write_text(_DDP_WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(script), str(tmp_path / "store"), str(tmp_path), os.path.dirname(__file__)]
    subprocess.run(command, check=True, timeout=300, env=env)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    g = torch.Generator().manual_seed(0)
    x = 1e3 + torch.randn(900, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 5, (900,), generator=g)
    y[y == 4] = 3
    for cov in (False, True):
        want = stats.class_stats(x.float(), y, num_classes=5, covariance=cov)
        for r in range(2):
            count, mean, m2 = ranks[r][cov]
            assert torch.equal(count, want.count)
            torch.testing.assert_close(mean, want.mean, rtol=1e-7, atol=0)
            # float32 sums: off-diagonal scatter entries near 0 get a tolerance relative to the matrix
            torch.testing.assert_close(m2, want.m2, rtol=1e-5, atol=1e-5 * float(want.m2.abs().max()))
        assert torch.equal(ranks[0][cov][2], ranks[1][cov][2])  # every rank gets the same result
        assert float(want.count[4]) == 0 and bool((ranks[0][cov][1][4] == 0).all())


# ------------------------------------------------------------------------------- CPU/CUDA, ISAs


@pytest.mark.parametrize("device", [d for d in DEVICES if not isinstance(d, str)])  # the CUDA param
def test_cuda_agrees_with_cpu(device):
    for dtype in DTYPES:
        x, y = make_features(3000, 130, 10, "row_strided", "random", dtype, "cpu")
        for covariance in (False, True):
            a = ops.class_feature_stats(x, y, num_classes=10, covariance=covariance)
            b = ops.class_feature_stats(x.to(device), y.to(device), num_classes=10, covariance=covariance)
            for u, v in zip(a, b, strict=True):
                torch.testing.assert_close(v.cpu(), u, **_tol(dtype))
        clean, adv = make_pair(5000, 257, "contiguous", "col_strided", dtype, "cpu")
        for u, v in zip(ops.feature_discrepancy(clean, adv), ops.feature_discrepancy(clean.to(device), adv.to(device)),
                        strict=True):
            torch.testing.assert_close(v.cpu(), u, **_tol(dtype))
        p, q = make_activations(500, 64, 48, dtype, "cpu")
        torch.testing.assert_close(ops.linear_hsic(p.to(device), q.to(device)).cpu(), ops.linear_hsic(p, q),
                                   rtol=1e-5, atol=0)


_ISA_SCRIPT = """
import torch, nonrobust_ext
from nonrobust_ext import ops, reference
assert nonrobust_ext.build_info()["cpu_isa"] == "{isa}"
g = torch.Generator().manual_seed(0)
for dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
    for n, d, k in ((700, 37, 3), (300, 300, 40)):
        y = torch.randint(0, k, (n,), generator=g)
        x = (3 + torch.randn(n, d, generator=g, dtype=torch.float64)).to(dtype)
        got = ops.class_feature_stats(x, y, num_classes=k)
        want = reference.class_feature_stats(x.double(), y, num_classes=k)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b.to(a.dtype), **tol)
        adv = (x.double() + torch.randn(n, d, generator=g, dtype=torch.float64)).to(dtype)
        for a, b in zip(ops.feature_discrepancy(x, adv), reference.feature_discrepancy(x.double(), adv.double())):
            torch.testing.assert_close(a, b.to(a.dtype), **tol)
print("ok")
"""


@pytest.mark.parametrize("isa", ["baseline", "avx2", "avx512"])
def test_every_compiled_isa_matches_reference(isa):
    """Each vector-ISA build of the statistics loops is correct (tile widths differ per ISA), not only
    the one this CPU selects."""
    run_under_isa(isa, _ISA_SCRIPT.format(isa=isa))
