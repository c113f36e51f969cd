"""The attack contract, written once and run on every attack of the registry (and on feature_pgd where
a property applies): what a user may rely on whichever attack they call.

- the result lies in the threat model: inside the eps-ball (fixed-radius attacks) and the bounds,
  per-channel bounds included; eps = 0 returns x;
- parameter .grad is never touched, x is never modified, the model runs in eval mode and every
  submodule's mode is restored (a frozen eval-mode BatchNorm inside a training model included);
- the input's layout is preserved (channels_last, non-contiguous views) and does not change the result;
- models returning tuples/dicts work through ``logits=``;
- a sample attacked alone equals the same sample inside a batch (same start);
- a scalar eps, a per-sample tensor and a list agree; a seed makes the attack reproducible;
- normalisation inside the model or outside it (per-channel bounds and scale) gives the same attack;
- ``return_result=True`` describes the returned batch (success and loss at x_adv);
- early stop (every iterative attack of the evaluation registry) gives at least the success of the
  full attack for no more work, and keeps each sample where it was first fooled.

Bad input is in test_bad_input_attacks.py; what is particular to one attack (parity with
torchattacks, closed-form answers, success on a trained model, APGD's schedule, ...) in its own file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from _helpers import SmallCNN
from _helpers import ball_norm as _ball_norm
from _helpers import random_batch as _batch

import nonrobust_ext
from nonrobust_ext.attacks import feature_pgd, targeted_dlr_loss
from nonrobust_ext.attacks._common import margin
from nonrobust_ext.attacks.registry import ATTACKS, MINIMAL_NORM, SPECS, AttackSpec
from nonrobust_ext.attacks.threat import ThreatModel


@dataclass(frozen=True)
class Case:
    """One attack in one norm, called with its registry's smoke settings."""

    name: str
    norm: str

    @property
    def spec(self) -> AttackSpec | None:
        return SPECS.get(self.name)

    @property
    def fixed_radius(self) -> bool:
        return self.spec is None or self.spec.kind == "fixed_radius"

    def takes(self, option: str) -> bool:
        if self.spec is None:  # feature_pgd
            return option in {"eps", "steps", "alpha", "norm", "random_start", "bounds", "scale", "seed",
                              "generator", "amp"}
        return self.spec.takes(option)

    @property
    def randomized(self) -> bool:
        return self.takes("seed")

    def __call__(self, model: Any, x: torch.Tensor, y: torch.Tensor, **overrides: Any) -> Any:
        kwargs: dict[str, Any] = {}
        if self.spec is not None:
            kwargs.update(self.spec.smoke)
        else:
            kwargs.update(steps=3)
        if self.takes("norm"):
            kwargs["norm"] = self.norm
        if self.randomized and "generator" not in overrides:
            kwargs["seed"] = 0
        kwargs.update(overrides)
        if "seed" in kwargs and kwargs["seed"] is None:
            del kwargs["seed"]
        if self.spec is None:
            kwargs.pop("return_result", None)
            kwargs.pop("logits", None)
            return feature_pgd(model.features, x, **kwargs)
        return self.spec.fn(model, x, y, **kwargs)

    def __str__(self) -> str:
        return self.name if self.spec is not None and len(self.spec.norms) == 1 else f"{self.name}-{self.norm}"


FIXED = [Case(name, norm) for name, spec in SPECS.items() if spec.kind == "fixed_radius" for norm in spec.norms]
MINIMAL = [Case(name, norm) for name in MINIMAL_NORM for norm in SPECS[name].norms]
FEATURE = [Case("feature_pgd", "linf"), Case("feature_pgd", "l2")]
LABELLED = FIXED + MINIMAL
EVERY = LABELLED + FEATURE
EARLY_STOP = [c for c in FIXED if c.spec is not None and c.spec.early_stop]
# Score-based attacks: they minimise the margin z_y - max_{k != y} z_k without gradients (their result's
# loss is max_{k != y} z_k - z_y), return samples misclassified at the start as they are, and draw each
# sample's search windows in batch order (a sample alone draws other windows than inside a batch).
SCORE_BASED = {"square"}


def cases(group: list[Case]) -> Any:
    return pytest.mark.parametrize("case", group, ids=str)




def _predicted(model, x, flip=0):
    """The model's own predictions (every sample starts correctly classified), the first ``flip``
    changed (those start misclassified): the minimal-norm attacks only move correct samples."""
    with torch.no_grad():
        y = model.eval()(x).argmax(1)
    y[:flip] = (y[:flip] + 1) % 4
    return y


def _adversarial(case: Case, result: Any) -> torch.Tensor:
    return result.x_adv if hasattr(result, "x_adv") else result


def _distance(result: Any) -> torch.Tensor:
    """The distance a minimal-norm result reports in its case's norm: ``l2`` (DeepFool, C&W), or
    ``radius`` (FAB, FMN, in its ``norm``; ``inf`` where it returns x because nothing fooled the model)."""
    return result.l2 if hasattr(result, "l2") else result.radius


def _check_distance(case: Case, result: Any, x: torch.Tensor, atol: float) -> None:
    """The reported distance is the measured one wherever it is finite."""
    reported = _distance(result)
    finite = torch.isfinite(reported)
    measured = _ball_norm(result.x_adv - x, case.norm).to(reported.dtype)
    torch.testing.assert_close(reported[finite], measured[finite], atol=atol, rtol=0)


def _eps_for(case: Case, size: float = 0.05) -> dict[str, Any]:
    """``eps`` for a fixed-radius attack (an L2 ball of the same pixel budget for L2), nothing for the
    minimal-norm ones."""
    if not case.fixed_radius:
        return {}
    return {"eps": size if case.norm == "linf" else size * 8}


# ------------------------------------------------------------------------------ the threat model


@cases(FIXED + FEATURE)
def test_result_is_inside_the_ball_and_the_bounds(cnn, case):
    x, y = _batch()
    if case.name in SCORE_BASED:
        y = _predicted(cnn, x)  # every sample starts correct, so every one is searched
    eps = torch.tensor([0.0, 0.01, 0.03, 0.1, 0.3, 1.0])
    x_adv = case(cnn, x, y, eps=eps)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert bool((x_adv >= 0).all() and (x_adv <= 1).all())
    assert bool((_ball_norm(x_adv - x, case.norm) <= eps.double() * (1 + 1e-6) + 1e-7).all())
    assert torch.equal(x_adv[0], x[0])  # eps = 0 gives x
    assert bool((x_adv[1:] != x[1:]).flatten(1).any(1).all()), "eps > 0 must move every sample"


@cases(MINIMAL)
def test_minimal_norm_result_is_inside_the_bounds_and_moves_correct_samples(cnn, case):
    cnn = cnn.double()
    x, _ = _batch(n=8, dtype=torch.float64)
    y = _predicted(cnn, x)
    x_adv = case(cnn, x, y)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert bool((x_adv >= 0).all() and (x_adv <= 1).all())
    assert not torch.equal(x_adv, x), "the attack should move correctly classified samples"


@cases(EVERY)
def test_per_channel_bounds_are_respected(cnn, case):
    cnn = cnn.double()
    lo = torch.tensor([-2.0, -0.1, 0.4], dtype=torch.float64)
    hi = torch.tensor([2.5, 0.1, 0.6], dtype=torch.float64)
    x, _ = _batch(n=8, dtype=torch.float64)
    x = lo.view(1, 3, 1, 1) + (hi - lo).view(1, 3, 1, 1) * x
    y = _predicted(cnn, x)
    x_adv = case(cnn, x, y, bounds=(lo, hi), **_eps_for(case, 0.3))
    assert bool((x_adv >= lo.view(1, 3, 1, 1)).all() and (x_adv <= hi.view(1, 3, 1, 1)).all())
    assert not torch.equal(x_adv, x)


@cases(FIXED + FEATURE)
def test_eps_zero_returns_x(cnn, case):
    x, y = _batch()
    assert torch.equal(case(cnn, x, y, eps=0.0), x)


@cases(FIXED + FEATURE)
def test_scalar_list_and_per_sample_eps_agree(cnn, case):
    x, y = _batch()
    eps = 0.03 if case.norm == "linf" else 0.3
    a = case(cnn, x, y, eps=eps)
    b = case(cnn, x, y, eps=torch.full((6,), eps))
    c = case(cnn, x, y, eps=[eps] * 6)
    assert torch.equal(a, b) and torch.equal(a, c)
    varied = [0.01, 0.02, 0.03, 0.04, 0.05, 0.06]
    assert torch.equal(case(cnn, x, y, eps=varied), case(cnn, x, y, eps=torch.tensor(varied)))


class Normalize(torch.nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


# Not DI-FGSM: its transformation zero-pads, and zero in normalised units is the mean in pixel units.
@cases([c for c in LABELLED if c.name != "difgsm"])
def test_normalisation_inside_or_outside_the_model_agree(cnn, case):
    """Per-channel bounds and scale let users attack normalised inputs with eps (and minimal
    distances) in pixel units: the same attack, mapped through the normalisation. (The minimal-norm
    attacks divide by small gradient norms, Adam by root mean squares: rounding grows to 1e-8.)"""
    cnn = cnn.double()
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
    inside = torch.nn.Sequential(Normalize(mean, std), cnn).double()
    m = torch.tensor(mean, dtype=torch.float64).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float64).view(1, 3, 1, 1)
    x, _ = _batch(dtype=torch.float64)
    x = x.clamp(0.05, 0.95)
    y = _predicted(inside, x) if not case.fixed_radius else _batch()[1]
    options: dict[str, Any] = {"eps": 0.05} if case.fixed_radius else {}
    normalised_options: dict[str, Any] = {}
    if case.takes("x_init"):
        g = torch.Generator().manual_seed(0)
        start = (x + 0.02 * torch.randn(x.shape, generator=g, dtype=x.dtype)).clamp(0, 1)
        options["x_init"] = start
        normalised_options["x_init"] = (start - m) / s
    pixel = case(inside, x, y, **options)
    normalised = case(cnn, (x - m) / s, y, **{**options, **normalised_options},
                      bounds=(-m.flatten() / s.flatten(), (1 - m.flatten()) / s.flatten()), scale=1 / s.flatten())
    atol = 1e-9 if case.fixed_radius else 1e-7
    torch.testing.assert_close(normalised * s + m, pixel, atol=atol, rtol=0)
    if not case.fixed_radius:  # the reported distance is in pixel units too
        a = case(inside, x, y, return_result=True)
        b = case(cnn, (x - m) / s, y, return_result=True, bounds=(-m.flatten() / s.flatten(),
                 (1 - m.flatten()) / s.flatten()), scale=1 / s.flatten())
        torch.testing.assert_close(_distance(b), _distance(a), atol=atol, rtol=0)
        _check_distance(case, a, x, atol=1e-12)


@pytest.mark.parametrize("dtype,compute", [(torch.float32, torch.float32), (torch.float64, torch.float64),
                                           (torch.bfloat16, torch.float32)])
def test_the_threat_model_holds_what_the_ops_take(dtype, compute):
    x = torch.rand(4, 3, 5, 5).to(dtype)
    threat = ThreatModel.resolve(x, eps=[0.1, 0.2, 0.3, 0.4], norm="l2", bounds=(0.0, [1.0, 2.0, 3.0]), scale=0.5,
                                 default_alpha=lambda e: e / 4)
    assert threat.eps.shape == threat.alpha.shape == (4,) and threat.lo.shape == threat.scale.shape == (3,)
    assert {t.dtype for t in (threat.eps, threat.alpha, threat.lo, threat.hi, threat.scale)} == {compute}
    torch.testing.assert_close(threat.alpha, threat.eps / 4)
    assert threat.hi.tolist() == [1.0, 2.0, 3.0] and threat.step_op is nonrobust_ext.ops.l2_step_
    sub = threat.rows(torch.tensor([3, 1]))
    assert sub.eps.tolist() == pytest.approx([0.4, 0.2]) and torch.equal(sub.lo, threat.lo)
    assert ThreatModel.resolve(x, eps=0.1, alpha=0.5).alpha.tolist() == [0.5] * 4
    assert ThreatModel.resolve(x, eps=0.1).alpha is None
    space = ThreatModel.input_space(x, scale=[1.0, 2.0, 4.0])
    assert space.eps is None and space.norm == "l2"
    delta = torch.zeros_like(x, dtype=torch.float64)
    delta[:, 2] = 4.0  # 4 input units in channel 2 are 1 threat-model unit, per pixel
    assert space.distance(x.double() + delta, x.double()).tolist() == pytest.approx([5.0] * 4)
    with pytest.raises(RuntimeError, match="no radius"):
        space.project_(x.clone(), x)


# --------------------------------------------------------------------- what the attack leaves alone


@cases(EVERY)
def test_parameter_grads_untouched_input_untouched_modes_restored(cnn, case):
    x, y = _batch()
    x_before = x.clone()
    cnn.train()
    cnn.features[1].eval()  # a frozen BatchNorm inside a training model must stay frozen
    for p in cnn.parameters():
        p.grad = None
    cnn.head.weight.grad = torch.full_like(cnn.head.weight, 7.0)
    cnn.modes_seen.clear()
    seen_by_features: list[bool] = []
    cnn.features.register_forward_pre_hook(lambda module, args: seen_by_features.append(module.training))
    options: dict[str, Any] = {**_eps_for(case), "return_result": True}
    if case.takes("restarts"):
        options["restarts"] = 2
    case(cnn, x, y, **options)
    # A fixed-radius attack runs the model at least once per step; a minimal-norm one stops when fooled.
    steps = dict(case.spec.smoke if case.spec else {"steps": 3}).get("steps", 1) if case.fixed_radius else 1
    assert len(seen_by_features) >= steps and not any(seen_by_features), "the attack must run the model in eval mode"
    if case.spec is not None:
        assert len(cnn.modes_seen) >= steps and not any(cnn.modes_seen)
    assert cnn.training and not cnn.features[1].training and cnn.head.training and cnn.features.training
    assert torch.equal(cnn.head.weight.grad, torch.full_like(cnn.head.weight, 7.0))
    assert all(p.grad is None for name, p in cnn.named_parameters() if name != "head.weight")
    assert torch.equal(x, x_before)


@cases(EVERY)
def test_layouts_are_preserved_and_do_not_change_the_result(cnn, case):
    """channels_last stays channels_last, a transposed (dense, non-contiguous) view keeps its strides,
    a strided view of a larger batch works; each gives the contiguous input's result."""
    dtype = torch.float32 if case.fixed_radius else torch.float64
    cnn = cnn.to(dtype)
    big, _ = _batch(n=12, dtype=dtype)
    x = big[::2].contiguous()
    y = _predicted(cnn, x) if not case.fixed_radius else _batch()[1]
    want = case(cnn, x, y, **_eps_for(case))
    atol = 1e-6 if dtype == torch.float32 else 1e-10

    channels_last = case(cnn, x.contiguous(memory_format=torch.channels_last), y, **_eps_for(case))
    assert channels_last.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(channels_last, want, atol=atol, rtol=0)

    transposed = x.transpose(2, 3).contiguous().transpose(2, 3)  # same values, other strides
    assert not transposed.is_contiguous()
    got = case(cnn, transposed, y, **_eps_for(case))
    assert got.stride() == transposed.stride()
    torch.testing.assert_close(got, want, atol=atol, rtol=0)

    strided = big[::2]  # every other sample of a larger batch: not dense
    assert not strided.is_contiguous()
    torch.testing.assert_close(case(cnn, strided, y, **_eps_for(case)), want, atol=atol, rtol=0)


@cases(LABELLED)
@pytest.mark.parametrize("output,selector", [("tuple", 1), ("tuple", -1), ("dict", "logits"),
                                             ("dict", lambda o: o["logits"])])
def test_models_returning_tuples_and_dicts(case, output, selector):
    dtype = torch.float32 if case.fixed_radius else torch.float64
    torch.manual_seed(0)
    plain = SmallCNN().to(dtype)
    wrapped = SmallCNN(output=output).to(dtype)
    wrapped.load_state_dict(plain.state_dict())
    x, y = _batch(dtype=dtype)
    if not case.fixed_radius:
        y = _predicted(plain, x)
    want = case(plain, x, y, **_eps_for(case))
    assert torch.equal(case(wrapped, x, y, logits=selector, **_eps_for(case)), want)
    with pytest.raises(TypeError, match="logits="):
        case(wrapped, x, y, **_eps_for(case))


# ------------------------------------------------------------------------------------ consistency


@cases([c for c in LABELLED if c.name not in SCORE_BASED])
def test_batch_consistency(cnn, case):
    """A sample attacked alone equals the same sample attacked inside the batch (same start)."""
    cnn = cnn.double()
    x, y = _batch(dtype=torch.float64)
    if not case.fixed_radius:
        y = _predicted(cnn, x, flip=1)
    options: dict[str, Any] = dict(_eps_for(case))
    start = None
    if case.takes("x_init"):
        g = torch.Generator().manual_seed(0)
        start = (x + 0.02 * torch.randn(x.shape, generator=g, dtype=x.dtype)).clamp(0, 1)
    elif case.takes("random_start"):
        options["random_start"] = False  # a random start differs with the sample's index in the batch
    elif case.takes("restarts") and case.randomized:
        options["restarts"] = 1  # so does a random restart (FAB's restarts start at random points)
    full = case(cnn, x, y, **options, **({"x_init": start} if start is not None else {}))
    for i in (0, 2, 3, 5):
        alone = case(cnn, x[i : i + 1], y[i : i + 1], **options,
                     **({"x_init": start[i : i + 1]} if start is not None else {}))
        torch.testing.assert_close(alone[0], full[i], atol=1e-10, rtol=0)


@cases([c for c in EVERY if c.randomized])
def test_deterministic_under_a_seed(cnn, case):
    x, y = _batch()
    options = _eps_for(case)
    a = case(cnn, x, y, seed=5, **options)
    b = case(cnn, x, y, seed=5, **options)
    c = case(cnn, x, y, generator=torch.Generator().manual_seed(5), **options)
    e = case(cnn, x, y, seed=6, **options)
    torch.manual_seed(9)
    f = case(cnn, x, y, seed=None, **options)
    torch.manual_seed(9)
    g = case(cnn, x, y, seed=None, **options)
    assert torch.equal(a, b) and torch.equal(a, c) and torch.equal(f, g)
    # A minimal-norm attack's randomness (FAB's restarts: the first run starts at x) reaches its result
    # only where a random restart beats the first run, which it does not on this near-linear model;
    # test_attacks_fab.py shows a seed changing FAB's result where restarts matter.
    if case.fixed_radius:
        assert not torch.equal(a, e)


@cases([c for c in EVERY if not c.randomized])
def test_deterministic_attacks_repeat_exactly(cnn, case):
    x, y = _batch()
    if not case.fixed_radius:
        y = _predicted(cnn, x)
    assert torch.equal(case(cnn, x, y, **_eps_for(case)), case(cnn, x, y, **_eps_for(case)))


# ------------------------------------------------------------------------------------------ results


@cases(LABELLED)
def test_result_describes_the_returned_batch(cnn, case):
    """success is the model's verdict on x_adv; loss is the attack's loss there (cross-entropy for the
    fixed-radius attacks by default, the margin max_{j != y} z_j - z_y for the minimal-norm ones)."""
    x, y = _batch(n=16)
    steps = 4
    options: dict[str, Any] = {**_eps_for(case, 0.3), "return_result": True}
    if case.takes("steps"):
        options["steps"] = steps
    res = case(cnn, x, y, **options)
    assert isinstance(res, nonrobust_ext.AttackResult)
    assert torch.equal(res.x_adv, case(cnn, x, y, **{**options, "return_result": False}))
    with torch.no_grad():
        logits = cnn.eval()(res.x_adv)
    assert torch.equal(logits.argmax(1) != y, res.success) and bool(res.success.any())
    score_based = case.name in SCORE_BASED
    if case.name == "apgd_targeted":  # its loss is the targeted DLR towards the kept run's target
        want = targeted_dlr_loss(logits, torch.stack([y, res.target], dim=1))
    elif case.fixed_radius and not score_based:
        want = F.cross_entropy(logits, y, reduction="none")
    else:
        want = -margin(logits, y)
    torch.testing.assert_close(res.loss, want.to(res.loss.dtype), atol=1e-5, rtol=0)
    assert res.steps.shape == res.restart.shape == (16,) and res.steps.dtype == torch.long
    if score_based:  # it stops querying a sample once fooled: steps are the proposals until then
        assert bool((res.steps < case.spec.smoke["queries"]).all()) and bool((res.restart == 0).all())
    elif case.fixed_radius:
        assert bool((res.steps == (steps if case.takes("steps") else 1)).all()) and bool((res.restart == 0).all())
    else:
        assert bool((res.steps <= steps).all())
        _check_distance(case, res, x, atol=1e-5)


def test_the_registry_lists_the_public_attacks():
    assert set(ATTACKS) == {"pgd", "apgd", "apgd_targeted", "fgsm", "bim", "mifgsm", "difgsm", "square"}
    assert set(MINIMAL_NORM) == {"deepfool", "cw_l2", "fab", "fmn"}
    for name, spec in SPECS.items():
        assert getattr(nonrobust_ext.attacks, name) is spec.fn
        assert getattr(nonrobust_ext, name) is spec.fn
    # Every iterative attack of the evaluation registry takes early_stop; FGSM has one step.
    assert {n for n, s in SPECS.items() if s.early_stop} == {"pgd", "apgd", "apgd_targeted", "bim", "mifgsm", "difgsm"}
    # Every attack takes the threat model's scale, the model's logits selector, amp and return_result.
    for spec in SPECS.values():
        assert {"scale", "bounds", "logits", "amp", "return_result"} <= spec.options, spec.name


# -------------------------------------------------------------------------------------- early stop


class WorkRecorder(torch.nn.Module):
    """Counts the samples the model sees, with and without a gradient."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.with_grad = 0
        self.without_grad = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            self.with_grad += x.shape[0]
        else:
            self.without_grad += x.shape[0]
        return self.model(x)


# The trained model flattens its feature map: mild input diversity keeps DI-FGSM effective on it.
# Targeted APGD fools every sample at the common L2 radius: a smaller one keeps some robust.
ON_TRAINED = {"difgsm": {"resize_rate": 0.9, "diversity_prob": 0.5}, "apgd_targeted": {"l2_eps_factor": 0.75}}


@cases(EARLY_STOP)
def test_early_stop_keeps_the_success_for_less_work(trained, case):
    model, x, y = trained
    x, y = x[:128], y[:128]
    settings = dict(ON_TRAINED.get(case.name, {}))
    eps = 0.12 if case.norm == "linf" else 1.0 * settings.pop("l2_eps_factor", 1.0)
    settings.pop("l2_eps_factor", None)
    steps = 8
    options: dict[str, Any] = dict(eps=eps, steps=steps, return_result=True, **settings)
    if case.takes("alpha"):
        options["alpha"] = eps / 4
    full_work, early_work = WorkRecorder(model), WorkRecorder(model)
    full = case(full_work, x, y, **options)
    early = case(early_work, x, y, early_stop=True, **options)
    assert 0 < int(early.success.sum()) < len(y), "the case should mix fooled and robust samples"
    assert bool((early.success >= full.success).all()), "a sample the full attack fools, early stop fools"
    assert bool((full.steps == steps).all()) and bool((early.steps <= steps).all())
    assert int(early.steps.sum()) < int(full.steps.sum())
    # Never more gradient passes; never more forward passes either, except DI-FGSM's check of the
    # untransformed input at a transformed step (a forward pass without a gradient).
    assert early_work.with_grad < full_work.with_grad
    if case.name != "difgsm":
        assert early_work.with_grad + early_work.without_grad <= full_work.with_grad + full_work.without_grad
    with torch.no_grad():
        fooled = model(early.x_adv).argmax(1) != y
    assert torch.equal(fooled, early.success), "each kept point is where the sample was fooled"
    if case.name in ("apgd", "apgd_targeted"):
        # APGD returns any fooling iterate without early stop too: the same samples fall either way.
        assert torch.equal(early.success, full.success)
        return
    # A sample stopped after k steps sits where the attack truncated to k steps had it.
    for k in sorted(set(early.steps[early.success].tolist())):
        rows = early.success & (early.steps == k)
        truncated = case(model, x, y, **{**options, "steps": max(k, 1), "return_result": False},
                         early_stop=k == 0)
        torch.testing.assert_close(early.x_adv[rows], truncated[rows], atol=1e-6, rtol=0)
