"""Plain-PyTorch reference of every ssd_ext op: the oracle for the tests, the baseline for
the benchmarks. Written for clarity, not speed; each function's docstring is its contract.

``ssd_reference.transforms`` (imported on its own: it draws through ssd_ext's augmentation)
is the float reference of ``ssd_ext.data.transforms``."""

from .box_coding import cxcywh_to_xyxy, decode, encode, xyxy_to_cxcywh
from .box_iou import box_area, box_iou
from .detect import detect
from .matching import hard_negative_mining, match, multibox_loss
from .nms import batched_nms, nms
from .priors import prior_boxes

__all__ = [
    "batched_nms",
    "box_area",
    "box_iou",
    "cxcywh_to_xyxy",
    "decode",
    "detect",
    "encode",
    "hard_negative_mining",
    "match",
    "multibox_loss",
    "nms",
    "prior_boxes",
    "xyxy_to_cxcywh",
]
