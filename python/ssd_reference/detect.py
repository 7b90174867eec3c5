"""Reference SSD detection post-processing, in plain PyTorch with Python loops.

For each image of the batch:
1. scores = softmax(conf_logits) over the C classes, in float32 at least (float64 stays
   float64); boxes = decode(loc, priors, variances) (xyxy, in the dtype of ``loc``), clamped
   to [0, 1] (a NaN coordinate stays NaN and then overlaps nothing).
2. For every object class c in 1..C-1: the priors whose class-c score is ``> score_threshold``
   (NaN scores never pass), the first ``candidates_per_class`` of them by decreasing score
   (ties: lower prior index first), then ``nms`` over them with ``iou_threshold``.
3. The kept detections of all classes, sorted by decreasing score, ties broken by lower class,
   then lower prior index; the first ``max_detections`` of them.
Returns one dict per image: ``boxes [K, 4]`` (dtype of ``loc``), ``scores [K]`` (dtype of
``conf_logits``), ``labels [K]`` int64 in 1..C-1.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .box_coding import decode
from .box_iou import _math_dtype
from .nms import nms


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
    """SSD post-processing of ``loc [B, P, 4]`` and ``conf_logits [B, P, C]`` against
    ``priors [P, 4]`` (cxcywh); see the module docstring."""
    all_scores = torch.softmax(conf_logits.to(_math_dtype(conf_logits.dtype)), dim=-1)
    all_boxes = decode(loc, priors, variances).clamp(0.0, 1.0)
    results = []
    for image in range(loc.shape[0]):
        boxes = all_boxes[image]
        found_scores, found_labels, found_priors = [], [], []
        for label in range(1, conf_logits.shape[-1]):
            class_scores = all_scores[image, :, label]
            passing = torch.nonzero(class_scores > score_threshold).flatten()
            order = torch.sort(class_scores[passing], descending=True, stable=True).indices
            candidates = passing[order[:candidates_per_class]]
            kept = candidates[nms(boxes[candidates], class_scores[candidates], iou_threshold)]
            found_scores.append(class_scores[kept])
            found_labels.append(torch.full((len(kept),), label, dtype=torch.int64))
            found_priors.append(kept)
        scores = torch.cat(found_scores) if found_scores else all_scores.new_zeros(0)
        labels = torch.cat(found_labels) if found_labels else torch.zeros(0, dtype=torch.int64)
        prior_index = torch.cat(found_priors) if found_priors else torch.zeros(0, dtype=torch.int64)
        # Within a class the kept boxes already run by (score desc, prior asc), and the classes
        # were appended in increasing order: a stable sort by score gives the tie rule.
        order = torch.sort(scores, descending=True, stable=True).indices[:max_detections]
        results.append({
            "boxes": boxes[prior_index[order]],
            "scores": scores[order].to(conf_logits.dtype),
            "labels": labels[order],
        })
    return results
