// The prologue of the attack-step ops (linf_step_, l2_step_, random_init_), shared by the CPU
// (csrc/cpu/attack_steps.cpp) and CUDA (csrc/cuda/attack_steps.cu) kernels: every argument check and the
// layout canonicalisation, in one place and in a fixed order.
//
// Every attack-state op works on a batch `[B, C, ...]`: per-sample parameters (eps, alpha, active)
// index dimension 0, per-channel parameters (scale, lo, hi) index dimension 1. The kernels walk memory
// linearly, which is valid for any non-overlapping dense layout whose batch dimension is outermost
// (contiguous, channels_last, ...): the channel of memory offset o inside a sample is
// (o / channel_stride) % C. Anything else is computed on a dense copy that is written back.
//
// Which checks run where (the Python-side mirror is nonrobust_ext/_params.py; ops.py documents it):
//   1. devices  every tensor on x_adv's device                                     (both backends)
//   2. dtypes   x_adv a dtype the backend supports, x/grad the same, parameters floating, active bool
//   3. shapes   [B, C, ...]; x, grad like x_adv; eps/alpha 1 or B elements, scale/lo/hi 1 or C, active B
//   4. memory   x_adv not overlapping itself nor any input
//   -- only now: the device guard, then allocations (dense copies, parameters in the compute dtype) --
//   5. values   eps, alpha finite >= 0; scale finite > 0; lo, hi not NaN; lo <= hi      (CPU only)
// Values are not checked on CUDA (a host sync per step); the CUDA kernels' arithmetic propagates a NaN
// parameter into the output instead, exactly as the reference twin does.
#pragma once

#include "checks.h"

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <c10/core/DeviceGuard.h>

#include <algorithm>
#include <optional>
#include <string>

namespace nonrobust_ext {

// The op's arguments as the schema gives them; grad and alpha are null for random_init_.
struct StepInputs {
  const at::Tensor& x_adv;
  const at::Tensor* grad;
  const at::Tensor& x;
  const at::Tensor& eps;
  const at::Tensor* alpha;
  const at::Tensor& scale;
  const at::Tensor& lo;
  const at::Tensor& hi;
  const std::optional<at::Tensor>& active;
};

inline bool supported_step_dtype(Backend backend, at::ScalarType t) {
  const bool common = t == at::kFloat || t == at::kDouble || t == at::kBFloat16;
  return common || (backend == Backend::kCUDA && t == at::kHalf);
}

// Checks 1-4 of the list at the top; reads no tensor data.
inline void check_step_inputs(const char* op, Backend backend, const StepInputs& in) {
  const at::Tensor& xa = in.x_adv;
  // 1. devices
  if (in.grad) check_same_device(op, "grad", *in.grad, "x_adv", xa);
  check_same_device(op, "x", in.x, "x_adv", xa);
  check_same_device(op, "eps", in.eps, "x_adv", xa);
  if (in.alpha) check_same_device(op, "alpha", *in.alpha, "x_adv", xa);
  check_same_device(op, "scale", in.scale, "x_adv", xa);
  check_same_device(op, "lo", in.lo, "x_adv", xa);
  check_same_device(op, "hi", in.hi, "x_adv", xa);
  if (in.active) check_same_device(op, "active", *in.active, "x_adv", xa);

  // 2. dtypes
  if (backend == Backend::kCPU) {
    TORCH_CHECK_TYPE(supported_step_dtype(backend, xa.scalar_type()), op,
                     ": on CPU x_adv must be float32, float64 or bfloat16, got ", xa.scalar_type(),
                     " (float16 is supported on CUDA only)");
  } else {
    TORCH_CHECK_TYPE(supported_step_dtype(backend, xa.scalar_type()), op,
                     ": on CUDA x_adv must be float32, float64, float16 or bfloat16, got ", xa.scalar_type());
  }
  TORCH_CHECK_TYPE(in.x.scalar_type() == xa.scalar_type(), op, ": x has dtype ", in.x.scalar_type(),
                   " but x_adv has dtype ", xa.scalar_type());
  if (in.grad) {
    TORCH_CHECK_TYPE(in.grad->scalar_type() == xa.scalar_type(), op, ": grad has dtype ", in.grad->scalar_type(),
                     " but x_adv has dtype ", xa.scalar_type());
  }
  auto floating_param = [&](const char* name, const at::Tensor& p) {
    TORCH_CHECK_TYPE(p.is_floating_point(), op, ": ", name, " must be a floating-point tensor, got ", p.scalar_type());
  };
  floating_param("eps", in.eps);
  if (in.alpha) floating_param("alpha", *in.alpha);
  floating_param("scale", in.scale);
  floating_param("lo", in.lo);
  floating_param("hi", in.hi);
  if (in.active) {
    TORCH_CHECK_TYPE(in.active->scalar_type() == at::kBool, op, ": active must be a bool tensor, got ",
                     in.active->scalar_type());
  }

  // 3. shapes
  TORCH_CHECK_VALUE(xa.dim() >= 2, op, ": x_adv must have a batch and a channel dimension [B, C, ...], got shape ",
                    xa.sizes());
  TORCH_CHECK_VALUE(in.x.sizes() == xa.sizes(), op, ": x has shape ", in.x.sizes(), " but x_adv has shape ",
                    xa.sizes());
  if (in.grad) {
    TORCH_CHECK_VALUE(in.grad->sizes() == xa.sizes(), op, ": grad has shape ", in.grad->sizes(),
                      " but x_adv has shape ", xa.sizes());
  }
  const int64_t B = xa.size(0);
  const int64_t C = xa.size(1);
  auto param_shape = [&](const char* name, const at::Tensor& p, int64_t n, const char* what) {
    TORCH_CHECK_VALUE(p.numel() == n || p.numel() == 1, op, ": ", name, " must have one element or one per ", what,
                      " (", n, "), got shape ", p.sizes());
  };
  param_shape("eps", in.eps, B, "sample");
  if (in.alpha) param_shape("alpha", *in.alpha, B, "sample");
  param_shape("scale", in.scale, C, "channel");
  param_shape("lo", in.lo, C, "channel");
  param_shape("hi", in.hi, C, "channel");
  if (in.active) {
    TORCH_CHECK_VALUE(in.active->numel() == B, op, ": active must have one element per sample (", B,
                      "), got shape ", in.active->sizes());
  }

  // 4. memory
  check_no_self_overlap(op, "x_adv", xa);
  if (in.grad) check_no_shared_memory(op, "x_adv", xa, "grad", *in.grad);
  check_no_shared_memory(op, "x_adv", xa, "x", in.x);
  check_no_shared_memory(op, "x_adv", xa, "eps", in.eps);
  if (in.alpha) check_no_shared_memory(op, "x_adv", xa, "alpha", *in.alpha);
  check_no_shared_memory(op, "x_adv", xa, "scale", in.scale);
  check_no_shared_memory(op, "x_adv", xa, "lo", in.lo);
  check_no_shared_memory(op, "x_adv", xa, "hi", in.hi);
  if (in.active) check_no_shared_memory(op, "x_adv", xa, "active", *in.active);
}

// random_init_'s `norm` argument: true for "l2", false for "linf", a ValueError for anything else.
inline bool random_init_norm_is_l2(c10::string_view norm) {
  TORCH_CHECK_VALUE(norm == "linf" || norm == "l2", "random_init_: norm must be 'linf' or 'l2', got '",
                    std::string(norm), "'");
  return norm == "l2";
}

inline bool batch_outermost_dense(const at::Tensor& t) {
  if (!t.is_non_overlapping_and_dense()) return false;
  if (t.size(0) <= 1) return true;
  return t.stride(0) == t.numel() / t.size(0);
}

// Returns `t` if it already has `ref`'s strides, otherwise a copy laid out like `ref`.
inline at::Tensor laid_out_like(const at::Tensor& t, const at::Tensor& ref) {
  if (t.strides() == ref.strides()) return t;
  auto out = at::empty_strided(ref.sizes(), ref.strides(), ref.options());
  out.copy_(t);
  return out;
}

// A checked parameter as a flat contiguous tensor in the compute dtype of `like`.
inline at::Tensor flat_param(const at::Tensor& p, const at::Tensor& like) {
  return p.reshape({-1}).to(at::toOpMathType(like.scalar_type())).contiguous();
}

// `flat` (one or n values) as n contiguous values.
inline at::Tensor expand_param(const at::Tensor& flat, int64_t n) {
  return flat.numel() == n ? flat : flat.expand({n}).contiguous();
}

// The checked, canonical arguments of one attack-step call. Constructing it runs the whole prologue;
// it holds the device guard (set to x_adv's device once the arguments are checked) for the kernel
// launches that follow, so a kernel entry point is: StepArgs a(...); if (empty) return; run; a.finish().
class StepArgs {
 public:
  // With `logical_order` the target is made contiguous so that element indices are the logical
  // (row-major) ones the random-start RNG is keyed on.
  StepArgs(const char* op, Backend backend, const StepInputs& in, bool logical_order) {
    check_step_inputs(op, backend, in);
    guard_.reset_device(in.x_adv.device());

    x_adv = in.x_adv;
    batch = x_adv.size(0);
    channels = x_adv.size(1);
    per_sample = batch == 0 ? 0 : x_adv.numel() / batch;

    eps = flat_param(in.eps, x_adv);
    if (in.alpha) alpha = flat_param(*in.alpha, x_adv);
    scale = flat_param(in.scale, x_adv);
    lo = flat_param(in.lo, x_adv);
    hi = flat_param(in.hi, x_adv);
    if (backend == Backend::kCPU) {
      // 5. values (CPU only: a few dozen numbers, already in host memory), as the caller passed them
      check_param_values_cpu(op, "eps", eps, ParamRule::kFiniteNonNegative);
      if (in.alpha) check_param_values_cpu(op, "alpha", alpha, ParamRule::kFiniteNonNegative);
      check_param_values_cpu(op, "scale", scale, ParamRule::kFinitePositive);
      check_param_values_cpu(op, "lo", lo, ParamRule::kNotNaN);
      check_param_values_cpu(op, "hi", hi, ParamRule::kNotNaN);
      check_ordered_bounds_cpu(op, lo, hi);
    }
    eps = expand_param(eps, batch);
    if (in.alpha) alpha = expand_param(alpha, batch);
    scale = expand_param(scale, channels);
    lo = expand_param(lo, channels);
    hi = expand_param(hi, channels);
    if (in.active) active = in.active->reshape({-1}).contiguous();

    const bool dense = logical_order ? x_adv.is_contiguous() : batch_outermost_dense(x_adv);
    if (dense) {
      target = x_adv;
    } else {
      target = x_adv.contiguous();
      copy_back_ = true;
    }
    // A size-1 dimension's stride is arbitrary (even 0); with one channel every offset is channel 0.
    channel_stride = channels == 1 ? std::max<int64_t>(per_sample, 1) : target.stride(1);
    if (in.grad) grad = laid_out_like(*in.grad, target);
    x = laid_out_like(in.x, target);
  }
  StepArgs(const StepArgs&) = delete;
  StepArgs& operator=(const StepArgs&) = delete;

  // Writes the result back to the caller's tensor when the kernel ran on a dense copy.
  void finish() {
    if (copy_back_) x_adv.copy_(target);
  }

 private:
  c10::OptionalDeviceGuard guard_;  // declared first: released last, after every tensor below
  bool copy_back_ = false;

 public:
  at::Tensor x_adv;          // what the caller passed; receives `target` in finish() if it is a copy
  at::Tensor target;         // the tensor the kernel writes: x_adv itself or a dense copy of it
  at::Tensor grad;           // same strides as target (undefined for random_init_)
  at::Tensor x;              // same strides as target
  at::Tensor eps;            // [B], compute dtype, contiguous
  at::Tensor alpha;          // [B], compute dtype (undefined for random_init_)
  at::Tensor scale;          // [C], compute dtype
  at::Tensor lo;             // [C], compute dtype
  at::Tensor hi;             // [C], compute dtype
  std::optional<at::Tensor> active;  // [B], bool
  int64_t batch = 0;
  int64_t per_sample = 0;    // elements per sample
  int64_t channels = 0;
  int64_t channel_stride = 0;  // memory stride of dim 1 inside `target`; per_sample when C == 1
};

}  // namespace nonrobust_ext
