"""Reference non-maximum suppression (NMS) and batched (per-class) NMS, in plain PyTorch.

Semantics (the contract the kernels are held to):
- Boxes are visited by decreasing score; equal scores are visited lower index first (a stable
  sort). A box is kept unless its IoU with an already kept box is ``> iou_threshold``
  (strictly greater: at threshold 1 nothing is ever dropped, at 0 any overlap drops).
- IoU is ``ssd_reference.box_iou`` computed in float32 at least (float16/bfloat16 boxes are
  upcast first, float64 stays float64): a zero union gives IoU 0, and a box with a NaN
  coordinate has IoU 0 with every box, so it is kept (by its score) and suppresses nothing.
- A box whose score is NaN is never kept and never suppresses anything.
- ``max_output`` (None: no limit) stops after that many boxes are kept.
- Scores are compared as values: -0.0 and +0.0 tie (lower index first); -inf is a score.
Returns int64 indices into the input, in the order kept (decreasing score).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .box_iou import _math_dtype, box_iou


def score_order(scores: Tensor) -> Tensor:
    """Indices of the non-NaN scores by decreasing score, ties lower index first."""
    valid = torch.nonzero(~torch.isnan(scores)).flatten()
    # +0.0 turns -0.0 into +0.0, so both tie on every backend.
    keys = scores[valid].to(_math_dtype(scores.dtype)) + 0.0
    order = torch.sort(keys, descending=True, stable=True).indices
    return valid[order]


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float, max_output: int | None = None) -> Tensor:
    """Greedy NMS of ``[N, 4]`` xyxy ``boxes`` with ``[N]`` ``scores``; int64 kept indices."""
    return batched_nms(boxes, scores, torch.zeros(scores.shape[0], dtype=torch.int64), iou_threshold,
                       max_output)


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float,
                max_output: int | None = None) -> Tensor:
    """NMS run independently for each value of ``idxs`` (boxes of different values never
    suppress each other). The kept indices of all values come out merged by decreasing score,
    ties lower index first; ``max_output`` caps the total."""
    boxes = boxes.cpu().to(_math_dtype(boxes.dtype))
    scores = scores.cpu()
    idxs = idxs.cpu().to(torch.int64)
    order = score_order(scores)
    # overlaps[r, s]: the box of rank r suppresses the box of rank s if it is kept first
    # (O(N^2) memory: fine for a reference).
    ranked = boxes[order]
    ranked_classes = idxs[order]
    same_class = ranked_classes[:, None] == ranked_classes[None, :]
    overlaps = ((box_iou(ranked, ranked) > iou_threshold) & same_class).numpy()
    suppressed = np.zeros(len(order), dtype=bool)
    kept: list[int] = []
    for rank in range(len(order)):
        if max_output is not None and len(kept) >= max_output:
            break
        if suppressed[rank]:
            continue
        kept.append(int(order[rank]))
        suppressed |= overlaps[rank]  # earlier ranks are decided already; only later ones matter
    return torch.tensor(kept, dtype=torch.int64)
