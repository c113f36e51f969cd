// CUDA kernels of the feature-statistics ops: class_feature_stats, feature_discrepancy, linear_hsic.
//
// Same semantics as the CPU kernels (csrc/cpu/feature_stats.cpp) and the pure-PyTorch twins
// (nonrobust_ext/reference.py). Like the CPU kernels they are deterministic: no floating-point atomics;
// partial results are written to scratch tensors and merged in a fixed order by a second launch, and
// the work partition depends only on the shapes, not on the GPU model.
//
// class_feature_stats: the rows are sorted by class (a stable sort of the labels), each class is cut
// into units of rows, and a thread owns one feature column of one unit: consecutive threads read
// consecutive columns of the same row, so loads are coalesced whatever the row order. A thread keeps
// kRegRows rows of its column in registers, sums them in two passes (mean, then squared deviations)
// and merges the block into float64 running statistics (Chan et al.); a second launch merges a
// class's units in order.
//
// feature_discrepancy: a block owns kDiscRows rows; its threads stride over the columns, so every
// thread adds |adv - clean| of its columns over the block's rows (column partial sums, reduced over
// blocks in order by a second launch) and keeps one partial square sum per row in registers
// (reduced over the block's threads with shuffles).
//
// linear_hsic and the covariance scatter matrices are ATen compositions shared with the CPU
// (csrc/common/feature_stats.h); so are the argument checks (csrc/common/stats_args.h). The launch
// skeleton is csrc/cuda/skeleton.cuh. A NaN feature propagates into the statistics of its class, row
// or column, as in the reference twins.
#include "../common/feature_stats.h"
#include "../common/stats_args.h"
#include "skeleton.cuh"

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <tuple>
#include <vector>

namespace nonrobust_ext::cuda {
namespace {

constexpr int kRegRows = 16;      // rows of one column a thread holds in registers
constexpr int kDiscRows = 32;     // rows of one feature_discrepancy block
// Blocks of the discrepancy launch, at most: fixed (not the SM count) so that how rows are grouped,
// and so the rounding of mean_abs_change, is the same on every GPU.
constexpr int64_t kDiscBlocks = 1024;
// Columns a thread sums in the compute type before its row sums go on in double (through the block
// reduction): the CPU loops' float lanes flush to double after as many terms.
constexpr int64_t kDiscFlushTerms = 64;

// ------------------------------------------------------------------------------ class_feature_stats

// Units: rows [begin, end) of the sorted order, all of one class; unit u's statistics go to
// partial[(2u) * D + d] (mean) and partial[(2u + 1) * D + d] (m2).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    class_unit_kernel(const T* __restrict__ features, int64_t row_stride, int64_t D, const int64_t* __restrict__ order,
                      const int64_t* __restrict__ unit_begin, const int64_t* __restrict__ unit_end, int64_t units,
                      double* __restrict__ partial) {
  using A = at::opmath_type<T>;
  const int64_t d = int64_t{blockIdx.y} * blockDim.x + threadIdx.x;
  if (d >= D) return;  // no block-level synchronisation below
  for_each_unit(units, [&](int64_t u) {
    const int64_t begin = unit_begin[u];
    const int64_t end = unit_end[u];
    double n = 0.0, mean = 0.0, m2 = 0.0;
    for (int64_t r0 = begin; r0 < end; r0 += kRegRows) {
      const int nb = static_cast<int>(std::min<int64_t>(kRegRows, end - r0));
      A v[kRegRows];
      A sum = A(0);
#pragma unroll
      for (int k = 0; k < kRegRows; ++k) {
        v[k] = k < nb ? static_cast<A>(features[order[r0 + k] * row_stride + d]) : A(0);
        sum += v[k];
      }
      const A c = sum / static_cast<A>(nb);
      A s1 = A(0), s2 = A(0);
#pragma unroll
      for (int k = 0; k < kRegRows; ++k) {
        if (k < nb) {
          const A dev = v[k] - c;
          s1 += dev;
          s2 += dev * dev;
        }
      }
      const double dn = static_cast<double>(nb);
      const double block_mean = static_cast<double>(c) + static_cast<double>(s1) / dn;
      // Not fmax: that would turn a NaN (from a NaN feature) into 0 instead of propagating it.
      const double block_m2_raw = static_cast<double>(s2) - static_cast<double>(s1) * s1 / dn;
      const double block_m2 = block_m2_raw < 0.0 ? 0.0 : block_m2_raw;
      const double total = n + dn;
      const double delta = block_mean - mean;
      mean += delta * (dn / total);
      m2 += block_m2 + delta * delta * (n * dn / total);
      n = total;
    }
    partial[(2 * u) * D + d] = mean;
    partial[(2 * u + 1) * D + d] = m2;
  });
}

// Class c's units are class_units[c] .. class_units[c + 1] - 1, merged in order.
template <typename A>
__global__ void __launch_bounds__(kThreads)
    class_merge_kernel(const double* __restrict__ partial, const int64_t* __restrict__ unit_begin,
                       const int64_t* __restrict__ unit_end, const int64_t* __restrict__ class_units, int64_t K,
                       int64_t D, A* __restrict__ mean_out, A* __restrict__ m2_out, double* __restrict__ mean64) {
  const int64_t d = int64_t{blockIdx.y} * blockDim.x + threadIdx.x;
  if (d >= D) return;
  for_each_unit(K, [&](int64_t c) {
    double n = 0.0, mean = 0.0, m2 = 0.0;
    for (int64_t u = class_units[c]; u < class_units[c + 1]; ++u) {
      const double nb = static_cast<double>(unit_end[u] - unit_begin[u]);
      const double pm = partial[(2 * u) * D + d];
      const double pm2 = partial[(2 * u + 1) * D + d];
      const double total = n + nb;
      const double delta = pm - mean;
      mean += delta * (nb / total);
      m2 += pm2 + delta * delta * (n * nb / total);
      n = total;
    }
    mean_out[c * D + d] = static_cast<A>(mean);
    m2_out[c * D + d] = static_cast<A>(m2);
    if (mean64 != nullptr) mean64[c * D + d] = mean;
  });
}

int column_threads(int64_t D) {
  return static_cast<int>(std::clamp<int64_t>(ceil_div(D, kWarpSize) * kWarpSize, kWarpSize, kThreads));
}

// The label-range check, as on CPU (same message): one small device-to-host copy of the smallest and
// largest label; only when one is out of range, a second look for the first offending label.
void check_label_range(const at::Tensor& labels, int64_t K) {
  const auto [lo, hi] = at::aminmax(labels);
  const auto range = at::stack({lo, hi}).cpu();
  const int64_t* r = range.const_data_ptr<int64_t>();
  if (r[0] >= 0 && r[1] < K) return;
  const auto bad = at::logical_or(labels < 0, labels >= K).to(at::kInt);
  const int64_t first = bad.argmax().item<int64_t>();  // argmax returns the first maximal index
  stats::labels_out_of_range(K, first, labels[first].item<int64_t>());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> class_feature_stats_cuda(const at::Tensor& features,
                                                                        const at::Tensor& labels,
                                                                        int64_t num_classes, bool covariance) {
  const stats::ClassStatsArgs args(features, labels, num_classes);
  const int64_t K = num_classes;
  const int64_t N = features.size(0);
  const int64_t D = features.size(1);
  const auto acc = at::toOpMathType(features.scalar_type());
  const auto opts = features.options().dtype(acc);
  // Raise here, as on CPU, rather than index out of bounds later.
  if (N > 0) check_label_range(labels, K);
  const auto count_int = at::bincount(labels, /*weights=*/{}, K);
  auto mean = at::zeros({K, D}, opts);
  auto m2 = at::zeros({K, D}, opts);
  at::Tensor mean64;
  if (covariance) mean64 = at::zeros({K, D}, opts.dtype(at::kDouble));
  const auto order = std::get<1>(at::sort(labels, /*stable=*/true, /*dim=*/0, /*descending=*/false));
  const auto count_host = count_int.cpu();
  const int64_t* cnt = count_host.data_ptr<int64_t>();
  std::vector<int64_t> offsets(static_cast<size_t>(K) + 1, 0);
  for (int64_t c = 0; c < K; ++c) offsets[c + 1] = offsets[c] + cnt[c];

  if (N > 0 && D > 0) {
    // Rows per unit: enough units x columns to fill a large GPU (~2^18 threads), at least one
    // register block, at most 64 blocks; depends on the shapes only.
    const int64_t per_unit = std::clamp<int64_t>(ceil_div(N * D, int64_t{1} << 18), kRegRows, 64 * kRegRows) /
                             kRegRows * kRegRows;
    std::vector<int64_t> meta;  // unit_begin[U], unit_end[U], class_units[K + 1]
    std::vector<int64_t> ends, class_units(static_cast<size_t>(K) + 1, 0);
    for (int64_t c = 0; c < K; ++c) {
      for (int64_t b = offsets[c]; b < offsets[c + 1]; b += per_unit) {
        meta.push_back(b);
        ends.push_back(std::min(b + per_unit, offsets[c + 1]));
      }
      class_units[c + 1] = static_cast<int64_t>(meta.size());
    }
    const int64_t U = static_cast<int64_t>(meta.size());
    meta.insert(meta.end(), ends.begin(), ends.end());
    meta.insert(meta.end(), class_units.begin(), class_units.end());
    const auto meta_dev =
        at::tensor(meta, at::TensorOptions().dtype(at::kLong)).to(features.device(), /*non_blocking=*/false);
    const int64_t* unit_begin = meta_dev.data_ptr<int64_t>();
    const int64_t* unit_end = unit_begin + U;
    const int64_t* cls_units = unit_end + U;
    auto partial = at::empty({2 * U, D}, opts.dtype(at::kDouble));

    const auto feats = stats::with_unit_column_stride(features);
    const int threads = column_threads(D);
    const int64_t col_blocks = ceil_div(D, threads);
    // The columns go on gridDim.y, which is limited to 65535 blocks (D up to 16.7 M).
    TORCH_CHECK(col_blocks <= kMaxBlocks, "class_feature_stats: D = ", D, " is too large for this CUDA kernel");
    NRX_CUDA_DISPATCH_FLOATING(features.scalar_type(), "class_feature_stats", [&] {
      using A = at::opmath_type<scalar_t>;
      launch(class_unit_kernel<scalar_t>, dim3(grid_stride_blocks(U), static_cast<unsigned int>(col_blocks)), threads,
             static_cast<const scalar_t*>(feats.data_ptr<scalar_t>()), feats.stride(0), D,
             static_cast<const int64_t*>(order.data_ptr<int64_t>()), unit_begin, unit_end, U,
             partial.data_ptr<double>());
      launch(class_merge_kernel<A>, dim3(grid_stride_blocks(K), static_cast<unsigned int>(col_blocks)), threads,
             static_cast<const double*>(partial.data_ptr<double>()), unit_begin, unit_end, cls_units, K, D,
             mean.data_ptr<A>(), m2.data_ptr<A>(), covariance ? mean64.data_ptr<double>() : nullptr);
    });
  }
  if (covariance) m2 = stats::class_scatter_matrices(features, order, offsets, mean64, acc);
  return {count_int.to(at::kDouble), mean, m2};
}

// ------------------------------------------------------------------------------ feature_discrepancy

// Block b handles the chunks b, b + gridDim.x, ... of kDiscRows rows; col_partial[b * D + d] collects
// its sum of |adv - clean| over those rows (the block owns that row of the scratch: no atomics). Row sums
// of squares: each thread sums at most kDiscFlushTerms of its columns per row in the compute type, then
// they go on in double: shuffles within each warp, accumulated per warp in shared memory over the
// column blocks, then the warps in order.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    discrepancy_kernel(const T* __restrict__ clean, int64_t clean_stride, const T* __restrict__ adv,
                       int64_t adv_stride, int64_t N, int64_t D, at::opmath_type<T>* __restrict__ sq_out,
                       double* __restrict__ col_partial) {
  using A = at::opmath_type<T>;
  __shared__ double warp_rows[kWarps][kDiscRows];
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  constexpr int64_t kColumnBlock = kThreads * kDiscFlushTerms;
  for_each_unit(ceil_div(N, kDiscRows), [&](int64_t chunk) {
    const int64_t r0 = chunk * kDiscRows;
    const int nb = static_cast<int>(std::min<int64_t>(kDiscRows, N - r0));
    for (int64_t d0 = 0; d0 < D; d0 += kColumnBlock) {
      A row_sq[kDiscRows];
#pragma unroll
      for (int r = 0; r < kDiscRows; ++r) row_sq[r] = A(0);
      const int64_t d_end = std::min(D, d0 + kColumnBlock);
      for (int64_t d = d0 + threadIdx.x; d < d_end; d += kThreads) {
        A col = A(0);
#pragma unroll
        for (int r = 0; r < kDiscRows; ++r) {
          if (r < nb) {
            const A v =
                static_cast<A>(adv[(r0 + r) * adv_stride + d]) - static_cast<A>(clean[(r0 + r) * clean_stride + d]);
            row_sq[r] += v * v;
            col += v < A(0) ? -v : v;
          }
        }
        double* slot = col_partial + int64_t{blockIdx.x} * D + d;
        *slot = (chunk == blockIdx.x ? 0.0 : *slot) + static_cast<double>(col);
      }
      // Lane 0 of each warp owns its warp's row of warp_rows: no synchronisation between column blocks.
#pragma unroll
      for (int r = 0; r < kDiscRows; ++r) {
        const double v = warp_sum(static_cast<double>(row_sq[r]));
        if (lane == 0) warp_rows[warp][r] = (d0 == 0 ? 0.0 : warp_rows[warp][r]) + v;
      }
    }
    __syncthreads();
    if (threadIdx.x < nb) {
      double total = 0.0;
      for (int w = 0; w < kWarps; ++w) total += warp_rows[w][threadIdx.x];
      sq_out[r0 + threadIdx.x] = static_cast<A>(total);
    }
    __syncthreads();  // warp_rows is reused by the next chunk
  });
}

// mean_abs_change[d] = sum over the P block partials, in order, / N. A block covers 32 columns; its 8
// warps take every 8th partial, then warp sums are added in order.
template <typename A>
__global__ void __launch_bounds__(kThreads)
    column_mean_kernel(const double* __restrict__ col_partial, int64_t P, int64_t N, int64_t D, A* __restrict__ out) {
  __shared__ double sums[kWarps][kWarpSize];
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  const int64_t d = int64_t{blockIdx.x} * kWarpSize + lane;
  double s = 0.0;
  if (d < D) {
    for (int64_t p = warp; p < P; p += kWarps) s += col_partial[p * D + d];
  }
  sums[warp][lane] = s;
  __syncthreads();
  if (warp == 0 && d < D) {
    double total = 0.0;
    for (int w = 0; w < kWarps; ++w) total += sums[w][lane];
    out[d] = static_cast<A>(total / static_cast<double>(N));
  }
}

std::tuple<at::Tensor, at::Tensor> feature_discrepancy_cuda(const at::Tensor& clean, const at::Tensor& adv) {
  const stats::FeaturePairArgs args("feature_discrepancy", "clean", clean, "adv", adv, /*same_width=*/true);
  const auto opts = clean.options().dtype(at::toOpMathType(clean.scalar_type()));
  const int64_t N = clean.size(0);
  const int64_t D = clean.size(1);
  if (N == 0 || D == 0) return {at::zeros({N}, opts), at::zeros({D}, opts)};
  auto sq = at::empty({N}, opts);
  auto mac = at::empty({D}, opts);
  const auto c = stats::with_unit_column_stride(clean);
  const auto a = stats::with_unit_column_stride(adv);
  const int64_t blocks = std::min(ceil_div(N, kDiscRows), kDiscBlocks);
  auto col_partial = at::empty({blocks, D}, opts.dtype(at::kDouble));
  NRX_CUDA_DISPATCH_FLOATING(clean.scalar_type(), "feature_discrepancy", [&] {
    using A = at::opmath_type<scalar_t>;
    launch(discrepancy_kernel<scalar_t>, dim3(static_cast<unsigned int>(blocks)), kThreads,
           static_cast<const scalar_t*>(c.data_ptr<scalar_t>()), c.stride(0),
           static_cast<const scalar_t*>(a.data_ptr<scalar_t>()), a.stride(0), N, D, sq.data_ptr<A>(),
           col_partial.data_ptr<double>());
    // gridDim.x may reach 2^31 - 1: one block per 32 columns needs no limit on D.
    launch(column_mean_kernel<A>, dim3(static_cast<unsigned int>(ceil_div(D, kWarpSize))), kThreads,
           static_cast<const double*>(col_partial.data_ptr<double>()), blocks, N, D, mac.data_ptr<A>());
  });
  return {sq, mac};
}

// ------------------------------------------------------------------------------------- linear_hsic

at::Tensor linear_hsic_cuda(const at::Tensor& x, const at::Tensor& y) {
  const stats::FeaturePairArgs args("linear_hsic", "x", x, "y", y, /*same_width=*/false);
  return stats::linear_hsic_impl(x, y);
}

}  // namespace

TORCH_LIBRARY_IMPL(nonrobust_ext, CUDA, m) {
  m.impl("class_feature_stats", &class_feature_stats_cuda);
  m.impl("feature_discrepancy", &feature_discrepancy_cuda);
  m.impl("linear_hsic", &linear_hsic_cuda);
}

}  // namespace nonrobust_ext::cuda
