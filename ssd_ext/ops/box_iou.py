"""Pairwise IoU of two sets of xyxy boxes.

Semantics: ``ssd_reference.box_iou`` and docs/ARCHITECTURE.md "Conventions": boxes are xyxy,
areas without ``+1``; IoU of two boxes whose union is 0 is 0; inverted boxes (x2 < x1) have
zero area; a box with a NaN coordinate has IoU 0 with every box. float16/bfloat16 inputs are
computed in float32 and returned in their own dtype.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import _checks
from .backend import dispatch

__all__ = ["box_iou"]


@dispatch("box_iou")
def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise IoU of two sets of xyxy boxes.

    Args:
        boxes1: ``[N, 4]`` boxes.
        boxes2: ``[M, 4]`` boxes, on the same device.

    Returns:
        ``[N, M]`` IoU in the promoted floating dtype of the inputs (integer boxes give
        float32).
    """
    boxes1 = _checks.box_tensor(boxes1, "boxes1", ndim=2)
    boxes2 = _checks.box_tensor(boxes2, "boxes2", ndim=2)
    _checks.same_device(("boxes1", boxes1), ("boxes2", boxes2))
    boxes1, boxes2 = _checks.promote_floats(boxes1, boxes2)
    return torch.ops.ssd_ext.box_iou.default(boxes1, boxes2)


def _check_box_iou_args(boxes1: Tensor, boxes2: Tensor) -> None:
    """csrc/ops/box_iou_checks.h, for the fake kernel (of the output size check, the byte count;
    the machine's memory is left to the real kernels: a fake allocates nothing)."""
    _checks.check_box_tensor(boxes1, "boxes1", 2)
    _checks.check_box_tensor(boxes2, "boxes2", 2)
    _checks.same_device(("boxes1", boxes1), ("boxes2", boxes2))
    _checks.same_dtype(("boxes1", boxes1), ("boxes2", boxes2))
    _checks.check_byte_count("box_iou: the IoU output [N, M] (N, M = boxes1.size(0), boxes2.size(0))",
                             (boxes1.shape[0], boxes2.shape[0]), boxes1.dtype)


@torch.library.register_fake("ssd_ext::box_iou")
def _box_iou_fake(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    _check_box_iou_args(boxes1, boxes2)
    return boxes1.new_empty((boxes1.shape[0], boxes2.shape[0]))
