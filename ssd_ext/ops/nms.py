"""Non-maximum suppression: greedy NMS and per-class (batched) NMS.

The rules are stated once, in ``ssd_reference.nms`` (its module docstring) and
docs/ARCHITECTURE.md "NMS and detection post-processing": visiting order by decreasing score
(ties: lower index), strict ``> iou_threshold`` suppression, IoU in float32 at least, NaN
scores never kept. CPU, CUDA and ``ssd_reference`` return identical indices.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import _checks
from .backend import dispatch

__all__ = ["batched_nms", "nms"]


def _check_shapes(boxes: Tensor, scores: Tensor, idxs: Tensor | None = None) -> None:
    """boxes ``[N, 4]``, scores (and idxs) ``[N]`` (wrappers and fakes)."""
    _checks.check_box_shape(boxes, "boxes", ndim=2)
    _checks.check_length(scores, "scores", boxes.shape[0], "boxes.shape[0]")
    if idxs is not None:
        _checks.check_length(idxs, "idxs", boxes.shape[0], "boxes.shape[0]")


def _boxes_and_scores(boxes: object, scores: object) -> tuple[Tensor, Tensor]:
    boxes = _checks.box_tensor(boxes, "boxes", ndim=2)
    scores = _checks.as_float_tensor(scores, "scores")
    _check_shapes(boxes, scores)
    _checks.same_device(("boxes", boxes), ("scores", scores))
    return boxes, scores


@dispatch("nms")
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


@dispatch("batched_nms")
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
    idxs = _checks.integer_tensor(idxs, "idxs")
    _check_shapes(boxes, scores, idxs)
    _checks.same_device(("boxes", boxes), ("idxs", idxs))
    iou_threshold = _checks.threshold_value(iou_threshold, "iou_threshold")
    limit = _checks.count_value(max_output, "max_output", allow_none=True)
    return torch.ops.ssd_ext.batched_nms.default(boxes, scores, idxs, iou_threshold, limit)


def _check_nms_args(boxes: Tensor, scores: Tensor, iou_threshold: float, max_output: int) -> None:
    """csrc/ops/nms_checks.h check_nms_args, in its order, for the fake kernels."""
    _checks.check_box_tensor(boxes, "boxes", 2)
    _checks.check_floating(scores, "scores")
    _checks.check_length(scores, "scores", boxes.shape[0], "boxes.shape[0]")
    _checks.same_device(("boxes", boxes), ("scores", scores))
    _checks.check_unit_interval(iou_threshold, "iou_threshold")
    if not max_output >= -1:
        raise ValueError(f"max_output must be >= 0 (or -1 for no limit), got {max_output}")


def _check_batched_nms_args(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float,
                            max_output: int) -> None:
    _check_nms_args(boxes, scores, iou_threshold, max_output)
    _checks.check_int64(idxs, "idxs")
    _checks.check_length(idxs, "idxs", boxes.shape[0], "boxes.shape[0]")
    _checks.same_device(("boxes", boxes), ("idxs", idxs))


def _kept_count(op: str):
    """The data-dependent length of the kept indices: a new symbol under FakeTensorMode or
    torch.compile. Plain meta tensors have no values to decide it, so a direct call on them is
    a ValueError naming the device (torch's own error here is an unclear RuntimeError)."""
    try:
        return torch.library.get_ctx().new_dynamic_size()
    except RuntimeError as error:
        if "meta Tensors" not in str(error):
            raise
        raise ValueError(
            f"{op} cannot run on device meta: the number of kept boxes depends on the scores' values, "
            "which meta tensors do not hold (trace it with FakeTensorMode or torch.compile instead)"
        ) from None


@torch.library.register_fake("ssd_ext::nms")
def _nms_fake(boxes: Tensor, scores: Tensor, iou_threshold: float, max_output: int = -1) -> Tensor:
    _check_nms_args(boxes, scores, iou_threshold, max_output)
    kept = _kept_count("nms")
    return boxes.new_empty((kept,), dtype=torch.int64)


@torch.library.register_fake("ssd_ext::batched_nms")
def _batched_nms_fake(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float,
                      max_output: int = -1) -> Tensor:
    _check_batched_nms_args(boxes, scores, idxs, iou_threshold, max_output)
    kept = _kept_count("batched_nms")
    return boxes.new_empty((kept,), dtype=torch.int64)
