"""Reference SSD matching, hard negative mining and MultiBox loss, in plain PyTorch.

Semantics (the contract the kernels are held to):

match, per image:
1. IoU between the ground truths (xyxy) and the priors (cxcywh, converted to xyxy), in
   float32 at least (float64 stays float64).
2. Each prior takes its best-IoU ground truth; ties go to the lower ground-truth index.
3. Greedy bipartite pass: repeatedly take the highest IoU among (ground truths not yet
   given a prior) x (priors not yet forced), ties to the lower ground-truth index, then the
   lower prior index; force that prior to that ground truth. Stop when that IoU is 0, so
   every ground truth that overlaps some prior gets its own prior (two ground truths sharing
   the same best prior both keep one).
4. Forced priors are positive whatever their IoU; the others are positive when their best
   IoU >= iou_threshold (inclusive; compared in the IoU's dtype).
5. Positives get the ground truth's label and ``encode(gt box, prior)``; the rest label 0
   and loc target 0. An image without ground truth is all background.

hard_negative_mining, per image: positives are labels > 0, negatives labels == 0 (labels
< 0 are neither: ignored). Keep every positive plus the
``k = min(max(neg_pos_ratio * num_pos, min_negatives), num_neg)`` negatives of highest
conf_loss, ties to the lower prior index. NaN rule: a NaN loss ranks above every number
(like ``torch.sort``), NaNs tie among themselves, and -0.0 ties with +0.0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .box_coding import cxcywh_to_xyxy, encode
from .box_iou import _math_dtype, box_iou


def _match_image(boxes: Tensor, labels: Tensor, priors: Tensor, iou_threshold: float,
                 variances: Sequence[float]) -> tuple[Tensor, Tensor]:
    num_priors = priors.shape[0]
    math_dtype = _math_dtype(torch.promote_types(boxes.dtype, priors.dtype))
    loc = torch.zeros(num_priors, 4, dtype=priors.dtype)
    prior_labels = torch.zeros(num_priors, dtype=torch.int64)
    if boxes.shape[0] == 0 or num_priors == 0:
        return loc, prior_labels
    boxes_m = boxes.to(math_dtype)
    priors_m = priors.to(math_dtype)
    iou = box_iou(boxes_m, cxcywh_to_xyxy(priors_m))  # [G, P]

    best_iou, _ = iou.max(dim=0)
    best_gt = iou.argmax(dim=0)  # argmax returns the first (lowest) index among ties

    num_gt = boxes.shape[0]
    forced = torch.zeros(num_priors, dtype=torch.bool)
    # IoU of the pairs still available: (ground truths without a prior) x (unforced priors);
    # taken pairs' rows and columns are set to -1. Priors that overlap no ground truth can
    # never be forced, so only the overlapping columns are kept (in increasing prior order,
    # which preserves the tie rule).
    columns = torch.nonzero((iou > 0).any(dim=0)).flatten()
    candidates = iou[:, columns].clone()
    for _ in range(num_gt):
        if columns.numel() == 0 or not candidates.max() > 0:
            break
        # Row-major flat argmax: the first maximum is the lowest gt, then the lowest prior.
        flat = int(candidates.flatten().argmax())
        gt_index, column = divmod(flat, columns.numel())
        prior_index = int(columns[column])
        forced[prior_index] = True
        best_gt[prior_index] = gt_index
        candidates[gt_index, :] = -1.0
        candidates[:, column] = -1.0

    positive = forced | (best_iou >= iou_threshold)
    matched_boxes = boxes_m[best_gt]
    targets = encode(matched_boxes, priors_m, variances).to(priors.dtype)
    loc[positive] = targets[positive]
    prior_labels[positive] = labels[best_gt][positive].to(torch.int64)
    return loc, prior_labels


def match(
    gt_boxes: Sequence[Tensor],
    gt_labels: Sequence[Tensor],
    priors: Tensor,
    iou_threshold: float = 0.5,
    variances: Sequence[float] = (0.1, 0.2),
) -> tuple[Tensor, Tensor]:
    """Match a batch of ground truth to the priors and encode the targets.

    Args:
        gt_boxes: B tensors ``[G_i, 4]`` xyxy (G_i may be 0).
        gt_labels: B tensors ``[G_i]`` of class labels (1..C-1).
        priors: ``[P, 4]`` cxcywh.

    Returns:
        ``loc_targets [B, P, 4]`` (priors' dtype) and ``labels [B, P]`` int64, on priors' device.
    """
    device = priors.device
    priors_cpu = priors.cpu()
    locs, labels = [], []
    for boxes, image_labels in zip(gt_boxes, gt_labels, strict=True):
        loc, lab = _match_image(boxes.cpu(), image_labels.cpu(), priors_cpu, iou_threshold, variances)
        locs.append(loc)
        labels.append(lab)
    num_priors = priors.shape[0]
    if not locs:
        return (torch.zeros(0, num_priors, 4, dtype=priors.dtype, device=device),
                torch.zeros(0, num_priors, dtype=torch.int64, device=device))
    return torch.stack(locs).to(device), torch.stack(labels).to(device)


def hard_negative_mining(
    conf_loss: Tensor,
    labels: Tensor,
    neg_pos_ratio: int = 3,
    min_negatives: int = 0,
) -> Tensor:
    """bool ``[B, P]``: positives plus each image's hardest negatives (see module docstring)."""
    keep = labels > 0
    for b in range(conf_loss.shape[0]):
        num_pos = int((labels[b] > 0).sum())
        negative_index = torch.nonzero(labels[b] == 0).flatten()
        k = min(max(neg_pos_ratio * num_pos, min_negatives), negative_index.numel())
        if k == 0:
            continue
        # A stable descending sort keeps equal losses in index order; NaN sorts first.
        losses = conf_loss[b, negative_index].to(_math_dtype(conf_loss.dtype))
        order = torch.sort(losses, descending=True, stable=True).indices
        keep[b, negative_index[order[:k]]] = True
    return keep


def multibox_loss(
    loc: Tensor,
    conf_logits: Tensor,
    gt_boxes: Sequence[Tensor],
    gt_labels: Sequence[Tensor],
    priors: Tensor,
    iou_threshold: float = 0.5,
    neg_pos_ratio: int = 3,
    min_negatives: int = 0,
    variances: Sequence[float] = (0.1, 0.2),
) -> tuple[Tensor, Tensor]:
    """SSD MultiBox loss: ``(loc_loss, conf_loss)``, both divided by max(1, positives in batch).

    loc_loss: Smooth-L1 (beta 1, summed) between ``loc [B, P, 4]`` and the encoded targets of
    the positive priors. conf_loss: softmax cross-entropy (summed) of ``conf_logits [B, P, C]``
    over the positives and the negatives mined on the background cross-entropy
    ``-log_softmax(conf_logits)[..., 0]`` (detached). Computed in float32 (float64 stays).
    """
    math_dtype = _math_dtype(torch.promote_types(loc.dtype, conf_logits.dtype))
    loc = loc.to(math_dtype)
    conf_logits = conf_logits.to(math_dtype)
    loc_targets, labels = match(gt_boxes, gt_labels, priors.to(math_dtype), iou_threshold, variances)
    positive = labels > 0
    num_positives = positive.sum()
    loc_loss = F.smooth_l1_loss(loc[positive], loc_targets[positive], beta=1.0, reduction="sum")
    log_probs = F.log_softmax(conf_logits, dim=-1)
    background_loss = -log_probs[..., 0].detach()
    keep = hard_negative_mining(background_loss, labels, neg_pos_ratio, min_negatives)
    conf_loss = F.nll_loss(log_probs[keep], labels[keep], reduction="sum")
    normaliser = num_positives.clamp(min=1).to(math_dtype)
    return loc_loss / normaliser, conf_loss / normaliser
