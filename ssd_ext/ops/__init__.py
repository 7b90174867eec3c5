"""Typed wrappers over ``torch.ops.ssd_ext.*`` (with fake kernels for torch.compile).

Every function turns its Python arguments into the op's (dtype promotion, lists to CSR
offsets, None to -1; ValueError/TypeError naming the argument) and then calls one dispatcher
op, which runs the CPU or CUDA kernel of the tensors' device. One module per op family, named
like its C++ files (docs/ARCHITECTURE.md "Layout"). ``threshold_value``, ``count_value`` and
``variance_pair`` are the rules for the ops' scalar arguments, for callers that take them
once and pass them on (e.g. ``ssd_ext.engine.MultiBoxLoss``). ``use_backend("reference")`` /
``set_backend`` run the ops on the plain-PyTorch reference instead (``ops/backend.py``).
"""

from ._checks import count_value, threshold_value, variance_pair
from .backend import BACKENDS, get_backend, set_backend, use_backend
from .box_coding import decode, encode
from .box_iou import box_iou
from .detect import detect, detect_padded
from .matching import hard_negative_mining, match
from .nms import batched_nms, nms
from .priors import prior_boxes, ssd_sizes

__all__ = [
    "BACKENDS",
    "batched_nms",
    "box_iou",
    "count_value",
    "decode",
    "detect",
    "detect_padded",
    "encode",
    "get_backend",
    "hard_negative_mining",
    "match",
    "nms",
    "prior_boxes",
    "set_backend",
    "ssd_sizes",
    "threshold_value",
    "use_backend",
    "variance_pair",
]
