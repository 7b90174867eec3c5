"""Fused SSD detection post-processing for a whole batch (softmax, decode, clip, per-class
threshold + top-k + NMS, per-image top-k) in one op.

Semantics: ``ssd_reference.detect`` and docs/ARCHITECTURE.md "NMS and detection post-processing".
Detections of an image are sorted by decreasing score, ties by lower class, then lower prior
index.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from . import _checks
from .backend import dispatch

__all__ = ["detect", "detect_padded"]


def _check_shapes(loc: Tensor, conf_logits: Tensor, priors: Tensor) -> None:
    """loc ``[B, P, 4]``, conf_logits ``[B, P, C >= 2]``, priors ``[P, 4]`` (wrapper and fake)."""
    _checks.check_box_shape(loc, "loc", ndim=3)
    _checks.check_box_shape(priors, "priors", ndim=2)
    batch, num_priors = loc.shape[0], loc.shape[1]
    if conf_logits.dim() != 3 or conf_logits.shape[:2] != loc.shape[:2]:
        raise ValueError(
            f"conf_logits must have shape [B, P, C] with B, P = {batch}, {num_priors} (from loc), "
            f"got shape {tuple(conf_logits.shape)}"
        )
    if conf_logits.shape[2] < 2:
        raise ValueError(
            f"conf_logits must have at least 2 classes (background + 1), got {conf_logits.shape[2]}"
        )
    if priors.shape[0] != num_priors:
        raise ValueError(
            f"priors must have P = {num_priors} rows (from loc), got shape {tuple(priors.shape)}"
        )


@dispatch("detect_padded")
def detect_padded(
    loc: Tensor,
    conf_logits: Tensor,
    priors: Tensor,
    score_threshold: float = 0.01,
    iou_threshold: float = 0.45,
    candidates_per_class: int = 400,
    max_detections: int = 200,
    variances: Sequence[float] = (0.1, 0.2),
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """:func:`detect` returning padded tensors (fixed shapes: friendly to torch.compile).

    Returns:
        ``boxes [B, D, 4]``, ``scores [B, D]``, ``labels [B, D]`` int64 and ``counts [B]``
        int64, with ``D = max_detections``; row ``k`` of image ``b`` is a detection when
        ``k < counts[b]``, else padding (zeros, label -1). Floats are in the promoted dtype of
        the inputs.
    """
    loc = _checks.as_float_tensor(loc, "loc")
    conf_logits = _checks.as_float_tensor(conf_logits, "conf_logits")
    priors = _checks.as_float_tensor(priors, "priors")
    _check_shapes(loc, conf_logits, priors)
    _checks.same_device(("loc", loc), ("conf_logits", conf_logits), ("priors", priors))
    score_threshold = _checks.threshold_value(score_threshold, "score_threshold")
    iou_threshold = _checks.threshold_value(iou_threshold, "iou_threshold")
    candidates_per_class = _checks.count_value(candidates_per_class, "candidates_per_class")
    max_detections = _checks.count_value(max_detections, "max_detections")
    variance_center, variance_size = _checks.variance_pair(variances)
    loc, conf_logits, priors = _checks.promote_floats(loc, conf_logits, priors)
    return torch.ops.ssd_ext.detect.default(
        loc, conf_logits, priors, score_threshold, iou_threshold, candidates_per_class,
        max_detections, variance_center, variance_size,
    )


@dispatch("detect")
def detect(
    loc: Tensor,
    conf_logits: Tensor,
    priors: Tensor,
    score_threshold: float = 0.01,
    iou_threshold: float = 0.45,
    candidates_per_class: int = 400,
    max_detections: int = 200,
    variances: Sequence[float] = (0.1, 0.2),
) -> list[dict[str, Tensor]]:
    """SSD post-processing of a batch.

    Args:
        loc: ``[B, P, 4]`` regression outputs (encoded against the priors).
        conf_logits: ``[B, P, C]`` class logits; class 0 is background, ``C >= 2``.
        priors: ``[P, 4]`` cxcywh priors.
        score_threshold: per-class softmax scores must be ``> score_threshold``; in [0, 1].
        iou_threshold: per-class NMS threshold (drop when IoU ``>`` it); in [0, 1].
        candidates_per_class: at most this many highest-scoring boxes per class enter NMS.
        max_detections: at most this many detections per image.
        variances: (centre, size) variances of the box encoding.

    Returns:
        One dict per image: ``boxes [K, 4]`` xyxy clipped to [0, 1], ``scores [K]``,
        ``labels [K]`` int64 in 1..C-1, sorted by decreasing score (ties: lower class, then
        lower prior index).
    """
    boxes, scores, labels, counts = detect_padded(
        loc, conf_logits, priors, score_threshold, iou_threshold, candidates_per_class,
        max_detections, variances,
    )
    return [
        {"boxes": boxes[image, :count], "scores": scores[image, :count], "labels": labels[image, :count]}
        for image, count in enumerate(counts.tolist())
    ]


def _check_detect_args(loc: Tensor, conf_logits: Tensor, priors: Tensor, score_threshold: float,
                       iou_threshold: float, candidates_per_class: int, max_detections: int,
                       variance_center: float, variance_size: float) -> None:
    """csrc/ops/detect_checks.h, in its order, for the fake kernel (of the output size checks,
    the byte counts; the machine's memory is left to the real kernels: a fake allocates
    nothing)."""
    _checks.check_box_tensor(loc, "loc", 3)
    _checks.check_floating(conf_logits, "conf_logits")
    if conf_logits.dim() != 3 or conf_logits.shape[:2] != loc.shape[:2]:
        raise ValueError(
            f"conf_logits must have shape [B, P, C] with B, P = {loc.shape[0]}, {loc.shape[1]} (from loc), "
            f"got shape {list(conf_logits.shape)}"
        )
    if conf_logits.shape[2] < 2:
        raise ValueError(
            f"conf_logits must have at least 2 classes (background + 1), got {conf_logits.shape[2]}"
        )
    _checks.check_box_tensor(priors, "priors", 2)
    if priors.shape[0] != loc.shape[1]:
        raise ValueError(
            f"priors must have P = {loc.shape[1]} rows (from loc), got shape {list(priors.shape)}"
        )
    _checks.same_device(("loc", loc), ("conf_logits", conf_logits), ("priors", priors))
    _checks.same_dtype(("loc", loc), ("conf_logits", conf_logits), ("priors", priors))
    _checks.check_unit_interval(score_threshold, "score_threshold")
    _checks.check_unit_interval(iou_threshold, "iou_threshold")
    _checks.check_non_negative(candidates_per_class, "candidates_per_class")
    _checks.check_non_negative(max_detections, "max_detections")
    _checks.check_byte_count("detect: the boxes output [B, max_detections, 4]",
                             (loc.shape[0], max_detections, 4), loc.dtype)
    _checks.check_byte_count("detect: the labels output [B, max_detections]", (loc.shape[0], max_detections),
                             torch.int64)
    _checks.check_variance_values(variance_center, variance_size)


@torch.library.register_fake("ssd_ext::detect")
def _detect_fake(loc: Tensor, conf_logits: Tensor, priors: Tensor, score_threshold: float,
                 iou_threshold: float, candidates_per_class: int, max_detections: int,
                 variance_center: float, variance_size: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    _check_detect_args(loc, conf_logits, priors, score_threshold, iou_threshold, candidates_per_class,
                       max_detections, variance_center, variance_size)
    batch = loc.shape[0]
    return (
        loc.new_empty((batch, max_detections, 4)),
        loc.new_empty((batch, max_detections)),
        loc.new_empty((batch, max_detections), dtype=torch.int64),
        loc.new_empty((batch,), dtype=torch.int64),
    )
