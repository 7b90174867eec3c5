"""The SSD paper's data augmentation, as composable transforms on a lazy uint8 image.

Every transform is a callable ``t(image, boxes, labels, generator=None) -> (image, boxes, labels)``:

- ``image``: after :class:`ToLazyImage` (the first step of every pipeline), a
  :class:`LazyImage`: uint8 RGB kept as a recipe. Expand, crop and flip only move the source on
  its canvas, the photometric step only records its drawn colour map; :class:`Resize` computes
  the pixels once, for the part of the source still visible, at the output size.
  :class:`Normalize` writes float32 ``(x / 255 - mean) / std`` and :class:`ToTensor` (the last
  step) gives a float32 tensor ``[3, H, W]``. A step called on its own also takes a uint8
  array ``[H, W, 3]`` and then returns one.
- ``boxes``: float32 ``[G, 4]`` xyxy in PIXELS of the current image, continuous coordinates:
  the image spans ``[0, W] x [0, H]`` and pixel ``(i, j)`` covers ``[j, j+1) x [i, i+1)``.
- ``labels``: any tensor whose first dimension is ``G`` (``[G]`` class labels, or ``[G, k]``
  when extra per-box columns such as VOC's ``difficult`` flag must stay paired with their
  box). Transforms that drop boxes index ``boxes`` and ``labels`` alike.
- ``generator``: a ``torch.Generator`` (or ``numpy.random.Generator``) for every random draw,
  or ``None`` for torch's global generator. :class:`Compose` hands the same generator to every
  step; the datasets pass the per-item generator of :mod:`ssd_ext.data.sampling`.

A step called on its own checks its sample; inside :class:`Compose` the sample is checked
once, after the first step (and again only after a callable that is not one of these steps).

Modules: :mod:`.lazy_image` (the recipe and its pixels), :mod:`.geometry` (expand, min-IoU
crop, flip, resize), :mod:`.colour` (photometric distortion, HSV math), :mod:`.draws` (the
random draws), :mod:`.pipelines` (Compose, first and last steps, :class:`Augmentation`, the
presets). The float reference of every step, the oracle of the tests, is
``ssd_reference.transforms`` (in ``python/``).
"""

from .colour import Distortion, PhotometricDistort, hsv_to_rgb, rgb_to_hsv
from .geometry import (
    CROP_MIN_IOUS,
    Expand,
    MinIoURandomCrop,
    Placement,
    RandomHorizontalFlip,
    Resize,
    sample_min_iou_crop,
)
from .lazy_image import LazyImage
from .pipelines import (
    Augmentation,
    Compose,
    Normalize,
    ToLazyImage,
    ToTensor,
    check_augmentation,
    eval_transform,
    train_transform,
)
from .step import IMAGENET_MEAN, IMAGENET_STD, Transform

__all__ = [
    "CROP_MIN_IOUS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Augmentation",
    "Compose",
    "Distortion",
    "Expand",
    "LazyImage",
    "MinIoURandomCrop",
    "Normalize",
    "PhotometricDistort",
    "Placement",
    "RandomHorizontalFlip",
    "Resize",
    "ToLazyImage",
    "ToTensor",
    "Transform",
    "check_augmentation",
    "eval_transform",
    "hsv_to_rgb",
    "rgb_to_hsv",
    "sample_min_iou_crop",
    "train_transform",
]
