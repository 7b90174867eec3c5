// Argument checks shared by the CPU and CUDA kernels of detect.
#pragma once

#include <ATen/core/Tensor.h>

#include <cmath>

#include "common_checks.h"
#include "nms_checks.h"  // check_iou_threshold: detect runs the same NMS per class

namespace ssd_ext {

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
  check_allocation("detect: the boxes output [B, max_detections, 4]",
                   {loc.size(0), max_detections, 4}, loc.scalar_type(), loc.device());
  check_allocation("detect: the labels output [B, max_detections]", {loc.size(0), max_detections},
                   at::kLong, loc.device());
  TORCH_CHECK_VALUE(variance_center > 0 && std::isfinite(variance_center) && variance_size > 0 &&
                        std::isfinite(variance_size),
                    "variances must be positive and finite, got (", variance_center, ", ",
                    variance_size, ")");
}

}  // namespace ssd_ext
