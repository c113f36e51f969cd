"""apgd_targeted (APGD-T): the targeted DLR loss against hand-computed values, the choice of targets,
parity with torchattacks' APGDT on a trained 10-class model, batching of the targets, bad input.
The contract every attack keeps (ball, bounds, modes, layouts, seeds) is in test_attack_contract.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import nonrobust_ext
from nonrobust_ext.attacks import apgd_targeted, targeted_dlr_loss

# ---------------------------------------------------------------------------------------- the loss


@pytest.mark.parametrize("logits, labels, expected", [
    # sorted 4, 3, 2, 1: denominator 4 - (2 + 1) / 2 = 2.5; -(z_y - z_t) with y = 0 (4), t = 1 (3)
    ([4.0, 3.0, 2.0, 1.0], [0, 1], -(4.0 - 3.0) / 2.5),
    # target already above the true class: the loss is positive
    ([1.0, 3.0, 2.0, 4.0], [0, 3], -(1.0 - 4.0) / 2.5),
    # three classes: the denominator is z_pi1 - z_pi3 = 5 - 1
    ([5.0, 1.0, 2.0], [0, 2], -(5.0 - 2.0) / 4.0),
    # shifting and scaling the logits changes nothing
    ([40.0 + 7, 30.0 + 7, 20.0 + 7, 10.0 + 7], [0, 1], -(40.0 - 30.0) / 25.0),
])
def test_targeted_dlr_matches_hand_computed_values(logits, labels, expected):
    value = targeted_dlr_loss(torch.tensor([logits]), torch.tensor([labels]))
    assert value.shape == (1,)
    assert value.item() == pytest.approx(expected, rel=1e-6)


# ------------------------------------------------------------------------------------ the targets


def test_targets_are_the_most_likely_wrong_classes(ten_class):
    model, x, y = ten_class
    res = apgd_targeted(model, x, y, eps=0.02, steps=3, target_classes=3, seed=0, early_stop=False,
                        return_result=True)
    with torch.no_grad():
        ranked = model(x).masked_fill(F.one_hot(y, 10).bool(), -torch.inf).argsort(1, descending=True)[:, :3]
    assert bool((res.target[:, None] == ranked).any(1).all()), "the kept target is one of the top-3 wrong classes"
    assert bool((res.target != y).all())


def test_more_target_classes_never_fool_fewer_samples(ten_class):
    model, x, y = ten_class
    one = apgd_targeted(model, x, y, eps=0.06, steps=10, target_classes=1, seed=0, return_result=True)
    nine = apgd_targeted(model, x, y, eps=0.06, steps=10, target_classes=9, seed=0, return_result=True)
    # The first target's run is the same in both (same start: target-major rows share the generator's
    # first draws only when the batch is the same size, so compare success rates, not samples).
    assert float(nine.success.float().mean()) >= float(one.success.float().mean())
    assert int(nine.success.sum()) > 0


def test_target_batches_fool_the_same_share(ten_class):
    """Running the targets one at a time (each on the samples still robust) or all at once fools
    about the same samples: both try every target on every sample that survives."""
    model, x, y = ten_class
    together = apgd_targeted(model, x, y, eps=0.05, steps=20, target_classes=4, seed=0, return_result=True)
    one_by_one = apgd_targeted(model, x, y, eps=0.05, steps=20, target_classes=4, target_batch=1, seed=0,
                               return_result=True)
    assert 0 < int(together.success.sum()) < len(y)
    # Different random starts: allow a few samples either way (of 128).
    assert abs(int(together.success.sum()) - int(one_by_one.success.sum())) <= 4


# ------------------------------------------------------------------------------ torchattacks parity


@pytest.mark.slow
@pytest.mark.parametrize("norm, eps", [("linf", 0.05), ("l2", 0.25)])
def test_reaches_what_torchattacks_apgdt_reaches(ten_class, norm, eps):
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = ten_class
    x, y = x[:64], y[:64]
    theirs = torchattacks.APGDT(model, norm="Linf" if norm == "linf" else "L2", eps=eps, steps=25, n_classes=10,
                                n_restarts=1, seed=0)(x, y)
    with torch.no_grad():
        their_success = model(theirs).argmax(1) != y
    ours = apgd_targeted(model, x, y, eps=eps, norm=norm, steps=25, seed=0, return_result=True)
    assert 0 < int(their_success.sum()) < len(y), "the radius should leave some samples robust"
    # Their random start is another draw: at most 2 samples of 64 weaker.
    assert int(ours.success.sum()) >= int(their_success.sum()) - 2


def test_is_public():
    assert nonrobust_ext.apgd_targeted is apgd_targeted


# ------------------------------------------------------------------------------------- bad input


def test_two_class_models_are_refused():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 2))
    x, y = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 0, 1])
    with pytest.raises(ValueError, match="at least 3 classes"):
        apgd_targeted(model, x, y, eps=0.1)


@pytest.mark.parametrize("option, value, error, match", [
    ("target_classes", 0, ValueError, "target_classes"),
    ("target_classes", 1.5, TypeError, "target_classes"),
    ("target_batch", 0, ValueError, "target_batch"),
    ("steps", 0, ValueError, "steps"),
    ("norm", "l1", ValueError, "norm"),
    ("eps", float("nan"), ValueError, "eps"),
])
def test_bad_options_are_named(ten_class, option, value, error, match):
    model, x, y = ten_class
    options = {"eps": 0.03, option: value}
    with pytest.raises(error, match=match):
        apgd_targeted(model, x[:4], y[:4], **options)
