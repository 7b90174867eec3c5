"""Matching ops: batched SSD matching + target encoding, and hard negative mining.

The rules are stated once, in the module docstring of ``ssd_reference.matching`` (with the
design notes in docs/ARCHITECTURE.md "Matching, mining and the loss"); CPU, CUDA and the
reference give the same labels.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Sequence

import torch
from torch import Tensor

from . import _checks
from .backend import dispatch

__all__ = ["hard_negative_mining", "match"]


def _as_list(value: object, name: str) -> list:
    if isinstance(value, Tensor) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a list of tensors (one per image), got {type(value).__name__}")
    return list(value)


def _image_labels(value: object, index: int, count: int, device: torch.device) -> Tensor:
    labels = _checks.integer_tensor(value, f"gt_labels[{index}]")
    if labels.dim() != 1 or labels.shape[0] != count:
        raise ValueError(
            f"gt_labels[{index}] must have shape [{count}] to match gt_boxes[{index}], "
            f"got shape {tuple(labels.shape)}"
        )
    if labels.device != device:
        raise ValueError(f"gt_labels[{index}] must be on the priors' device {device}, got {labels.device}")
    return labels


def _invalid_rows(boxes: Tensor, labels: Tensor, num_classes: int | None) -> Tensor:
    """bool ``[N]``: ground truth that cannot be encoded (or has a label out of range)."""
    finite = torch.isfinite(boxes).all(dim=1)
    positive_size = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    label_ok = labels >= 1
    if num_classes is not None and num_classes < 2**63:  # larger bounds no int64 label
        label_ok &= labels < num_classes
    return ~(finite & positive_size & label_ok)


def _describe(boxes: Tensor, labels: Tensor, row: int, num_classes: int | None) -> str:
    box = [float(v) for v in boxes[row].tolist()]
    label = int(labels[row])
    if not all(torch.isfinite(boxes[row]).tolist()):
        why = "a non-finite coordinate"
    elif not (box[2] > box[0] and box[3] > box[1]):
        why = "zero or negative width or height (it cannot be encoded: log of 0)"
    else:
        upper = "" if num_classes is None else f" and < num_classes={num_classes}"
        why = f"label {label} outside the object classes (labels must be >= 1{upper}; 0 is background)"
    return f"box {box} with label {label} has {why}"


@dispatch("match")
def match(
    gt_boxes: Sequence[Tensor],
    gt_labels: Sequence[Tensor],
    priors: Tensor,
    iou_threshold: float = 0.5,
    variances: Sequence[float] = (0.1, 0.2),
    *,
    num_classes: int | None = None,
    invalid: str = "raise",
) -> tuple[Tensor, Tensor]:
    """Match a whole batch of ground truth to the priors and encode the targets, in one op.

    Args:
        gt_boxes: B tensors ``[G_i, 4]`` xyxy (normalised like the priors; G_i may be 0).
        gt_labels: B integer tensors ``[G_i]``, object classes 1..C-1.
        priors: ``[P, 4]`` cxcywh; every tensor on the same device.
        iou_threshold: priors with best IoU >= this (in (0, 1]) are positive.
        variances: (centre, size) encoding variances.
        num_classes: when given (counting background), labels must be < num_classes.
        invalid: ground truth with a non-finite coordinate, zero/negative width or height or
            a label out of range cannot be trained on: ``"raise"`` (ValueError naming the
            image) or ``"drop"`` (removed with a warning). The check is skipped while
            torch.compile traces (it needs the values).

    Returns:
        ``loc_targets [B, P, 4]`` in the promoted float dtype of boxes and priors, and
        ``labels [B, P]`` int64 (0 = background).
    """
    boxes_list = _as_list(gt_boxes, "gt_boxes")
    labels_list = _as_list(gt_labels, "gt_labels")
    if len(boxes_list) != len(labels_list):
        raise ValueError(
            f"gt_boxes and gt_labels must have one entry per image, got {len(boxes_list)} and "
            f"{len(labels_list)}"
        )
    if invalid not in ("raise", "drop"):
        raise ValueError(f"invalid must be 'raise' or 'drop', got {invalid!r}")
    if num_classes is not None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral):
            raise TypeError(f"num_classes must be an int >= 2 (it counts the background) or None, "
                            f"got {type(num_classes).__name__}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2 (it counts the background), "
                             f"got {num_classes!r}")
        num_classes = int(num_classes)
    iou_threshold = _checks.threshold_value(iou_threshold, "iou_threshold")
    if iou_threshold == 0.0:
        raise ValueError("iou_threshold must be in (0, 1], got 0.0 (every prior would be positive)")
    v_center, v_size = _checks.variance_pair(variances)
    priors = _checks.box_tensor(priors, "priors", ndim=2)
    device = priors.device
    dtype = priors.dtype
    boxes_checked = []
    labels_checked = []
    for index, (boxes, labels) in enumerate(zip(boxes_list, labels_list, strict=True)):
        boxes = _checks.box_tensor(boxes, f"gt_boxes[{index}]", ndim=2)
        if boxes.device != device:
            raise ValueError(f"gt_boxes[{index}] must be on the priors' device {device}, got {boxes.device}")
        dtype = torch.promote_types(dtype, boxes.dtype)
        boxes_checked.append(boxes)
        labels_checked.append(_image_labels(labels, index, boxes.shape[0], device))

    counts = [boxes.shape[0] for boxes in boxes_checked]
    if boxes_checked:
        all_boxes = torch.cat([boxes.to(dtype) for boxes in boxes_checked])
        all_labels = torch.cat(labels_checked)
    else:
        all_boxes = priors.new_zeros((0, 4), dtype=dtype)
        all_labels = torch.zeros(0, dtype=torch.int64, device=device)

    if not torch.compiler.is_compiling() and all_boxes.shape[0] > 0:
        bad = _invalid_rows(all_boxes, all_labels, num_classes)
        if bool(bad.any()):
            bad_rows = torch.nonzero(bad).flatten().cpu()
            image_of_row = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
            first = int(bad_rows[0])
            image = int(image_of_row[first])
            within = first - sum(counts[:image])
            detail = _describe(all_boxes, all_labels, first, num_classes)
            message = (f"ground truth of image {image}, row {within}: {detail}; "
                       f"{bad_rows.numel()} invalid row(s) in the batch")
            if invalid == "raise":
                raise ValueError(message)
            warnings.warn(f"match: dropping invalid ground truth ({message})", stacklevel=2)
            keep = ~bad
            all_boxes = all_boxes[keep]
            all_labels = all_labels[keep]
            dropped = torch.bincount(image_of_row[bad_rows], minlength=len(counts)).tolist()
            counts = [count - drop for count, drop in zip(counts, dropped, strict=True)]

    offsets = [0]
    for count in counts:
        offsets.append(offsets[-1] + count)
    gt_offsets = _offsets_on(device, offsets)
    return torch.ops.ssd_ext.match.default(
        all_boxes, all_labels, gt_offsets, priors.to(dtype), float(iou_threshold), v_center, v_size
    )


def _offsets_on(device: torch.device, offsets: list[int]) -> Tensor:
    """The CSR offsets ``[B + 1]`` as an int64 tensor on ``device``. On CUDA they go through
    pinned memory with a non-blocking copy, so building them does not wait for the GPU."""
    host = torch.tensor(offsets, dtype=torch.int64)
    if torch.device(device).type == "cuda" and not torch.compiler.is_compiling():
        return host.pin_memory().to(device, non_blocking=True)
    return host.to(device)


def _check_match_args(gt_boxes: Tensor, gt_labels: Tensor, gt_offsets: Tensor, priors: Tensor,
                      iou_threshold: float, variance_center: float, variance_size: float) -> None:
    """csrc/ops/matching_checks.h check_match_args, in its order, for the fake kernel. The
    offsets' values (0 first, non-decreasing, N last) are data: the CPU kernel checks them;
    a fake cannot read them."""
    _checks.check_box_tensor(gt_boxes, "gt_boxes", 2)
    _checks.check_box_tensor(priors, "priors", 2)
    _checks.same_dtype(("gt_boxes", gt_boxes), ("priors", priors))
    _checks.check_int64(gt_labels, "gt_labels")
    _checks.check_length(gt_labels, "gt_labels", gt_boxes.shape[0], "gt_boxes.shape[0]")
    _checks.check_int64(gt_offsets, "gt_offsets")
    if gt_offsets.dim() != 1 or gt_offsets.shape[0] < 1:
        raise ValueError(
            f"gt_offsets must have shape [B + 1] (at least one element), got shape {tuple(gt_offsets.shape)}"
        )
    _checks.same_device(("priors", priors), ("gt_boxes", gt_boxes), ("gt_labels", gt_labels),
                        ("gt_offsets", gt_offsets))
    _checks.check_unit_interval(iou_threshold, "iou_threshold", open_at_zero=True)
    _checks.check_variance_values(variance_center, variance_size)
    _checks.check_int32_rows(priors.shape[0], "priors")
    _checks.check_int32_rows(gt_boxes.shape[0], "gt_boxes")
    _checks.check_byte_count("match: the loc_targets output [B, P, 4] (B + 1 = gt_offsets.size(0), "
                             "P = priors.size(0))", (gt_offsets.shape[0] - 1, priors.shape[0], 4),
                             priors.dtype)


@torch.library.register_fake("ssd_ext::match")
def _match_fake(gt_boxes: Tensor, gt_labels: Tensor, gt_offsets: Tensor, priors: Tensor,
                iou_threshold: float, variance_center: float, variance_size: float
                ) -> tuple[Tensor, Tensor]:
    _check_match_args(gt_boxes, gt_labels, gt_offsets, priors, iou_threshold, variance_center,
                      variance_size)
    batch = gt_offsets.shape[0] - 1
    num_priors = priors.shape[0]
    return (priors.new_empty((batch, num_priors, 4)),
            priors.new_empty((batch, num_priors), dtype=torch.int64))


def _check_mining_shapes(conf_loss: Tensor, labels: Tensor) -> None:
    """conf_loss ``[B, P]`` and labels of the same shape (wrapper and fake)."""
    if conf_loss.dim() != 2:
        raise ValueError(f"conf_loss must have shape [B, P], got shape {tuple(conf_loss.shape)}")
    if labels.shape != conf_loss.shape:
        raise ValueError(
            f"labels must have the shape of conf_loss {tuple(conf_loss.shape)}, got {tuple(labels.shape)}"
        )


@dispatch("hard_negative_mining")
def hard_negative_mining(
    conf_loss: Tensor,
    labels: Tensor,
    neg_pos_ratio: int = 3,
    min_negatives: int = 0,
) -> Tensor:
    """Positives plus each image's hardest negatives.

    Args:
        conf_loss: ``[B, P]`` floating ranking loss (e.g. background cross-entropy).
        labels: ``[B, P]`` integer labels: > 0 positive, 0 negative, < 0 ignored.
        neg_pos_ratio: negatives kept per positive (int >= 0).
        min_negatives: negatives kept at least, e.g. for images without objects (int >= 0).

    Returns:
        bool ``[B, P]``: every positive, and per image the
        ``min(max(neg_pos_ratio * num_pos, min_negatives), num_neg)`` negatives of highest
        loss (ties to the lower index; NaN ranks above every number).
    """
    conf_loss = _checks.as_float_tensor(conf_loss, "conf_loss")
    labels = _checks.integer_tensor(labels, "labels")
    _check_mining_shapes(conf_loss, labels)
    _checks.same_device(("conf_loss", conf_loss), ("labels", labels))
    neg_pos_ratio = _checks.count_value(neg_pos_ratio, "neg_pos_ratio")
    min_negatives = _checks.count_value(min_negatives, "min_negatives")
    return torch.ops.ssd_ext.hard_negative_mining.default(
        conf_loss, labels, neg_pos_ratio, min_negatives
    )


def _check_mining_args(conf_loss: Tensor, labels: Tensor, neg_pos_ratio: int, min_negatives: int) -> None:
    """csrc/ops/matching_checks.h check_mining_args, in its order, for the fake kernel."""
    _checks.check_floating(conf_loss, "conf_loss")
    if conf_loss.dim() != 2:
        raise ValueError(f"conf_loss must have shape [B, P], got shape {tuple(conf_loss.shape)}")
    _checks.check_int64(labels, "labels")
    _check_mining_shapes(conf_loss, labels)
    _checks.same_device(("conf_loss", conf_loss), ("labels", labels))
    _checks.check_non_negative(neg_pos_ratio, "neg_pos_ratio")
    _checks.check_non_negative(min_negatives, "min_negatives")
    _checks.check_int32_rows(conf_loss.shape[1], "conf_loss", "priors per image")


@torch.library.register_fake("ssd_ext::hard_negative_mining")
def _hard_negative_mining_fake(conf_loss: Tensor, labels: Tensor, neg_pos_ratio: int,
                               min_negatives: int) -> Tensor:
    _check_mining_args(conf_loss, labels, neg_pos_ratio, min_negatives)
    return conf_loss.new_empty(conf_loss.shape, dtype=torch.bool)
