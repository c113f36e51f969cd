// The device-independent parts of the feature-statistics ops, shared by the CPU
// (csrc/cpu/feature_stats.cpp) and CUDA (csrc/cuda/feature_stats.cu) kernels (their argument checks
// are in stats_args.h):
//   - the per-class scatter matrices of class_feature_stats(covariance=True), and
//   - linear_hsic,
// both composed of ATen calls (their cost is matrix products, where BLAS is the limit), so that the two
// backends share one implementation and one rounding behaviour.
#pragma once

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace nonrobust_ext::stats {

// m2[c] = sum over the rows i of class c of (x_i - mean_c)(x_i - mean_c)^T, in the compute dtype.
// The deviations are formed in float64 from the float64 class means and rounded once, so a large
// common offset in the features costs no accuracy; the products are one GEMM per non-empty class.
// `order` lists the rows sorted by class (class c at [offsets[c], offsets[c + 1])).
inline at::Tensor class_scatter_matrices(const at::Tensor& features, const at::Tensor& order,
                                         const std::vector<int64_t>& offsets, const at::Tensor& mean64,
                                         at::ScalarType acc) {
  const int64_t K = static_cast<int64_t>(offsets.size()) - 1;
  const int64_t D = features.size(1);
  auto m2 = at::zeros({K, D, D}, features.options().dtype(acc));
  if (D == 0) return m2;
  for (int64_t c = 0; c < K; ++c) {
    const int64_t n = offsets[c + 1] - offsets[c];
    if (n == 0) continue;
    const auto rows = features.index_select(0, order.narrow(0, offsets[c], n));
    const auto dev = at::sub(rows.to(at::kDouble), mean64[c]).to(acc);
    auto out = m2[c];
    at::mm_out(out, dev.t(), dev);
  }
  return m2;
}

// Biased linear HSIC numerator ||Xc^T Yc||_F^2 (Xc, Yc column-centred), as a float64 scalar.
//
// Never forms an N x N Gram matrix nor a centred copy of X or Y: with column means mx, my and any
// shift vectors s, t,
//     Xc^T Yc = (X - s)^T (Y - t) - N (mx - s)(my - t)^T,
// which for s = t = 0 is X^T Y - N mx my^T. That form loses everything to cancellation in float32
// when the means are large next to the spread (post-ReLU activations), so s and t are the means
// rounded to the compute type: the product then runs on small numbers, and the rank-one term only
// corrects the rounding of the shift. The product is accumulated over row blocks (bounded scratch
// for the shifted block) into a float64 D1 x D2 matrix; the means and the final sum of squares are
// float64 too.
inline at::Tensor linear_hsic_impl(const at::Tensor& x, const at::Tensor& y) {
  const auto acc = at::toOpMathType(x.scalar_type());
  const auto dbl = x.options().dtype(at::kDouble);
  const int64_t N = x.size(0);
  const int64_t D1 = x.size(1);
  const int64_t D2 = y.size(1);
  if (N == 0 || D1 == 0 || D2 == 0) return at::zeros({}, dbl);
  // About 16 M scratch elements per block (64 MB in float32), and long enough products for BLAS.
  const int64_t block = std::clamp<int64_t>((int64_t{1} << 24) / (D1 + D2), 256, N);
  auto column_mean = [&](const at::Tensor& t) {
    auto sum = at::zeros({t.size(1)}, dbl);
    for (int64_t r0 = 0; r0 < N; r0 += block) {
      sum.add_(t.narrow(0, r0, std::min(block, N - r0)).sum(0, /*keepdim=*/false, acc));
    }
    return sum.div_(static_cast<double>(N));
  };
  const auto mx = column_mean(x);
  const auto my = column_mean(y);
  const auto sx = mx.to(acc);
  const auto sy = my.to(acc);
  auto cross = at::zeros({D1, D2}, dbl);
  for (int64_t r0 = 0; r0 < N; r0 += block) {
    const int64_t nb = std::min(block, N - r0);
    const auto xb = at::sub(x.narrow(0, r0, nb), sx);  // promotes half types to the compute type
    const auto yb = at::sub(y.narrow(0, r0, nb), sy);
    if (acc == at::kDouble) {
      cross.addmm_(xb.t(), yb);
    } else {
      cross.add_(at::mm(xb.t(), yb));
    }
  }
  cross.addr_(mx - sx.to(at::kDouble), my - sy.to(at::kDouble), /*beta=*/1, /*alpha=*/-static_cast<double>(N));
  const auto flat = cross.reshape({-1});
  return at::dot(flat, flat);
}

}  // namespace nonrobust_ext::stats
