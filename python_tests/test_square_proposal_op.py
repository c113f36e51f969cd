"""The compiled square_linf_proposal op (Square's L-inf candidates) against its pure-PyTorch twin,
opcheck, its argument checks (the kernel's, the fake kernel's and the twin's messages agree), and the
Square attack run on the twin instead of the kernel (the same answer, draw for draw)."""

from __future__ import annotations

import pytest
import torch

import nonrobust_ext
from nonrobust_ext import ops, reference

_nrx = torch.ops.nonrobust_ext

# (N, C, H, W, n rows drawn (with repeats), side)
CASES = [(1, 1, 1, 1, 1, 1), (5, 1, 28, 28, 3, 4), (7, 3, 8, 6, 12, 6), (4, 3, 32, 32, 4, 1), (3, 2, 5, 9, 0, 2),
         (2, 4, 6, 6, 5, 6)]


def make_args(n_all, c, h, w, n, side, dtype, seed=0, draws=3):
    g = torch.Generator().manual_seed(seed)
    current = torch.rand(n_all, c, h, w, generator=g, dtype=dtype)
    # Faces that sometimes equal the current point (a window that changes nothing must say so).
    low = torch.where(torch.rand(n_all, c, h, w, generator=g) < 0.3, current, current - 0.1)
    high = torch.where(torch.rand(n_all, c, h, w, generator=g) < 0.3, current, current + 0.1)
    rows = torch.randint(0, n_all, (n,), generator=g)
    top = torch.randint(0, h - side + 1, (n,), generator=g)
    left = torch.randint(0, w - side + 1, (n,), generator=g)
    up = torch.randint(0, 2, (n, draws, c), generator=g).bool()
    return current, low, high, rows, top, left, side, up


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", CASES)
def test_kernel_matches_twin(case, dtype):
    args = make_args(*case, dtype=dtype)
    proposal, changed = ops.square_linf_proposal(*args)
    want_proposal, want_changed = reference.square_linf_proposal(*args)
    assert proposal.dtype == dtype and proposal.is_contiguous()
    assert torch.equal(proposal, want_proposal)
    assert torch.equal(changed, want_changed)


def test_window_faces_and_first_draw_that_changes_exactly():
    """Hand-made cases: a 2 x 2 window at (1, 2) takes high in channel 0 and low in channel 1; a draw that
    changes nothing is passed over for the next one; with none that changes, the point stays."""
    current = torch.zeros(2, 2, 4, 5)
    low, high = torch.full_like(current, -1.0), torch.full_like(current, 1.0)
    args = (torch.tensor([1]), torch.tensor([1]), torch.tensor([2]), 2)
    proposal, changed = ops.square_linf_proposal(current, low, high, *args, torch.tensor([[[True, False]]]))
    want = torch.zeros(1, 2, 4, 5)
    want[0, 0, 1:3, 2:4] = 1.0
    want[0, 1, 1:3, 2:4] = -1.0
    assert torch.equal(proposal, want) and changed.tolist() == [True]
    # The low face equals the current point inside the window: the all-low draw changes nothing.
    low[1, :, 1:3, 2:4] = 0.0
    draws = torch.tensor([[[False, False], [False, True], [True, True]]])
    proposal, changed = ops.square_linf_proposal(current, low, high, *args, draws)
    want = torch.zeros(1, 2, 4, 5)
    want[0, 1, 1:3, 2:4] = 1.0  # the second draw: channel 0 low (no change), channel 1 high
    assert torch.equal(proposal, want) and changed.tolist() == [True]
    for op in (ops.square_linf_proposal, reference.square_linf_proposal):
        proposal, changed = op(current, low, high, *args, torch.zeros(1, 4, 2, dtype=torch.bool))
        assert torch.equal(proposal, current[1:]) and changed.tolist() == [False]


def test_nan_face_counts_as_change():
    args = list(make_args(3, 1, 6, 6, 3, 6, torch.float32))
    args[1] = torch.full_like(args[1], float("nan"))
    args[7] = torch.zeros_like(args[7])  # every draw of every row takes the NaN face
    proposal, changed = ops.square_linf_proposal(*args)
    want_proposal, want_changed = reference.square_linf_proposal(*args)
    assert torch.isnan(proposal).all() and changed.all() and torch.equal(changed, want_changed)


def test_opcheck():
    for case in CASES:
        for dtype in (torch.float32, torch.float64):
            torch.library.opcheck(_nrx.square_linf_proposal.default, make_args(*case, dtype=dtype))


def _bad(name):
    """A valid argument tuple with one argument broken, and the message expected."""
    args = list(make_args(4, 3, 8, 8, 2, 3, torch.float32))
    edits = {
        "current dtype": (0, lambda a: a.half(), TypeError, "current must be float32 or float64"),
        "low dtype": (1, lambda a: a.double(), TypeError, "low has dtype .* but current has dtype"),
        "current dims": (0, lambda a: a[0], ValueError, "current must be a batch of images"),
        "high shape": (2, lambda a: a[:3], ValueError, "high has shape [3, 3, 8, 8] but current"),
        "rows dtype": (3, lambda a: a.int(), TypeError, "rows must be int64"),
        "top shape": (4, lambda a: a[:1], ValueError, "top must have shape [2]"),
        "up dtype": (7, lambda a: a.long(), TypeError, "up must be bool"),
        "up shape": (7, lambda a: a[:, :, :2], ValueError, "up must have shape [2, draws >= 1, 3]"),
        "no draws": (7, lambda a: a[:, :0], ValueError, "up must have shape [2, draws >= 1, 3]"),
        "side": (6, lambda a: 9, ValueError, "side must be in [1, 8], got 9"),
        "rows range": (3, lambda a: torch.tensor([0, 4]), ValueError, "rows must be in [0, 3], got 4"),
        "left range": (5, lambda a: torch.tensor([6, 0]), ValueError, "left must be in [0, 5], got 6"),
        "device": (1, lambda a: a.to("meta"), ValueError, "low is on meta but current is on cpu"),
    }
    index, edit, error, message = edits[name]
    args[index] = edit(args[index])
    return args, error, message


@pytest.mark.parametrize("name", ["current dtype", "low dtype", "current dims", "high shape", "rows dtype", "top shape",
                                  "up dtype", "up shape", "no draws", "side", "rows range", "left range",
                                  "device"])
def test_bad_arguments_same_error_in_kernel_and_twin(name):
    args, error, message = _bad(name)
    pattern = message.replace("[", r"\[").replace("]", r"\]")
    with pytest.raises(error, match=pattern):
        _nrx.square_linf_proposal(*args)
    with pytest.raises(error, match=pattern):
        reference.square_linf_proposal(*args)
    if name not in ("rows range", "left range", "device"):  # values, and meta: not the fake kernel's to check
        with pytest.raises(error, match=pattern):
            _nrx.square_linf_proposal(*(a.to("meta") if isinstance(a, torch.Tensor) else a for a in args))


def test_square_attack_same_on_twin(monkeypatch):
    """The attack with the twin in place of the kernel: the same draws and the same points."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2 * 10 * 10, 5))
    x = torch.rand(6, 2, 10, 10)
    y = model(x).argmax(1)
    kwargs = {"eps": 0.05, "queries": 60, "seed": 3, "return_result": True}
    fast = nonrobust_ext.square(model, x, y, **kwargs)
    calls = []

    def twin(*args):
        calls.append(1)
        return reference.square_linf_proposal(*args)

    monkeypatch.setattr(ops, "square_linf_proposal", twin)
    slow = nonrobust_ext.square(model, x, y, **kwargs)
    assert calls, "the twin was not used"
    assert torch.equal(fast.x_adv, slow.x_adv) and torch.equal(fast.queries, slow.queries)
    assert torch.equal(fast.success, slow.success)
