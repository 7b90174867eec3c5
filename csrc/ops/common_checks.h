// Argument checks shared by every op's CPU and CUDA kernels. Messages name the argument and
// the value seen; TORCH_CHECK_VALUE / TORCH_CHECK_TYPE surface in Python as ValueError /
// TypeError, the same exceptions the Python wrappers raise.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace ssd_ext {

// The dtypes every kernel dispatches on (at::isFloatingType also admits float8/float4,
// which no kernel handles).
inline bool is_supported_float(at::ScalarType type) {
  return type == at::kFloat || type == at::kDouble || type == at::kHalf ||
         type == at::kBFloat16;
}

inline void check_floating(const at::Tensor& t, const char* name) {
  TORCH_CHECK_TYPE(
      is_supported_float(t.scalar_type()), name,
      " must be a floating-point tensor (float16, bfloat16, float32 or float64), got ",
      t.scalar_type());
}

// A [..., 4] box tensor of a floating type.
inline void check_box_tensor(const at::Tensor& t, const char* name, int64_t expected_dim) {
  TORCH_CHECK_VALUE(
      t.dim() == expected_dim && t.size(-1) == 4, name, " must have ", expected_dim,
      " dimensions with a last dimension of size 4, got shape ", t.sizes());
  check_floating(t, name);
}

inline void check_same_device(
    const at::Tensor& a, const char* name_a, const at::Tensor& b, const char* name_b) {
  TORCH_CHECK_VALUE(
      a.device() == b.device(), name_a, " and ", name_b,
      " must be on the same device, got ", a.device(), " and ", b.device());
}

inline void check_same_dtype(
    const at::Tensor& a, const char* name_a, const at::Tensor& b, const char* name_b) {
  TORCH_CHECK_TYPE(
      a.scalar_type() == b.scalar_type(), name_a, " and ", name_b,
      " must have the same dtype, got ", a.scalar_type(), " and ", b.scalar_type());
}

}  // namespace ssd_ext
