// Argument checks shared by the CPU and CUDA kernels of the NMS family (nms, batched_nms,
// detect), plus the limits they state.
#pragma once

#include <ATen/core/Tensor.h>

#include <cmath>

#include "checks.h"

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

inline void check_detect_args(
    const at::Tensor& loc, const at::Tensor& conf_logits, const at::Tensor& priors,
    double score_threshold, double iou_threshold, int64_t candidates_per_class,
    int64_t max_detections, double variance_center, double variance_size) {
  check_box_tensor(loc, "loc", 3);
  check_floating(conf_logits, "conf_logits");
  TORCH_CHECK_VALUE(
      conf_logits.dim() == 3 && conf_logits.size(0) == loc.size(0) &&
          conf_logits.size(1) == loc.size(1),
      "conf_logits must have shape [B, P, C] with B, P = ", loc.size(0), ", ", loc.size(1),
      " (from loc), got shape ", conf_logits.sizes());
  TORCH_CHECK_VALUE(conf_logits.size(2) >= 2,
                    "conf_logits must have at least 2 classes (background + 1), got ",
                    conf_logits.size(2));
  check_box_tensor(priors, "priors", 2);
  TORCH_CHECK_VALUE(priors.size(0) == loc.size(1), "priors must have P = ", loc.size(1),
                    " rows (from loc), got shape ", priors.sizes());
  check_same_device(loc, "loc", conf_logits, "conf_logits");
  check_same_device(loc, "loc", priors, "priors");
  check_same_dtype(loc, "loc", conf_logits, "conf_logits");
  check_same_dtype(loc, "loc", priors, "priors");
  TORCH_CHECK_VALUE(score_threshold >= 0.0 && score_threshold <= 1.0,
                    "score_threshold must be in [0, 1], got ", score_threshold);
  check_iou_threshold(iou_threshold);
  TORCH_CHECK_VALUE(candidates_per_class >= 0, "candidates_per_class must be >= 0, got ",
                    candidates_per_class);
  TORCH_CHECK_VALUE(max_detections >= 0, "max_detections must be >= 0, got ", max_detections);
  TORCH_CHECK_VALUE(variance_center > 0 && std::isfinite(variance_center) && variance_size > 0 &&
                        std::isfinite(variance_size),
                    "variances must be positive and finite, got (", variance_center, ", ",
                    variance_size, ")");
}

}  // namespace ssd_ext
