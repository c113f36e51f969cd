"""Benchmark of the compiled feature-statistics ops against their pure-PyTorch twins and a copy.

What it measures
    ``class_stats_k10``, ``class_stats_k1000``: ``torch.ops.nonrobust_ext.class_feature_stats`` on
        [65536, 512] float32 features with 10 and 1000 classes (uniform random labels), against the
        twin ``nonrobust_ext.reference.class_feature_stats`` (bincount + two index_add passes).
    ``discrepancy``: ``torch.ops.nonrobust_ext.feature_discrepancy`` on two [65536, 512] float32
        tensors against the twin ``reference.feature_discrepancy`` (subtract, square-sum, abs-mean).
    ``cka``: linear CKA of two [10000, 2048] float32 activations (three HSIC values), from three
        calls of the compiled ``linear_hsic`` (``O(N D^2)``, no N x N matrix) against the textbook
        implementation (``gram_cka`` below: the two N x N Gram matrices, centred by broadcasting) and
        against the twin ``reference.linear_hsic`` (float64, explicitly centred copies).
    ``copy``: ``dst.copy_(src)`` of one [65536, 512] float32 tensor: the bandwidth baseline, measured
        in the same run, between the other implementations.

    Correctness first: every case compares the op with its twin (and CKA with the Gram version) on
    the benchmark's own data and aborts on a mismatch.

    Timing: ``torch.utils.benchmark.Timer.blocked_autorange`` with torch's default thread count, in
    ``--rounds`` rounds that interleave the implementations (drift on a shared machine hits them
    alike); median and IQR over all timed blocks. The CKA case runs ``--cka-calls`` single calls per
    implementation and round instead (one Gram-based call takes seconds). Bytes moved, by convention:
    the class statistics read the features and labels once, the discrepancy reads both inputs once, the
    copy reads and writes one tensor (2 x its bytes). GB/s = bytes / median; "of copy" is the ratio of
    GB/s to the copy's GB/s in the same run.

How to run (from the repository root, or anywhere with the package installed)
    python benchmarks/bench_stats.py                        # full run, CPU, tag "cpu" (~3 minutes)
    python benchmarks/bench_stats.py --quick --out /tmp/b   # smoke test
    python benchmarks/bench_stats.py --cases 'class_*'      # names or fnmatch patterns (--list)
    python benchmarks/bench_stats.py --device cuda --tag h100

Where results go
    ``<out>/stats_<tag>.csv`` (one row per case x implementation) and ``<out>/stats_<tag>.md`` (machine
    and build header, the table, whether each target is met, computed from the numbers).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.utils.benchmark as tbench

import nonrobust_ext
from nonrobust_ext import ops as nrx_ops
from nonrobust_ext import reference as nrx_ref

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _env as env  # noqa: E402

CSV_FIELDS = (
    "case", "impl", "shape", "classes", "median_ms", "iqr_ms", "gbps", "ratio_to_copy", "speedup_vs_twin",
    "speedup_vs_gram", "device", "threads", "torch", "git", "note",
)

# Targets of the issue (for this CPU), evaluated on the op's numbers.
TARGET_SPEEDUP_VS_TWIN = 3.0
TARGET_COPY_FRACTION = 0.60


@dataclass(frozen=True)
class Case:
    name: str
    kind: str            # "class_stats", "discrepancy" or "cka"
    shape: tuple[int, int]
    classes: int = 0


def all_cases() -> list[Case]:
    return [
        Case("class_stats_k10", "class_stats", (65536, 512), 10),
        Case("class_stats_k1000", "class_stats", (65536, 512), 1000),
        Case("discrepancy", "discrepancy", (65536, 512)),
        Case("cka", "cka", (10000, 2048)),
    ]


# --------------------------------------------------------------------------------------------------
# data and implementations


def make_data(case: Case, device: torch.device, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    n, d = case.shape
    if case.kind == "class_stats":
        x = torch.randn(n, d, generator=g) + 3.0
        y = torch.randint(0, case.classes, (n,), generator=g)
        return {"x": x.to(device), "y": y.to(device), "k": case.classes}
    if case.kind == "discrepancy":
        clean = torch.randn(n, d, generator=g)
        adv = clean + 0.05 * torch.randn(n, d, generator=g)
        return {"clean": clean.to(device), "adv": adv.to(device)}
    # Post-ReLU-like activations of two "layers", the second a noisy linear map of the first.
    x = torch.relu(torch.randn(n, d, generator=g))
    w = torch.randn(d, d, generator=g) / d**0.5
    y = torch.relu(x @ w + 0.5 * torch.randn(n, d, generator=g))
    return {"x": x.to(device), "y": y.to(device)}


def gram_cka(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The textbook linear CKA: N x N Gram matrices, double-centred by broadcasting, in float32."""

    def centred_gram(a: torch.Tensor) -> torch.Tensor:
        k = a @ a.T
        return k - k.mean(0, keepdim=True) - k.mean(1, keepdim=True) + k.mean()

    k, l_ = centred_gram(x), centred_gram(y)
    return (k * l_).sum() / torch.sqrt((k * k).sum() * (l_ * l_).sum())


def op_cka(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Linear CKA from three calls of the compiled ``linear_hsic``."""
    return nrx_ops.linear_hsic(x, y) / torch.sqrt(nrx_ops.linear_hsic(x, x) * nrx_ops.linear_hsic(y, y))


def twin_cka(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    hxy, hxx, hyy = nrx_ref.linear_hsic(x, y), nrx_ref.linear_hsic(x, x), nrx_ref.linear_hsic(y, y)
    return hxy / torch.sqrt(hxx * hyy)


def impls_for(case: Case) -> dict[str, tuple[str, dict]]:
    """impl -> (statement, extra globals) for torch.utils.benchmark."""
    ops = torch.ops.nonrobust_ext
    if case.kind == "class_stats":
        return {
            "op": ("fn(x, y, k, False)", {"fn": ops.class_feature_stats}),
            "twin": ("fn(x, y, num_classes=k)", {"fn": nrx_ref.class_feature_stats}),
        }
    if case.kind == "discrepancy":
        return {
            "op": ("fn(clean, adv)", {"fn": ops.feature_discrepancy}),
            "twin": ("fn(clean, adv)", {"fn": nrx_ref.feature_discrepancy}),
        }
    return {
        "op": ("fn(x, y)", {"fn": op_cka}),
        "gram": ("fn(x, y)", {"fn": gram_cka}),
        "twin": ("fn(x, y)", {"fn": twin_cka}),
    }


def check_correctness(case: Case, data: dict) -> str:
    """Compares the op with its twin (and CKA with the Gram version); returns a note for the table."""
    try:
        if case.kind == "class_stats":
            got = torch.ops.nonrobust_ext.class_feature_stats(data["x"], data["y"], data["k"], False)
            want = nrx_ref.class_feature_stats(data["x"].double(), data["y"], num_classes=data["k"])
            for a, b in zip(got, want, strict=True):
                torch.testing.assert_close(a, b.to(a.dtype), rtol=1e-5, atol=1e-5)
            twin = nrx_ref.class_feature_stats(data["x"], data["y"], num_classes=data["k"])
            for a, b in zip(twin, want, strict=True):
                torch.testing.assert_close(a, b.to(a.dtype), rtol=1e-3, atol=1e-3)
            return "op and twin == float64 twin"
        if case.kind == "discrepancy":
            got = torch.ops.nonrobust_ext.feature_discrepancy(data["clean"], data["adv"])
            want = nrx_ref.feature_discrepancy(data["clean"].double(), data["adv"].double())
            for a, b in zip(got, want, strict=True):
                torch.testing.assert_close(a, b.to(a.dtype), rtol=1e-5, atol=1e-6)
            return "op == float64 twin"
        got = op_cka(data["x"], data["y"])
        gram = gram_cka(data["x"], data["y"])
        twin = twin_cka(data["x"], data["y"])
        torch.testing.assert_close(got, twin, rtol=1e-5, atol=0)
        torch.testing.assert_close(gram.double(), twin, rtol=1e-3, atol=0)
        return f"CKA = {float(twin):.6f}; |op - twin| = {abs(float(got - twin)):.1e}, |gram - twin| = " \
               f"{abs(float(gram.double() - twin)):.1e}"
    except AssertionError as err:
        raise SystemExit(f"CORRECTNESS FAILURE in case {case.name}; not timing.\n{err}") from None


def time_cases(cases: list[Case], device: torch.device, threads: int, rounds: int, min_run_time: float,
               cka_calls: int) -> dict[str, dict[str, env.Timing]]:
    """Times every case and the copy, interleaved round by round."""
    datas = {c.name: make_data(c, device, seed=1) for c in cases}
    copy_src = torch.randn(65536, 512, device=device)
    copy_dst = torch.empty_like(copy_src)
    timers: dict[tuple[str, str], tbench.Timer] = {}
    for c in cases:
        for impl, (stmt, extra) in impls_for(c).items():
            timers[(c.name, impl)] = tbench.Timer(stmt=stmt, globals={**datas[c.name], **extra}, num_threads=threads)
    timers[("copy", "copy")] = tbench.Timer(stmt="dst.copy_(src)", globals={"dst": copy_dst, "src": copy_src},
                                            num_threads=threads)
    cka_keys = {k for k in timers if k[0] == "cka"}
    for key, t in timers.items():  # warm-up: caches, allocator, BLAS thread pools
        t.timeit(1 if key in cka_keys else 3)
    times: dict[tuple[str, str], list[float]] = {k: [] for k in timers}
    keys = list(timers)
    for r in range(rounds):
        for key in keys if r % 2 == 0 else list(reversed(keys)):
            if key in cka_keys:
                times[key] += [timers[key].timeit(1).median for _ in range(cka_calls)]
            else:
                times[key] += list(timers[key].blocked_autorange(min_run_time=min_run_time).times)
        print(f"  round {r + 1}/{rounds} done", flush=True)
    out: dict[str, dict[str, env.Timing]] = {}
    for (case, impl), ts in times.items():
        out.setdefault(case, {})[impl] = env.summarise(ts)
    return out


# --------------------------------------------------------------------------------------------------
# reporting


def build_rows(cases: list[Case], timings: dict, notes: dict, device: torch.device, threads: int,
               commit: str) -> list[dict]:
    nan = float("nan")
    copy = timings["copy"]["copy"]
    copy_bytes = 2 * 65536 * 512 * 4
    copy_gbps = copy_bytes / copy.median_s / 1e9
    common = {"device": env.device_name(device, counts=False), "threads": threads, "torch": torch.__version__,
              "git": commit}
    rows = [{"case": "copy", "impl": "copy", "shape": "65536x512", "classes": "", "median_ms": copy.median_s * 1e3,
             "iqr_ms": copy.iqr_s * 1e3, "gbps": copy_gbps, "ratio_to_copy": 1.0, "speedup_vs_twin": nan,
             "speedup_vs_gram": nan, "note": "dst.copy_(src), float32", **common}]
    for c in cases:
        n, d = c.shape
        if c.kind == "class_stats":
            moved = n * d * 4 + n * 8
        elif c.kind == "discrepancy":
            moved = 2 * n * d * 4
        else:
            moved = 0
        t = timings[c.name]
        for impl, tm in t.items():
            gbps = moved / tm.median_s / 1e9 if moved else nan
            rows.append({
                "case": c.name, "impl": impl, "shape": f"{n}x{d}", "classes": c.classes or "",
                "median_ms": tm.median_s * 1e3, "iqr_ms": tm.iqr_s * 1e3, "gbps": gbps,
                "ratio_to_copy": gbps / copy_gbps if moved else nan,
                "speedup_vs_twin": t["twin"].median_s / tm.median_s,
                "speedup_vs_gram": t["gram"].median_s / tm.median_s if "gram" in t else nan,
                "note": notes.get(c.name, "") if impl == "op" else "", **common,
            })
    return rows


def evaluate_targets(rows: list[dict]) -> list[str]:
    ops = [r for r in rows if r["impl"] == "op"]
    one_pass = [r for r in ops if r["case"] != "cka"]
    lines = []

    if one_pass:
        worst = min(one_pass, key=lambda r: r["speedup_vs_twin"])
        ok = all(r["speedup_vs_twin"] >= TARGET_SPEEDUP_VS_TWIN for r in one_pass)
        detail = ", ".join(f"{r['case']} {r['speedup_vs_twin']:.2f}x" for r in one_pass)
        lines.append(f"- One-pass statistics >= {TARGET_SPEEDUP_VS_TWIN:g}x their pure-PyTorch twins: "
                     f"{env.verdict(ok)} (worst {worst['case']} {worst['speedup_vs_twin']:.2f}x; {detail})")
        worst = min(one_pass, key=lambda r: r["ratio_to_copy"])
        ok = all(r["ratio_to_copy"] >= TARGET_COPY_FRACTION for r in one_pass)
        detail = ", ".join(f"{r['case']} {100 * r['ratio_to_copy']:.0f}%" for r in one_pass)
        lines.append(f"- One-pass statistics >= {100 * TARGET_COPY_FRACTION:.0f}% of the copy's bandwidth: "
                     f"{env.verdict(ok)} (worst {worst['case']} {100 * worst['ratio_to_copy']:.0f}%; {detail})")
    cka = [r for r in ops if r["case"] == "cka"]
    if cka:
        r = cka[0]
        lines.append(f"- CKA without N x N matrices vs the Gram-matrix implementation: {r['speedup_vs_gram']:.2f}x "
                     f"(vs the float64 twin: {r['speedup_vs_twin']:.2f}x); no target set")
    return lines or ["(no cases run)"]


def write_outputs(out_dir: Path, tag: str, rows: list[dict], header: list[str], targets: list[str],
                  notes: list[str]) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out_dir / f"stats_{tag}.csv", out_dir / f"stats_{tag}.md"
    env.write_csv(csv_path, rows, CSV_FIELDS)
    cols = ("case", "impl", "shape", "classes", "median_ms", "iqr_ms", "gbps", "ratio_to_copy", "speedup_vs_twin",
            "speedup_vs_gram", "note")
    heads = ("case", "impl", "shape", "K", "median (ms)", "IQR (ms)", "GB/s", "GB/s / copy", "speedup vs twin",
             "speedup vs gram", "note")

    def cell(c: str, v) -> str:
        if isinstance(v, float):
            if v != v:  # NaN: not applicable
                return ""
            return {"median_ms": f"{v:.2f}", "iqr_ms": f"{v:.2f}", "gbps": f"{v:.2f}",
                    "ratio_to_copy": f"{v:.2f}"}.get(c, f"{v:.2f}x")
        return str(v)

    table = [[cell(c, r[c]) for c in cols] for r in rows]
    env.write_markdown(
        md_path, "Feature-statistics ops: nonrobust_ext vs their pure-PyTorch twins and a copy", header,
        heads, table, "Targets (computed from the table above, raw ops)", targets, notes)
    return csv_path, md_path


# --------------------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    p = env.common_parser(__doc__)
    p.add_argument("--cka-calls", type=int, default=None, help="CKA calls per implementation per round "
                   "(default 1)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = env.open_device(args.device)
    tag, rounds, min_run_time = env.timing_settings(args, device)
    cka_calls = args.cka_calls or 1
    available = all_cases()
    if args.list:
        for c in available:
            print(f"{c.name:20s} {c.kind:12s} {c.shape} K={c.classes}")
        return 0
    selected = env.select_cases(available, args.cases, lambda c: c.name)
    threads = env.use_device(device, args.threads)
    commit, build, started, load0 = env.start_run(device, threads)

    t_all = time.perf_counter()
    notes = {}
    for c in selected:
        t0 = time.perf_counter()
        notes[c.name] = check_correctness(c, make_data(c, device, seed=0))
        print(f"[{c.name}] correctness OK ({time.perf_counter() - t0:.1f} s): {notes[c.name]}", flush=True)
    timings = time_cases(selected, device, threads, rounds, min_run_time, cka_calls)
    total = time.perf_counter() - t_all
    load1 = env.load_average()
    rows = build_rows(selected, timings, notes, device, threads, commit)
    for r in rows:
        print(f"  {r['case']:18s} {r['impl']:5s} {r['median_ms']:10.2f} ms  IQR {r['iqr_ms']:7.2f}  "
              f"{r['gbps']:7.2f} GB/s  {r['ratio_to_copy']:5.2f} of copy  {r['speedup_vs_twin']:6.2f}x twin"
              f"  {r['speedup_vs_gram']:6.2f}x gram", flush=True)

    header = env.provenance_header(started.strftime('%Y-%m-%d %H:%M:%S'), device, threads, build,
                               getattr(nonrobust_ext, '__version__', '?'), load0, load1) + [
        f"- Timing: torch.utils.benchmark, {rounds} interleaved round(s); blocked_autorange x {min_run_time:g} s "
        f"per implementation and round, except CKA: {cka_calls} single call(s) per implementation and round; "
        "median and IQR over all timed blocks/calls" + (" (--quick)" if args.quick else ""),
        "- Implementations: `op` = the raw `torch.ops.nonrobust_ext.<op>` (for CKA: three "
        "`nonrobust_ext.ops.linear_hsic` calls); `twin` = `nonrobust_ext.reference.<op>` (CKA: three float64 "
        "twin HSICs); "
        "`gram` = textbook CKA with the two N x N centred Gram matrices (float32); `copy` = `dst.copy_(src)` "
        "of a [65536, 512] float32 tensor.",
        "- Bytes moved (convention): class statistics read features + int64 labels once; the discrepancy reads "
        "both inputs once; the copy reads and writes one tensor. GB/s = bytes / median, 1 GB = 1e9 bytes. "
        "Speedups and ratios are between implementations measured in this run.",
        "- Data: features N(3, 1) with uniform random labels; discrepancy: clean N(0, 1), adv = clean + "
        "N(0, 0.05^2); CKA: post-ReLU activations, the second layer a noisy random linear map of the first.",
    ]
    run_notes = [f"- Total wall time (correctness + timing): {total:.1f} s"] + env.load_warning(load0)
    targets = evaluate_targets(rows)
    csv_path, md_path = write_outputs(args.out, tag, rows, header, targets, run_notes)
    print("\n" + "\n".join(targets))
    print(f"\nwrote {csv_path}\nwrote {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
