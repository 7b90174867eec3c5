// Schema of detect, the fused SSD detection post-processing. It returns padded per-image
// tensors (boxes [B, D, 4], scores [B, D], labels [B, D]) and the valid count of each image
// [B], D = max_detections; rows past an image's count are zero (labels -1).
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(ssd_ext, m) {
  m.def(
      "detect(Tensor loc, Tensor conf_logits, Tensor priors, float score_threshold, "
      "float iou_threshold, int candidates_per_class, int max_detections, "
      "float variance_center, float variance_size) -> (Tensor, Tensor, Tensor, Tensor)");
}
