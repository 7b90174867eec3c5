"""The deployable detector: 8-bit pictures in, padded detections out, one ``nn.Module``.

:class:`DeployableSSD` is what every export format holds (ONNX, ``torch.export``,
AOTInductor): the normalisation, the network and :func:`ssd_ext.ops.detect_padded`, with
boxes scaled to input pixels. Its contract is the exported graph's:

- input ``images``: uint8 ``[B, 3, H, W]`` RGB at the model's input size ``(H, W)``;
- outputs ``boxes`` float32 ``[B, K, 4]`` xyxy in input pixels (x in [0, W], y in [0, H]),
  ``scores`` float32 ``[B, K]`` (decreasing), ``labels`` int64 ``[B, K]`` (1..C-1) and
  ``num_detections`` int64 ``[B]``, ``K = max_detections``; rows ``k >= num_detections[b]``
  are zeros (label 0 too).
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .. import ops
from .errors import ExportError

__all__ = ["OUTPUT_NAMES", "DeployOptions", "DeployableSSD", "deployable", "load_detector"]

OUTPUT_NAMES = ("boxes", "scores", "labels", "num_detections")

# For a checkpoint (no Detector to take them from): what evaluation uses, so that one exported
# file serves both AP measurement and display (a runtime filters to its own, higher threshold).
DEFAULT_SCORE_THRESHOLD = 0.01
DEFAULT_IOU_THRESHOLD = 0.45
DEFAULT_MAX_DETECTIONS = 100


@dataclass
class DeployOptions:
    """Post-processing settings baked into an exported graph; ``None`` takes the Detector's
    value, or for a checkpoint 0.01 / 0.45 / 100."""

    score_threshold: float | None = None
    iou_threshold: float | None = None
    max_detections: int | None = None
    candidates_per_class: int = 400
    fp16: bool = False
    """Run the network in float16 (the post-processing stays float32); for GPU runtimes."""


def load_detector(source: Any) -> Any:
    """``source`` as an ``ssd_ext.engine.inference.Detector``: itself, or the detector of a
    checkpoint path or dict (:class:`~ssd_ext.engine.checkpoint.CheckpointError` when it is
    not one)."""
    from ..engine.inference import Detector

    if isinstance(source, Detector) or all(hasattr(source, name) for name in
                                           ("model", "class_names", "image_size", "mean", "std")):
        return source
    if isinstance(source, (str, os.PathLike, dict)):
        return Detector.from_checkpoint(source, device="cpu", score_threshold=DEFAULT_SCORE_THRESHOLD,
                                        iou_threshold=DEFAULT_IOU_THRESHOLD,
                                        max_detections=DEFAULT_MAX_DETECTIONS)
    raise TypeError(f"detector_or_checkpoint must be a Detector, a checkpoint path or a checkpoint dict, "
                    f"got {type(source).__name__}")


def _settings(detector: Any, options: DeployOptions) -> tuple[float, float, int, int]:
    def pick(value: Any, name: str) -> Any:
        return value if value is not None else getattr(detector, name)

    try:
        score = ops.threshold_value(pick(options.score_threshold, "score_threshold"), "score_threshold")
        iou = ops.threshold_value(pick(options.iou_threshold, "iou_threshold"), "iou_threshold")
        maximum = ops.count_value(pick(options.max_detections, "max_detections"), "max_detections")
        candidates = ops.count_value(options.candidates_per_class, "candidates_per_class")
    except (TypeError, ValueError) as error:
        raise ExportError(str(error)) from None
    if maximum < 1 or candidates < 1:
        raise ExportError(f"max_detections and candidates_per_class must be >= 1, got {maximum} and "
                          f"{candidates}")
    return score, iou, maximum, candidates


class DeployableSSD(nn.Module):
    """Normalisation + SSD + post-processing (see the module docstring for the contract).

    Args:
        model: the SSD (``forward(normalised) -> (loc, conf_logits)``, ``priors``,
            ``variances``); used as given (build one with :func:`deployable`).
        image_size: ``(H, W)`` the model takes.
        mean, std: RGB on the [0, 1] scale; the graph computes ``(x / 255 - mean) / std``
            in float32, the order of :class:`ssd_ext.data.Normalize`'s table.
        settings: ``(score_threshold, iou_threshold, max_detections, candidates_per_class)``.
        fp16: feed the network float16 (its weights must be float16 already).
    """

    def __init__(self, model: nn.Module, image_size: tuple[int, int], mean: Any, std: Any,
                 settings: tuple[float, float, int, int], fp16: bool = False) -> None:
        super().__init__()
        self.model = model
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.score_threshold, self.iou_threshold, self.max_detections, self.candidates_per_class = settings
        self.fp16 = bool(fp16)
        self.variances = tuple(float(v) for v in model.variances)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        height, width = self.image_size
        self.register_buffer("pixel_scale", torch.tensor([width, height, width, height], dtype=torch.float32))
        self.register_buffer("priors", model.priors.detach().to(torch.float32).clone())

    def check_images(self, images: object) -> None:
        """TypeError/ValueError unless ``images`` is uint8 ``[B, 3, H, W]`` at the input size."""
        if not isinstance(images, Tensor) or images.dtype != torch.uint8:
            what = images.dtype if isinstance(images, Tensor) else type(images).__name__
            raise TypeError(f"images must be a uint8 tensor [B, 3, H, W] (RGB), got {what}")
        if images.dim() != 4 or images.shape[1] != 3 or tuple(images.shape[2:]) != self.image_size:
            height, width = self.image_size
            raise ValueError(f"images must be [B, 3, {height}, {width}] (the model's input size), got shape "
                             f"{tuple(images.shape)}")

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``images`` uint8 ``[B, 3, H, W]`` -> ``(boxes, scores, labels, num_detections)``."""
        self.check_images(images)
        normalised = (images.to(torch.float32) / 255.0 - self.mean) / self.std
        if self.fp16:
            normalised = normalised.to(torch.float16)
        loc, conf_logits = self.model(normalised)
        boxes, scores, labels, counts = ops.detect_padded(
            loc.to(torch.float32), conf_logits.to(torch.float32), self.priors,
            score_threshold=self.score_threshold, iou_threshold=self.iou_threshold,
            candidates_per_class=self.candidates_per_class, max_detections=self.max_detections,
            variances=self.variances,
        )
        return boxes * self.pixel_scale, scores, labels.clamp_min(0), counts


def deployable(source: Any, options: DeployOptions | None = None) -> tuple[DeployableSSD, Any]:
    """``(DeployableSSD on the CPU in eval mode, the Detector it came from)`` for a Detector,
    a checkpoint path or a checkpoint dict. The Detector's model is copied, never changed."""
    options = options or DeployOptions()
    detector = load_detector(source)
    settings = _settings(detector, options)
    model = copy.deepcopy(detector.model).to("cpu").eval()
    if options.fp16:
        model = model.half()
    module = DeployableSSD(model, tuple(detector.image_size), detector.mean, detector.std, settings,
                           fp16=options.fp16)
    return module.eval(), detector
