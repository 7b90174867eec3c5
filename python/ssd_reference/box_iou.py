"""Reference box area and pairwise IoU, in plain PyTorch.

Semantics (the contract the kernels are held to):
- boxes are xyxy; area has no +1 and inverted boxes have zero area;
- IoU is ``inter / union`` where the union is positive and 0 elsewhere (so two zero-area
  boxes, or any box with a NaN coordinate, have IoU 0 — never NaN).
Math runs in float32 at least (float64 stays float64, see ``_math_dtype``); results come back
in the input dtype.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _math_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype every reference op computes in for inputs of `dtype`: float64 for float64,
    float32 for everything else (float16/bfloat16 are upcast)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def box_area(boxes: Tensor) -> Tensor:
    """``[...]`` areas of ``[..., 4]`` xyxy boxes; inverted boxes have area 0."""
    widths = (boxes[..., 2] - boxes[..., 0]).clamp(min=0)
    heights = (boxes[..., 3] - boxes[..., 1]).clamp(min=0)
    return widths * heights


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """``[N, M]`` IoU of ``[N, 4]`` and ``[M, 4]`` xyxy boxes."""
    out_dtype = boxes1.dtype
    a = boxes1.to(_math_dtype(out_dtype))
    b = boxes2.to(_math_dtype(out_dtype))
    area_a = box_area(a)[:, None]
    area_b = box_area(b)[None, :]
    top_left = torch.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter_wh = (bottom_right - top_left).clamp(min=0)
    inter = inter_wh[..., 0] * inter_wh[..., 1]
    union = area_a + area_b - inter
    iou = torch.where(union > 0, inter / union, torch.zeros_like(inter))
    return iou.to(out_dtype)
