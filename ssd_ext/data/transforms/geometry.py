"""Geometry on the lazy image: the paper's zoom out, min-IoU crop and flip, and the resize.

Boxes are float32 ``[G, 4]`` xyxy in pixels of the current image (continuous coordinates);
each step moves them exactly as it moves the pixels. Expand, crop and flip only change where
the source sits on the :class:`LazyImage`'s canvas (integer offsets, so the geometry is exact
index arithmetic); :class:`Resize` computes the pixels, once. Each random step's decision is
made by its ``draw`` method, which the float reference calls too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from .draws import RandomSource, random_float, random_int, random_uniform
from .lazy_image import LazyImage, as_lazy
from .step import IMAGENET_MEAN, Sample, Transform

__all__ = [
    "CROP_MIN_IOUS", "Expand", "MinIoURandomCrop", "Placement", "RandomHorizontalFlip", "Resize",
    "iou_with_rect", "sample_min_iou_crop",
]

# The paper's crop options: ``None`` keeps the whole image, a float is the minimum IoU that
# SOME ground-truth box must have with the crop, ``0.0`` is "any patch" (no IoU constraint).
CROP_MIN_IOUS: tuple[float | None, ...] = (None, 0.1, 0.3, 0.5, 0.7, 0.9, 0.0)


class Placement(NamedTuple):
    """Where :class:`Expand` puts the image: a ``height x width`` canvas with the image's
    top-left pixel at row ``top``, column ``left``."""

    height: int
    width: int
    top: int
    left: int


class Expand(Transform):
    """Zoom out: with probability ``p`` place the image at a random spot of a canvas up to
    ``max_ratio`` times larger per side, filled with ``fill`` (the mean pixel, in [0, 255])."""

    def __init__(self, fill: Sequence[float] = tuple(255.0 * m for m in IMAGENET_MEAN),
                 max_ratio: float = 4.0, p: float = 0.5) -> None:
        if max_ratio < 1:
            raise ValueError(f"max_ratio must be >= 1, got {max_ratio}")
        self.fill = tuple(float(v) for v in fill)
        self.max_ratio = max_ratio
        self.p = p

    def draw(self, generator: RandomSource, height: int, width: int) -> Placement | None:
        """The placement of a ``height x width`` image, or None when no zoom out is drawn."""
        if random_float(generator) >= self.p:
            return None
        ratio = random_uniform(generator, 1.0, self.max_ratio)
        new_h, new_w = int(height * ratio), int(width * ratio)
        top = random_int(generator, new_h - height)
        left = random_int(generator, new_w - width)
        return Placement(new_h, new_w, top, left)

    def apply(self, image: np.ndarray | LazyImage, boxes: torch.Tensor, labels: torch.Tensor,
              generator: RandomSource = None) -> Sample:
        height, width, _ = image.shape
        placement = self.draw(generator, height, width)
        if placement is None:
            return image, boxes, labels
        new_h, new_w, top, left = placement
        shift = torch.tensor([left, top, left, top], dtype=boxes.dtype)
        return as_lazy(image).expanded(new_h, new_w, top, left, self.fill), boxes + shift, labels

    def __repr__(self) -> str:
        return f"{type(self).__name__}(fill={self.fill}, max_ratio={self.max_ratio}, p={self.p})"


def iou_with_rect(boxes: torch.Tensor | np.ndarray, rect: Sequence[float]) -> np.ndarray:
    """IoU ``[G]`` (float64) of each of ``boxes`` (``[G, 4]``) with the rectangle ``rect``."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x1, y1, x2, y2 = (float(v) for v in rect)
    iw = np.minimum(boxes[:, 2], x2) - np.maximum(boxes[:, 0], x1)
    ih = np.minimum(boxes[:, 3], y2) - np.maximum(boxes[:, 1], y1)
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    union = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) + (x2 - x1) * (y2 - y1) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _max_iou_with_rect(boxes: list[tuple[float, float, float, float, float]],
                       rect: tuple[int, int, int, int]) -> float:
    """The largest IoU of ``(x1, y1, x2, y2, area)`` boxes with ``rect``, as :func:`iou_with_rect`."""
    rx1, ry1, rx2, ry2 = rect
    rect_area = (rx2 - rx1) * (ry2 - ry1)
    best = 0.0
    for x1, y1, x2, y2, area in boxes:
        inter = max(min(x2, rx2) - max(x1, rx1), 0.0) * max(min(y2, ry2) - max(y1, ry1), 0.0)
        union = area + rect_area - inter
        if union > 0:
            best = max(best, inter / union)
    return best


def sample_min_iou_crop(
    boxes: torch.Tensor, width: int, height: int, generator: RandomSource = None,
    min_ious: Sequence[float | None] = CROP_MIN_IOUS, min_scale: float = 0.3,
    aspect_range: tuple[float, float] = (0.5, 2.0), max_trials: int = 50,
) -> tuple[float | None, tuple[int, int, int, int] | None, torch.Tensor | None]:
    """Draw the paper's min-IoU crop for ``boxes`` (``[G, 4]`` pixels) in a ``width x height`` image.

    Picks one of ``min_ious`` uniformly. ``None`` means keep the whole image; otherwise up to
    ``max_trials`` integer rectangles are drawn with sides in ``[min_scale, 1]`` of the image's
    and height/width in ``aspect_range``; a rectangle is accepted when SOME box has IoU >= the
    chosen minimum with it (not all boxes, as ssd.pytorch requires by mistake) and at least one
    box centre lies strictly inside it. Returns ``(min_iou, rect or None, keep mask or None)``;
    ``rect`` is ``(x1, y1, x2, y2)`` and is ``None`` when the whole image is kept (chosen, no
    boxes to constrain the crop, or every trial failed).
    """
    choice = min_ious[random_int(generator, len(min_ious) - 1)]
    if choice is None or boxes.shape[0] == 0:
        return choice, None, None
    boxes_np = boxes.detach().cpu().numpy().astype(np.float64)
    cx = (boxes_np[:, 0] + boxes_np[:, 2]) / 2
    cy = (boxes_np[:, 1] + boxes_np[:, 3]) / 2
    # Plain floats: for the few boxes of an image, numpy's per-call cost dominates the trials.
    box_list = [(x1, y1, x2, y2, (x2 - x1) * (y2 - y1)) for x1, y1, x2, y2 in boxes_np.tolist()]
    for _ in range(max_trials):
        crop_w = random_uniform(generator, min_scale * width, width)
        crop_h = random_uniform(generator, min_scale * height, height)
        if not aspect_range[0] <= crop_h / crop_w <= aspect_range[1]:
            continue
        crop_w_int = max(1, min(width, int(crop_w)))
        crop_h_int = max(1, min(height, int(crop_h)))
        left = random_int(generator, width - crop_w_int)
        top = random_int(generator, height - crop_h_int)
        rect = (left, top, left + crop_w_int, top + crop_h_int)
        if _max_iou_with_rect(box_list, rect) < choice:
            continue
        keep = (cx > rect[0]) & (cx < rect[2]) & (cy > rect[1]) & (cy < rect[3])
        if not keep.any():
            continue
        return choice, rect, torch.from_numpy(keep)
    return choice, None, None


class MinIoURandomCrop(Transform):
    """The paper's random crop (see :func:`sample_min_iou_crop`): keep the boxes whose centre
    lies inside the crop, clipped to it, in the crop's pixel coordinates."""

    def __init__(self, min_ious: Sequence[float | None] = CROP_MIN_IOUS, min_scale: float = 0.3,
                 aspect_range: tuple[float, float] = (0.5, 2.0), max_trials: int = 50) -> None:
        self.min_ious = tuple(min_ious)
        self.min_scale = min_scale
        self.aspect_range = aspect_range
        self.max_trials = max_trials

    def draw(self, generator: RandomSource, boxes: torch.Tensor, width: int, height: int
             ) -> tuple[tuple[int, int, int, int], torch.Tensor] | None:
        """``(rect (x1, y1, x2, y2), keep [G] bool)`` of the crop, or None to keep the image."""
        _, rect, keep = sample_min_iou_crop(boxes, width, height, generator, self.min_ious,
                                            self.min_scale, self.aspect_range, self.max_trials)
        return None if rect is None else (rect, keep)

    def apply(self, image: np.ndarray | LazyImage, boxes: torch.Tensor, labels: torch.Tensor,
              generator: RandomSource = None) -> Sample:
        height, width, _ = image.shape
        crop = self.draw(generator, boxes, width, height)
        if crop is None:
            return image, boxes, labels
        (x1, y1, x2, y2), keep = crop
        boxes = boxes[keep]
        offset = boxes.new_tensor([x1, y1, x1, y1])
        boxes = torch.stack([
            boxes[:, 0].clamp(min=x1), boxes[:, 1].clamp(min=y1),
            boxes[:, 2].clamp(max=x2), boxes[:, 3].clamp(max=y2),
        ], dim=1) - offset
        return as_lazy(image).cropped(x1, y1, x2, y2), boxes, labels[keep]

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(min_ious={self.min_ious}, min_scale={self.min_scale}, "
                f"aspect_range={self.aspect_range}, max_trials={self.max_trials})")


class RandomHorizontalFlip(Transform):
    """Mirror the image left-right with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def draw(self, generator: RandomSource) -> bool:
        """Whether to flip (one draw)."""
        return random_float(generator) < self.p

    def apply(self, image: np.ndarray | LazyImage, boxes: torch.Tensor, labels: torch.Tensor,
              generator: RandomSource = None) -> Sample:
        if not self.draw(generator):
            return image, boxes, labels
        width = image.shape[1]
        flipped = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)
        return as_lazy(image).flipped(), flipped, labels

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p})"


class Resize(Transform):
    """Resize to ``size`` (an int for a square image, or ``(height, width)``) with PIL's
    bilinear filter (antialiased when shrinking) on uint8 RGB, scaling the boxes alike. The
    pixels are computed here, once, from the visible source (:meth:`LazyImage.resized`)."""

    def __init__(self, size: int | tuple[int, int]) -> None:
        self.size = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        if min(self.size) < 1:
            raise ValueError(f"size must be positive, got {size}")

    def apply(self, image: np.ndarray | LazyImage, boxes: torch.Tensor, labels: torch.Tensor,
              generator: RandomSource = None) -> Sample:
        height, width, _ = image.shape
        new_h, new_w = self.size
        scale = boxes.new_tensor([new_w / width, new_h / height, new_w / width, new_h / height])
        return LazyImage(as_lazy(image).resized(new_h, new_w)), boxes * scale, labels

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size})"
