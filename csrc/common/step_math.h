// Per-sample and per-element formulas shared by the CPU and CUDA kernels, so both backends evaluate
// them identically.
//
// NaN propagates exactly as in the reference twins (nonrobust_ext/reference.py), which use
// torch.minimum / torch.maximum and a sign that keeps NaN (torch.sign itself maps NaN to 0): a NaN in
// any operand of a clamp or a sign gives NaN, never a silently kept or dropped bound or a zero step.
// The CPU vector loops (csrc/cpu/step_loops_impl.h) have their own, cheaper forms (they may include no
// inline function shared with other translation units, see csrc/cpu/step_loops.h, and never see a NaN
// parameter); keep the semantics in sync.
#pragma once

#include "counter_rng.h"

#include <cmath>

namespace nonrobust_ext {

// torch.maximum / torch.minimum: NaN if either operand is NaN.
template <typename A>
NRX_HOST_DEVICE A max_nan(A a, A b) {
  return (a > b || a != a) ? a : b;
}
template <typename A>
NRX_HOST_DEVICE A min_nan(A a, A b) {
  return (a < b || a != a) ? a : b;
}
// torch.minimum(torch.maximum(v, lo), hi)
template <typename A>
NRX_HOST_DEVICE A clamp_nan(A v, A lo, A hi) {
  return min_nan(max_nan(v, lo), hi);
}
// -1, 0 or 1, and NaN for NaN (unlike torch.sign, which gives 0: a NaN gradient must not pass as a
// zero step).
template <typename A>
NRX_HOST_DEVICE A sign_nan(A g) {
  return g != g ? g : A(g > A(0)) - A(g < A(0));
}

// The per-sample coefficients of the L2 step from the sums
//   {gg, dg, dd} = { sum (g*s)^2, sum (xa-x)*g, sum ((xa-x)/s)^2 }:
// gradient norm |g*s|, a = alpha / (|g*s| + 1e-12), the norm of the unprojected perturbation in
// threat-model units |d'|^2 = dd + 2*a*dg + a^2*gg, and the projection factor f = min(1, eps / |d'|).
// The write is then x + keep*(xa - x) + gcoef*s^2*g with keep = f, gcoef = f*a.
// A NaN norm or eps makes f NaN, so the whole sample becomes NaN (as in the twin), rather than the
// projection being skipped and the sample left outside the ball.
struct L2Coefficients {
  double keep;
  double gcoef;
};

NRX_HOST_DEVICE L2Coefficients l2_coefficients(const double* sums, double alpha, double eps) {
  const double gnorm = sqrt(sums[0]);
  const double a = alpha / (gnorm + 1e-12);
  const double dn2 = sums[2] + 2.0 * a * sums[1] + a * a * sums[0];
  const double dn = sqrt(dn2 < 0.0 ? 0.0 : dn2);
  const double f = dn > eps ? eps / dn : (dn == dn && eps == eps ? 1.0 : dn + eps);
  return {f, f * a};
}

// Box-Muller normal for logical element i, in float32 on every device (reference.py does the same).
NRX_HOST_DEVICE float normal_at(uint32_t key_uniform, uint32_t key_angle, uint64_t i) {
  const float u1 = rng::uniform01_open0(rng::draw(key_uniform, i));
  const float u2 = rng::uniform01(rng::draw(key_angle, i));
  return sqrtf(-2.0f * logf(u1)) * cosf(6.28318530717958647692f * u2);
}

}  // namespace nonrobust_ext
