"""deepfool / cw_l2 (minimal-perturbation attacks): known answers, parity with torchattacks, and
near-minimal perturbations on a trained model. The contract every attack keeps (bounds, modes,
layouts, batch consistency, ...) is in test_attack_contract.py, bad input in test_bad_input_attacks.py."""

from __future__ import annotations

import pytest
import torch

import nonrobust_ext
from nonrobust_ext.attacks._common import margin
from nonrobust_ext.attacks.cw import CWResult, cw_l2
from nonrobust_ext.attacks.deepfool import DeepFoolResult, deepfool


def _batch(n=6, channels=3, seed=0, dtype=torch.float64, lo=0.0, hi=1.0):
    g = torch.Generator().manual_seed(seed)
    x = lo + (hi - lo) * torch.rand(n, channels, 8, 8, generator=g, dtype=dtype)
    y = torch.randint(0, 4, (n,), generator=g)
    return x, y


def _correct_labels(model, x, flip=0):
    """The model's own predictions (every sample starts correctly classified), the first ``flip`` of
    them changed (those start misclassified)."""
    with torch.no_grad():
        y = model.eval()(x).argmax(1)
    y[:flip] = (y[:flip] + 1) % 4
    return y


def _l2(a, b):
    return (a.double() - b.double()).flatten(1).norm(dim=1)


# -------------------------------------------------------------------------------------- DeepFool


@pytest.mark.parametrize("num_classes", [None, 2, 3])
def test_deepfool_known_answer_on_a_linear_model(num_classes):
    """On an affine classifier one step is exact: (1 + overshoot) times the projection onto the
    nearest boundary among the candidate classes (all, or the runners-up by clean logit)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 4)).double()
    x = torch.randn(32, 3, 2, 2, dtype=torch.float64)
    with torch.no_grad():
        z = model(x)
    y = z.argmax(1)
    weight = model[1].weight.detach()
    expected = torch.empty_like(x)
    for i in range(len(x)):
        ranked = z[i].argsort(descending=True).tolist()
        candidates = ranked[1:num_classes] if num_classes else [k for k in range(4) if k != y[i]]
        f = torch.stack([z[i, k] - z[i, y[i]] for k in candidates])
        w = torch.stack([weight[k] - weight[y[i]] for k in candidates])
        nearest = int((f.abs() / w.norm(dim=1)).argmin())
        step = f[nearest].abs() / w[nearest].norm() ** 2 * w[nearest]
        expected[i] = x[i] + 1.02 * step.view(3, 2, 2)
    res = deepfool(model, x, y, num_classes=num_classes, bounds=None, return_result=True)
    assert isinstance(res, DeepFoolResult)
    torch.testing.assert_close(res.x_adv, expected, atol=1e-12, rtol=0)
    assert bool(res.success.all()) and bool((res.steps == 1).all())
    torch.testing.assert_close(res.l2, _l2(expected, x), atol=1e-12, rtol=0)


def test_deepfool_top_k_with_every_class_equals_all_classes(cnn):
    cnn = cnn.double()
    x, _ = _batch(n=8)
    y = _correct_labels(cnn, x)
    assert torch.equal(deepfool(cnn, x, y, steps=5, num_classes=4), deepfool(cnn, x, y, steps=5))


def test_deepfool_leaves_misclassified_samples_alone_and_counts_steps(cnn):
    cnn = cnn.double()
    x, _ = _batch(n=8)
    y = _correct_labels(cnn, x, flip=3)
    res = deepfool(cnn, x, y, steps=1, overshoot=0.0, return_result=True)
    assert torch.equal(res.x_adv[:3], x[:3]) and bool((res.steps[:3] == 0).all()) and bool(res.success[:3].all())
    assert bool((res.steps[3:] == 1).all())
    # One step without overshoot only reaches the linearised boundary: the model's own margin
    # stays near zero, which says the step went to the boundary and not past it.
    with torch.no_grad():
        after = margin(cnn(res.x_adv[3:]), y[3:])
        before = margin(cnn(x[3:]), y[3:])
    assert bool((after.abs() < 0.5 * before).all())
    more = deepfool(cnn, x, y, steps=50, return_result=True)
    assert bool(more.success.all()) and int(more.steps.max()) > 1


def test_deepfool_matches_torchattacks(cnn):
    """Same x_adv (to rounding), same success, same L2 norms. Inputs stay away from the bounds so
    that no clip binds: with binding clips both implementations creep towards the boundary and stop
    within rounding of it, where a last-bit difference decides success."""
    torchattacks = pytest.importorskip("torchattacks")
    cnn = cnn.double().eval()
    x, _ = _batch(n=12, lo=0.25, hi=0.75)
    y = _correct_labels(cnn, x, flip=2)
    theirs = torchattacks.DeepFool(cnn, steps=50, overshoot=0.02)(x, y)
    ours = deepfool(cnn, x, y, steps=50, overshoot=0.02, return_result=True)
    torch.testing.assert_close(ours.x_adv, theirs, atol=1e-12, rtol=0)
    with torch.no_grad():
        assert torch.equal(ours.success, cnn(theirs).argmax(1) != y)
    torch.testing.assert_close(ours.l2, _l2(theirs, x), atol=0, rtol=1e-6)
    assert bool(ours.success.all()) and int(ours.steps.max()) > 1, "the case should need several steps"


# -------------------------------------------------------------------------------------------- CW


def test_cw_returns_x_where_it_never_succeeds(trained):
    model, x, y = trained
    x, y = x[:32].clone(), y[:32].clone()
    y[:2] = (y[:2] + 1) % 4
    # A constant this small cannot outweigh the distance term on a model with wide margins.
    res = cw_l2(model, x, y, c=1e-4, steps=10, return_result=True)
    assert isinstance(res, CWResult)
    with torch.no_grad():
        misclassified = model(x).argmax(1) != y
    # Samples misclassified from the start succeed at the first iterate (x itself, distance 0).
    assert bool(misclassified[:2].all())
    assert torch.equal(res.success, misclassified)
    assert torch.equal(res.x_adv, x) and bool((res.l2 == 0).all())
    torch.testing.assert_close(res.c, torch.full((32,), 1e-4))


def test_cw_kappa_keeps_only_confident_adversarials(trained):
    model, x, y = trained
    x, y = x[:64], y[:64]
    plain = cw_l2(model, x, y, c=10.0, steps=50, lr=0.05, return_result=True)
    confident = cw_l2(model, x, y, c=10.0, kappa=2.0, steps=50, lr=0.05, return_result=True)
    with torch.no_grad():
        kept_margin = margin(model(confident.x_adv), y)[confident.success]
    assert float(confident.success.float().mean()) > 0.9
    assert bool((kept_margin < -2.0).all()), "kept iterates must beat the true class by kappa"
    both = plain.success & confident.success
    assert float(confident.l2[both].median()) > float(plain.l2[both].median())


def test_cw_targeted_reaches_the_target(trained):
    model, x, y = trained
    x, y = x[:64], y[:64]
    target = (y + 1) % 4
    res = cw_l2(model, x, target, c=10.0, steps=50, lr=0.05, targeted=True, return_result=True)
    with torch.no_grad():
        pred = model(res.x_adv).argmax(1)
    assert float(res.success.float().mean()) > 0.9
    assert bool((pred[res.success] == target[res.success]).all())
    assert bool((pred[~res.success] == y[~res.success]).all()), "unsuccessful samples are returned as x"


def test_cw_binary_search_finds_c_in_both_directions(trained):
    model, x, y = trained
    x, y = x[:64], y[:64]
    # Too small a constant: one run fails; the search multiplies c by 10 until it succeeds.
    small = cw_l2(model, x, y, c=1e-3, steps=30, lr=0.05, return_result=True)
    small_searched = cw_l2(model, x, y, c=1e-3, steps=30, lr=0.05, binary_search_steps=5, return_result=True)
    assert float(small.success.float().mean()) < 0.1
    assert float(small_searched.success.float().mean()) > 0.9
    assert bool((small_searched.c[small_searched.success] >= 1e-2).all())
    # Too large a constant: succeeds with an overlong perturbation; the search halves c and finds
    # closer adversarials, never losing a success.
    large = cw_l2(model, x, y, c=10.0, steps=30, lr=0.05, return_result=True)
    large_searched = cw_l2(model, x, y, c=10.0, steps=30, lr=0.05, binary_search_steps=5, return_result=True)
    assert bool((large_searched.success >= large.success).all())
    assert bool((large_searched.l2 <= large.l2 + 1e-6)[large.success].all())
    assert float(large_searched.l2[large.success].median()) < 0.9 * float(large.l2[large.success].median())
    assert float(large_searched.c.median()) < 10.0


class _PositiveLogits(torch.nn.Module):
    """Shifts the logits by a constant (same argmax, same margins) so that they are all positive,
    and counts forward passes.

    torchattacks.CW takes ``max((1 - onehot) * z)`` as the best other logit and
    ``max(onehot * z)`` as the true one: with negative logits those are 0 instead. With positive
    logits its loss equals the Carlini-Wagner margin, the one cw_l2 uses.
    """

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.model(x) + 100.0


@pytest.mark.parametrize("targeted", [False, True])
def test_cw_matches_torchattacks_exactly(cnn, targeted):
    """Same parameterisation, loss and Adam: bit-identical results in float64. torchattacks stops
    the whole batch once the summed loss rises at one of its checks (every steps // 10 steps); it
    returns the best iterate so far, which is ours after as many steps as it ran forward passes."""
    torchattacks = pytest.importorskip("torchattacks")
    model = _PositiveLogits(cnn.double()).eval()
    x, _ = _batch(n=12, lo=0.25, hi=0.75)
    pred = _correct_labels(cnn, x)
    labels = (pred + 1) % 4 if targeted else pred.clone()
    labels[0] = pred[0] if targeted else (pred[0] + 1) % 4  # adversarial from the start
    attack = torchattacks.CW(model, c=20.0, kappa=0.0, steps=100, lr=0.01)
    if targeted:
        attack.set_mode_targeted_by_label(quiet=True)
    theirs = attack(x, labels)
    steps_run = model.calls
    ours = cw_l2(model, x, labels, c=20.0, kappa=0.0, steps=steps_run, lr=0.01, targeted=targeted, return_result=True)
    # Except where x is adversarial already: there torchattacks returns x after the tanh round
    # trip, cw_l2 x itself.
    assert torch.equal(ours.x_adv[1:], theirs[1:])
    assert torch.equal(ours.x_adv[0], x[0]) and bool(ours.success[0])
    torch.testing.assert_close(theirs[0], x[0], atol=1e-15, rtol=0)
    assert 0 < int(ours.success.sum()) < len(x) or steps_run == 100, "the case should mix outcomes"


# ------------------------------------------------------------------------------------- trained model


def _distance_to_nearest_other_class(x, y):
    """Per sample, the L2 distance between its class's mean image and the nearest other class's."""
    means = torch.stack([x[y == k].mean(0) for k in range(4)]).flatten(1)
    between = torch.cdist(means, means) + torch.diag(torch.full((4,), float("inf")))
    return between.min(dim=1).values[y]


@pytest.mark.parametrize("attack", ["deepfool", "cw"])
def test_fools_the_trained_model_with_small_reported_perturbations(trained, attack):
    model, x, y = trained
    res = deepfool(model, x, y, return_result=True) if attack == "deepfool" else cw_l2(model, x, y, return_result=True)
    with torch.no_grad():
        pred = model(res.x_adv).argmax(1)
    assert torch.equal(res.success, pred != y)
    assert float(res.success.float().mean()) > 0.95
    torch.testing.assert_close(res.l2.double(), _l2(res.x_adv, x), atol=1e-6, rtol=1e-5)
    # A linear-ish model's boundary lies about halfway between class patterns: the minimal
    # perturbation is about half the distance to the nearest other pattern, never all of it.
    ratio = res.l2[res.success] / _distance_to_nearest_other_class(x, y)[res.success]
    assert float(ratio.median()) < 0.6 and float(ratio.max()) < 1.0


def test_perturbations_are_near_the_smallest_l2_pgd_budget(trained):
    """DeepFool and CW find perturbations about as small as the smallest L2 budget at which PGD
    (20 steps, bisected per sample) succeeds. DeepFool is not reliably *smaller*: against a
    well-converged PGD it is about its overshoot (2 %) larger, so the test asserts a band."""
    model, x, y = trained
    x, y = x[:128], y[:128]
    fooled_at = torch.full((len(x),), 2.0)
    not_fooled_at = torch.zeros(len(x))
    for _ in range(8):
        eps = (fooled_at + not_fooled_at) / 2
        success = nonrobust_ext.pgd(model, x, y, eps=eps, steps=20, norm="l2", seed=0, return_result=True).success
        fooled_at = torch.where(success, eps, fooled_at)
        not_fooled_at = torch.where(success, not_fooled_at, eps)
    for res in (deepfool(model, x, y, return_result=True), cw_l2(model, x, y, return_result=True)):
        assert bool(res.success.all())
        ratio = res.l2 / fooled_at
        assert 0.85 < float(ratio.median()) < 1.03, float(ratio.median())
        assert float(ratio.max()) < 1.1, float(ratio.max())
