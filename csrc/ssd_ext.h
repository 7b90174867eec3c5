// Typed C++ entry points to the ssd_ext ops for LibTorch users. Each one calls the op
// through the PyTorch dispatcher, so it runs the CPU or CUDA kernel of its inputs' device.
// Link libssd_ext (its TORCH_LIBRARY registrations run when it loads).
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/ArrayRef.h>

#include <array>

#include <tuple>

#include <tuple>

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

// Batched SSD matching + encoding. Ground truth in CSR form: gt_boxes [N, 4] xyxy,
// gt_labels [N] int64, gt_offsets [B + 1] int64; priors [P, 4] cxcywh. Returns
// (loc_targets [B, P, 4], labels [B, P] int64). The rules are python/ssd_reference/matching.py
// and docs/ARCHITECTURE.md "Matching, mining and the loss".
inline std::tuple<at::Tensor, at::Tensor> match(
    const at::Tensor& gt_boxes, const at::Tensor& gt_labels, const at::Tensor& gt_offsets,
    const at::Tensor& priors, double iou_threshold = 0.5, double variance_center = 0.1,
    double variance_size = 0.2) {
  static const auto op = detail::find_op<std::tuple<at::Tensor, at::Tensor>(
      const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, double, double,
      double)>("ssd_ext::match");
  return op.call(gt_boxes, gt_labels, gt_offsets, priors, iou_threshold, variance_center,
                 variance_size);
}

// bool [B, P]: positives plus each image's hardest negatives (ties to the lower index).
inline at::Tensor hard_negative_mining(
    const at::Tensor& conf_loss, const at::Tensor& labels, int64_t neg_pos_ratio = 3,
    int64_t min_negatives = 0) {
  static const auto op = detail::find_op<at::Tensor(
      const at::Tensor&, const at::Tensor&, int64_t, int64_t)>("ssd_ext::hard_negative_mining");
  return op.call(conf_loss, labels, neg_pos_ratio, min_negatives);
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

// Greedy NMS of [N, 4] xyxy boxes by [N] scores -> int64 kept indices by decreasing score
// (ties: lower index); drop when IoU > iou_threshold; max_output -1 = no limit.
inline at::Tensor nms(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold,
                      int64_t max_output = -1) {
  static const auto op = detail::find_op<at::Tensor(const at::Tensor&, const at::Tensor&, double,
                                                    int64_t)>("ssd_ext::nms");
  return op.call(boxes, scores, iou_threshold, max_output);
}

// NMS independently per value of the int64 [N] idxs; kept indices of all groups by score.
inline at::Tensor batched_nms(const at::Tensor& boxes, const at::Tensor& scores,
                              const at::Tensor& idxs, double iou_threshold,
                              int64_t max_output = -1) {
  static const auto op = detail::find_op<at::Tensor(const at::Tensor&, const at::Tensor&,
                                                    const at::Tensor&, double, int64_t)>(
      "ssd_ext::batched_nms");
  return op.call(boxes, scores, idxs, iou_threshold, max_output);
}

// Fused SSD post-processing: (boxes [B, D, 4], scores [B, D], labels [B, D], counts [B]),
// D = max_detections, rows past counts[b] padded (zeros, label -1).
inline std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> detect(
    const at::Tensor& loc, const at::Tensor& conf_logits, const at::Tensor& priors,
    double score_threshold = 0.01, double iou_threshold = 0.45, int64_t candidates_per_class = 400,
    int64_t max_detections = 200, double variance_center = 0.1, double variance_size = 0.2) {
  using Result = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
  static const auto op = detail::find_op<Result(const at::Tensor&, const at::Tensor&,
                                                const at::Tensor&, double, double, int64_t,
                                                int64_t, double, double)>("ssd_ext::detect");
  return op.call(loc, conf_logits, priors, score_threshold, iou_threshold, candidates_per_class,
                 max_detections, variance_center, variance_size);
}

}  // namespace ssd_ext
