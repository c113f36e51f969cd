// CPU kernels of the attack-state ops: linf_step_, l2_step_, random_init_.
//
// Threading and work partitioning live here; the vectorised inner loops live in step_loops_impl.h,
// compiled per ISA (isa_table.h). The argument checks are the shared prologue (StepArgs,
// csrc/common/step_args.h). Semantics (and the pure-PyTorch twin of each op) are in
// nonrobust_ext/reference.py.
#include "../common/counter_rng.h"
#include "../common/step_args.h"
#include "../common/step_math.h"
#include "isa_table.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <string>
#include <vector>

namespace nonrobust_ext::cpu {

namespace {

// The storage type the ISA loops see: bfloat16 as its raw bits (see step_loops.h).
template <typename T>
struct Storage { using type = T; };
template <>
struct Storage<c10::BFloat16> { using type = uint16_t; };
template <typename T>
using storage_t = typename Storage<T>::type;

template <typename T>
storage_t<T>* raw(const at::Tensor& t) {
  return reinterpret_cast<storage_t<T>*>(t.data_ptr<T>());
}

constexpr int64_t kPiece = 4096;         // elements per work unit
constexpr int64_t kGrainElems = 32768;   // elements per parallel task at least

// How a canonical (dense, batch-outermost) tensor is cut into work units. A unit is a contiguous
// piece of memory inside one sample; in uniform mode every element of a unit has the same channel,
// in tiled mode (channel is the innermost dim) unit element j has channel j % C.
struct Partition {
  bool tiled = false;
  int64_t sample_len = 0;      // S
  int64_t run_len = 0;         // L: run of one channel (uniform) or the whole sample (tiled)
  int64_t runs_per_sample = 0;
  int64_t piece_len = 0;
  int64_t pieces_per_run = 0;
  int64_t channels = 0;

  explicit Partition(const StepArgs& a) {
    sample_len = a.per_sample;
    channels = a.channels;
    tiled = a.channels > 1 && a.channel_stride == 1;
    if (tiled) {
      run_len = sample_len;
      piece_len = a.channels * std::max<int64_t>(1, kPiece / a.channels);
    } else {
      run_len = a.channel_stride;  // the whole sample when C == 1
      piece_len = kPiece;
    }
    runs_per_sample = sample_len / run_len;
    pieces_per_run = (run_len + piece_len - 1) / piece_len;
  }
  int64_t units_per_sample() const { return runs_per_sample * pieces_per_run; }
  int64_t sample_of(int64_t u) const { return u / units_per_sample(); }
  // Memory offset, length and channel (uniform mode) of unit u.
  void locate(int64_t u, int64_t& offset, int64_t& len, int64_t& channel) const {
    const int64_t b = u / units_per_sample();
    const int64_t rem = u % units_per_sample();
    const int64_t r = rem / pieces_per_run;
    const int64_t p = rem % pieces_per_run;
    offset = b * sample_len + r * run_len + p * piece_len;
    len = std::min(piece_len, run_len - p * piece_len);
    channel = tiled ? 0 : r % channels;
  }
  int64_t grain() const { return std::max<int64_t>(1, kGrainElems / piece_len); }
};

// Per-channel parameters, tiled to the piece length in tiled mode.
template <typename A>
struct ChannelTables {
  std::vector<A> scale, inv_scale, scale_sq, lo, hi;
  bool tiled;

  ChannelTables(const StepArgs& a, const Partition& part) : tiled(part.tiled) {
    const int64_t C = a.channels;
    const int64_t n = tiled ? part.piece_len : C;
    const A* s = a.scale.data_ptr<A>();
    const A* l = a.lo.data_ptr<A>();
    const A* h = a.hi.data_ptr<A>();
    for (int64_t j = 0; j < n; ++j) {
      const int64_t c = j % C;
      scale.push_back(s[c]);
      inv_scale.push_back(A(1) / s[c]);
      scale_sq.push_back(s[c] * s[c]);
      lo.push_back(l[c]);
      hi.push_back(h[c]);
    }
  }
  RunParams<A> at(int64_t channel) const {
    const int64_t k = tiled ? 0 : channel;
    return RunParams<A>{scale.data() + k, inv_scale.data() + k, scale_sq.data() + k, lo.data() + k,
                        hi.data() + k};
  }
};

const bool* active_ptr(const StepArgs& a) {
  return a.active ? a.active->data_ptr<bool>() : nullptr;
}

template <typename T>
void linf_step_impl(const StepArgs& a) {
  using S = storage_t<T>;
  using A = typename AccType<S>::type;
  const auto& loops = cpu_isa().step.get<S>();
  const Partition part(a);
  const ChannelTables<A> tab(a, part);
  S* xa = raw<T>(a.target);
  const S* g = raw<T>(a.grad);
  const S* x = raw<T>(a.x);
  const A* eps = a.eps.data_ptr<A>();
  const A* alpha = a.alpha.data_ptr<A>();
  const bool* active = active_ptr(a);
  const auto kernel = part.tiled ? loops.linf_tiled : loops.linf_uniform;
  const int64_t units = a.batch * part.units_per_sample();
  at::parallel_for(0, units, part.grain(), [&](int64_t begin, int64_t end) {
    for (int64_t u = begin; u < end; ++u) {
      const int64_t b = part.sample_of(u);
      if (active && !active[b]) continue;
      int64_t off, len, c;
      part.locate(u, off, len, c);
      kernel(xa + off, g + off, x + off, len, alpha[b], eps[b], tab.at(c));
    }
  });
}

template <typename T>
void l2_step_impl(const StepArgs& a) {
  using S = storage_t<T>;
  using A = typename AccType<S>::type;
  const auto& loops = cpu_isa().step.get<S>();
  const Partition part(a);
  const ChannelTables<A> tab(a, part);
  S* xa = raw<T>(a.target);
  const S* g = raw<T>(a.grad);
  const S* x = raw<T>(a.x);
  const A* eps = a.eps.data_ptr<A>();
  const A* alpha = a.alpha.data_ptr<A>();
  const bool* active = active_ptr(a);
  const auto sums_kernel = part.tiled ? loops.l2_sums_tiled : loops.l2_sums_uniform;
  const auto write_kernel = part.tiled ? loops.l2_write_tiled : loops.l2_write_uniform;
  const int64_t ups = part.units_per_sample();

  auto sums_of = [&](int64_t u, double* out) {
    int64_t off, len, c;
    part.locate(u, off, len, c);
    sums_kernel(xa + off, g + off, x + off, len, tab.at(c), out);
  };
  auto write = [&](int64_t u, const L2Coefficients& k) {
    int64_t off, len, c;
    part.locate(u, off, len, c);
    write_kernel(xa + off, g + off, x + off, len, static_cast<A>(k.keep), static_cast<A>(k.gcoef),
                 tab.at(c));
  };

  if (a.batch >= 2 * at::get_num_threads()) {
    // Enough samples to keep every thread busy: one sample at a time per thread, so the second pass
    // re-reads the sample from cache instead of memory.
    at::parallel_for(0, a.batch, 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        if (active && !active[b]) continue;
        double sums[3] = {0, 0, 0};
        for (int64_t u = b * ups; u < (b + 1) * ups; ++u) sums_of(u, sums);
        const L2Coefficients k = l2_coefficients(sums, alpha[b], eps[b]);
        for (int64_t u = b * ups; u < (b + 1) * ups; ++u) write(u, k);
      }
    });
    return;
  }
  // Few large samples: split each sample across threads; per-unit partial sums, then a reduction.
  const int64_t units = a.batch * ups;
  std::vector<double> partial(static_cast<size_t>(units) * 3, 0.0);
  at::parallel_for(0, units, part.grain(), [&](int64_t begin, int64_t end) {
    for (int64_t u = begin; u < end; ++u) {
      if (active && !active[part.sample_of(u)]) continue;
      sums_of(u, &partial[u * 3]);
    }
  });
  std::vector<L2Coefficients> coef(a.batch);
  for (int64_t b = 0; b < a.batch; ++b) {
    double sums[3] = {0, 0, 0};
    for (int64_t u = b * ups; u < (b + 1) * ups; ++u)
      for (int k = 0; k < 3; ++k) sums[k] += partial[u * 3 + k];
    coef[b] = l2_coefficients(sums, alpha[b], eps[b]);
  }
  at::parallel_for(0, units, part.grain(), [&](int64_t begin, int64_t end) {
    for (int64_t u = begin; u < end; ++u) {
      const int64_t b = part.sample_of(u);
      if (active && !active[b]) continue;
      write(u, coef[b]);
    }
  });
}

template <typename T>
void random_init_impl(const StepArgs& a, uint64_t seed, bool l2) {
  using A = at::opmath_type<T>;
  T* xa = a.target.data_ptr<T>();
  const T* x = a.x.data_ptr<T>();
  const A* eps = a.eps.data_ptr<A>();
  const A* scale = a.scale.data_ptr<A>();
  const A* lo = a.lo.data_ptr<A>();
  const A* hi = a.hi.data_ptr<A>();
  const bool* active = active_ptr(a);
  const int64_t S = a.per_sample;
  const int64_t C = a.channels;
  const int64_t inner = S / C;  // elements per channel inside a sample (logical order)
  const uint32_t key_u = rng::stream_key(seed, rng::kStreamUniform);
  const uint32_t key_angle = rng::stream_key(seed, rng::kStreamAngle);
  const uint32_t key_radius = rng::stream_key(seed, rng::kStreamRadius);

  at::parallel_for(0, a.batch, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      if (active && !active[b]) continue;
      const int64_t base = b * S;
      if (!l2) {
        for (int64_t o = 0; o < S; ++o) {
          const int64_t c = (o / inner) % C;
          const uint64_t i = static_cast<uint64_t>(base + o);
          const A u = static_cast<A>(rng::uniform01(rng::draw(key_u, i)));
          const A xv = static_cast<A>(x[base + o]);
          const A v = xv + eps[b] * scale[c] * (A(2) * u - A(1));
          xa[base + o] = static_cast<T>(clamp_nan(v, lo[c], hi[c]));
        }
        continue;
      }
      // Uniform in the L2 ball: Gaussian direction, radius eps * U^(1/S). The normals are generated
      // twice (norm, then write) rather than stored: this runs once per attack restart.
      double sq = 0.0;
      for (int64_t o = 0; o < S; ++o) {
        const double z = normal_at(key_u, key_angle, static_cast<uint64_t>(base + o));
        sq += z * z;
      }
      const double u_r = rng::uniform01_open0(rng::draw(key_radius, static_cast<uint64_t>(b)));
      const double radius = static_cast<double>(eps[b]) * std::pow(u_r, 1.0 / static_cast<double>(S));
      const A coef = static_cast<A>(sq > 0.0 ? radius / std::sqrt(sq) : 0.0);
      for (int64_t o = 0; o < S; ++o) {
        const int64_t c = (o / inner) % C;
        const A z = static_cast<A>(normal_at(key_u, key_angle, static_cast<uint64_t>(base + o)));
        const A xv = static_cast<A>(x[base + o]);
        const A v = xv + coef * z * scale[c];
        xa[base + o] = static_cast<T>(clamp_nan(v, lo[c], hi[c]));
      }
    }
  });
}

enum class StepNorm { kLinf, kL2 };

void step_cpu(const char* op, StepNorm norm, const at::Tensor& x_adv, const at::Tensor& grad,
              const at::Tensor& x, const at::Tensor& eps, const at::Tensor& alpha, const at::Tensor& scale,
              const at::Tensor& lo, const at::Tensor& hi, const std::optional<at::Tensor>& active) {
  StepArgs a(op, Backend::kCPU, StepInputs{x_adv, &grad, x, eps, &alpha, scale, lo, hi, active},
             /*logical_order=*/false);
  if (x_adv.numel() == 0) return;
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x_adv.scalar_type(), "attack step", [&] {
    if (norm == StepNorm::kLinf) {
      linf_step_impl<scalar_t>(a);
    } else {
      l2_step_impl<scalar_t>(a);
    }
  });
  a.finish();
}

void linf_step_cpu(const at::Tensor& x_adv, const at::Tensor& grad, const at::Tensor& x,
                   const at::Tensor& eps, const at::Tensor& alpha, const at::Tensor& scale,
                   const at::Tensor& lo, const at::Tensor& hi, const std::optional<at::Tensor>& active) {
  step_cpu("linf_step_", StepNorm::kLinf, x_adv, grad, x, eps, alpha, scale, lo, hi, active);
}

void l2_step_cpu(const at::Tensor& x_adv, const at::Tensor& grad, const at::Tensor& x,
                 const at::Tensor& eps, const at::Tensor& alpha, const at::Tensor& scale,
                 const at::Tensor& lo, const at::Tensor& hi, const std::optional<at::Tensor>& active) {
  step_cpu("l2_step_", StepNorm::kL2, x_adv, grad, x, eps, alpha, scale, lo, hi, active);
}

void random_init_cpu(const at::Tensor& x_adv, const at::Tensor& x, const at::Tensor& eps,
                     const at::Tensor& scale, const at::Tensor& lo, const at::Tensor& hi,
                     const std::optional<at::Tensor>& active, int64_t seed, c10::string_view norm) {
  const bool l2 = random_init_norm_is_l2(norm);
  StepArgs a("random_init_", Backend::kCPU, StepInputs{x_adv, nullptr, x, eps, nullptr, scale, lo, hi, active},
             /*logical_order=*/true);
  if (x_adv.numel() == 0) return;
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x_adv.scalar_type(), "random_init_", [&] {
    random_init_impl<scalar_t>(a, static_cast<uint64_t>(seed), l2);
  });
  a.finish();
}

}  // namespace

TORCH_LIBRARY_IMPL(nonrobust_ext, CPU, m) {
  m.impl("linf_step_", &linf_step_cpu);
  m.impl("l2_step_", &l2_step_cpu);
  m.impl("random_init_", &random_init_cpu);
}

}  // namespace nonrobust_ext::cpu
