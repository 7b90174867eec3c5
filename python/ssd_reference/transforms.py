"""Plain float reference of ``ssd_ext.data.transforms``: the oracle of its property tests.

Every step computes eagerly on a float32 numpy image ``[H, W, 3]`` of RGB values in [0, 255]
(no uint8 rounding anywhere, the whole expanded canvas built, the HSV image built), with
boxes as float32 ``[G, 4]`` pixel tensors and labels as any tensor with first dimension ``G``.
The random decisions come from the production steps' own ``draw`` methods
(``PhotometricDistort.draw``, ``Expand.draw``, ``MinIoURandomCrop.draw``,
``RandomHorizontalFlip.draw``), called in the production order, so for the same generator
the reference pipeline makes the same draws: identical boxes and labels, pixels equal to the
production (lazy uint8) path's up to uint8 rounding (the colour maps rounded once, PIL's 8-bit
resample, the fill rounded to integers).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from ssd_ext.data.images import to_rgb_array
from ssd_ext.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Augmentation,
    Distortion,
    Expand,
    LazyImage,
    MinIoURandomCrop,
    PhotometricDistort,
    Placement,
    RandomHorizontalFlip,
    hsv_to_rgb,
    rgb_to_hsv,
)

__all__ = [
    "crop", "distort_colours", "eval_transform", "expand", "flip", "normalize", "resize", "to_float_image",
    "train_transform",
]

Sample = tuple[Any, torch.Tensor, torch.Tensor]


def to_float_image(image: Any) -> np.ndarray:
    """A PIL image, uint8 array ``[H, W, 3]``, tensor ``[3, H, W]`` or LazyImage -> float32
    ``[H, W, 3]`` in [0, 255]."""
    if isinstance(image, LazyImage):
        image = image.to_array()
    return np.ascontiguousarray(to_rgb_array(image), dtype=np.float32)


def distort_colours(image: np.ndarray, distortion: Distortion) -> np.ndarray:
    """Caffe's photometric distortion with the drawn parameters, through the HSV image:
    brightness added, contrast multiplied (before or after the HSV steps), saturation
    multiplied (at most 1) and hue turned in HSV, channels permuted; clipped to [0, 255]
    after each step."""
    out = image.astype(np.float32, copy=True)
    if distortion.brightness is not None:
        out = np.clip(out + np.float32(distortion.brightness), 0, 255)

    def contrast(pixels: np.ndarray) -> np.ndarray:
        if distortion.contrast is None:
            return pixels
        return np.clip(pixels * np.float32(distortion.contrast), 0, 255)

    def saturation_hue(pixels: np.ndarray) -> np.ndarray:
        if distortion.saturation is None and distortion.hue is None:
            return pixels
        hsv = rgb_to_hsv(pixels / np.float32(255.0))
        if distortion.saturation is not None:
            hsv[..., 1] = np.clip(hsv[..., 1] * np.float32(distortion.saturation), 0, 1)
        if distortion.hue is not None:
            hsv[..., 0] = (hsv[..., 0] + np.float32(distortion.hue / 360.0)) % 1.0
        return np.clip(hsv_to_rgb(hsv) * np.float32(255.0), 0, 255)

    if distortion.contrast_first:
        out = saturation_hue(contrast(out))
    else:
        out = contrast(saturation_hue(out))
    if distortion.permutation is not None:
        out = out[..., distortion.permutation]
    return out.astype(np.float32, copy=False)


def expand(image: np.ndarray, boxes: torch.Tensor, placement: Placement,
           fill: Sequence[float]) -> tuple[np.ndarray, torch.Tensor]:
    """The image pasted at ``(placement.top, placement.left)`` of a canvas of ``fill``."""
    height, width, _ = image.shape
    canvas = np.empty((placement.height, placement.width, 3), dtype=np.float32)
    canvas[...] = np.asarray(fill, dtype=np.float32)
    canvas[placement.top:placement.top + height, placement.left:placement.left + width] = image
    shift = torch.tensor([placement.left, placement.top, placement.left, placement.top], dtype=boxes.dtype)
    return canvas, boxes + shift


def crop(image: np.ndarray, boxes: torch.Tensor, labels: torch.Tensor, rect: tuple[int, int, int, int],
         keep: torch.Tensor) -> Sample:
    """The rectangle ``rect`` = ``(x1, y1, x2, y2)``; the ``keep`` boxes clipped to it, in its pixels."""
    x1, y1, x2, y2 = rect
    kept = boxes[keep]
    clipped = torch.stack([kept[:, 0].clamp(min=x1), kept[:, 1].clamp(min=y1),
                           kept[:, 2].clamp(max=x2), kept[:, 3].clamp(max=y2)], dim=1)
    return image[y1:y2, x1:x2], clipped - kept.new_tensor([x1, y1, x1, y1]), labels[keep]


def flip(image: np.ndarray, boxes: torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
    """Mirrored left-right."""
    width = image.shape[1]
    flipped = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)
    return image[:, ::-1], flipped


def resize(image: np.ndarray, boxes: torch.Tensor, size: tuple[int, int]) -> tuple[np.ndarray, torch.Tensor]:
    """Each float channel resized to ``size`` = ``(height, width)`` with PIL's bilinear filter
    (antialiased when shrinking); boxes scaled alike."""
    height, width, _ = image.shape
    new_h, new_w = size
    scale = boxes.new_tensor([new_w / width, new_h / height, new_w / width, new_h / height])
    if (height, width) != (new_h, new_w):
        image = np.stack([
            np.asarray(Image.fromarray(np.ascontiguousarray(image[..., c]), mode="F")
                       .resize((new_w, new_h), Image.Resampling.BILINEAR))
            for c in range(3)
        ], axis=-1)
    return image, boxes * scale


def normalize(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(image / 255 - mean) / std`` per channel, as a float32 tensor ``[3, H, W]``."""
    mean_255 = np.asarray(mean, dtype=np.float32) * np.float32(255.0)
    std_255 = np.asarray(std, dtype=np.float32) * np.float32(255.0)
    return torch.from_numpy(np.ascontiguousarray(((image - mean_255) / std_255).transpose(2, 0, 1)))


def _size_pair(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def train_transform(size: int | tuple[int, int], mean: Sequence[float] = IMAGENET_MEAN,
                    std: Sequence[float] = IMAGENET_STD,
                    augmentation: Augmentation | None = None) -> Callable[..., Sample]:
    """The reference of ``ssd_ext.data.train_transform(size, mean, std, augmentation)``:
    ``f(image, boxes, labels, generator=None) -> (tensor [3, H, W], boxes, labels)``."""
    augmentation = Augmentation() if augmentation is None else augmentation
    distort = PhotometricDistort()
    fill = tuple(255.0 * m for m in mean)
    zoom_out = Expand(fill=fill, max_ratio=augmentation.expand_max_ratio, p=augmentation.expand_p)
    min_iou_crop, mirror = MinIoURandomCrop(), RandomHorizontalFlip()

    def pipeline(image: Any, boxes: Any, labels: Any, generator: Any = None) -> Sample:
        image = to_float_image(image)
        boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        labels = torch.as_tensor(labels)
        if augmentation.photometric:
            image = distort_colours(image, distort.draw(generator))
        if augmentation.expand:
            placement = zoom_out.draw(generator, image.shape[0], image.shape[1])
            if placement is not None:
                image, boxes = expand(image, boxes, placement, fill)
        if augmentation.crop:
            drawn = min_iou_crop.draw(generator, boxes, image.shape[1], image.shape[0])
            if drawn is not None:
                image, boxes, labels = crop(image, boxes, labels, *drawn)
        if augmentation.flip and mirror.draw(generator):
            image, boxes = flip(image, boxes)
        image, boxes = resize(image, boxes, _size_pair(size))
        return normalize(image, mean, std), boxes, labels

    return pipeline


def eval_transform(size: int | tuple[int, int], mean: Sequence[float] = IMAGENET_MEAN,
                   std: Sequence[float] = IMAGENET_STD) -> Callable[..., Sample]:
    """The reference of ``ssd_ext.data.eval_transform``: resize, normalise, to tensor."""

    def pipeline(image: Any, boxes: Any, labels: Any, generator: Any = None) -> Sample:
        pixels = to_float_image(image)
        boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        pixels, boxes = resize(pixels, boxes, _size_pair(size))
        return normalize(pixels, mean, std), boxes, torch.as_tensor(labels)

    return pipeline
