#pragma once

#include <ATen/core/Tensor.h>

#include "common_checks.h"

namespace ssd_ext {

// Checks shared by the CPU and CUDA kernels of box_iou.
inline void check_box_iou_args(const at::Tensor& boxes1, const at::Tensor& boxes2) {
  check_box_tensor(boxes1, "boxes1", 2);
  check_box_tensor(boxes2, "boxes2", 2);
  check_same_device(boxes1, "boxes1", boxes2, "boxes2");
  check_same_dtype(boxes1, "boxes1", boxes2, "boxes2");
  check_allocation("box_iou: the IoU output [N, M] (N, M = boxes1.size(0), boxes2.size(0))",
                   {boxes1.size(0), boxes2.size(0)}, boxes1.scalar_type(), boxes1.device());
}

}  // namespace ssd_ext
