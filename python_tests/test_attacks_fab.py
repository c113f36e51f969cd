"""fab (the fast adaptive boundary attack): its projection against a brute-force answer, the closed-form
minimal perturbation of a linear model, the radius mode AutoAttack uses, and parity with torchattacks'
FAB on a trained model. The contract every attack keeps is in test_attack_contract.py, bad input in
test_bad_input_attacks.py."""

from __future__ import annotations

import math

import pytest
import torch

from nonrobust_ext import ops, reference
from nonrobust_ext.attacks import FABResult, fab
from nonrobust_ext.attacks._common import margin

NORMS = ["linf", "l2"]


def _norm(t: torch.Tensor, norm: str) -> torch.Tensor:
    t = t.flatten(1).double()
    return t.abs().amax(dim=1) if norm == "linf" else t.norm(dim=1)


# ----------------------------------------------------------------------------------- the projection
# Both implementations: the compiled op (selection on the breakpoints) and its twin (a sort).


@pytest.fixture(params=["kernel", "twin"])
def project(request):
    return ops.box_hyperplane_projection if request.param == "kernel" else reference.box_hyperplane_projection


def _reach(w: torch.Tensor, up: torch.Tensor, down: torch.Tensor, s: float, norm: str) -> float:
    """``max w . d`` over the box with ``||d||_inf <= s`` (L-inf), or ``w . clip(s w)`` (L2: the
    minimiser of ``||d||_2`` on ``{w . d = that value}`` is the clipped multiple of ``w``)."""
    if norm == "linf":
        d = torch.where(w > 0, torch.clamp(up, max=s), -torch.clamp(down, max=s))
    else:
        d = torch.maximum(torch.minimum(s * w, up), -down)
    return float((w * d).sum())


def _bisection(w, c, up, down, norm):
    """The smallest L-inf radius (L-inf) or multiplier (L2) that reaches ``w . d = c >= 0``, by
    bisection on the monotone reach; ``None`` where the box does not reach it."""
    hi = 1.0
    while _reach(w, up, down, hi, norm) < c:
        hi *= 2
        if hi > 1e12:
            return None
    lo = 0.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if _reach(w, up, down, mid, norm) < c:
            lo = mid
        else:
            hi = mid
    return hi


def _instance(g, n):
    w = torch.randn(n, generator=g, dtype=torch.float64)
    w[torch.rand(n, generator=g) < 0.2] = 0.0  # some coordinates do not move
    t = torch.rand(n, generator=g, dtype=torch.float64)
    up, down = 1 - t, t.clone()
    c = float(torch.randn((), generator=g, dtype=torch.float64)) * float(w.abs().sum()) * 0.3
    return w, c, up, down


@pytest.mark.parametrize("norm", NORMS)
def test_projection_matches_a_bisection_reference_and_is_locally_optimal(norm, project):
    g = torch.Generator().manual_seed(0)
    rows = [_instance(g, int(n)) for n in torch.randint(1, 12, (60,), generator=g)]
    for w, c, up, down in rows:
        d = project(w[None], torch.tensor([c], dtype=torch.float64), up[None], down[None], norm)[0]
        assert bool((d <= up + 1e-12).all() and (d >= -down - 1e-12).all()), "the step leaves the box"
        assert bool((d[w == 0] == 0).all())
        sign = 1.0 if c >= 0 else -1.0
        s = _bisection(w * sign, abs(c), up, down, norm)
        if s is None:  # out of reach: the box corner furthest towards the hyperplane
            corner = torch.where(w * sign > 0, up, -down)
            torch.testing.assert_close(d, torch.where(w != 0, corner, torch.zeros_like(d)), rtol=0, atol=1e-12)
            continue
        assert float((w * d).sum()) == pytest.approx(c, abs=1e-9)
        if norm == "linf":
            assert float(d.abs().max()) == pytest.approx(s, abs=1e-9)
        else:
            torch.testing.assert_close(d, torch.maximum(torch.minimum(s * w * sign, up), -down), rtol=0, atol=1e-9)
        # Convex problem: no feasible move along the hyperplane shortens the step.
        best = float(_norm(d[None], norm))
        for _ in range(20):
            e = torch.randn(w.shape, generator=g, dtype=torch.float64)
            e -= (e @ w) / max(float(w @ w), 1e-300) * w if bool((w != 0).any()) else 0
            for size in (1e-4, 1e-2):
                moved = d + size * e
                if bool((moved <= up).all() and (moved >= -down).all()):
                    assert float(_norm(moved[None], norm)) >= best - 1e-12


@pytest.mark.parametrize("norm", NORMS)
def test_projection_in_two_dimensions_matches_an_exhaustive_search(norm, project):
    """On a line ``w . d = c`` within the box: the shortest grid point of the feasible segment."""
    g = torch.Generator().manual_seed(1)
    for _ in range(25):
        w = torch.randn(2, generator=g, dtype=torch.float64)
        t = torch.rand(2, generator=g, dtype=torch.float64)
        up, down = 1 - t, t
        c = float(torch.empty((), dtype=torch.float64).uniform_(-0.8, 0.8, generator=g))
        d = project(w[None], torch.tensor([c], dtype=torch.float64), up[None], down[None], norm)[0]
        # The segment: d(u) = p + u e with p on the line and e along it, clipped to the box.
        e = torch.stack([-w[1], w[0]])
        p = c * w / (w @ w)
        u = torch.linspace(-3, 3, 100_001, dtype=torch.float64)
        points = p[None] + u[:, None] * e[None]
        inside = ((points <= up) & (points >= -down)).all(dim=1)
        if not bool(inside.any()):
            assert not abs(float(w @ d) - c) < 1e-9, "the box misses the line: no exact step exists"
            continue
        want = float(_norm(points[inside], norm).min())
        assert float(w @ d) == pytest.approx(c, abs=1e-9)
        assert float(_norm(d[None], norm)) == pytest.approx(want, abs=1e-4)


def test_projection_on_open_bounds_and_zero_normals(project):
    w = torch.tensor([[3.0, -4.0], [0.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    c = torch.tensor([5.0, 1.0, -2.0], dtype=torch.float64)
    inf = torch.full((3, 2), math.inf, dtype=torch.float64)
    d = project(w, c, inf, inf, "l2")
    torch.testing.assert_close(d, torch.tensor([[0.6, -0.8], [0.0, 0.0], [-2.0, 0.0]], dtype=torch.float64))
    d = project(w, c, inf, inf, "linf")
    torch.testing.assert_close(d, torch.tensor([[5 / 7, -5 / 7], [0.0, 0.0], [-2.0, 0.0]], dtype=torch.float64))


# ------------------------------------------------------------------------------ a linear model


class Linear:
    """``z = W x + b`` on flattened inputs: its nearest boundary is known in closed form."""

    def __init__(self, classes=5, dim=3 * 4 * 4, seed=0, dtype=torch.float64):
        g = torch.Generator().manual_seed(seed)
        self.W = torch.randn(classes, dim, generator=g, dtype=dtype)
        self.b = torch.randn(classes, generator=g, dtype=dtype)

    def __call__(self, x):
        return x.flatten(1) @ self.W.T.to(x.dtype) + self.b.to(x.dtype)

    def distance(self, x, y, norm, classes=None):
        """Per sample, the smallest ``(z_y - z_k) / ||w_y - w_k||_dual`` over ``classes`` (all k != y)."""
        z = self(x).double()
        dual = 1 if norm == "linf" else 2
        gap = z.gather(1, y[:, None]) - z
        size = (self.W[y][:, None, :] - self.W[None]).double().norm(p=dual, dim=2)
        ratio = gap / size
        allowed = torch.arange(z.shape[1])[None] != y[:, None]
        if classes is not None:
            allowed &= torch.arange(z.shape[1])[None] == classes[:, None]
        return torch.where(allowed, ratio, torch.full_like(ratio, math.inf)).amin(dim=1)


def _linear_case(dtype=torch.float64, n=12):
    model = Linear(dtype=dtype)
    x = torch.rand(n, 3, 4, 4, generator=torch.Generator().manual_seed(1), dtype=dtype)
    return model, x, model(x).argmax(1)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("norm", NORMS)
def test_untargeted_fab_finds_the_closed_form_minimal_perturbation_of_a_linear_model(norm, dtype):
    model, x, y = _linear_case(dtype)
    res = fab(model, x, y, norm=norm, bounds=None, steps=10, return_result=True)
    assert isinstance(res, FABResult) and res.x_adv.dtype == dtype
    want = model.distance(x, y, norm)
    assert bool(res.success.all())
    ratio = res.radius.double() / want
    assert bool((ratio >= 1 - 1e-5).all() and (ratio <= 1.05).all()), ratio
    torch.testing.assert_close(res.radius.double(), _norm(res.x_adv - x, norm), rtol=1e-5, atol=0)
    assert bool((model(res.x_adv).argmax(1) != y).all())


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("rank", [2, 3, 5])
def test_targeted_fab_finds_the_closed_form_distance_to_the_ranked_class(norm, rank):
    model, x, y = _linear_case()
    target = model(x).argsort(dim=1, descending=True)[:, rank - 1]
    res = fab(model, x, y, norm=norm, bounds=None, steps=10, target_rank=rank, return_result=True)
    want = model.distance(x, y, norm, classes=target)
    assert bool(res.success.all())
    # The straight path to the target's boundary may cross a third class's first (success is any
    # misclassification), so the radius may fall short of the pair's distance, never of the nearest one.
    assert bool((res.radius <= 1.05 * want).all() and (res.radius >= model.distance(x, y, norm) * (1 - 1e-9)).all())


def test_bounds_that_bind_are_respected_and_the_closed_form_is_a_lower_bound():
    model, x, y = _linear_case()
    for norm in NORMS:
        res = fab(model, x, y, norm=norm, bounds=(0.0, 1.0), steps=20, return_result=True)
        assert bool((res.x_adv >= 0).all() and (res.x_adv <= 1).all())
        assert bool((res.radius[res.success] >= model.distance(x, y, norm)[res.success] * (1 - 1e-9)).all())


# ------------------------------------------------------------------------------- the radius mode


def test_with_eps_success_means_fooled_within_eps_and_x_is_returned_otherwise():
    model, x, y = _linear_case()
    for norm in NORMS:
        closest = model.distance(x, y, norm)
        eps = closest * torch.tensor([0.9, 1.1]).repeat(6).double()
        res = fab(model, x, y, norm=norm, eps=eps, bounds=None, steps=20, return_result=True)
        assert torch.equal(res.success, eps > closest)
        assert torch.equal(res.x_adv[~res.success], x[~res.success])
        assert bool(torch.isinf(res.radius[~res.success]).all())
        assert bool((_norm(res.x_adv - x, norm) <= eps * (1 + 1e-9)).all())
        assert torch.equal(fab(model, x, y, norm=norm, eps=eps, bounds=None, steps=20), res.x_adv)


def test_misclassified_samples_are_returned_as_x_with_success_and_radius_zero():
    model, x, y = _linear_case()
    y = y.clone()
    y[:3] = (y[:3] + 1) % 5
    for eps in (None, 0.05):
        res = fab(model, x, y, eps=eps, bounds=None, steps=5, return_result=True)
        assert torch.equal(res.x_adv[:3], x[:3]) and bool(res.success[:3].all())
        assert res.radius[:3].tolist() == [0.0] * 3 and res.steps[:3].tolist() == [0] * 3
        torch.testing.assert_close(res.loss, -margin(model(res.x_adv), y))


class FlatAtCentre(torch.nn.Module):
    """Class 0 until ``(sum(x - 0.5))^2`` passes 0.1: at the centre the margin's gradient is exactly
    zero, so a run from x cannot move and only a random restart can find the boundary."""

    def forward(self, x):
        s = (x - 0.5).flatten(1).sum(dim=1)
        return torch.stack([torch.zeros_like(s), 10 * s * s - 1], dim=1)


@pytest.mark.parametrize("norm", NORMS)
def test_random_restarts_find_what_the_run_from_x_cannot_and_a_seed_fixes_them(norm):
    x = torch.full((4, 3, 4, 4), 0.5, dtype=torch.float64)
    y = torch.zeros(4, dtype=torch.long)
    eps = 0.02 if norm == "linf" else 0.2
    alone = fab(FlatAtCentre(), x, y, norm=norm, eps=eps, steps=10, return_result=True)
    assert not bool(alone.success.any())
    a = fab(FlatAtCentre(), x, y, norm=norm, eps=eps, steps=10, restarts=3, seed=0, return_result=True)
    assert bool(a.success.all()) and bool((a.restart >= 1).all())
    assert bool((a.radius <= eps).all())
    b = fab(FlatAtCentre(), x, y, norm=norm, eps=eps, steps=10, restarts=3, seed=0)
    c = fab(FlatAtCentre(), x, y, norm=norm, eps=eps, steps=10, restarts=3, seed=1)
    assert torch.equal(a.x_adv, b) and not torch.equal(b, c)


# ----------------------------------------------------------------------- parity with torchattacks


def _autoattack_fab_t(model, x, y, eps, norm, steps, num_classes):
    """AutoAttack's FAB-T cascade: target ranks 2..num_classes on the points still robust."""
    broken = model(x).argmax(1) != y
    for rank in range(2, num_classes + 1):
        rows = (~broken).nonzero().squeeze(1)
        if rows.numel() == 0:
            break
        res = fab(model, x[rows], y[rows], eps=eps, norm=norm, steps=steps, target_rank=rank, seed=0,
                  return_result=True)
        assert bool((_norm(res.x_adv - x[rows], norm) <= eps + 1e-6).all())
        broken[rows] |= res.success
    return broken


@pytest.mark.slow
@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.65)])
def test_targeted_cascade_breaks_as_many_points_as_torchattacks_fab(trained, norm, eps):
    """Both run FAB-T over the runner-up classes; ours may miss at most one sample of 64 that theirs
    breaks (a point found at the boundary can flip with the float rounding of another implementation)."""
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = trained
    x, y = x[:64], y[:64]
    steps = 20
    with torch.no_grad():
        ours = _autoattack_fab_t(model, x, y, eps, norm, steps, num_classes=4)
    attack = torchattacks.FAB(model, norm={"linf": "Linf", "l2": "L2"}[norm], eps=eps, steps=steps, n_restarts=1,
                              multi_targeted=True, n_classes=4, seed=0)
    adv = attack(x, y)
    with torch.no_grad():
        theirs = (model(adv).argmax(1) != y) & (_norm(adv - x, norm) <= eps + 1e-6)
    print(f"FAB-T {norm} eps={eps}: ours broke {int(ours.sum())}/64, torchattacks {int(theirs.sum())}/64")
    assert 0 < int(theirs.sum()) < 64, "the radius should leave some points robust"
    assert int(ours.sum()) >= int(theirs.sum()) - 1
