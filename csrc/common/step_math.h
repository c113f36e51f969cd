// Per-sample formulas shared by the CPU and CUDA kernels, so both backends evaluate them identically.
#pragma once

#include "counter_rng.h"

#include <cmath>

namespace nonrobust_ext {

// The per-sample coefficients of the L2 step from the sums
//   {gg, dg, dd} = { sum (g*s)^2, sum (xa-x)*g, sum ((xa-x)/s)^2 }:
// gradient norm |g*s|, a = alpha / (|g*s| + 1e-12), the norm of the unprojected perturbation in
// threat-model units |d'|^2 = dd + 2*a*dg + a^2*gg, and the projection factor f = min(1, eps / |d'|).
// The write is then x + keep*(xa - x) + gcoef*s^2*g with keep = f, gcoef = f*a.
struct L2Coefficients {
  double keep;
  double gcoef;
};

NRX_HOST_DEVICE L2Coefficients l2_coefficients(const double* sums, double alpha, double eps) {
  const double gnorm = sqrt(sums[0]);
  const double a = alpha / (gnorm + 1e-12);
  const double dn2 = sums[2] + 2.0 * a * sums[1] + a * a * sums[0];
  const double dn = sqrt(dn2 < 0.0 ? 0.0 : dn2);
  const double f = dn > eps ? eps / dn : 1.0;
  return {f, f * a};
}

// Box-Muller normal for logical element i, in float32 on every device (reference.py does the same).
NRX_HOST_DEVICE float normal_at(uint32_t key_uniform, uint32_t key_angle, uint64_t i) {
  const float u1 = rng::uniform01_open0(rng::draw(key_uniform, i));
  const float u2 = rng::uniform01(rng::draw(key_angle, i));
  return sqrtf(-2.0f * logf(u1)) * cosf(6.28318530717958647692f * u2);
}

}  // namespace nonrobust_ext
