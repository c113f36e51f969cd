"""Compile-check the CUDA sources (csrc/cuda/*.cu) with nvcc against the installed torch's headers.

Why this exists: CI machines have a CPU-only torch and no GPU, so the CMake build leaves the CUDA
kernels out there, and nothing else would notice a ``.cu`` file that no longer compiles. A CPU-only
torch still ships the c10/ATen CUDA headers, and nvcc can compile against them (objects only: there is
no CUDA torch to link or run against). The flags follow the CUDA flags in CMakeLists.txt, so that this
check and the real GPU build see the same code.

Usage::

    python tools/check_cuda_compile.py                       # every csrc/cuda/*.cu, archs 80 and 90
    python tools/check_cuda_compile.py --archs "80;90" --files some.cu
    python tools/check_cuda_compile.py --allow-missing-nvcc  # exit 0 with a note when nvcc is absent

Exit status: 0 when every file compiles (nvcc's warnings are shown but do not fail the check), 1 when
any file fails (nvcc's messages are shown), 2 for a usage problem, including a missing nvcc without
``--allow-missing-nvcc``.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def parse_archs(text: str) -> list[str]:
    """``"80;90"`` (CMake style; commas and spaces also separate) -> ``["80", "90"]``."""
    archs = [a for a in re.split(r"[;,\s]+", text.strip()) if a]
    bad = [a for a in archs if not re.fullmatch(r"\d+[a-z]?", a)]
    if not archs or bad:
        raise ValueError(f"--archs must list compute capabilities such as '80;90' or '90a', got {text!r}")
    return archs


def display_path(path: Path) -> Path:
    resolved = path.resolve()
    return resolved.relative_to(REPO_ROOT) if resolved.is_relative_to(REPO_ROOT) else path


def nvcc_flags(archs: list[str]) -> list[str]:
    import torch

    torch_include = Path(torch.__file__).resolve().parent / "include"
    flags = [
        "-c",
        "-std=c++20",
        "--expt-relaxed-constexpr",
        "-O3",
        "-fmad=false",
        # A CPU-only torch has no generated c10/cuda/impl/cuda_cmake_macros.h.
        "-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE",
        f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
        "-D__CUDA_NO_HALF_OPERATORS__",
        "-D__CUDA_NO_HALF_CONVERSIONS__",
        "-D__CUDA_NO_BFLOAT16_CONVERSIONS__",
        "-D__CUDA_NO_HALF2_OPERATORS__",
        # As CMake's SYSTEM include: warnings from torch's own headers are not ours to fix.
        "-isystem",
        str(torch_include),
        "-isystem",
        str(torch_include / "torch" / "csrc" / "api" / "include"),
    ]
    for arch in archs:
        flags += ["-gencode", f"arch=compute_{arch},code=sm_{arch}"]
    return flags


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", default="80;90", help="CUDA architectures, CMake style (default: %(default)s)")
    parser.add_argument("--files", nargs="+", type=Path, help="the .cu files to check (default: every csrc/cuda/*.cu)")
    parser.add_argument("--nvcc", default=shutil.which("nvcc"), help="the nvcc to use (default: nvcc on PATH)")
    parser.add_argument(
        "--allow-missing-nvcc",
        action="store_true",
        help="exit 0 instead of failing when no nvcc is found (for machines without a CUDA toolkit)",
    )
    args = parser.parse_args(argv)

    try:
        archs = parse_archs(args.archs)
    except ValueError as exc:
        parser.error(str(exc))
    if not args.nvcc:
        if args.allow_missing_nvcc:
            print("no nvcc found: skipped")
            return 0
        print("error: no nvcc found on PATH (pass --nvcc, or --allow-missing-nvcc to skip)", file=sys.stderr)
        return 2
    files = args.files or sorted((REPO_ROOT / "csrc" / "cuda").glob("*.cu"))
    if not files:
        # Passing on zero files would make the check vacuous.
        print(f"error: no .cu files found under {REPO_ROOT / 'csrc' / 'cuda'}", file=sys.stderr)
        return 2
    missing = [f for f in files if not f.is_file()]
    if missing:
        print(f"error: no such file: {', '.join(map(str, missing))}", file=sys.stderr)
        return 2

    flags = nvcc_flags(archs)
    print(f"{args.nvcc}, archs {', '.join(archs)}: {len(files)} file(s), one at a time", flush=True)
    failed = []
    with tempfile.TemporaryDirectory(prefix="nrx_cuda_check_") as out_dir:
        for source in files:
            shown = display_path(source)
            obj = Path(out_dir) / (source.stem + ".o")
            start = time.perf_counter()
            result = subprocess.run(
                [args.nvcc, *flags, str(source), "-o", str(obj)],
                capture_output=True,
                text=True,
                check=False,
            )
            seconds = time.perf_counter() - start
            messages = (result.stdout + result.stderr).strip()
            status = "ok" if result.returncode == 0 else f"FAILED (nvcc exit {result.returncode})"
            print(f"{status:<24} {shown}  {seconds:.1f} s", flush=True)
            if messages:
                print(messages, file=sys.stderr if result.returncode else sys.stdout, flush=True)
            if result.returncode != 0:
                failed.append(shown)
    if failed:
        print(
            f"{len(failed)} of {len(files)} file(s) failed to compile: {', '.join(map(str, failed))}", file=sys.stderr
        )
        return 1
    print(f"all {len(files)} file(s) compiled")
    return 0


if __name__ == "__main__":
    sys.exit(main())
