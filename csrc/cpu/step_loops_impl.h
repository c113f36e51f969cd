// Template bodies of the CPU attack-step inner loops; included once per ISA translation unit, through
// isa_table_impl.h (see there), in the namespace NRX_ISA_NAME.
// Written for the auto-vectoriser: restrict pointers, branch-free selects, fixed-width partial sums.
#pragma once

#include "step_loops.h"

namespace nonrobust_ext::cpu::NRX_ISA_NAME {
namespace {

// Loads and stores between storage and accumulation types; bfloat16 is uint16_t bits, rounded to
// nearest even on store (NaN stays NaN), as c10::BFloat16 does.
inline float load(float v) { return v; }
inline double load(double v) { return v; }
inline float load(uint16_t v) {
  const uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  __builtin_memcpy(&f, &bits, sizeof(f));
  return f;
}
template <typename T>
inline T store(typename AccType<T>::type v) {
  if constexpr (sizeof(T) == 2) {
    uint32_t bits;
    __builtin_memcpy(&bits, &v, sizeof(bits));
    const uint16_t rounded = static_cast<uint16_t>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
    return v != v ? static_cast<uint16_t>(0x7fc0) : rounded;  // a select, not a branch: vectorises
  } else {
    return v;
  }
}
inline int64_t min_i64(int64_t a, int64_t b) { return a < b ? a : b; }

template <typename A>
struct Uniform {
  A v;
  A operator[](int64_t) const { return v; }
};
template <typename A>
struct Tiled {
  const A* p;
  A operator[](int64_t j) const { return p[j]; }
};

template <typename A>
struct Uniforms {
  Uniform<A> scale, inv_scale, scale_sq, lo, hi;
  explicit Uniforms(const RunParams<A>& p)
      : scale{p.scale[0]}, inv_scale{p.inv_scale[0]}, scale_sq{p.scale_sq[0]}, lo{p.lo[0]}, hi{p.hi[0]} {}
};
template <typename A>
struct Tileds {
  Tiled<A> scale, inv_scale, scale_sq, lo, hi;
  explicit Tileds(const RunParams<A>& p)
      : scale{p.scale}, inv_scale{p.inv_scale}, scale_sq{p.scale_sq}, lo{p.lo}, hi{p.hi} {}
};

// NaN, as in the reference twins, at the least cost per element. The CPU loops never see a NaN
// parameter (eps, alpha, scale, lo, hi): the CPU prologue refuses them (csrc/common/step_args.h). A NaN
// can only come from the data, and then:
//   - a NaN value v stays NaN through clamp_to (`v < lo` and `v > hi` are false: v is kept; these
//     compile to max/min instructions);
//   - a NaN gradient gives a NaN step (sign_of), where torch.sign would give 0;
//   - a NaN centre x makes the twin's ball bounds x -+ radius NaN, so linf_loop maps it to NaN.
// (The CUDA kernels, whose parameters are not checked, use the fully NaN-propagating clamp_nan of
// csrc/common/step_math.h.) A nested ?: or a bool `|` in these selects keeps GCC from vectorising the
// loop (measured: 2.7x to 37x slower); these forms vectorise on every ISA.
template <typename A>
inline A clamp_to(A v, A lo, A hi) {
  v = v < lo ? lo : v;
  return v > hi ? hi : v;
}

// sign(0) = 0, sign(NaN) = NaN.
template <typename A>
inline A sign_of(A g) {
  const A s = A(g > A(0)) - A(g < A(0));
  return g != g ? g : s;
}

template <typename T, typename Params>
void linf_loop(T* __restrict xa, const T* __restrict g, const T* __restrict x, int64_t n,
               typename AccType<T>::type alpha, typename AccType<T>::type eps,
               RunParams<typename AccType<T>::type> raw) {
  using A = typename AccType<T>::type;
  const Params p(raw);
  for (int64_t j = 0; j < n; ++j) {
    const A s = p.scale[j];
    const A xv = load(x[j]);
    const A radius = eps * s;
    A v = load(xa[j]) + alpha * s * sign_of(load(g[j]));
    v = clamp_to(v, xv - radius, xv + radius);
    v = xv != xv ? xv : v;  // a NaN centre: NaN bounds in the twin
    xa[j] = store<T>(clamp_to(v, p.lo[j], p.hi[j]));
  }
}

// Partial sums in W independent float lanes (what the vectoriser maps to SIMD registers), flushed to
// double every kFlush elements so long samples (224x224x3) keep float64-level accuracy.
template <typename T, typename Params>
void l2_sums_loop(const T* __restrict xa, const T* __restrict g, const T* __restrict x, int64_t n,
                  RunParams<typename AccType<T>::type> raw, double* out) {
  using A = typename AccType<T>::type;
  constexpr int W = 64 / sizeof(A);
  constexpr int64_t kFlush = 1024;
  const Params p(raw);
  double tot_gg = 0, tot_dg = 0, tot_dd = 0;
  int64_t j = 0;
  while (j < n) {
    const int64_t end = min_i64(n, j + kFlush);
    A gg[W] = {}, dg[W] = {}, dd[W] = {};
    for (; j + W <= end; j += W) {
      for (int k = 0; k < W; ++k) {
        const A gv = load(g[j + k]);
        const A d = load(xa[j + k]) - load(x[j + k]);
        const A gs = gv * p.scale[j + k];
        const A ds = d * p.inv_scale[j + k];
        gg[k] += gs * gs;
        dg[k] += d * gv;
        dd[k] += ds * ds;
      }
    }
    for (int k = 0; j < end; ++j, ++k) {
      const A gv = load(g[j]);
      const A d = load(xa[j]) - load(x[j]);
      const A gs = gv * p.scale[j];
      const A ds = d * p.inv_scale[j];
      gg[k] += gs * gs;
      dg[k] += d * gv;
      dd[k] += ds * ds;
    }
    for (int k = 0; k < W; ++k) {
      tot_gg += gg[k];
      tot_dg += dg[k];
      tot_dd += dd[k];
    }
  }
  out[0] += tot_gg;
  out[1] += tot_dg;
  out[2] += tot_dd;
}

template <typename T, typename Params>
void l2_write_loop(T* __restrict xa, const T* __restrict g, const T* __restrict x, int64_t n,
                   typename AccType<T>::type keep, typename AccType<T>::type gcoef,
                   RunParams<typename AccType<T>::type> raw) {
  using A = typename AccType<T>::type;
  const Params p(raw);
  for (int64_t j = 0; j < n; ++j) {
    const A xv = load(x[j]);
    const A v = xv + keep * (load(xa[j]) - xv) + gcoef * p.scale_sq[j] * load(g[j]);
    xa[j] = store<T>(clamp_to(v, p.lo[j], p.hi[j]));
  }
}

template <typename T>
StepLoopsFor<T> make_loops() {
  using A = typename AccType<T>::type;
  StepLoopsFor<T> t;
  t.linf_uniform = &linf_loop<T, Uniforms<A>>;
  t.linf_tiled = &linf_loop<T, Tileds<A>>;
  t.l2_sums_uniform = &l2_sums_loop<T, Uniforms<A>>;
  t.l2_sums_tiled = &l2_sums_loop<T, Tileds<A>>;
  t.l2_write_uniform = &l2_write_loop<T, Uniforms<A>>;
  t.l2_write_tiled = &l2_write_loop<T, Tileds<A>>;
  return t;
}

}  // namespace
}  // namespace nonrobust_ext::cpu::NRX_ISA_NAME
