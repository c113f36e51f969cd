// The prologues of the feature-statistics ops (class_feature_stats, feature_discrepancy, linear_hsic),
// shared by the CPU (csrc/cpu/feature_stats.cpp) and CUDA (csrc/cuda/feature_stats.cu) kernels.
//
// Order, as for the attack steps (csrc/common/step_args.h): 1. devices, 2. dtypes, 3. shapes and
// scalar arguments; only then the device guard. These ops allocate their outputs, so there is no
// memory-overlap rule; the features are not scanned for NaN (a NaN feature propagates into the
// statistics of its class / row / column, as in the reference twins). The label range is the one
// value check, run by each backend where it reads the labels (see labels_out_of_range).
// The Python-side mirror is nonrobust_ext/_params.py.
#pragma once

#include "checks.h"

#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>

#include <cstdint>

namespace nonrobust_ext::stats {

inline bool is_feature_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kBFloat16 || t == at::kHalf;
}

inline void check_feature_dtype(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK_TYPE(is_feature_dtype(t.scalar_type()), op, ": ", name,
                   " must be float32, float64, bfloat16 or float16, got ", t.scalar_type());
}

inline void check_feature_shape(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK_VALUE(t.dim() == 2, op, ": ", name, " must be a 2-D [N, D] tensor, got shape ", t.sizes());
}

// The one message for a label outside [0, num_classes), whichever backend finds it.
[[noreturn]] inline void labels_out_of_range(int64_t num_classes, int64_t index, int64_t value) {
  TORCH_CHECK_VALUE(false, "class_feature_stats: labels must be in [0, num_classes) = [0, ", num_classes,
                    "), got labels[", index, "] = ", value);
  __builtin_unreachable();
}

// class_feature_stats(features [N, D], labels [N] int64, num_classes >= 1). Holds the device guard.
class ClassStatsArgs {
 public:
  ClassStatsArgs(const at::Tensor& features, const at::Tensor& labels, int64_t num_classes) {
    constexpr const char* op = "class_feature_stats";
    check_same_device(op, "labels", labels, "features", features);
    check_feature_dtype(op, "features", features);
    TORCH_CHECK_TYPE(labels.scalar_type() == at::kLong, op, ": labels must be int64, got ", labels.scalar_type());
    check_feature_shape(op, "features", features);
    TORCH_CHECK_VALUE(labels.dim() == 1, op, ": labels must be a 1-D [N] tensor, got shape ", labels.sizes());
    TORCH_CHECK_VALUE(labels.size(0) == features.size(0), op, ": labels has ", labels.size(0),
                      " entries but features has ", features.size(0), " rows");
    TORCH_CHECK_VALUE(num_classes >= 1, op, ": num_classes must be at least 1, got ", num_classes);
    guard_.reset_device(features.device());
  }
  ClassStatsArgs(const ClassStatsArgs&) = delete;
  ClassStatsArgs& operator=(const ClassStatsArgs&) = delete;

 private:
  c10::OptionalDeviceGuard guard_;
};

// An op of two feature matrices a [N, D1], b [N, D2] of one dtype (feature_discrepancy: the same
// shape; linear_hsic: the same number of rows). Holds the device guard.
class FeaturePairArgs {
 public:
  FeaturePairArgs(const char* op, const char* a_name, const at::Tensor& a, const char* b_name, const at::Tensor& b,
                  bool same_width) {
    check_same_device(op, b_name, b, a_name, a);
    check_feature_dtype(op, a_name, a);
    check_feature_dtype(op, b_name, b);
    TORCH_CHECK_TYPE(a.scalar_type() == b.scalar_type(), op, ": ", b_name, " has dtype ", b.scalar_type(), " but ",
                     a_name, " has dtype ", a.scalar_type());
    check_feature_shape(op, a_name, a);
    check_feature_shape(op, b_name, b);
    if (same_width) {
      TORCH_CHECK_VALUE(a.sizes() == b.sizes(), op, ": ", b_name, " has shape ", b.sizes(), " but ", a_name,
                        " has shape ", a.sizes());
    } else {
      TORCH_CHECK_VALUE(a.size(0) == b.size(0), op, ": ", b_name, " has ", b.size(0), " rows but ", a_name, " has ",
                        a.size(0));
    }
    guard_.reset_device(a.device());
  }
  FeaturePairArgs(const FeaturePairArgs&) = delete;
  FeaturePairArgs& operator=(const FeaturePairArgs&) = delete;

 private:
  c10::OptionalDeviceGuard guard_;
};

// Rows are read as `base + row * stride(0)` with unit column stride; anything else is copied once.
inline at::Tensor with_unit_column_stride(const at::Tensor& t) {
  return (t.size(1) <= 1 || t.stride(1) == 1) ? t : t.contiguous();
}

}  // namespace nonrobust_ext::stats
