"""Bad input at every public entry point of nonrobust_ext.analysis and nonrobust_ext.stats, as one table.

Each row is a call, the exception it must raise and a regex that the message must match: the message names the
argument at fault (a TypeError for a wrong type, a ValueError for a wrong value). The classes of bad input:
NaN/Inf images or features, empty inputs (no statistic is ever computed over zero samples), x and y (or X and Y
rows) of different lengths, wrong types, bad ints and reals. A row that stops raising -- a silent accept -- fails.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch

from nonrobust_ext import analysis as A
from nonrobust_ext import stats
from nonrobust_ext.analysis import similarity
from nonrobust_ext.data import TensorData
from nonrobust_ext.training import TrainConfig

NAN, INF = math.nan, math.inf


class Tiny(torch.nn.Module):
    """A 3-class classifier of [N, 1, 4, 4] images with the library's forward_features."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.ReLU())
        self.fc = torch.nn.Linear(8, 3)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


class NaNLogits(Tiny):
    """Logits that are NaN (and still depend on the input, so an attack can differentiate them)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * NAN


with torch.random.fork_rng(devices=[]):
    torch.manual_seed(0)
    M = Tiny().eval()
    M_NAN = NaNLogits().eval()

_G = torch.Generator().manual_seed(1)
X = torch.rand(12, 1, 4, 4, generator=_G)
Y = torch.randint(0, 3, (12,), generator=_G)
D = TensorData(X, Y, ["a", "b", "c"])
X_NAN = X.clone()
X_NAN[3, 0, 1, 1] = NAN
X_INF = X.clone()
X_INF[0, 0, 0, 0] = INF
EMPTY = (X[:0], Y[:0])
SHORT_Y = (X, Y[:-1])
FLOAT_Y = (X, Y.float())
NEG_Y = (X, torch.cat([Y[:-1], torch.tensor([-1])]))
BIG_Y = (X, torch.cat([Y[:-1], torch.tensor([7])]))  # the model has 3 classes

R = torch.randn(40, 5, generator=_G, dtype=torch.float64)  # representation matrices
S = R @ torch.randn(5, 4, generator=_G, dtype=torch.float64) + 0.1 * torch.randn(40, 4, generator=_G,
                                                                                  dtype=torch.float64)
R_NAN = R.clone()
R_NAN[2, 2] = NAN
S_INF = S.clone()
S_INF[5, 0] = -INF

F = torch.randn(30, 6, generator=_G)  # class statistics
L = torch.randint(0, 3, (30,), generator=_G)
F_NAN = F.clone()
F_NAN[0, 0] = NAN
CS = stats.class_stats(F, L, num_classes=3)


def _nan_attack(model: Any, x: torch.Tensor, y: torch.Tensor, *, eps: float) -> torch.Tensor:
    return torch.full_like(x, NAN)


def _nan_features(x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0], 4), NAN)


def _attack_kw() -> dict[str, Any]:
    return {"steps": 1}


# (id, call, exception, regex naming the argument)
Row = tuple[str, Callable[[], Any], type[Exception], str]

SIMILARITY: list[Row] = [
    ("cka-x-nan", lambda: A.linear_cka(R_NAN, S), ValueError, r"^x holds 1 NaN value"),
    ("cka-y-inf", lambda: A.linear_cka(R, S_INF), ValueError, r"^y holds 1 infinite value"),
    ("cka-rows-differ", lambda: A.linear_cka(R, S[:-1]), ValueError, r"^x and y must hold the same inputs"),
    ("cka-empty", lambda: A.linear_cka(R[:0], S[:0]), ValueError, r"^x: linear_cka needs at least 2 samples"),
    ("cka-no-feature", lambda: A.linear_cka(R[:, :0], S), ValueError, r"^x needs at least one feature"),
    ("cka-x-type", lambda: A.linear_cka("R", S), TypeError, r"^x must be a tensor"),
    ("cka-x-bool", lambda: A.linear_cka(R > 0, S), TypeError, r"^x must be real-valued"),
    ("cka-x-vector", lambda: A.linear_cka(R[:, 0], S), ValueError, r"^x must be a matrix"),
    ("cka-debiased-type", lambda: A.linear_cka(R, S, debiased=1), TypeError, r"^debiased must be True or False"),
    ("cka-debiased-few", lambda: A.linear_cka(R[:3], S[:3], debiased=True), ValueError, r"^x: debiased linear_cka"),
    ("cca-x-nan", lambda: A.cca(R_NAN, S), ValueError, r"^x holds 1 NaN"),
    ("cca-rows-differ", lambda: A.cca(R[:-2], S), ValueError, r"^x and y must hold the same inputs"),
    ("cca-empty", lambda: A.cca(R[:0], S[:0]), ValueError, r"^x: cca needs at least 2"),
    ("cca-epsilon-nan", lambda: A.cca(R, S, epsilon=NAN), ValueError, r"^epsilon must be finite"),
    ("cca-epsilon-negative", lambda: A.cca(R, S, epsilon=-1e-3), ValueError, r"^epsilon must be >= 0"),
    ("cca-epsilon-type", lambda: A.cca(R, S, epsilon="small"), TypeError, r"^epsilon must be a number"),
    ("svcca-y-inf", lambda: A.svcca(R, S_INF), ValueError, r"^y holds 1 infinite"),
    ("svcca-keep-zero", lambda: A.svcca(R, S, keep=0), ValueError, r"^keep must be >= 1"),
    ("svcca-keep-fraction", lambda: A.svcca(R, S, keep=1.5), ValueError, r"^keep must be in \(0, 1\]"),
    ("svcca-keep-nan", lambda: A.svcca(R, S, keep=NAN), ValueError, r"^keep must be finite"),
    ("svcca-keep-bool", lambda: A.svcca(R, S, keep=True), TypeError, r"^keep must be a float"),
    ("svcca-keep-type", lambda: A.svcca(R, S, keep="all"), TypeError, r"^keep must be a float"),
    ("pwcca-x-nan", lambda: A.pwcca(R_NAN, S), ValueError, r"^x holds 1 NaN"),
    ("pwcca-empty", lambda: A.pwcca(R[:0], S[:0]), ValueError, r"^x: pwcca needs at least 2"),
    ("pwcca-epsilon-inf", lambda: A.pwcca(R, S, epsilon=INF), ValueError, r"^epsilon must be finite"),
    ("mbcka-layers-zero", lambda: A.MinibatchCKA(0), ValueError, r"^layers_a must be >= 1"),
    ("mbcka-layers-float", lambda: A.MinibatchCKA(1.5), TypeError, r"^layers_a must be a list"),
    ("mbcka-layers-empty", lambda: A.MinibatchCKA([]), ValueError, r"^layers_a is empty"),
    ("mbcka-layers-b-type", lambda: A.MinibatchCKA(1, 2.0), TypeError, r"^layers_b must be a list"),
    ("mbcka-update-nan", lambda: A.MinibatchCKA(1).update([R_NAN]), ValueError, r"^acts_a\['0'\] holds 1 NaN"),
    ("mbcka-update-inf-b", lambda: A.MinibatchCKA(1, 1).update([R], [S_INF]), ValueError,
     r"^acts_b\['0'\] holds 1 infinite"),
    ("mbcka-update-tensor", lambda: A.MinibatchCKA(1).update(R), TypeError, r"^acts_a must be a dict"),
    ("mbcka-update-rows", lambda: A.MinibatchCKA(1, 1).update([R], [S[:-1]]), ValueError, r"same minibatch"),
    ("mbcka-nothing", lambda: A.MinibatchCKA(1).compute(), ValueError, r"^MinibatchCKA\.compute: no minibatch"),
    ("mbcka-only-small", lambda: (lambda acc: (acc.update([R[:3]]), acc.compute()))(A.MinibatchCKA(1)), ValueError,
     r"^MinibatchCKA\.compute: no minibatch"),
]

LAYERS: list[Row] = [
    ("acts-nan", lambda: A.collect_activations(M, X_NAN, ["fc"]), ValueError, r"^x_or_batches inputs holds 1 NaN"),
    ("acts-inf-batches", lambda: A.collect_activations(M, [(X_INF, Y)], ["fc"]), ValueError,
     r"^x_or_batches inputs holds 1 infinite"),
    ("acts-empty", lambda: A.collect_activations(M, X[:0], ["fc"]), ValueError, r"^x_or_batches holds no data"),
    ("acts-empty-list", lambda: A.collect_activations(M, [], ["fc"]), ValueError, r"^x_or_batches holds no data"),
    ("acts-int-images", lambda: A.collect_activations(M, Y.view(-1, 1), ["fc"]), TypeError,
     r"^x_or_batches inputs must be a floating-point tensor"),
    ("acts-data-type", lambda: A.collect_activations(M, 3, ["fc"]), TypeError, r"^x_or_batches must be a tensor"),
    ("acts-model-type", lambda: A.collect_activations(lambda x: x, X, ["fc"]), TypeError, r"^model must be"),
    ("acts-layers-type", lambda: A.collect_activations(M, X, 3), TypeError, r"^layers must be a submodule name"),
    ("acts-layers-empty", lambda: A.collect_activations(M, X, []), ValueError, r"^layers is empty"),
    ("acts-layer-unknown", lambda: A.collect_activations(M, X, ["fc2"]), ValueError, r"^layers: Tiny has no"),
    ("acts-batch-zero", lambda: A.collect_activations(M, X, ["fc"], batch_size=0), ValueError,
     r"^batch_size must be >= 1"),
    ("acts-batch-float", lambda: A.collect_activations(M, X, ["fc"], batch_size=2.0), TypeError,
     r"^batch_size must be an int"),
    ("acts-pool-type", lambda: A.collect_activations(M, X, ["fc"], pool=3), TypeError, r"^pool must be one of"),
    ("acts-pool-value", lambda: A.collect_activations(M, X, ["fc"], pool="max"), ValueError, r"^pool must be one of"),
    ("acts-device-bogus", lambda: A.collect_activations(M, X, ["fc"], device="bogus"), ValueError,
     r"^device must name a device such as"),
    ("acts-device-type", lambda: A.collect_activations(M, X, ["fc"], device=3), TypeError, r"^device must be"),
    ("acts-out-device", lambda: A.collect_activations(M, X, ["fc"], out_device="nowhere"), ValueError,
     r"^out_device must name a device"),
    ("acts-progress-type", lambda: A.collect_activations(M, X, ["fc"], progress="yes"), TypeError,
     r"^progress must be True or False"),
    ("layersim-nan", lambda: A.layer_similarity(M, M, X_NAN, ["fc"]), ValueError, r"^data inputs holds 1 NaN"),
    ("layersim-empty", lambda: A.layer_similarity(M, Tiny(), X[:0], ["fc"]), ValueError, r"^data holds no data"),
    ("layersim-method", lambda: A.layer_similarity(M, M, X, ["fc"], method="rsa"), ValueError,
     r"^method must be one of"),
    ("layersim-debiased", lambda: A.layer_similarity(M, M, X, ["fc"], debiased="no"), TypeError, r"^debiased must"),
    ("layersim-keep", lambda: A.layer_similarity(M, M, X, ["fc"], method="svcca", keep=2.0), ValueError,
     r"^keep must be in"),
    ("layersim-epsilon", lambda: A.layer_similarity(M, M, X, ["fc"], epsilon=INF), ValueError, r"^epsilon must be"),
    ("layersim-layers-type", lambda: A.layer_similarity(M, M, X, 5), TypeError, r"^layers must be"),
    ("layersim-layers-b", lambda: A.layer_similarity(M, M, X, ["fc"], layers_b=["fc", "body"]), ValueError,
     r"^layers_b must pair with layers"),
    ("layersim-model-b", lambda: A.layer_similarity(M, "M", X, ["fc"]), TypeError, r"^model_b must be"),
    ("mb-nan", lambda: A.minibatch_cka(M, M, X_NAN, ["fc"]), ValueError, r"^data inputs holds 1 NaN"),
    ("mb-empty", lambda: A.minibatch_cka(M, M, [], ["fc"]), ValueError, r"^data holds no data"),
    ("mb-batch-small", lambda: A.minibatch_cka(M, M, X, ["fc"], batch_size=3), ValueError,
     r"^batch_size must be at least 4"),
    ("mb-batch-float", lambda: A.minibatch_cka(M, M, X, ["fc"], batch_size=4.0), TypeError, r"^batch_size must be"),
    ("mb-layers-type", lambda: A.minibatch_cka(M, M, X, 3), TypeError, r"^layers_a must be"),
    ("mb-model-a", lambda: A.minibatch_cka(3, M, X, ["fc"]), TypeError, r"^model_a must be"),
    ("mb-device", lambda: A.minibatch_cka(M, M, X, ["fc"], device="gpu9"), ValueError, r"^device must name a device"),
]


def _data_rows(prefix: str, call: Callable[[Any], Any], *, labels_vs_model: bool = True) -> list[Row]:
    """The rows every analysis of labelled data shares: its ``data`` argument in each bad form."""
    rows: list[Row] = [
        (f"{prefix}-images-nan", lambda: call((X_NAN, Y)), ValueError, r"^data images holds 1 NaN"),
        (f"{prefix}-images-inf", lambda: call([(X_INF, Y)]), ValueError, r"^data images holds 1 infinite"),
        (f"{prefix}-empty", lambda: call(EMPTY), ValueError, r"^data holds no samples"),
        (f"{prefix}-empty-set", lambda: call(TensorData(X[:0], Y[:0], ["a", "b", "c"])), ValueError,
         r"^data holds no samples"),
        (f"{prefix}-empty-list", lambda: call([]), ValueError, r"^data holds no samples"),
        (f"{prefix}-lengths", lambda: call(SHORT_Y), ValueError, r"^data labels has 11 labels for 12 inputs"),
        (f"{prefix}-lengths-batches", lambda: call([SHORT_Y]), ValueError, r"^data labels has 11 labels"),
        (f"{prefix}-float-labels", lambda: call(FLOAT_Y), TypeError, r"^data labels must be an integer tensor"),
        (f"{prefix}-negative-labels", lambda: call(NEG_Y), ValueError, r"^data labels must hold class labels >= 0"),
        (f"{prefix}-int-images", lambda: call((Y.view(-1, 1, 1, 1), Y)), TypeError,
         r"^data images must be a floating-point"),
        (f"{prefix}-type", lambda: call("data"), TypeError, r"^data must be a TensorData"),
        (f"{prefix}-batch-items", lambda: call([X]), TypeError, r"^data must yield \(x, y\) batches"),
    ]
    if labels_vs_model:
        rows.append((f"{prefix}-labels-beyond-model", lambda: call(BIG_Y), ValueError,
                     r"^data labels has label 7, outside the 3 classes of the model"))
    return rows


FEATURES: list[Row] = [
    *_data_rows("usefulness", lambda d: A.feature_usefulness(M, d, eps=0.1, steps=1), labels_vs_model=False),
    ("usefulness-labels-beyond-num-classes", lambda: A.feature_usefulness(M, BIG_Y, eps=0.0, num_classes=3),
     ValueError, r"^data labels has label 7, outside the 3 classes of num_classes=3"),
    ("usefulness-eps-nan", lambda: A.feature_usefulness(M, D, eps=NAN), ValueError, r"^eps must be finite"),
    ("usefulness-eps-negative", lambda: A.feature_usefulness(M, D, eps=-0.1), ValueError, r"^eps must be >= 0"),
    ("usefulness-eps-type", lambda: A.feature_usefulness(M, D, eps="0.1"), TypeError, r"^eps must be a number"),
    ("usefulness-threshold-inf", lambda: A.feature_usefulness(M, D, eps=0.0, threshold=INF), ValueError,
     r"^threshold must be finite"),
    ("usefulness-robust-threshold-nan", lambda: A.feature_usefulness(M, D, eps=0.0, robust_threshold=NAN),
     ValueError, r"^robust_threshold must be finite"),
    ("usefulness-num-classes-one", lambda: A.feature_usefulness(M, D, eps=0.0, num_classes=1), ValueError,
     r"^num_classes must be >= 2"),
    ("usefulness-num-classes-float", lambda: A.feature_usefulness(M, D, eps=0.0, num_classes=3.0), TypeError,
     r"^num_classes must be an int"),
    ("usefulness-batch-zero", lambda: A.feature_usefulness(M, D, eps=0.0, batch_size=0), ValueError,
     r"^batch_size must be >= 1"),
    ("usefulness-batch-bool", lambda: A.feature_usefulness(M, D, eps=0.0, batch_size=True), TypeError,
     r"^batch_size must be an int"),
    ("usefulness-features-nan", lambda: A.feature_usefulness(M, D, eps=0.0, features=_nan_features), ValueError,
     r"^features output holds \d+ NaN"),
    ("usefulness-features-type", lambda: A.feature_usefulness(M, D, eps=0.0, features=3), TypeError,
     r"^features must be a callable"),
    ("usefulness-features-empty", lambda: A.feature_usefulness(M, D, eps=0.0, features=lambda x: x[:, :0]),
     ValueError, r"^features returned no feature"),
    ("usefulness-adversarial-nan", lambda: A.feature_usefulness(M, D, eps=0.1, adversarial=X_NAN), ValueError,
     r"^adversarial holds 1 NaN"),
    ("usefulness-adversarial-shape", lambda: A.feature_usefulness(M, D, eps=0.1, adversarial=X[:-1]), ValueError,
     r"^adversarial must be a tensor shaped like the inputs"),
    ("usefulness-attack-nan", lambda: A.feature_usefulness(M, D, eps=0.1, attack=_nan_attack), ValueError,
     r"^attack output holds \d+ NaN"),
    ("usefulness-attack-name", lambda: A.feature_usefulness(M, D, eps=0.1, attack="nope"), ValueError,
     r"^attack must be one of"),
    ("usefulness-attack-type", lambda: A.feature_usefulness(M, D, eps=0.1, attack=3), TypeError, r"^attack must be"),
    ("usefulness-model-type", lambda: A.feature_usefulness(3, D, eps=0.1), TypeError, r"^model must be a callable"),
    ("usefulness-device", lambda: A.feature_usefulness(M, D, eps=0.0, device="bogus"), ValueError,
     r"^device must name a device"),
    ("usefulness-progress", lambda: A.feature_usefulness(M, D, eps=0.0, progress=1), TypeError, r"^progress must"),
    ("moments-no-sample", lambda: A.usefulness_from_moments(torch.zeros(3), F[:3], F[:3].square()), ValueError,
     r"^count holds no samples"),
    ("moments-count-negative", lambda: A.usefulness_from_moments(torch.tensor([2.0, -1.0]), F[:2], F[:2]),
     ValueError, r"^count must hold counts >= 0"),
    ("moments-count-type", lambda: A.usefulness_from_moments([2, 2], F[:2], F[:2]), TypeError,
     r"^count must be a tensor \(torch\.Tensor\)"),
    ("moments-sum-nan", lambda: A.usefulness_from_moments(torch.ones(2), F_NAN[:2], F[:2]), ValueError,
     r"^sum_clean holds 1 NaN"),
    ("moments-shapes", lambda: A.usefulness_from_moments(torch.ones(2), F[:2], F[:3]), ValueError,
     r"^sumsq_clean must have shape"),
    ("moments-other-inf", lambda: A.usefulness_from_moments(torch.ones(2), F[:2], F[:2], torch.full((2, 6), INF)),
     ValueError, r"^sum_other holds 12 infinite"),
]

DATASETS: list[Row] = [
    *_data_rows("robust-dataset", lambda d: A.robust_dataset(M, d, steps=1), labels_vs_model=False),
    ("robust-dataset-steps-zero", lambda: A.robust_dataset(M, D, steps=0), ValueError, r"^steps must be >= 1"),
    ("robust-dataset-steps-float", lambda: A.robust_dataset(M, D, steps=1.5), TypeError, r"^steps must be an int"),
    ("robust-dataset-lr-zero", lambda: A.robust_dataset(M, D, lr=0.0), ValueError, r"^lr must be > 0"),
    ("robust-dataset-lr-nan", lambda: A.robust_dataset(M, D, lr=NAN), ValueError, r"^lr must be finite"),
    ("robust-dataset-seed-float", lambda: A.robust_dataset(M, D, seed=1.5), TypeError, r"^seed must be an int"),
    ("robust-dataset-seed-str", lambda: A.robust_dataset(M, D, seed="0"), TypeError, r"^seed must be an int"),
    ("robust-dataset-bounds-order", lambda: A.robust_dataset(M, D, bounds=(1.0, 0.0)), ValueError,
     r"^bounds must have lo < hi"),
    ("robust-dataset-bounds-nan", lambda: A.robust_dataset(M, D, bounds=(0.0, NAN)), ValueError,
     r"^bounds\[1\] must be finite"),
    ("robust-dataset-bounds-type", lambda: A.robust_dataset(M, D, bounds="01"), TypeError, r"^bounds must be None"),
    ("robust-dataset-batch", lambda: A.robust_dataset(M, D, batch_size=-1), ValueError, r"^batch_size must be >= 1"),
    ("robust-dataset-one-image", lambda: A.robust_dataset(M, (X[:1], Y[:1])), ValueError,
     r"^data must hold at least 2 images"),
    *_data_rows("non-robust-dataset", lambda d: A.non_robust_dataset(M, d, eps=0.5, steps=1),
                labels_vs_model=False),
    ("non-robust-deterministic-beyond-model", lambda: A.non_robust_dataset(M, BIG_Y, eps=0.5, targets="deterministic"),
     ValueError, r"^data labels has label 7, outside the 3 classes of the model"),
    ("non-robust-eps-zero", lambda: A.non_robust_dataset(M, D, eps=0.0), ValueError, r"^eps must be > 0"),
    ("non-robust-eps-inf", lambda: A.non_robust_dataset(M, D, eps=INF), ValueError, r"^eps must be finite"),
    ("non-robust-alpha", lambda: A.non_robust_dataset(M, D, eps=0.5, alpha=-1.0), ValueError, r"^alpha must be > 0"),
    ("non-robust-steps", lambda: A.non_robust_dataset(M, D, eps=0.5, steps=0), ValueError, r"^steps must be >= 1"),
    ("non-robust-norm", lambda: A.non_robust_dataset(M, D, eps=0.5, norm="l1"), ValueError, r"^norm must be one of"),
    ("non-robust-seed", lambda: A.non_robust_dataset(M, D, eps=0.5, seed=None), TypeError, r"^seed must be an int"),
    ("non-robust-targets-type", lambda: A.non_robust_dataset(M, D, eps=0.5, targets=3), TypeError,
     r"^targets must be 'random'"),
    ("non-robust-targets-value", lambda: A.non_robust_dataset(M, D, eps=0.5, targets="all"), ValueError,
     r"^targets must be one of"),
    ("non-robust-targets-length", lambda: A.non_robust_dataset(M, D, eps=0.5, targets=Y[:-1]), ValueError,
     r"^targets has 11 labels for 12 inputs"),
    ("non-robust-targets-float", lambda: A.non_robust_dataset(M, D, eps=0.5, targets=Y.float()), TypeError,
     r"^targets must be an integer tensor"),
    ("non-robust-targets-beyond", lambda: A.non_robust_dataset(M, D, eps=0.5, targets=torch.full((12,), 3)),
     ValueError, r"^targets has label 3, outside the 3 classes of the model"),
    ("non-robust-reserved", lambda: A.non_robust_dataset(M, D, eps=0.5, targeted=False), TypeError, r"'targeted'"),
    ("repdist-x-nan", lambda: A.representation_distance(M, X_NAN, X), ValueError, r"^x holds 1 NaN"),
    ("repdist-reference-inf", lambda: A.representation_distance(M, X, X_INF), ValueError,
     r"^reference holds 1 infinite"),
    ("repdist-shapes", lambda: A.representation_distance(M, X, X[:-1]), ValueError,
     r"^reference must have the shape of x"),
    ("repdist-empty", lambda: A.representation_distance(M, X[:0], X[:0]), ValueError, r"^x holds no images"),
    ("repdist-type", lambda: A.representation_distance(M, "x", X), TypeError, r"^x must be a tensor \(torch\.Tensor\)"),
    ("repdist-batch", lambda: A.representation_distance(M, X, X, batch_size=0), ValueError, r"^batch_size"),
    ("train-test-dataset-lengths", lambda: A.train_and_test(SHORT_Y, D, Tiny, config=TrainConfig(steps=1)),
     ValueError, r"^dataset labels has 11 labels for 12"),
    ("train-test-test-nan", lambda: A.train_and_test(D, (X_NAN, Y), Tiny, config=TrainConfig(steps=1)), ValueError,
     r"^test_data images holds 1 NaN"),
    ("train-test-test-empty", lambda: A.train_and_test(D, EMPTY, Tiny, config=TrainConfig(steps=1)), ValueError,
     r"^test_data holds no samples"),
    ("train-test-test-type", lambda: A.train_and_test(D, [X], Tiny, config=TrainConfig(steps=1)), TypeError,
     r"^test_data must be a TensorData or a pair"),
    ("train-test-seed", lambda: A.train_and_test(D, D, Tiny, config=TrainConfig(steps=1), seed=0.5), TypeError,
     r"^seed must be an int"),
    ("train-test-attack-eps", lambda: A.train_and_test(D, D, Tiny, config=TrainConfig(steps=1),
                                                       attack={"eps": NAN}), ValueError, r"^attack\['eps'\] must be"),
    ("train-test-batch", lambda: A.train_and_test(D, D, Tiny, config=TrainConfig(steps=1), batch_size=0), ValueError,
     r"^batch_size must be >= 1"),
    ("train-test-device", lambda: A.train_and_test(D, D, Tiny, config=TrainConfig(steps=1), device="tpu"), ValueError,
     r"^device must name a device"),
]

FREQUENCY: list[Row] = [
    ("decomposition-nan", lambda: A.frequency_decomposition(X_NAN, 1.0), ValueError, r"^x holds 1 NaN"),
    ("decomposition-empty", lambda: A.frequency_decomposition(X[:0], 1.0), ValueError, r"^x holds no images"),
    ("decomposition-int", lambda: A.frequency_decomposition(Y.view(3, 2, 2), 1.0), TypeError,
     r"^x must be a floating-point"),
    ("decomposition-type", lambda: A.frequency_decomposition([[0.0]], 1.0), TypeError, r"^x must be a tensor \(torch\.Tensor\)"),
    ("decomposition-radius-nan", lambda: A.frequency_decomposition(X, NAN), ValueError, r"^radius must be finite"),
    ("decomposition-radius-negative", lambda: A.frequency_decomposition(X, -1), ValueError, r"^radius must be >= 0"),
    ("decomposition-radius-type", lambda: A.frequency_decomposition(X, "1"), TypeError, r"^radius must be a number"),
    ("radius-grid-height", lambda: A.radius_grid(0, 4), ValueError, r"^height must be >= 1"),
    ("radius-grid-width", lambda: A.radius_grid(4, 4.0), TypeError, r"^width must be an int"),
    ("spectrum-x-adv-nan", lambda: A.perturbation_spectrum(X, X_NAN), ValueError, r"^x_adv holds 1 NaN"),
    ("spectrum-x-inf", lambda: A.perturbation_spectrum(X_INF, X), ValueError, r"^x holds 1 infinite"),
    ("spectrum-empty", lambda: A.perturbation_spectrum(X[:0], X[:0]), ValueError, r"^x holds no images"),
    ("spectrum-shapes", lambda: A.perturbation_spectrum(X, X[:-1]), ValueError, r"^x_adv must have the shape of x"),
    ("spectrum-normalize", lambda: A.perturbation_spectrum(X, X, normalize=1), TypeError, r"^normalize must be"),
    *_data_rows("accuracy-by-frequency", lambda d: A.accuracy_by_frequency(M, d, [1.0])),
    ("accuracy-by-frequency-radii-nan", lambda: A.accuracy_by_frequency(M, D, [1.0, NAN]), ValueError,
     r"^radii\[1\] must be finite"),
    ("accuracy-by-frequency-radii-type", lambda: A.accuracy_by_frequency(M, D, 2.0), TypeError,
     r"^radii must be a list"),
    ("accuracy-by-frequency-radii-empty", lambda: A.accuracy_by_frequency(M, D, []), ValueError,
     r"^radii must not be empty"),
    ("accuracy-by-frequency-nan-logits", lambda: A.accuracy_by_frequency(M_NAN, D, [1.0]), ValueError,
     r"^the model's logits holds \d+ NaN"),
    *_data_rows("adversarial-spectrum", lambda d: A.adversarial_spectrum(M, d, eps=0.1, steps=1),
                labels_vs_model=False),
    ("adversarial-spectrum-eps", lambda: A.adversarial_spectrum(M, D, eps=INF), ValueError, r"^eps must be finite"),
    ("adversarial-spectrum-attack-nan", lambda: A.adversarial_spectrum(M, D, eps=0.1, attack=_nan_attack),
     ValueError, r"^attack output holds \d+ NaN"),
    ("band-attack-x-nan", lambda: A.band_limited_attack(M, X_NAN, Y, eps=0.1, radius=1, band="low"), ValueError,
     r"^x holds 1 NaN"),
    ("band-attack-y-length", lambda: A.band_limited_attack(M, X, Y[:-1], eps=0.1, radius=1, band="low"), ValueError,
     r"^y has 11 labels for 12 inputs"),
    ("band-attack-y-float", lambda: A.band_limited_attack(M, X, Y.float(), eps=0.1, radius=1, band="low"), TypeError,
     r"^y must be an integer tensor"),
    ("band-attack-y-beyond", lambda: A.band_limited_attack(M, X, BIG_Y[1], eps=0.1, radius=1, band="low"),
     ValueError, r"labels y must be in \[0, 3\)"),
    ("band-attack-y-beyond-noise", lambda: A.band_limited_attack(M, X, BIG_Y[1], eps=0.1, radius=1, band="low",
                                                                 method="noise"),
     ValueError, r"^data labels has label 7"),
    ("band-attack-steps", lambda: A.band_limited_attack(M, X, Y, eps=0.1, radius=1, band="low", steps=0), ValueError,
     r"^steps must be >= 1"),
    ("band-attack-seed", lambda: A.band_limited_attack(M, X, Y, eps=0.1, radius=1, band="low", seed=1.5), TypeError,
     r"^seed must be an int"),
    ("band-attack-alpha", lambda: A.band_limited_attack(M, X, Y, eps=0.1, radius=1, band="low", alpha=0.0),
     ValueError, r"^alpha must be > 0"),
    ("band-attack-bounds", lambda: A.band_limited_attack(M, X, Y, eps=0.1, radius=1, band="low", bounds=(0, 0)),
     ValueError, r"^bounds must have lo < hi"),
    ("band-attack-band", lambda: A.band_limited_attack(M, X, Y, eps=0.1, radius=1, band="mid"), ValueError,
     r"^band must be one of"),
    ("band-attack-method", lambda: A.band_limited_attack(M, X, Y, eps=0.1, radius=1, band="low", method="fgsm"),
     ValueError, r"^method must be one of"),
    ("band-attack-radius", lambda: A.band_limited_attack(M, X, Y, eps=0.1, radius=INF, band="low"), ValueError,
     r"^radius must be finite"),
    ("band-attack-nan-logits", lambda: A.band_limited_attack(M_NAN, X, Y, eps=0.1, radius=1, band="low"), ValueError,
     r"^the model's logits holds \d+ NaN"),
    *_data_rows("band-robustness", lambda d: A.band_limited_robustness(M, d, eps=0.1, radius=1, band="low",
                                                                       method="noise")),
    ("band-robustness-eps", lambda: A.band_limited_robustness(M, D, eps=-1, radius=1, band="low"), ValueError,
     r"^eps must be >= 0"),
]

TRANSFER_AND_CONFIDENCE: list[Row] = [
    *_data_rows("transfer", lambda d: A.transfer_matrix({"m": M}, d, eps=0.1, steps=1)),
    ("transfer-models-type", lambda: A.transfer_matrix([M], D, eps=0.1), TypeError, r"^models must be a dict"),
    ("transfer-models-empty", lambda: A.transfer_matrix({}, D, eps=0.1), ValueError, r"^models must name"),
    ("transfer-models-key", lambda: A.transfer_matrix({1: M}, D, eps=0.1), TypeError, r"^models must be keyed"),
    ("transfer-models-value", lambda: A.transfer_matrix({"m": 3}, D, eps=0.1), TypeError, r"^models\['m'\] must be"),
    ("transfer-eps", lambda: A.transfer_matrix({"m": M}, D, eps=NAN), ValueError, r"^eps must be finite"),
    ("transfer-nan-logits", lambda: A.transfer_matrix({"m": M_NAN}, D, eps=0.0), ValueError,
     r"^the model's logits holds \d+ NaN"),
    ("transfer-attack-nan", lambda: A.transfer_matrix({"m": M}, D, eps=0.1, attack=_nan_attack), ValueError,
     r"^attack output holds"),
    ("transfer-matrix-zero-samples", lambda: A.TransferMatrix(["m"], 0.1, "pgd", 0, [0], [[0]]), ValueError,
     r"^num_samples must be >= 1"),
    ("transfer-matrix-counts", lambda: A.TransferMatrix(["m"], 0.1, "pgd", 4, [5], [[0]]), ValueError,
     r"^clean_correct/robust_correct entries must be <= 4"),
    *_data_rows("confidence", lambda d: A.confidence(M, d, eps=0.1, steps=1)),
    ("confidence-bins-zero", lambda: A.confidence(M, D, eps=0.0, bins=0), ValueError, r"^bins must be >= 1"),
    ("confidence-bins-float", lambda: A.confidence(M, D, eps=0.0, bins=2.5), TypeError, r"^bins must be an int"),
    ("confidence-eps", lambda: A.confidence(M, D, eps=-1), ValueError, r"^eps must be >= 0"),
    ("confidence-nan-logits", lambda: A.confidence(M_NAN, D, eps=0.0), ValueError, r"^the model's logits holds"),
    ("confidence-attack-nan", lambda: A.confidence(M, D, eps=0.1, attack=_nan_attack), ValueError,
     r"^attack output holds"),
    ("confidence-attack-shape", lambda: A.confidence(M, D, eps=0.1, attack=lambda m, x, y, eps: x[:1]), ValueError,
     r"^attack must return a tensor shaped like its input"),
]

STATS: list[Row] = [
    ("class-stats-nan", lambda: stats.class_stats(F_NAN, L, num_classes=3), ValueError, r"^features holds 1 NaN"),
    ("class-stats-empty", lambda: stats.class_stats(F[:0], L[:0], num_classes=3), ValueError,
     r"^features holds no rows"),
    ("class-stats-lengths", lambda: stats.class_stats(F, L[:-1], num_classes=3), ValueError,
     r"^labels must have shape \[30\]"),
    ("class-stats-float-labels", lambda: stats.class_stats(F, L.float(), num_classes=3), TypeError,
     r"^labels must be an integer tensor"),
    ("class-stats-labels-beyond", lambda: stats.class_stats(F, L, num_classes=2), ValueError,
     r"^labels must be in \[0, num_classes\) = \[0, 2\)"),
    ("class-stats-labels-negative", lambda: stats.class_stats(F, L - 1, num_classes=3), ValueError,
     r"^labels must be in \[0, num_classes\)"),
    ("class-stats-num-classes-zero", lambda: stats.class_stats(F, L, num_classes=0), ValueError,
     r"^num_classes must be >= 1"),
    ("class-stats-num-classes-float", lambda: stats.class_stats(F, L, num_classes=3.0), TypeError,
     r"^num_classes must be an int"),
    ("class-stats-covariance", lambda: stats.class_stats(F, L, num_classes=3, covariance="yes"), TypeError,
     r"^covariance must be True or False"),
    ("class-stats-features-type", lambda: stats.class_stats(F.tolist(), L, num_classes=3), TypeError,
     r"^features must be a tensor \(torch\.Tensor\)"),
    ("class-stats-int-features", lambda: stats.class_stats(L.view(-1, 1), L, num_classes=3), TypeError,
     r"^features must be a floating-point"),
    ("classstats-count-nan", lambda: stats.ClassStats(torch.tensor([NAN, 1.0]), torch.zeros(2, 3), torch.zeros(2, 3)),
     ValueError, r"^count holds 1 NaN"),
    ("classstats-mean-inf", lambda: stats.ClassStats(torch.ones(2, dtype=torch.float64), torch.full((2, 3), INF),
                                                     torch.zeros(2, 3)), ValueError, r"^mean holds 6 infinite"),
    ("classstats-count-negative", lambda: stats.ClassStats(torch.tensor([-1.0, 1.0]), torch.zeros(2, 3),
                                                           torch.zeros(2, 3)), ValueError, r"^count must hold"),
    ("classstats-mean-shape", lambda: stats.ClassStats(torch.ones(2), torch.zeros(3, 3), torch.zeros(3, 3)),
     ValueError, r"^mean must have shape \[K, D\] with K = 2"),
    ("classstats-m2-shape", lambda: stats.ClassStats(torch.ones(2), torch.zeros(2, 3), torch.zeros(2, 4)),
     ValueError, r"^m2 must have shape"),
    ("classstats-type", lambda: stats.ClassStats([1.0], torch.zeros(1, 3), torch.zeros(1, 3)), TypeError,
     r"^count must be a tensor \(torch\.Tensor\)"),
    ("classstats-zeros-classes", lambda: stats.ClassStats.zeros(0, 3), ValueError, r"^num_classes must be >= 1"),
    ("classstats-zeros-dim", lambda: stats.ClassStats.zeros(2, -1), ValueError, r"^dim must be >= 0"),
    ("classstats-zeros-dim-float", lambda: stats.ClassStats.zeros(2, 3.0), TypeError, r"^dim must be an int"),
    ("classstats-zeros-dtype", lambda: stats.ClassStats.zeros(2, 3, dtype=torch.int64), TypeError,
     r"^dtype must be a floating-point"),
    ("classstats-var-correction", lambda: CS.var(-1), ValueError, r"^correction must be >= 0"),
    ("classstats-var-correction-float", lambda: CS.var(0.5), TypeError, r"^correction must be an int"),
    ("classstats-total-of-nothing", lambda: stats.ClassStats.zeros(3, 6).total(), ValueError,
     r"^these statistics holds no rows"),
    ("merge-type", lambda: stats.merge_class_stats(CS, 3), TypeError, r"^b must be a ClassStats"),
    ("merge-classes", lambda: stats.merge_class_stats(CS, stats.ClassStats.zeros(4, 6)), ValueError,
     r"^b has 4 classes"),
    ("all-reduce-type", lambda: stats.all_reduce_class_stats("stats"), TypeError, r"^stats must be a ClassStats"),
]

ROWS = SIMILARITY + LAYERS + FEATURES + DATASETS + FREQUENCY + TRANSFER_AND_CONFIDENCE + STATS


@pytest.mark.parametrize(("call", "error", "match"), [pytest.param(c, e, m, id=i) for i, c, e, m in ROWS])
def test_bad_input_is_refused_naming_the_argument(call, error, match):
    with pytest.raises(error, match=match) as info:
        call()
    # Exactly the promised type: a TypeError where a ValueError is due (or the reverse) is a failure too.
    assert type(info.value) is error, f"{type(info.value).__name__}: {info.value}"


def test_rows_are_unique_and_cover_every_public_entry_point():
    ids = [row[0] for row in ROWS]
    assert len(ids) == len(set(ids))
    called = " ".join(ids)
    for prefix in ("cka", "cca", "svcca", "pwcca", "mbcka", "acts", "layersim", "mb-", "usefulness", "moments",
                   "robust-dataset", "non-robust", "repdist", "train-test", "decomposition", "radius-grid",
                   "spectrum", "accuracy-by-frequency", "adversarial-spectrum", "band-attack", "band-robustness",
                   "transfer", "confidence", "class-stats", "classstats", "merge", "all-reduce"):
        assert prefix in called, prefix
    # the public analysis names each have a row (plots aside: they only draw what these computed)
    public = {n for n in A.__all__ if not n.startswith("plot_")} - {"CCAResult", "CKAMatrix", "FeatureUsefulness"}
    source = open(__file__).read()
    missing = [n for n in public if f"A.{n}(" not in source]
    assert not missing, missing
    assert similarity.linear_cka is A.linear_cka


def test_good_input_still_computes():
    """The same objects the table breaks give finite results when whole (the rows fail for the reason named)."""
    assert 0.0 < A.linear_cka(R, S) <= 1.0
    assert math.isfinite(A.svcca(R, S)) and math.isfinite(A.pwcca(R, S)) and math.isfinite(A.cca(R, S).mean)
    assert A.confidence(M, D, eps=0.0)["num_samples"] == 12
    assert A.transfer_matrix({"m": M}, D, eps=0.0).num_samples == 12
    assert A.accuracy_by_frequency(M, D, [1.0])["num_samples"] == 12
    assert A.feature_usefulness(M, D, eps=0.0).num_samples == 12
    assert A.collect_activations(M, X, ["fc"])["fc"].shape == (12, 3)
    assert bool(torch.isfinite(A.frequency_decomposition(X, 1.0)[0]).all())
    assert stats.class_stats(F, L, num_classes=3).count.sum() == 30
