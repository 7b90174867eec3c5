"""Detectors: SSD300/SSD512 (VGG16), RFB Net300/512, SSDLite320 (MobileNetV3-Large), small CPU
models, prior presets and weights.

``build_model(name, num_classes)`` builds a registered model (``list_models()``: "ssd300",
"ssd512", "ssd_small", "rfb300", "rfb512", "rfb_small", "ssdlite320_mobilenet_v3_large"); a
family registers its factories with ``register_model``. ``ssd_ext.models.weights`` loads VGG16
ImageNet backbones and ssd.pytorch, torchvision (ssd300_vgg16, ssdlite320_mobilenet_v3_large)
and RFBNet checkpoints from local files. Every factory of the VGG, RFB and small families takes
the switches of the SSD paper's analysis, ``aspect_ratios``, ``levels`` and ``atrous``
(``ssd_ext.models.switches``).
"""

from . import switches, weights
from .head import SSDHead
from .priors import (
    PRESETS,
    RFB300_COCO,
    RFB300_VOC,
    RFB512_COCO,
    RFB512_VOC,
    RFB_SMALL_160,
    SSD300_COCO,
    SSD300_TORCHVISION,
    SSD300_VOC,
    SSD512_COCO,
    SSD512_VOC,
    SSD_SMALL_160,
    SSDLITE320,
    PriorConfig,
    PriorScale,
    config_from_scales,
    get_preset,
    paper_sizes,
)
from .registry import build_model, list_models, register_model
from .rfb import RFBBlock, RFBsBlock, RFBSmallBackbone, rfb300, rfb512, rfb_small, rfb_vgg16_backbone
from .small import SmallBackbone
from .ssd import SSD, assemble_ssd, ssd300, ssd512, ssd_small
from .ssdlite import SSDLiteBackbone, SSDLiteHead, ssdlite320_mobilenet_v3_large
from .vgg import L2Norm, VGG16Backbone

__all__ = [
    "PRESETS", "SSD300_COCO", "SSD300_TORCHVISION", "SSD300_VOC", "SSD512_COCO", "SSD512_VOC",
    "SSD_SMALL_160", "RFB300_VOC", "RFB300_COCO", "RFB512_VOC", "RFB512_COCO", "RFB_SMALL_160",
    "PriorConfig", "PriorScale", "config_from_scales", "get_preset", "paper_sizes",
    "SmallBackbone", "MODEL_NAMES", "SSD", "SSDHead", "build_model", "list_models", "register_model",
    "ssd300", "ssd512", "ssd_small", "rfb300", "rfb512", "rfb_small", "rfb_vgg16_backbone",
    "RFBBlock", "RFBsBlock", "RFBSmallBackbone", "L2Norm", "VGG16Backbone", "weights",
    "switches", "assemble_ssd",
    "SSDLITE320", "SSDLiteBackbone", "SSDLiteHead", "ssdlite320_mobilenet_v3_large",
]


def __getattr__(name: str) -> object:
    # MODEL_NAMES follows the registry (a family registered later is listed too).
    if name == "MODEL_NAMES":
        return tuple(list_models())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
