// Template bodies of the feature-statistics inner loops; included once per ISA translation unit,
// through isa_table_impl.h (see there), in the namespace NRX_ISA_NAME::stats. NRX_STATS_TILE_BYTES is
// how many bytes of compute-type accumulators one register tile holds (four vector registers of the ISA). Written for the auto-vectoriser: fixed-size local arrays that stay
// in registers, restrict pointers, branch-free selects.
#pragma once

#include "stats_loops.h"

#ifndef NRX_STATS_TILE_BYTES
#error "NRX_STATS_TILE_BYTES must be defined by the ISA translation unit"
#endif

// GCC's unroll-and-jam would fuse two rows of a tile loop into one scalar loop (measured: 3x slower
// than the vector loop it otherwise emits).
// push/pop: only the statistics loops, not the attack-step loops of the same translation unit.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("no-loop-unroll-and-jam")
#endif

namespace nonrobust_ext::cpu::NRX_ISA_NAME::stats {
namespace {

inline float load(float v) { return v; }
inline double load(double v) { return v; }
inline float load(Bf16Bits v) {
  const uint32_t bits = static_cast<uint32_t>(v.bits) << 16;
  float f;
  __builtin_memcpy(&f, &bits, sizeof(f));
  return f;
}
// IEEE half -> float, exactly, with integer operations and selects only (vectorises; does not depend
// on the FPU's denormal mode, which torch.set_flush_denormal changes).
inline float load(F16Bits v) {
  const uint32_t h = v.bits;
  const uint32_t sign = (h & 0x8000u) << 16;
  const uint32_t em = (h & 0x7fffu) << 13;  // exponent and mantissa, in float position
  const uint32_t normal = em + (112u << 23);  // rebias the exponent: 127 - 15
  const uint32_t special = em | 0x7f800000u;  // inf and NaN keep their mantissa
  float sub = static_cast<float>(static_cast<int32_t>(h & 0x3ffu)) * 0x1p-24f;  // subnormals and zero
  uint32_t sub_bits;
  __builtin_memcpy(&sub_bits, &sub, sizeof(sub_bits));
  uint32_t bits = em >= (0x7c00u << 13) ? special : normal;
  bits = em < (0x0400u << 13) ? sub_bits : bits;
  bits |= sign;
  float f;
  __builtin_memcpy(&f, &bits, sizeof(f));
  return f;
}

inline int64_t min_i64(int64_t a, int64_t b) { return a < b ? a : b; }
template <typename A>
inline A abs_of(A v) {
  return v < A(0) ? -v : v;
}
// Rounding can make a sum of squared deviations slightly negative; NaN stays NaN (a NaN feature must
// show in its class's statistics, as in the reference twin).
inline double non_negative(double v) { return v < 0.0 ? 0.0 : v; }

// acc + v * v, fused where the ISA has FMA (one instruction instead of two on the busiest port); the
// baseline build has no FMA unit, where a fused call would be a slow library function.
inline float add_square(float acc, float v) {
#if defined(__FMA__)
  return __builtin_fmaf(v, v, acc);
#else
  return acc + v * v;
#endif
}
inline double add_square(double acc, double v) {
#if defined(__FMA__)
  return __builtin_fma(v, v, acc);
#else
  return acc + v * v;
#endif
}

// Software prefetch of the next block's rows into L2, a few cache lines per row of a tile pass, in
// memory order (row by row, line by line). A tile pass reads each row in short pieces, one row after
// another, which the hardware prefetchers do not follow; fetching the next block this way ahead of
// use measured 1.6x faster on a Zen 4 core with the features out of cache.
template <typename S>
struct NextBlock {
  const S* const* rows = nullptr;
  int64_t n = 0;
  int64_t row = 0;
  const char* line = nullptr;
  const char* end = nullptr;
  int64_t row_bytes = 0;

  NextBlock() = default;
  NextBlock(const S* const* r, int64_t count, int64_t D) : rows(r), n(count), row_bytes(D * int64_t{sizeof(S)}) {
    if (n > 0) start_row();
  }
  void start_row() {
    const char* p = reinterpret_cast<const char*>(rows[row]);
    line = reinterpret_cast<const char*>(reinterpret_cast<uintptr_t>(p) & ~uintptr_t{63});
    end = p + row_bytes;
  }
  void fetch(int lines) {
    for (int i = 0; i < lines && row < n; ++i) {
      __builtin_prefetch(line, 0, 2);
      line += 64;
      if (line >= end && ++row < n) start_row();
    }
  }
};

// One tile (columns [off, off + len)) of one block of nb rows of a class, merged into the running
// float64 mean/m2 of the n_before rows already seen (Chan et al.'s pairwise update).
//
// The block is summed around a shift c: the block's own mean (an extra pass over the tile, which is
// in L1) for the first block, the running mean afterwards. Deviations from a shift close to the mean
// are small, so the float32 sums lose nothing to cancellation even for features with a large common
// offset; mean = c + s1/n and m2 = s2 - s1^2/n are then exact up to float32 rounding of the
// deviations, and the float64 merge keeps long classes accurate.
template <typename S, int W, bool kFull>
void class_tile(const S* const* __restrict rows, int64_t nb, int64_t off, int w, int64_t n_before,
                double* __restrict mean, double* __restrict m2, NextBlock<S>& next) {
  using A = typename StatsAcc<S>::type;
  const int len = kFull ? W : w;
  A c[W];
  if (n_before == 0) {
    A s[W] = {};
    for (int64_t r = 0; r < nb; ++r) {
      const S* __restrict p = rows[r] + off;
      for (int k = 0; k < len; ++k) s[k] += load(p[k]);
    }
    const A inv = A(1) / static_cast<A>(nb);
    for (int k = 0; k < len; ++k) c[k] = s[k] * inv;
  } else {
    for (int k = 0; k < len; ++k) c[k] = static_cast<A>(mean[k]);
  }
  A s1[W] = {};
  A s2[W] = {};
  constexpr int kLines = (W * static_cast<int>(sizeof(S)) + 63) / 64;
  for (int64_t r = 0; r < nb; ++r) {
    next.fetch(kLines);
    const S* __restrict p = rows[r] + off;
    for (int k = 0; k < len; ++k) {
      const A v = load(p[k]) - c[k];
      s1[k] += v;
      s2[k] = add_square(s2[k], v);
    }
  }
  const double dn = static_cast<double>(nb);
  const double inv_n = 1.0 / dn;
  if (n_before == 0) {
    for (int k = 0; k < len; ++k) {
      const double a = s1[k];
      mean[k] = static_cast<double>(c[k]) + a * inv_n;
      m2[k] = non_negative(static_cast<double>(s2[k]) - a * a * inv_n);
    }
    return;
  }
  const double total = static_cast<double>(n_before) + dn;
  const double w_mean = dn / total;
  const double w_m2 = static_cast<double>(n_before) * dn / total;
  for (int k = 0; k < len; ++k) {
    const double a = s1[k];
    const double block_mean = static_cast<double>(c[k]) + a * inv_n;
    const double block_m2 = non_negative(static_cast<double>(s2[k]) - a * a * inv_n);
    const double delta = block_mean - mean[k];
    mean[k] += delta * w_mean;
    m2[k] += block_m2 + delta * delta * w_m2;
  }
}

template <typename S>
void class_rows(const S* const* rows, int64_t n, int64_t n_after, int64_t D, double* mean, double* m2) {
  using A = typename StatsAcc<S>::type;
  constexpr int W = NRX_STATS_TILE_BYTES / static_cast<int>(sizeof(A));
  // The first block takes two passes (its tile stays in L1 in between): kFirst rows, or the whole
  // class when it is short (65 rows: one block of 65, not 64 + 1; a block's merge costs as much as a
  // few rows). Later blocks take one pass around the running mean, up to kLater rows in balanced
  // sizes: float32 sums of kLater deviations from a shift that close to the mean lose nothing.
  constexpr int64_t kFirst = 64;
  constexpr int64_t kLater = 128;  // a block and the next one fit in L2 together (prefetch)
  const int64_t first = n <= 2 * kFirst ? n : kFirst;
  const int64_t rest = n - first;
  const int64_t later = (rest + kLater - 1) / kLater;
  auto start = [&](int64_t b) { return b == 0 ? 0 : first + (later == 0 ? 0 : rest * (b - 1) / later); };
  int64_t done = 0;
  for (int64_t b = 0; b <= later; ++b) {
    const int64_t b0 = start(b);
    const int64_t nb = start(b + 1) - b0;
    const S* const* block = rows + b0;
    // The last block prefetches the rows the caller processes next (another unit).
    NextBlock<S> next(rows + b0 + nb, b < later ? start(b + 2) - start(b + 1) : min_i64(n_after, 2 * kFirst), D);
    int64_t t = 0;
    for (; t + W <= D; t += W) class_tile<S, W, true>(block, nb, t, W, done, mean + t, m2 + t, next);
    if (t < D) class_tile<S, W, false>(block, nb, t, static_cast<int>(D - t), done, mean + t, m2 + t, next);
    done += nb;
  }
}

// Row sums of squares in L float lanes, flushed to float64 every kFlushCols elements; column sums of
// absolute values in a compute-type scratch row, flushed to float64 every kFlushRows rows.
template <typename S>
void discrepancy_rows(const S* __restrict clean, int64_t clean_stride, const S* __restrict adv, int64_t adv_stride,
                      int64_t n, int64_t D, double* __restrict sq, double* __restrict col_abs,
                      typename StatsAcc<S>::type* __restrict scratch) {
  using A = typename StatsAcc<S>::type;
  constexpr int L = NRX_STATS_TILE_BYTES / static_cast<int>(sizeof(A));
  constexpr int64_t kFlushRows = 64;
  constexpr int64_t kFlushCols = 1024;
  for (int64_t r0 = 0; r0 < n; r0 += kFlushRows) {
    const int64_t rn = min_i64(kFlushRows, n - r0);
    for (int64_t d = 0; d < D; ++d) scratch[d] = A(0);
    for (int64_t r = r0; r < r0 + rn; ++r) {
      const S* __restrict c = clean + r * clean_stride;
      const S* __restrict a = adv + r * adv_stride;
      double total = 0.0;
      int64_t j = 0;
      while (j < D) {
        const int64_t end = min_i64(D, j + kFlushCols);
        A acc[L] = {};
        for (; j + L <= end; j += L) {
          for (int k = 0; k < L; ++k) {
            const A v = load(a[j + k]) - load(c[j + k]);
            acc[k] = add_square(acc[k], v);
            scratch[j + k] += abs_of(v);
          }
        }
        for (int k = 0; j < end; ++j, ++k) {
          const A v = load(a[j]) - load(c[j]);
          acc[k] = add_square(acc[k], v);
          scratch[j] += abs_of(v);
        }
        for (int k = 0; k < L; ++k) total += acc[k];
      }
      sq[r] = total;
    }
    for (int64_t d = 0; d < D; ++d) col_abs[d] += scratch[d];
  }
}

template <typename S>
StatsLoopsFor<S> make_stats_loops() {
  StatsLoopsFor<S> t;
  t.class_rows = &class_rows<S>;
  t.discrepancy_rows = &discrepancy_rows<S>;
  return t;
}

}  // namespace
}  // namespace nonrobust_ext::cpu::NRX_ISA_NAME::stats

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif
