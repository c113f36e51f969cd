"""robust_accuracy: counts, compaction of misclassified samples, confidences, data forms, errors."""

from __future__ import annotations

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
