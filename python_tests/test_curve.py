"""The robustness curve: its accuracy, median and expected robustness against hand-computed values,
robust_accuracy(curve=True) on a trained CNN against fixed-eps APGD, and bad input."""

from __future__ import annotations

import json
import math

import pytest
import torch

from nonrobust_ext.attacks import RobustnessCurve, robust_accuracy

INF, NAN = math.inf, math.nan


def make_curve(radii: list[float]) -> RobustnessCurve:
    r = torch.tensor(radii, dtype=torch.float64)
    return RobustnessCurve(norm="linf", attack="fmn", radii=r, num_samples=len(radii), clean_correct=int((r > 0).sum()))


# radii; {eps: accuracy}; median; {eps_max: expected robustness}, each worked out by hand:
# accuracy(eps) = #{r > eps} / N (a sample is fooled at eps = r); the lower median is the ceil(N/2)-th
# smallest radius; expected_robustness(m) = mean(min(r, m)) / m.
TABLE = [
    pytest.param([0.0, 0.1, 0.2, INF], {0.0: 0.75, 0.1: 0.5, 0.15: 0.5, 0.2: 0.25, 1e9: 0.25}, 0.1,
                 {0.2: (0 + 0.1 + 0.2 + 0.2) / 4 / 0.2, 0.4: (0 + 0.1 + 0.2 + 0.4) / 4 / 0.4}, id="zero-finite-inf"),
    pytest.param([INF, INF, INF], {0.0: 1.0, 5.0: 1.0}, INF, {1.0: 1.0}, id="never-fooled"),
    pytest.param([0.0, 0.0], {0.0: 0.0, 1.0: 0.0}, 0.0, {1.0: 0.0}, id="all-misclassified"),
    pytest.param([0.3], {0.29: 1.0, 0.3: 0.0}, 0.3, {0.6: 0.5, 0.3: 1.0, 0.1: 1.0}, id="one-sample"),
    pytest.param([0.5, 0.1, 0.3, 0.0, INF], {0.0: 0.8, 0.1: 0.6, 0.3: 0.4, 0.5: 0.2}, 0.3,
                 {1.0: (0.5 + 0.1 + 0.3 + 0 + 1.0) / 5}, id="unsorted-odd"),
]


@pytest.mark.parametrize("radii,accuracies,median,expected", TABLE)
def test_accuracy_median_and_expected_robustness(radii, accuracies, median, expected):
    curve = make_curve(radii)
    for eps, want in accuracies.items():
        assert curve.accuracy(eps) == pytest.approx(want)
    assert curve.accuracy(list(accuracies)) == pytest.approx(list(accuracies.values()))
    assert curve.accuracy(0.0) == curve.clean_accuracy
    assert curve.median_radius == median
    assert math.isinf(median) or curve.accuracy(median) <= 0.5
    for eps_max, want in expected.items():
        assert curve.expected_robustness(eps_max) == pytest.approx(want, rel=1e-12)
    d = curve.as_dict()
    json.dumps(d, allow_nan=False)  # JSON-friendly: inf written as None
    assert d["radii"] == [None if math.isinf(r) else r for r in radii]
    assert d["median_radius"] == (None if math.isinf(median) else median)
    assert d["num_samples"] == len(radii) and d["norm"] == "linf" and d["attack"] == "fmn"


@pytest.mark.parametrize("norm,grid", [("linf", [0.08, 0.1, 0.12, 0.14]), ("l2", [0.5, 0.7, 0.8, 1.0])])
def test_the_curve_never_claims_more_robustness_than_fixed_eps_apgd(trained, norm, grid):
    """Both are upper bounds on the true robust accuracy, but FMN's radius is the distance of a point
    the model misclassifies, so at any eps above it the sample is not robust; APGD (CE, 20 steps) at a
    fixed eps can still fool a sample whose FMN radius is slightly above that eps (FMN stops near, not
    on, the boundary), so 2 of 128 samples (1.6%) of tolerance. Measured (128 samples, default 100 FMN
    steps): linf curve 1.0/0.875/0.406/0.023 vs APGD 1.0/0.938/0.641/0.148; l2 curve
    1.0/0.688/0.234/0.0 vs APGD 1.0/0.703/0.234/0.008."""
    model, x, y = trained
    x, y = x[:128], y[:128]
    curve = robust_accuracy(model, (x, y), curve=True, norm=norm, batch_size=64)
    report = robust_accuracy(model, (x, y), eps=grid, attack="apgd", norm=norm, steps=20, seed=0, batch_size=64)
    assert isinstance(curve, RobustnessCurve) and curve.norm == norm and curve.attack == "fmn"
    assert curve.num_samples == 128 and curve.clean_correct == report.clean_correct
    assert curve.radii.dtype == torch.float64 and curve.radii.device.type == "cpu" and curve.radii.shape == (128,)
    for e, fixed in zip(grid, report.robust_accuracy, strict=True):
        assert curve.accuracy(e) <= fixed + 2 / 128, f"eps={e}"
    assert 0.0 < curve.accuracy(grid[1]) < 1.0, "the grid should cross the curve"


def test_misclassified_samples_get_radius_zero_and_are_not_attacked(trained):
    model, x, y = trained
    x, y = x[:40], y[:40].clone()
    y[:10] = (y[:10] + 1) % 4

    class Recorder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model, self.attacked = model, 0

        def forward(self, t):
            if torch.is_grad_enabled():
                self.attacked = max(self.attacked, t.shape[0])
            return self.model(t)

    recorder = Recorder()
    curve = robust_accuracy(recorder, (x, y), curve=True, steps=20)
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    assert torch.equal(curve.radii == 0, ~correct)
    assert recorder.attacked == int(correct.sum()) == curve.clean_correct
    assert bool(torch.isfinite(curve.radii).all())


@pytest.mark.parametrize("attack", ["deepfool", "cw_l2"])
def test_l2_attacks_that_report_a_radius_give_a_curve(trained, attack):
    model, x, y = trained
    x, y = x[:32], y[:32]
    options = {"steps": 30, "c": 10.0, "lr": 0.05} if attack == "cw_l2" else {}
    curve = robust_accuracy(model, (x, y), curve=True, attack=attack, norm="l2", **options)
    assert curve.attack == attack and curve.norm == "l2"
    fmn_curve = robust_accuracy(model, (x, y), curve=True, norm="l2")
    # DeepFool and (short) CW overshoot the minimal radius FMN approaches: never much below FMN's.
    assert curve.median_radius >= 0.95 * fmn_curve.median_radius
    assert robust_accuracy(model, (x, y), curve=True, attack=attack, **options).norm == "l2"


ERRORS = [
    ({"attack": "pgd"}, ValueError, r"attack must be a minimal-norm attack .* got 'pgd'"),
    ({"attack": "apgd", "norm": "l2"}, ValueError, r"attack must be a minimal-norm attack"),
    ({"attack": lambda m, x, y, eps: x}, ValueError, r"attack must be a minimal-norm attack .* got 'function'"),
    ({"attack": "deepfool", "norm": "linf"}, ValueError, r"attack='deepfool' measures l2 radii only"),
    ({"attack": "cw_l2", "norm": "linf"}, ValueError, r"attack='cw_l2' measures l2 radii only"),
    ({"norm": "l1"}, ValueError, r"attack='fmn' measures linf, l2 radii only"),
    ({"eps": [0.1]}, ValueError, r"eps is not used with curve=True.*curve.accuracy\(eps\)"),
    ({"return_result": False}, TypeError, r"return_result is set by robust_accuracy"),
    ({"targeted": True}, ValueError, r"targeted=True has no place in a robustness curve"),
    ({"stepz": 3}, TypeError, r"stepz is not an option of attack='fmn'"),
    ({"curve": 1}, TypeError, r"curve must be True or False"),
]


@pytest.mark.parametrize("arguments,error,match", ERRORS)
def test_bad_curve_arguments_are_refused(cnn, arguments, error, match):
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.zeros(4, dtype=torch.long)
    with pytest.raises(error, match=match):
        robust_accuracy(cnn, (x, y), **{"curve": True, "steps": 2, **arguments})


def test_eps_is_still_required_without_curve(cnn):
    x = torch.rand(4, 3, 8, 8)
    with pytest.raises(TypeError, match=r"robust_accuracy needs eps"):
        robust_accuracy(cnn, (x, torch.zeros(4, dtype=torch.long)))


@pytest.mark.parametrize("call,error,match", [
    (lambda c: c.expected_robustness(0.0), ValueError, r"eps_max must be > 0"),
    (lambda c: c.expected_robustness(-1.0), ValueError, r"eps_max must be > 0"),
    (lambda c: c.expected_robustness(NAN), ValueError, r"eps_max must be finite"),
    (lambda c: c.expected_robustness(INF), ValueError, r"eps_max must be finite"),
    (lambda c: c.expected_robustness("1"), TypeError, r"eps_max must be a number"),
    (lambda c: c.accuracy(NAN), ValueError, r"eps must be finite"),
    (lambda c: c.accuracy(-0.1), ValueError, r"eps must be >= 0"),
    (lambda c: c.accuracy([0.1, NAN]), ValueError, r"eps\[1\] must be finite"),
    (lambda c: c.accuracy("0.1"), TypeError, r"eps must be a number or a list of numbers"),
])
def test_bad_curve_queries_are_refused(call, error, match):
    with pytest.raises(error, match=match):
        call(make_curve([0.0, 0.1, INF]))


@pytest.mark.parametrize("radii,num_samples,clean_correct,match", [
    (torch.tensor([0.1, NAN]), 2, 2, r"radii must be >= 0"),
    (torch.tensor([0.1, -0.1]), 2, 2, r"radii must be >= 0"),
    (torch.tensor([0.1, 0.2]), 3, 2, r"radii must be a 1-D tensor of one radius per sample \(3\)"),
    (torch.tensor([0.1, 0.2]), 2, 1, r"only 1 are correctly classified"),
    (torch.zeros(0), 0, 0, r"holds no samples"),
])
def test_inconsistent_curves_cannot_exist(radii, num_samples, clean_correct, match):
    with pytest.raises(ValueError, match=match):
        RobustnessCurve(norm="l2", attack="fmn", radii=radii, num_samples=num_samples, clean_correct=clean_correct)
