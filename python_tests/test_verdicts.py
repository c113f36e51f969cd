"""The study's verdict rules as tables of (inputs, expected verdict): how two summarised numbers
(mean ± std over seeds) compare, what that makes of a claim, a claim over the eps grid, and the
summary over seeds the numbers come from. Edge cases: equal means, zero spread, one seed, missing
values."""

from __future__ import annotations

import math

import pytest

from nonrobust_ext.experiments.study import report
from nonrobust_ext.experiments.study.summary import (
    ABOVE,
    BELOW,
    WITHIN,
    attacked_verdicts,
    claim,
    mean_std,
    over_seeds,
    present,
    summarise,
    verdict_over_eps,
    versus,
)


def stat(mean: float, std: float = 0.0) -> dict[str, float]:
    return {"mean": mean, "std": std}


# versus(x, y): a gap no larger than the larger std is "within"; otherwise above / below.
@pytest.mark.parametrize("x, y, expected", [
    (stat(0.9, 0.01), stat(0.5, 0.01), ABOVE),
    (stat(0.5, 0.01), stat(0.9, 0.01), BELOW),
    (stat(0.6, 0.2), stat(0.5, 0.01), WITHIN),           # the gap is inside x's spread
    (stat(0.6, 0.01), stat(0.5, 0.2), WITHIN),           # ... or inside y's: the larger std counts
    (stat(0.5, 0.1), stat(0.4, 0.1), WITHIN),            # a gap exactly the std is not a difference
    (stat(0.5, 0.1), stat(0.39, 0.1), ABOVE),            # just past it is
    (stat(0.5, 0.0), stat(0.5, 0.0), WITHIN),            # equal means, zero spread
    (stat(0.5, 0.3), stat(0.5, 0.3), WITHIN),            # equal means, any spread
    (stat(0.501, 0.0), stat(0.5, 0.0), ABOVE),           # zero spread (one seed): any gap is a difference
    (stat(0.0, 0.0), stat(1.0, 0.0), BELOW),             # the ends of an accuracy
], ids=lambda v: str(v))
def test_versus(x, y, expected):
    assert versus(x, y) == expected


@pytest.mark.parametrize("x, y", [
    (None, stat(0.5)),                                   # a model's number is missing
    (stat(0.5), None),
    ({"mean": 0.5}, stat(0.5)),                          # not a summarised number
    (stat(math.nan), stat(0.5)),                         # NaN compares false with everything: refused
    (stat(0.5, math.nan), stat(0.5)),
    (stat(math.inf), stat(0.5)),
    (stat(0.5, -0.1), stat(0.5)),                        # a negative spread is not a spread
])
def test_versus_refuses_what_it_cannot_compare(x, y):
    with pytest.raises(ValueError, match=r"^[xy] must"):
        versus(x, y)


# claim(verdict, wanted): a claim that one model is `wanted` the other.
@pytest.mark.parametrize("verdict, wanted, expected", [
    (ABOVE, ABOVE, "holds"),
    (BELOW, BELOW, "holds"),
    (BELOW, ABOVE, "is reversed"),
    (ABOVE, BELOW, "is reversed"),
    (WITHIN, ABOVE, "is within the seed-to-seed spread"),
    (WITHIN, BELOW, "is within the seed-to-seed spread"),
])
def test_claim(verdict, wanted, expected):
    assert claim(verdict, wanted) == expected


@pytest.mark.parametrize("verdict, wanted", [
    ("higher", ABOVE), (None, ABOVE), (ABOVE, WITHIN), (ABOVE, "up"),
])
def test_claim_refuses_words_versus_does_not_give(verdict, wanted):
    with pytest.raises(ValueError, match=r"^(verdict|wanted) must be one of"):
        claim(verdict, wanted)


# verdict_over_eps(verdicts, wanted): a claim judged at every eps of the grid.
@pytest.mark.parametrize("verdicts, wanted, expected", [
    ({"0.050": BELOW, "0.100": BELOW}, BELOW, "holds at every eps"),
    ({"0.100": BELOW}, BELOW, "holds at every eps"),                       # a one-radius grid
    ({"0.050": WITHIN, "0.100": BELOW}, BELOW, "holds at eps 0.100 (within the spread elsewhere)"),
    ({"0.050": ABOVE, "0.100": ABOVE}, BELOW, "is reversed at eps 0.050, 0.100"),
    ({"0.050": ABOVE, "0.100": WITHIN}, BELOW, "is reversed at eps 0.050"),
    ({"0.050": BELOW, "0.100": ABOVE}, BELOW, "is mixed: holds at eps 0.050, reversed at eps 0.100"),
    ({"0.020": BELOW, "0.050": WITHIN, "0.100": ABOVE}, BELOW,
     "is mixed: holds at eps 0.020, reversed at eps 0.100"),
    ({"0.050": WITHIN, "0.100": WITHIN}, BELOW, "is within the seed-to-seed spread at every eps"),
    ({"0.050": ABOVE, "0.100": ABOVE}, ABOVE, "holds at every eps"),       # the DM claim's direction
    ({"0.050": BELOW}, ABOVE, "is reversed at eps 0.050"),
])
def test_verdict_over_eps(verdicts, wanted, expected):
    assert verdict_over_eps(verdicts, wanted) == expected


@pytest.mark.parametrize("verdicts, wanted, message", [
    ({}, BELOW, "verdicts is empty"),                       # no eps > 0: nothing to judge, not "within everywhere"
    ({"0.100": "higher"}, BELOW, r"verdicts\['0.100'\] must be one of"),
    ({"0.100": BELOW}, WITHIN, "wanted must be one of"),
])
def test_verdict_over_eps_refuses(verdicts, wanted, message):
    with pytest.raises(ValueError, match=message):
        verdict_over_eps(verdicts, wanted)


def _summary(ft: list[dict[str, float]], st: list[dict[str, float]]) -> dict:
    return {"finetuned": {"robust_accuracy": ft}, "standard": {"robust_accuracy": st}}


# attacked_verdicts: versus at every eps > 0 of the grid (eps 0 is clean accuracy, not an attack).
@pytest.mark.parametrize("eps, ft, st, expected", [
    ([0.0, 0.05, 0.1], [stat(0.9), stat(0.3), stat(0.1)], [stat(0.8), stat(0.5), stat(0.2)],
     {"0.050": BELOW, "0.100": BELOW}),
    ([0.05, 0.1], [stat(0.5, 0.2), stat(0.1)], [stat(0.4), stat(0.2)], {"0.050": WITHIN, "0.100": BELOW}),
    ([0.0], [stat(0.9)], [stat(0.8)], {}),                  # no attacked radius: no verdicts
])
def test_attacked_verdicts(eps, ft, st, expected):
    assert attacked_verdicts(_summary(ft, st), "finetuned", "standard", eps) == expected


# mean_std and over_seeds: where the numbers compared above come from.
@pytest.mark.parametrize("values, expected", [
    ([0.5], stat(0.5, 0.0)),                                # one seed: no spread
    ([0.4, 0.6], stat(0.5, math.sqrt(0.02))),               # the sample std (n - 1)
    ([0.3, 0.3, 0.3], stat(0.3, 0.0)),
])
def test_mean_std(values, expected):
    got = mean_std(values)
    assert got["mean"] == pytest.approx(expected["mean"]) and got["std"] == pytest.approx(expected["std"])


def test_mean_std_of_nothing_is_an_error():
    with pytest.raises(ValueError, match="values is empty"):
        mean_std([])


@pytest.mark.parametrize("per_seed, expected", [
    ([1.0, 3.0], stat(2.0, math.sqrt(2.0))),
    ([{"a": [1.0, 2.0], "name": "x"}, {"a": [3.0, 2.0], "name": "x"}],
     {"a": [stat(2.0, math.sqrt(2.0)), stat(2.0, 0.0)], "name": "x"}),   # nested: every number, strings kept
    ([None, 0.5], None),                                    # missing in one seed: missing in the summary
    ([{"apgd": None}, {"apgd": None}], {"apgd": None}),      # APGD not run
    ([{"v": 0.5}], {"v": stat(0.5, 0.0)}),                   # one seed
])
def test_over_seeds(per_seed, expected):
    assert over_seeds(per_seed) == expected  # sums of small integers and sqrt(2): exact in floating point


def test_summarise_keeps_the_study_order_and_leaves_out_models_not_evaluated():
    model = {"clean_accuracy": 0.5, "robust_accuracy": [0.5, 0.1], "adversarial_confidence": [0.6, 0.2],
             "apgd_robust_accuracy": None, "training": None, "num_samples": 10}
    per_seed = {"0": {"standard": model, "finetuned": model, "analyses": {"eps": 0.1}},
                "1": {"standard": model, "finetuned": model, "analyses": {"eps": 0.1}}}
    summary = summarise(per_seed)
    assert list(summary) == ["finetuned", "standard", "analyses"]
    assert summary["finetuned"]["clean_accuracy"] == stat(0.5, 0.0)
    assert "num_samples" not in summary["finetuned"]  # only SUMMARISED keys
    assert summary["finetuned"]["apgd_robust_accuracy"] is None
    assert present(("pretrained", "standard", "finetuned"), summary) == ["standard", "finetuned"]


# The report's source-task sentence: the trade holds only when clean accuracy is below AND attacked above.
@pytest.mark.parametrize("robust_clean, robust_attacked, trade", [
    (stat(0.7, 0.01), stat(0.5, 0.01), True),
    (stat(0.9, 0.01), stat(0.5, 0.01), False),              # clean accuracy not below
    (stat(0.7, 0.01), stat(0.2, 0.01), False),              # robustness not above
    (stat(0.8, 0.2), stat(0.5, 0.01), False),               # clean gap within the spread
])
def test_source_trade_off_sentence(robust_clean, robust_attacked, trade):
    summary = {"robust_pretrained": {"clean_accuracy": robust_clean, "robust_accuracy": [robust_clean,
                                                                                           robust_attacked]},
               "pretrained": {"clean_accuracy": stat(0.8, 0.01), "robust_accuracy": [stat(0.8, 0.01),
                                                                                     stat(0.2, 0.01)]}}
    sentences = report._source_findings(summary, [0.0, 0.1])
    assert ("trades clean accuracy for robustness" in sentences[-1]) is trade
    assert ("does not show the usual trade" in sentences[-1]) is not trade
