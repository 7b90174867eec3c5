"""The SSD paper's data augmentation, as composable transforms.

Every transform is a callable ``t(image, boxes, labels, generator=None) -> (image, boxes, labels)``:

- ``image``: after :class:`ToFloatImage` (always the first step), a float32 numpy array
  ``[H, W, 3]`` of RGB values in [0, 255]; :class:`Normalize` turns it into
  ``(x / 255 - mean) / std`` and :class:`ToTensor` (the last step) into a float32 tensor
  ``[3, H, W]``. Pixels are numpy arrays in between because numpy's elementwise math is
  single-threaded: torch's intra-op threads only slow small images down, above all on a
  loaded machine.
- ``boxes``: float32 ``[G, 4]`` xyxy in PIXELS of the current image, continuous coordinates:
  the image spans ``[0, W] x [0, H]`` and pixel ``(i, j)`` covers ``[j, j+1) x [i, i+1)``.
- ``labels``: any tensor whose first dimension is ``G`` (``[G]`` class labels, or ``[G, k]``
  when extra per-box columns such as VOC's ``difficult`` flag or a test's box id must stay
  paired with their box). Transforms that drop boxes index ``boxes`` and ``labels`` alike.
- ``generator``: a ``torch.Generator`` (or ``numpy.random.Generator``) for every random draw,
  or ``None`` for torch's global generator (which a DataLoader worker seeds from the loader's seed, see
  :func:`ssd_ext.data.make_loader`). :class:`Compose` hands the same generator to every step.

The photometric distortion follows Caffe SSD's ``ssd_pascal.py`` settings (brightness +-32,
contrast and saturation in [0.5, 1.5], hue +-18 degrees, each with probability 0.5, contrast
before or after the HSV steps with probability 0.5); pixel values are clipped to [0, 255]
after each step, as Caffe's 8-bit OpenCV images saturate. The random channel swap is
available but off by default (Caffe's ``random_order_prob`` is 0; ssd.pytorch uses 0.5).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CROP_MIN_IOUS",
    "Compose",
    "ToFloatImage",
    "PhotometricDistort",
    "Expand",
    "MinIoURandomCrop",
    "RandomHorizontalFlip",
    "Resize",
    "Normalize",
    "ToTensor",
    "sample_min_iou_crop",
    "train_transform",
    "eval_transform",
    "rgb_to_hsv",
    "hsv_to_rgb",
]

# ImageNet statistics of RGB values scaled to [0, 1] (those torchvision's pretrained VGG16 and
# ResNet backbones were trained with).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

# The paper's crop options: ``None`` keeps the whole image, a float is the minimum IoU that
# SOME ground-truth box must have with the crop, ``0.0`` is "any patch" (no IoU constraint).
CROP_MIN_IOUS: tuple[float | None, ...] = (None, 0.1, 0.3, 0.5, 0.7, 0.9, 0.0)

Sample = tuple[Any, torch.Tensor, torch.Tensor]


RandomSource = torch.Generator | np.random.Generator | None


def _rand(generator: RandomSource) -> float:
    """Uniform float in [0, 1)."""
    if isinstance(generator, np.random.Generator):
        return float(generator.random())
    return float(torch.rand((), generator=generator, dtype=torch.float64))


def _uniform(generator: RandomSource, low: float, high: float) -> float:
    return low + (high - low) * _rand(generator)


def _randint(generator: RandomSource, high: int) -> int:
    """Uniform integer in [0, high]."""
    if isinstance(generator, np.random.Generator):
        return int(generator.integers(0, high + 1))
    return int(torch.randint(0, high + 1, (), generator=generator))


def _permutation(generator: RandomSource, n: int) -> np.ndarray:
    if isinstance(generator, np.random.Generator):
        return generator.permutation(n)
    return torch.randperm(n, generator=generator).numpy()


def _check_sample(image: np.ndarray, boxes: torch.Tensor, labels: torch.Tensor) -> None:
    if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3
            and image.dtype == np.float32):
        raise TypeError(
            "image must be a float32 array [H, W, 3] (put ToFloatImage first), got "
            f"{type(image).__name__} {getattr(image, 'shape', '')} {getattr(image, 'dtype', '')}"
        )
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be [G, 4], got {tuple(boxes.shape)}")
    if labels.shape[:1] != boxes.shape[:1]:
        raise ValueError(f"labels' first dimension must match boxes' ({boxes.shape[0]}), "
                         f"got {tuple(labels.shape)}")


class Compose:
    """Apply transforms in order, handing each the same ``generator``."""

    def __init__(self, transforms: Sequence[Callable[..., Sample]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: Any, boxes: torch.Tensor, labels: torch.Tensor,
                 generator: RandomSource = None) -> Sample:
        for transform in self.transforms:
            image, boxes, labels = transform(image, boxes, labels, generator)
        return image, boxes, labels

    def __repr__(self) -> str:
        inner = "".join(f"\n    {t!r}," for t in self.transforms)
        return f"{type(self).__name__}([{inner}\n])"


class ToFloatImage:
    """PIL image / array ``[H, W, 3]`` / tensor ``[3, H, W]`` (RGB, 0..255) -> float32 array
    ``[H, W, 3]``. Also makes ``boxes`` a float32 ``[G, 4]`` tensor and ``labels`` a tensor."""

    def __call__(self, image: Any, boxes: Any, labels: Any,
                 generator: RandomSource = None) -> Sample:
        if isinstance(image, Image.Image):
            array = np.asarray(image.convert("RGB"), dtype=np.float32)
        elif isinstance(image, np.ndarray):
            if image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"image array must be [H, W, 3], got {image.shape}")
            array = image.astype(np.float32)
        elif isinstance(image, torch.Tensor):
            if image.dim() != 3 or image.shape[0] != 3:
                raise ValueError(f"image tensor must be [3, H, W], got {tuple(image.shape)}")
            array = image.detach().cpu().permute(1, 2, 0).numpy().astype(np.float32)
        else:
            raise TypeError(f"image must be a PIL image, numpy array or tensor, got {type(image).__name__}")
        array = np.ascontiguousarray(array)
        boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        labels = torch.as_tensor(labels)
        _check_sample(array, boxes, labels)
        return array, boxes, labels

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """``[..., 3]`` RGB in [0, 1] -> HSV with hue in [0, 1) (a full turn is 1), S and V in [0, 1]."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    maxc = np.maximum(np.maximum(r, g), b)
    delta = maxc - np.minimum(np.minimum(r, g), b)
    with np.errstate(divide="ignore", invalid="ignore"):
        saturation = np.where(maxc > 0, delta / maxc, 0.0)
        hue = np.where(maxc == r, (g - b) / delta,
                       np.where(maxc == g, 2.0 + (b - r) / delta, 4.0 + (r - g) / delta))
    hue = np.where(delta > 0, (hue / 6.0) % 1.0, 0.0)
    return np.stack([hue, saturation, maxc], axis=-1).astype(rgb.dtype, copy=False)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_hsv`."""
    hue6 = (hsv[..., 0] % 1.0) * 6.0
    chroma = hsv[..., 2] * hsv[..., 1]
    channels = []
    # Channel n (R: 5, G: 3, B: 1) is v - c * clip(min(k, 4 - k), 0, 1) with k = (n + 6h) mod 6.
    for n in (5.0, 3.0, 1.0):
        k = (hue6 + n) % 6.0
        channels.append(hsv[..., 2] - chroma * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0))
    return np.stack(channels, axis=-1).astype(hsv.dtype, copy=False)


class PhotometricDistort:
    """Caffe SSD's random brightness, contrast, saturation, hue (and optional channel swap)."""

    def __init__(self, brightness_delta: float = 32.0, contrast_range: tuple[float, float] = (0.5, 1.5),
                 saturation_range: tuple[float, float] = (0.5, 1.5), hue_delta: float = 18.0,
                 p: float = 0.5, channel_swap_p: float = 0.0) -> None:
        self.brightness_delta = brightness_delta
        self.contrast_range = contrast_range
        self.saturation_range = saturation_range
        self.hue_delta = hue_delta
        self.p = p
        self.channel_swap_p = channel_swap_p

    def _contrast(self, image: np.ndarray, generator: RandomSource) -> np.ndarray:
        if _rand(generator) < self.p:
            image = np.clip(image * np.float32(_uniform(generator, *self.contrast_range)), 0, 255)
        return image

    def _hsv(self, image: np.ndarray, generator: RandomSource) -> np.ndarray:
        saturation = _uniform(generator, *self.saturation_range) if _rand(generator) < self.p else None
        hue = _uniform(generator, -self.hue_delta, self.hue_delta) if _rand(generator) < self.p else None
        if saturation is None and hue is None:
            return image
        hsv = rgb_to_hsv(image / np.float32(255.0))
        if saturation is not None:
            hsv[..., 1] = np.clip(hsv[..., 1] * np.float32(saturation), 0, 1)
        if hue is not None:
            hsv[..., 0] = (hsv[..., 0] + np.float32(hue / 360.0)) % 1.0
        return np.clip(hsv_to_rgb(hsv) * np.float32(255.0), 0, 255).astype(np.float32, copy=False)

    def __call__(self, image: np.ndarray, boxes: torch.Tensor, labels: torch.Tensor,
                 generator: RandomSource = None) -> Sample:
        _check_sample(image, boxes, labels)
        if _rand(generator) < self.p:
            delta = np.float32(_uniform(generator, -self.brightness_delta, self.brightness_delta))
            image = np.clip(image + delta, 0, 255)
        if _rand(generator) < 0.5:
            image = self._hsv(self._contrast(image, generator), generator)
        else:
            image = self._contrast(self._hsv(image, generator), generator)
        if _rand(generator) < self.channel_swap_p:
            image = image[..., _permutation(generator, 3)]
        return image.astype(np.float32, copy=False), boxes, labels

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(brightness_delta={self.brightness_delta}, contrast_range="
                f"{self.contrast_range}, saturation_range={self.saturation_range}, "
                f"hue_delta={self.hue_delta}, p={self.p}, channel_swap_p={self.channel_swap_p})")


class Expand:
    """Zoom out: with probability ``p`` place the image at a random spot of a canvas up to
    ``max_ratio`` times larger per side, filled with ``fill`` (the mean pixel, in [0, 255])."""

    def __init__(self, fill: Sequence[float] = tuple(255.0 * m for m in IMAGENET_MEAN),
                 max_ratio: float = 4.0, p: float = 0.5) -> None:
        if max_ratio < 1:
            raise ValueError(f"max_ratio must be >= 1, got {max_ratio}")
        self.fill = tuple(float(v) for v in fill)
        self.max_ratio = max_ratio
        self.p = p

    def __call__(self, image: np.ndarray, boxes: torch.Tensor, labels: torch.Tensor,
                 generator: RandomSource = None) -> Sample:
        _check_sample(image, boxes, labels)
        if _rand(generator) >= self.p:
            return image, boxes, labels
        height, width, _ = image.shape
        ratio = _uniform(generator, 1.0, self.max_ratio)
        new_h, new_w = int(height * ratio), int(width * ratio)
        top = _randint(generator, new_h - height)
        left = _randint(generator, new_w - width)
        canvas = np.empty((new_h, new_w, 3), dtype=np.float32)
        canvas[...] = np.asarray(self.fill, dtype=np.float32)
        canvas[top:top + height, left:left + width] = image
        shift = torch.tensor([left, top, left, top], dtype=boxes.dtype)
        return canvas, boxes + shift, labels

    def __repr__(self) -> str:
        return f"{type(self).__name__}(fill={self.fill}, max_ratio={self.max_ratio}, p={self.p})"


def _iou_with_rect(boxes: torch.Tensor | np.ndarray, rect: Sequence[float]) -> np.ndarray:
    """IoU ``[G]`` (float64) of each of ``boxes`` (``[G, 4]``) with the rectangle ``rect``."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x1, y1, x2, y2 = (float(v) for v in rect)
    iw = np.minimum(boxes[:, 2], x2) - np.maximum(boxes[:, 0], x1)
    ih = np.minimum(boxes[:, 3], y2) - np.maximum(boxes[:, 1], y1)
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    union = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) + (x2 - x1) * (y2 - y1) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


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
    choice = min_ious[_randint(generator, len(min_ious) - 1)]
    if choice is None or boxes.shape[0] == 0:
        return choice, None, None
    boxes_np = boxes.detach().cpu().numpy().astype(np.float64)
    cx = (boxes_np[:, 0] + boxes_np[:, 2]) / 2
    cy = (boxes_np[:, 1] + boxes_np[:, 3]) / 2
    for _ in range(max_trials):
        crop_w = _uniform(generator, min_scale * width, width)
        crop_h = _uniform(generator, min_scale * height, height)
        if not aspect_range[0] <= crop_h / crop_w <= aspect_range[1]:
            continue
        crop_w_int = max(1, min(width, int(crop_w)))
        crop_h_int = max(1, min(height, int(crop_h)))
        left = _randint(generator, width - crop_w_int)
        top = _randint(generator, height - crop_h_int)
        rect = (left, top, left + crop_w_int, top + crop_h_int)
        if float(_iou_with_rect(boxes_np, rect).max()) < choice:
            continue
        keep = (cx > rect[0]) & (cx < rect[2]) & (cy > rect[1]) & (cy < rect[3])
        if not keep.any():
            continue
        return choice, rect, torch.from_numpy(keep)
    return choice, None, None


class MinIoURandomCrop:
    """The paper's random crop (see :func:`sample_min_iou_crop`): keep the boxes whose centre
    lies inside the crop, clipped to it, in the crop's pixel coordinates."""

    def __init__(self, min_ious: Sequence[float | None] = CROP_MIN_IOUS, min_scale: float = 0.3,
                 aspect_range: tuple[float, float] = (0.5, 2.0), max_trials: int = 50) -> None:
        self.min_ious = tuple(min_ious)
        self.min_scale = min_scale
        self.aspect_range = aspect_range
        self.max_trials = max_trials

    def __call__(self, image: np.ndarray, boxes: torch.Tensor, labels: torch.Tensor,
                 generator: RandomSource = None) -> Sample:
        _check_sample(image, boxes, labels)
        height, width, _ = image.shape
        _, rect, keep = sample_min_iou_crop(boxes, width, height, generator, self.min_ious,
                                            self.min_scale, self.aspect_range, self.max_trials)
        if rect is None:
            return image, boxes, labels
        x1, y1, x2, y2 = rect
        image = image[y1:y2, x1:x2]  # a view: the next steps copy anyway
        boxes = boxes[keep]
        offset = boxes.new_tensor([x1, y1, x1, y1])
        boxes = torch.stack([
            boxes[:, 0].clamp(min=x1), boxes[:, 1].clamp(min=y1),
            boxes[:, 2].clamp(max=x2), boxes[:, 3].clamp(max=y2),
        ], dim=1) - offset
        return image, boxes, labels[keep]

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(min_ious={self.min_ious}, min_scale={self.min_scale}, "
                f"aspect_range={self.aspect_range}, max_trials={self.max_trials})")


class RandomHorizontalFlip:
    """Mirror the image left-right with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, image: np.ndarray, boxes: torch.Tensor, labels: torch.Tensor,
                 generator: RandomSource = None) -> Sample:
        _check_sample(image, boxes, labels)
        if _rand(generator) >= self.p:
            return image, boxes, labels
        width = image.shape[1]
        flipped = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)
        return image[:, ::-1], flipped, labels  # a view: the next steps copy anyway

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p})"


class Resize:
    """Resize to ``size`` (an int for a square image, or ``(height, width)``) with PIL's
    bilinear filter on each float channel (antialiased when shrinking), scaling the boxes alike."""

    def __init__(self, size: int | tuple[int, int]) -> None:
        self.size = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        if min(self.size) < 1:
            raise ValueError(f"size must be positive, got {size}")

    def __call__(self, image: np.ndarray, boxes: torch.Tensor, labels: torch.Tensor,
                 generator: RandomSource = None) -> Sample:
        _check_sample(image, boxes, labels)
        height, width, _ = image.shape
        new_h, new_w = self.size
        if (height, width) != (new_h, new_w):
            image = np.stack([
                np.asarray(Image.fromarray(np.ascontiguousarray(image[..., c]), mode="F")
                           .resize((new_w, new_h), Image.Resampling.BILINEAR))
                for c in range(3)
            ], axis=-1)
        scale = boxes.new_tensor([new_w / width, new_h / height, new_w / width, new_h / height])
        return image, boxes * scale, labels

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size})"


class Normalize:
    """``(image / 255 - mean) / std`` per channel (ImageNet statistics by default)."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def __call__(self, image: np.ndarray, boxes: torch.Tensor, labels: torch.Tensor,
                 generator: RandomSource = None) -> Sample:
        _check_sample(image, boxes, labels)
        mean = np.asarray(self.mean, dtype=np.float32) * np.float32(255.0)
        inv_std = np.float32(1.0) / (np.asarray(self.std, dtype=np.float32) * np.float32(255.0))
        return (image - mean) * inv_std, boxes, labels

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mean={self.mean}, std={self.std})"


class ToTensor:
    """float32 array ``[H, W, 3]`` -> float32 tensor ``[3, H, W]`` (the last step)."""

    def __call__(self, image: np.ndarray, boxes: torch.Tensor, labels: torch.Tensor,
                 generator: RandomSource = None) -> Sample:
        _check_sample(image, boxes, labels)
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))), boxes, labels

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def train_transform(size: int | tuple[int, int], mean: Sequence[float] = IMAGENET_MEAN,
                    std: Sequence[float] = IMAGENET_STD, expand_max_ratio: float = 4.0,
                    channel_swap_p: float = 0.0) -> Compose:
    """The paper's training augmentation: photometric distortion, zoom out (up to 4x, filled
    with the mean), min-IoU crop, horizontal flip, resize to ``size``, normalise, to tensor."""
    return Compose([
        ToFloatImage(),
        PhotometricDistort(channel_swap_p=channel_swap_p),
        Expand(fill=tuple(255.0 * m for m in mean), max_ratio=expand_max_ratio),
        MinIoURandomCrop(),
        RandomHorizontalFlip(),
        Resize(size),
        Normalize(mean, std),
        ToTensor(),
    ])


def eval_transform(size: int | tuple[int, int], mean: Sequence[float] = IMAGENET_MEAN,
                   std: Sequence[float] = IMAGENET_STD) -> Compose:
    """Deterministic evaluation preprocessing: resize to ``size``, normalise, to tensor."""
    return Compose([ToFloatImage(), Resize(size), Normalize(mean, std), ToTensor()])
