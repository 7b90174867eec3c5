"""Plain-PyTorch reference of every ssd_ext op: the oracle for the tests, the baseline for
the benchmarks. Written for clarity, not speed; each function's docstring is its contract."""

from .boxes import box_area, box_iou, decode, encode
from .matching import hard_negative_mining, match, multibox_loss
from .priors import prior_boxes

__all__ = [
    "box_area",
    "box_iou",
    "decode",
    "encode",
    "hard_negative_mining",
    "match",
    "multibox_loss",
    "prior_boxes",
]
