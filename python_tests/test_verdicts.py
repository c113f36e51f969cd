"""The study's verdict rules as tables of (synthetic per-image records, expected verdict): the paired
bootstrap difference of two models and the verdict on a claim it supports, the comparisons the
summary stores, and the report's claim sentences. Edge cases: identical models, a gap in one seed
only, one seed, tiny n, intervals ending exactly at 0, bad input. Also the descriptive mean ± std
numbers of the tables (over_seeds, versus)."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
from _study_records import committed, ones, per_sample, with_per_sample, without_per_sample

from nonrobust_ext.experiments.study import report
from nonrobust_ext.experiments.study.paired import (
    ABOVE,
    BELOW,
    HOLDS,
    REVERSED,
    TOO_FEW,
    UNDECIDED,
    paired_difference,
    verdict,
)
from nonrobust_ext.experiments.study.summary import (
    WITHIN,
    comparisons,
    mean_std,
    over_seeds,
    present,
    summarise,
    versus,
)


def seeds(*rows: list[float]) -> dict[str, list[float]]:
    """Per-image values of seeds "0", "1", ... ."""
    return {str(s): list(row) for s, row in enumerate(rows)}


N = 100
HALF = [1, 0] * (N // 2)          # half correct, alternating
OTHER_HALF = [0, 1] * (N // 2)    # half correct, on the other images: the paired difference is +-1, mean 0


# paired_difference(a, b) then verdict(diff, wanted) for the claim that a is `wanted` b.
@pytest.mark.parametrize("a, b, wanted, expected", [
    # a clear gap in every seed (80% vs 40% correct, a right wherever b is)
    (seeds(*[ones(N, 80)] * 3), seeds(*[ones(N, 40)] * 3), ABOVE, HOLDS),
    (seeds(*[ones(N, 80)] * 3), seeds(*[ones(N, 40)] * 3), BELOW, REVERSED),
    (seeds(*[ones(N, 10)] * 3), seeds(*[ones(N, 40)] * 3), BELOW, HOLDS),     # less robust, as claimed
    (seeds(*[ones(N, 10)] * 3), seeds(*[ones(N, 40)] * 3), ABOVE, REVERSED),
    # no gap: the same accuracy on different images
    (seeds(*[HALF] * 3), seeds(*[OTHER_HALF] * 3), ABOVE, UNDECIDED),
    (seeds(*[HALF] * 3), seeds(*[OTHER_HALF] * 3), BELOW, UNDECIDED),
    # a gap in one seed only: two seeds see no difference at all, the third a huge one; resampling
    # the seeds draws no gap often enough that the interval reaches 0
    (seeds(HALF, HALF, [1] * N), seeds(HALF, HALF, [0] * N), ABOVE, UNDECIDED),
    # ... while the same gap in every seed holds
    (seeds(*[[1] * N] * 3), seeds(*[[0] * N] * 3), ABOVE, HOLDS),
    # one seed: images only
    (seeds(ones(N, 80)), seeds(ones(N, 40)), ABOVE, HOLDS),
    (seeds(HALF), seeds(OTHER_HALF), ABOVE, UNDECIDED),
    # identical models: every difference 0, the interval [0, 0] includes 0
    (seeds(*[ones(N, 70)] * 3), seeds(*[ones(N, 70)] * 3), ABOVE, UNDECIDED),
    (seeds(*[ones(N, 70)] * 3), seeds(*[ones(N, 70)] * 3), BELOW, UNDECIDED),
    # tiny n: 3 images, a right on two b misses: too few images for any verdict ...
    (seeds([1, 1, 1]), seeds([0, 0, 1]), ABOVE, TOO_FEW),
    # ... even where every draw agrees (one image: the interval is [1, 1])
    (seeds([1]), seeds([0]), ABOVE, TOO_FEW),
    # 20 images are enough
    (seeds([1] * 20), seeds([0] * 20), ABOVE, HOLDS),
    # seeds of different sizes are allowed (the per-seed means weigh the same)
    (seeds(ones(50, 40), ones(200, 160)), seeds(ones(50, 10), ones(200, 40)), ABOVE, HOLDS),
    # real-valued per-image values (expected robustness)
    (seeds(*[[0.9, 0.8, 1.0, 0.7] * 25] * 3), seeds(*[[0.2, 0.1, 0.3, 0.0] * 25] * 3), ABOVE, HOLDS),
], ids=["gap", "gap-wanted-below", "less-robust", "less-robust-wanted-above", "no-gap", "no-gap-below",
        "one-seed-gap", "every-seed-gap", "single-seed-gap", "single-seed-no-gap", "identical", "identical-below",
        "tiny-n", "one-image", "twenty-images", "unequal-n", "real-valued"])
def test_verdict_of_paired_records(a, b, wanted, expected):
    diff = paired_difference(a, b)
    assert diff["low"] <= diff["mean"] <= diff["high"]
    assert verdict(diff, wanted) == expected


def test_identical_models_give_exactly_zero_and_the_interval_zero_zero():
    a = seeds(*[ones(N, 70)] * 3)
    diff = paired_difference(a, a)
    assert (diff["mean"], diff["low"], diff["high"]) == (0.0, 0.0, 0.0)


# verdict(diff, wanted) on the interval alone; bounds exactly at 0 include it.
@pytest.mark.parametrize("low, high, wanted, expected", [
    (0.01, 0.2, ABOVE, HOLDS), (0.01, 0.2, BELOW, REVERSED),
    (-0.2, -0.01, BELOW, HOLDS), (-0.2, -0.01, ABOVE, REVERSED),
    (-0.1, 0.1, ABOVE, UNDECIDED), (-0.1, 0.1, BELOW, UNDECIDED),
    (0.0, 0.2, ABOVE, UNDECIDED), (-0.2, 0.0, BELOW, UNDECIDED), (0.0, 0.0, ABOVE, UNDECIDED),
    (1e-12, 1e-12, ABOVE, HOLDS),
])
def test_verdict(low, high, wanted, expected):
    assert verdict({"mean": (low + high) / 2, "low": low, "high": high}, wanted) == expected


@pytest.mark.parametrize("diff, wanted, message", [
    ({"low": 0.1, "high": 0.2}, "higher", "wanted must be one of"),
    ({"low": 0.1, "high": 0.2}, None, "wanted must be one of"),
    ({"low": math.nan, "high": 0.2}, ABOVE, "diff must be"),
    ({"low": 0.1, "high": math.inf}, ABOVE, "diff must be"),
    ({"low": 0.3, "high": 0.2}, ABOVE, "diff must be"),
    ({"high": 0.2}, ABOVE, "diff must be"),
    (None, ABOVE, "diff must be"),
])
def test_verdict_refuses(diff, wanted, message):
    with pytest.raises(ValueError, match=message):
        verdict(diff, wanted)


GOOD = seeds([1, 0, 1], [0, 1, 1])


@pytest.mark.parametrize("a, b, options, error, message", [
    ({}, {}, {}, ValueError, r"^a is empty"),
    ({"0": []}, {"0": []}, {}, ValueError, r"^a\['0'\] is empty"),
    (GOOD, {"0": [1, 0, 1]}, {}, ValueError, r"^b must have the same seeds as a"),
    (GOOD, {"0": [1, 0, 1], "2": [0, 1, 1]}, {}, ValueError, r"^b must have the same seeds"),
    (GOOD, seeds([1, 0, 1], [0, 1]), {}, ValueError, r"^b\['1'\] must have as many values as a\['1'\]"),
    (seeds([1, math.nan, 1], [0, 1, 1]), GOOD, {}, ValueError, r"^a\['0'\] must hold finite values"),
    (GOOD, seeds([1, 0, 1], [0, math.inf, 1]), {}, ValueError, r"^b\['1'\] must hold finite values"),
    (GOOD, GOOD, {"level": 0.0}, ValueError, r"^level must be"),
    (GOOD, GOOD, {"level": 1.0}, ValueError, r"^level must be"),
    (GOOD, GOOD, {"level": 95}, ValueError, r"^level must be"),
    (GOOD, GOOD, {"level": math.nan}, ValueError, r"^level must be"),
    (GOOD, GOOD, {"resamples": 99}, ValueError, r"^resamples must be >= 100"),
    (GOOD, GOOD, {"resamples": 0}, ValueError, r"^resamples must be >= 100"),
    (GOOD, GOOD, {"resamples": 1000.0}, TypeError, r"^resamples must be an int"),
    (GOOD, GOOD, {"seed": "0"}, TypeError, r"^seed must be an int"),
    ([[1, 0]], GOOD, {}, TypeError, r"^a must be a mapping"),
    (GOOD, seeds("101", [0, 1, 1]), {}, TypeError, r"^b\['0'\] must be a list of numbers"),
    (GOOD, seeds([1, None, 1], [0, 1, 1]), {}, TypeError, r"^b\['0'\] must be a list of numbers"),
    (GOOD, seeds([1, 0, True], [0, 1, 1]), {}, TypeError, r"^b\['0'\] must be a list of numbers"),
])
def test_paired_difference_refuses_bad_input(a, b, options, error, message):
    with pytest.raises(error, match=message):
        paired_difference(a, b, **options)


def test_the_result_says_what_it_is_over():
    diff = paired_difference(seeds(ones(50, 30), ones(80, 40), ones(50, 20)),
                             seeds(ones(50, 20), ones(80, 40), ones(50, 20)), resamples=500, level=0.9)
    assert diff["mean"] == pytest.approx((0.2 + 0.0 + 0.0) / 3)  # the mean of the per-seed means
    assert (diff["level"], diff["seeds"], diff["images"], diff["resamples"], diff["seed_level"]) == \
        (0.9, 3, [50, 80, 50], 500, True)
    assert json.loads(json.dumps(diff)) == diff


def test_the_bootstrap_is_deterministic_under_its_seed():
    gen = torch.Generator().manual_seed(3)
    a = seeds(*[(torch.rand(300, generator=gen) < 0.6).tolist() for _ in range(3)])
    b = seeds(*[(torch.rand(300, generator=gen) < 0.5).tolist() for _ in range(3)])
    a = {k: [float(v) for v in row] for k, row in a.items()}
    b = {k: [float(v) for v in row] for k, row in b.items()}
    assert paired_difference(a, b, seed=7) == paired_difference(a, b, seed=7)
    other = paired_difference(a, b, seed=8)
    assert other["mean"] == paired_difference(a, b, seed=7)["mean"]       # the estimate does not depend on it
    assert (other["low"], other["high"]) != (paired_difference(a, b, seed=7)["low"],
                                             paired_difference(a, b, seed=7)["high"])


def test_one_seed_resamples_images_only_and_says_so():
    a, b = seeds(ones(N, 70)), seeds(ones(N, 50))
    diff = paired_difference(a, b)
    assert diff["seed_level"] is False and diff["seeds"] == 1 and diff["images"] == [N]
    # the interval is the images' alone: about 1.96 standard errors of the per-image differences
    se = math.sqrt(0.2 * 0.8 / N)
    assert diff["high"] - diff["low"] == pytest.approx(2 * 1.96 * se, rel=0.2)


def test_disagreeing_seeds_widen_the_interval():
    """The seed level is resampled: the same overall gap, split unevenly over the seeds, is less certain."""
    even = paired_difference(seeds(*[ones(N, 60)] * 3), seeds(*[ones(N, 40)] * 3))
    uneven = paired_difference(seeds(ones(N, 40), ones(N, 60), ones(N, 80)), seeds(*[ones(N, 40)] * 3))
    assert even["mean"] == pytest.approx(uneven["mean"])
    assert uneven["high"] - uneven["low"] > 1.5 * (even["high"] - even["low"])


def test_the_interval_covers_the_true_difference_in_most_repetitions():
    """Coverage sanity on synthetic data: 3 seeds x 200 images, a correct with probability 0.6 and b
    with 0.5 independently, so the true difference is 0.1; the 95% interval should contain it in
    nearly all of 50 repetitions (and not always exclude 0, which a too-narrow one would not)."""
    gen = torch.Generator().manual_seed(0)
    covered = 0
    for repetition in range(50):
        draw = lambda p: seeds(*[(torch.rand(200, generator=gen) < p).double().tolist() for _ in range(3)])  # noqa: E731
        diff = paired_difference(draw(0.6), draw(0.5), resamples=500, seed=repetition)
        covered += diff["low"] <= 0.1 <= diff["high"]
    assert covered >= 43


# The comparisons the summary stores, from per-image records.

def _per_seed(records: dict[str, list[dict]], eps: list[float]) -> dict:
    """seed -> stage -> {"per_sample": ...} from stage -> per-seed records."""
    count = len(next(iter(records.values())))
    return {str(s): {stage: {"per_sample": rows[s]} for stage, rows in records.items()} for s in range(count)}


EPS = [0.0, 0.05, 0.1]


def test_comparisons_cover_every_metric_of_every_claim_with_both_models():
    ft = [per_sample(N, 0.9, [0.9, 0.3, 0.1], 0.1) for _ in range(3)]
    st = [per_sample(N, 0.8, [0.8, 0.5, 0.3], 0.1) for _ in range(3)]
    adv = [per_sample(N, 0.8, [0.8, 0.6, 0.5], 0.1, autoattack=False) for _ in range(3)]
    compared = comparisons(_per_seed({"finetuned": ft, "standard": st, "adv_finetuned": adv}, EPS), EPS)
    keys = [(c["a"], c["b"], c["metric"], c["eps"], c["wanted"], c["verdict"]) for c in compared]
    assert keys == [
        ("finetuned", "standard", "clean_accuracy", None, ABOVE, HOLDS),
        ("finetuned", "standard", "robust_accuracy", 0.05, BELOW, HOLDS),   # eps 0 is clean: not compared again
        ("finetuned", "standard", "robust_accuracy", 0.1, BELOW, HOLDS),
        ("finetuned", "standard", "autoattack_accuracy", 0.1, BELOW, HOLDS),
        ("finetuned", "standard", "expected_robustness", 0.1, BELOW, HOLDS),
        ("adv_finetuned", "finetuned", "clean_accuracy", None, BELOW, HOLDS),
        ("adv_finetuned", "finetuned", "robust_accuracy", 0.05, ABOVE, HOLDS),
        ("adv_finetuned", "finetuned", "robust_accuracy", 0.1, ABOVE, HOLDS),
        # AutoAttack not run on adv_finetuned: left out
        ("adv_finetuned", "finetuned", "expected_robustness", 0.1, ABOVE, HOLDS),
    ]
    assert compared[2]["mean"] == pytest.approx(-0.2)
    assert json.loads(json.dumps(compared)) == compared


def test_expected_robustness_caps_the_radii_at_the_largest_eps():
    # radii: never fooled (1), misclassified (0), half of eps (0.5), beyond eps (1)
    radius = [None, 0.0, 0.05, 0.2]
    ft = {"clean": [1, 0, 1, 1], "robust": [[1, 0, 1, 1], [1, 0, 0, 1]], "autoattack": None, "radius": radius}
    st = {"clean": [1, 0, 1, 1], "robust": [[1, 0, 1, 1], [1, 0, 0, 1]], "autoattack": None,
          "radius": [0.0, 0.0, 0.0, 0.0]}
    per_seed = {"0": {"finetuned": {"per_sample": ft}, "standard": {"per_sample": st}}}
    (expected,) = [c for c in comparisons(per_seed, [0.0, 0.1], resamples=100) if c["metric"] == "expected_robustness"]
    assert expected["mean"] == pytest.approx((1 + 0 + 0.5 + 1) / 4)


def test_models_without_per_image_records_in_some_seed_are_not_compared():
    ft = [per_sample(N, 0.9, [0.9, 0.3, 0.1], 0.1) for _ in range(2)]
    per_seed = _per_seed({"finetuned": ft, "standard": ft}, EPS)
    del per_seed["1"]["standard"]["per_sample"]
    assert comparisons(per_seed, EPS) == []
    assert comparisons({"0": {"finetuned": {"per_sample": ft[0]}}}, EPS) == []  # no standard model
    assert [c["metric"] for c in comparisons(_per_seed({"finetuned": ft, "standard": ft}, [0.0]), [0.0])] == \
        ["clean_accuracy"]                                                    # no attacked radius


# The report's claim sentences, from a committed study's results with synthetic per-image records.

SENTENCE = re.compile(r"finetuned minus standard robust accuracy at 0\.100: (-?\d\.\d{3}) \[(-?\d\.\d{3}), "
                      r"(-?\d\.\d{3})\] \(95% CI over (\d+) seeds? x (\d+) images(, ignoring seed-to-seed "
                      r"variation)?\): the claim (holds|is reversed|is undecided \(the 95% interval includes 0\))\.")


def _attacked(ft_by_seed: list[float], st_by_seed: list[float]):
    """Rates giving finetuned and standard these robust accuracies at the largest eps, per seed."""
    def rates(stage, seed, record):
        robust = list(record["robust_accuracy"])
        if stage in ("finetuned", "standard"):
            robust[-1] = (ft_by_seed if stage == "finetuned" else st_by_seed)[int(seed)]
        return record["clean_accuracy"], robust
    return rates


def _numbers(obj) -> set[str]:
    if isinstance(obj, dict):
        return set().union(set(), *(_numbers(v) for v in obj.values()))
    if isinstance(obj, list):
        return set().union(set(), *(_numbers(v) for v in obj))
    if isinstance(obj, (int, float)) and not isinstance(obj, bool):
        return {f"{obj:.3f}", str(obj)}
    return set()


@pytest.mark.parametrize("ft, st, expected", [
    ([0.1, 0.1, 0.1], [0.4, 0.4, 0.4], "holds"),
    ([0.4, 0.4, 0.4], [0.1, 0.1, 0.1], "is reversed"),
    ([0.0, 0.0, 0.6], [0.3, 0.3, 0.0], "is undecided (the 95% interval includes 0)"),  # the seeds disagree
])
def test_the_report_states_each_claims_difference_and_interval(ft, st, expected):
    results = with_per_sample(committed(), rates=_attacked(ft, st))
    text = report.render_report(results)
    match = SENTENCE.search(text)
    assert match, text
    mean, low, high, count, images, one_seed, word = match.groups()
    assert (count, images, one_seed, word) == ("3", "200", None, expected)
    assert float(low) <= float(mean) <= float(high)
    assert float(mean) == pytest.approx(sum(ft) / 3 - sum(st) / 3, abs=1e-3)
    assert "hierarchical percentile bootstrap (2000 resamples" in text and "same 200 test images" in text
    # every number shown is one of results.json (differences may be negative)
    allowed = _numbers(results)
    for token in re.findall(r"-?\d+\.\d+", text):
        assert token in allowed, f"the report shows {token}, which is not a number of the results"


def test_the_report_with_one_seed_says_the_interval_ignores_seed_variation():
    text = report.render_report(with_per_sample(committed(), seeds=["0"]))
    match = SENTENCE.search(text)
    assert match and match.group(4) == "1" and match.group(6)
    assert "With one seed only the images are resampled: the intervals ignore seed-to-seed variation" in text


def test_the_report_of_results_without_per_image_records_judges_no_claim():
    for name in ("small_source", ""):  # the ImageNet study's records taken out: as it was written before them
        text = report.render_report(without_per_sample(committed(name)))
        summary = text.split("## Summary")[1].split("\n## ")[0]
        assert summary.count("not judged, these results have no per-image records.") >= 4  # every claim
        assert "*... but a less robust one* (finetuned below standard under attack): not judged" in summary
        assert not re.search(r"holds|is reversed|is undecided", summary)
        assert "(No per-image records: no paired comparisons.)" in text


@pytest.fixture(scope="module")
def recorded() -> dict:
    """The committed small-source study with per-image records at its own accuracies."""
    return with_per_sample(committed())


def test_the_report_shows_autoattack_and_expected_robustness_where_measured(recorded):
    text = report.render_report(recorded)
    assert "AutoAttack 0.100 | expected robustness 0..0.100 |" in text
    assert "finetuned minus standard AutoAttack accuracy at 0.100" in text
    text = report.render_report(with_per_sample(committed(), autoattack=False, radii=False))
    assert "| AutoAttack" not in text and "expected robustness 0.." not in text


def test_the_source_models_keep_their_table_without_verdicts(recorded):
    text = report.render_report(recorded)
    source = text.split("## Source task")[1].split("\n## ")[0]
    assert "| pretrained |" in source and "| robust_pretrained |" in source
    assert "no verdict" in source and not re.search(r"holds|is reversed|is undecided|is above|is below", source)


# The descriptive numbers of the tables: mean ± std over seeds, and versus (no claim rests on it).

def stat(mean: float, std: float = 0.0) -> dict[str, float]:
    return {"mean": mean, "std": std}


@pytest.mark.parametrize("x, y, expected", [
    (stat(0.9, 0.01), stat(0.5, 0.01), ABOVE),
    (stat(0.5, 0.01), stat(0.9, 0.01), BELOW),
    (stat(0.6, 0.2), stat(0.5, 0.01), WITHIN),           # the gap is inside x's spread
    (stat(0.6, 0.01), stat(0.5, 0.2), WITHIN),           # ... or inside y's: the larger std counts
    (stat(0.5, 0.1), stat(0.4, 0.1), WITHIN),            # a gap exactly the std is not a difference
    (stat(0.5, 0.0), stat(0.5, 0.0), WITHIN),            # equal means, zero spread
    (stat(0.501, 0.0), stat(0.5, 0.0), ABOVE),           # zero spread (one seed): any gap is a difference
])
def test_versus(x, y, expected):
    assert versus(x, y) == expected


@pytest.mark.parametrize("x, y", [
    (None, stat(0.5)), (stat(0.5), None), ({"mean": 0.5}, stat(0.5)), (stat(math.nan), stat(0.5)),
    (stat(0.5, math.nan), stat(0.5)), (stat(math.inf), stat(0.5)), (stat(0.5, -0.1), stat(0.5)),
])
def test_versus_refuses_what_it_cannot_compare(x, y):
    with pytest.raises(ValueError, match=r"^[xy] must"):
        versus(x, y)


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
    ([{"aa": None}, {"aa": None}], {"aa": None}),            # AutoAttack not run
    ([{"v": 0.5}], {"v": stat(0.5, 0.0)}),                   # one seed
])
def test_over_seeds(per_seed, expected):
    assert over_seeds(per_seed) == expected  # sums of small integers and sqrt(2): exact in floating point


def test_summarise_keeps_the_study_order_leaves_out_models_not_evaluated_and_adds_the_comparisons():
    model = {"clean_accuracy": 0.5, "robust_accuracy": [0.5, 0.1], "adversarial_confidence": [0.6, 0.2],
             "training": None, "num_samples": 10, "curve": {"median_radius": 0.05}}
    per_seed = {s: {"standard": dict(model, per_sample=per_sample(10, 0.5, [0.5, 0.1], 0.1)),
                    "finetuned": dict(model, per_sample=per_sample(10, 0.5, [0.5, 0.1], 0.1)),
                    "analyses": {"eps": 0.1}} for s in ("0", "1")}
    summary = summarise(per_seed, [0.0, 0.1])
    assert list(summary) == ["finetuned", "standard", "analyses", "comparisons"]
    assert summary["finetuned"]["clean_accuracy"] == stat(0.5, 0.0)
    assert "num_samples" not in summary["finetuned"] and "per_sample" not in summary["finetuned"]
    assert summary["finetuned"]["median_radius"] == stat(0.05, 0.0)
    assert summary["finetuned"]["autoattack_accuracy"] == stat(0.1, 0.0)
    assert summary["finetuned"]["expected_robustness"]["mean"] == pytest.approx(
        (1 + sum((i + 1) / 10 for i in range(1, 5))) / 10)
    assert {c["verdict"] for c in summary["comparisons"]} == {UNDECIDED}     # the same records: no difference
    assert present(("pretrained", "standard", "finetuned"), summary) == ["standard", "finetuned"]


def _wise_point(alpha: float, clean: float, robust: float) -> dict:
    return {"alpha": {"mean": alpha}, "clean_accuracy": {"mean": clean}, "robust_accuracy": [{"mean": robust}]}


@pytest.mark.parametrize("curve, expected", [
    ([(0.0, 0.3, 0.10), (0.5, 0.6, 0.20), (1.0, 0.7, 0.15)],
     "peaks at alpha 0.500 (0.200, clean 0.600) against 0.150 (clean 0.700) at alpha 1.000"),
    ([(0.0, 0.3, 0.10), (0.5, 0.6, 0.20), (1.0, 0.7, 0.20)],  # a tie: the fine-tuned model itself
     "no mixing weight beats the fine-tuned model itself (alpha 1.000: robust accuracy 0.200"),
    ([(0.0, 0.2, 0.00), (1.0, 0.6, 0.09)], "no mixing weight beats the fine-tuned model itself"),
])
def test_wise_ft_finding_names_the_best_mixing_weight_or_says_none_beats_fine_tuning(curve, expected):
    (finding,) = report._wise_findings({"finetuned": [_wise_point(*point) for point in curve]})
    assert expected in finding, finding
