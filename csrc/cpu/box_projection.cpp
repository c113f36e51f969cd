// CPU kernel of box_hyperplane_projection: FAB's projection onto a hyperplane within a box, per row.
//
// The smallest step d (L-inf or L2) with w . d = c and -down <= d <= up. With the signs flipped so that
// c >= 0, d_j = sign(w_j) min(s, tau_j) m_j for one scalar s >= 0 (L-inf: m_j = 1, tau_j = room_j; L2:
// m_j = |w_j|, tau_j = room_j / |w_j|), and s solves g(s) = sum_j a_j min(s, tau_j) = |c| with
// a_j = |w_j| m_j: piecewise linear and non-decreasing. The twin (nonrobust_ext/reference.py) sorts the
// breakpoints tau_j; this kernel finds the segment holding |c| by selection instead (quickselect on the
// breakpoints, keeping the sums of the parts it discards): expected O(D) per row instead of a sort.
// Where the box does not reach the hyperplane (g(inf) < |c|) the step is the box corner furthest
// towards it. Sums are carried in double. Rows are independent; any split over threads gives the same
// result.
#include "../common/checks.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

namespace nonrobust_ext::cpu {

namespace {

constexpr const char* kOp = "box_hyperplane_projection";

void check_args(const at::Tensor& w, const at::Tensor& c, const at::Tensor& up, const at::Tensor& down,
                const std::string& norm) {
  check_same_device(kOp, "c", c, "w", w);
  check_same_device(kOp, "up", up, "w", w);
  check_same_device(kOp, "down", down, "w", w);
  const auto dtype = w.scalar_type();
  TORCH_CHECK_TYPE(dtype == at::kFloat || dtype == at::kDouble, kOp, ": w must be float32 or float64, got ", dtype);
  check_same_dtype(kOp, "c", c, "w", w);
  check_same_dtype(kOp, "up", up, "w", w);
  check_same_dtype(kOp, "down", down, "w", w);
  TORCH_CHECK_VALUE(w.dim() == 2, kOp, ": w must be 2-D [N, D], got shape ", w.sizes());
  TORCH_CHECK_VALUE(c.dim() == 1 && c.size(0) == w.size(0), kOp, ": c must have shape [", w.size(0), "], got ", c.sizes());
  check_same_shape(kOp, "up", up, "w", w);
  check_same_shape(kOp, "down", down, "w", w);
  TORCH_CHECK_VALUE(norm == "linf" || norm == "l2", kOp, ": norm must be 'linf' or 'l2', got '", norm, "'");
}

// c ? a : b without a branch, by bit masks: a branch on the sign of w mispredicts half the time, and
// baseline x86-64 (this file's target) has no blend instruction for the compiler to use instead.
inline double pick(bool c, double a, double b) {
  uint64_t ua, ub;
  std::memcpy(&ua, &a, sizeof ua);
  std::memcpy(&ub, &b, sizeof ub);
  const uint64_t mask = uint64_t{0} - static_cast<uint64_t>(c);
  const uint64_t r = (ua & mask) | (ub & ~mask);
  double out;
  std::memcpy(&out, &r, sizeof out);
  return out;
}

// Scratch of one thread: the breakpoints still to place and the two parts of a partition, rotated.
struct Scratch {
  std::vector<double> tau[3], a[3];
  explicit Scratch(int64_t d) {
    for (int k = 0; k < 3; ++k) {
      tau[k].resize(d);
      a[k].resize(d);
    }
  }
};

// Sum of a[0..n) and of a[j] t[j] over j < n, with four lanes (independent additions).
inline void sums(const double* t, const double* a, int64_t n, double& sum_a, double& sum_at) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0, q0 = 0, q1 = 0, q2 = 0, q3 = 0;
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) {
    s0 += a[j]; s1 += a[j + 1]; s2 += a[j + 2]; s3 += a[j + 3];
    q0 += a[j] * t[j]; q1 += a[j + 1] * t[j + 1]; q2 += a[j + 2] * t[j + 2]; q3 += a[j + 3] * t[j + 3];
  }
  for (; j < n; ++j) { s0 += a[j]; q0 += a[j] * t[j]; }
  sum_a = (s0 + s1) + (s2 + s3);
  sum_at = (q0 + q1) + (q2 + q3);
}

// s with g(s) = goal over the n breakpoints in slot `cur` of `sc` (all weights a > 0), or inf where
// g(inf) < goal. Each pass splits the breakpoints left at a pivot into those below and those above it
// (branch-free: both parts are written, each count advances by its comparison; the ones equal to the
// pivot are placed at once), sums the part below, and keeps the part that holds s.
double solve(Scratch& sc, int cur, int64_t n, double goal) {
  double below = 0.0;  // sum of a_j tau_j over breakpoints known to lie below s
  double slope = 0.0;  // sum of a_j over breakpoints known to lie at or above s
  double total_a = 0.0;  // sum of a_j over the breakpoints left
  { const double* a = sc.a[cur].data(); for (int64_t j = 0; j < n; ++j) total_a += a[j]; }
  while (n > 0) {
    const double* t = sc.tau[cur].data();
    const double* w = sc.a[cur].data();
    // Median of three as the pivot: no randomness, and sorted input is not the worst case.
    const double p0 = t[0], p1 = t[n / 2], p2 = t[n - 1];
    const double pivot = std::max(std::min(p0, p1), std::min(std::max(p0, p1), p2));
    const int lo_slot = (cur + 1) % 3, hi_slot = (cur + 2) % 3;
    double* lt = sc.tau[lo_slot].data(); double* la = sc.a[lo_slot].data();
    double* ht = sc.tau[hi_slot].data(); double* ha = sc.a[hi_slot].data();
    int64_t n_lo = 0, n_hi = 0;
    for (int64_t j = 0; j < n; ++j) {
      const double tj = t[j], aj = w[j];
      lt[n_lo] = tj; la[n_lo] = aj; n_lo += tj < pivot;
      ht[n_hi] = tj; ha[n_hi] = aj; n_hi += tj > pivot;
    }
    double a_less, at_less;
    sums(lt, la, n_lo, a_less, at_less);
    const double g_pivot = below + at_less + pivot * (slope + (total_a - a_less));
    if (g_pivot < goal) {  // s > pivot: every breakpoint <= pivot lies below s
      double a_hi, at_hi;
      sums(ht, ha, n_hi, a_hi, at_hi);
      below += at_less + pivot * std::max(0.0, total_a - a_less - a_hi);
      total_a = a_hi; cur = hi_slot; n = n_hi;
    } else {  // s <= pivot: every breakpoint >= pivot lies at or above s
      slope += total_a - a_less;
      total_a = a_less; cur = lo_slot; n = n_lo;
    }
  }
  if (slope > 0.0) return std::max(0.0, (goal - below) / slope);
  return below >= goal ? 0.0 : std::numeric_limits<double>::infinity();
}

template <typename T, bool l2>
void project_rows(const at::Tensor& w, const at::Tensor& c, const at::Tensor& up, const at::Tensor& down,
                  const at::Tensor& out) {
  const int64_t N = w.size(0), D = w.size(1);
  const T* W = w.data_ptr<T>();
  const T* C = c.data_ptr<T>();
  const T* U = up.data_ptr<T>();
  const T* Dn = down.data_ptr<T>();
  T* O = out.data_ptr<T>();
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 14) / std::max<int64_t>(1, D));
  at::parallel_for(0, N, grain, [&](int64_t begin, int64_t end) {
    Scratch sc(D);
    for (int64_t i = begin; i < end; ++i) {
      const T* wi = W + i * D;
      const T* ui = U + i * D;
      const T* di = Dn + i * D;
      T* oi = O + i * D;
      const double flip = C[i] < T(0) ? -1.0 : 1.0;
      const double goal = std::abs(static_cast<double>(C[i]));
      double* tau = sc.tau[0].data();
      double* a = sc.a[0].data();
      int64_t n = 0;
      for (int64_t j = 0; j < D; ++j) {
        const double v = static_cast<double>(wi[j]) * flip;
        const double room_up = ui[j], room_down = di[j];
        const double room = pick(v > 0.0, room_up, room_down);
        const double mag = std::abs(v);
        const double weight = l2 ? mag * mag : mag;
        tau[n] = l2 ? room / mag : room;
        a[n] = weight;
        n += weight > 0.0;  // w_j = 0 (or an underflowing |w_j|^2) adds nothing to w . d
      }
      const double s = solve(sc, 0, n, goal);
      for (int64_t j = 0; j < D; ++j) {
        const double v = static_cast<double>(wi[j]) * flip;
        const double room_up = ui[j], room_down = di[j];
        const double room = pick(v > 0.0, room_up, room_down);
        const double mag = std::abs(v);
        // L2: s |w_j| capped by the room itself (room / |w_j| * |w_j| may round above it; the corner,
        // s = inf, is the room).
        const double along = l2 ? std::min(std::min(s, room / mag) * mag, room) : std::min(s, room);
        oi[j] = static_cast<T>(pick(v == 0.0, 0.0, std::copysign(along, v)));
      }
    }
  });
}

at::Tensor box_hyperplane_projection_cpu(const at::Tensor& w, const at::Tensor& c, const at::Tensor& up,
                                         const at::Tensor& down, c10::string_view norm) {
  const std::string which(norm);
  check_args(w, c, up, down, which);
  const at::Tensor wc = w.contiguous(), cc = c.contiguous(), uc = up.contiguous(), dc = down.contiguous();
  at::Tensor out = at::empty(wc.sizes(), wc.options());
  AT_DISPATCH_FLOATING_TYPES(wc.scalar_type(), kOp, [&] {
    if (which == "l2") {
      project_rows<scalar_t, true>(wc, cc, uc, dc, out);
    } else {
      project_rows<scalar_t, false>(wc, cc, uc, dc, out);
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(nonrobust_ext, CPU, m) {
  m.impl("box_hyperplane_projection", &box_hyperplane_projection_cpu);
}

}  // namespace nonrobust_ext::cpu
