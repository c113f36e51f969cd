// Counter-based random numbers for the random-start op.
//
// Every random number is a pure function of (seed, stream, logical element index), so the random
// start is reproducible from a seed, identical on CPU and CUDA (up to libm rounding in the L2
// Box-Muller transform), independent of memory layout and of how the work is split across threads.
//
// The hash is a 32-bit xorshift-multiply finaliser. Both multipliers are below 2^31 on purpose: the
// pure-PyTorch twin in nonrobust_ext/reference.py evaluates the same hash with int64 tensor
// arithmetic, where a 32-bit value times a constant below 2^31 cannot overflow. Keep the constants in
// sync with reference.py (_RNG_* there).
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define NRX_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define NRX_HOST_DEVICE inline
#endif

namespace nonrobust_ext::rng {

constexpr uint32_t kMul1 = 0x7feb352dU;
constexpr uint32_t kMul2 = 0x5bd1e995U;
constexpr uint32_t kStreamMul = 0x2545f491U;

// Streams: which independent sequence a draw comes from.
constexpr uint32_t kStreamUniform = 1;   // L-inf offsets; first Box-Muller uniform
constexpr uint32_t kStreamAngle = 2;     // second Box-Muller uniform
constexpr uint32_t kStreamRadius = 3;    // per-sample radius of the L2 ball

NRX_HOST_DEVICE uint32_t mix32(uint32_t v) {
  v ^= v >> 16;
  v *= kMul1;
  v ^= v >> 15;
  v *= kMul2;
  v ^= v >> 16;
  return v;
}

// Per-(seed, stream) key, computed once per op call.
NRX_HOST_DEVICE uint32_t stream_key(uint64_t seed, uint32_t stream) {
  const uint32_t lo = static_cast<uint32_t>(seed);
  const uint32_t hi = static_cast<uint32_t>(seed >> 32);
  return mix32(lo ^ mix32(hi ^ (stream * kStreamMul)));
}

NRX_HOST_DEVICE uint32_t draw(uint32_t key, uint64_t index) {
  const uint32_t lo = static_cast<uint32_t>(index);
  const uint32_t hi = static_cast<uint32_t>(index >> 32);
  return mix32(mix32(lo ^ key) ^ hi);
}

// Uniform in [0, 1) with 24 random bits: exactly representable in float32.
NRX_HOST_DEVICE float uniform01(uint32_t bits) {
  return static_cast<float>(bits >> 8) * 5.9604644775390625e-08f;  // 2^-24
}

// Uniform in (0, 1]: safe for log().
NRX_HOST_DEVICE float uniform01_open0(uint32_t bits) {
  return static_cast<float>((bits >> 8) + 1u) * 5.9604644775390625e-08f;
}

}  // namespace nonrobust_ext::rng
