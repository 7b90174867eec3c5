"""Reference SSD box coding (encode / decode) and the xyxy <-> cxcywh conversions, in plain
PyTorch.

Semantics (the contract the kernels are held to):
- boxes are xyxy, priors cxcywh, broadcast against each other;
- encode: ``((cx - pcx) / (v0 pw), (cy - pcy) / (v0 ph), log(w / pw) / v1, log(h / ph) / v1)``;
- decode: its inverse, with the scaled size offsets ``l_w * v1`` and ``l_h * v1`` clamped
  from above at ``log(1000 / 16)`` before ``exp``; returns xyxy.
Math runs in float32 at least (float64 stays float64); results come back in the input dtype.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .box_iou import _math_dtype

DECODE_LOG_SCALE_CLAMP = math.log(1000.0 / 16)


def xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    x1, y1, x2, y2 = boxes.unbind(-1)
    w = x2 - x1
    h = y2 - y1
    return torch.stack([x1 + 0.5 * w, y1 + 0.5 * h, w, h], dim=-1)


def cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


def encode(boxes: Tensor, priors: Tensor, variances: Sequence[float] = (0.1, 0.2)) -> Tensor:
    """SSD regression targets of xyxy ``boxes`` against cxcywh ``priors`` (broadcast)."""
    out_dtype = boxes.dtype
    math_dtype = _math_dtype(torch.promote_types(boxes.dtype, priors.dtype))
    v_center, v_size = float(variances[0]), float(variances[1])
    g = xyxy_to_cxcywh(boxes.to(math_dtype))
    p = priors.to(math_dtype)
    loc = torch.stack(
        [
            (g[..., 0] - p[..., 0]) / (v_center * p[..., 2]),
            (g[..., 1] - p[..., 1]) / (v_center * p[..., 3]),
            torch.log(g[..., 2] / p[..., 2]) / v_size,
            torch.log(g[..., 3] / p[..., 3]) / v_size,
        ],
        dim=-1,
    )
    return loc.to(out_dtype)


def decode(loc: Tensor, priors: Tensor, variances: Sequence[float] = (0.1, 0.2)) -> Tensor:
    """xyxy boxes from SSD regression outputs ``loc`` against cxcywh ``priors`` (broadcast)."""
    out_dtype = loc.dtype
    math_dtype = _math_dtype(torch.promote_types(loc.dtype, priors.dtype))
    v_center, v_size = float(variances[0]), float(variances[1])
    l = loc.to(math_dtype)  # noqa: E741
    p = priors.to(math_dtype)
    cx = p[..., 0] + l[..., 0] * v_center * p[..., 2]
    cy = p[..., 1] + l[..., 1] * v_center * p[..., 3]
    w = p[..., 2] * torch.exp((l[..., 2] * v_size).clamp(max=DECODE_LOG_SCALE_CLAMP))
    h = p[..., 3] * torch.exp((l[..., 3] * v_size).clamp(max=DECODE_LOG_SCALE_CLAMP))
    return cxcywh_to_xyxy(torch.stack([cx, cy, w, h], dim=-1)).to(out_dtype)
