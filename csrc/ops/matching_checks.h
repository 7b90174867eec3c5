#pragma once

#include <ATen/core/Tensor.h>

#include <cmath>
#include <cstdint>
#include <limits>

#include "common_checks.h"

namespace ssd_ext {

// Checks shared by the CPU and CUDA kernels of match. Ground truth arrives packed in CSR
// form: gt_boxes [N, 4] xyxy and gt_labels [N] int64 of all images concatenated, and
// gt_offsets [B + 1] int64 with image b owning rows gt_offsets[b] .. gt_offsets[b + 1].
inline void check_match_args(
    const at::Tensor& gt_boxes, const at::Tensor& gt_labels, const at::Tensor& gt_offsets,
    const at::Tensor& priors, double iou_threshold, double variance_center, double variance_size) {
  check_box_tensor(gt_boxes, "gt_boxes", 2);
  check_box_tensor(priors, "priors", 2);
  check_same_dtype(gt_boxes, "gt_boxes", priors, "priors");
  TORCH_CHECK_TYPE(
      gt_labels.scalar_type() == at::kLong, "gt_labels must be an int64 tensor, got ",
      gt_labels.scalar_type());
  TORCH_CHECK_VALUE(
      gt_labels.dim() == 1 && gt_labels.size(0) == gt_boxes.size(0),
      "gt_labels must have shape [N] with N = gt_boxes.size(0) = ", gt_boxes.size(0),
      ", got shape ", gt_labels.sizes());
  TORCH_CHECK_TYPE(
      gt_offsets.scalar_type() == at::kLong, "gt_offsets must be an int64 tensor, got ",
      gt_offsets.scalar_type());
  TORCH_CHECK_VALUE(
      gt_offsets.dim() == 1 && gt_offsets.size(0) >= 1,
      "gt_offsets must have shape [B + 1] (at least one element), got shape ", gt_offsets.sizes());
  check_same_device(gt_boxes, "gt_boxes", priors, "priors");
  check_same_device(gt_labels, "gt_labels", priors, "priors");
  check_same_device(gt_offsets, "gt_offsets", priors, "priors");
  TORCH_CHECK_VALUE(
      iou_threshold > 0.0 && iou_threshold <= 1.0, "iou_threshold must be in (0, 1], got ",
      iou_threshold);
  TORCH_CHECK_VALUE(
      variance_center > 0.0 && std::isfinite(variance_center) && variance_size > 0.0 &&
          std::isfinite(variance_size),
      "variances must be positive and finite, got (", variance_center, ", ", variance_size, ")");
  // Prior and ground-truth indices are stored as int32 in the kernels' scratch buffers.
  TORCH_CHECK_VALUE(
      priors.size(0) < std::numeric_limits<int32_t>::max(), "priors has ", priors.size(0),
      " rows; at most ", std::numeric_limits<int32_t>::max() - 1, " are supported");
  TORCH_CHECK_VALUE(
      gt_boxes.size(0) < std::numeric_limits<int32_t>::max(), "gt_boxes has ", gt_boxes.size(0),
      " rows; at most ", std::numeric_limits<int32_t>::max() - 1, " are supported");
  check_allocation("match: the loc_targets output [B, P, 4] (B + 1 = gt_offsets.size(0), "
                   "P = priors.size(0))",
                   {gt_offsets.size(0) - 1, priors.size(0), 4}, priors.scalar_type(), priors.device());
}

// Offsets must start at 0, never decrease and end at N. Only the CPU kernel reads them on
// the host; the CUDA kernels clamp each image's range into [0, N] instead of syncing.
inline void check_offsets_values(const int64_t* offsets, int64_t batch, int64_t total) {
  TORCH_CHECK_VALUE(offsets[0] == 0, "gt_offsets[0] must be 0, got ", offsets[0]);
  for (int64_t b = 0; b < batch; ++b) {
    TORCH_CHECK_VALUE(
        offsets[b + 1] >= offsets[b], "gt_offsets must not decrease, got gt_offsets[", b,
        "] = ", offsets[b], " > gt_offsets[", b + 1, "] = ", offsets[b + 1]);
  }
  TORCH_CHECK_VALUE(
      offsets[batch] == total, "gt_offsets[-1] must equal the number of ground-truth boxes ",
      total, ", got ", offsets[batch]);
}

// Checks shared by the CPU and CUDA kernels of hard_negative_mining.
inline void check_mining_args(
    const at::Tensor& conf_loss, const at::Tensor& labels, int64_t neg_pos_ratio,
    int64_t min_negatives) {
  check_floating(conf_loss, "conf_loss");
  TORCH_CHECK_VALUE(
      conf_loss.dim() == 2, "conf_loss must have shape [B, P], got shape ", conf_loss.sizes());
  TORCH_CHECK_TYPE(
      labels.scalar_type() == at::kLong, "labels must be an int64 tensor, got ",
      labels.scalar_type());
  TORCH_CHECK_VALUE(
      labels.sizes() == conf_loss.sizes(), "labels must have the shape of conf_loss ",
      conf_loss.sizes(), ", got ", labels.sizes());
  check_same_device(conf_loss, "conf_loss", labels, "labels");
  TORCH_CHECK_VALUE(neg_pos_ratio >= 0, "neg_pos_ratio must be >= 0, got ", neg_pos_ratio);
  TORCH_CHECK_VALUE(min_negatives >= 0, "min_negatives must be >= 0, got ", min_negatives);
  TORCH_CHECK_VALUE(
      conf_loss.size(1) < std::numeric_limits<int32_t>::max(), "conf_loss has ", conf_loss.size(1),
      " priors per image; at most ", std::numeric_limits<int32_t>::max() - 1, " are supported");
}

}  // namespace ssd_ext
