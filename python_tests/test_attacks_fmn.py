"""FMN: closed-form minimal perturbations of linear models, the peer (foolbox's FMN) on a trained CNN, and
what its result reports. The generic contract (bounds, layouts, modes, batch consistency, normalisation)
is in test_attack_contract.py; bad input in test_bad_input_attacks.py."""

from __future__ import annotations

import math

import pytest
import torch
from _helpers import ball_norm

from nonrobust_ext.attacks import FMNResult, fmn
from nonrobust_ext.attacks.fmn import DEFAULT_ALPHA_INIT

DUAL = {"linf": 1, "l2": 2}


class Linear(torch.nn.Module):
    """``z = W x + b`` over the flattened input."""

    def __init__(self, in_features: int, classes: int, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.weight = torch.nn.Parameter(torch.randn(classes, in_features, generator=g, dtype=torch.float64))
        self.bias = torch.nn.Parameter(torch.randn(classes, generator=g, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight.T + self.bias


def boundary_distances(model: Linear, x: torch.Tensor, y: torch.Tensor, norm: str,
                       scale: torch.Tensor) -> torch.Tensor:
    """``[B, K]``: ``(z_y - z_k) / ||(w_y - w_k) * scale||_dual``, the distance in threat-model units
    ``u = x / scale`` from x to the boundary between y and class k of a linear model (without bounds);
    inf for k = y. Their minimum over k is the exact minimal perturbation."""
    with torch.no_grad():
        z = model(x)
        w = model.weight
        unit = scale.view(-1, 1, 1).expand(x.shape[1:]).reshape(1, 1, -1).to(w.dtype)
        differences = (w[y][:, None, :] - w[None, :, :]) * unit
        distances = (z.gather(1, y[:, None]) - z) / differences.norm(p=DUAL[norm], dim=2)
    distances[torch.arange(len(y)), y] = math.inf
    return distances


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("bounds,scale", [(None, 1.0), ((-50.0, 50.0), 1.0), (None, [0.5, 1.0, 2.0])],
                         ids=["unbounded", "bounds-not-binding", "per-channel-scale"])
def test_linear_models_reach_the_exact_minimal_perturbation(norm, bounds, scale):
    """The linearised boundary FMN steers by is exact here. FMN's loss follows the strongest other
    class (the logit difference to it), so it converges to that class's boundary: on every sample
    within 1% of the exact distance to it (measured: 1.0001x). Where that boundary is the nearest one
    (59 of 64 samples here) this is the exact minimal perturbation, min over k of the distances, and
    the radius is within 1% of it too; on the others FMN stops at a farther boundary (1.1-1.5x the
    minimum on such models), the paper's algorithm and not a bug. No fooling point lies closer than the
    minimum, so a radius below it (beyond rounding) would be a wrong distance or a wrong verdict."""
    model = Linear(3 * 4 * 4, 10, seed=0)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 3, 4, 4, generator=g, dtype=torch.float64)
    with torch.no_grad():
        z = model(x)
    y = z.argmax(1)
    res = fmn(model, x, y, norm=norm, bounds=bounds, scale=scale, return_result=True)
    distances = boundary_distances(model, x, y, norm, torch.as_tensor(scale, dtype=torch.float64).expand(3))
    exact = distances.amin(dim=1)
    followed = z.scatter(1, y[:, None], -math.inf).argmax(dim=1)  # the strongest other class at x
    to_followed = distances.gather(1, followed[:, None]).squeeze(1)
    nearest = followed == distances.argmin(dim=1)
    assert bool(res.success.all())
    assert float((res.radius / exact).min()) >= 1 - 1e-9
    assert float((res.radius / to_followed).max()) <= 1.01
    assert int(nearest.sum()) >= 48, "the case should mostly test the exact minimum"
    assert float((res.radius / exact)[nearest].max()) <= 1.01


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("bounds,scale", [(None, 1.0), (None, [0.5, 1.0, 2.0])], ids=["unbounded", "per-channel-scale"])
def test_every_target_class_finds_every_exact_minimum(norm, bounds, scale):
    """With target_classes covering every wrong class, FMN's blind spot (the strongest class's boundary
    rather than the nearest) is gone: every sample of a linear model within 1.25x of its exact minimal
    perturbation (the issue's bound; measured within 1%), and never below it."""
    model = Linear(3 * 4 * 4, 10, seed=0)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 3, 4, 4, generator=g, dtype=torch.float64)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[0] = (y[0] + 1) % 10  # one sample misclassified at x: radius 0
    res = fmn(model, x, y, norm=norm, target_classes=9, bounds=bounds, scale=scale, return_result=True)
    exact = boundary_distances(model, x, y, norm, torch.as_tensor(scale, dtype=torch.float64).expand(3)).amin(dim=1)
    assert bool(res.success.all()) and res.radius[0] == 0 and torch.equal(res.x_adv[0], x[0])
    ratio = res.radius[1:] / exact[1:]
    assert float(ratio.min()) >= 1 - 1e-9
    assert float(ratio.max()) <= 1.25
    assert float(ratio.max()) <= 1.01, "measured: the targeted runs converge to their boundaries"
    with torch.no_grad():
        z = model(res.x_adv)
    assert bool((z.argmax(1) != y).all())
    torch.testing.assert_close(res.loss, (z.scatter(1, y[:, None], -math.inf).amax(1) - z.gather(1, y[:, None])[:, 0]))
    torch.testing.assert_close(res.radius, ball_norm((res.x_adv - x) / torch.as_tensor(scale, dtype=torch.float64)
                                                     .view(1, -1, 1, 1).expand(1, 3, 1, 1), norm), atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="target_classes"):
        fmn(model, x, y, targeted=True, target_classes=2, bounds=None)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_the_result_reports_radius_zero_found_and_not_found(norm):
    """Radius 0 (and x) for a sample misclassified at x, the distance in the attack's norm for a fooled
    one, inf (and x, success False) where the margin has no gradient to follow."""
    model = Linear(3 * 4 * 4, 4, seed=2)
    g = torch.Generator().manual_seed(3)
    x = torch.rand(6, 3, 4, 4, generator=g, dtype=torch.float64)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[0] = (y[0] + 1) % 4  # misclassified at x

    class Flat(torch.nn.Module):  # class 0 wins by 1 whatever the input
        def forward(self, t):
            s = t.flatten(1).sum(1, keepdim=True) * 0.0
            return torch.cat([1 + s, s, s, s], dim=1)

    res = fmn(model, x, y, norm=norm, steps=20, bounds=None, return_result=True)
    assert isinstance(res, FMNResult)
    assert res.radius[0] == 0 and torch.equal(res.x_adv[0], x[0]) and bool(res.success[0]) and res.steps[0] == 0
    assert bool(res.success.all())
    torch.testing.assert_close(res.radius, ball_norm(res.x_adv - x, norm), atol=1e-12, rtol=0)

    flat = fmn(Flat(), x, torch.zeros(6, dtype=torch.long), norm=norm, steps=5, return_result=True)
    assert not bool(flat.success.any()) and bool(torch.isinf(flat.radius).all())
    assert torch.equal(flat.x_adv, x) and bool((flat.steps == 0).all())
    torch.testing.assert_close(flat.loss, torch.full((6,), -1.0, dtype=torch.float64))


def test_targeted_reaches_the_target_class(trained):
    model, x, y = trained
    x, y = x[:32], y[:32]
    target = (y + 1) % 4
    res = fmn(model, x, target, norm="l2", steps=50, targeted=True, return_result=True)
    with torch.no_grad():
        reached = model(res.x_adv).argmax(1) == target
    assert torch.equal(reached, res.success) and float(res.success.float().mean()) >= 0.9
    assert bool((res.loss[res.success] > 0).all())


def test_the_default_step_size_depends_on_the_norm():
    assert DEFAULT_ALPHA_INIT == {"linf": 10.0, "l2": 1.0}
    model = Linear(3 * 4 * 4, 4, seed=4)
    x = torch.rand(4, 3, 4, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    with torch.no_grad():
        y = model(x).argmax(1)
    for norm, alpha in DEFAULT_ALPHA_INIT.items():
        default = fmn(model, x, y, norm=norm, steps=10)
        assert torch.equal(default, fmn(model, x, y, norm=norm, steps=10, alpha_init=alpha, alpha_final=alpha / 100))


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_median_radius_no_larger_than_foolbox_fmn(trained, norm):
    """Same samples, same number of steps, both from x without an initial attack. Our L-inf run uses
    the paper's step size (10, foolbox defaults to 1) and also checks the last iterate, so it should
    not do worse; 1% covers the rounding that can flip single verdicts near the boundary and so shift
    a sample's trajectory, while a broken radius schedule would cost far more than 1% (it cannot land
    on the boundary). On this model (128 samples, 100 steps) the medians are L-inf 0.11823 vs
    foolbox 0.11824 and L2 0.750 vs 1.000: foolbox 3.3.4's L2FMNAttack.project is a no-op (its
    factor is ``norms / norms``), so its L2 radius is where the first fooling step of size alpha
    landed."""
    fb = pytest.importorskip("foolbox")
    model, x, y = trained
    x, y = x[:128], y[:128]
    steps = 100
    ours = fmn(model, x, y, norm=norm, steps=steps, return_result=True)
    attack = fb.attacks.LInfFMNAttack(steps=steps) if norm == "linf" else fb.attacks.L2FMNAttack(steps=steps)
    raw, _, success = attack(fb.PyTorchModel(model, bounds=(0, 1)), x, y, epsilons=None)
    theirs = torch.where(success, ball_norm(raw - x, norm), math.inf)
    assert bool(ours.success.all())
    assert float(ours.radius.median()) <= float(theirs.median()) * 1.01
    with torch.no_grad():
        assert torch.equal(model(ours.x_adv).argmax(1) != y, ours.success)
