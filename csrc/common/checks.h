// The user-error checks every op's prologue is made of (csrc/common/step_args.h, stats_args.h), shared
// by the CPU and CUDA kernels so that one mistake gets one message and one exception type everywhere:
//
//   - TORCH_CHECK_TYPE  (Python: TypeError)   a tensor of the wrong dtype;
//   - TORCH_CHECK_VALUE (Python: ValueError)  a wrong shape, device, value, or memory that overlaps.
//
// Messages start with the op's name, then the argument's, then the values seen. Nothing here reads
// tensor data except the *_cpu value checks, which run on CPU tensors only (on CUDA a host-side look at
// a value is a device synchronisation per call: it would stall the stream and break CUDA-graph capture).
#pragma once

#include <ATen/ATen.h>
#include <ATen/MemoryOverlap.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace nonrobust_ext {

// Which backend's kernel runs the op: decides the supported dtypes and whether values are checked.
enum class Backend { kCPU, kCUDA };

// ------------------------------------------------------------------------------------------- devices

// Every tensor argument on the device of the op's reference tensor (x_adv, features, clean or x).
// Checked before anything else, in particular before a device guard is set or memory is allocated:
// a tensor on another device (or a meta tensor, which has no data) must be a clear error, not a crash
// in the guard or a read of memory that does not exist.
inline void check_same_device(const char* op, const char* name, const at::Tensor& t, const char* ref_name,
                              const at::Tensor& ref) {
  TORCH_CHECK_VALUE(t.device() == ref.device(), op, ": ", name, " is on ", t.device(), " but ", ref_name, " is on ",
                    ref.device(), "; every tensor argument must be on one device");
}

// ------------------------------------------------------------------------------------ dtypes, shapes

// A tensor argument that must match the op's reference tensor in dtype (TypeError) or in shape
// (ValueError).
inline void check_same_dtype(const char* op, const char* name, const at::Tensor& t, const char* ref_name,
                             const at::Tensor& ref) {
  TORCH_CHECK_TYPE(t.scalar_type() == ref.scalar_type(), op, ": ", name, " has dtype ", t.scalar_type(), " but ",
                   ref_name, " has dtype ", ref.scalar_type());
}

inline void check_same_shape(const char* op, const char* name, const at::Tensor& t, const char* ref_name,
                             const at::Tensor& ref) {
  TORCH_CHECK_VALUE(t.sizes() == ref.sizes(), op, ": ", name, " has shape ", t.sizes(), " but ", ref_name,
                    " has shape ", ref.sizes());
}

// -------------------------------------------------------------------------------------------- memory

namespace detail {

// Provably no two elements of `t` share memory: with the dimensions of size > 1 sorted by stride,
// each stride exceeds the largest offset the smaller dimensions reach. True for every dense layout
// and for strided views such as t[..., ::2]; false for expanded (stride-0) views and other
// self-overlapping strides. The pure-PyTorch twins apply the same rule (reference.py).
inline bool strides_disjoint(const at::Tensor& t) {
  std::vector<std::pair<int64_t, int64_t>> dims;  // (|stride|, size)
  for (int64_t d = 0; d < t.dim(); ++d) {
    if (t.size(d) > 1) dims.emplace_back(std::abs(t.stride(d)), t.size(d));
  }
  std::sort(dims.begin(), dims.end());
  int64_t reach = 0;  // the largest element offset the dimensions seen so far address
  for (const auto& [stride, size] : dims) {
    if (stride <= reach) return false;
    reach += stride * (size - 1);
  }
  return true;
}

// The bytes [begin, end) that `t` can address (non-empty `t`).
inline std::pair<uintptr_t, uintptr_t> byte_span(const at::Tensor& t) {
  int64_t low = 0, high = 0;  // element offsets from the data pointer
  for (int64_t d = 0; d < t.dim(); ++d) {
    const int64_t extent = t.stride(d) * (t.size(d) - 1);
    (extent < 0 ? low : high) += extent;
  }
  const auto base = reinterpret_cast<uintptr_t>(t.const_data_ptr());
  const auto item = static_cast<int64_t>(t.element_size());
  return {base + low * item, base + (high + 1) * item};
}

}  // namespace detail

// `t` (an op's in-place output) must not overlap itself: an expanded or otherwise self-overlapping
// view would be written several times per element, in an unspecified order.
inline void check_no_self_overlap(const char* op, const char* name, const at::Tensor& t) {
  if (t.numel() == 0) return;
  const auto status = at::has_internal_overlap(t);  // metadata only
  const bool overlaps = status == at::MemOverlap::Yes ||
                        (status == at::MemOverlap::TooHard && !detail::strides_disjoint(t));
  TORCH_CHECK_VALUE(!overlaps, op, ": ", name, " has elements that share memory (shape ", t.sizes(), ", strides ",
                    t.strides(), ", e.g. an expanded view); it is written in place, so pass a tensor whose elements "
                    "are distinct (", name, ".clone())");
}

// The in-place output `out` must not share memory with the input `in`, fully (the same tensor) or in
// part (two views of one buffer): the kernels read inputs while they write the output, so the result
// would depend on the order of the work. Dense tensors are decided exactly by ATen; for other strided
// views any intersection of the byte ranges counts as overlap.
inline void check_no_shared_memory(const char* op, const char* out_name, const at::Tensor& out, const char* in_name,
                                   const at::Tensor& in) {
  if (out.numel() == 0 || in.numel() == 0) return;
  bool overlaps = false;
  switch (at::get_overlap_status(out, in)) {  // metadata only
    case at::MemOverlapStatus::Full:
    case at::MemOverlapStatus::Partial:
      overlaps = true;
      break;
    case at::MemOverlapStatus::No:
      break;
    case at::MemOverlapStatus::TooHard: {
      if (out.storage().is_alias_of(in.storage())) {
        const auto [a0, a1] = detail::byte_span(out);
        const auto [b0, b1] = detail::byte_span(in);
        overlaps = a0 < b1 && b0 < a1;
      }
      break;
    }
  }
  TORCH_CHECK_VALUE(!overlaps, op, ": ", out_name, " shares memory with ", in_name, " (two views of one buffer, or ",
                    "the same tensor); ", out_name, " is written in place while ", in_name,
                    " is read, so pass separate tensors (e.g. ", out_name, ".clone())");
}

// ------------------------------------------------------------------------- parameter values (CPU only)

// What a small parameter tensor may hold.
enum class ParamRule {
  kFiniteNonNegative,  // eps, alpha: finite and >= 0
  kFinitePositive,     // scale: finite and > 0
  kNotNaN,             // lo, hi: any value but NaN (+-inf = unbounded)
};

namespace detail {

template <typename A>
void check_param_values(const char* op, const char* name, const A* v, int64_t n, bool one_value, ParamRule rule) {
  for (int64_t i = 0; i < n; ++i) {
    const A x = v[i];
    bool ok = false;
    const char* need = "";
    switch (rule) {
      case ParamRule::kFiniteNonNegative:
        ok = std::isfinite(x) && x >= A(0);
        need = "finite and >= 0";
        break;
      case ParamRule::kFinitePositive:
        ok = std::isfinite(x) && x > A(0);
        need = "finite and > 0";
        break;
      case ParamRule::kNotNaN:
        ok = !std::isnan(x);
        need = "a number, not NaN (+-inf means unbounded)";
        break;
    }
    if (one_value) {
      TORCH_CHECK_VALUE(ok, op, ": ", name, " must be ", need, ", got ", name, " = ", x);
    } else {
      TORCH_CHECK_VALUE(ok, op, ": ", name, " must be ", need, ", got ", name, "[", i, "] = ", x);
    }
  }
}

}  // namespace detail

// Checks the values of a CPU parameter tensor `p` (1-D, contiguous, float or double: as the caller
// passed it, before it is broadcast) against `rule`. Only for CPU tensors: see the top of this file.
inline void check_param_values_cpu(const char* op, const char* name, const at::Tensor& p, ParamRule rule) {
  TORCH_INTERNAL_ASSERT(p.device().is_cpu() && p.dim() == 1 && p.is_contiguous());
  const bool one_value = p.numel() == 1;
  if (p.scalar_type() == at::kDouble) {
    detail::check_param_values(op, name, p.const_data_ptr<double>(), p.numel(), one_value, rule);
  } else {
    TORCH_INTERNAL_ASSERT(p.scalar_type() == at::kFloat);
    detail::check_param_values(op, name, p.const_data_ptr<float>(), p.numel(), one_value, rule);
  }
}

// lo <= hi in every channel, for CPU tensors of one value or one per channel (NaN already refused).
inline void check_ordered_bounds_cpu(const char* op, const at::Tensor& lo, const at::Tensor& hi) {
  TORCH_INTERNAL_ASSERT(lo.device().is_cpu() && hi.device().is_cpu() && lo.dim() == 1 && hi.dim() == 1);
  const auto l = lo.to(at::kDouble).contiguous();
  const auto h = hi.to(at::kDouble).contiguous();
  const double* lp = l.const_data_ptr<double>();
  const double* hp = h.const_data_ptr<double>();
  const int64_t n = std::max(l.numel(), h.numel());
  for (int64_t c = 0; c < n; ++c) {
    const int64_t il = l.numel() == 1 ? 0 : c;
    const int64_t ih = h.numel() == 1 ? 0 : c;
    TORCH_CHECK_VALUE(lp[il] <= hp[ih], op, ": lo must be <= hi in every channel, got lo",
                      (l.numel() == 1 ? std::string() : "[" + std::to_string(c) + "]"), " = ", lp[il], " > hi",
                      (h.numel() == 1 ? std::string() : "[" + std::to_string(c) + "]"), " = ", hp[ih]);
  }
}

}  // namespace nonrobust_ext
