"""robust_accuracy: counts, compaction of misclassified samples, confidences, data forms, early stop,
errors. (Bad input, row by row, is in test_bad_input_attacks.py.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import nonrobust_ext
from nonrobust_ext.attacks.evaluate import robust_accuracy


def test_counts_match_a_direct_computation(trained):
    model, x, y = trained
    report = robust_accuracy(model, (x, y), eps=[0.0, 0.1, 0.25], steps=5, seed=0, batch_size=100)
    with torch.no_grad():
        clean = model(x).argmax(1) == y
    assert report.num_samples == len(y)
    assert report.clean_correct == int(clean.sum())
    assert report.robust_correct[0] == report.clean_correct
    # the same attack run directly on the correctly classified samples, batch by batch
    expected = 0
    for i in range(0, len(y), 100):
        xb, yb = x[i : i + 100], y[i : i + 100]
        keep = clean[i : i + 100]
        x_adv = nonrobust_ext.pgd(model, xb[keep], yb[keep], eps=0.25, steps=5, seed=0)
        with torch.no_grad():
            expected += int((model(x_adv).argmax(1) == yb[keep]).sum())
    assert report.robust_correct[2] == expected
    assert report.robust_accuracy[2] < 0.1 < report.clean_accuracy
    assert report.robust_correct[0] >= report.robust_correct[1] >= report.robust_correct[2]


def test_confidence_drops_under_attack(trained):
    model, x, y = trained
    report = robust_accuracy(model, (x[:200], y[:200]), eps=[0.0, 0.25], steps=5, seed=0)
    assert 0.0 <= report.adversarial_confidence[1] < report.clean_confidence <= 1.0
    assert report.adversarial_confidence[0] == pytest.approx(report.clean_confidence)
    d = report.as_dict()
    assert d["clean_accuracy"] == report.clean_accuracy and len(d["robust_accuracy"]) == 2


def test_misclassified_samples_are_not_attacked(trained):
    model, x, y = trained
    y_wrong = y.clone()
    y_wrong[:50] = (y[:50] + 1) % 4  # 50 samples the model now gets "wrong"
    seen: list[int] = []

    def counting_attack(m, xb, yb, eps):
        seen.append(len(yb))
        return xb

    report = robust_accuracy(model, (x[:100], y_wrong[:100]), eps=[0.1], attack=counting_attack)
    assert sum(seen) == report.clean_correct <= 50
    assert report.robust_correct == [report.clean_correct]  # an identity "attack" fools nobody


def test_accepts_a_dataloader_and_max_batches(trained):
    model, x, y = trained
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64)
    report = robust_accuracy(model, loader, eps=[0.05], attack="fgsm", max_batches=2)
    assert report.num_samples == 128


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(eps=[]), ValueError, "at least one radius"),
        (dict(eps=[-0.1]), ValueError, "eps must be >= 0"),
        (dict(eps=[0.1], attack="nope"), ValueError, "attack must be one of"),
        (dict(eps=[0.1], attack=3), TypeError, "attack must be a name or a callable"),
    ],
)
def test_bad_arguments(trained, kwargs, error, match):
    model, x, y = trained
    with pytest.raises(error, match=match):
        robust_accuracy(model, (x[:10], y[:10]), **kwargs)


def test_data_must_yield_pairs(trained):
    model, x, _ = trained
    with pytest.raises(TypeError, match=r"\(x, y\) batches"):
        robust_accuracy(model, [x[:4]], eps=[0.1])


def test_eps_as_a_tuple_a_tensor_or_an_array_gives_the_same_report(trained):
    model, x, y = trained
    x, y = x[:64], y[:64]
    want = robust_accuracy(model, (x, y), eps=[0.0, 0.1], steps=3, seed=0)
    for eps in ((0.0, 0.1), torch.tensor([0.0, 0.1], dtype=torch.float64), np.array([0.0, 0.1])):
        assert robust_accuracy(model, (x, y), eps=eps, steps=3, seed=0) == want


def test_labels_of_any_integer_dtype(trained):
    model, x, y = trained
    x, y = x[:64], y[:64]
    want = robust_accuracy(model, (x, y), eps=[0.1], steps=3, seed=0)
    assert robust_accuracy(model, (x, y.int()), eps=[0.1], steps=3, seed=0) == want
    batched = robust_accuracy(model, [(x[:32], y[:32].to(torch.uint8)), (x[32:], y[32:])], eps=[0.1], steps=3, seed=0)
    assert (batched.num_samples, batched.clean_correct) == (want.num_samples, want.clean_correct)
    assert batched.clean_confidence == pytest.approx(want.clean_confidence)


def test_accuracies_are_counts_over_the_samples_evaluated(trained):
    model, x, y = trained
    report = robust_accuracy(model, (x[:7], y[:7]), eps=[0.0, 0.25], steps=3, seed=0)
    assert report.num_samples == 7
    assert report.clean_accuracy == report.clean_correct / 7
    assert report.robust_accuracy == [c / 7 for c in report.robust_correct]


@pytest.mark.parametrize("attack", ["pgd", "apgd", "bim", "mifgsm", "difgsm"])
def test_early_stop_never_raises_the_robust_accuracy(trained, attack):
    """Early stop keeps every sample the full attack fools (APGD: exactly the same ones) for less work."""
    model, x, y = trained
    x, y = x[:128], y[:128]
    options = dict(eps=[0.12], steps=6, seed=0) if attack != "bim" else dict(eps=[0.12], steps=6)
    if attack == "difgsm":
        options.update(resize_rate=0.9, diversity_prob=0.5)
    full = robust_accuracy(model, (x, y), attack=attack, **options)
    early = robust_accuracy(model, (x, y), attack=attack, early_stop=True, **options)
    assert early.clean_correct == full.clean_correct
    assert early.robust_correct[0] <= full.robust_correct[0]
    if attack == "apgd":
        assert early.robust_correct == full.robust_correct
    assert 0 < full.robust_correct[0] < full.clean_correct, "the case should mix fooled and robust samples"
