"""Typed wrappers over ``torch.ops.ssd_ext.*`` (with fake kernels for torch.compile).

Every function validates its arguments (ValueError/TypeError naming the argument) and then
calls one dispatcher op, which runs the CPU or CUDA kernel of the tensors' device.
"""

from .boxes import box_iou, decode, encode
from .detect import detect, detect_padded
from .matching import hard_negative_mining, match
from .nms import batched_nms, nms
from .priors import prior_boxes, ssd_sizes

__all__ = [
    "batched_nms",
    "box_iou",
    "decode",
    "detect",
    "detect_padded",
    "encode",
    "hard_negative_mining",
    "match",
    "nms",
    "prior_boxes",
    "ssd_sizes",
]
