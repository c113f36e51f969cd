// CPU kernels of the feature-statistics ops: class_feature_stats, feature_discrepancy, linear_hsic.
//
// Threading, work partitioning and merging live here; the vectorised inner loops live in
// stats_loops_impl.h, compiled per ISA (isa_table.h). The argument checks are the shared prologues
// (csrc/common/stats_args.h). Semantics (and the pure-PyTorch twin of each op) are in
// nonrobust_ext/reference.py; the autograd formulas are in nonrobust_ext/_meta.py.
//
// Results do not depend on the number of threads: work is cut into units that depend only on the
// shapes, every unit's partial result is computed the same way whoever runs it, and partial results
// are merged in a fixed order.
#include "../common/feature_stats.h"
#include "../common/stats_args.h"
#include "isa_table.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <string>
#include <tuple>
#include <vector>

namespace nonrobust_ext::cpu {

namespace {

// The storage type the ISA loops see: half types as tagged raw bits (see stats_loops.h).
template <typename T>
struct Storage {
  using type = T;
};
template <>
struct Storage<c10::BFloat16> {
  using type = Bf16Bits;
};
template <>
struct Storage<c10::Half> {
  using type = F16Bits;
};

template <typename T>
const typename Storage<T>::type* raw(const at::Tensor& t) {
  return reinterpret_cast<const typename Storage<T>::type*>(t.data_ptr<T>());
}

// ------------------------------------------------------------------------------ class_feature_stats

// Row indices sorted by class (stable), and where each class starts. Sorting lets every class be
// summed with its accumulators in registers, whatever the number of classes: with 1000 classes,
// per-class accumulators updated in label order would miss the cache on every row.
struct ClassOrder {
  at::Tensor order;               // [N] int64
  std::vector<int64_t> offsets;   // [K + 1]
};

ClassOrder sort_by_class(const at::Tensor& labels, int64_t K) {
  const int64_t N = labels.numel();
  const int64_t* y = labels.data_ptr<int64_t>();
  std::vector<int64_t> offsets(static_cast<size_t>(K) + 1, 0);
  for (int64_t i = 0; i < N; ++i) {
    const int64_t c = y[i];
    if (c < 0 || c >= K) stats::labels_out_of_range(K, i, c);
    ++offsets[c + 1];
  }
  for (int64_t c = 0; c < K; ++c) offsets[c + 1] += offsets[c];
  auto order = at::empty({N}, labels.options());
  int64_t* o = order.data_ptr<int64_t>();
  std::vector<int64_t> next(offsets.begin(), offsets.end() - 1);
  for (int64_t i = 0; i < N; ++i) o[next[y[i]]++] = i;
  return {order, std::move(offsets)};
}

// A stretch of one class's sorted rows. Classes longer than kUnitBytes of features are cut into
// several units (so one big class still spreads over the threads); those units' float64 results go
// to a partial slot and are merged afterwards, the others are written out directly. Units are large
// because each one starts with a two-pass block (see class_rows).
struct Unit {
  int64_t cls;
  int64_t begin;
  int64_t end;
  int64_t slot;  // -1: the whole class
};

constexpr int64_t kUnitBytes = int64_t{1} << 21;

int64_t unit_rows(int64_t D, int64_t itemsize) {
  const int64_t rows = kUnitBytes / std::max<int64_t>(1, D * itemsize);
  return std::max<int64_t>(1, rows / kStatsBlockRows) * kStatsBlockRows;
}

std::vector<Unit> make_units(const std::vector<int64_t>& offsets, int64_t rows_per_unit, int64_t& slots) {
  std::vector<Unit> units;
  slots = 0;
  const int64_t K = static_cast<int64_t>(offsets.size()) - 1;
  for (int64_t c = 0; c < K; ++c) {
    const int64_t n = offsets[c + 1] - offsets[c];
    if (n == 0) continue;
    if (n <= rows_per_unit) {
      units.push_back({c, offsets[c], offsets[c + 1], -1});
      continue;
    }
    for (int64_t b = offsets[c]; b < offsets[c + 1]; b += rows_per_unit) {
      units.push_back({c, b, std::min(b + rows_per_unit, offsets[c + 1]), slots++});
    }
  }
  return units;
}

// Runs worker(i) for i in [0, n) on the torch threads, each thread taking the next i when it is done
// with one (an atomic counter) instead of a fixed share: on a shared machine a descheduled thread then
// holds the op up by one task, not by half of the work. make_worker() runs once per thread and returns
// the worker, which owns that thread's scratch. Which thread runs a task does not change its result.
template <typename MakeWorker>
void dynamic_for(int64_t n, MakeWorker&& make_worker) {
  std::atomic<int64_t> next{0};
  const int64_t threads = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), n));
  at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
    auto work = make_worker();
    for (int64_t i = next.fetch_add(1); i < n; i = next.fetch_add(1)) work(i);
  });
}

template <typename T>
void class_stats_kernel(const at::Tensor& features, const ClassOrder& ord, const at::Tensor& mean_out,
                        const at::Tensor& m2_out, double* mean64) {
  using S = typename Storage<T>::type;
  using A = typename StatsAcc<S>::type;
  const auto class_rows = cpu_isa().stats.get<S>().class_rows;
  const int64_t D = features.size(1);
  const int64_t row_stride = features.stride(0);
  const S* base = raw<T>(features);
  const int64_t* order = ord.order.data_ptr<int64_t>();
  A* mean_o = mean_out.data_ptr<A>();
  A* m2_o = m2_out.data_ptr<A>();

  const int64_t rows_per_unit = unit_rows(D, features.element_size());
  int64_t slots = 0;
  const auto units = make_units(ord.offsets, rows_per_unit, slots);
  std::vector<double> partial(static_cast<size_t>(slots) * 2 * D);

  auto write_class = [&](int64_t c, const double* mean, const double* m2) {
    for (int64_t d = 0; d < D; ++d) {
      mean_o[c * D + d] = static_cast<A>(mean[d]);
      m2_o[c * D + d] = static_cast<A>(m2[d]);
    }
    if (mean64) std::copy(mean, mean + D, mean64 + c * D);
  };

  // Tasks: runs of consecutive units of at least rows_per_unit rows together (one unit of a big class,
  // or many small classes), so that each unit can prefetch the start of the next one in its task.
  std::vector<int64_t> task_first{0};
  {
    int64_t rows_in_task = 0;
    for (size_t u = 0; u < units.size(); ++u) {
      rows_in_task += units[u].end - units[u].begin;
      if (rows_in_task >= rows_per_unit && u + 1 < units.size()) {
        task_first.push_back(static_cast<int64_t>(u) + 1);
        rows_in_task = 0;
      }
    }
    task_first.push_back(static_cast<int64_t>(units.size()));
  }
  const int64_t tasks = units.empty() ? 0 : static_cast<int64_t>(task_first.size()) - 1;
  dynamic_for(tasks, [&] {
    return [&, rows = std::vector<const S*>(), mean = std::vector<double>(static_cast<size_t>(D)),
            m2 = std::vector<double>(static_cast<size_t>(D))](int64_t task) mutable {
      const int64_t first = task_first[task];
      const int64_t last = task_first[task + 1];
      const int64_t lo = units[first].begin;
      const int64_t hi = units[last - 1].end;
      rows.resize(static_cast<size_t>(hi - lo));
      for (int64_t i = lo; i < hi; ++i) rows[i - lo] = base + order[i] * row_stride;
      for (int64_t u = first; u < last; ++u) {
        const Unit& unit = units[u];
        double* pm = unit.slot < 0 ? mean.data() : partial.data() + unit.slot * 2 * D;
        double* pm2 = unit.slot < 0 ? m2.data() : pm + D;
        class_rows(rows.data() + (unit.begin - lo), unit.end - unit.begin, hi - unit.end, D, pm, pm2);
        if (unit.slot < 0) write_class(unit.cls, pm, pm2);
      }
    };
  });

  if (slots == 0) return;
  // Classes cut into several units: merge their partial results in unit order (Chan et al.).
  std::vector<int64_t> split;  // index of each split class's first unit
  for (size_t u = 0; u < units.size(); ++u) {
    if (units[u].slot >= 0 && (u == 0 || units[u - 1].cls != units[u].cls)) split.push_back(static_cast<int64_t>(u));
  }
  at::parallel_for(0, static_cast<int64_t>(split.size()), 1, [&](int64_t b, int64_t e) {
    std::vector<double> mean(static_cast<size_t>(D)), m2(static_cast<size_t>(D));
    for (int64_t i = b; i < e; ++i) {
      int64_t u = split[i];
      const int64_t c = units[u].cls;
      const double* first = partial.data() + units[u].slot * 2 * D;
      std::copy(first, first + D, mean.begin());
      std::copy(first + D, first + 2 * D, m2.begin());
      double n = static_cast<double>(units[u].end - units[u].begin);
      for (++u; u < static_cast<int64_t>(units.size()) && units[u].cls == c; ++u) {
        const double nb = static_cast<double>(units[u].end - units[u].begin);
        const double total = n + nb;
        const double w_mean = nb / total;
        const double w_m2 = n * nb / total;
        const double* pm = partial.data() + units[u].slot * 2 * D;
        const double* pm2 = pm + D;
        for (int64_t d = 0; d < D; ++d) {
          const double delta = pm[d] - mean[d];
          mean[d] += delta * w_mean;
          m2[d] += pm2[d] + delta * delta * w_m2;
        }
        n = total;
      }
      write_class(c, mean.data(), m2.data());
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> class_feature_stats_cpu(const at::Tensor& features,
                                                                       const at::Tensor& labels,
                                                                       int64_t num_classes, bool covariance) {
  const stats::ClassStatsArgs args(features, labels, num_classes);
  const int64_t K = num_classes;
  const int64_t D = features.size(1);
  const auto acc = at::toOpMathType(features.scalar_type());
  const auto opts = features.options().dtype(acc);
  const auto ord = sort_by_class(labels.contiguous(), K);

  // float64 counts (exact below 2^53): they enter the merge formulas as weights, and a floating
  // output sums with the others in autograd tooling.
  auto count = at::empty({K}, features.options().dtype(at::kDouble));
  double* cnt = count.data_ptr<double>();
  for (int64_t c = 0; c < K; ++c) cnt[c] = static_cast<double>(ord.offsets[c + 1] - ord.offsets[c]);

  auto mean = at::zeros({K, D}, opts);
  auto m2 = at::zeros({K, D}, opts);
  at::Tensor mean64;
  if (covariance) mean64 = at::zeros({K, D}, opts.dtype(at::kDouble));
  if (features.numel() > 0) {
    const auto feats = stats::with_unit_column_stride(features);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, features.scalar_type(), "class_feature_stats", [&] {
      class_stats_kernel<scalar_t>(feats, ord, mean, m2, covariance ? mean64.data_ptr<double>() : nullptr);
    });
  }
  if (covariance) m2 = stats::class_scatter_matrices(features, ord.order, ord.offsets, mean64, acc);
  return {count, mean, m2};
}

// ------------------------------------------------------------------------------ feature_discrepancy

// Rows per chunk: about 1 MiB of both inputs, a multiple of the loops' 64-row flush. Chunks are the
// unit of parallel work and of the column partial sums (merged in chunk order).
int64_t chunk_rows(int64_t D, int64_t itemsize) {
  const int64_t rows = (int64_t{1} << 20) / std::max<int64_t>(1, 2 * D * itemsize);
  return std::max<int64_t>(1, rows / 64) * 64;
}

template <typename T>
void discrepancy_kernel(const at::Tensor& clean, const at::Tensor& adv, const at::Tensor& sq_out,
                        const at::Tensor& mac_out) {
  using S = typename Storage<T>::type;
  using A = typename StatsAcc<S>::type;
  const auto rows_fn = cpu_isa().stats.get<S>().discrepancy_rows;
  const int64_t N = clean.size(0);
  const int64_t D = clean.size(1);
  const S* c = raw<T>(clean);
  const S* a = raw<T>(adv);
  const int64_t cs = clean.stride(0);
  const int64_t as = adv.stride(0);
  A* sq = sq_out.data_ptr<A>();
  const int64_t per_chunk = chunk_rows(D, clean.element_size());
  const int64_t chunks = (N + per_chunk - 1) / per_chunk;
  std::vector<double> col(static_cast<size_t>(chunks) * D, 0.0);

  dynamic_for(chunks, [&] {
    return [&, scratch = std::vector<A>(static_cast<size_t>(D)),
            sq64 = std::vector<double>(static_cast<size_t>(per_chunk))](int64_t ch) mutable {
      const int64_t r0 = ch * per_chunk;
      const int64_t n = std::min(per_chunk, N - r0);
      rows_fn(c + r0 * cs, cs, a + r0 * as, as, n, D, sq64.data(), col.data() + ch * D, scratch.data());
      for (int64_t i = 0; i < n; ++i) sq[r0 + i] = static_cast<A>(sq64[i]);
    };
  });

  // mean_abs_change: the chunks' column sums in chunk order, one block of columns per task.
  A* mac = mac_out.data_ptr<A>();
  constexpr int64_t kCols = 256;
  at::parallel_for(0, (D + kCols - 1) / kCols, 1, [&](int64_t b, int64_t e) {
    double total[kCols];
    for (int64_t blk = b; blk < e; ++blk) {
      const int64_t d0 = blk * kCols;
      const int64_t w = std::min(kCols, D - d0);
      std::fill(total, total + w, 0.0);
      for (int64_t ch = 0; ch < chunks; ++ch) {
        const double* p = col.data() + ch * D + d0;
        for (int64_t j = 0; j < w; ++j) total[j] += p[j];
      }
      for (int64_t j = 0; j < w; ++j) mac[d0 + j] = static_cast<A>(total[j] / static_cast<double>(N));
    }
  });
}

std::tuple<at::Tensor, at::Tensor> feature_discrepancy_cpu(const at::Tensor& clean, const at::Tensor& adv) {
  const stats::FeaturePairArgs args("feature_discrepancy", "clean", clean, "adv", adv, /*same_width=*/true);
  const auto opts = clean.options().dtype(at::toOpMathType(clean.scalar_type()));
  const int64_t N = clean.size(0);
  const int64_t D = clean.size(1);
  // An empty batch changes nothing: mean_abs_change is 0 (like an empty class's mean), not 0/0.
  if (N == 0 || D == 0) return {at::zeros({N}, opts), at::zeros({D}, opts)};
  auto sq = at::empty({N}, opts);
  auto mac = at::empty({D}, opts);
  const auto c = stats::with_unit_column_stride(clean);
  const auto a = stats::with_unit_column_stride(adv);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, clean.scalar_type(), "feature_discrepancy",
                                  [&] { discrepancy_kernel<scalar_t>(c, a, sq, mac); });
  return {sq, mac};
}

// ------------------------------------------------------------------------------------- linear_hsic

at::Tensor linear_hsic_cpu(const at::Tensor& x, const at::Tensor& y) {
  const stats::FeaturePairArgs args("linear_hsic", "x", x, "y", y, /*same_width=*/false);
  return stats::linear_hsic_impl(x, y);
}

}  // namespace

TORCH_LIBRARY_IMPL(nonrobust_ext, CPU, m) {
  m.impl("class_feature_stats", &class_feature_stats_cpu);
  m.impl("feature_discrepancy", &feature_discrepancy_cpu);
  m.impl("linear_hsic", &linear_hsic_cpu);
}

}  // namespace nonrobust_ext::cpu
