// Schemas of greedy NMS and per-class (batched) NMS. max_output = -1 means no limit.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(ssd_ext, m) {
  m.def("nms(Tensor boxes, Tensor scores, float iou_threshold, int max_output=-1) -> Tensor");
  m.def(
      "batched_nms(Tensor boxes, Tensor scores, Tensor idxs, float iou_threshold, "
      "int max_output=-1) -> Tensor");
}
