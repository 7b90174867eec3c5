// Schema of box_iou: pairwise IoU of two sets of xyxy boxes.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(ssd_ext, m) {
  m.def("box_iou(Tensor boxes1, Tensor boxes2) -> Tensor");
}
