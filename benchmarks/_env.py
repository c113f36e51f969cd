"""Environment and bookkeeping helpers shared by the benchmark scripts in this folder.

Provenance (git commit, CPU / device name, the command that reproduces a run, load average, the
Markdown header every report starts with), CUDA synchronisation around timed calls, the median/IQR
summary of timed samples, the ``--cases`` selection by name or fnmatch pattern, the options the op
benchmarks share, and the CSV / Markdown writers of their reports.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import fnmatch
import functools
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch

from nonrobust_ext._platform import cpu_model

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"

T = TypeVar("T")


# --------------------------------------------------------------------------------------------------
# provenance


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """Short hash of HEAD, plus ``+uncommitted`` when tracked files differ from it; "unknown" outside git."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             timeout=10)
        if out.returncode != 0 or not out.stdout.strip():
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10)
        return out.stdout.strip() + ("+uncommitted" if dirty.stdout.strip() else "")
    except Exception:
        return "unknown"


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as /proc/cpuinfo lists them (``avx512f``, ``avx512_bf16``, ``amx_bf16``...);
    empty where there is no /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_features() -> str:
    """The vector features that decide CPU kernel speed, as ``AVX2 yes, AVX-512F yes, ...``."""
    flags = cpu_flags()
    if not flags:
        return "CPU flags unknown"
    named = (("AVX2", "avx2"), ("AVX-512F", "avx512f"), ("AVX512_BF16", "avx512_bf16"), ("AMX-BF16", "amx_bf16"))
    return ", ".join(f"{label} {'yes' if flag in flags else 'no'}" for label, flag in named)


def bf16_native(device: torch.device) -> bool:
    """Whether the device computes bfloat16 in hardware: on CUDA ``torch.cuda.is_bf16_supported()``;
    on CPU the AVX512_BF16 or AMX-BF16 flag (without them oneDNN emulates bf16 with fp32 arithmetic
    plus conversions, so autocast to bf16 only adds work). Native support does not make every model
    faster in bf16: the benchmarks measure that."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def device_name(device: torch.device, *, counts: bool = True) -> str:
    """The GPU's name, or the CPU model followed (``counts``) by its core and torch thread counts."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device.index if device.index is not None else torch.cuda.current_device())
    if not counts:
        return cpu_model()
    return f"{cpu_model()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"


def repro_command() -> str:
    """The command line of this run, with the script shown relative to the repository when inside it."""
    script = Path(sys.argv[0]).resolve()
    try:
        shown = str(script.relative_to(REPO))
    except ValueError:
        shown = str(script)
    return "python " + shlex.join([shown] + sys.argv[1:])


def load_average() -> tuple[float, float, float] | None:
    return os.getloadavg() if hasattr(os, "getloadavg") else None


def provenance_header(started: str, device: torch.device, threads: int, build: dict, version: str,
                      load0: Sequence[float] | None, load1: Sequence[float] | None) -> list[str]:
    """The Markdown bullet lines (date, machine, load, versions, build, commit, command) of a report."""
    build_str = ", ".join(f"{k}={v}" for k, v in build.items())
    return [
        f"- Date (UTC): {started}",
        f"- Machine: {cpu_model()}; os.cpu_count()={os.cpu_count()}; torch threads={threads}"
        + (f"; device: {device_name(device)}" if device.type == "cuda" else "; device: cpu"),
        "- Load average (1/5/15 min) at start / end: "
        + (f"{'/'.join(f'{v:.2f}' for v in load0)} / {'/'.join(f'{v:.2f}' for v in load1)}"
           if load0 and load1 else "n/a"),
        f"- torch {torch.__version__}; Python {platform.python_version()}",
        f"- nonrobust_ext {version} build_info: {build_str}",
        f"- Git commit: {git_commit()}",
        f"- Reproduce: `{repro_command()}`",
    ]


def load_warning(load0: Sequence[float] | None) -> list[str]:
    """A note for the report when the machine was busy before the run started."""
    if load0 and load0[0] > 0.5:
        return [f"- WARNING: the 1-min load average was {load0[0]:.2f} before this run started: other processes "
                "were using the CPU, which disturbs multi-threaded timings (a descheduled worker thread stalls a "
                "parallel region); rerun on an idle machine before quoting numbers."]
    return []


# --------------------------------------------------------------------------------------------------
# timing


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Wall seconds of one call of ``fn``, with the device synchronised before and after."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


@dataclass
class Timing:
    median_s: float
    iqr_s: float
    n: int


def summarise(ts: Sequence[float], method: str = "inclusive") -> Timing:
    """Median and interquartile range (``statistics.quantiles`` with ``method``) of timed samples."""
    if len(ts) >= 2:
        q = statistics.quantiles(ts, n=4, method=method)
        iqr = q[2] - q[0]
    else:
        iqr = 0.0
    return Timing(statistics.median(ts), iqr, len(ts))


# --------------------------------------------------------------------------------------------------
# case selection


def select_cases(available: Iterable[T], patterns: Sequence[str] | None, name: Callable[[T], str]) -> list[T]:
    """The cases whose name matches any of ``patterns`` (names or fnmatch patterns); all when None.
    Exits with the list of names when a pattern matches nothing."""
    available = list(available)
    if not patterns:
        return available
    names = [name(c) for c in available]
    unknown = [pat for pat in patterns if not any(fnmatch.fnmatchcase(n, pat) for n in names)]
    if unknown:
        raise SystemExit(f"unknown case(s) {unknown}; available: {names}")
    return [c for c, n in zip(available, names, strict=True) if any(fnmatch.fnmatchcase(n, pat) for pat in patterns)]


# --------------------------------------------------------------------------------------------------
# command line and reports of the op benchmarks (bench_ops, bench_stats)


def common_parser(doc: str) -> argparse.ArgumentParser:
    """A parser described by the first line of ``doc`` with the options every op benchmark takes: case
    selection, device, output, threads and timing budget."""
    p = argparse.ArgumentParser(description=doc.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer, shorter timing runs (smoke test)")
    p.add_argument("--cases", nargs="+", default=None,
                   help="case names or fnmatch patterns (default: all for the device)")
    p.add_argument("--list", action="store_true", help="list the cases and exit")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    p.add_argument("--out", type=Path, default=RESULTS, help="output folder")
    p.add_argument("--tag", default=None, help='suffix of the output file names (default: "cpu" or "cuda")')
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads for every implementation (default: torch's default, reported)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved timing rounds (default 3, quick 1)")
    p.add_argument("--min-run-time", type=float, default=None,
                   help="seconds per implementation per round (default 1.0, quick 0.2)")
    return p


def timing_settings(args: argparse.Namespace, device: torch.device) -> tuple[str, int, float]:
    """The output tag, the number of rounds and the seconds per implementation and round of a run."""
    return (args.tag or device.type, args.rounds or (1 if args.quick else 3),
            args.min_run_time or (0.2 if args.quick else 1.0))


def start_run(device: torch.device, threads: int) -> tuple[str, dict, datetime.datetime, tuple | None]:
    """Prints the run's device line; returns the commit, the build info, the start time and the load."""
    import nonrobust_ext

    commit, build = git_commit(), nonrobust_ext.build_info()
    started = datetime.datetime.now(datetime.timezone.utc)
    load0 = load_average()
    print(f"device={device_name(device, counts=False)}  threads={threads}  torch={torch.__version__}  "
          f"cpu_isa={build.get('cpu_isa')}  git={commit}", flush=True)
    return commit, build, started, load0


def open_device(name: str) -> torch.device:
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but torch.cuda.is_available() is False")
    return device


def use_device(device: torch.device, threads: int | None) -> int:
    """Makes ``device`` current (CUDA) and sets the torch thread count when given; returns the count."""
    if device.type == "cuda" and device.index is not None:  # torch 2.11 refuses set_device("cuda")
        torch.cuda.set_device(device)
    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def write_csv(path: Path, rows: Sequence[dict], fields: Sequence[str]) -> None:
    """One row per dict, the columns ``fields``; floats with 4 significant digits."""
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{r[k]:.4g}" if isinstance(r[k], float) else r[k]) for k in fields})


def write_markdown(path: Path, title: str, header: list[str], heads: Sequence[str], table: Iterable[Sequence[str]],
                   targets_title: str, targets: list[str], notes: list[str]) -> None:
    """A report: the title, the header bullets, the table, the targets and the notes (when any)."""
    lines = [f"# {title}", ""]
    lines += header + ["", "| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    lines += ["| " + " | ".join(cells) + " |" for cells in table]
    lines += ["", f"## {targets_title}", ""] + targets
    if notes:
        lines += ["", "## Notes", ""] + notes
    path.write_text("\n".join(lines) + "\n")


def verdict(ok: bool) -> str:
    return "**MET**" if ok else "**NOT MET**"


# --------------------------------------------------------------------------------------------------
# reports of the end-to-end benchmarks (bench_attacks, bench_training)


def run_header(started: str, device: torch.device) -> list[str]:
    """Date, machine, versions and build, commit and command, as Markdown bullet lines."""
    import nonrobust_ext

    return [
        f"- Date (UTC): {started}",
        f"- Machine: {device_name(device)}",
        f"- torch {torch.__version__}; nonrobust_ext build: {nonrobust_ext.build_info()}",
        f"- Git commit: {git_commit()}",
        f"- Reproduce: `{repro_command()}`",
    ]
