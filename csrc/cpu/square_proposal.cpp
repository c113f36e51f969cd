// CPU kernel of square_linf_proposal: one step's candidates of the L-inf Square attack, in one pass.
//
// Square proposes, per sample, to set one random square window of the image to a face of the eps-box
// (per channel: x - eps or x + eps, clipped to the bounds) and keeps the rest of the current iterate.
// A draw of faces that changes nothing (the window already holds them, or the bounds cut every change)
// would waste a query, so each row comes with several draws and takes the first that changes something.
// Written with torch ops that is some twenty small ops per draw (window masks, two selections, the
// "did anything change" test), which on the CPU costs more than the arithmetic: this kernel copies each
// row once and overwrites its window. The pure-PyTorch twin is nonrobust_ext/reference.py's
// square_linf_proposal; the shared argument checks are _params.check_square_proposal_args (Python) and
// check_args below (the same messages).
#include "../common/checks.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <tuple>

namespace nonrobust_ext::cpu {

namespace {

constexpr const char* kOp = "square_linf_proposal";

void check_index(const char* name, const at::Tensor& t, int64_t n) {
  TORCH_CHECK_TYPE(t.scalar_type() == at::kLong, kOp, ": ", name, " must be int64, got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.dim() == 1 && t.size(0) == n, kOp, ": ", name, " must have shape [", n, "] (one per row of rows), got ",
                    t.sizes());
}

void check_range(const char* name, const at::Tensor& t, int64_t high) {
  const int64_t* v = t.data_ptr<int64_t>();
  for (int64_t i = 0; i < t.numel(); ++i) {
    TORCH_CHECK_VALUE(v[i] >= 0 && v[i] <= high, kOp, ": ", name, " must be in [0, ", high, "], got ", v[i]);
  }
}

void check_args(const at::Tensor& current, const at::Tensor& low, const at::Tensor& high, const at::Tensor& rows,
                const at::Tensor& top, const at::Tensor& left, int64_t side, const at::Tensor& up) {
  check_same_device(kOp, "low", low, "current", current);
  check_same_device(kOp, "high", high, "current", current);
  check_same_device(kOp, "rows", rows, "current", current);
  check_same_device(kOp, "top", top, "current", current);
  check_same_device(kOp, "left", left, "current", current);
  check_same_device(kOp, "up", up, "current", current);
  const auto dtype = current.scalar_type();
  TORCH_CHECK_TYPE(dtype == at::kFloat || dtype == at::kDouble, kOp, ": current must be float32 or float64, got ", dtype);
  check_same_dtype(kOp, "low", low, "current", current);
  check_same_dtype(kOp, "high", high, "current", current);
  TORCH_CHECK_VALUE(current.dim() == 4, kOp, ": current must be a batch of images [N, C, H, W], got shape ",
                    current.sizes());
  check_same_shape(kOp, "low", low, "current", current);
  check_same_shape(kOp, "high", high, "current", current);
  TORCH_CHECK_TYPE(rows.scalar_type() == at::kLong, kOp, ": rows must be int64, got ", rows.scalar_type());
  TORCH_CHECK_VALUE(rows.dim() == 1, kOp, ": rows must be 1-D, got shape ", rows.sizes());
  const int64_t n = rows.size(0);
  check_index("top", top, n);
  check_index("left", left, n);
  TORCH_CHECK_TYPE(up.scalar_type() == at::kBool, kOp, ": up must be bool, got ", up.scalar_type());
  TORCH_CHECK_VALUE(up.dim() == 3 && up.size(0) == n && up.size(1) >= 1 && up.size(2) == current.size(1), kOp,
                    ": up must have shape [", n, ", draws >= 1, ", current.size(1), "] (rows x draws x channels), got ",
                    up.sizes());
  const int64_t H = current.size(2), W = current.size(3);
  TORCH_CHECK_VALUE(side >= 1 && side <= std::min(H, W), kOp, ": side must be in [1, ", std::min(H, W), "], got ", side);
  if (current.device().is_cpu()) {
    check_range("rows", rows, current.size(0) - 1);
    check_range("top", top, H - side);
    check_range("left", left, W - side);
  }
}

template <typename T>
void propose(const at::Tensor& current, const at::Tensor& low, const at::Tensor& high, const at::Tensor& rows,
             const at::Tensor& top, const at::Tensor& left, int64_t side, const at::Tensor& up, const at::Tensor& out,
             const at::Tensor& changed) {
  const int64_t n = rows.size(0), C = current.size(1), H = current.size(2), W = current.size(3);
  const int64_t R = up.size(1);
  const int64_t plane = H * W, sample = C * plane;
  const T* cur = current.data_ptr<T>();
  const T* lo = low.data_ptr<T>();
  const T* hi = high.data_ptr<T>();
  const int64_t* row = rows.data_ptr<int64_t>();
  const int64_t* t = top.data_ptr<int64_t>();
  const int64_t* l = left.data_ptr<int64_t>();
  const bool* u = up.data_ptr<bool>();
  T* dst = out.data_ptr<T>();
  bool* moved = changed.data_ptr<bool>();
  // Rows are independent: any split gives the same result.
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 15) / std::max<int64_t>(1, sample));
  at::parallel_for(0, n, grain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t base = row[i] * sample;
      T* o = dst + i * sample;
      std::memcpy(o, cur + base, sizeof(T) * sample);
      // The first draw whose faces differ from the current point somewhere in the window.
      int64_t chosen = -1;
      for (int64_t r = 0; r < R && chosen < 0; ++r) {
        bool any = false;
        for (int64_t c = 0; c < C && !any; ++c) {
          const T* face = (u[(i * R + r) * C + c] ? hi : lo) + base + c * plane;
          const T* was = cur + base + c * plane;
          for (int64_t h = t[i]; h < t[i] + side && !any; ++h) {
            for (int64_t w = l[i]; w < l[i] + side; ++w) {
              any |= face[h * W + w] != was[h * W + w];  // NaN counts as a change, as in the twin
            }
          }
        }
        if (any) chosen = r;
      }
      if (chosen >= 0) {
        for (int64_t c = 0; c < C; ++c) {
          const T* face = (u[(i * R + chosen) * C + c] ? hi : lo) + base + c * plane;
          T* to = o + c * plane;
          for (int64_t h = t[i]; h < t[i] + side; ++h) {
            std::memcpy(to + h * W + l[i], face + h * W + l[i], sizeof(T) * side);
          }
        }
      }
      const bool any = chosen >= 0;
      moved[i] = any;
    }
  });
}

std::tuple<at::Tensor, at::Tensor> square_linf_proposal_cpu(const at::Tensor& current, const at::Tensor& low,
                                                            const at::Tensor& high, const at::Tensor& rows,
                                                            const at::Tensor& top, const at::Tensor& left, int64_t side,
                                                            const at::Tensor& up) {
  check_args(current, low, high, rows, top, left, side, up);
  const at::Tensor cur = current.contiguous(), lo = low.contiguous(), hi = high.contiguous();
  const at::Tensor row = rows.contiguous(), t = top.contiguous(), l = left.contiguous(), u = up.contiguous();
  at::Tensor out = at::empty({row.size(0), cur.size(1), cur.size(2), cur.size(3)}, cur.options());
  at::Tensor changed = at::empty({row.size(0)}, cur.options().dtype(at::kBool));
  AT_DISPATCH_FLOATING_TYPES(cur.scalar_type(), kOp, [&] { propose<scalar_t>(cur, lo, hi, row, t, l, side, u, out, changed); });
  return {out, changed};
}

}  // namespace

TORCH_LIBRARY_IMPL(nonrobust_ext, CPU, m) {
  m.impl("square_linf_proposal", &square_linf_proposal_cpu);
}

}  // namespace nonrobust_ext::cpu
