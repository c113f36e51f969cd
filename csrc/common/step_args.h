// Argument checking and layout canonicalisation shared by the CPU and CUDA attack-step kernels.
//
// Every attack-state op works on a batch `[B, C, ...]`: per-sample parameters (eps, alpha, active)
// index dimension 0, per-channel parameters (scale, lo, hi) index dimension 1. The kernels walk memory
// linearly, which is valid for any non-overlapping dense layout whose batch dimension is outermost
// (contiguous, channels_last, ...): the channel of memory offset o inside a sample is
// (o / channel_stride) % C. Anything else is computed on a dense copy that is written back.
#pragma once

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>

#include <algorithm>
#include <optional>

namespace nonrobust_ext {

struct StepArgs {
  at::Tensor target;         // the tensor the kernel writes: x_adv itself or a dense copy of it
  at::Tensor x_adv;          // what the user passed; receives `target` when copy_back is set
  bool copy_back = false;
  at::Tensor grad;           // same strides as target (undefined for random_init_)
  at::Tensor x;              // same strides as target
  at::Tensor eps;            // [B], opmath dtype, contiguous
  at::Tensor alpha;          // [B], opmath dtype (undefined for random_init_)
  at::Tensor scale;          // [C], opmath dtype
  at::Tensor lo;             // [C], opmath dtype
  at::Tensor hi;             // [C], opmath dtype
  std::optional<at::Tensor> active;  // [B], bool
  int64_t batch = 0;
  int64_t per_sample = 0;    // elements per sample
  int64_t channels = 0;
  int64_t channel_stride = 0;  // memory stride of dim 1 inside `target`; per_sample when C == 1

  void finish() {
    if (copy_back) x_adv.copy_(target);
  }
};

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

inline at::Tensor per_index_param(const char* op, const char* name, const at::Tensor& p, int64_t n,
                                  const char* what, const at::Tensor& like) {
  TORCH_CHECK(p.is_floating_point(), op, ": ", name, " must be a floating-point tensor, got ",
              p.scalar_type());
  TORCH_CHECK(p.device() == like.device(), op, ": ", name, " is on ", p.device(),
              " but x_adv is on ", like.device());
  TORCH_CHECK(p.numel() == n || p.numel() == 1, op, ": ", name, " must have one element or one per ",
              what, " (", n, "), got shape ", p.sizes());
  const auto opmath = at::toOpMathType(like.scalar_type());
  auto flat = p.reshape({-1}).to(opmath);
  if (flat.numel() != n) flat = flat.expand({n});
  return flat.contiguous();
}

// `grad` and `alpha` are optional because random_init_ has neither. With `logical_order` the target is
// made contiguous so that element indices are the logical (row-major) ones the RNG is keyed on.
inline StepArgs prepare_step_args(const char* op, const at::Tensor& x_adv,
                                  const std::optional<at::Tensor>& grad, const at::Tensor& x,
                                  const at::Tensor& eps, const std::optional<at::Tensor>& alpha,
                                  const at::Tensor& scale, const at::Tensor& lo, const at::Tensor& hi,
                                  const std::optional<at::Tensor>& active, bool logical_order) {
  TORCH_CHECK(x_adv.dim() >= 2, op, ": x_adv must have a batch and a channel dimension [B, C, ...], got shape ",
              x_adv.sizes());
  TORCH_CHECK(x_adv.is_floating_point(), op, ": x_adv must be floating point, got ", x_adv.scalar_type());
  TORCH_CHECK(x.sizes() == x_adv.sizes(), op, ": x has shape ", x.sizes(), " but x_adv has shape ",
              x_adv.sizes());
  TORCH_CHECK(x.scalar_type() == x_adv.scalar_type(), op, ": x has dtype ", x.scalar_type(),
              " but x_adv has dtype ", x_adv.scalar_type());
  TORCH_CHECK(x.device() == x_adv.device(), op, ": x is on ", x.device(), " but x_adv is on ",
              x_adv.device());
  if (grad) {
    TORCH_CHECK(grad->sizes() == x_adv.sizes(), op, ": grad has shape ", grad->sizes(),
                " but x_adv has shape ", x_adv.sizes());
    TORCH_CHECK(grad->scalar_type() == x_adv.scalar_type(), op, ": grad has dtype ", grad->scalar_type(),
                " but x_adv has dtype ", x_adv.scalar_type());
    TORCH_CHECK(grad->device() == x_adv.device(), op, ": grad is on ", grad->device(),
                " but x_adv is on ", x_adv.device());
  }

  StepArgs a;
  a.x_adv = x_adv;
  a.batch = x_adv.size(0);
  a.channels = x_adv.size(1);
  a.per_sample = a.batch == 0 ? 0 : x_adv.numel() / a.batch;

  const bool dense = logical_order ? x_adv.is_contiguous() : batch_outermost_dense(x_adv);
  if (dense) {
    a.target = x_adv;
  } else {
    a.target = x_adv.contiguous();
    a.copy_back = true;
  }
  // A size-1 dimension's stride is arbitrary (even 0); with one channel every offset is channel 0.
  a.channel_stride = a.channels == 1 ? std::max<int64_t>(a.per_sample, 1) : a.target.stride(1);
  if (grad) a.grad = laid_out_like(*grad, a.target);
  a.x = laid_out_like(x, a.target);

  a.eps = per_index_param(op, "eps", eps, a.batch, "sample", x_adv);
  if (alpha) a.alpha = per_index_param(op, "alpha", *alpha, a.batch, "sample", x_adv);
  a.scale = per_index_param(op, "scale", scale, a.channels, "channel", x_adv);
  a.lo = per_index_param(op, "lo", lo, a.channels, "channel", x_adv);
  a.hi = per_index_param(op, "hi", hi, a.channels, "channel", x_adv);
  if (active) {
    TORCH_CHECK(active->scalar_type() == at::kBool, op, ": active must be a bool tensor, got ",
                active->scalar_type());
    TORCH_CHECK(active->device() == x_adv.device(), op, ": active is on ", active->device(),
                " but x_adv is on ", x_adv.device());
    TORCH_CHECK(active->numel() == a.batch, op, ": active must have one element per sample (", a.batch,
                "), got shape ", active->sizes());
    a.active = active->reshape({-1}).contiguous();
  }
  return a;
}

}  // namespace nonrobust_ext
