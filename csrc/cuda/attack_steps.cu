// CUDA kernels of the attack-state ops: linf_step_, l2_step_, random_init_.
//
// Same semantics and the same rounding as the CPU kernels (csrc/cpu/attack_steps.cpp): every
// per-element expression is written in the CPU's order of operations, and the build passes -fmad=false
// so that nvcc does not contract them into FMAs. The pure-PyTorch twin of each op is in
// nonrobust_ext/reference.py. The argument checks are the prologue shared with the CPU (StepArgs,
// csrc/common/step_args.h); the parameter values are not checked here (that would be a host sync per
// step), but a NaN parameter propagates into the output exactly as in the twin (clamp_nan, sign_nan and
// l2_coefficients in csrc/common/step_math.h). The launch skeleton is csrc/cuda/skeleton.cuh.
//
// Work partitioning: each sample of the canonical (dense, batch-outermost) tensor is cut into pieces,
// and a block processes one (sample, piece) unit at a time. The number of pieces per sample adapts so
// that one large sample and many small ones both give enough blocks to fill the GPU. A unit never
// straddles samples, so per-sample parameters and the active mask are uniform across a block and an
// inactive sample costs no memory traffic.
//
// The L2 ops need a per-sample reduction before the write. It takes two launches and no atomics: every
// block writes its unit's partial sums to a scratch tensor, then every block of the write launch
// re-reduces its sample's partials in a fixed order. The result is bitwise reproducible, and since the
// partition does not depend on the GPU model, the same on every GPU.
#include "../common/counter_rng.h"
#include "../common/step_args.h"
#include "../common/step_math.h"
#include "skeleton.cuh"

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>

namespace nonrobust_ext::cuda {
namespace {

// Units a launch aims for: about two waves of 256-thread blocks on the largest current GPUs. A constant
// rather than the SM count, so that how the L2 sums are grouped (and so the rounding of the result)
// does not depend on which GPU runs the op.
constexpr int64_t kTargetUnits = 2048;

// Elements moved by one 16-byte memory transaction.
template <typename T>
constexpr int kPackLen = 16 / static_cast<int>(sizeof(T));

template <typename T>
struct alignas(16) Pack {
  T v[kPackLen<T>];
};

// How the canonical tensor is cut into units: pieces of `piece_len` elements (a multiple of the pack
// length) inside one sample. The channel of memory offset o inside a sample is
// (o / channel_stride) % channels.
struct Partition {
  int64_t sample_len = 0;
  int64_t piece_len = 0;
  int64_t pieces_per_sample = 0;
  int64_t units = 0;
  int64_t channels = 0;
  int64_t channel_stride = 0;
  // A thread's next pack is kThreads packs further on; these move its channel cursor there.
  int64_t thread_step_within = 0;    // (kThreads * pack) % channel_stride
  int64_t thread_step_channels = 0;  // (kThreads * pack / channel_stride) % channels
  // Every pack is whole and 16-byte aligned in every tensor the op touches.
  bool vectorised = false;
};

Partition make_partition(const StepArgs& a, int pack_len, bool pointers_aligned) {
  Partition p;
  p.sample_len = a.per_sample;
  p.channels = a.channels;
  p.channel_stride = a.channel_stride;
  const int64_t most_pieces = ceil_div(p.sample_len, int64_t{kThreads} * pack_len);
  const int64_t pieces = std::clamp(ceil_div(kTargetUnits, a.batch), int64_t{1}, most_pieces);
  p.piece_len = ceil_div(ceil_div(p.sample_len, pieces), pack_len) * pack_len;
  p.pieces_per_sample = ceil_div(p.sample_len, p.piece_len);
  p.units = a.batch * p.pieces_per_sample;
  const int64_t thread_step = int64_t{kThreads} * pack_len;
  p.thread_step_within = thread_step % p.channel_stride;
  p.thread_step_channels = (thread_step / p.channel_stride) % p.channels;
  // Samples, and therefore pieces, start on a pack boundary only when the sample length allows it.
  p.vectorised = pointers_aligned && p.sample_len % pack_len == 0;
  return p;
}

bool aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

// The channel of a memory offset that walks forward through a sample, kept up to date without a
// division per element (64-bit integer division is slow on GPUs).
struct ChannelCursor {
  int64_t within;   // offset % channel_stride
  int64_t channel;  // (offset / channel_stride) % channels

  __device__ ChannelCursor(int64_t offset, const Partition& p)
      : within(offset % p.channel_stride), channel((offset / p.channel_stride) % p.channels) {}

  __device__ void next_element(const Partition& p) {
    if (++within == p.channel_stride) {
      within = 0;
      if (++channel == p.channels) channel = 0;
    }
  }

  __device__ void next_thread_pack(const Partition& p) {
    within += p.thread_step_within;
    const bool carry = within >= p.channel_stride;
    if (carry) within -= p.channel_stride;
    channel += p.thread_step_channels + (carry ? 1 : 0);  // < 2 * channels
    if (channel >= p.channels) channel -= p.channels;
  }
};

// Calls body(offset, count, cursor) for each pack of this thread inside `unit`, where offset is the
// pack's first element within the sample and cursor is at that offset. A block's threads take
// neighbouring packs, so that a warp's loads are contiguous.
template <int kLen, typename Body>
__device__ __forceinline__ void for_each_pack(const Partition& p, int64_t unit, Body&& body) {
  const int64_t begin = (unit % p.pieces_per_sample) * p.piece_len;
  const int64_t end = std::min(begin + p.piece_len, p.sample_len);
  int64_t offset = begin + int64_t{threadIdx.x} * kLen;
  if (offset >= end) return;
  ChannelCursor cursor(offset, p);
  for (; offset < end; offset += int64_t{kThreads} * kLen) {
    body(offset, static_cast<int>(std::min<int64_t>(kLen, end - offset)), cursor);
    cursor.next_thread_pack(p);
  }
}

template <typename T>
__device__ __forceinline__ Pack<T> load_pack(const T* ptr, int count, bool vectorised) {
  if (vectorised && count == kPackLen<T>) return *reinterpret_cast<const Pack<T>*>(ptr);
  Pack<T> pack;
#pragma unroll
  for (int k = 0; k < kPackLen<T>; ++k) {
    if (k < count) pack.v[k] = ptr[k];
  }
  return pack;
}

template <typename T>
__device__ __forceinline__ void store_pack(T* ptr, const Pack<T>& pack, int count, bool vectorised) {
  if (vectorised && count == kPackLen<T>) {
    // Through the store intrinsic: nvcc splits a plain 16-byte struct store into scalar stores in
    // some kernels (the random_init_ ones, for float and double), losing the 128-bit transaction.
    uint4 bits;
    std::memcpy(&bits, &pack, sizeof(bits));
    __stwb(reinterpret_cast<uint4*>(ptr), bits);
    return;
  }
#pragma unroll
  for (int k = 0; k < kPackLen<T>; ++k) {
    if (k < count) ptr[k] = pack.v[k];
  }
}

// Deterministic sum over the block (fixed shuffle and shared-memory order); the total is in thread 0.
template <int N>
__device__ void block_sum(double (&v)[N]) {
  __shared__ double warp_totals[kWarps][N];
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
#pragma unroll
  for (int k = 0; k < N; ++k) v[k] = warp_sum(v[k]);
  if (lane == 0) {
#pragma unroll
    for (int k = 0; k < N; ++k) warp_totals[warp][k] = v[k];
  }
  __syncthreads();
  if (warp == 0) {
#pragma unroll
    for (int k = 0; k < N; ++k) {
      v[k] = lane < kWarps ? warp_totals[lane][k] : 0.0;
      for (int delta = kWarps / 2; delta > 0; delta /= 2) v[k] += __shfl_down_sync(0xffffffffu, v[k], delta);
    }
  }
  __syncthreads();  // warp_totals is reused when the block moves on to its next unit
}

// The N sums of sample b from the partials its units wrote (partial[unit * N + k]); total in thread 0.
template <int N>
__device__ void sample_sums(const double* partial, int64_t b, int64_t pieces_per_sample, double (&sums)[N]) {
#pragma unroll
  for (int k = 0; k < N; ++k) sums[k] = 0.0;
  for (int64_t piece = threadIdx.x; piece < pieces_per_sample; piece += kThreads) {
#pragma unroll
    for (int k = 0; k < N; ++k) sums[k] += partial[(b * pieces_per_sample + piece) * N + k];
  }
  block_sum(sums);
}

// Device pointers of the op's operands, in the canonical layout of StepArgs.
template <typename T>
struct Operands {
  using A = at::opmath_type<T>;
  T* x_adv;
  const T* grad;  // nullptr for random_init_
  const T* x;
  const A* eps;
  const A* alpha;  // nullptr for random_init_
  const A* scale;
  const A* lo;
  const A* hi;
  const bool* active;  // nullptr when every sample is active

  __device__ bool inactive(int64_t b) const { return active != nullptr && !active[b]; }
};

template <typename T>
Operands<T> operands_of(const StepArgs& a) {
  using A = at::opmath_type<T>;
  return Operands<T>{
      a.target.data_ptr<T>(),
      a.grad.defined() ? a.grad.data_ptr<T>() : nullptr,
      a.x.data_ptr<T>(),
      a.eps.data_ptr<A>(),
      a.alpha.defined() ? a.alpha.data_ptr<A>() : nullptr,
      a.scale.data_ptr<A>(),
      a.lo.data_ptr<A>(),
      a.hi.data_ptr<A>(),
      a.active ? a.active->data_ptr<bool>() : nullptr,
  };
}

// The unit loop of every step kernel: body(unit, b) for this block's (sample b, piece) units, grid-stride,
// skipping inactive samples (uniform across the block: a unit never straddles samples).
template <typename T, typename Body>
__device__ __forceinline__ void for_each_active_unit(const Operands<T>& op, const Partition& part, Body&& body) {
  for_each_unit(part.units, [&](int64_t unit) {
    const int64_t b = unit / part.pieces_per_sample;
    if (!op.inactive(b)) body(unit, b);
  });
}

// One grid-stride launch over the partition's units.
template <typename... Params, typename... Args>
void launch_units(void (*kernel)(Params...), const Partition& part, Args... args) {
  launch(kernel, dim3(grid_stride_blocks(part.units)), kThreads, args...);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) linf_step_kernel(Operands<T> op, Partition part) {
  using A = at::opmath_type<T>;
  for_each_active_unit(op, part, [&](int64_t unit, int64_t b) {
    const A eps = op.eps[b];
    const A alpha = op.alpha[b];
    const int64_t base = b * part.sample_len;
    for_each_pack<kPackLen<T>>(part, unit, [&](int64_t offset, int count, ChannelCursor cursor) {
      const int64_t i = base + offset;
      const Pack<T> xa = load_pack(op.x_adv + i, count, part.vectorised);
      const Pack<T> g = load_pack(op.grad + i, count, part.vectorised);
      const Pack<T> x = load_pack(op.x + i, count, part.vectorised);
      Pack<T> out;
#pragma unroll
      for (int k = 0; k < kPackLen<T>; ++k) {
        if (k < count) {
          const int64_t c = cursor.channel;
          const A s = op.scale[c];
          const A xv = static_cast<A>(x.v[k]);
          const A radius = eps * s;
          A v = static_cast<A>(xa.v[k]) + alpha * s * sign_nan(static_cast<A>(g.v[k]));
          v = clamp_nan(v, xv - radius, xv + radius);
          out.v[k] = static_cast<T>(clamp_nan(v, op.lo[c], op.hi[c]));
        }
        cursor.next_element(part);
      }
      store_pack(op.x_adv + i, out, count, part.vectorised);
    });
  });
}

// partial[unit * 3 + k] <- the unit's { sum (g*s)^2, sum (xa-x)*g, sum ((xa-x)/s)^2 }. Each pack is
// summed in the compute type, as the CPU's short float lanes are, and packs are added in double.
template <typename T>
__global__ void __launch_bounds__(kThreads) l2_step_sums_kernel(Operands<T> op, Partition part, double* partial) {
  using A = at::opmath_type<T>;
  for_each_active_unit(op, part, [&](int64_t unit, int64_t b) {
    const int64_t base = b * part.sample_len;
    double sums[3] = {0.0, 0.0, 0.0};
    for_each_pack<kPackLen<T>>(part, unit, [&](int64_t offset, int count, ChannelCursor cursor) {
      const int64_t i = base + offset;
      const Pack<T> xa = load_pack(op.x_adv + i, count, part.vectorised);
      const Pack<T> g = load_pack(op.grad + i, count, part.vectorised);
      const Pack<T> x = load_pack(op.x + i, count, part.vectorised);
      A gg = 0, dg = 0, dd = 0;
#pragma unroll
      for (int k = 0; k < kPackLen<T>; ++k) {
        if (k < count) {
          const A s = op.scale[cursor.channel];
          const A gv = static_cast<A>(g.v[k]);
          const A d = static_cast<A>(xa.v[k]) - static_cast<A>(x.v[k]);
          const A gs = gv * s;
          const A ds = d * (A(1) / s);
          gg += gs * gs;
          dg += d * gv;
          dd += ds * ds;
        }
        cursor.next_element(part);
      }
      sums[0] += gg;
      sums[1] += dg;
      sums[2] += dd;
    });
    block_sum(sums);
    if (threadIdx.x == 0) {
      for (int k = 0; k < 3; ++k) partial[unit * 3 + k] = sums[k];
    }
  });
}

template <typename T>
__global__ void __launch_bounds__(kThreads) l2_step_write_kernel(Operands<T> op, Partition part,
                                                                 const double* partial) {
  using A = at::opmath_type<T>;
  __shared__ A coefficients[2];  // keep, gcoef of the current unit's sample
  for_each_active_unit(op, part, [&](int64_t unit, int64_t b) {
    double sums[3];
    sample_sums(partial, b, part.pieces_per_sample, sums);
    if (threadIdx.x == 0) {
      const L2Coefficients k = l2_coefficients(sums, op.alpha[b], op.eps[b]);
      coefficients[0] = static_cast<A>(k.keep);
      coefficients[1] = static_cast<A>(k.gcoef);
    }
    __syncthreads();
    const A keep = coefficients[0];
    const A gcoef = coefficients[1];
    const int64_t base = b * part.sample_len;
    for_each_pack<kPackLen<T>>(part, unit, [&](int64_t offset, int count, ChannelCursor cursor) {
      const int64_t i = base + offset;
      const Pack<T> xa = load_pack(op.x_adv + i, count, part.vectorised);
      const Pack<T> g = load_pack(op.grad + i, count, part.vectorised);
      const Pack<T> x = load_pack(op.x + i, count, part.vectorised);
      Pack<T> out;
#pragma unroll
      for (int k = 0; k < kPackLen<T>; ++k) {
        if (k < count) {
          const int64_t c = cursor.channel;
          const A s = op.scale[c];
          const A xv = static_cast<A>(x.v[k]);
          const A v = xv + keep * (static_cast<A>(xa.v[k]) - xv) + gcoef * (s * s) * static_cast<A>(g.v[k]);
          out.v[k] = static_cast<T>(clamp_nan(v, op.lo[c], op.hi[c]));
        }
        cursor.next_element(part);
      }
      store_pack(op.x_adv + i, out, count, part.vectorised);
    });
  });
}

// Keys of the random streams, derived once per op call on the host.
struct RandomKeys {
  uint32_t uniform;
  uint32_t angle;
  uint32_t radius;
};

// The random-start kernels run on a target in logical (contiguous) order, so base + offset is the
// logical element index the random numbers are keyed on.
template <typename T>
__global__ void __launch_bounds__(kThreads) random_init_linf_kernel(Operands<T> op, Partition part, RandomKeys keys) {
  using A = at::opmath_type<T>;
  for_each_active_unit(op, part, [&](int64_t unit, int64_t b) {
    const A eps = op.eps[b];
    const int64_t base = b * part.sample_len;
    for_each_pack<kPackLen<T>>(part, unit, [&](int64_t offset, int count, ChannelCursor cursor) {
      const int64_t i = base + offset;
      const Pack<T> x = load_pack(op.x + i, count, part.vectorised);
      Pack<T> out;
#pragma unroll
      for (int k = 0; k < kPackLen<T>; ++k) {
        if (k < count) {
          const int64_t c = cursor.channel;
          const A u = static_cast<A>(rng::uniform01(rng::draw(keys.uniform, static_cast<uint64_t>(i + k))));
          const A v = static_cast<A>(x.v[k]) + eps * op.scale[c] * (A(2) * u - A(1));
          out.v[k] = static_cast<T>(clamp_nan(v, op.lo[c], op.hi[c]));
        }
        cursor.next_element(part);
      }
      store_pack(op.x_adv + i, out, count, part.vectorised);
    });
  });
}

// partial[unit] <- the unit's sum of squared normals, in double as on CPU. Reads no tensor: the
// normals are a function of the element index.
template <typename T>
__global__ void __launch_bounds__(kThreads) random_init_l2_norms_kernel(Operands<T> op, Partition part,
                                                                        RandomKeys keys, double* partial) {
  for_each_active_unit(op, part, [&](int64_t unit, int64_t b) {
    const int64_t base = b * part.sample_len;
    double sq[1] = {0.0};
    for_each_pack<kPackLen<T>>(part, unit, [&](int64_t offset, int count, ChannelCursor) {
      for (int k = 0; k < count; ++k) {
        const double z = normal_at(keys.uniform, keys.angle, static_cast<uint64_t>(base + offset + k));
        sq[0] += z * z;
      }
    });
    block_sum(sq);
    if (threadIdx.x == 0) partial[unit] = sq[0];
  });
}

// Uniform in the L2 ball: Gaussian direction, radius eps * U^(1/S). The normals are generated again
// rather than stored, as on CPU: this runs once per attack restart.
template <typename T>
__global__ void __launch_bounds__(kThreads) random_init_l2_write_kernel(Operands<T> op, Partition part,
                                                                        RandomKeys keys, const double* partial) {
  using A = at::opmath_type<T>;
  __shared__ A sample_coef;
  for_each_active_unit(op, part, [&](int64_t unit, int64_t b) {
    double sq[1];
    sample_sums(partial, b, part.pieces_per_sample, sq);
    if (threadIdx.x == 0) {
      const double u_r = rng::uniform01_open0(rng::draw(keys.radius, static_cast<uint64_t>(b)));
      const double radius =
          static_cast<double>(op.eps[b]) * pow(u_r, 1.0 / static_cast<double>(part.sample_len));
      sample_coef = static_cast<A>(sq[0] > 0.0 ? radius / sqrt(sq[0]) : 0.0);
    }
    __syncthreads();
    const A coef = sample_coef;
    const int64_t base = b * part.sample_len;
    for_each_pack<kPackLen<T>>(part, unit, [&](int64_t offset, int count, ChannelCursor cursor) {
      const int64_t i = base + offset;
      const Pack<T> x = load_pack(op.x + i, count, part.vectorised);
      Pack<T> out;
#pragma unroll
      for (int k = 0; k < kPackLen<T>; ++k) {
        if (k < count) {
          const int64_t c = cursor.channel;
          const A z = static_cast<A>(normal_at(keys.uniform, keys.angle, static_cast<uint64_t>(i + k)));
          const A v = static_cast<A>(x.v[k]) + coef * z * op.scale[c];
          out.v[k] = static_cast<T>(clamp_nan(v, op.lo[c], op.hi[c]));
        }
        cursor.next_element(part);
      }
      store_pack(op.x_adv + i, out, count, part.vectorised);
    });
  });
}

template <typename T>
void linf_step_launch(const StepArgs& a) {
  const auto op = operands_of<T>(a);
  const Partition part =
      make_partition(a, kPackLen<T>, aligned16(op.x_adv) && aligned16(op.grad) && aligned16(op.x));
  launch_units(linf_step_kernel<T>, part, op, part);
}

template <typename T>
void l2_step_launch(const StepArgs& a) {
  const auto op = operands_of<T>(a);
  const Partition part =
      make_partition(a, kPackLen<T>, aligned16(op.x_adv) && aligned16(op.grad) && aligned16(op.x));
  const at::Tensor partial = at::empty({part.units * 3}, a.target.options().dtype(at::kDouble));
  launch_units(l2_step_sums_kernel<T>, part, op, part, partial.data_ptr<double>());
  launch_units(l2_step_write_kernel<T>, part, op, part, static_cast<const double*>(partial.data_ptr<double>()));
}

template <typename T>
void random_init_launch(const StepArgs& a, uint64_t seed, bool l2) {
  const auto op = operands_of<T>(a);
  const Partition part = make_partition(a, kPackLen<T>, aligned16(op.x_adv) && aligned16(op.x));
  const RandomKeys keys{rng::stream_key(seed, rng::kStreamUniform), rng::stream_key(seed, rng::kStreamAngle),
                        rng::stream_key(seed, rng::kStreamRadius)};
  if (!l2) {
    launch_units(random_init_linf_kernel<T>, part, op, part, keys);
    return;
  }
  const at::Tensor partial = at::empty({part.units}, a.target.options().dtype(at::kDouble));
  launch_units(random_init_l2_norms_kernel<T>, part, op, part, keys, partial.data_ptr<double>());
  launch_units(random_init_l2_write_kernel<T>, part, op, part, keys,
         static_cast<const double*>(partial.data_ptr<double>()));
}

enum class StepNorm { kLinf, kL2 };

void step_cuda(const char* op, StepNorm norm, const at::Tensor& x_adv, const at::Tensor& grad,
               const at::Tensor& x, const at::Tensor& eps, const at::Tensor& alpha, const at::Tensor& scale,
               const at::Tensor& lo, const at::Tensor& hi, const std::optional<at::Tensor>& active) {
  StepArgs a(op, Backend::kCUDA, StepInputs{x_adv, &grad, x, eps, &alpha, scale, lo, hi, active},
             /*logical_order=*/false);
  if (x_adv.numel() == 0) return;
  NRX_CUDA_DISPATCH_FLOATING(x_adv.scalar_type(), "attack step", [&] {
    if (norm == StepNorm::kLinf) {
      linf_step_launch<scalar_t>(a);
    } else {
      l2_step_launch<scalar_t>(a);
    }
  });
  a.finish();
}

void linf_step_cuda(const at::Tensor& x_adv, const at::Tensor& grad, const at::Tensor& x,
                    const at::Tensor& eps, const at::Tensor& alpha, const at::Tensor& scale,
                    const at::Tensor& lo, const at::Tensor& hi, const std::optional<at::Tensor>& active) {
  step_cuda("linf_step_", StepNorm::kLinf, x_adv, grad, x, eps, alpha, scale, lo, hi, active);
}

void l2_step_cuda(const at::Tensor& x_adv, const at::Tensor& grad, const at::Tensor& x,
                  const at::Tensor& eps, const at::Tensor& alpha, const at::Tensor& scale,
                  const at::Tensor& lo, const at::Tensor& hi, const std::optional<at::Tensor>& active) {
  step_cuda("l2_step_", StepNorm::kL2, x_adv, grad, x, eps, alpha, scale, lo, hi, active);
}

void random_init_cuda(const at::Tensor& x_adv, const at::Tensor& x, const at::Tensor& eps,
                      const at::Tensor& scale, const at::Tensor& lo, const at::Tensor& hi,
                      const std::optional<at::Tensor>& active, int64_t seed, c10::string_view norm) {
  const bool l2 = random_init_norm_is_l2(norm);
  StepArgs a("random_init_", Backend::kCUDA, StepInputs{x_adv, nullptr, x, eps, nullptr, scale, lo, hi, active},
             /*logical_order=*/true);
  if (x_adv.numel() == 0) return;
  NRX_CUDA_DISPATCH_FLOATING(x_adv.scalar_type(), "random_init_", [&] {
    random_init_launch<scalar_t>(a, static_cast<uint64_t>(seed), l2);
  });
  a.finish();
}

}  // namespace

TORCH_LIBRARY_IMPL(nonrobust_ext, CUDA, m) {
  m.impl("linf_step_", &linf_step_cuda);
  m.impl("l2_step_", &l2_step_cuda);
  m.impl("random_init_", &random_init_cuda);
}

}  // namespace nonrobust_ext::cuda
