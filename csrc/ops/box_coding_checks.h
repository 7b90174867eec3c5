// Checks shared by the CPU and CUDA kernels of encode and decode.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/Exception.h>

#include <cmath>

#include "common_checks.h"

namespace ssd_ext {

// `boxes` (or `loc`) is [..., 4]; `priors` has the shape of a trailing part of it (commonly
// [P, 4] against [B, P, 4]), so that row n of the flattened boxes pairs with row n % P of the
// flattened priors. Wider broadcasting is left to the Python wrappers.
inline void check_box_coding_args(
    const at::Tensor& boxes, const char* boxes_name, const at::Tensor& priors,
    c10::ArrayRef<double> variances) {
  TORCH_CHECK_VALUE(
      boxes.dim() >= 1 && boxes.size(-1) == 4, boxes_name,
      " must have a last dimension of size 4, got shape ", boxes.sizes());
  TORCH_CHECK_VALUE(
      priors.dim() >= 1 && priors.size(-1) == 4,
      "priors must have a last dimension of size 4, got shape ", priors.sizes());
  check_floating(boxes, boxes_name);
  check_floating(priors, "priors");
  check_same_device(boxes, boxes_name, priors, "priors");
  check_same_dtype(boxes, boxes_name, priors, "priors");
  TORCH_CHECK_VALUE(
      priors.dim() <= boxes.dim() &&
          priors.sizes() == boxes.sizes().slice(boxes.dim() - priors.dim()),
      "priors must have the shape of the trailing dimensions of ", boxes_name, " (e.g. [P, 4] for ",
      boxes_name, " [B, P, 4]), got ", priors.sizes(), " and ", boxes.sizes());
  TORCH_CHECK_VALUE(
      variances.size() == 2 && variances[0] > 0 && std::isfinite(variances[0]) &&
          variances[1] > 0 && std::isfinite(variances[1]),
      "variances must be two positive finite values (centre, size), got ", variances);
}

}  // namespace ssd_ext
