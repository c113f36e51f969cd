"""The compiled attack-state ops against their pure-PyTorch twins (nonrobust_ext.reference), opcheck,
torch.compile, and their argument checks."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from _helpers import DEVICES, dtypes_for, run_under_isa

from nonrobust_ext import ops, reference

# (shape, layout): empty batch, empty spatial dims, odd sizes, one channel, 2-D [B, D], one big sample
# (the kernel splits it across threads), many samples (one sample per thread), channels_last,
# non-contiguous views and a mix of layouts between x_adv, grad and x.
CASES = [
    ((0, 3, 4, 4), "contiguous"),
    ((4, 3, 0, 5), "contiguous"),
    ((5, 3, 7, 9), "contiguous"),
    ((2, 1, 5, 5), "contiguous"),
    ((6, 4), "contiguous"),
    ((1, 3, 70, 70), "contiguous"),
    ((9, 3, 40, 40), "contiguous"),
    ((5, 3, 7, 9), "channels_last"),
    ((9, 5, 33, 35), "channels_last"),
    ((5, 3, 7, 9), "noncontiguous"),
    ((5, 3, 7, 9), "mixed"),
]


@dataclasses.dataclass
class StepCase:
    x_adv: torch.Tensor
    grad: torch.Tensor
    x: torch.Tensor
    params: dict
    x_adv_layout: str = "contiguous"

    def clone_state(self) -> torch.Tensor:
        """A fresh copy of the attack state in the same (possibly non-contiguous) layout."""
        return _layout(self.x_adv.clone(), self.x_adv_layout)


def _layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == "channels_last" and t.dim() == 4:
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "noncontiguous":
        wide = torch.empty(t.shape[:-1] + (2 * t.shape[-1],), dtype=t.dtype, device=t.device)
        view = wide[..., ::2]
        view.copy_(t)
        return view
    return t.contiguous()


def make_case(shape, layout, dtype, device, *, seed=0, active=True) -> StepCase:
    gen = torch.Generator().manual_seed(seed)
    B, C = shape[0], shape[1]
    x = 0.2 + 0.6 * torch.rand(shape, generator=gen, dtype=torch.float64)
    x_adv = x + 0.05 * torch.randn(shape, generator=gen, dtype=torch.float64)
    grad = torch.randn(shape, generator=gen, dtype=torch.float64)
    if grad.numel():
        grad.view(-1)[:: max(1, grad.numel() // 7)] = 0.0  # sign(0) = 0 must hold
    to = dict(dtype=dtype, device=device)
    layouts = {"mixed": ("channels_last", "contiguous", "noncontiguous")}.get(layout, (layout,) * 3)
    x_adv, grad, x = (_layout(t.to(**to), lay) for t, lay in zip((x_adv, grad, x), layouts, strict=True))
    params = dict(
        eps=(0.02 + 0.08 * torch.rand(B, generator=gen)).to(device),
        alpha=(0.005 + 0.02 * torch.rand(B, generator=gen)).to(device),
        scale=(0.5 + torch.rand(C, generator=gen)).to(device),
        lo=(0.15 * torch.rand(C, generator=gen)).to(device),
        hi=(1.0 - 0.15 * torch.rand(C, generator=gen)).to(device),
        active=(torch.arange(B) % 3 != 1).to(device) if active else None,
    )
    return StepCase(x_adv, grad, x, params, layouts[0])


def tolerance(dtype: torch.dtype) -> dict:
    if dtype in (torch.bfloat16, torch.float16):
        return dict(atol=1e-2, rtol=0)  # one rounding step near 1.0, at most
    if dtype == torch.float32:
        return dict(atol=2e-6, rtol=0)
    return dict(atol=1e-12, rtol=0)


STEP_OPS = ["linf_step_", "l2_step_"]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape,layout", CASES)
@pytest.mark.parametrize("name", STEP_OPS)
def test_step_matches_reference(name, shape, layout, device):
    for dtype in dtypes_for(device):
        case = make_case(shape, layout, dtype, device)
        got, want = case.clone_state(), case.clone_state()
        getattr(ops, name)(got, case.grad, case.x, **case.params)
        getattr(reference, name)(want, case.grad, case.x, **case.params)
        torch.testing.assert_close(got, want, **tolerance(dtype), msg=lambda m, dtype=dtype: f"{dtype}: {m}")
        assert got.stride() == case.x_adv.stride(), "the op must write in place, keeping the layout"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", STEP_OPS)
def test_step_scalar_params_broadcast(name, device):
    case = make_case((4, 3, 6, 6), "contiguous", torch.float32, device)
    scalar, vector = case.clone_state(), case.clone_state()
    common = dict(lo=0.1, hi=0.9, scale=1.5)
    getattr(ops, name)(scalar, case.grad, case.x, eps=0.03, alpha=0.01, **common)
    B, C = 4, 3
    getattr(ops, name)(
        vector, case.grad, case.x, eps=torch.full((B,), 0.03), alpha=torch.full((B,), 0.01),
        lo=torch.full((C,), 0.1), hi=torch.full((C,), 0.9), scale=torch.full((C,), 1.5),
    )
    torch.testing.assert_close(scalar, vector, atol=0, rtol=0)


@pytest.mark.parametrize("name", STEP_OPS)
def test_step_stays_in_ball_and_bounds(name):
    case = make_case((8, 3, 9, 9), "contiguous", torch.float64, "cpu", active=False)
    x_adv = case.clone_state()
    p = case.params
    for _ in range(20):
        getattr(ops, name)(x_adv, torch.randn_like(x_adv), case.x, **p)
    shape_c = (1, 3, 1, 1)
    assert bool((x_adv >= p["lo"].view(shape_c)).all()) and bool((x_adv <= p["hi"].view(shape_c)).all())
    delta = (x_adv - case.x) / p["scale"].view(shape_c)  # threat-model units
    if name == "linf_step_":
        assert bool((delta.abs().amax(dim=(1, 2, 3)) <= p["eps"].double() + 1e-12).all())
    else:
        assert bool((delta.flatten(1).norm(dim=1) <= p["eps"].double() + 1e-12).all())


@pytest.mark.parametrize("name", STEP_OPS)
def test_inactive_samples_are_untouched(name):
    case = make_case((6, 3, 5, 5), "channels_last", torch.float32, "cpu")
    before = case.clone_state()
    x_adv = case.clone_state()
    getattr(ops, name)(x_adv, case.grad, case.x, **case.params)
    inactive = ~case.params["active"]
    assert torch.equal(x_adv[inactive], before[inactive])
    assert not torch.equal(x_adv[~inactive], before[~inactive])


def test_l2_step_with_zero_gradient_and_zero_eps_is_finite():
    x = torch.rand(3, 2, 4, 4)
    x_adv = x.clone()
    ops.l2_step_(x_adv, torch.zeros_like(x), x, eps=0.0, alpha=0.1)
    assert torch.equal(x_adv, x)
    ops.l2_step_(x_adv, torch.zeros_like(x), x, eps=0.5, alpha=0.1)
    assert torch.equal(x_adv, x)


# ----------------------------------------------------------------------------------- random start


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape,layout", CASES)
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_random_init_matches_reference(norm, shape, layout, device):
    for dtype in dtypes_for(device):
        case = make_case(shape, layout, dtype, device)
        p = {k: v for k, v in case.params.items() if k != "alpha"}
        got, want = case.clone_state(), case.clone_state()
        ops.random_init_(got, case.x, norm=norm, seed=1234, **p)
        reference.random_init_(want, case.x, norm=norm, seed=1234, **p)
        # float64 inputs still use float32 Box-Muller normals, so libm rounding shows at 1e-9.
        tol = dict(atol=1e-8, rtol=0) if dtype == torch.float64 else tolerance(dtype)
        torch.testing.assert_close(got, want, **tol, msg=lambda m, dtype=dtype: f"{dtype}: {m}")


def test_random_init_is_reproducible_and_layout_independent():
    x = torch.rand(4, 3, 8, 8)
    a, b, c = x.clone(), x.clone(), x.clone(memory_format=torch.channels_last)
    ops.random_init_(a, x, eps=0.1, seed=7)
    ops.random_init_(b, x, eps=0.1, seed=7)
    ops.random_init_(c, x.contiguous(memory_format=torch.channels_last), eps=0.1, seed=7)
    assert torch.equal(a, b)
    assert torch.equal(a, c)
    d = x.clone()
    ops.random_init_(d, x, eps=0.1, seed=8)
    assert not torch.equal(a, d)


def test_random_init_seed_from_generator_and_global_seed():
    x = torch.rand(2, 3, 4, 4)
    outs = []
    for _ in range(2):
        torch.manual_seed(3)
        t = x.clone()
        ops.random_init_(t, x, eps=0.1)
        outs.append(t)
        g = torch.Generator().manual_seed(5)
        t = x.clone()
        ops.random_init_(t, x, eps=0.1, generator=g)
        outs.append(t)
    assert torch.equal(outs[0], outs[2]) and torch.equal(outs[1], outs[3])
    assert not torch.equal(outs[0], outs[1])


def test_random_init_linf_is_uniform_in_the_box():
    x = torch.full((64, 1, 32, 32), 0.5, dtype=torch.float64)
    x_adv = x.clone()
    ops.random_init_(x_adv, x, eps=0.25, norm="linf", seed=11)
    delta = (x_adv - x).flatten()
    assert float(delta.abs().max()) <= 0.25
    # Uniform on [-eps, eps]: mean 0, variance eps^2 / 3, every quarter of the interval equally full.
    assert abs(float(delta.mean())) < 0.01
    assert abs(float(delta.var()) - 0.25**2 / 3) < 0.002
    counts = torch.histc(delta, bins=4, min=-0.25, max=0.25)
    assert float(counts.min()) > 0.95 * delta.numel() / 4


def test_random_init_l2_is_uniform_in_the_ball():
    # In d dimensions the radius of a uniform point in the ball has E[r/eps] = d/(d+1); in 2-D the
    # angle is uniform too.
    n, eps = 20000, 0.2
    x = torch.full((n, 2), 0.5, dtype=torch.float64)
    x_adv = x.clone()
    ops.random_init_(x_adv, x, eps=eps, norm="l2", seed=5)
    delta = x_adv - x
    r = delta.norm(dim=1) / eps
    assert float(r.max()) <= 1 + 1e-12
    assert abs(float(r.mean()) - 2 / 3) < 0.01
    angle = torch.atan2(delta[:, 1], delta[:, 0])
    counts = torch.histc(angle, bins=8, min=-torch.pi, max=torch.pi)
    assert float(counts.min()) > 0.9 * n / 8


def test_random_init_l2_high_dimension_lands_near_the_sphere_and_respects_bounds():
    x = torch.rand(16, 3, 16, 16)
    x_adv = x.clone()
    ops.random_init_(x_adv, x, eps=0.5, norm="l2", seed=2)
    assert bool((x_adv >= 0).all() and (x_adv <= 1).all())
    norms = (x_adv - x).flatten(1).norm(dim=1)
    assert bool((norms <= 0.5 + 1e-6).all())
    assert float(norms.min()) > 0.3  # clipping to [0, 1] shortens, but U^(1/768) is ~1


# ------------------------------------------------------------------------------------ opcheck/compile


def _raw_args(case: StepCase, with_alpha: bool = True):
    p = case.params
    head = (case.clone_state(), case.grad, case.x, p["eps"], p["alpha"]) if with_alpha else (
        case.clone_state(), case.x, p["eps"])
    return head + (p["scale"], p["lo"], p["hi"], p["active"])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape,layout", [CASES[0], CASES[2], CASES[4], CASES[7], CASES[9]])
def test_opcheck(shape, layout, device):
    for dtype in dtypes_for(device):
        case = make_case(shape, layout, dtype, device)
        for name in STEP_OPS:
            torch.library.opcheck(getattr(torch.ops.nonrobust_ext, name).default, _raw_args(case))
        for norm in ("linf", "l2"):
            args = _raw_args(case, with_alpha=False) + (42, norm)
            torch.library.opcheck(torch.ops.nonrobust_ext.random_init_.default, args)


@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_fullgraph_loop(device):
    case = make_case((4, 3, 8, 8), "contiguous", torch.float32, device, active=False)
    p = case.params

    def attack_loop(x_adv, grad, x, eps, alpha, scale, lo, hi):
        torch.ops.nonrobust_ext.random_init_(x_adv, x, eps, scale, lo, hi, None, 3, "linf")
        for i in range(3):
            g = grad * (i + 1) - 0.5 * x_adv  # something that depends on the current state
            torch.ops.nonrobust_ext.linf_step_(x_adv, g, x, eps, alpha, scale, lo, hi, None)
            torch.ops.nonrobust_ext.l2_step_(x_adv, g, x, eps, alpha, scale, lo, hi, None)
        return x_adv

    compiled = torch.compile(attack_loop, fullgraph=True)
    args = (case.grad, case.x, p["eps"], p["alpha"], p["scale"], p["lo"], p["hi"])
    got = compiled(case.clone_state(), *args)
    want = attack_loop(case.clone_state(), *args)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------------------ errors


def _good(device="cpu"):
    return make_case((3, 2, 4, 4), "contiguous", torch.float32, device, active=False)


# A wrong dtype is a TypeError, anything else a ValueError (as at the Python API); the message names the
# op and the argument. The full table of bad inputs, with the twins, is python_tests/test_bad_input_ops.py.
@pytest.mark.parametrize(
    "mutate,error,match",
    [
        (lambda c: dataclasses.replace(c, grad=c.grad[:, :1]), ValueError, "grad has shape"),
        (lambda c: dataclasses.replace(c, x=c.x.double()), TypeError, "x has dtype"),
        (lambda c: dataclasses.replace(c, grad=c.grad.double()), TypeError, "grad has dtype"),
        (lambda c: dataclasses.replace(c, params={**c.params, "eps": torch.ones(2)}), ValueError, "eps must have one element or one per sample"),
        (lambda c: dataclasses.replace(c, params={**c.params, "lo": torch.zeros(5)}), ValueError, "lo must have one element or one per channel"),
        (lambda c: dataclasses.replace(c, params={**c.params, "active": torch.ones(3)}), TypeError, "active must be a bool tensor"),
        (lambda c: dataclasses.replace(c, params={**c.params, "active": torch.ones(4, dtype=torch.bool)}), ValueError, "active must have one element per sample"),
        (lambda c: dataclasses.replace(c, x_adv=c.x_adv[:, 0, 0, 0], grad=c.grad[:, 0, 0, 0], x=c.x[:, 0, 0, 0]), ValueError, r"\[B, C, ...\]"),
        (lambda c: dataclasses.replace(c, x_adv=c.x_adv.half(), grad=c.grad.half(), x=c.x.half()), TypeError, "float16 is supported on CUDA only"),
    ],
)
@pytest.mark.parametrize("name", STEP_OPS)
def test_step_rejects_bad_arguments(name, mutate, error, match):
    case = mutate(_good())
    with pytest.raises(error, match=match) as info:
        getattr(torch.ops.nonrobust_ext, name)(*_raw_args(case))
    assert name in str(info.value)


def test_random_init_rejects_unknown_norm():
    case = _good()
    with pytest.raises(ValueError, match="norm must be 'linf' or 'l2'"):
        torch.ops.nonrobust_ext.random_init_(*_raw_args(case, with_alpha=False), 1, "l1")


def test_mutating_a_tensor_that_requires_grad_is_refused():
    case = _good()
    x_adv = case.x_adv.clone().requires_grad_(True)
    with pytest.raises(ValueError, match="requires grad.*detached"):
        ops.linf_step_(x_adv, case.grad, case.x, eps=0.1, alpha=0.01)


def test_version_counter_is_bumped():
    case = _good()
    x_adv = case.clone_state()
    before = x_adv._version
    ops.linf_step_(x_adv, case.grad, case.x, eps=0.1, alpha=0.01)
    assert x_adv._version > before


def test_python_wrappers_reject_non_numeric_params():
    case = _good()
    with pytest.raises(TypeError, match="eps"):
        ops.linf_step_(case.x_adv, case.grad, case.x, eps="0.1", alpha=0.01)


# ------------------------------------------------------------------------------- CPU/CUDA, ISAs


@pytest.mark.parametrize("device", [d for d in DEVICES if not isinstance(d, str)])  # the CUDA param
@pytest.mark.parametrize("shape,layout", [CASES[2], CASES[5], CASES[8], CASES[10]])
def test_cuda_agrees_with_cpu(shape, layout, device):
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        cpu = make_case(shape, layout, dtype, "cpu")
        gpu = make_case(shape, layout, dtype, device)
        for name in STEP_OPS:
            a, b = cpu.clone_state(), gpu.clone_state()
            getattr(ops, name)(a, cpu.grad, cpu.x, **cpu.params)
            getattr(ops, name)(b, gpu.grad, gpu.x, **gpu.params)
            torch.testing.assert_close(b.cpu(), a, **tolerance(dtype))
        p_cpu = {k: v for k, v in cpu.params.items() if k != "alpha"}
        p_gpu = {k: v for k, v in gpu.params.items() if k != "alpha"}
        for norm in ("linf", "l2"):
            a, b = cpu.clone_state(), gpu.clone_state()
            ops.random_init_(a, cpu.x, norm=norm, seed=99, **p_cpu)
            ops.random_init_(b, gpu.x, norm=norm, seed=99, **p_gpu)
            torch.testing.assert_close(b.cpu(), a, **(tolerance(dtype) if dtype != torch.float64 else dict(atol=1e-8, rtol=0)))


_ISA_SCRIPT = """
import torch, nonrobust_ext
from nonrobust_ext import ops, reference
assert nonrobust_ext.build_info()["cpu_isa"] == "{isa}"
torch.manual_seed(0)
for dtype, atol in ((torch.float32, 2e-6), (torch.float64, 1e-12), (torch.bfloat16, 1e-2)):
    for shape, cl in (((7, 3, 33, 31), False), ((7, 3, 33, 31), True), ((1, 3, 100, 100), False)):
        x = torch.rand(shape).to(dtype)
        if cl:
            x = x.contiguous(memory_format=torch.channels_last)
        g = torch.randn(shape).to(dtype)
        for name in ("linf_step_", "l2_step_"):
            a = (x + 0.01).clamp(0, 1)
            b = a.clone()
            kw = dict(eps=torch.rand(shape[0]) * 0.1, alpha=0.01, lo=0.05, hi=torch.tensor([0.9, 0.95, 1.0]),
                      scale=torch.tensor([0.5, 1.0, 2.0]))
            getattr(ops, name)(a, g, x, **kw)
            getattr(reference, name)(b, g, x, **kw)
            torch.testing.assert_close(a, b, atol=atol, rtol=0)
print("ok")
"""


@pytest.mark.parametrize("isa", ["baseline", "avx2", "avx512"])
def test_every_compiled_isa_matches_reference(isa):
    """Each vector-ISA build of the inner loops is correct, not only the one this CPU selects."""
    run_under_isa(isa, _ISA_SCRIPT.format(isa=isa))


@pytest.mark.parametrize("op", ["linf_step_", "l2_step_"])
def test_the_unchecked_formula_equals_the_twin(op):
    """The benchmarks time the twin's formula without its checks: it must compute what the twin does."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 5, 5, generator=g)
    grad = torch.randn(4, 3, 5, 5, generator=g)
    start = (x + 0.05 * torch.randn(4, 3, 5, 5, generator=g)).clamp(0, 1)
    eps = torch.tensor([0.0, 0.01, 0.1, 0.5])
    params = dict(eps=eps, alpha=eps / 4, lo=torch.zeros(1), hi=torch.ones(1), scale=torch.tensor([1.0, 0.5, 2.0]))
    checked, unchecked = start.clone(), start.clone()
    getattr(reference, op)(checked, grad, x, **params)
    getattr(reference, op.replace("step_", "step_formula_"))(unchecked, grad, x, **params)
    assert torch.equal(checked, unchecked) and not torch.equal(checked, start)
