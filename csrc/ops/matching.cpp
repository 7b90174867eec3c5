// Schemas of the matching family: batched SSD matching + encoding, and hard negative mining.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(ssd_ext, m) {
  // Ground truth of the whole batch in CSR form (boxes and labels concatenated, offsets
  // [B + 1]); returns (loc_targets [B, P, 4], labels [B, P] int64).
  m.def(
      "match(Tensor gt_boxes, Tensor gt_labels, Tensor gt_offsets, Tensor priors, "
      "float iou_threshold, float variance_center, float variance_size) -> (Tensor, Tensor)");
  // bool [B, P]: positives (labels > 0) plus the mined negatives (labels == 0) of each image.
  m.def(
      "hard_negative_mining(Tensor conf_loss, Tensor labels, int neg_pos_ratio, "
      "int min_negatives) -> Tensor");
}
