// Typed C++ entry points to the ssd_ext ops for LibTorch users. Each one calls the op
// through the PyTorch dispatcher, so it runs the CPU or CUDA kernel of its inputs' device.
// Link libssd_ext (its TORCH_LIBRARY registrations run when it loads).
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/ArrayRef.h>

#include <array>

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

// SSD regression targets of xyxy `boxes` [..., 4] against cxcywh `priors`, whose shape is
// the trailing part of the boxes' (e.g. [P, 4] against [B, P, 4]); same device and dtype.
// Unlike the Python wrapper this neither broadcasts further nor promotes dtypes.
inline at::Tensor encode(const at::Tensor& boxes, const at::Tensor& priors,
                         std::array<double, 2> variances = {0.1, 0.2}) {
  static const auto op =
      detail::find_op<at::Tensor(const at::Tensor&, const at::Tensor&, c10::ArrayRef<double>)>(
          "ssd_ext::encode");
  return op.call(boxes, priors, variances);
}

// xyxy boxes from SSD regression outputs `loc` [..., 4] against cxcywh `priors` (shapes as
// for encode); the scaled size offsets are clamped at log(1000 / 16) before exp.
inline at::Tensor decode(const at::Tensor& loc, const at::Tensor& priors,
                         std::array<double, 2> variances = {0.1, 0.2}) {
  static const auto op =
      detail::find_op<at::Tensor(const at::Tensor&, const at::Tensor&, c10::ArrayRef<double>)>(
          "ssd_ext::decode");
  return op.call(loc, priors, variances);
}

}  // namespace ssd_ext
