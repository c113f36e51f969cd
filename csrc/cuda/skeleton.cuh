// What every CUDA kernel of nonrobust_ext shares, written once: block shape, launch configuration, the
// grid-stride loop over work units, warp reductions, the launch itself (current stream + launch check)
// and the dtype dispatch.
//
// The rest of the skeleton lives with the argument checks, shared with the CPU kernels: each entry point
// first builds its prologue object (StepArgs in csrc/common/step_args.h; ClassStatsArgs / FeaturePairArgs
// in csrc/common/stats_args.h), which checks devices, dtypes, shapes and memory before anything touches
// the GPU, then holds the device guard for the launches that follow.
#pragma once

#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <cstdint>

namespace nonrobust_ext::cuda {

constexpr int kThreads = 256;  // threads per block of every kernel
constexpr int kWarpSize = 32;
constexpr int kWarps = kThreads / kWarpSize;
// Grid-stride kernels launch at most this many blocks and loop over the remaining units: more blocks
// would only add scheduling work. (Also the limit of gridDim.y and gridDim.z.)
constexpr int64_t kMaxBlocks = 65535;

__host__ __device__ __forceinline__ int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Blocks for a grid-stride launch over `units` work units.
inline unsigned int grid_stride_blocks(int64_t units) {
  return static_cast<unsigned int>(std::clamp<int64_t>(units, 0, kMaxBlocks));
}

// Calls body(unit) for the units u = blockIdx.x, blockIdx.x + gridDim.x, ... below `units`. A unit is
// handled by the whole block, so body may synchronise the block (every thread sees the same units).
template <typename Body>
__device__ __forceinline__ void for_each_unit(int64_t units, Body&& body) {
  for (int64_t unit = blockIdx.x; unit < units; unit += gridDim.x) body(unit);
}

// Sum of v over the warp, in lane 0 (fixed shuffle order: deterministic).
__device__ __forceinline__ double warp_sum(double v) {
  for (int delta = kWarpSize / 2; delta > 0; delta /= 2) v += __shfl_down_sync(0xffffffffu, v, delta);
  return v;
}

// Launches kernel<<<grid, threads>>> on the current stream and checks the launch. An empty grid (no
// work) launches nothing.
template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), dim3 grid, int threads, Args... args) {
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) return;
  kernel<<<grid, threads, 0, c10::cuda::getCurrentCUDAStream()>>>(args...);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace nonrobust_ext::cuda

// The dtypes every CUDA kernel is instantiated for: float32, float64, float16, bfloat16 (computing in
// at::opmath_type: float32 for the half types).
#define NRX_CUDA_DISPATCH_FLOATING(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, __VA_ARGS__)
