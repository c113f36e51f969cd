// Inner loops of the CPU feature-statistics kernels (class_feature_stats, feature_discrepancy),
// compiled once per vector ISA in the same translation units as the attack-step loops (see step_loops.h
// for why: plain C++ for the auto-vectoriser, no c10/ATen header in the ISA translation units, one
// table picked at load time: isa_table.h).
//
// Features are rows of D contiguous elements. Half types travel as their raw bits, in distinct tag
// structs so that bfloat16 and float16 get different loads. Every sum is formed in short runs in the
// compute type (float32 for float32/bfloat16/float16, float64 for float64) and carried on in float64.
#pragma once

#include <cstdint>

namespace nonrobust_ext::cpu {

struct Bf16Bits {
  uint16_t bits;
};
struct F16Bits {
  uint16_t bits;
};

template <typename S>
struct StatsAcc {
  using type = float;
};
template <>
struct StatsAcc<double> {
  using type = double;
};

template <typename S>
struct StatsLoopsFor {
  using A = typename StatsAcc<S>::type;
  // mean[0..D), m2[0..D) <- mean and sum of squared deviations (float64) of the n >= 1 rows
  // rows[0..n), which all belong to one class. rows[n..n + n_after) are the rows the caller will
  // process next (only prefetched).
  void (*class_rows)(const S* const* rows, int64_t n, int64_t n_after, int64_t D, double* mean, double* m2);
  // For the n rows of one chunk (row i of clean at clean + i * clean_stride, same for adv):
  // sq[i] <- sum_d (adv - clean)^2 (float64), col_abs[d] += sum_i |adv - clean| (float64).
  // scratch: D elements of the compute type.
  void (*discrepancy_rows)(const S* clean, int64_t clean_stride, const S* adv, int64_t adv_stride, int64_t n,
                           int64_t D, double* sq, double* col_abs, A* scratch);
};

// The feature-statistics loops of one ISA, per storage type.
struct StatsLoops {
  StatsLoopsFor<float> f32;
  StatsLoopsFor<double> f64;
  StatsLoopsFor<Bf16Bits> bf16;
  StatsLoopsFor<F16Bits> f16;

  template <typename S>
  const StatsLoopsFor<S>& get() const;
};

template <>
inline const StatsLoopsFor<float>& StatsLoops::get<float>() const { return f32; }
template <>
inline const StatsLoopsFor<double>& StatsLoops::get<double>() const { return f64; }
template <>
inline const StatsLoopsFor<Bf16Bits>& StatsLoops::get<Bf16Bits>() const { return bf16; }
template <>
inline const StatsLoopsFor<F16Bits>& StatsLoops::get<F16Bits>() const { return f16; }

// Work units of class_feature_stats are whole multiples of this many rows (class_rows' first block).
constexpr int64_t kStatsBlockRows = 64;

}  // namespace nonrobust_ext::cpu
