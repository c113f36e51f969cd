"""The validation module: one exception type per kind of mistake, the argument named in every message."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nonrobust_ext import _validate as v

# (check, value, exception): the same mistake raises the same exception type wherever it is checked.
BAD = [
    (lambda x: v.check_int(x, "steps", 1), 1.5, TypeError),
    (lambda x: v.check_int(x, "steps", 1), True, TypeError),
    (lambda x: v.check_int(x, "steps", 1), "3", TypeError),
    (lambda x: v.check_int(x, "steps", 1), None, TypeError),
    (lambda x: v.check_int(x, "steps", 1), 0, ValueError),
    (lambda x: v.check_int(x, "steps", 1, 5), 6, ValueError),
    (lambda x: v.check_real(x, "steps", low=0), math.nan, ValueError),
    (lambda x: v.check_real(x, "steps", low=0), math.inf, ValueError),
    (lambda x: v.check_real(x, "steps", low=0), -math.inf, ValueError),
    (lambda x: v.check_real(x, "steps", low=0), -1e-9, ValueError),
    (lambda x: v.check_real(x, "steps", low=0, low_inclusive=False), 0.0, ValueError),
    (lambda x: v.check_real(x, "steps", high=1, high_inclusive=False), 1.0, ValueError),
    (lambda x: v.check_real(x, "steps"), False, TypeError),
    (lambda x: v.check_real(x, "steps"), "0.1", TypeError),
    (lambda x: v.check_real(x, "steps"), torch.tensor(0.1), TypeError),
    (lambda x: v.check_bool(x, "steps"), 1, TypeError),
    (lambda x: v.check_choice(x, "steps", ("a", "b")), "c", ValueError),
    (lambda x: v.check_choice(x, "steps", {"a", "b"}), ["a"], ValueError),
    (lambda x: v.check_sequence(x, "steps"), "ab", TypeError),
    (lambda x: v.check_sequence(x, "steps"), (), ValueError),
    (lambda x: v.check_ints(x, "steps"), "0,1", TypeError),
    (lambda x: v.check_ints(x, "steps"), (0, 1.0), TypeError),
    (lambda x: v.check_ints(x, "steps", unique=True), (0, 1, 0), ValueError),
    (lambda x: v.check_reals(x, "steps", low=0), (0.1, math.nan), ValueError),
    (lambda x: v.check_tensor(x, "steps"), [1.0], TypeError),
    (lambda x: v.check_finite(x, "steps"), torch.tensor([0.0, math.nan]), ValueError),
    (lambda x: v.check_finite(x, "steps"), torch.tensor([0.0, -math.inf]), ValueError),
    (lambda x: v.check_nonempty(x, "steps"), 0, ValueError),
    (lambda x: v.check_same_device(x), [("steps", torch.zeros(1)), ("b", torch.zeros(1, device="meta"))], ValueError),
    (lambda x: v.check_device(x, "steps"), 0.5, TypeError),
    (lambda x: v.check_device(x, "steps"), "bogus", ValueError),
    (lambda x: v.check_device(x, "steps"), "meta", ValueError),
    (lambda x: v.check_device(x, "steps"), "cuda:99", ValueError),
    (lambda x: v.check_optional_path(x, "steps"), 3, TypeError),
    (lambda x: v.check_optional_path(x, "steps"), "  ", ValueError),
    (lambda x: v.check_images(x, "steps"), torch.zeros(2, 3, dtype=torch.uint8), TypeError),
    (lambda x: v.check_images(x, "steps"), torch.zeros(3), ValueError),
    (lambda x: v.check_images(x, "steps"), torch.tensor([[0.0, math.nan]]), ValueError),
    (lambda x: v.check_labels(x, "steps"), torch.zeros(3), TypeError),
    (lambda x: v.check_labels(x, "steps"), torch.zeros(3, dtype=torch.bool), TypeError),
    (lambda x: v.check_labels(x, "steps"), torch.zeros(3, 1, dtype=torch.long), ValueError),
    (lambda x: v.check_labels(x, "steps", n=4), torch.zeros(3, dtype=torch.long), ValueError),
    (lambda x: v.check_labels(x, "steps", device=torch.device("meta")), torch.zeros(3, dtype=torch.long), ValueError),
    (lambda x: v.check_labels(x, "steps", nonnegative=True), torch.tensor([0, -1]), ValueError),
]


@pytest.mark.parametrize(("check", "value", "error"), BAD)
def test_a_bad_value_raises_its_type_and_names_the_argument(check, value, error):
    with pytest.raises(error, match="steps"):
        check(value)


GOOD = [
    (lambda x: v.check_int(x, "n", 1), np.int64(3), 3),
    (lambda x: v.check_int(x, "n"), -7, -7),
    (lambda x: v.check_optional_int(x, "n", 1), None, None),
    (lambda x: v.check_real(x, "r", low=0), np.float32(0.5), 0.5),
    (lambda x: v.check_real(x, "r", low=0), 2, 2.0),
    (lambda x: v.check_optional_real(x, "r", low=0), None, None),
    (lambda x: v.check_ints(x, "c"), [0, 1], (0, 1)),
    (lambda x: v.check_reals(x, "e", low=0), [0, 0.5], (0.0, 0.5)),
    (lambda x: v.check_choice(x, "c", ("a", "b")), "b", "b"),
    (lambda x: v.check_device(x, "d"), "cpu", torch.device("cpu")),
    (lambda x: v.check_optional_path(x, "p"), None, None),
]


@pytest.mark.parametrize(("check", "value", "expected"), GOOD)
def test_a_good_value_passes_normalised(check, value, expected):
    out = check(value)
    assert out == expected and type(out) is type(expected)


def test_finite_checks_pass_integer_meta_and_empty_tensors():
    v.check_finite(torch.tensor([1, 2]), "y")
    v.check_finite(torch.empty(3, device="meta"), "x")
    v.check_finite(torch.empty(0), "x")


def test_resolve_device_follows_the_model_then_the_default():
    model = torch.nn.Linear(2, 2)
    assert v.resolve_device(model) == torch.device("cpu")
    assert v.resolve_device(object(), default=torch.device("meta")) == torch.device("meta")
    assert v.resolve_device(torch.nn.ReLU(), "cpu") == torch.device("cpu")
