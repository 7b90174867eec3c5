"""Non-maximum suppression: greedy NMS and per-class (batched) NMS.

Semantics (DESIGN.md §4, ARCHITECTURE.md "NMS and detection post-processing"):
- boxes are visited by decreasing score, equal scores lower index first; a box is dropped
  when its IoU with an already kept box is ``> iou_threshold`` (strict);
- IoU is computed in float32 at least (float16/bfloat16 boxes are upcast, float64 stays
  float64); a zero union gives IoU 0 and a box with a NaN coordinate overlaps nothing;
- a box whose score is NaN is never kept and never suppresses;
- ``max_output`` (None: no limit) stops after that many kept boxes.
CPU, CUDA and ``ssd_reference`` return identical indices.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import _checks

__all__ = ["batched_nms", "nms"]


def _boxes_and_scores(boxes: object, scores: object) -> tuple[Tensor, Tensor]:
    boxes = _checks.box_tensor(boxes, "boxes", ndim=2)
    scores = _checks.as_float_tensor(scores, "scores")
    if scores.dim() != 1 or scores.shape[0] != boxes.shape[0]:
        raise ValueError(
            f"scores must have shape [N] with N = {boxes.shape[0]} (boxes.shape[0]), "
            f"got shape {tuple(scores.shape)}"
        )
    _checks.same_device(("boxes", boxes), ("scores", scores))
    return boxes, scores


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float, max_output: int | None = None) -> Tensor:
    """Greedy non-maximum suppression.

    Args:
        boxes: ``[N, 4]`` xyxy boxes (any floating dtype; integer boxes become float32).
        scores: ``[N]`` scores on the same device (any floating dtype).
        iou_threshold: a box is dropped when its IoU with a kept box is ``> iou_threshold``;
            in [0, 1].
        max_output: keep at most this many boxes (None: no limit).

    Returns:
        int64 ``[K]`` indices of the kept boxes, by decreasing score (ties: lower index).
    """
    boxes, scores = _boxes_and_scores(boxes, scores)
    iou_threshold = _checks.threshold_value(iou_threshold, "iou_threshold")
    limit = _checks.count_value(max_output, "max_output", allow_none=True)
    return torch.ops.ssd_ext.nms.default(boxes, scores, iou_threshold, limit)


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float,
                max_output: int | None = None) -> Tensor:
    """NMS independently per value of ``idxs`` (e.g. the class): boxes with different
    values never suppress each other. Exact for any box dtype and any int64 class id (no
    coordinate-offset trick).

    Args:
        boxes: ``[N, 4]`` xyxy boxes.
        scores: ``[N]`` scores.
        idxs: ``[N]`` integer group of each box (any integer dtype; bool is rejected).
        iou_threshold: as in :func:`nms`.
        max_output: keep at most this many boxes in total (None: no limit).

    Returns:
        int64 ``[K]`` indices of the kept boxes of all groups, by decreasing score (ties:
        lower index).
    """
    boxes, scores = _boxes_and_scores(boxes, scores)
    idxs = _checks.require_tensor(idxs, "idxs")
    if idxs.dtype == torch.bool or idxs.dtype.is_floating_point or idxs.dtype.is_complex:
        raise TypeError(f"idxs must be an integer tensor, got {idxs.dtype}")
    if idxs.dim() != 1 or idxs.shape[0] != boxes.shape[0]:
        raise ValueError(
            f"idxs must have shape [N] with N = {boxes.shape[0]} (boxes.shape[0]), "
            f"got shape {tuple(idxs.shape)}"
        )
    _checks.same_device(("boxes", boxes), ("idxs", idxs))
    iou_threshold = _checks.threshold_value(iou_threshold, "iou_threshold")
    limit = _checks.count_value(max_output, "max_output", allow_none=True)
    return torch.ops.ssd_ext.batched_nms.default(boxes, scores, idxs.to(torch.int64), iou_threshold, limit)


def _check_nms_fake(boxes: Tensor, scores: Tensor) -> None:
    torch._check(boxes.dim() == 2 and boxes.shape[-1] == 4, lambda: "boxes must be [N, 4]")
    torch._check(scores.dim() == 1 and scores.shape[0] == boxes.shape[0], lambda: "scores must be [N]")


@torch.library.register_fake("ssd_ext::nms")
def _nms_fake(boxes: Tensor, scores: Tensor, iou_threshold: float, max_output: int = -1) -> Tensor:
    _check_nms_fake(boxes, scores)
    kept = torch.library.get_ctx().new_dynamic_size()
    return boxes.new_empty((kept,), dtype=torch.int64)


@torch.library.register_fake("ssd_ext::batched_nms")
def _batched_nms_fake(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float,
                      max_output: int = -1) -> Tensor:
    _check_nms_fake(boxes, scores)
    torch._check(idxs.dim() == 1 and idxs.shape[0] == boxes.shape[0], lambda: "idxs must be [N]")
    kept = torch.library.get_ctx().new_dynamic_size()
    return boxes.new_empty((kept,), dtype=torch.int64)
