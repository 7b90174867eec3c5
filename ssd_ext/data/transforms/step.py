"""What every step shares: the :class:`Transform` base class, the sample check and the
ImageNet statistics that are the default mean and std.

A step is called as ``step(image, boxes, labels, generator=None) -> (image, boxes, labels)``
(the sample format is in :mod:`ssd_ext.data.transforms`). Called on its own, a step checks its
sample and returns uint8 arrays for uint8 arrays; inside :class:`~.pipelines.Compose` the
sample is checked once and a :class:`~.lazy_image.LazyImage` travels between the steps.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .draws import RandomSource
from .lazy_image import LazyImage

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Sample", "Transform", "check_sample"]

# ImageNet statistics of RGB values scaled to [0, 1] (those torchvision's pretrained VGG16 and
# ResNet backbones were trained with).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

Sample = tuple[Any, torch.Tensor, torch.Tensor]

_IMAGE_TYPE_ERROR = "image must be a LazyImage or a uint8 array [H, W, 3] (put ToLazyImage first), got "


def check_sample(image: Any, boxes: torch.Tensor, labels: torch.Tensor) -> None:
    """TypeError/ValueError unless ``image`` is a LazyImage or a uint8 array ``[H, W, 3]``,
    ``boxes`` a tensor ``[G, 4]`` and ``labels`` a tensor whose first dimension is ``G``."""
    if not (isinstance(image, LazyImage)
            or (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3
                and image.dtype == np.uint8)):
        raise TypeError(f"{_IMAGE_TYPE_ERROR}{type(image).__name__} {getattr(image, 'shape', '')} "
                        f"{getattr(image, 'dtype', '')}")
    if not isinstance(boxes, torch.Tensor) or boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be a tensor [G, 4], got {tuple(getattr(boxes, 'shape', ()))}")
    if not isinstance(labels, torch.Tensor) or labels.shape[:1] != boxes.shape[:1]:
        raise ValueError(f"labels' first dimension must match boxes' ({boxes.shape[0]}), "
                         f"got {tuple(getattr(labels, 'shape', ()))}")


class Transform:
    """Base of the steps. Calling one checks the sample, then runs :meth:`apply`, which
    assumes a checked sample (what :class:`~.pipelines.Compose` calls after checking once)."""

    #: Takes raw input (PIL image, array, tensor) and checks its own output.
    converts_input = False
    #: Returns a sample the next step accepts (False for ``ToTensor``).
    returns_sample = True

    def __call__(self, image: Any, boxes: torch.Tensor, labels: torch.Tensor,
                 generator: RandomSource = None) -> Sample:
        check_sample(image, boxes, labels)
        out = self.apply(image, boxes, labels, generator)
        if isinstance(image, np.ndarray) and isinstance(out[0], LazyImage):
            return (out[0].to_array(), *out[1:])  # arrays in, arrays out
        return out

    def apply(self, image: Any, boxes: torch.Tensor, labels: torch.Tensor,
              generator: RandomSource = None) -> Sample:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
