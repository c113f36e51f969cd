"""Bad input to every public attack entry point and to robust_accuracy, as one table.

Each row: the entry point, the bad arguments, the exception type (TypeError for a wrong type,
ValueError for a wrong value) and a regex that names the argument. Rows for an option are generated
for every entry point that takes it, from the registry, so a new attack gets them all. Nothing here
may be accepted silently: NaN and Inf in images, starting points, radii, step sizes, bounds and
scales; NaN logits (which would otherwise count as "fooled"); wrong types; and for robust_accuracy
data whose accuracy would be meaningless (mismatched lengths, NaN images, zero samples).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from _helpers import SmallCNN

from nonrobust_ext.attacks import RobustnessReport, feature_pgd, robust_accuracy
from nonrobust_ext.attacks.registry import SPECS

NAN, INF = math.nan, math.inf


class Lazy:
    """An argument built from the test's (model, x, y) when the row runs."""

    def __init__(self, build: Callable[[SmallCNN, torch.Tensor, torch.Tensor], Any]) -> None:
        self.build = build


def with_value(x: torch.Tensor, value: float, index=(0, 0, 0, 0)) -> torch.Tensor:
    out = x.clone()
    out[index] = value
    return out


class BadLogits(torch.nn.Module):
    """The model's logits with ``value`` in one entry, from the ``after``-th forward on."""

    def __init__(self, model: torch.nn.Module, value: float, after: int = 0) -> None:
        super().__init__()
        self.model, self.value, self.after, self.calls = model, value, after, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        z = self.model(x)
        if self.calls > self.after:
            z = z.clone()
            z[0, 0] = self.value
        return z


# ------------------------------------------------------------------------------------ entry points

ENTRIES = [*SPECS, "feature_pgd", "robust_accuracy"]
FIXED = [n for n, s in SPECS.items() if s.kind == "fixed_radius"]
LABELLED = list(SPECS)


def takes(entry: str, option: str) -> bool:
    if entry == "feature_pgd":
        return option in {"eps", "steps", "alpha", "norm", "random_start", "bounds", "scale", "seed", "generator",
                          "amp", "module"}
    if entry == "robust_accuracy":
        return option in {"eps", "batch_size", "max_batches", "logits", "attack", "progress", "device"}
    return SPECS[entry].takes(option)


def call(entry: str, model: SmallCNN, x: torch.Tensor, y: torch.Tensor, arguments: dict[str, Any]) -> Any:
    """``entry`` on (model, x, y) with quick settings, ``arguments`` replacing any of them."""
    arguments = {k: v.build(model, x, y) if isinstance(v, Lazy) else v for k, v in arguments.items()}
    model, x, y = arguments.pop("model", model), arguments.pop("x", x), arguments.pop("y", y)
    if entry == "feature_pgd":
        embed = arguments.pop("embed", model.features if isinstance(model, SmallCNN) else model)
        return feature_pgd(embed, x, **{"eps": 0.05, "steps": 2, "seed": 0, **arguments})
    if entry == "robust_accuracy":
        data = arguments.pop("data", (x, y))
        defaults: dict[str, Any] = {"eps": [0.05]}
        if not callable(arguments.get("attack")):  # a named attack: keep it quick
            defaults["steps"] = 2
        return robust_accuracy(model, data, **{**defaults, **arguments})
    spec = SPECS[entry]
    defaults: dict[str, Any] = dict(spec.smoke)
    if spec.kind == "fixed_radius":
        defaults["eps"] = 0.05
    return spec.fn(model, x, y, **{**defaults, **arguments})


def rows_for(entries: list[str], option: str | None, arguments: dict[str, Any], error: type, match: str) -> list[Any]:
    """One row per entry (that takes ``option``, when given)."""
    return [pytest.param(e, arguments, error, match, id=f"{e}-{match[:40]}")
            for e in entries if option is None or takes(e, option)]


not_a_number = "0.1"
LOSS_NAMES = {"apgd": r"loss must be 'ce', 'dlr', 'cw' or a callable"}
ROWS = [
    # --- the images: type, shape, NaN and Inf (a NaN pixel passes `x < lo`, so it needs its own check)
    *rows_for(ENTRIES, None, {"x": Lazy(lambda m, x, y: with_value(x, NAN))}, ValueError, r"x holds 1 NaN value"),
    *rows_for(ENTRIES, None, {"x": Lazy(lambda m, x, y: with_value(x, INF))}, ValueError, r"x holds 1 infinite value"),
    *rows_for(ENTRIES, None, {"x": Lazy(lambda m, x, y: with_value(x, -INF))}, ValueError, r"x holds 1 infinite"),
    *rows_for(ENTRIES, None, {"x": Lazy(lambda m, x, y: (x * 255).to(torch.uint8))}, TypeError,
              r"x must be a floating-point tensor"),
    *rows_for(ENTRIES, None, {"x": Lazy(lambda m, x, y: x.tolist())}, TypeError, r"x must be a tensor"),
    *rows_for(LABELLED + ["feature_pgd"], None, {"x": Lazy(lambda m, x, y: x[0, 0, 0])}, ValueError,
              r"x must have at least 2 dimensions"),
    # --- the labels
    *rows_for(LABELLED + ["robust_accuracy"], None, {"y": Lazy(lambda m, x, y: y.float())}, TypeError,
              r"y must be an integer tensor of class labels"),
    *rows_for(LABELLED + ["robust_accuracy"], None, {"y": Lazy(lambda m, x, y: y[:4])}, ValueError,
              r"y has 4 labels for 6 inputs"),
    *rows_for(LABELLED + ["robust_accuracy"], None, {"y": Lazy(lambda m, x, y: y[:, None])}, ValueError,
              r"y must be a 1-D tensor of labels"),
    *rows_for(LABELLED + ["robust_accuracy"], None, {"y": Lazy(lambda m, x, y: y + 4)}, ValueError,
              r"labels y must be in \[0, 4\)"),
    *rows_for(LABELLED, None, {"y": Lazy(lambda m, x, y: y.tolist())}, TypeError, r"y must be a tensor"),
    # --- the model and its output: NaN or Inf logits never count as "fooled"
    *rows_for(LABELLED + ["robust_accuracy"], None, {"model": 3}, TypeError, r"model must be callable"),
    *rows_for(["feature_pgd"], None, {"embed": 3}, TypeError, r"embed must be callable"),
    *rows_for(LABELLED + ["robust_accuracy"], None, {"model": Lazy(lambda m, x, y: BadLogits(m, NAN))}, ValueError,
              r"the model's output holds NaN or infinite logits"),
    *rows_for(LABELLED + ["robust_accuracy"], None, {"model": Lazy(lambda m, x, y: BadLogits(m, INF))}, ValueError,
              r"the model's output holds NaN or infinite logits"),
    # ... also when it appears mid-attack (the first forward is fine)
    *rows_for(LABELLED, None, {"model": Lazy(lambda m, x, y: BadLogits(m, NAN, after=1)), "return_result": True,
                               "y": Lazy(lambda m, x, y: m.eval()(x).argmax(1))},
              ValueError, r"the model's output holds NaN or infinite logits"),
    *rows_for(["feature_pgd"], None, {"embed": Lazy(lambda m, x, y: lambda t: m.features(t) * NAN)}, ValueError,
              r"embed's output holds NaN or infinite embeddings"),
    *rows_for(LABELLED, None, {"model": Lazy(lambda m, x, y: lambda t: m(t)[:, :, None])}, ValueError,
              r"the model's logits must be \[B, num_classes\]"),
    *rows_for(["feature_pgd"], None, {"embed": Lazy(lambda m, x, y: lambda t: t)}, ValueError,
              r"embed must return embeddings \[B, D\]"),
    *rows_for(LABELLED, "logits", {"logits": 1.5}, TypeError, r"logits must be None, an index, a key or a callable"),
    *rows_for(LABELLED, "return_result", {"return_result": 1}, TypeError, r"return_result must be True or False"),
    # --- the radius
    *rows_for(FIXED + ["feature_pgd"], "eps", {"eps": NAN}, ValueError, r"eps must be finite"),
    *rows_for(FIXED + ["feature_pgd"], "eps", {"eps": INF}, ValueError, r"eps must be finite"),
    *rows_for(FIXED + ["feature_pgd"], "eps", {"eps": torch.tensor([0.1, NAN, 0.1, 0.1, 0.1, 0.1])}, ValueError,
              r"eps must be finite"),
    *rows_for(FIXED + ["feature_pgd"], "eps", {"eps": [0.1, 0.1, INF, 0.1, 0.1, 0.1]}, ValueError,
              r"eps must be finite"),
    *rows_for(FIXED + ["feature_pgd"], "eps", {"eps": -0.1}, ValueError, r"eps must be >= 0"),
    *rows_for(FIXED + ["feature_pgd"], "eps", {"eps": torch.ones(5) * 0.1}, ValueError,
              r"eps must be one value or one per sample"),
    *rows_for(FIXED + ["feature_pgd"], "eps", {"eps": not_a_number}, TypeError, r"eps must be a number"),
    *rows_for(FIXED + ["feature_pgd"], "eps", {"eps": [0.1, "a", 0.1, 0.1, 0.1, 0.1]}, TypeError,
              r"eps\[1\] must be a number"),
    *rows_for(FIXED + ["feature_pgd"], "eps", {"eps": torch.ones(6, dtype=torch.bool)}, TypeError,
              r"eps must be a real number or a tensor of real numbers"),
    *rows_for(FIXED + ["feature_pgd"], "eps", {"eps": None}, TypeError, r"eps must be a number"),
    # --- the step size
    *rows_for(FIXED + ["feature_pgd"], "alpha", {"alpha": NAN}, ValueError, r"alpha must be finite"),
    *rows_for(FIXED + ["feature_pgd"], "alpha", {"alpha": INF}, ValueError, r"alpha must be finite"),
    *rows_for(FIXED + ["feature_pgd"], "alpha", {"alpha": -1.0}, ValueError, r"alpha must be >= 0"),
    *rows_for(FIXED + ["feature_pgd"], "alpha", {"alpha": "big"}, TypeError, r"alpha must be a number"),
    # --- the bounds
    *rows_for(LABELLED + ["feature_pgd"], "bounds", {"bounds": (NAN, 1.0)}, ValueError, r"bounds must not be NaN"),
    *rows_for(LABELLED + ["feature_pgd"], "bounds", {"bounds": (0.0, torch.tensor([1.0, NAN, 1.0]))}, ValueError,
              r"bounds must not be NaN"),
    *rows_for(LABELLED + ["feature_pgd"], "bounds", {"bounds": (1.0, 0.0)}, ValueError, r"bounds must have lo <= hi"),
    *rows_for(LABELLED + ["feature_pgd"], "bounds", {"bounds": ("0", 1.0)}, TypeError, r"bounds\[0\] must be a number"),
    *rows_for(LABELLED + ["feature_pgd"], "bounds", {"bounds": (0.0, 0.5, 1.0)}, TypeError,
              r"bounds must be None or a pair"),
    *rows_for(LABELLED + ["feature_pgd"], "bounds", {"bounds": (0.0, [1.0, 1.0])}, ValueError,
              r"bounds\[1\] must be one value or one per channel \(3\)"),
    *rows_for(LABELLED + ["feature_pgd"], "bounds", {"bounds": (0.2, 1.0)}, ValueError, r"x has values outside bounds"),
    *rows_for(["cw_l2"], None, {"bounds": None}, ValueError, r"bounds must be finite for cw_l2"),
    *rows_for(["cw_l2"], None, {"bounds": (0.0, INF)}, ValueError, r"bounds must be finite with lo < hi"),
    # --- the threat-model unit
    *rows_for(LABELLED + ["feature_pgd"], "scale", {"scale": NAN}, ValueError, r"scale must be > 0 and finite"),
    *rows_for(LABELLED + ["feature_pgd"], "scale", {"scale": INF}, ValueError, r"scale must be > 0 and finite"),
    *rows_for(LABELLED + ["feature_pgd"], "scale", {"scale": [1.0, 0.0, 1.0]}, ValueError,
              r"scale must be > 0 and finite"),
    *rows_for(LABELLED + ["feature_pgd"], "scale", {"scale": -1.0}, ValueError, r"scale must be > 0 and finite"),
    *rows_for(LABELLED + ["feature_pgd"], "scale", {"scale": [1.0, 2.0]}, ValueError,
              r"scale must be one value or one per channel \(3\)"),
    *rows_for(LABELLED + ["feature_pgd"], "scale", {"scale": "1"}, TypeError, r"scale must be a number"),
    # --- the starting point
    *rows_for(LABELLED, "x_init", {"x_init": Lazy(lambda m, x, y: with_value(x, NAN))}, ValueError,
              r"x_init holds 1 NaN value"),
    *rows_for(LABELLED, "x_init", {"x_init": Lazy(lambda m, x, y: with_value(x, INF))}, ValueError,
              r"x_init holds 1 infinite value"),
    *rows_for(LABELLED, "x_init", {"x_init": torch.zeros(2, 3, 8, 8)}, ValueError, r"x_init must be a tensor shaped like x"),
    *rows_for(LABELLED, "x_init", {"x_init": Lazy(lambda m, x, y: x.tolist())}, TypeError, r"x_init must be a tensor"),
    *rows_for(LABELLED, "x_init", {"x_init": Lazy(lambda m, x, y: x.long())}, TypeError,
              r"x_init must be a floating-point tensor"),
    # --- counts and flags: a float where an int is needed is a TypeError everywhere
    *rows_for(LABELLED + ["feature_pgd"], "steps", {"steps": 1.5}, TypeError, r"steps must be an int"),
    *rows_for(LABELLED + ["feature_pgd"], "steps", {"steps": 2.0}, TypeError, r"steps must be an int"),
    *rows_for(LABELLED + ["feature_pgd"], "steps", {"steps": True}, TypeError, r"steps must be an int"),
    *rows_for(LABELLED + ["feature_pgd"], "steps", {"steps": 0}, ValueError, r"steps must be >= 1"),
    *rows_for(LABELLED, "restarts", {"restarts": 1.5}, TypeError, r"restarts must be an int"),
    *rows_for(LABELLED, "restarts", {"restarts": 0}, ValueError, r"restarts must be >= 1"),
    *rows_for(LABELLED, "targeted", {"targeted": 1}, TypeError, r"targeted must be True or False"),
    *rows_for(LABELLED + ["feature_pgd"], "random_start", {"random_start": "yes"}, TypeError,
              r"random_start must be True or False"),
    *rows_for(LABELLED, "early_stop", {"early_stop": 1}, TypeError, r"early_stop must be True or False"),
    *rows_for(LABELLED, "cuda_graph", {"cuda_graph": "yes"}, TypeError, r"cuda_graph must be True or False"),
    *rows_for(LABELLED + ["feature_pgd"], "norm", {"norm": "l1"}, ValueError, r"norm must be one of 'linf', 'l2'"),
    *rows_for(LABELLED + ["feature_pgd"], "amp", {"amp": "bf16"}, TypeError, r"amp must be None, torch.bfloat16"),
    # --- randomness
    *rows_for(LABELLED + ["feature_pgd"], "seed", {"seed": 1.5}, TypeError, r"seed must be an int"),
    *rows_for(LABELLED + ["feature_pgd"], "seed", {"seed": 2**64}, ValueError, r"seed must be <= 18446744073709551615"),
    *rows_for(LABELLED + ["feature_pgd"], "seed", {"seed": 1, "generator": torch.Generator()}, ValueError,
              r"pass either seed or generator"),
    *rows_for(LABELLED + ["feature_pgd"], "generator", {"seed": None, "generator": 5}, TypeError,
              r"generator must be a torch.Generator"),
    # --- the loss
    # (every fixed-radius attack takes a loss but the Square Attack, whose random search is the margin's)
    *[(n, {"loss": "hinge"}, ValueError, LOSS_NAMES.get(n, r"loss must be 'ce', 'cw' or a callable"))
      for n in FIXED if takes(n, "loss")],
    *[(n, {"loss": 3}, TypeError, LOSS_NAMES.get(n, r"loss must be 'ce', 'cw' or a callable"))
      for n in FIXED if takes(n, "loss")],
    *rows_for(FIXED, "loss", {"loss": lambda z, t: z.sum()}, ValueError, r"loss must return one value per sample"),
    *rows_for(FIXED, "loss", {"loss": lambda z, t: z[:, 0] * NAN}, ValueError, r"loss returned NaN or infinite"),
    # --- options of one attack
    ("apgd", {"rho": 0.0}, ValueError, r"rho must be in \(0, 1\]"),
    ("apgd", {"rho": 1.5}, ValueError, r"rho must be in \(0, 1\]"),
    ("apgd", {"rho": NAN}, ValueError, r"rho must be finite"),
    ("apgd", {"rho": "0.75"}, TypeError, r"rho must be a number"),
    ("apgd", {"targeted": True, "loss": "dlr"}, ValueError, r"loss='dlr' is untargeted"),
    *[(n, {"decay": -0.5}, ValueError, r"decay must be >= 0") for n in ("mifgsm", "difgsm")],
    *[(n, {"decay": NAN}, ValueError, r"decay must be finite") for n in ("mifgsm", "difgsm")],
    *[(n, {"decay": INF}, ValueError, r"decay must be finite") for n in ("mifgsm", "difgsm")],
    *[(n, {"decay": "1"}, TypeError, r"decay must be a number") for n in ("mifgsm", "difgsm")],
    ("difgsm", {"diversity_prob": 1.5}, ValueError, r"diversity_prob must be in \[0, 1\]"),
    ("difgsm", {"diversity_prob": NAN}, ValueError, r"diversity_prob must be finite"),
    ("difgsm", {"resize_rate": 0.0}, ValueError, r"resize_rate must be > 0"),
    ("difgsm", {"resize_rate": INF}, ValueError, r"resize_rate must be finite"),
    ("difgsm", {"resize_rate": 1.0}, ValueError, r"resize_rate=1 gives no resize range for 8x8"),
    ("difgsm", {"resize_rate": 1.1}, ValueError, r"resize_rate=1.1 gives no resize range"),
    ("difgsm", {"resize_rate": 0.1}, ValueError, r"resize_rate=0.1 gives no resize range"),
    ("difgsm", {"interpolation": "area"}, ValueError, r"interpolation must be one of 'nearest', 'bilinear', got 'area'"),
    ("difgsm", {"x": Lazy(lambda m, x, y: x[..., :6])}, ValueError, r"square images \[B, C, W, W\]"),
    ("difgsm", {"x": Lazy(lambda m, x, y: x.flatten(2))}, ValueError, r"square images \[B, C, W, W\]"),
    ("deepfool", {"overshoot": -0.1}, ValueError, r"overshoot must be >= 0"),
    ("deepfool", {"overshoot": NAN}, ValueError, r"overshoot must be finite"),
    ("deepfool", {"overshoot": torch.ones(5)}, ValueError, r"overshoot must be one value or one per sample"),
    ("deepfool", {"num_classes": 1}, ValueError, r"num_classes must be >= 2"),
    ("deepfool", {"num_classes": 2.0}, TypeError, r"num_classes must be an int"),
    ("deepfool", {"num_classes": 5}, ValueError, r"num_classes must be <= the model's 4 classes"),
    ("cw_l2", {"c": 0.0}, ValueError, r"c must be > 0"),
    ("cw_l2", {"c": INF}, ValueError, r"c must be finite"),
    ("cw_l2", {"c": NAN}, ValueError, r"c must be finite"),
    ("cw_l2", {"kappa": -1.0}, ValueError, r"kappa must be >= 0"),
    ("cw_l2", {"kappa": NAN}, ValueError, r"kappa must be finite"),
    ("cw_l2", {"lr": 0.0}, ValueError, r"lr must be > 0"),
    ("cw_l2", {"lr": NAN}, ValueError, r"lr must be finite"),
    ("cw_l2", {"lr": "fast"}, TypeError, r"lr must be a number"),
    ("cw_l2", {"binary_search_steps": 0}, ValueError, r"binary_search_steps must be >= 1"),
    ("cw_l2", {"binary_search_steps": 2.5}, TypeError, r"binary_search_steps must be an int"),
    ("fab", {"model": lambda t: t.flatten(1)[:, :1], "y": torch.zeros(6, dtype=torch.long)}, ValueError,
     r"fab needs a model with at least 2 classes"),
    ("fab", {"eps": 0.0}, ValueError, r"eps must be > 0"),
    ("fab", {"eps": [0.1, 0.1, -0.1, 0.1, 0.1, 0.1]}, ValueError, r"eps must be > 0"),
    ("fab", {"eps": NAN}, ValueError, r"eps must be finite"),
    ("fab", {"eps": torch.ones(5) * 0.1}, ValueError, r"eps must be one value or one per sample"),
    ("fab", {"eps": "0.1"}, TypeError, r"eps must be a number"),
    ("fab", {"target_rank": 1}, ValueError, r"target_rank must be >= 2"),
    ("fab", {"target_rank": 5}, ValueError, r"target_rank must be <= the model's 4 classes"),
    ("fab", {"target_rank": 2.0}, TypeError, r"target_rank must be an int"),
    ("fab", {"target_rank": True}, TypeError, r"target_rank must be an int"),
    ("fab", {"alpha_max": -0.1}, ValueError, r"alpha_max must be in \[0, 1\]"),
    ("fab", {"alpha_max": 1.5}, ValueError, r"alpha_max must be in \[0, 1\]"),
    ("fab", {"alpha_max": NAN}, ValueError, r"alpha_max must be finite"),
    ("fab", {"eta": 0.9}, ValueError, r"eta must be >= 1"),
    ("fab", {"eta": INF}, ValueError, r"eta must be finite"),
    ("fab", {"eta": "1.05"}, TypeError, r"eta must be a number"),
    ("fab", {"beta": 0.0}, ValueError, r"beta must be in \(0, 1\]"),
    ("fab", {"beta": 1.5}, ValueError, r"beta must be in \(0, 1\]"),
    ("fab", {"beta": NAN}, ValueError, r"beta must be finite"),
    ("fmn", {"alpha_init": 0.0}, ValueError, r"alpha_init must be > 0"),
    ("fmn", {"alpha_init": NAN}, ValueError, r"alpha_init must be finite"),
    ("fmn", {"alpha_init": "1"}, TypeError, r"alpha_init must be a number"),
    ("fmn", {"alpha_final": -0.1}, ValueError, r"alpha_final must be in \[0, 10\]"),
    ("fmn", {"alpha_init": 1.0, "alpha_final": 2.0}, ValueError, r"alpha_final must be in \[0, 1\]"),
    ("fmn", {"alpha_final": INF}, ValueError, r"alpha_final must be finite"),
    ("fmn", {"gamma_init": 0.0}, ValueError, r"gamma_init must be in \(0, 1\)"),
    ("fmn", {"gamma_init": 1.0}, ValueError, r"gamma_init must be in \(0, 1\)"),
    ("fmn", {"gamma_init": NAN}, ValueError, r"gamma_init must be finite"),
    ("fmn", {"gamma_final": -0.001}, ValueError, r"gamma_final must be in \[0, 0.05\]"),
    ("fmn", {"gamma_final": 0.1}, ValueError, r"gamma_final must be in \[0, 0.05\]"),
    ("fmn", {"gamma_final": None}, TypeError, r"gamma_final must be a number"),
    ("pgd", {"amp": torch.float32}, ValueError, r"amp must be None, torch.bfloat16 or torch.float16"),
    ("feature_pgd", {"module": "model"}, TypeError, r"module must be an nn.Module"),
    # --- robust_accuracy: nothing computed over zero samples, mismatched or NaN data, bad settings
    ("robust_accuracy", {"y": Lazy(lambda m, x, y: torch.cat([y, y]))}, ValueError, r"y has 12 labels for 6 inputs"),
    ("robust_accuracy", {"data": Lazy(lambda m, x, y: (x[:0], y[:0]))}, ValueError, r"data holds no samples"),
    ("robust_accuracy", {"data": []}, ValueError, r"data holds no samples"),
    ("robust_accuracy", {"data": 5}, TypeError, r"data must be a pair of tensors \(x, y\) or an iterable"),
    ("robust_accuracy", {"data": Lazy(lambda m, x, y: x)}, TypeError, r"data must be a pair of tensors"),
    ("robust_accuracy", {"data": Lazy(lambda m, x, y: [x])}, TypeError, r"data must yield \(x, y\) batches"),
    ("robust_accuracy", {"data": Lazy(lambda m, x, y: [(x, y), (x, "labels")])}, TypeError,
     r"data batch 1: y must be a tensor"),
    ("robust_accuracy", {"data": Lazy(lambda m, x, y: [(x.tolist(), y)])}, TypeError, r"data batch 0: x must be a tensor"),
    ("robust_accuracy", {"data": Lazy(lambda m, x, y: [(x, y[:3])])}, ValueError,
     r"data batch 0: y has 3 labels for 6 inputs"),
    ("robust_accuracy", {"data": Lazy(lambda m, x, y: [(with_value(x, NAN), y)])}, ValueError,
     r"data batch 0: x holds 1 NaN value"),
    ("robust_accuracy", {"batch_size": 0}, ValueError, r"batch_size must be >= 1"),
    ("robust_accuracy", {"batch_size": -1}, ValueError, r"batch_size must be >= 1"),
    ("robust_accuracy", {"batch_size": 2.5}, TypeError, r"batch_size must be an int"),
    ("robust_accuracy", {"max_batches": 0}, ValueError, r"max_batches must be >= 1"),
    ("robust_accuracy", {"max_batches": 1.0}, TypeError, r"max_batches must be an int"),
    ("robust_accuracy", {"eps": [NAN]}, ValueError, r"eps must be finite"),
    ("robust_accuracy", {"eps": [0.0, INF]}, ValueError, r"eps must be finite"),
    ("robust_accuracy", {"eps": [-0.1]}, ValueError, r"eps must be >= 0"),
    ("robust_accuracy", {"eps": []}, ValueError, r"eps must list at least one radius"),
    ("robust_accuracy", {"eps": 0.1}, TypeError, r"eps must be a list of radii"),
    ("robust_accuracy", {"eps": ["0.1"]}, TypeError, r"eps must be a number"),
    ("robust_accuracy", {"eps": torch.zeros(2, 2)}, ValueError, r"eps must list the radii in one dimension"),
    ("robust_accuracy", {"attack": "nope"}, ValueError, r"attack must be one of"),
    ("robust_accuracy", {"attack": 3}, TypeError, r"attack must be a name or a callable"),
    ("robust_accuracy", {"stepz": 3}, TypeError, r"stepz is not an option of attack='pgd'"),
    ("robust_accuracy", {"attack": "fgsm"}, TypeError, r"steps is not an option of attack='fgsm'"),
    ("robust_accuracy", {"progress": "yes"}, TypeError, r"progress must be True or False"),
    ("robust_accuracy", {"device": "bogus"}, ValueError, r"device must name a device"),
    ("robust_accuracy", {"device": 3.5}, TypeError, r"device must be a torch.device or a device name"),
    pytest.param("robust_accuracy", {"device": "cuda"}, ValueError, r"device is 'cuda' but torch sees no CUDA device",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is available")),
    # (labels the model gets right: the attack only runs on correctly classified samples)
    ("robust_accuracy", {"attack": lambda m, x, y, eps: x[:, :1], "y": Lazy(lambda m, x, y: m.eval()(x).argmax(1))},
     ValueError, r"attack must return an adversarial batch shaped like its input"),
    ("robust_accuracy", {"attack": lambda m, x, y, eps: x.tolist(), "y": Lazy(lambda m, x, y: m.eval()(x).argmax(1))},
     TypeError, r"attack must return the adversarial batch \(a tensor\)"),
]


@pytest.mark.parametrize("entry,arguments,error,match", ROWS)
def test_bad_input_is_refused_with_a_message_naming_it(cnn, entry, arguments, error, match):
    x = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 4, (6,), generator=torch.Generator().manual_seed(1))
    with pytest.raises(error, match=match):
        call(entry, cnn, x, y, arguments)


def test_every_entry_point_has_rows():
    covered = {row.values[0] if hasattr(row, "values") else row[0] for row in ROWS}
    assert covered == set(ENTRIES)


def test_a_report_over_zero_samples_cannot_exist():
    with pytest.raises(ValueError, match="holds no samples"):
        RobustnessReport(eps=[0.1], num_samples=0, clean_correct=0, robust_correct=[0], clean_confidence=0.0,
                         adversarial_confidence=[0.0])
    with pytest.raises(ValueError, match="one value per eps"):
        RobustnessReport(eps=[0.1, 0.2], num_samples=1, clean_correct=1, robust_correct=[1], clean_confidence=1.0,
                         adversarial_confidence=[1.0])
    with pytest.raises(ValueError, match=r"robust_correct\[0\] must be <= 1"):
        RobustnessReport(eps=[0.1], num_samples=2, clean_correct=1, robust_correct=[2], clean_confidence=1.0,
                         adversarial_confidence=[1.0])


def test_nan_logits_after_a_successful_looking_step_are_still_refused(cnn):
    """A model that returns NaN from some point on would look "fooled" (argmax of NaN is no class):
    early stop must not freeze such a sample as a success either."""
    x = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = cnn.eval()(x).argmax(1)  # every sample starts correctly classified, so every one is attacked
    for name in ("pgd", "apgd", "bim", "mifgsm", "difgsm"):
        model = BadLogits(cnn, NAN, after=2)
        with pytest.raises(ValueError, match="the model's output holds NaN"):
            call(name, model, x, y, {"early_stop": True, "return_result": True})
        assert model.calls > 2


def test_deepfool_and_cw_never_report_success_at_a_non_finite_distance(cnn):
    """On unbounded inputs a near-flat margin could ask DeepFool for an infinite step: the sample stays
    where it is (reported unsuccessful) instead of succeeding at distance inf or NaN."""
    from nonrobust_ext.attacks import cw_l2, deepfool

    class Flat(torch.nn.Module):
        def forward(self, t):  # class 1's margin over class 0 has a gradient of 1e-300
            s = t.flatten(1).sum(1, keepdim=True) * 1e-300
            return torch.cat([torch.ones_like(s), s, -torch.ones_like(s)], dim=1)

    x = torch.rand(4, 3, 8, 8, dtype=torch.float64)
    y = torch.zeros(4, dtype=torch.long)
    res = deepfool(Flat(), x, y, bounds=None, steps=3, return_result=True)
    assert bool(torch.isfinite(res.l2).all()) and bool(torch.isfinite(res.x_adv).all())
    assert not bool(res.success.any())
    res = cw_l2(Flat(), x.float(), y, steps=5, return_result=True)
    assert bool(torch.isfinite(res.l2).all()) and not bool(res.success.any())
