// The whole kernel API of nonrobust_ext in one place: every op schema, the autograd registration of
// the attack-state ops, and the pybind11 module `nonrobust_ext._C` that reports how it was built.
//
// Backend kernels: csrc/cpu/*.cpp (TORCH_LIBRARY_IMPL(..., CPU)), csrc/cuda/*.cu (..., CUDA).
// Fake (meta) kernels: nonrobust_ext/_meta.py. Pure-PyTorch twins: nonrobust_ext/reference.py.
#include "cpu/isa_table.h"

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

namespace nonrobust_ext {
namespace {

// Attack-state updates are never differentiated. Rather than leaving them to the autograd fallback,
// they get an explicit Autograd kernel that refuses a mutated tensor that requires grad (an in-place
// update would silently cut it out of the graph), bumps its version counter (so autograd notices if
// it was saved for backward elsewhere) and redispatches below autograd.
void nondifferentiable_inplace(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  const auto num_args = op.schema().arguments().size();
  const at::Tensor mutated = (*stack)[stack->size() - num_args].toTensor();
  TORCH_CHECK_VALUE(!mutated.requires_grad(), op.schema().name(), ": ", op.schema().arguments()[0].name(),
                    " requires grad; attack-state updates are not differentiable, pass a detached tensor");
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    op.callBoxed(stack);
  }
  if (!mutated.is_inference()) {  // inference tensors carry no version counter
    mutated.unsafeGetTensorImpl()->bump_version();
  }
}

}  // namespace

TORCH_LIBRARY(nonrobust_ext, m) {
  m.set_python_module("nonrobust_ext._meta");

  // x_adv <- clip_[lo,hi]( clip_[x - eps*scale, x + eps*scale]( x_adv + alpha*scale*sign(grad) ) )
  // eps, alpha: [B] or one element; scale, lo, hi: [C] or one element; active: [B] bool, inactive
  // samples are left untouched.
  m.def(
      "linf_step_(Tensor(a!) x_adv, Tensor grad, Tensor x, Tensor eps, Tensor alpha, Tensor scale, "
      "Tensor lo, Tensor hi, Tensor? active=None) -> ()");

  // Normalised-gradient L2 step, projection onto the L2 ball of radius eps around x, clip to bounds.
  // Norms are per sample and taken in threat-model units (input / scale).
  m.def(
      "l2_step_(Tensor(a!) x_adv, Tensor grad, Tensor x, Tensor eps, Tensor alpha, Tensor scale, "
      "Tensor lo, Tensor hi, Tensor? active=None) -> ()");

  // x_adv <- clip_[lo,hi](x + delta), delta uniform in the L-inf or L2 ball of radius eps (times
  // scale per channel); a pure function of (seed, logical element index).
  m.def(
      "random_init_(Tensor(a!) x_adv, Tensor x, Tensor eps, Tensor scale, Tensor lo, Tensor hi, "
      "Tensor? active, int seed, str norm) -> ()");

  // Feature statistics (kernels: csrc/cpu/feature_stats.cpp, csrc/cuda/feature_stats.cu; autograd
  // and fake kernels: nonrobust_ext/_meta.py). Results are in the compute dtype: float32 for
  // float32/bfloat16/float16 features, float64 for float64.

  // Per class c < num_classes of features [N, D] with labels [N] (int64 in [0, num_classes)), in one
  // pass: count [K] (float64), mean [K, D], m2 [K, D] = sum of squared deviations from the class mean,
  // or with covariance=True the scatter matrices m2 [K, D, D]. Empty classes: 0, 0, 0.
  m.def(
      "class_feature_stats(Tensor features, Tensor labels, int num_classes, bool covariance=False) -> "
      "(Tensor count, Tensor mean, Tensor m2)");

  // sq_dist[i] = sum_d (adv[i,d] - clean[i,d])^2 [N]; mean_abs_change[d] = mean_i |adv[i,d] - clean[i,d]|
  // [D] (0 for N = 0).
  m.def("feature_discrepancy(Tensor clean, Tensor adv) -> (Tensor sq_dist, Tensor mean_abs_change)");

  // ||Xc^T Yc||_F^2 for x [N, D1], y [N, D2] with column-centred Xc, Yc (biased linear HSIC times
  // (N-1)^2), a float64 scalar, without N x N Gram matrices.
  m.def("linear_hsic(Tensor x, Tensor y) -> Tensor");

  // Square's L-inf proposal (kernel: csrc/cpu/square_proposal.cpp; on other devices the twin runs).
  // For i < n = rows.numel(): proposal[i] = current[rows[i]] with the side x side window at (top[i],
  // left[i]) of channel c set to high[rows[i]] where up[i, r, c], else low[rows[i]], for the first draw r
  // that changes any element (current[rows[i]] itself where none does); changed[i]: one did. current,
  // low, high [N, C, H, W] float32/float64; rows, top, left [n] int64; up [n, R, C] bool, R >= 1. Not
  // differentiable.
  m.def(
      "square_linf_proposal(Tensor current, Tensor low, Tensor high, Tensor rows, Tensor top, Tensor left, "
      "int side, Tensor up) -> (Tensor proposal, Tensor changed)");

  // FAB's projection (kernel: csrc/cpu/box_projection.cpp; on other devices the twin runs): per row i of
  // w [N, D], the smallest step d (in norm "linf" or "l2") with w_i . d = c_i and -down_i <= d <= up_i,
  // or the box corner furthest towards the hyperplane where the box does not reach it. w, up, down
  // [N, D] and c [N] float32/float64; up/down may be inf (an open side). Not differentiable.
  m.def("box_hyperplane_projection(Tensor w, Tensor c, Tensor up, Tensor down, str norm) -> Tensor");
}

TORCH_LIBRARY_IMPL(nonrobust_ext, Autograd, m) {
  for (const char* name : {"linf_step_", "l2_step_", "random_init_"}) {
    m.impl(name, torch::CppFunction::makeFromBoxedFunction<&nondifferentiable_inplace>());
  }
}

}  // namespace nonrobust_ext

#ifndef NRX_TORCH_VERSION
#error "NRX_TORCH_VERSION must be defined by the build"
#endif

PYBIND11_MODULE(_C, module) {
  module.doc() = "Compiled kernels of nonrobust_ext (ops are registered under torch.ops.nonrobust_ext)";
  module.def(
      "build_info",
      []() {
        pybind11::dict info;
        info["torch_version"] = std::string(NRX_TORCH_VERSION);
#ifdef NRX_WITH_CUDA
        info["with_cuda"] = true;
        info["cuda_version"] = std::string(NRX_CUDA_VERSION);
        info["cuda_archs"] = std::string(NRX_CUDA_ARCHS);
#else
        info["with_cuda"] = false;
        info["cuda_version"] = pybind11::none();
        info["cuda_archs"] = std::string();
#endif
        info["cpu_isas_compiled"] = nonrobust_ext::cpu::compiled_isas();
        info["cpu_isa"] = std::string(nonrobust_ext::cpu::cpu_isa().name);
        info["compiler"] = std::string(NRX_CXX_COMPILER);
        info["build_type"] = std::string(NRX_BUILD_TYPE);
        return info;
      },
      "How this extension was built: torch version, CUDA, CPU vector ISA (compiled and selected).");
}
