// Argument checks shared by every op's CPU and CUDA kernels. Messages name the argument and
// the value seen; TORCH_CHECK_VALUE / TORCH_CHECK_TYPE surface in Python as ValueError /
// TypeError, the same exceptions the Python wrappers raise.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/Exception.h>
#include <c10/util/safe_numerics.h>

#include <cstdint>
#include <sstream>
#include <string>

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

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

// a * b, or a ValueError naming `what` when the product of these non-negative counts does
// not fit int64 (a wrapped product would pass later size checks and index out of bounds).
inline int64_t checked_mul(int64_t a, int64_t b, const char* what) {
  uint64_t product = 0;
  TORCH_CHECK_VALUE(
      a >= 0 && b >= 0 && !c10::mul_overflows(static_cast<uint64_t>(a), static_cast<uint64_t>(b),
                                              &product) &&
          product <= static_cast<uint64_t>(INT64_MAX),
      what, ": ", a, " x ", b, " does not fit in int64");
  return static_cast<int64_t>(product);
}

// a + b for non-negative counts, or a ValueError naming `what` on int64 overflow.
inline int64_t checked_add(int64_t a, int64_t b, const char* what) {
  TORCH_CHECK_VALUE(
      a >= 0 && b >= 0 && a <= INT64_MAX - b, what, ": ", a, " + ", b, " does not fit in int64");
  return a + b;
}

// Physical memory of this machine in bytes (0 when unknown): the most a CPU tensor can use.
inline int64_t host_memory_bytes() {
#if defined(_SC_PHYS_PAGES) && defined(_SC_PAGESIZE)
  static const int64_t bytes = [] {
    const long pages = sysconf(_SC_PHYS_PAGES);
    const long page_size = sysconf(_SC_PAGESIZE);
    return pages > 0 && page_size > 0 ? static_cast<int64_t>(pages) * page_size : int64_t{0};
  }();
  return bytes;
#else
  return 0;
#endif
}

inline std::string gibibytes(int64_t bytes) {
  std::ostringstream text;
  text.precision(1);
  text << std::fixed << static_cast<double>(bytes) / (1024.0 * 1024.0 * 1024.0) << " GiB";
  return text.str();
}

// States the size of a tensor an op is about to allocate and refuses it (ValueError) when the
// byte count overflows int64 or, on the CPU, exceeds this machine's physical memory, instead of
// letting the allocator fail (or the OS kill the process). `what` names the tensor in terms of
// the arguments it comes from, e.g. "detect: the boxes output [B, max_detections, 4]". CUDA
// allocations past the device's memory already raise torch.OutOfMemoryError with the size.
inline void check_allocation(
    const char* what, c10::IntArrayRef sizes, at::ScalarType dtype, const at::Device& device) {
  int64_t bytes = static_cast<int64_t>(c10::elementSize(dtype));
  for (const int64_t size : sizes) {
    uint64_t product = 0;
    TORCH_CHECK_VALUE(
        size >= 0 && !c10::mul_overflows(static_cast<uint64_t>(bytes), static_cast<uint64_t>(size),
                                         &product) &&
            product <= static_cast<uint64_t>(INT64_MAX),
        what, " of shape ", sizes, " (", dtype, ") would need more than 2^63 bytes");
    bytes = static_cast<int64_t>(product);
  }
  const int64_t available = device.is_cpu() ? host_memory_bytes() : 0;
  TORCH_CHECK_VALUE(
      available == 0 || bytes <= available, what, " of shape ", sizes, " (", dtype, ") needs ",
      bytes, " bytes (", gibibytes(bytes), "), more than the ", gibibytes(available),
      " of memory of this machine");
}

}  // namespace ssd_ext
