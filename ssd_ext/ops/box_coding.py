"""SSD box coding: encode xyxy boxes against cxcywh priors, and decode them back.

Semantics: ``ssd_reference.box_coding`` and docs/ARCHITECTURE.md "Priors and box coding".

encode/decode pair boxes with priors by broadcasting. The common case, ``[B, P, 4]`` against
``[P, 4]`` (any priors shape that is a trailing part of the boxes' shape), goes to the kernel
as it is: box n uses prior ``n % P`` and the priors are never expanded. Other broadcastable
shapes are expanded here first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from . import _checks
from .backend import dispatch

__all__ = ["decode", "encode"]


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


@dispatch("encode")
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


@dispatch("decode")
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


def _check_box_coding_args(first: Tensor, first_name: str, priors: Tensor,
                           variances: Sequence[float]) -> None:
    """csrc/ops/box_coding_checks.h, in its order and words, for the fake kernels."""
    for tensor, name in ((first, first_name), (priors, "priors")):
        if tensor.dim() < 1 or tensor.shape[-1] != 4:
            raise ValueError(f"{name} must have a last dimension of size 4, got shape {list(tensor.shape)}")
    _checks.check_floating(first, first_name)
    _checks.check_floating(priors, "priors")
    _checks.same_device((first_name, first), ("priors", priors))
    _checks.same_dtype((first_name, first), ("priors", priors))
    if not _is_suffix(priors.shape, first.shape):
        raise ValueError(
            f"priors must have the shape of the trailing dimensions of {first_name} (e.g. [P, 4] "
            f"for {first_name} [B, P, 4]), got {list(priors.shape)} and {list(first.shape)}"
        )
    if len(variances) != 2 or not all(v > 0 and math.isfinite(v) for v in variances):
        raise ValueError(
            f"variances must be two positive finite values (centre, size), got {list(variances)}"
        )


def _box_coding_fake(first_name: str):
    """The fake kernel of encode (`first_name` "boxes") or decode ("loc")."""

    def fake(first: Tensor, priors: Tensor, variances: Sequence[float]) -> Tensor:
        _check_box_coding_args(first, first_name, priors, variances)
        return first.new_empty(first.shape)

    return fake


torch.library.register_fake("ssd_ext::encode")(_box_coding_fake("boxes"))
torch.library.register_fake("ssd_ext::decode")(_box_coding_fake("loc"))
