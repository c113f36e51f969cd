"""Bad input to the compiled ops, table-driven: every op refuses every bad case with the documented
exception type (TypeError for a wrong type or dtype, ValueError for anything else) and a message naming
the argument, and its pure-PyTorch twin (nonrobust_ext.reference) refuses the same case with the same
type. Also: a NaN in a data tensor propagates into the output identically in kernel and twin (never
dropped), and what must keep working (disjoint views of one buffer, infinite bounds) does.

The tables: STEP_CASES (tensors given to the attack-step ops), STEP_PYTHON_CASES (Python numbers given
to the wrappers), STATS_CASES (the feature-statistics ops). CUDA rows are shown as skipped without a GPU.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable

import pytest
import torch
from _helpers import CUDA, run_under_isa

from nonrobust_ext import ops, reference

T = torch.ops.nonrobust_ext
STEP_OPS = ("linf_step_", "l2_step_", "random_init_")
B, C, H, W = 3, 2, 4, 4
SHAPE = (B, C, H, W)
NUMEL = B * C * H * W


def good_step_args(device: str = "cpu", dtype: torch.dtype = torch.float32) -> dict:
    """Valid arguments of every step op (random_init_ ignores grad and alpha)."""
    g = torch.Generator().manual_seed(0)
    x = 0.2 + 0.6 * torch.rand(SHAPE, generator=g)
    return dict(
        x_adv=(x + 0.01 * torch.randn(SHAPE, generator=g)).to(device, dtype),
        grad=torch.randn(SHAPE, generator=g).to(device, dtype),
        x=x.to(device, dtype),
        eps=torch.full((B,), 0.1, device=device),
        alpha=torch.full((B,), 0.02, device=device),
        scale=torch.tensor([1.0, 2.0], device=device),
        lo=torch.tensor([0.0, 0.1], device=device),
        hi=torch.tensor([1.0, 0.9], device=device),
        active=None,
        norm="linf",
    )


def call_raw(op: str, a: dict) -> None:
    """The compiled op itself, positional as in its schema."""
    if op == "random_init_":
        T.random_init_(a["x_adv"], a["x"], a["eps"], a["scale"], a["lo"], a["hi"], a["active"], 7, a["norm"])
    else:
        getattr(T, op)(a["x_adv"], a["grad"], a["x"], a["eps"], a["alpha"], a["scale"], a["lo"], a["hi"], a["active"])


def call_api(module, op: str, a: dict) -> None:
    """ops.<op> (the wrapper) or reference.<op> (the twin): the same keyword API."""
    kw = {k: a[k] for k in ("eps", "scale", "lo", "hi", "active")}
    if op == "random_init_":
        module.random_init_(a["x_adv"], a["x"], norm=a["norm"], seed=7, **kw)
    else:
        getattr(module, op)(a["x_adv"], a["grad"], a["x"], alpha=a["alpha"], **kw)


def assert_names(error: BaseException, *names: str) -> None:
    text = str(error)
    for name in names:
        assert re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", text), f"{name!r} not named in: {text}"


# --------------------------------------------------------------------------------------- mutations


def _with(fn: Callable[[dict], dict]) -> Callable[[dict], dict]:
    return lambda a: {**a, **fn(a)}


def _views_of_one_buffer(offset: int) -> Callable[[dict], dict]:
    """x and x_adv as two dense views of one buffer, x_adv starting `offset` elements after x."""
    def make(a):
        buf = torch.rand(2 * NUMEL + abs(offset), dtype=a["x"].dtype)
        x = buf[:NUMEL].view(SHAPE)
        x.copy_(a["x"])
        x_adv = buf[offset:offset + NUMEL].view(SHAPE)
        return {**a, "x": x, "x_adv": x_adv}
    return make


def _grad_overlapping_x_adv(a):
    buf = torch.randn(NUMEL + NUMEL // 2)
    return {**a, "x_adv": buf[NUMEL // 2:].view(SHAPE), "grad": buf[:NUMEL].view(SHAPE)}


def _eps_inside_x_adv(a):
    buf = torch.rand(NUMEL)
    buf[-B:] = 0.1
    return {**a, "x_adv": buf.view(SHAPE), "eps": buf[-B:]}


def _interleaved(a):
    wide = torch.rand(B, C, H, 2 * W)
    wide[..., 1::2] = a["x"]
    return {**a, "x_adv": wide[..., ::2], "x": wide[..., 1::2]}


def _meta(name):
    return _with(lambda a: {name: a[name].to("meta")})


def _cuda(name):
    return _with(lambda a: {name: a[name].to("cuda")})


def _bad_value(name, index, value):
    def make(a):
        t = a[name].clone()
        t[index] = value
        return {**a, name: t}
    return make


# ------------------------------------------------------------------------------ step ops: tensors


@dataclasses.dataclass(frozen=True)
class StepCase:
    id: str
    mutate: Callable[[dict], dict]
    error: type[Exception]
    arg: str  # the argument the message must name
    ops: tuple[str, ...] = STEP_OPS
    twin: bool = True  # the twin takes this call too (False: a wrapper-level conversion makes it valid)
    fake: bool = False  # the fake kernel (torch.compile, FakeTensorMode) can see it from shapes and dtypes
    cuda: bool = False


NOT_RANDOM = ("linf_step_", "l2_step_")

STEP_CASES = [
    # memory
    StepCase("x_adv partly overlaps x", _views_of_one_buffer(NUMEL // 2), ValueError, "x"),
    StepCase("x_adv overlaps x by one element", _views_of_one_buffer(NUMEL - 1), ValueError, "x"),
    StepCase("x_adv is x", _with(lambda a: {"x_adv": a["x"]}), ValueError, "x"),
    StepCase("x_adv is grad", _with(lambda a: {"x_adv": a["grad"]}), ValueError, "grad", NOT_RANDOM),
    StepCase("x_adv partly overlaps grad", _grad_overlapping_x_adv, ValueError, "grad", NOT_RANDOM),
    StepCase("eps is a view into x_adv", _eps_inside_x_adv, ValueError, "eps"),
    StepCase("interleaved views of one buffer (refused: the memory ranges intersect)", _interleaved, ValueError, "x"),
    StepCase("x_adv expanded over the batch", _with(lambda a: {"x_adv": torch.rand(1, C, H, W).expand(SHAPE)}),
             ValueError, "x_adv"),
    StepCase("x_adv expanded over channels", _with(lambda a: {"x_adv": torch.rand(B, 1, H, W).expand(SHAPE)}),
             ValueError, "x_adv"),
    StepCase("x_adv self-overlapping strides",
             _with(lambda a: {"x_adv": torch.rand(64).as_strided(SHAPE, (16, 8, 4, 1))}), ValueError, "x_adv"),
    # parameter values (CPU tensors: the CPU kernel checks them)
    StepCase("eps NaN", _bad_value("eps", 1, math.nan), ValueError, "eps"),
    StepCase("eps +inf", _bad_value("eps", 0, math.inf), ValueError, "eps"),
    StepCase("eps negative", _bad_value("eps", 2, -0.1), ValueError, "eps"),
    StepCase("alpha NaN", _bad_value("alpha", 1, math.nan), ValueError, "alpha", NOT_RANDOM),
    StepCase("alpha -inf", _bad_value("alpha", 0, -math.inf), ValueError, "alpha", NOT_RANDOM),
    StepCase("alpha negative", _bad_value("alpha", 0, -0.01), ValueError, "alpha", NOT_RANDOM),
    StepCase("scale 0", _bad_value("scale", 1, 0.0), ValueError, "scale"),
    StepCase("scale negative", _bad_value("scale", 0, -1.0), ValueError, "scale"),
    StepCase("scale NaN", _bad_value("scale", 0, math.nan), ValueError, "scale"),
    StepCase("scale inf", _bad_value("scale", 1, math.inf), ValueError, "scale"),
    StepCase("lo NaN", _bad_value("lo", 0, math.nan), ValueError, "lo"),
    StepCase("hi NaN", _bad_value("hi", 1, math.nan), ValueError, "hi"),
    StepCase("lo > hi", _bad_value("lo", 1, 0.95), ValueError, "lo"),
    StepCase("one lo above every hi", _with(lambda a: {"lo": torch.tensor([2.0])}), ValueError, "lo"),
    # dtypes
    StepCase("x_adv int64", _with(lambda a: {k: a[k].long() for k in ("x_adv", "grad", "x")}), TypeError, "x_adv",
             fake=True),
    StepCase("float16 on CPU", _with(lambda a: {k: a[k].half() for k in ("x_adv", "grad", "x")}), TypeError,
             "x_adv", fake=True),
    StepCase("x float64, x_adv float32", _with(lambda a: {"x": a["x"].double()}), TypeError, "x", fake=True),
    StepCase("grad float64, x_adv float32", _with(lambda a: {"grad": a["grad"].double()}), TypeError, "grad",
             NOT_RANDOM, fake=True),
    StepCase("eps a bool tensor", _with(lambda a: {"eps": torch.ones(B, dtype=torch.bool)}), TypeError, "eps",
             fake=True),
    StepCase("scale a bool tensor", _with(lambda a: {"scale": torch.ones(C, dtype=torch.bool)}), TypeError,
             "scale", fake=True),
    StepCase("active float", _with(lambda a: {"active": torch.ones(B)}), TypeError, "active", fake=True),
    # shapes
    StepCase("x_adv without a channel dim", _with(lambda a: {k: a[k][:, 0, 0, 0] for k in ("x_adv", "grad", "x")}),
             ValueError, "x_adv", fake=True),
    StepCase("grad of another shape", _with(lambda a: {"grad": a["grad"][:, :1]}), ValueError, "grad", NOT_RANDOM,
             fake=True),
    StepCase("x of another batch size", _with(lambda a: {"x": torch.rand(B + 1, C, H, W)}), ValueError, "x",
             fake=True),
    StepCase("eps with B + 1 values", _with(lambda a: {"eps": torch.full((B + 1,), 0.1)}), ValueError, "eps",
             fake=True),
    StepCase("eps empty", _with(lambda a: {"eps": torch.zeros(0)}), ValueError, "eps", fake=True),
    StepCase("alpha with 2 values", _with(lambda a: {"alpha": torch.full((2,), 0.1)}), ValueError, "alpha",
             NOT_RANDOM, fake=True),
    StepCase("scale per sample", _with(lambda a: {"scale": torch.ones(B)}), ValueError, "scale", fake=True),
    StepCase("lo with 5 values", _with(lambda a: {"lo": torch.zeros(5)}), ValueError, "lo", fake=True),
    StepCase("hi with 5 values", _with(lambda a: {"hi": torch.ones(5)}), ValueError, "hi", fake=True),
    StepCase("active with B + 1 values", _with(lambda a: {"active": torch.ones(B + 1, dtype=torch.bool)}),
             ValueError, "active", fake=True),
    # devices: a meta tensor among CPU ones reaches the fake kernel, which must refuse it
    StepCase("x_adv on meta", _meta("x_adv"), ValueError, "x_adv"),
    StepCase("grad on meta", _meta("grad"), ValueError, "grad", NOT_RANDOM),
    StepCase("x on meta", _meta("x"), ValueError, "x"),
    StepCase("eps on meta", _meta("eps"), ValueError, "eps"),
    StepCase("lo on meta", _meta("lo"), ValueError, "lo"),
    StepCase("active on meta", _with(lambda a: {"active": torch.ones(B, dtype=torch.bool, device="meta")}),
             ValueError, "active"),
    StepCase("x_adv on CUDA, the rest on CPU", _cuda("x_adv"), ValueError, "x_adv", cuda=True),
    StepCase("grad on CUDA", _cuda("grad"), ValueError, "grad", NOT_RANDOM, cuda=True),
    StepCase("x on CUDA", _cuda("x"), ValueError, "x", cuda=True),
    StepCase("active on CUDA", _with(lambda a: {"active": torch.ones(B, dtype=torch.bool, device="cuda")}),
             ValueError, "active", cuda=True),
    # The wrappers and twins move a parameter tensor to the batch's device; the op itself refuses it.
    StepCase("eps on CUDA (op only)", _cuda("eps"), ValueError, "eps", twin=False, cuda=True),
    # the rest
    StepCase("x_adv requires grad", _with(lambda a: {"x_adv": a["x_adv"].clone().requires_grad_()}), ValueError,
             "x_adv"),
    StepCase("unknown norm", _with(lambda a: {"norm": "l1"}), ValueError, "norm", ("random_init_",)),
]


def _step_params():
    for case in STEP_CASES:
        marks = [CUDA.marks[0]] if case.cuda else []
        for op in case.ops:
            yield pytest.param(op, case, id=f"{op}-{case.id}", marks=marks)


@pytest.mark.parametrize("op,case", list(_step_params()))
def test_step_op_and_twin_refuse(op, case):
    args = case.mutate(good_step_args())
    with pytest.raises(case.error) as info:
        call_raw(op, args)
    assert_names(info.value, op, case.arg)
    if not case.twin:
        return
    args = case.mutate(good_step_args())
    with pytest.raises(case.error) as info:
        call_api(reference, op, args)
    assert_names(info.value, case.arg)
    args = case.mutate(good_step_args())
    with pytest.raises(case.error) as info:
        call_api(ops, op, args)
    assert_names(info.value, case.arg)


@pytest.mark.parametrize("op,case", [p for p in _step_params() if p.values[1].fake])
def test_step_fake_kernel_refuses_what_shapes_and_dtypes_show(op, case):
    """torch.compile / FakeTensorMode see the same refusals, with the same exception type."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    args = case.mutate(good_step_args())
    with FakeTensorMode() as mode:
        fake = {k: mode.from_tensor(v) if isinstance(v, torch.Tensor) else v for k, v in args.items()}
        with pytest.raises(case.error) as info:
            call_raw(op, fake)
    assert_names(info.value, op, case.arg)


# ----------------------------------------------------------------------- step ops: Python numbers


STEP_PYTHON_CASES = [
    # (id, keyword overrides, error, the argument named)
    ("eps NaN", dict(eps=math.nan), ValueError, "eps"),
    ("eps inf", dict(eps=math.inf), ValueError, "eps"),
    ("eps negative", dict(eps=-0.1), ValueError, "eps"),
    ("eps NaN in a list", dict(eps=[0.1, math.nan, 0.1]), ValueError, "eps"),
    ("eps a string", dict(eps="0.1"), TypeError, "eps"),
    ("eps a bool", dict(eps=True), TypeError, "eps"),
    ("eps a list holding a string", dict(eps=[0.1, "x", 0.1]), TypeError, "eps[1]"),
    ("alpha NaN", dict(alpha=math.nan), ValueError, "alpha"),
    ("alpha negative", dict(alpha=-1.0), ValueError, "alpha"),
    ("scale 0", dict(scale=0.0), ValueError, "scale"),
    ("scale negative", dict(scale=-2.0), ValueError, "scale"),
    ("scale NaN", dict(scale=math.nan), ValueError, "scale"),
    ("scale inf", dict(scale=math.inf), ValueError, "scale"),
    ("scale 0 in one channel", dict(scale=[1.0, 0.0]), ValueError, "scale"),
    ("lo NaN", dict(lo=math.nan), ValueError, "lo"),
    ("hi NaN", dict(hi=math.nan), ValueError, "hi"),
    ("lo > hi", dict(lo=1.0, hi=0.0), ValueError, "lo"),
    ("lo > hi in one channel", dict(lo=[0.0, 0.5], hi=[1.0, 0.4]), ValueError, "lo"),
    ("lo a string", dict(lo="0"), TypeError, "lo"),
]


@pytest.mark.parametrize("op", STEP_OPS)
@pytest.mark.parametrize("case_id,overrides,error,arg", STEP_PYTHON_CASES, ids=[c[0] for c in STEP_PYTHON_CASES])
def test_step_wrapper_and_twin_refuse_python_values(op, case_id, overrides, error, arg):
    if op == "random_init_" and "alpha" in overrides:
        pytest.skip("random_init_ has no alpha")
    for module in (ops, reference):
        args = {**good_step_args(), **overrides}
        before = args["x_adv"].clone()
        with pytest.raises(error) as info:
            call_api(module, op, args)
        assert_names(info.value, arg)
        assert torch.equal(args["x_adv"], before), "a refused call must not write"


@pytest.mark.parametrize("op", STEP_OPS)
def test_infinite_bounds_mean_unbounded(op):
    args = {**good_step_args(), "lo": -math.inf, "hi": math.inf}
    got, want = args["x_adv"].clone(), args["x_adv"].clone()
    call_api(ops, op, {**args, "x_adv": got})
    call_api(reference, op, {**args, "x_adv": want})
    torch.testing.assert_close(got, want, atol=2e-6, rtol=0)
    assert bool(torch.isfinite(got).all())


@pytest.mark.parametrize("op", STEP_OPS)
def test_disjoint_views_of_one_buffer_are_accepted(op):
    """Overlap is refused, sharing a buffer is not: x_adv and x side by side in one allocation."""
    args = _views_of_one_buffer(NUMEL)(good_step_args())  # x = buf[:n], x_adv = buf[n:2n]
    args["x_adv"].copy_(good_step_args()["x_adv"])
    want = args["x_adv"].clone()
    call_api(reference, op, {**args, "x_adv": want})
    call_api(ops, op, args)
    torch.testing.assert_close(args["x_adv"], want, atol=2e-6, rtol=0)


@pytest.mark.parametrize("op", STEP_OPS)
def test_cpu_parameters_for_a_cuda_batch_are_checked_before_the_copy(op):
    """A CPU tensor the wrapper copies to the batch's device is checked on the host (free)."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    args = {**good_step_args("cuda"), "eps": torch.tensor([0.1, math.nan, 0.1])}
    for module in (ops, reference):
        with pytest.raises(ValueError) as info:
            call_api(module, op, dict(args))
        assert_names(info.value, "eps")


# -------------------------------------------------------------------------------- NaN propagation


def _nan_at(t: torch.Tensor, flat_index: int) -> torch.Tensor:
    """A contiguous copy of ``t`` with a NaN at logical index ``flat_index``."""
    out = t.contiguous().clone()
    out.view(-1)[flat_index] = math.nan
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("where", ["x", "grad", "x_adv"])
@pytest.mark.parametrize("op", STEP_OPS)
def test_nan_in_data_propagates_identically(op, where, dtype):
    if op == "random_init_" and where == "grad":
        pytest.skip("random_init_ reads no gradient")
    for layout in (torch.contiguous_format, torch.channels_last):
        args = good_step_args(dtype=dtype)
        args = {k: v.contiguous(memory_format=layout) if isinstance(v, torch.Tensor) and v.dim() == 4 else v
                for k, v in args.items()}
        args[where] = _nan_at(args[where], 37).contiguous(memory_format=layout)
        got, want = args["x_adv"].clone(), args["x_adv"].clone()
        call_api(ops, op, {**args, "x_adv": got})
        call_api(reference, op, {**args, "x_adv": want})
        if op == "random_init_" and where == "x_adv":
            assert not bool(got.isnan().any())  # the start overwrites the state: nothing to propagate
        else:
            assert bool(got.isnan().any()), "the NaN was dropped"
        assert torch.equal(got.isnan(), want.isnan()), f"NaN positions differ: {got.isnan().nonzero().tolist()}"
        atol = 1e-2 if dtype == torch.bfloat16 else 1e-5
        torch.testing.assert_close(got, want, atol=atol, rtol=0, equal_nan=True)


@pytest.mark.parametrize("device", [CUDA])
@pytest.mark.parametrize("op", STEP_OPS)
def test_nan_parameters_on_cuda_propagate_identically(op, device):
    """On CUDA parameter tensors are not checked (no host sync); a NaN among them must then propagate
    exactly as in the twin, never be dropped (eps NaN used to skip the projection)."""
    cases = [("eps", 1), ("scale", 0), ("lo", 1), ("hi", 0)] + ([("alpha", 2)] if op != "random_init_" else [])
    for name, index in cases:
        args = good_step_args(device)
        args[name] = _nan_at(args[name], index)
        got, want = args["x_adv"].clone(), args["x_adv"].clone()
        call_api(ops, op, {**args, "x_adv": got})
        call_api(reference, op, {**args, "x_adv": want})
        assert bool(got.isnan().any()), f"{name}: the NaN was dropped"
        assert torch.equal(got.isnan(), want.isnan()), name
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0, equal_nan=True)


# ------------------------------------------------------------------------------ statistics ops


def good_stats_args(device: str = "cpu") -> dict:
    g = torch.Generator().manual_seed(1)
    return dict(
        features=torch.randn(6, 4, generator=g).to(device),
        labels=torch.tensor([0, 1, 2, 0, 1, 2], device=device),
        num_classes=3,
        clean=torch.randn(6, 4, generator=g).to(device),
        adv=torch.randn(6, 4, generator=g).to(device),
        x=torch.randn(6, 4, generator=g).to(device),
        y=torch.randn(6, 3, generator=g).to(device),
    )


def stats_raw(op: str, a: dict):
    if op == "class_feature_stats":
        return T.class_feature_stats(a["features"], a["labels"], a["num_classes"], False)
    if op == "feature_discrepancy":
        return T.feature_discrepancy(a["clean"], a["adv"])
    return T.linear_hsic(a["x"], a["y"])


def stats_api(module, op: str, a: dict):
    if op == "class_feature_stats":
        return module.class_feature_stats(a["features"], a["labels"], num_classes=a["num_classes"])
    if op == "feature_discrepancy":
        return module.feature_discrepancy(a["clean"], a["adv"])
    return module.linear_hsic(a["x"], a["y"])


CFS, FD, HSIC = "class_feature_stats", "feature_discrepancy", "linear_hsic"


def _set_arg(**values):
    return lambda a: {**a, **{k: (v(a) if callable(v) else v) for k, v in values.items()}}


# (op, id, mutate, error, the argument named, cuda)
STATS_CASES = [
    (CFS, "label == num_classes", _set_arg(labels=torch.tensor([0, 1, 3, 0, 1, 2])), ValueError, "labels", False),
    (CFS, "negative label", _set_arg(labels=torch.tensor([0, 1, -1, 0, 1, 2])), ValueError, "labels", False),
    (CFS, "num_classes 0", _set_arg(num_classes=0), ValueError, "num_classes", False),
    (CFS, "labels int32", _set_arg(labels=lambda a: a["labels"].int()), TypeError, "labels", False),
    (CFS, "labels float", _set_arg(labels=lambda a: a["labels"].float()), TypeError, "labels", False),
    (CFS, "features int64", _set_arg(features=lambda a: a["features"].long()), TypeError, "features", False),
    (CFS, "features 1-D", _set_arg(features=lambda a: a["features"][:, 0]), ValueError, "features", False),
    (CFS, "labels 2-D", _set_arg(labels=lambda a: a["labels"][None]), ValueError, "labels", False),
    (CFS, "one label too few", _set_arg(labels=lambda a: a["labels"][:5]), ValueError, "labels", False),
    (CFS, "labels on meta", _set_arg(labels=lambda a: a["labels"].to("meta")), ValueError, "labels", False),
    (CFS, "features on meta", _set_arg(features=lambda a: a["features"].to("meta")), ValueError, "features", False),
    (CFS, "labels on CUDA", _set_arg(labels=lambda a: a["labels"].cuda()), ValueError, "labels", True),
    (FD, "adv float64", _set_arg(adv=lambda a: a["adv"].double()), TypeError, "adv", False),
    (FD, "adv int32", _set_arg(adv=lambda a: a["adv"].int()), TypeError, "adv", False),
    (FD, "adv narrower", _set_arg(adv=lambda a: a["adv"][:, :3]), ValueError, "adv", False),
    (FD, "adv one row short", _set_arg(adv=lambda a: a["adv"][:5]), ValueError, "adv", False),
    (FD, "clean 1-D", _set_arg(clean=lambda a: a["clean"][0], adv=lambda a: a["adv"][0]), ValueError, "clean", False),
    (FD, "adv on meta", _set_arg(adv=lambda a: a["adv"].to("meta")), ValueError, "adv", False),
    (FD, "clean on meta", _set_arg(clean=lambda a: a["clean"].to("meta")), ValueError, "clean", False),
    (FD, "adv on CUDA", _set_arg(adv=lambda a: a["adv"].cuda()), ValueError, "adv", True),
    (HSIC, "y float64", _set_arg(y=lambda a: a["y"].double()), TypeError, "y", False),
    (HSIC, "y int64", _set_arg(y=lambda a: a["y"].long()), TypeError, "y", False),
    (HSIC, "y one row short", _set_arg(y=lambda a: a["y"][:5]), ValueError, "y", False),
    (HSIC, "x 3-D", _set_arg(x=lambda a: a["x"][..., None]), ValueError, "x", False),
    (HSIC, "y on meta", _set_arg(y=lambda a: a["y"].to("meta")), ValueError, "y", False),
    (HSIC, "x on meta", _set_arg(x=lambda a: a["x"].to("meta")), ValueError, "x", False),
    (HSIC, "y on CUDA", _set_arg(y=lambda a: a["y"].cuda()), ValueError, "y", True),
]


@pytest.mark.parametrize(
    "op,mutate,error,arg",
    [pytest.param(op, m, e, arg, id=f"{op}-{cid}", marks=[CUDA.marks[0]] if cuda else [])
     for op, cid, m, e, arg, cuda in STATS_CASES],
)
def test_stats_op_and_twin_refuse(op, mutate, error, arg):
    args = mutate(good_stats_args())
    with pytest.raises(error) as info:
        stats_raw(op, args)
    assert_names(info.value, op, arg)
    for module in (reference, ops):
        with pytest.raises(error) as info:
            stats_api(module, op, args)
        assert_names(info.value, arg)


@pytest.mark.parametrize("module", [ops, reference], ids=["ops", "reference"])
def test_stats_python_values_refused(module):
    a = good_stats_args()
    with pytest.raises(TypeError, match="num_classes"):
        module.class_feature_stats(a["features"], a["labels"], num_classes=3.0)
    with pytest.raises(TypeError, match="features"):
        module.class_feature_stats(a["features"].tolist(), a["labels"], num_classes=3)
    with pytest.raises(TypeError, match="adv"):
        module.feature_discrepancy(a["clean"], "adv")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_nan_features_propagate_identically(dtype):
    g = torch.Generator().manual_seed(3)
    n, d, k = 300, 40, 4  # more than one register block per class
    feats = (5 + torch.randn(n, d, generator=g)).to(dtype)
    labels = torch.randint(0, k, (n,), generator=g)
    feats[17, 5] = math.nan  # class labels[17], column 5
    for covariance in (False, True):
        got = ops.class_feature_stats(feats, labels, num_classes=k, covariance=covariance)
        want = reference.class_feature_stats(feats, labels, num_classes=k, covariance=covariance)
        for name, a, b in zip(("count", "mean", "m2"), got, want, strict=True):
            assert torch.equal(a.isnan(), b.isnan()), f"{name} (covariance={covariance}): NaN positions differ"
        assert bool(got[1].isnan().any()) and bool(got[2].isnan().any()), "the NaN was dropped"
        cls = int(labels[17])
        assert bool(got[1][cls, 5].isnan())
    clean = torch.randn(n, d, generator=g).to(dtype)
    adv = _nan_at(clean + 0.1, 3 * d + 7)
    got = ops.feature_discrepancy(clean, adv)
    want = reference.feature_discrepancy(clean, adv)
    for a, b in zip(got, want, strict=True):
        assert bool(a.isnan().any()) and torch.equal(a.isnan(), b.isnan())
    assert bool(ops.linear_hsic(feats, clean).isnan()) and bool(reference.linear_hsic(feats, clean).isnan())


_ISA_NAN_SCRIPT = """
import math, torch, nonrobust_ext
from nonrobust_ext import ops, reference
assert nonrobust_ext.build_info()["cpu_isa"] == "{isa}"
g = torch.Generator().manual_seed(0)
for dtype in (torch.float32, torch.float64, torch.bfloat16):
    for cl in (False, True):
        shape = (5, 3, 9, 11)  # odd sizes: vector bodies and scalar tails
        base = dict(x=0.2 + 0.6 * torch.rand(shape, generator=g), grad=torch.randn(shape, generator=g))
        base["x_adv"] = base["x"] + 0.01 * torch.randn(shape, generator=g)
        for where in ("x", "grad", "x_adv"):
            t = {{k: v.clone() for k, v in base.items()}}
            t[where].view(-1)[[3, 200, 1000, 1484]] = math.nan
            t = {{k: v.to(dtype) for k, v in t.items()}}
            if cl:
                t = {{k: v.contiguous(memory_format=torch.channels_last) for k, v in t.items()}}
            kw = dict(eps=torch.full((5,), 0.05), alpha=0.01, lo=0.0, hi=torch.tensor([1.0, 0.9, 0.8]),
                      scale=torch.tensor([0.5, 1.0, 2.0]))
            for name in ("linf_step_", "l2_step_"):
                a, b = t["x_adv"].clone(), t["x_adv"].clone()
                getattr(ops, name)(a, t["grad"], t["x"], **kw)
                getattr(reference, name)(b, t["grad"], t["x"], **kw)
                assert a.isnan().any(), (name, where, dtype, cl)
                assert torch.equal(a.isnan(), b.isnan()), (name, where, dtype, cl)
print("ok")
"""


@pytest.mark.parametrize("isa", ["baseline", "avx2", "avx512"])
def test_nan_propagates_on_every_compiled_isa(isa):
    """Each ISA's vector loops (different select instructions, and scalar tails) propagate a data NaN
    exactly where the twin does, not only the ISA this CPU selects."""
    run_under_isa(isa, _ISA_NAN_SCRIPT.format(isa=isa))
