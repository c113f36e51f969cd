// Argument checks and the device-independent parts of the feature-statistics ops, shared by the CPU
// (csrc/cpu/feature_stats.cpp) and CUDA (csrc/cuda/feature_stats.cu) kernels:
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

inline bool is_feature_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kBFloat16 || t == at::kHalf;
}

inline void check_features(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.dim() == 2, op, ": ", name, " must be a 2-D [N, D] tensor, got shape ", t.sizes());
  TORCH_CHECK(is_feature_dtype(t.scalar_type()), op, ": ", name,
              " must be float32, float64, bfloat16 or float16, got ", t.scalar_type());
}

inline void check_class_stats_args(const at::Tensor& features, const at::Tensor& labels, int64_t num_classes) {
  constexpr const char* op = "class_feature_stats";
  check_features(op, "features", features);
  TORCH_CHECK(labels.dim() == 1, op, ": labels must be a 1-D [N] tensor, got shape ", labels.sizes());
  TORCH_CHECK(labels.scalar_type() == at::kLong, op, ": labels must be int64, got ", labels.scalar_type());
  TORCH_CHECK(labels.size(0) == features.size(0), op, ": labels has ", labels.size(0),
              " entries but features has ", features.size(0), " rows");
  TORCH_CHECK(labels.device() == features.device(), op, ": labels is on ", labels.device(),
              " but features is on ", features.device());
  TORCH_CHECK(num_classes >= 1, op, ": num_classes must be at least 1, got ", num_classes);
}

inline void check_pair(const char* op, const char* a_name, const at::Tensor& a, const char* b_name,
                       const at::Tensor& b, bool same_width) {
  check_features(op, a_name, a);
  check_features(op, b_name, b);
  if (same_width) {
    TORCH_CHECK(a.sizes() == b.sizes(), op, ": ", b_name, " has shape ", b.sizes(), " but ", a_name,
                " has shape ", a.sizes());
  } else {
    TORCH_CHECK(a.size(0) == b.size(0), op, ": ", b_name, " has ", b.size(0), " rows but ", a_name, " has ",
                a.size(0));
  }
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), op, ": ", b_name, " has dtype ", b.scalar_type(), " but ",
              a_name, " has dtype ", a.scalar_type());
  TORCH_CHECK(a.device() == b.device(), op, ": ", b_name, " is on ", b.device(), " but ", a_name, " is on ",
              a.device());
}

// Rows are read as `base + row * stride(0)` with unit column stride; anything else is copied once.
inline at::Tensor with_unit_column_stride(const at::Tensor& t) {
  return (t.size(1) <= 1 || t.stride(1) == 1) ? t : t.contiguous();
}

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
  check_pair("linear_hsic", "x", x, "y", y, /*same_width=*/false);
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
