"""Run a torchvision SSD's post-processing and loss on our fused ops.

``accelerate(model)`` takes torchvision's own ``SSD`` (``ssd300_vgg16``,
``ssdlite320_mobilenet_v3_large`` or one a user built) and replaces, on that instance only,
the two methods its ``forward`` calls after the heads:

- ``postprocess_detections``: softmax, decode, per-class score threshold, top-k and NMS, and
  the final top-k, as one :func:`ssd_ext.ops.detect` call for the whole batch (torchvision runs
  a Python loop over images and classes). Same thresholds, read from the model at each call
  (``score_thresh``, ``topk_candidates``, ``nms_thresh``, ``detections_per_img``), the same
  ``bbox_xform_clip`` on the size offsets, the same clipping to the image. Detections equal
  torchvision's except the order of exactly equal scores (ours: lower class, then lower prior).
- ``compute_loss``: matching, target encoding and hard negative mining through
  :class:`ssd_ext.engine.loss.MultiBoxLoss` (``ops.match`` + ``ops.hard_negative_mining``):
  Smooth-L1 over the positives and cross-entropy over positives and mined negatives, each
  divided by the batch's positives, returned under torchvision's keys ``bbox_regression`` and
  ``classification``. The IoU threshold is the model's ``SSDMatcher``'s, the negative ratio
  its ``neg_to_pos_ratio``, the variances its box coder's weights (10, 10, 5, 5 -> 0.1, 0.2).
  Where two ground truths claim the same prior, our matching follows docs/ARCHITECTURE.md
  "Matching" (every ground truth keeps a prior of its own) where torchvision's last writer
  wins; elsewhere the losses equal torchvision's.

torchvision's ``forward`` matches the targets before calling ``compute_loss``; since ours
matches inside it, the model's ``proposal_matcher`` is replaced by a stub that skips that work
(the IoU matrix torchvision computes for it remains). ``restore(model)`` puts everything back.
A scripted (``torch.jit``) model is not supported; the state dict is untouched.

torchvision is imported when these functions are called, never at import time.
"""

from __future__ import annotations

import math
import types
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .. import ops
from ..engine.loss import MultiBoxLoss

__all__ = ["accelerate", "is_accelerated", "restore"]

_STATE = "_ssd_ext_acceleration"


@dataclass(frozen=True)
class _Acceleration:
    """What ``accelerate`` changed on one model, and the settings its methods use."""

    variances: tuple[float, float]
    loss: bool
    iou_threshold: float
    neg_pos_ratio: int
    original_matcher: Any


class _MatchedInsideLoss:
    """Stands in for torchvision's ``SSDMatcher`` while accelerated: ``compute_loss`` matches
    on our op, so the per-image matching torchvision's ``forward`` does first is skipped."""

    def __init__(self, original: Any) -> None:
        self.original = original
        self.high_threshold = getattr(original, "high_threshold", None)
        self.low_threshold = getattr(original, "low_threshold", None)

    def __call__(self, match_quality_matrix: Tensor) -> Tensor:
        return match_quality_matrix.new_empty((0,), dtype=torch.int64)


def _torchvision_ssd_class() -> type:
    try:
        from torchvision.models.detection.ssd import SSD
    except ImportError as error:  # torchvision is optional
        raise ImportError("ssd_ext.integrations.torchvision needs torchvision (pip install torchvision)") \
            from error
    return SSD


def _check_model(model: object) -> None:
    ssd_class = _torchvision_ssd_class()
    if isinstance(model, torch.jit.ScriptModule):
        raise TypeError("model is a scripted (torch.jit) SSD; accelerate the eager model instead")
    if not isinstance(model, ssd_class):
        kind = type(model)
        raise TypeError(f"model must be a torchvision.models.detection.SSD (ssd300_vgg16, "
                        f"ssdlite320_mobilenet_v3_large, ...), got {kind.__module__}.{kind.__qualname__}")


def _variances(model: nn.Module) -> tuple[float, float]:
    """The box coder's weights (wx, wy, ww, wh) as our (centre, size) variances."""
    weights = tuple(float(w) for w in model.box_coder.weights)
    if (len(weights) != 4 or weights[0] != weights[1] or weights[2] != weights[3]
            or not all(math.isfinite(w) and w > 0 for w in weights)):
        raise ValueError(f"model.box_coder.weights must be (a, a, b, b) with a, b > 0 (torchvision's SSD: "
                         f"(10, 10, 5, 5)); got {model.box_coder.weights!r}")
    return (1.0 / weights[0], 1.0 / weights[2])


def _loss_settings(model: nn.Module) -> tuple[float, int] | str:
    """(IoU threshold, negatives per positive) when our loss reproduces the model's, else why not."""
    from torchvision.models.detection._utils import SSDMatcher

    matcher = model.proposal_matcher
    if type(matcher) is not SSDMatcher:
        return (f"its proposal_matcher is a {type(matcher).__qualname__}, not torchvision's SSDMatcher, "
                "whose rule ops.match reproduces")
    if not 0.0 < float(matcher.high_threshold) <= 1.0:
        return f"its matcher's threshold {matcher.high_threshold} is not in (0, 1]"
    ratio = float(model.neg_to_pos_ratio)
    if not ratio.is_integer() or ratio < 0:
        return (f"its neg_to_pos_ratio {ratio} (from positive_fraction) is not a whole number, which "
                "ops.hard_negative_mining needs")
    return float(matcher.high_threshold), int(ratio)


def accelerate(model: nn.Module) -> nn.Module:
    """Make a torchvision ``SSD``'s post-processing and loss run on ``ssd_ext.ops`` (in place).

    Returns ``model``. Calling it again does nothing. The loss is left to torchvision, with a
    warning saying why, when the model's matcher is not torchvision's ``SSDMatcher`` or its
    ``neg_to_pos_ratio`` is not a whole number; post-processing is accelerated in any case.

    Raises:
        TypeError: ``model`` is not a torchvision ``SSD`` (or is scripted).
        ValueError: its box coder's weights are not of the form (a, a, b, b).
        ImportError: torchvision is not installed.
    """
    _check_model(model)
    if is_accelerated(model):
        return model
    variances = _variances(model)
    settings = _loss_settings(model)
    if isinstance(settings, str):
        warnings.warn(f"accelerate: the loss stays torchvision's because {settings}; post-processing runs "
                      "on ssd_ext.ops.detect", stacklevel=2)
        state = _Acceleration(variances, False, 0.5, 3, None)
    else:
        state = _Acceleration(variances, True, settings[0], settings[1], model.proposal_matcher)
        model.compute_loss = types.MethodType(_fused_compute_loss, model)
        model.proposal_matcher = _MatchedInsideLoss(model.proposal_matcher)
    model.postprocess_detections = types.MethodType(_fused_postprocess_detections, model)
    object.__setattr__(model, _STATE, state)
    return model


def restore(model: nn.Module) -> nn.Module:
    """Undo :func:`accelerate` on ``model`` (torchvision's own methods and matcher again); returns it.
    A model that was not accelerated is returned unchanged."""
    _check_model(model)
    state = model.__dict__.pop(_STATE, None)
    if state is None:
        return model
    model.__dict__.pop("postprocess_detections", None)
    if state.loss:
        model.__dict__.pop("compute_loss", None)
        model.proposal_matcher = state.original_matcher
    return model


def is_accelerated(model: nn.Module) -> bool:
    """Whether :func:`accelerate` was applied to ``model`` (and not undone)."""
    return _STATE in getattr(model, "__dict__", {})


def _corner_to_center(boxes: Tensor) -> Tensor:
    """xyxy -> cxcywh, for torchvision's anchors (xyxy in pixels of the resized batch)."""
    return torch.cat([(boxes[:, :2] + boxes[:, 2:]) * 0.5, boxes[:, 2:] - boxes[:, :2]], dim=1)


def _shared_anchors(anchors: list[Tensor]) -> Tensor:
    """The one anchor set of a batch: torchvision's DefaultBoxGenerator gives every image the same."""
    first = anchors[0]
    for index, other in enumerate(anchors[1:], start=1):
        if other.shape != first.shape or not torch.equal(other, first):
            raise ValueError(f"accelerated SSD: anchors of image {index} differ from image 0's; the fused "
                             "ops take one prior set per batch (restore(model) for torchvision's own code)")
    return first


def _fused_postprocess_detections(self: nn.Module, head_outputs: dict[str, Tensor],
                                  image_anchors: list[Tensor],
                                  image_shapes: list[tuple[int, int]]) -> list[dict[str, Tensor]]:
    """torchvision ``SSD.postprocess_detections`` on :func:`ssd_ext.ops.detect` (one batched call)."""
    state: _Acceleration = getattr(self, _STATE)
    loc = head_outputs["bbox_regression"].float()
    conf = head_outputs["cls_logits"].float()
    if loc.shape[0] == 0:
        return []
    height, width = image_shapes[0]
    if any(tuple(shape) != (height, width) for shape in image_shapes):
        raise ValueError(f"accelerated SSD: images of one batch must share their resized size (torchvision's "
                         f"SSD resizes to a fixed size), got {list(image_shapes)}")
    scale = loc.new_tensor([width, height, width, height])
    priors = _corner_to_center(_shared_anchors(image_anchors).to(loc)) / scale
    # torchvision clamps the size offsets before exp (box_coder.bbox_xform_clip); so do we.
    size_limit = self.box_coder.bbox_xform_clip / state.variances[1]
    loc = torch.cat([loc[..., :2], loc[..., 2:].clamp(max=size_limit)], dim=-1)
    results = ops.detect(loc, conf, priors, score_threshold=float(self.score_thresh),
                         iou_threshold=float(self.nms_thresh), candidates_per_class=int(self.topk_candidates),
                         max_detections=int(self.detections_per_img), variances=state.variances)
    return [{"boxes": r["boxes"] * scale, "scores": r["scores"], "labels": r["labels"]} for r in results]


def _fused_compute_loss(self: nn.Module, targets: list[dict[str, Tensor]], head_outputs: dict[str, Tensor],
                        anchors: list[Tensor], matched_idxs: list[Tensor]) -> dict[str, Tensor]:
    """torchvision ``SSD.compute_loss`` on ``ops.match`` and ``ops.hard_negative_mining``.

    ``matched_idxs`` (torchvision's matching, skipped while accelerated) is not used. Boxes stay
    in the resized images' pixels: IoU and the box encoding do not depend on the scale.
    """
    state: _Acceleration = getattr(self, _STATE)
    loc, conf = head_outputs["bbox_regression"], head_outputs["cls_logits"]
    priors = _corner_to_center(_shared_anchors(anchors).to(device=loc.device, dtype=torch.float32))
    criterion = MultiBoxLoss(priors, int(conf.shape[-1]), iou_threshold=state.iou_threshold,
                             neg_pos_ratio=state.neg_pos_ratio, variances=state.variances)
    losses = criterion(loc, conf, targets)
    return {"bbox_regression": losses["loc_loss"], "classification": losses["conf_loss"]}
