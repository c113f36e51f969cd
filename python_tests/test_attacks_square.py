"""square: the threat model at every query, the accept rule (the margin never increases), queries and
restarts, the paper's schedule and pulse, reproducibility, success on a trained model against
torchattacks.Square and random noise, and its own bad input. What every attack guarantees (layouts,
logits selectors, normalisation, parameter grads, eval mode) is in test_attack_contract.py."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from _helpers import DEVICES, SmallCNN, ball_norm, random_batch

from nonrobust_ext.attacks import SquareResult, square
from nonrobust_ext.attacks._common import margin
from nonrobust_ext.attacks.square import _pulse, _window_share

NORMS = ["linf", "l2"]
# Radii on the trained pattern task: one where a few hundred queries fool many samples but random
# noise none, and a small one that the search cannot cross in a few queries.
STRONG = {"linf": 0.14, "l2": 1.2}
WEAK = {"linf": 0.01, "l2": 0.05}


class Recorder(torch.nn.Module):
    """Keeps every batch the model is queried on, and its margins."""

    def __init__(self, model: torch.nn.Module, y: torch.Tensor) -> None:
        super().__init__()
        self.model, self.y = model, y
        self.inputs: list[torch.Tensor] = []
        self.margins: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.model(x)
        self.inputs.append(x.clone())
        if x.shape[0] == self.y.shape[0]:
            self.margins.append(margin(z, self.y))
        return z


def _predicted(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x).argmax(1)


# ------------------------------------------------------------------------------------ threat model


@pytest.mark.parametrize("norm", NORMS)
def test_every_query_is_inside_the_ball_and_the_bounds(trained, norm):
    """Per-sample radii; nothing is fooled at these radii, so every query holds the whole batch in order
    and each queried point can be checked against its own sample and radius."""
    model, x, y = trained
    x, y = x[:32], y[:32]
    eps = torch.linspace(0.3, 1.0, 32) * WEAK[norm]
    recorder = Recorder(model, y)
    res = square(recorder, x, y, eps=eps, norm=norm, queries=30, restarts=2, seed=0, return_result=True)
    assert not bool(res.success.any()), "the radius should leave every sample robust"
    assert len(recorder.inputs) == 1 + 2 * 30  # the clean check, then per run the start and 29 proposals
    for point in recorder.inputs[1:] + [res.x_adv]:
        assert bool((point >= 0).all() and (point <= 1).all())
        assert bool((ball_norm(point - x, norm) <= eps.double() * (1 + 1e-6) + 1e-7).all())
    if norm == "linf":  # every point of the search is a vertex of the ball (clipped to the bounds)
        gap = (res.x_adv - x).abs()
        on_vertex = (gap - eps.view(-1, 1, 1, 1)).abs() < 1e-6
        at_bound = (res.x_adv == 0) | (res.x_adv == 1)
        assert bool((on_vertex | at_bound).all())
    else:  # the L2 search spends its whole radius unless the bounds cut it
        assert bool((ball_norm(res.x_adv - x, "l2") > 0.9 * eps.double()).all())


@pytest.mark.parametrize("norm", NORMS)
def test_images_that_are_not_square_and_tiny_images(norm):
    torch.manual_seed(0)
    for h, w in ((6, 10), (2, 2), (1, 5)):
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * h * w, 4))
        x = torch.rand(5, 3, h, w, generator=torch.Generator().manual_seed(h))
        y = _predicted(model, x)
        eps = 0.1 if norm == "linf" else 0.5
        x_adv = square(model, x, y, eps=eps, norm=norm, queries=25, seed=1)
        assert bool((ball_norm(x_adv - x, norm) <= eps * (1 + 1e-6) + 1e-7).all())
        assert bool((x_adv >= 0).all() and (x_adv <= 1).all()) and not torch.equal(x_adv, x)


# ------------------------------------------------------------------------------------- the search


@pytest.mark.parametrize("norm", NORMS)
def test_the_margin_never_increases_and_the_best_point_is_returned(trained, norm):
    """Each query's margins, per sample, against the returned point: the search keeps a proposal only
    where it lowers the margin, so the margin of the kept point after each query is the running
    minimum over the start and the proposals, and the returned point has the final one."""
    model, x, y = trained
    x, y = x[:32], y[:32]
    recorder = Recorder(model, y)
    res = square(recorder, x, y, eps=WEAK[norm] * 2, norm=norm, queries=40, seed=3, return_result=True)
    assert not bool(res.success.any())
    queried = torch.stack(recorder.margins[1:])  # [queries, B]: the start, then the proposals
    kept = queried.cummin(dim=0).values
    assert bool((kept[1:] <= kept[:-1]).all())
    assert bool((queried[1:] < kept[:-1]).any()), "some proposals should have been kept"
    assert bool((queried[1:] > kept[:-1]).any()), "some proposals should have been refused"
    torch.testing.assert_close(res.loss, -kept[-1], atol=1e-6, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(margin(model(res.x_adv), y), kept[-1], atol=1e-5, rtol=0)
    assert bool((res.queries == 41).all()) and bool((res.steps == 39).all())


def test_misclassified_and_zero_radius_samples_are_returned_as_they_are(trained):
    model, x, y = trained
    x, y = x[:8].clone(), y[:8].clone()
    y[:3] = (y[:3] + 1) % 4  # the model misclassifies these from the start
    eps = torch.full((8,), 0.12)
    eps[3] = 0.0
    res = square(model, x, y, eps=eps, queries=50, seed=0, return_result=True)
    assert isinstance(res, SquareResult)
    assert torch.equal(res.x_adv[:4], x[:4])
    assert res.success[:3].tolist() == [True] * 3 and not bool(res.success[3])
    assert res.queries[:4].tolist() == [1] * 4 and res.steps[:4].tolist() == [0] * 4
    assert bool((res.queries[4:] > 1).all())


def test_fooled_samples_stop_and_restarts_attack_only_the_rest(trained):
    model, x, y = trained
    x, y = x[:64], y[:64]
    queries = 30
    seen: list[int] = []
    counter = torch.nn.Module()
    counter.forward = lambda t: (seen.append(t.shape[0]), model(t))[1]  # type: ignore[method-assign]
    res = square(counter, x, y, eps=0.16, queries=queries, restarts=3, seed=0, return_result=True)
    assert 0 < int(res.success.sum()) < 64, "the case should mix fooled and robust samples"
    assert sum(seen) == int(res.queries.sum()), "queries counts every row the model saw"
    assert bool((res.queries <= 1 + 3 * queries).all())
    # A sample fooled by run r spent the clean check, `queries` per earlier run and 1 + steps in run r.
    fooled = res.success
    torch.testing.assert_close(res.queries[fooled], 1 + queries * res.restart[fooled] + 1 + res.steps[fooled])
    assert bool((res.restart[fooled] > 0).any()), "later runs should fool some samples the first did not"
    assert bool((res.queries[~fooled] == 1 + 3 * queries).all())
    # The batch shrinks as samples are fooled: never more rows than the run before.
    first_run = seen[1 : 1 + queries]
    assert first_run == sorted(first_run, reverse=True) and first_run[-1] < first_run[0]
    with torch.no_grad():
        assert torch.equal(model(res.x_adv).argmax(1) != y, res.success)


def test_the_schedule_halves_p_at_the_papers_milestones():
    assert [_window_share(0.8, i, 10000) for i in (0, 10, 11, 50, 51, 8000, 8001, 9999)] == pytest.approx(
        [0.8, 0.8, 0.4, 0.4, 0.2, 0.8 / 256, 0.8 / 512, 0.8 / 512])
    # Other budgets stretch it: iteration 6 of 5000 is iteration 12 of 10000.
    assert _window_share(0.8, 5, 5000) == 0.8 and _window_share(0.8, 6, 5000) == 0.4
    assert _window_share(0.5, 0, 1) == 0.5


@pytest.mark.parametrize("side", [1, 2, 3, 5, 8])
def test_the_l2_pulse(side):
    pulse = _pulse(side, torch.float64, torch.device("cpu"))
    assert pulse.shape == (side, side) and math.isclose(float(pulse.norm()), 1.0)
    half = side // 2
    assert bool((pulse[:half] > 0).all() and (pulse[half:] < 0).all())
    # Largest at the centre of each half, symmetric left to right.
    assert torch.allclose(pulse, pulse.flip(1)) if side % 2 else True
    assert float(pulse[half:].abs().max()) == float(pulse[half + (side - half) // 2].abs().max())


# ----------------------------------------------------------------------------------- reproducibility


@pytest.mark.parametrize("norm", NORMS)
def test_a_seed_reproduces_the_attack_and_other_seeds_differ(norm):
    torch.manual_seed(0)
    model = SmallCNN()
    x, _ = random_batch(8)
    y = _predicted(model, x)
    eps = 0.05 if norm == "linf" else 0.4
    runs = [square(model, x, y, eps=eps, norm=norm, queries=15, seed=s, return_result=True) for s in (4, 4, 5)]
    assert torch.equal(runs[0].x_adv, runs[1].x_adv) and torch.equal(runs[0].queries, runs[1].queries)
    assert not torch.equal(runs[0].x_adv, runs[2].x_adv)
    g = torch.Generator().manual_seed(4)
    assert torch.equal(square(model, x, y, eps=eps, norm=norm, queries=15, generator=g), runs[0].x_adv)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_devices_and_dtypes_draw_the_same_search(device, dtype):
    """The randomness is drawn on the CPU: the same seed gives the same search on any device (a float64
    model makes the accept decisions independent of the device's rounding)."""
    torch.manual_seed(0)
    model = SmallCNN().double()
    x, _ = random_batch(8, dtype=torch.float64)
    y = _predicted(model, x)
    want = square(model, x, y, eps=0.05, queries=15, seed=2)
    got = square(model.to(device), x.to(device), y.to(device), eps=0.05, queries=15, seed=2)
    torch.testing.assert_close(got.cpu(), want, atol=1e-12, rtol=0)
    as_float = square(model.to(device, dtype), x.to(device, dtype), y.to(device), eps=0.05, queries=15, seed=2)
    assert as_float.dtype == dtype and as_float.device.type == device


# ------------------------------------------------------------------------------------ trained model


def _accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def _square_accuracy(trained: Any, norm: str) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, float]:
    model, x, y = trained
    x, y = x[:128], y[:128]
    return model, x, y, _accuracy(model, square(model, x, y, eps=STRONG[norm], norm=norm, queries=200, seed=0), y)


@pytest.mark.parametrize("norm", NORMS)
def test_far_stronger_than_random_noise(trained, norm):
    """Random vertices of the L-inf ball, or random directions on the L2 sphere, fool no sample at these
    radii: what the search fools, it found."""
    model, x, y, ours = _square_accuracy(trained, norm)
    eps = STRONG[norm]
    g = torch.Generator().manual_seed(0)
    if norm == "linf":
        noise = eps * (torch.randint(0, 2, x.shape, generator=g) * 2 - 1)
    else:
        d = torch.randn(x.shape, generator=g)
        noise = eps * d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    random = _accuracy(model, (x + noise).clamp(0, 1), y)
    assert random > 0.9 and ours < random - 0.4, (ours, random)


@pytest.mark.slow
@pytest.mark.parametrize("norm", NORMS)
def test_at_least_as_strong_as_torchattacks(trained, norm):
    """Same radius, budget, loss (margin), restarts (1) and p_init (0.8) as torchattacks.Square.

    The tolerance, 0.05 of accuracy, is about one binomial standard deviation of a success rate over
    128 samples near 0.5, for two searches with independent random draws. (On 8x8 images the gap is
    far larger in fact: torchattacks, like the authors' code, never places a window on the last row or
    column, which at the first windows' side, 7, pins every window to the top-left corner.)"""
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y, ours = _square_accuracy(trained, norm)
    torch.manual_seed(0)
    attack = torchattacks.Square(model, norm="Linf" if norm == "linf" else "L2", eps=STRONG[norm], n_queries=200,
                                 n_restarts=1, p_init=0.8, loss="margin", seed=0)
    theirs = _accuracy(model, attack(x, y), y)
    assert ours <= theirs + 0.05, (ours, theirs)


# -------------------------------------------------------------------------------------- bad input


BAD: list[tuple[dict[str, Any], type, str]] = [
    ({"eps": -0.1}, ValueError, r"eps must be >= 0"),
    ({"eps": math.nan}, ValueError, r"eps must be finite"),
    ({"queries": 0}, ValueError, r"queries must be >= 1"),
    ({"queries": 10.0}, TypeError, r"queries must be an int"),
    ({"p_init": 0.0}, ValueError, r"p_init must be in \(0, 1\]"),
    ({"p_init": 1.5}, ValueError, r"p_init must be in \(0, 1\]"),
    ({"p_init": math.nan}, ValueError, r"p_init must be finite"),
    ({"p_init": "0.8"}, TypeError, r"p_init must be a number"),
    ({"restarts": 0}, ValueError, r"restarts must be >= 1"),
    ({"norm": "l1"}, ValueError, r"norm must be one of 'linf', 'l2'"),
    ({"x": "nan"}, ValueError, r"x holds 1 NaN value"),
    ({"x": "3d"}, ValueError, r"x must be a batch of images \[B, C, H, W\]"),
    ({"x": "5d"}, ValueError, r"x must be a batch of images \[B, C, H, W\]"),
]


@pytest.mark.parametrize("arguments,error,match", BAD, ids=[m[:30] for _, _, m in BAD])
def test_bad_input_is_refused_with_a_message_naming_it(cnn, arguments, error, match):
    x, y = random_batch()
    arguments = dict(arguments)
    if arguments.get("x") == "nan":
        x = x.clone()
        x[0, 0, 0, 0] = math.nan
    elif arguments.get("x") == "3d":
        x = x[..., 0]
    elif arguments.get("x") == "5d":
        x = x[..., None]
    arguments.pop("x", None)
    with pytest.raises(error, match=match):
        square(cnn, x, y, **{"eps": 0.05, "queries": 5, "seed": 0, **arguments})
