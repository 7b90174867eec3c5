"""SSD MultiBox loss on top of the fused ``match`` and ``hard_negative_mining`` ops."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import ops

__all__ = ["MultiBoxLoss"]


class MultiBoxLoss(nn.Module):
    """Smooth-L1 localisation + softmax cross-entropy with hard negative mining.

    ``loc_loss``: Smooth-L1 (beta 1, summed) between the predicted offsets and the encoded
    targets of the positive priors. ``conf_loss``: cross-entropy (summed) over the positives
    and the mined negatives, which are ranked by their background cross-entropy
    ``-log_softmax(conf)[..., 0]``. Both are divided by ``max(1, positives in the batch)``, so
    a batch without objects gives a finite loss (made of the ``min_negatives`` negatives of
    each image, 0 when ``min_negatives`` is 0). Computed in float32 (float64 stays float64),
    also under autocast.

    Args:
        priors: ``[P, 4]`` cxcywh priors (registered as a buffer).
        num_classes: classes including background (VOC 21, COCO 81).
        iou_threshold: matching threshold (IoU >= it is positive).
        neg_pos_ratio: negatives kept per positive.
        min_negatives: negatives kept per image at least.
        variances: (centre, size) encoding variances.
    """

    priors: Tensor

    def __init__(
        self,
        priors: Tensor,
        num_classes: int,
        iou_threshold: float = 0.5,
        neg_pos_ratio: int = 3,
        min_negatives: int = 0,
        variances: Sequence[float] = (0.1, 0.2),
    ) -> None:
        super().__init__()
        if not isinstance(priors, Tensor) or priors.dim() != 2 or priors.shape[-1] != 4:
            raise ValueError(f"priors must be a [P, 4] tensor, got {getattr(priors, 'shape', priors)!r}")
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(
                f"num_classes must be an int >= 2 (it counts the background), got {num_classes!r}"
            )
        self.register_buffer("priors", priors.detach().clone())
        self.num_classes = num_classes
        self.iou_threshold = ops.threshold_value(iou_threshold, "iou_threshold")
        self.neg_pos_ratio = ops.count_value(neg_pos_ratio, "neg_pos_ratio")
        self.min_negatives = ops.count_value(min_negatives, "min_negatives")
        self.variances = ops.variance_pair(variances)

    def forward(
        self, loc: Tensor, conf_logits: Tensor, targets: Sequence[dict[str, Tensor]]
    ) -> dict[str, Tensor]:
        """Loss of a batch.

        Args:
            loc: ``[B, P, 4]`` predicted offsets.
            conf_logits: ``[B, P, C]`` class logits.
            targets: B dicts with ``"boxes"`` ``[G, 4]`` normalised xyxy and ``"labels"``
                ``[G]`` int64 (1..C-1).

        Returns:
            ``{"loss", "loc_loss", "conf_loss", "num_positives"}`` (scalars; ``loss`` is the sum).
        """
        num_priors = self.priors.shape[0]
        if loc.dim() != 3 or loc.shape[1:] != (num_priors, 4):
            raise ValueError(f"loc must have shape [B, {num_priors}, 4], got {tuple(loc.shape)}")
        if conf_logits.dim() != 3 or conf_logits.shape[1:] != (num_priors, self.num_classes):
            raise ValueError(
                f"conf_logits must have shape [B, {num_priors}, {self.num_classes}], "
                f"got {tuple(conf_logits.shape)}"
            )
        if conf_logits.shape[0] != loc.shape[0] or len(targets) != loc.shape[0]:
            raise ValueError(
                f"loc, conf_logits and targets must have the same batch size, got {loc.shape[0]}, "
                f"{conf_logits.shape[0]} and {len(targets)}"
            )
        math_dtype = torch.float64 if torch.float64 in (loc.dtype, conf_logits.dtype) else torch.float32
        device_type = loc.device.type
        with torch.autocast(device_type=device_type, enabled=False):
            loc = loc.to(math_dtype)
            conf_logits = conf_logits.to(math_dtype)
            priors = self.priors.to(device=loc.device, dtype=math_dtype)
            gt_boxes = [target["boxes"].to(device=loc.device, dtype=math_dtype) for target in targets]
            gt_labels = [target["labels"].to(device=loc.device) for target in targets]
            loc_targets, labels = ops.match(
                gt_boxes, gt_labels, priors, self.iou_threshold, self.variances,
                num_classes=self.num_classes,
            )
            # Masks instead of boolean indexing: no host sync, and the same graph every step.
            positive = labels > 0
            num_positives = positive.sum()
            loc_terms = F.smooth_l1_loss(loc, loc_targets, beta=1.0, reduction="none").sum(dim=-1)
            loc_loss = torch.where(positive, loc_terms, torch.zeros_like(loc_terms)).sum()
            log_probs = F.log_softmax(conf_logits, dim=-1)
            background_loss = -log_probs[..., 0].detach()
            keep = ops.hard_negative_mining(background_loss, labels, self.neg_pos_ratio, self.min_negatives)
            class_terms = -log_probs.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
            conf_loss = torch.where(keep, class_terms, torch.zeros_like(class_terms)).sum()
            normaliser = num_positives.clamp(min=1).to(math_dtype)
            loc_loss = loc_loss / normaliser
            conf_loss = conf_loss / normaliser
        return {
            "loss": loc_loss + conf_loss,
            "loc_loss": loc_loss,
            "conf_loss": conf_loss,
            "num_positives": num_positives,
        }
