// Typed C++ entry points to the ssd_ext ops for LibTorch users. Each one calls the op
// through the PyTorch dispatcher, so it runs the CPU or CUDA kernel of its inputs' device.
// Link libssd_ext (its TORCH_LIBRARY registrations run when it loads).
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>

namespace ssd_ext {

namespace detail {
template <typename Signature>
c10::TypedOperatorHandle<Signature> find_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}
}  // namespace detail

// [N, 4] x [M, 4] xyxy boxes -> [N, M] IoU.
inline at::Tensor box_iou(const at::Tensor& boxes1, const at::Tensor& boxes2) {
  static const auto op =
      detail::find_op<at::Tensor(const at::Tensor&, const at::Tensor&)>("ssd_ext::box_iou");
  return op.call(boxes1, boxes2);
}

}  // namespace ssd_ext
