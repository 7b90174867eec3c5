"""Box ops: pairwise IoU, SSD box encoding and decoding.

Conventions (DESIGN.md §3): boxes are xyxy, priors cxcywh, areas without ``+1``; IoU of two
boxes whose union is 0 is 0; inverted boxes (x2 < x1) have zero area; a box with a NaN
coordinate has IoU 0 with every box. float16/bfloat16 inputs are computed in float32 and
returned in their own dtype.

encode/decode pair boxes with priors by broadcasting. The common case, ``[B, P, 4]`` against
``[P, 4]`` (any priors shape that is a trailing part of the boxes' shape), goes to the kernel
as it is: box n uses prior ``n % P`` and the priors are never expanded. Other broadcastable
shapes are expanded here first.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from . import _checks

__all__ = ["box_iou", "decode", "encode"]


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise IoU of two sets of xyxy boxes.

    Args:
        boxes1: ``[N, 4]`` boxes.
        boxes2: ``[M, 4]`` boxes, on the same device.

    Returns:
        ``[N, M]`` IoU in the promoted floating dtype of the inputs (integer boxes give
        float32).
    """
    boxes1 = _checks.box_tensor(boxes1, "boxes1", ndim=2)
    boxes2 = _checks.box_tensor(boxes2, "boxes2", ndim=2)
    _checks.same_device(("boxes1", boxes1), ("boxes2", boxes2))
    boxes1, boxes2 = _checks.promote_floats(boxes1, boxes2)
    return torch.ops.ssd_ext.box_iou.default(boxes1, boxes2)


@torch.library.register_fake("ssd_ext::box_iou")
def _box_iou_fake(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    torch._check(boxes1.dim() == 2 and boxes1.shape[-1] == 4, lambda: "boxes1 must be [N, 4]")
    torch._check(boxes2.dim() == 2 and boxes2.shape[-1] == 4, lambda: "boxes2 must be [M, 4]")
    torch._check(boxes1.dtype == boxes2.dtype, lambda: "boxes1 and boxes2 dtypes differ")
    return boxes1.new_empty((boxes1.shape[0], boxes2.shape[0]))


def _is_suffix(shape: Sequence[int], of: Sequence[int]) -> bool:
    return len(shape) <= len(of) and tuple(shape) == tuple(of[len(of) - len(shape):])


def _coding_operands(boxes: Tensor, priors: Tensor, boxes_name: str) -> tuple[Tensor, Tensor]:
    """(boxes, priors) in the kernels' form: priors' shape a trailing part of the boxes'."""
    trimmed = priors
    while trimmed.dim() > 1 and trimmed.shape[0] == 1:
        trimmed = trimmed[0]
    # Priors with more dimensions than the boxes (e.g. [1, P, 4] against [P, 4]) take the
    # general path below, so that the output keeps the full broadcast shape.
    if priors.dim() <= boxes.dim() and _is_suffix(trimmed.shape, boxes.shape):
        return boxes, trimmed
    try:
        shape = torch.broadcast_shapes(boxes.shape, priors.shape)
    except RuntimeError:
        raise ValueError(f"{boxes_name} of shape {tuple(boxes.shape)} and priors of shape "
                         f"{tuple(priors.shape)} do not broadcast") from None
    boxes = boxes.expand(shape)
    if not _is_suffix(trimmed.shape, shape):
        trimmed = priors.expand(shape)
    return boxes, trimmed


def _coding_args(first: object, first_name: str, priors: object,
                 variances: Sequence[float]) -> tuple[Tensor, Tensor, list[float]]:
    first = _checks.box_tensor(first, first_name)
    priors = _checks.box_tensor(priors, "priors")
    _checks.same_device((first_name, first), ("priors", priors))
    first, priors = _checks.promote_floats(first, priors)
    pair = _checks.variance_pair(variances)
    first, priors = _coding_operands(first, priors, first_name)
    return first, priors, list(pair)


def encode(boxes: Tensor, priors: Tensor, variances: Sequence[float] = (0.1, 0.2)) -> Tensor:
    """SSD regression targets of xyxy ``boxes`` against cxcywh ``priors``.

    ``((cx - pcx) / (v0 pw), (cy - pcy) / (v0 ph), log(w / pw) / v1, log(h / ph) / v1)``.

    Args:
        boxes: ``[..., 4]`` xyxy boxes.
        priors: ``[..., 4]`` cxcywh priors, broadcastable against ``boxes`` (typically
            ``[P, 4]`` against ``[B, P, 4]``), on the same device.
        variances: ``(v0, v1)``, the centre and size variances, positive and finite.

    Returns:
        ``[..., 4]`` targets of the broadcast shape, in the promoted dtype (float16/bfloat16
        computed in float32). A box of zero width or height encodes to ``-inf`` in that
        coordinate (``log(0)``), and NaN propagates: ``ssd_ext.ops.match`` validates ground
        truth before encoding it.
    """
    boxes, priors, pair = _coding_args(boxes, "boxes", priors, variances)
    return torch.ops.ssd_ext.encode.default(boxes, priors, pair)


def decode(loc: Tensor, priors: Tensor, variances: Sequence[float] = (0.1, 0.2)) -> Tensor:
    """xyxy boxes from SSD regression outputs ``loc`` against cxcywh ``priors``.

    The inverse of :func:`encode`, except that the scaled size offsets ``l_w * v1`` and
    ``l_h * v1`` are clamped from above at ``log(1000 / 16)`` before ``exp``, so wild outputs
    cannot overflow into infinite boxes. NaN propagates.

    Args:
        loc: ``[..., 4]`` regression outputs.
        priors: ``[..., 4]`` cxcywh priors, broadcastable against ``loc`` (typically
            ``[P, 4]`` against ``[B, P, 4]``), on the same device.
        variances: ``(v0, v1)``, positive and finite.

    Returns:
        ``[..., 4]`` xyxy boxes of the broadcast shape, in the promoted dtype.
    """
    loc, priors, pair = _coding_args(loc, "loc", priors, variances)
    return torch.ops.ssd_ext.decode.default(loc, priors, pair)


def _box_coding_fake(first: Tensor, priors: Tensor, variances: Sequence[float]) -> Tensor:
    torch._check(first.dim() >= 1 and first.shape[-1] == 4, lambda: "last dimension must be 4")
    torch._check(_is_suffix(priors.shape, first.shape),
                 lambda: "priors must have the shape of the boxes' trailing dimensions")
    torch._check(first.dtype == priors.dtype, lambda: "boxes and priors dtypes differ")
    torch._check(len(variances) == 2, lambda: "variances must have two values")
    return first.new_empty(first.shape)


torch.library.register_fake("ssd_ext::encode")(_box_coding_fake)
torch.library.register_fake("ssd_ext::decode")(_box_coding_fake)
