// Argument checks shared by the CPU and CUDA kernels of nms and batched_nms, plus the
// limits they state.
#pragma once

#include <ATen/core/Tensor.h>

#include <cmath>

#include "common_checks.h"

namespace ssd_ext {

// CUDA NMS stores an N x N suppression bit mask (N^2 / 8 bytes); 131072 boxes make it 2 GiB.
// Past that the CUDA kernels refuse with a clear error instead of allocating more.
constexpr int64_t kCudaNmsMaxBoxes = 131072;

inline void check_iou_threshold(double iou_threshold) {
  TORCH_CHECK_VALUE(
      iou_threshold >= 0.0 && iou_threshold <= 1.0, "iou_threshold must be in [0, 1], got ",
      iou_threshold);
}

inline void check_nms_args(
    const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold, int64_t max_output) {
  check_box_tensor(boxes, "boxes", 2);
  check_floating(scores, "scores");
  TORCH_CHECK_VALUE(
      scores.dim() == 1 && scores.size(0) == boxes.size(0),
      "scores must have shape [N] with N = boxes.size(0) = ", boxes.size(0), ", got shape ",
      scores.sizes());
  check_same_device(boxes, "boxes", scores, "scores");
  check_iou_threshold(iou_threshold);
  TORCH_CHECK_VALUE(max_output >= -1, "max_output must be >= 0 (or -1 for no limit), got ",
                    max_output);
}

inline void check_batched_nms_args(
    const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
    double iou_threshold, int64_t max_output) {
  check_nms_args(boxes, scores, iou_threshold, max_output);
  TORCH_CHECK_TYPE(idxs.scalar_type() == at::kLong, "idxs must be an int64 tensor, got ",
                   idxs.scalar_type());
  TORCH_CHECK_VALUE(
      idxs.dim() == 1 && idxs.size(0) == boxes.size(0),
      "idxs must have shape [N] with N = boxes.size(0) = ", boxes.size(0), ", got shape ",
      idxs.sizes());
  check_same_device(boxes, "boxes", idxs, "idxs");
}

}  // namespace ssd_ext
