"""Typed wrappers over ``torch.ops.ssd_ext.*`` (with fake kernels for torch.compile).

Every function validates its arguments (ValueError/TypeError naming the argument) and then
calls one dispatcher op, which runs the CPU or CUDA kernel of the tensors' device.
"""

from .boxes import box_iou
from .detect import detect, detect_padded
from .nms import batched_nms, nms

__all__ = ["batched_nms", "box_iou", "detect", "detect_padded", "nms"]
