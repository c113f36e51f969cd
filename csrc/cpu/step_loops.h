// Inner loops of the CPU attack-step kernels, compiled once per vector ISA.
//
// The loops are plain C++ written for the auto-vectoriser; step_loops_impl.h is compiled three times
// (isa/avx512.cpp, isa/avx2.cpp, isa/baseline.cpp, each also compiling the feature-statistics loops)
// with different -m flags, and the best table the running CPU supports is picked once at load time
// (cpu_isa() in isa_table.h). This header has no ATen dependency so the ISA translation units compile
// in seconds.
//
// A "run" is a stretch of contiguous memory inside one sample. Per-channel parameters are either
// Uniform (the whole run is one channel: NCHW-like layouts) or Tiled (element j has channel j % C and
// the caller passes the parameters pre-tiled to the run length: channels_last-like layouts).
//
// bfloat16 travels as its raw uint16_t bits. The ISA translation units include no c10/ATen header
// and call no inline function defined outside them: an inline function compiled with -mavx512f in
// one TU could otherwise be the copy the linker keeps for every TU (an ODR merge), and crash
// CPUs without AVX-512.
#pragma once

#include <cstdint>

namespace nonrobust_ext::cpu {

template <typename T>
struct AccType { using type = float; };  // float32 and bfloat16 (uint16_t bits)
template <>
struct AccType<double> { using type = double; };

// Per-channel parameters of one run, derived from the op's scale/lo/hi.
template <typename A>
struct RunParams {
  const A* scale;      // s: threat-model units -> input units
  const A* inv_scale;  // 1 / s
  const A* scale_sq;   // s * s
  const A* lo;
  const A* hi;
};

template <typename T>
struct StepLoopsFor {
  using A = typename AccType<T>::type;
  // x_adv <- clip_[lo,hi](clip_[x - eps*s, x + eps*s](x_adv + alpha*s*sign(g)))
  void (*linf_uniform)(T* xa, const T* g, const T* x, int64_t n, A alpha, A eps, RunParams<A> p);
  void (*linf_tiled)(T* xa, const T* g, const T* x, int64_t n, A alpha, A eps, RunParams<A> p);
  // out += { sum (g*s)^2, sum (xa-x)*g, sum ((xa-x)/s)^2 }
  void (*l2_sums_uniform)(const T* xa, const T* g, const T* x, int64_t n, RunParams<A> p, double* out);
  void (*l2_sums_tiled)(const T* xa, const T* g, const T* x, int64_t n, RunParams<A> p, double* out);
  // x_adv <- clip_[lo,hi](x + keep*(xa - x) + gcoef*s^2*g)
  void (*l2_write_uniform)(T* xa, const T* g, const T* x, int64_t n, A keep, A gcoef, RunParams<A> p);
  void (*l2_write_tiled)(T* xa, const T* g, const T* x, int64_t n, A keep, A gcoef, RunParams<A> p);
};

// The step loops of one ISA, per storage type.
struct StepLoops {
  StepLoopsFor<float> f32;
  StepLoopsFor<double> f64;
  StepLoopsFor<uint16_t> bf16;

  template <typename T>
  const StepLoopsFor<T>& get() const;
};

template <>
inline const StepLoopsFor<float>& StepLoops::get<float>() const { return f32; }
template <>
inline const StepLoopsFor<double>& StepLoops::get<double>() const { return f64; }
template <>
inline const StepLoopsFor<uint16_t>& StepLoops::get<uint16_t>() const { return bf16; }

}  // namespace nonrobust_ext::cpu
