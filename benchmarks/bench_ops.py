"""Benchmark of the fused in-place attack-step ops against eager PyTorch, torch.compile and a copy.

What it measures
    For ``nonrobust_ext.ops.linf_step_`` and ``nonrobust_ext.ops.l2_step_`` (one PGD step, in place),
    per case (dtype, batch shape, memory layout), the time of:

    ``fused_op``       the raw op ``torch.ops.nonrobust_ext.<op>(x_adv, grad, x, eps, alpha, scale,
                       lo, hi, None)`` with pre-built parameter tensors (eps/alpha float [B],
                       scale/lo/hi float [1]): the kernel alone;
    ``fused_wrapper``  the Python wrapper ``nonrobust_ext.ops.<op>`` with the same tensors (adds the
                       wrapper's argument handling);
    ``eager``          the pure-PyTorch twin's formula ``nonrobust_ext.reference.<op>_step_formula_`` (the
                       eager expression, without the twin's argument checks);
    ``compile``        ``torch.compile`` of that same formula (inductor; compiled and warmed up before
                       timing, compile time reported separately);
    ``copy``           ``dst.copy_(src)`` of one tensor of the same size and layout: the bandwidth
                       baseline, measured in the same run.

    Before timing, each case checks fused (op and wrapper) == reference and compiled == reference
    (``torch.testing.assert_close``, atol 1e-6 for float32) from identical starting states, and
    aborts if they differ.

    Timing uses ``torch.utils.benchmark.Timer.blocked_autorange`` with torch's default thread count,
    in several rounds that interleave the implementations (so drift on a shared machine hits them
    alike); median and IQR are over all timed blocks. Bytes moved per call, by convention: a step
    reads x_adv, grad, x and writes x_adv = 4 * numel * itemsize (the L2 step's norm pass is not
    counted); the copy reads and writes one tensor = 2 * numel * itemsize. GB/s = bytes / median.

How to run (from the repository root, or anywhere with the package installed)
    python benchmarks/bench_ops.py                       # full run, CPU, tag "cpu"
    python benchmarks/bench_ops.py --quick --out /tmp/b  # smoke test (< ~1 min plus compile time)
    python benchmarks/bench_ops.py --cases 'linf_*'      # names or fnmatch patterns (--list)
    python benchmarks/bench_ops.py --device cuda --tag h100   # GPU; adds float16/bfloat16 cases

Where results go
    ``<out>/ops_<tag>.csv`` (one row per case x implementation) and ``<out>/ops_<tag>.md`` (machine /
    build header, the table, and whether each performance target is met, computed from the numbers).
    ``--out`` defaults to ``benchmarks/results`` next to this script; ``--tag`` defaults to the device.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.utils.benchmark as tbench

import nonrobust_ext
from nonrobust_ext import ops as nrx_ops
from nonrobust_ext import reference as nrx_ref

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _env as env  # noqa: E402

IMPLS = ("fused_op", "fused_wrapper", "eager", "compile", "copy")
CSV_FIELDS = (
    "case", "impl", "dtype", "shape", "layout", "median_us", "iqr_us", "gbps", "ratio_to_copy",
    "speedup_vs_eager", "speedup_vs_compile",
    # provenance, per DESIGN.md (every row says where it was measured)
    "op", "device", "threads", "torch", "git", "note",
)

# Targets of the issue (for this CPU): evaluated on the raw op's numbers.
TARGET_SPEEDUP_VS_EAGER = 4.0
TARGET_COPY_FRACTION = 0.70   # on the large (ImageNet-sized) batch


@dataclass(frozen=True)
class Case:
    name: str
    op: str                     # "linf" or "l2"
    shape: tuple[int, ...]
    dtype: torch.dtype = torch.float32
    channels_last: bool = False
    large: bool = False         # the "large batch" the bandwidth target refers to
    cuda_only: bool = False

    @property
    def layout(self) -> str:
        return "channels_last" if self.channels_last else "contiguous"


CIFAR = (256, 3, 32, 32)
IMAGENET = (64, 3, 224, 224)


def all_cases() -> list[Case]:
    cases: list[Case] = []
    for op in ("linf", "l2"):
        cases += [
            Case(f"{op}_cifar", op, CIFAR),
            Case(f"{op}_cifar_cl", op, CIFAR, channels_last=True),
            Case(f"{op}_imagenet", op, IMAGENET, large=True),
            Case(f"{op}_imagenet_fp16", op, IMAGENET, torch.float16, large=True, cuda_only=True),
            Case(f"{op}_imagenet_bf16", op, IMAGENET, torch.bfloat16, large=True, cuda_only=True),
        ]
    return cases


# --------------------------------------------------------------------------------------------------
# state and implementations


@dataclass
class State:
    x_adv: torch.Tensor
    grad: torch.Tensor
    x: torch.Tensor
    eps: torch.Tensor
    alpha: torch.Tensor
    scale: torch.Tensor
    lo: torch.Tensor
    hi: torch.Tensor

    def clone(self) -> State:
        return State(*(t.clone(memory_format=torch.preserve_format) for t in
                       (self.x_adv, self.grad, self.x, self.eps, self.alpha, self.scale, self.lo, self.hi)))

    def kwargs(self) -> dict:
        return dict(eps=self.eps, alpha=self.alpha, scale=self.scale, lo=self.lo, hi=self.hi)


def make_state(case: Case, device: torch.device, seed: int = 0) -> State:
    g = torch.Generator(device="cpu").manual_seed(seed)
    B = case.shape[0]
    eps = torch.empty(B).uniform_(4 / 255, 8 / 255, generator=g)
    if case.op == "l2":
        eps = eps * 32.0          # a typical L2 radius (0.5 .. 1); the projection stays active
    x = torch.rand(case.shape, generator=g)
    delta = (torch.rand(case.shape, generator=g) * 2 - 1) * eps.view(-1, 1, 1, 1)
    if case.op == "l2":
        delta = delta / delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * eps.view(-1, 1, 1, 1) * 0.9
    x_adv = (x + delta).clamp_(0, 1)
    grad = torch.randn(case.shape, generator=g)
    fmt = torch.channels_last if case.channels_last else torch.contiguous_format

    def place(t: torch.Tensor) -> torch.Tensor:
        return t.to(device=device, dtype=case.dtype).contiguous(memory_format=fmt)

    pdt = torch.float64 if case.dtype == torch.float64 else torch.float32
    one = lambda v: torch.tensor([v], dtype=pdt, device=device)  # noqa: E731
    return State(place(x_adv), place(grad), place(x), eps.to(device, pdt), (eps / 4).to(device, pdt),
                 one(1.0), one(0.0), one(1.0))


def raw_op(case: Case):
    return getattr(torch.ops.nonrobust_ext, f"{case.op}_step_")


def wrapper_op(case: Case):
    return getattr(nrx_ops, f"{case.op}_step_")


def reference_op(case: Case):
    """The twin with its argument checks: the oracle of the correctness check."""
    return getattr(nrx_ref, f"{case.op}_step_")


def formula_op(case: Case):
    """The twin's formula without its checks: the eager and torch.compile baselines (a fair baseline
    does not pay for argument checks, which also break the compiled graph)."""
    return getattr(nrx_ref, f"{case.op}_step_formula_")


_compiled: dict[str, Callable] = {}
COMPILE_NOTES: list[str] = []          # workarounds applied to torch.compile, reported in the output
COMPILE_FAILED: dict[str, str] = {}     # case name -> why torch.compile could not be measured


def compiled_op(case: Case) -> Callable:
    if case.op not in _compiled:
        # dynamic=False: one specialised kernel per shape/layout/dtype, as a user compiling a fixed
        # training step would get.
        _compiled[case.op] = torch.compile(formula_op(case), dynamic=False)
    return _compiled[case.op]


def _disable_inductor_outer_loop_fusion() -> bool:
    """Work around an inductor CPU codegen crash (``InductorError: KeyError: 'bufN'`` in
    ``try_outer_loop_fusion_with_local_buf``, pytorch/pytorch#196570, fix proposed in #196639) that the
    L2 twin (reduction + in-place write to an input) triggers: turn off only the C++ backend's
    outer-loop fusion for the compilations that follow. Returns False if not applicable."""
    try:
        from torch._inductor.codegen import cpp as inductor_cpp
    except Exception:
        return False
    sched = getattr(inductor_cpp, "CppScheduling", None)
    if sched is None or not hasattr(sched, "can_fuse_vertical_outer_loop"):
        return False
    if getattr(sched, "_nrx_outer_loop_off", False):
        return False
    sched.can_fuse_vertical_outer_loop = lambda self, node1, node2: False
    sched._nrx_outer_loop_off = True
    return True


def first_compiled_call(case: Case, state: State, device: torch.device) -> float:
    """The first (compiling) call of the compiled twin, with the workaround above on an inductor
    crash; returns its wall time, or raises if compilation is impossible."""
    fn = compiled_op(case)
    t0 = time.perf_counter()
    try:
        fn(state.x_adv, state.grad, state.x, **state.kwargs())
    except Exception as err:
        if not (type(err).__name__ == "InductorError" and "KeyError" in str(err)
                and device.type == "cpu" and _disable_inductor_outer_loop_fusion()):
            raise
        COMPILE_NOTES.append(
            f"torch.compile of `reference.{case.op}_step_` crashed in inductor ({str(err).splitlines()[0]}; "
            "pytorch/pytorch#196570); from case "
            f"{case.name} on, the CPU backend's outer-loop fusion is switched off "
            "(`CppScheduling.can_fuse_vertical_outer_loop -> False`), all other fusion as default.")
        print(f"  note: {COMPILE_NOTES[-1]}", flush=True)
        t0 = time.perf_counter()
        fn(state.x_adv, state.grad, state.x, **state.kwargs())
    env.sync(device)
    return time.perf_counter() - t0


def _tolerances(dtype: torch.dtype) -> dict:
    if dtype == torch.float32:
        return dict(atol=1e-6, rtol=1.3e-6)
    if dtype == torch.float64:
        return dict(atol=1e-12, rtol=1e-12)
    # half types: one rounding step of the stored value
    return dict(atol=1e-3, rtol=1e-2) if dtype == torch.float16 else dict(atol=8e-3, rtol=1.6e-2)


def check_correctness(case: Case, device: torch.device, steps: int = 3) -> float:
    """Runs ``steps`` steps of every implementation from the same state; returns compile seconds."""
    base = make_state(case, device, seed=1)
    results = {}
    compile_s = float("nan")
    for impl in ("ref", "fused_op", "fused_wrapper", "compile"):
        s = base.clone()
        for step in range(steps):
            if impl == "compile" and step == 0:
                try:
                    compile_s = first_compiled_call(case, s, device)
                except Exception as err:
                    COMPILE_FAILED[case.name] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
                    print(f"  WARNING: torch.compile failed for {case.name}, not timed: "
                          f"{COMPILE_FAILED[case.name]}", flush=True)
                    break
            elif impl == "ref":
                reference_op(case)(s.x_adv, s.grad, s.x, **s.kwargs())
            elif impl == "fused_op":
                raw_op(case)(s.x_adv, s.grad, s.x, s.eps, s.alpha, s.scale, s.lo, s.hi, None)
            elif impl == "fused_wrapper":
                wrapper_op(case)(s.x_adv, s.grad, s.x, **s.kwargs())
            else:
                compiled_op(case)(s.x_adv, s.grad, s.x, **s.kwargs())
        results[impl] = s.x_adv
    tol = _tolerances(case.dtype)
    for impl in ("fused_op", "fused_wrapper", "compile"):
        if impl == "compile" and case.name in COMPILE_FAILED:
            continue
        try:
            torch.testing.assert_close(results[impl], results["ref"], **tol)
        except AssertionError as err:
            raise SystemExit(
                f"CORRECTNESS FAILURE in case {case.name}: {impl} differs from "
                f"nonrobust_ext.reference.{case.op}_step_ after {steps} steps; not timing.\n{err}"
            ) from None
    if (results["fused_op"] - base.x_adv).abs().max().item() == 0:
        raise SystemExit(f"CORRECTNESS FAILURE in case {case.name}: the step did not change x_adv")
    return compile_s


# --------------------------------------------------------------------------------------------------
# timing


def _timer(case: Case, impl: str, state: State, threads: int) -> tbench.Timer:
    g = {"x_adv": state.x_adv, "grad": state.grad, "x": state.x, "eps": state.eps,
         "alpha": state.alpha, "scale": state.scale, "lo": state.lo, "hi": state.hi}
    kw = "eps=eps, alpha=alpha, scale=scale, lo=lo, hi=hi"
    if impl == "fused_op":
        g["fn"], stmt = raw_op(case), "fn(x_adv, grad, x, eps, alpha, scale, lo, hi, None)"
    elif impl == "fused_wrapper":
        g["fn"], stmt = wrapper_op(case), f"fn(x_adv, grad, x, {kw})"
    elif impl == "eager":
        g["fn"], stmt = formula_op(case), f"fn(x_adv, grad, x, {kw})"
    elif impl == "compile":
        g["fn"], stmt = compiled_op(case), f"fn(x_adv, grad, x, {kw})"
    elif impl == "copy":
        g["dst"], g["src"] = torch.empty_like(state.x), state.x
        stmt = "dst.copy_(src)"
    else:
        raise ValueError(impl)
    return tbench.Timer(stmt=stmt, globals=g, num_threads=threads, label=case.name, sub_label=impl)


def time_case(case: Case, device: torch.device, threads: int, rounds: int,
              min_run_time: float) -> dict[str, env.Timing]:
    state = make_state(case, device, seed=2)
    impls = [i for i in IMPLS if not (i == "compile" and case.name in COMPILE_FAILED)]
    timers = {impl: _timer(case, impl, state, threads) for impl in impls}
    for t in timers.values():     # warm-up (caches, allocator, compiled graph)
        t.timeit(3)
    times: dict[str, list[float]] = {impl: [] for impl in impls}
    for r in range(rounds):
        order = impls if r % 2 == 0 else list(reversed(impls))
        for impl in order:
            m = timers[impl].blocked_autorange(min_run_time=min_run_time)
            times[impl] += list(m.times)   # per-call seconds, one value per block
    return {impl: env.summarise(ts) for impl, ts in times.items()}


def cpu_parallelism(case: Case, impl: str, threads: int, seconds: float = 0.3) -> float:
    """Process CPU time / wall time while ``impl`` runs back to back: about ``threads`` when the
    implementation uses all torch threads, about 1 when it runs serially (CPU only)."""
    import resource

    timer = _timer(case, impl, make_state(case, torch.device("cpu"), seed=3), threads)
    timer.timeit(2)
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        r0, t0, n = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter(), 0
        while time.perf_counter() - t0 < seconds:
            timer.timeit(1)   # Timer sets/restores the thread count itself
            n += 1
        wall = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        torch.set_num_threads(prev)
    return ((r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)) / wall


# --------------------------------------------------------------------------------------------------
# reporting


def build_rows(case: Case, timings: dict[str, env.Timing], device: torch.device, threads: int,
               commit: str) -> list[dict]:
    numel = 1
    for d in case.shape:
        numel *= d
    item = torch.empty((), dtype=case.dtype).element_size()
    step_bytes, copy_bytes = 4 * numel * item, 2 * numel * item
    copy_gbps = copy_bytes / timings["copy"].median_s / 1e9
    nan = float("nan")
    compile_s = timings["compile"].median_s if "compile" in timings else nan
    rows = []
    for impl in IMPLS:
        t = timings.get(impl, env.Timing(nan, nan, 0))
        gbps = (copy_bytes if impl == "copy" else step_bytes) / t.median_s / 1e9
        note = ""
        if impl == "compile" and case.name in COMPILE_FAILED:
            note = "compile failed: " + COMPILE_FAILED[case.name]
        elif impl == "compile" and COMPILE_NOTES and case.op == "l2":
            note = "inductor outer-loop fusion off (pytorch#196570)"
        rows.append({
            "case": case.name, "impl": impl, "dtype": str(case.dtype).replace("torch.", ""),
            "shape": "x".join(map(str, case.shape)), "layout": case.layout,
            "median_us": t.median_s * 1e6, "iqr_us": t.iqr_s * 1e6, "gbps": gbps,
            "ratio_to_copy": gbps / copy_gbps,
            "speedup_vs_eager": timings["eager"].median_s / t.median_s,
            "speedup_vs_compile": compile_s / t.median_s,
            "op": f"{case.op}_step_", "device": env.device_name(device, counts=False), "threads": threads,
            "torch": torch.__version__, "git": commit, "note": note,
        })
    return rows


def evaluate_targets(rows: list[dict], cases: dict[str, Case]) -> list[str]:
    fused = [r for r in rows if r["impl"] == "fused_op"]
    lines = []

    if not fused:
        return ["(no cases run)"]
    worst = min(fused, key=lambda r: r["speedup_vs_eager"])
    ok = all(r["speedup_vs_eager"] >= TARGET_SPEEDUP_VS_EAGER for r in fused)
    detail = ", ".join(f"{r['case']} {r['speedup_vs_eager']:.2f}x" for r in fused)
    lines.append(f"- Fused >= {TARGET_SPEEDUP_VS_EAGER:g}x the eager expression (every case): {env.verdict(ok)} "
                 f"(worst {worst['case']} {worst['speedup_vs_eager']:.2f}x; {detail})")
    comparable = [r for r in fused if r["speedup_vs_compile"] == r["speedup_vs_compile"]]  # not NaN
    missing = [r["case"] for r in fused if r not in comparable]
    if comparable:
        worst = min(comparable, key=lambda r: r["speedup_vs_compile"])
        ok = all(r["speedup_vs_compile"] >= 1.0 for r in comparable)
        detail = ", ".join(f"{r['case']} {r['speedup_vs_compile']:.2f}x" for r in comparable)
        lines.append(f"- Fused no slower than torch.compile (every case, medians): {env.verdict(ok)} "
                     f"(worst {worst['case']} {worst['speedup_vs_compile']:.2f}x; {detail})"
                     + (f"; not evaluated for {missing} (torch.compile failed)" if missing else ""))
    else:
        lines.append("- Fused no slower than torch.compile: not evaluated (torch.compile failed everywhere)")
    large = [r for r in fused if cases[r["case"]].large]
    if large:
        worst = min(large, key=lambda r: r["ratio_to_copy"])
        ok = all(r["ratio_to_copy"] >= TARGET_COPY_FRACTION for r in large)
        detail = ", ".join(f"{r['case']} {100 * r['ratio_to_copy']:.0f}%" for r in large)
        lines.append(f"- Fused >= {100 * TARGET_COPY_FRACTION:.0f}% of the copy's bandwidth on the large "
                     f"(ImageNet-sized) batch: {env.verdict(ok)} (worst {worst['case']} "
                     f"{100 * worst['ratio_to_copy']:.0f}%; {detail})")
    else:
        lines.append("- Bandwidth target on the large batch: not evaluated (no ImageNet-sized case run)")
    return lines


def write_outputs(out_dir: Path, tag: str, rows: list[dict], header: list[str], targets: list[str],
                  notes: list[str]) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out_dir / f"ops_{tag}.csv", out_dir / f"ops_{tag}.md"
    env.write_csv(csv_path, rows, CSV_FIELDS)
    cols = ("case", "impl", "dtype", "shape", "layout", "median_us", "iqr_us", "gbps", "ratio_to_copy",
            "speedup_vs_eager", "speedup_vs_compile", "note")
    heads = ("case", "impl", "dtype", "shape", "layout", "median (us)", "IQR (us)", "GB/s",
             "GB/s / copy", "speedup vs eager", "speedup vs compile", "note")
    fmt = {"median_us": "{:.1f}", "iqr_us": "{:.1f}", "gbps": "{:.2f}", "ratio_to_copy": "{:.2f}",
           "speedup_vs_eager": "{:.2f}x", "speedup_vs_compile": "{:.2f}x"}
    table = [[fmt[c].format(r[c]) if c in fmt else str(r[c]) for c in cols] for r in rows]
    env.write_markdown(
        md_path, "Fused attack-step ops: nonrobust_ext vs eager PyTorch, torch.compile and copy", header,
        heads, table, "Targets (computed from the table above, raw op `fused_op`)", targets, notes)
    return csv_path, md_path


# --------------------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    p = env.common_parser(__doc__)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = env.open_device(args.device)
    tag, rounds, min_run_time = env.timing_settings(args, device)

    available = [c for c in all_cases() if device.type == "cuda" or not c.cuda_only]
    if args.list:
        for c in available:
            print(f"{c.name:22s} {c.op:5s} {str(c.dtype):16s} {c.shape} {c.layout}")
        return 0
    selected = env.select_cases(available, args.cases, lambda c: c.name)
    threads = env.use_device(device, args.threads)

    # Enough compiled variants for every shape/layout/dtype of one op.
    import torch._dynamo as dynamo
    import torch._inductor.config as inductor_config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(dynamo.config, name):
            setattr(dynamo.config, name, max(getattr(dynamo.config, name), 32))
    # Compile from scratch every run: reproducible compile times, and no kernels reused from an
    # on-disk cache filled by another process with other inductor settings.
    if hasattr(inductor_config, "force_disable_caches"):
        inductor_config.force_disable_caches = True

    commit, build, started, load0 = env.start_run(device, threads)

    rows: list[dict] = []
    compile_times = {}
    parallelism: dict[str, tuple[float, float]] = {}
    t_all = time.perf_counter()
    for case in selected:
        t0 = time.perf_counter()
        compile_times[case.name] = check_correctness(case, device)
        t1 = time.perf_counter()
        timings = time_case(case, device, threads, rounds, min_run_time)
        case_rows = build_rows(case, timings, device, threads, commit)
        rows += case_rows
        if device.type == "cpu" and threads > 1:
            parallelism[case.name] = (cpu_parallelism(case, "fused_op", threads),
                                      cpu_parallelism(case, "copy", threads))
        t2 = time.perf_counter()
        print(f"\n[{case.name}] {case.dtype} {case.shape} {case.layout}: correctness OK "
              f"({t1 - t0:.1f} s incl. compile {compile_times[case.name]:.1f} s), timed in {t2 - t1:.1f} s",
              flush=True)
        for r in case_rows:
            print(f"  {r['impl']:14s} {r['median_us']:10.1f} us  IQR {r['iqr_us']:8.1f}  {r['gbps']:7.2f} GB/s"
                  f"  {r['ratio_to_copy']:5.2f} of copy  {r['speedup_vs_eager']:6.2f}x eager"
                  f"  {r['speedup_vs_compile']:5.2f}x compile", flush=True)
    total = time.perf_counter() - t_all
    load1 = env.load_average()

    header = env.provenance_header(started.strftime('%Y-%m-%d %H:%M:%S'), device, threads, build,
                               getattr(nonrobust_ext, '__version__', '?'), load0, load1) + [
        f"- Timing: torch.utils.benchmark blocked_autorange, {rounds} interleaved round(s) x "
        f"{min_run_time:g} s per implementation; median and IQR over all timed blocks"
        + (" (--quick)" if args.quick else ""),
        "- Bytes moved (convention): a step reads x_adv, grad, x and writes x_adv = 4 x numel x itemsize "
        "(the L2 step's extra norm pass over the data is not counted); the copy `dst.copy_(src)` moves "
        "2 x numel x itemsize. GB/s = bytes / median time, 1 GB = 1e9 bytes.",
        "- Implementations: `fused_op` = raw `torch.ops.nonrobust_ext.<op>` with pre-built parameter tensors "
        "(eps/alpha float32 [B], scale/lo/hi float32 [1]); `fused_wrapper` = `nonrobust_ext.ops.<op>` with "
        "the same tensors; `eager` = `nonrobust_ext.reference.<op>_step_formula_` (the twin's formula without "
        "its argument checks, same signature); "
        "`compile` = `torch.compile(reference.<op>_step_formula_, dynamic=False)` (inductor), "
        "compiled and warmed up before timing; "
        "`copy` = `dst.copy_(src)` of one tensor of the case's size and layout.",
        "- Parameters: eps per sample uniform in [4/255, 8/255] (x32, i.e. 0.5 .. 1, for L2), alpha = eps/4, "
        "bounds [0, 1], scale 1. Speedups and ratios are between implementations of the same case in this run.",
        "- Correctness checked before timing: fused (op, wrapper) and compiled == reference after 3 steps "
        "(assert_close, atol 1e-6 / rtol 1.3e-6 for float32).",
    ]
    notes = ["- First-call (compile) time of the torch.compile variant: "
             + ", ".join(f"{k} {v:.1f} s" for k, v in compile_times.items())
             + " (the first one includes inductor's one-time start-up; caches are disabled)",
             f"- Total wall time (correctness + compile + timing): {total:.1f} s"]
    if parallelism:
        notes.append(f"- Threads actually busy (process CPU time / wall time while running back to back, "
                     f"{threads} torch threads), fused_op vs copy: "
                     + ", ".join(f"{k} {a:.2f} vs {b:.2f}" for k, (a, b) in parallelism.items())
                     + ". A value near 1 means the implementation ran on one thread.")
    notes += [f"- {n}" for n in COMPILE_NOTES]
    notes += [f"- torch.compile failed for {k}, not timed: {v}" for k, v in COMPILE_FAILED.items()]
    notes += env.load_warning(load0)
    targets = evaluate_targets(rows, {c.name: c for c in selected})
    csv_path, md_path = write_outputs(args.out, tag, rows, header, targets, notes)
    print("\n" + "\n".join(targets))
    print(f"\nwrote {csv_path}\nwrote {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
