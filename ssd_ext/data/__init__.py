"""Datasets, augmentation and batching for SSD.

Item format (shared with the loss, models and evaluation): ``(image, target)`` where, with a
transform, ``image`` is a float32 tensor ``[3, H, W]`` and ``target`` holds ``"boxes"``
(float32 ``[G, 4]`` xyxy normalised to [0, 1]), ``"labels"`` (int64 ``[G]`` in 1..C-1, 0 is
the background), ``"difficult"`` (bool ``[G]``), ``"image_id"`` and ``"orig_size"`` ``(H, W)``.
Without a transform, ``image`` is a PIL image and the boxes are in pixels.

Modules: :mod:`.base` (the dataset base class, item format, bad-data log), :mod:`.voc`,
:mod:`.coco`, :mod:`.synthetic` (the datasets), :mod:`.images` (picture files in),
:mod:`.transforms` (augmentation), :mod:`.sampling` (per-item generators, epoch order),
:mod:`.loader` (collate, make_loader), :mod:`.config` and :mod:`.build` (datasets from a
config), :mod:`.writers` and :mod:`.visualize`.
"""

from .base import AnnotationWarning, DetectionDataset
from .build import SPLITS, build_dataset
from .coco import COCODetection
from .config import (
    COCOData,
    COCOSplit,
    DataConfig,
    SyntheticData,
    VOCData,
    data_config_from_dict,
    validate_data,
)
from .images import (
    IMAGE_SUFFIXES,
    ImageReadError,
    expand_image_entries,
    expand_image_paths,
    is_image_file,
    read_image,
    to_rgb_array,
)
from .loader import collate, default_num_workers, make_loader, seed_worker
from .sampling import AugmentedItems, EpochSampler, item_generator
from .synthetic import SHAPE_CLASSES, SyntheticShapes
from .transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Augmentation,
    Compose,
    Expand,
    LazyImage,
    MinIoURandomCrop,
    Normalize,
    PhotometricDistort,
    RandomHorizontalFlip,
    Resize,
    ToLazyImage,
    ToTensor,
    eval_transform,
    train_transform,
)
from .visualize import draw_boxes, to_pil
from .voc import VOC_CLASSES, VOCDetection
from .writers import write_coco, write_voc

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_SUFFIXES",
    "SHAPE_CLASSES",
    "SPLITS",
    "VOC_CLASSES",
    "AnnotationWarning",
    "Augmentation",
    "AugmentedItems",
    "COCOData",
    "COCODetection",
    "COCOSplit",
    "Compose",
    "DataConfig",
    "DetectionDataset",
    "EpochSampler",
    "Expand",
    "ImageReadError",
    "LazyImage",
    "MinIoURandomCrop",
    "Normalize",
    "PhotometricDistort",
    "RandomHorizontalFlip",
    "Resize",
    "SyntheticData",
    "SyntheticShapes",
    "ToLazyImage",
    "ToTensor",
    "VOCData",
    "VOCDetection",
    "build_dataset",
    "collate",
    "data_config_from_dict",
    "default_num_workers",
    "draw_boxes",
    "eval_transform",
    "expand_image_entries",
    "expand_image_paths",
    "is_image_file",
    "item_generator",
    "make_loader",
    "read_image",
    "seed_worker",
    "to_pil",
    "to_rgb_array",
    "train_transform",
    "validate_data",
    "write_coco",
    "write_voc",
]
