"""The compiled box_hyperplane_projection op (FAB's projection) against its pure-PyTorch twin on many
kinds of rows (ties, open sides, zero normals, boxes that miss the hyperplane), opcheck, and its argument
checks (the kernel's, the fake kernel's and the twin's messages agree). Its answers against a bisection
and an exhaustive search are in test_attacks_fab.py, for both implementations."""

from __future__ import annotations

import math

import pytest
import torch

from nonrobust_ext import ops, reference

_nrx = torch.ops.nonrobust_ext
NORMS = ["linf", "l2"]


def make_rows(kind: str, n: int, d: int, dtype: torch.dtype, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, d, generator=g, dtype=torch.float64)
    x = torch.rand(n, d, generator=g, dtype=torch.float64)
    up, down = 1 - x, x
    c = torch.randn(n, generator=g, dtype=torch.float64) * math.sqrt(d)
    if kind == "ties":  # few distinct rooms: many equal breakpoints
        up = torch.randint(0, 3, (n, d), generator=g).double() / 2
        down = torch.randint(0, 3, (n, d), generator=g).double() / 2
    elif kind == "open":  # some sides unbounded
        up = torch.where(torch.rand(n, d, generator=g) < 0.3, math.inf, up)
        down = torch.where(torch.rand(n, d, generator=g) < 0.3, math.inf, down)
    elif kind == "sparse":  # mostly zero normals (max-pooling kills most input gradients)
        w = torch.where(torch.rand(n, d, generator=g) < 0.8, 0.0, w)
    elif kind == "unreachable":  # the box is too small to reach the hyperplane
        up, down = up * 1e-3, down * 1e-3
    elif kind == "zero_c":
        c = torch.zeros(n, dtype=torch.float64)
    elif kind == "edge":  # zero rows, zero rooms, sign of c at 0
        w[0] = 0.0
        up[1], down[1] = 0.0, 0.0
        c[2] = -0.0
    return tuple(t.to(dtype) for t in (w, c, up, down))


KINDS = ["random", "ties", "open", "sparse", "unreachable", "zero_c", "edge"]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("kind", KINDS)
def test_kernel_matches_twin(kind, norm, dtype):
    for d in (1, 7, 784):
        w, c, up, down = make_rows(kind, 12, d, dtype, seed=d)
        got = ops.box_hyperplane_projection(w, c, up, down, norm)
        want = reference.box_hyperplane_projection(w, c, up, down, norm)
        assert got.dtype == dtype and got.shape == w.shape and got.is_contiguous()
        # The kernel sums in float64 and the twin in the input's dtype.
        tol = 1e-9 if dtype == torch.float64 else 2e-4
        torch.testing.assert_close(got, want, rtol=tol, atol=tol * float(want.abs().max().clamp_min(1)))
        assert bool((got <= up).all() and (got >= -down).all()), "a step leaves the box"
        assert bool((got[w == 0] == 0).all()), "a coordinate with w = 0 moved"


@pytest.mark.parametrize("norm", NORMS)
def test_reaches_the_hyperplane_when_it_can(norm):
    w, c, up, down = make_rows("random", 50, 300, torch.float64)
    d = ops.box_hyperplane_projection(w, c, up, down, norm)
    reach = (w.abs() * torch.where(w * c[:, None] > 0, up, down)).sum(1)
    can = reach > c.abs() * (1 + 1e-9)
    assert bool(can.any())
    torch.testing.assert_close((w * d).sum(1)[can], c[can], rtol=1e-9, atol=1e-9)


def test_strided_inputs_and_empty_batches():
    w, c, up, down = make_rows("random", 6, 10, torch.float32)
    wide = torch.zeros(6, 20)
    wide[:, ::2] = w
    got = ops.box_hyperplane_projection(wide[:, ::2], c, up, down, "linf")
    torch.testing.assert_close(got, ops.box_hyperplane_projection(w, c, up, down, "linf"), rtol=0, atol=0)
    empty = ops.box_hyperplane_projection(w[:0], c[:0], up[:0], down[:0], "l2")
    assert empty.shape == (0, 10)


def test_opcheck():
    for kind in ("random", "ties", "open"):
        for dtype in (torch.float32, torch.float64):
            for norm in NORMS:
                torch.library.opcheck(_nrx.box_hyperplane_projection.default, make_rows(kind, 4, 9, dtype) + (norm,))


BAD = {
    "w dtype": (0, lambda a: a.half(), TypeError, "w must be float32 or float64"),
    "c dtype": (1, lambda a: a.double(), TypeError, "c has dtype .* but w has dtype"),
    "w dims": (0, lambda a: a[0], ValueError, "w must be 2-D [N, D]"),
    "c shape": (1, lambda a: a[:2], ValueError, "c must have shape [4]"),
    "up shape": (2, lambda a: a[:, :3], ValueError, "up has shape [4, 3] but w has shape [4, 9]"),
    "down dtype": (3, lambda a: a.double(), TypeError, "down has dtype .* but w has dtype"),
    "norm": (4, lambda a: "l1", ValueError, "norm must be 'linf' or 'l2', got 'l1'"),
    "device": (2, lambda a: a.to("meta"), ValueError, "up is on meta but w is on cpu"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_arguments_same_error_in_kernel_fake_and_twin(name):
    args = list(make_rows("random", 4, 9, torch.float32)) + ["linf"]
    index, edit, error, message = BAD[name]
    args[index] = edit(args[index])
    pattern = "box_hyperplane_projection: " + message.replace("[", r"\[").replace("]", r"\]")
    with pytest.raises(error, match=pattern):
        _nrx.box_hyperplane_projection(*args)
    with pytest.raises(error, match=pattern):
        reference.box_hyperplane_projection(*args)
    if name != "device":
        with pytest.raises(error, match=pattern):
            _nrx.box_hyperplane_projection(*(a.to("meta") if isinstance(a, torch.Tensor) else a for a in args))
