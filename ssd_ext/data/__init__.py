"""Datasets, augmentation and batching for SSD.

Item format (shared with the loss, models and evaluation): ``(image, target)`` where, with a
transform, ``image`` is a float32 tensor ``[3, H, W]`` and ``target`` holds ``"boxes"``
(float32 ``[G, 4]`` xyxy normalised to [0, 1]), ``"labels"`` (int64 ``[G]`` in 1..C-1, 0 is
the background), ``"difficult"`` (bool ``[G]``), ``"image_id"`` and ``"orig_size"`` ``(H, W)``.
Without a transform, ``image`` is a PIL image and the boxes are in pixels. See
:mod:`ssd_ext.data.base` and :mod:`ssd_ext.data.transforms`.
"""

from .base import AnnotationWarning, DetectionDataset
from .coco import COCODetection
from .loader import collate, default_num_workers, make_loader, seed_worker
from .synthetic import SHAPE_CLASSES, SyntheticShapes
from .transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Compose,
    Expand,
    LazyImage,
    MinIoURandomCrop,
    Normalize,
    PhotometricDistort,
    RandomHorizontalFlip,
    Resize,
    ToFloatImage,
    ToLazyImage,
    ToTensor,
    eval_transform,
    train_transform,
)
from .visualize import draw_boxes, to_pil
from .voc import VOC_CLASSES, VOCDetection
from .writers import write_coco, write_voc

__all__ = [
    "AnnotationWarning",
    "COCODetection",
    "Compose",
    "DetectionDataset",
    "Expand",
    "LazyImage",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MinIoURandomCrop",
    "Normalize",
    "PhotometricDistort",
    "RandomHorizontalFlip",
    "Resize",
    "SHAPE_CLASSES",
    "SyntheticShapes",
    "ToFloatImage",
    "ToLazyImage",
    "ToTensor",
    "VOCDetection",
    "VOC_CLASSES",
    "collate",
    "default_num_workers",
    "draw_boxes",
    "eval_transform",
    "make_loader",
    "seed_worker",
    "to_pil",
    "train_transform",
    "write_coco",
    "write_voc",
]
