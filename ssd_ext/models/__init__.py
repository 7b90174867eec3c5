"""SSD models: SSD300/SSD512 (VGG16), a small CPU model, prior presets and weight loading.

``build_model("ssd300" | "ssd512" | "ssd_small", num_classes)`` builds a model;
``ssd_ext.models.weights`` loads VGG16 ImageNet backbones, ssd.pytorch and torchvision
checkpoints from local files.
"""

from . import weights
from .priors import (
    PRESETS,
    SSD300_COCO,
    SSD300_TORCHVISION,
    SSD300_VOC,
    SSD512_COCO,
    SSD512_VOC,
    SSD_SMALL_160,
    PriorConfig,
    config_from_scales,
    get_preset,
    paper_sizes,
)
from .small import SmallBackbone
from .ssd import MODEL_NAMES, SSD, build_model, ssd300, ssd512, ssd_small
from .vgg import L2Norm, VGG16Backbone

__all__ = [
    "PRESETS", "SSD300_COCO", "SSD300_TORCHVISION", "SSD300_VOC", "SSD512_COCO", "SSD512_VOC",
    "SSD_SMALL_160", "PriorConfig", "config_from_scales", "get_preset", "paper_sizes",
    "SmallBackbone", "MODEL_NAMES", "SSD", "build_model", "ssd300", "ssd512", "ssd_small",
    "L2Norm", "VGG16Backbone", "weights",
]
