"""The train and eval pipelines: :class:`Compose`, the first and last steps (:class:`ToLazyImage`,
:class:`Normalize`, :class:`ToTensor`), the :class:`Augmentation` switches and the presets
:func:`train_transform` / :func:`eval_transform`.

``train_transform(size, mean, std, augmentation)`` builds only the enabled steps, in the
paper's order: ToLazyImage, PhotometricDistort, Expand, MinIoURandomCrop,
RandomHorizontalFlip, Resize, Normalize, ToTensor; ``compose.transforms`` lists them. A step
that is off makes no draws; a step that is on always makes its draws (``expand_p=0`` still
draws its coin), so the draws of a given :class:`Augmentation` never depend on the picture's
pixels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..images import to_rgb_array
from .colour import PhotometricDistort
from .draws import RandomSource
from .geometry import Expand, MinIoURandomCrop, RandomHorizontalFlip, Resize
from .lazy_image import LazyImage, as_lazy
from .step import IMAGENET_MEAN, IMAGENET_STD, Sample, Transform, check_sample

__all__ = [
    "Augmentation", "Compose", "Normalize", "ToLazyImage", "ToTensor", "check_augmentation",
    "eval_transform", "train_transform",
]


class Compose:
    """Apply transforms in order, handing each the same ``generator``.

    The sample is checked once, before the first step that needs a checked one, and again
    only after a callable that is not a :class:`Transform` (whose output nothing vouches
    for). A :class:`LazyImage` left at the end is returned as its uint8 array."""

    def __init__(self, transforms: Sequence[Callable[..., Sample]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: Any, boxes: torch.Tensor, labels: torch.Tensor,
                 generator: RandomSource = None) -> Sample:
        checked = False
        for transform in self.transforms:
            if isinstance(transform, Transform) and not transform.converts_input:
                if not checked:
                    check_sample(image, boxes, labels)
                image, boxes, labels = transform.apply(image, boxes, labels, generator)
            else:
                image, boxes, labels = transform(image, boxes, labels, generator)
            checked = isinstance(transform, Transform) and transform.returns_sample
        if isinstance(image, LazyImage):
            image = image.to_array()
        return image, boxes, labels

    def __repr__(self) -> str:
        inner = "".join(f"\n    {t!r}," for t in self.transforms)
        return f"{type(self).__name__}([{inner}\n])"


def _rounded_to_uint8(array: np.ndarray) -> np.ndarray:
    """A real-valued array of 0..255 values rounded and clipped to uint8 (ValueError when a
    value is not finite)."""
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"image: numpy images must be [H, W, 3] RGB, got shape {array.shape}")
    values = array.astype(np.float32)
    if not np.isfinite(values).all():
        raise ValueError("image: numpy image has non-finite values")
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


class ToLazyImage(Transform):
    """A decoded picture -> :class:`LazyImage` (the first step of every pipeline).

    Takes what :func:`ssd_ext.data.images.to_rgb_array` takes, but no path: a PIL image, a
    uint8 array ``[H, W, 3]`` (not copied) or a tensor ``[3, H, W]`` of uint8 or floats in
    [0, 1]; also a numpy array ``[H, W, 3]`` of another real dtype holding 0..255 values
    (rounded and clipped to uint8). A LazyImage passes through. Also makes ``boxes`` a float32
    ``[G, 4]`` tensor and ``labels`` a tensor."""

    converts_input = True

    def __call__(self, image: Any, boxes: Any, labels: Any,
                 generator: RandomSource = None) -> Sample:
        if isinstance(image, (str, bytes)) or hasattr(image, "__fspath__"):
            raise TypeError("image must be a PIL image, numpy array or tensor (decoded pixels; read a "
                            f"file with ssd_ext.data.read_image), got {type(image).__name__}")
        if isinstance(image, np.ndarray) and image.dtype != np.uint8 and image.dtype.kind in "fiu":
            image = _rounded_to_uint8(image)
        lazy = image if isinstance(image, LazyImage) else LazyImage(to_rgb_array(image))
        boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        labels = torch.as_tensor(labels)
        check_sample(lazy, boxes, labels)
        return lazy, boxes, labels


class Normalize(Transform):
    """``(image / 255 - mean) / std`` per channel (ImageNet statistics by default) -> float32
    ``[H, W, 3]``, laid out channel-first in memory (a transposed view), so :class:`ToTensor`
    after it copies nothing."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        # (v - mean) / std for every uint8 value v, per channel: [3, 256].
        values = np.arange(256, dtype=np.float32) / np.float32(255.0)
        self._table = np.stack([(values - np.float32(m)) / np.float32(s)
                                for m, s in zip(self.mean, self.std, strict=True)])

    def apply(self, image: np.ndarray | LazyImage, boxes: torch.Tensor, labels: torch.Tensor,
              generator: RandomSource = None) -> Sample:
        pixels = as_lazy(image).to_array()
        planes = np.empty((3, *pixels.shape[:2]), dtype=np.float32)
        for channel in range(3):
            np.take(self._table[channel], pixels[..., channel], out=planes[channel])
        return planes.transpose(1, 2, 0), boxes, labels

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mean={self.mean}, std={self.std})"


class ToTensor(Transform):
    """float32 array ``[H, W, 3]`` (from :class:`Normalize`), or uint8 pixels as 0..255 ->
    float32 tensor ``[3, H, W]`` (the last step)."""

    returns_sample = False

    def __call__(self, image: Any, boxes: torch.Tensor, labels: torch.Tensor,
                 generator: RandomSource = None) -> Sample:
        if isinstance(image, np.ndarray) and image.dtype == np.float32 and image.ndim == 3:
            return self.apply(image, boxes, labels, generator)  # Normalize's output
        return super().__call__(image, boxes, labels, generator)

    def apply(self, image: np.ndarray | LazyImage, boxes: torch.Tensor, labels: torch.Tensor,
              generator: RandomSource = None) -> Sample:
        if isinstance(image, np.ndarray) and image.dtype == np.float32:
            return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))), boxes, labels
        pixels = as_lazy(image).to_array().transpose(2, 0, 1).astype(np.float32, order="C")
        return torch.from_numpy(pixels), boxes, labels


@dataclass
class Augmentation:
    """Which parts of the paper's training augmentation run (each on or off).

    ``Augmentation()`` is the paper's full recipe. Bad values raise when it is made (and
    again when a pipeline is built from it): ``TypeError`` for a switch that is not a bool,
    ``ValueError`` for ``expand_max_ratio < 1`` or ``expand_p`` outside [0, 1]; the message
    names the field."""

    photometric: bool = True
    """Caffe SSD's random brightness, contrast, saturation and hue distortion."""
    expand: bool = True
    """Zoom out: place the picture on a larger canvas filled with the mean colour."""
    expand_max_ratio: float = 4.0
    """Largest zoom-out factor per side (>= 1)."""
    expand_p: float = 0.5
    """Probability of zooming out a picture, in [0, 1]."""
    crop: bool = True
    """The paper's min-IoU random crop."""
    flip: bool = True
    """Horizontal flip with probability 0.5."""

    def __post_init__(self) -> None:
        check_augmentation(self)
        self.expand_max_ratio = float(self.expand_max_ratio)
        self.expand_p = float(self.expand_p)


_SWITCHES = ("photometric", "expand", "crop", "flip")


def _real(value: Any) -> bool:
    """A real number that is not a bool."""
    return (isinstance(value, (int, float, np.integer, np.floating))
            and not isinstance(value, (bool, np.bool_)))


def check_augmentation(augmentation: Augmentation, where: str = "augmentation") -> None:
    """TypeError/ValueError naming the field (``{where}.{field}``) of the first bad value."""
    for name in _SWITCHES:
        value = getattr(augmentation, name)
        if not isinstance(value, bool):
            raise TypeError(f"{where}.{name} must be a bool (true or false), got {value!r}")
    ratio, p = augmentation.expand_max_ratio, augmentation.expand_p
    if not (_real(ratio) and math.isfinite(ratio) and ratio >= 1):
        raise ValueError(f"{where}.expand_max_ratio must be a number >= 1, got {ratio!r}")
    if not (_real(p) and 0 <= p <= 1):
        raise ValueError(f"{where}.expand_p must be a probability in [0, 1], got {p!r}")


def train_transform(size: int | tuple[int, int], mean: Sequence[float] = IMAGENET_MEAN,
                    std: Sequence[float] = IMAGENET_STD, augmentation: Augmentation | None = None) -> Compose:
    """The paper's training augmentation with the parts ``augmentation`` enables (all of them
    by default): photometric distortion, zoom out (filled with ``mean``), min-IoU crop,
    horizontal flip; then resize to ``size``, normalise with ``mean``/``std`` (RGB, [0, 1]
    scale) and make a float32 tensor ``[3, H, W]``. The pixels are computed once, at the
    output size."""
    augmentation = Augmentation() if augmentation is None else augmentation
    if not isinstance(augmentation, Augmentation):
        raise TypeError(f"augmentation must be an Augmentation or None, got {type(augmentation).__name__}")
    check_augmentation(augmentation)
    steps: list[Transform] = [ToLazyImage()]
    if augmentation.photometric:
        steps.append(PhotometricDistort())
    if augmentation.expand:
        steps.append(Expand(fill=tuple(255.0 * m for m in mean), max_ratio=augmentation.expand_max_ratio,
                            p=augmentation.expand_p))
    if augmentation.crop:
        steps.append(MinIoURandomCrop())
    if augmentation.flip:
        steps.append(RandomHorizontalFlip())
    return Compose([*steps, Resize(size), Normalize(mean, std), ToTensor()])


def eval_transform(size: int | tuple[int, int], mean: Sequence[float] = IMAGENET_MEAN,
                   std: Sequence[float] = IMAGENET_STD) -> Compose:
    """Deterministic evaluation preprocessing: resize to ``size``, normalise, to tensor."""
    return Compose([ToLazyImage(), Resize(size), Normalize(mean, std), ToTensor()])
