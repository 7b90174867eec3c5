"""SSDLite (Sandler et al., MobileNetV2, CVPR 2018, Section 6.2) on MobileNetV3-Large.

An SSDLite detector is an :class:`~ssd_ext.models.ssd.SSD` whose backbone is a MobileNet and
whose heads and extra layers are depthwise-separable; the priors, loss, ops, trainer and
evaluation are SSD's. ``ssdlite320_mobilenet_v3_large`` has torchvision's published structure
(read from its ``models/detection/ssdlite.py``; this is our own code):

- Backbone: :class:`~ssd_ext.models.mobilenet_v3.MobileNetV3Backbone` with the reduced tail,
  tapped after the C4 block's expansion (672 ch, 20x20 at 320 px) and at its last layer
  (480 ch, 10x10).
- Four extra blocks (:func:`extra_block`), each 1x1 (out/2) -> 3x3 depthwise stride 2 -> 1x1
  (out), BatchNorm and ReLU6 after every conv: 512 (5x5), 256 (3x3), 256 (2x2), 128 (1x1).
- Heads (:class:`SSDLiteHead`): per level a 3x3 depthwise conv + BatchNorm + ReLU6, then a
  1x1 conv with bias to ``A * 4`` / ``A * C`` channels; six boxes per cell on every level.
- BatchNorm eps 0.001, momentum 0.03; every conv initialised normal(0, 0.03) with zero bias
  (torchvision's init when no ImageNet backbone is loaded), BatchNorm 1 / 0.
- Priors ``SSDLITE320`` (3,234 at 320 px). Inputs: RGB in [0, 1] mapped to [-1, 1]
  (``(x - 0.5) / 0.5``), as torchvision's model normalises inside.
- In eval mode every conv + BatchNorm pair runs as one conv with the BatchNorm folded in
  (``mobilenet_v3.ConvNormActivation``; ``set_batchnorm_folding(model, False)`` turns it off
  for bit-for-bit agreement with the unfolded layers, e.g. torchvision's model).

3,440,060 parameters at 91 classes (torchvision's published figure; tested).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .head import SSDHead
from .mobilenet_v3 import ConvNormActivation, MobileNetV3Backbone, NormLayer, ssdlite_batch_norm
from .priors import SSDLITE320, PriorConfig
from .registry import check_num_classes, register_model
from .ssd import SSD, resolve_priors

__all__ = ["SSDLITE_MEAN", "SSDLITE_STD", "SSDLiteBackbone", "SSDLiteHead", "extra_block", "prediction_block",
           "ssdlite320_mobilenet_v3_large"]

# The normalisation torchvision's SSDLite applies inside its transform: [0, 1] -> [-1, 1].
SSDLITE_MEAN = (0.5, 0.5, 0.5)
SSDLITE_STD = (0.5, 0.5, 0.5)
# torchvision's init for SSDLite's convs (and its whole MobileNet when not loading ImageNet weights).
_INIT_STD = 0.03
_EXTRA_CHANNELS = (512, 256, 256, 128)


def normal_init(module: nn.Module, std: float = _INIT_STD) -> None:
    """Every conv inside ``module``: weights normal(0, std), biases 0."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.normal_(layer.weight, mean=0.0, std=std)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


def prediction_block(in_channels: int, out_channels: int,
                     norm: NormLayer = ssdlite_batch_norm) -> nn.Sequential:
    """SSDLite's head layer: 3x3 depthwise + norm + ReLU6 (``0``), then 1x1 conv with bias (``1``)."""
    return nn.Sequential(
        ConvNormActivation(in_channels, in_channels, 3, groups=in_channels, norm=norm, activation=nn.ReLU6),
        nn.Conv2d(in_channels, out_channels, 1),
    )


def extra_block(in_channels: int, out_channels: int, norm: NormLayer = ssdlite_batch_norm) -> nn.Sequential:
    """1x1 (out/2) -> 3x3 depthwise stride 2 -> 1x1 (out), each with norm and ReLU6: halves H, W."""
    middle = out_channels // 2
    return nn.Sequential(
        ConvNormActivation(in_channels, middle, 1, norm=norm, activation=nn.ReLU6),
        ConvNormActivation(middle, middle, 3, 2, groups=middle, norm=norm, activation=nn.ReLU6),
        ConvNormActivation(middle, out_channels, 1, norm=norm, activation=nn.ReLU6),
    )


class SSDLiteHead(SSDHead):
    """Depthwise-separable ``loc`` / ``conf`` layers (:func:`prediction_block`) per level.

    Same interface, outputs and prior order as :class:`SSDHead` (``loc``, ``conf``,
    ``boxes_per_location``, ``num_classes``; ``forward(features) -> (loc [B, P, 4],
    conf_logits [B, P, C])``); only the layers differ. Initialised normal(0, 0.03), zero bias.
    """

    def __init__(self, in_channels: Sequence[int], boxes_per_location: Sequence[int], num_classes: int,
                 norm: NormLayer = ssdlite_batch_norm) -> None:
        # SSDHead.__init__ would build (and initialise) plain 3x3 convs only to drop them; this
        # head sets the same attributes itself and inherits the flattening (SSDHead.forward).
        nn.Module.__init__(self)
        num_classes = check_num_classes(num_classes)
        if len(in_channels) != len(boxes_per_location):
            raise ValueError(f"SSDLiteHead: {len(in_channels)} in_channels but {len(boxes_per_location)} "
                             "boxes_per_location entries; one of each per level")
        self.num_classes = num_classes
        self.boxes_per_location = [int(a) for a in boxes_per_location]
        levels = list(zip(in_channels, self.boxes_per_location, strict=True))
        self.loc = nn.ModuleList(prediction_block(c, a * 4, norm) for c, a in levels)
        self.conf = nn.ModuleList(prediction_block(c, a * num_classes, norm) for c, a in levels)
        normal_init(self)


class SSDLiteBackbone(nn.Module):
    """A MobileNetV3-Large trunk (two maps) and SSDLite's extra blocks (one map each).

    ``forward(images [B, 3, H, W])`` returns six maps: strides 16, 32, 64, 128, 256, 512
    (20, 10, 5, 3, 2, 1 at 320 px) with ``out_channels`` [672, 480, 512, 256, 256, 128].
    """

    def __init__(self, reduced_tail: bool = True, extra_channels: Sequence[int] = _EXTRA_CHANNELS,
                 norm: NormLayer = ssdlite_batch_norm) -> None:
        super().__init__()
        self.trunk = MobileNetV3Backbone(reduced_tail=reduced_tail, norm=norm)
        channels = [self.trunk.out_channels[-1], *extra_channels]
        self.extras = nn.ModuleList(extra_block(c_in, c_out, norm)
                                    for c_in, c_out in zip(channels[:-1], channels[1:], strict=True))
        self.out_channels = [*self.trunk.out_channels, *extra_channels]
        normal_init(self)

    def forward(self, x: Tensor) -> list[Tensor]:
        features = self.trunk(x)
        x = features[-1]
        for block in self.extras:
            x = block(x)
            features.append(x)
        return features


@register_model("ssdlite320_mobilenet_v3_large")
def ssdlite320_mobilenet_v3_large(num_classes: int = 91, priors: PriorConfig | str | None = None,
                                  reduced_tail: bool = True) -> SSD:
    """SSDLite320 on MobileNetV3-Large as torchvision publishes it (3,234 priors, ``SSDLITE320``).

    ``num_classes`` counts the background (torchvision's COCO model: 91, its category ids with
    gaps). ``reduced_tail=False`` keeps the full 960-channel tail (the width of the ImageNet
    classifier, for a backbone initialised from it). Inputs: ``(rgb_0_1 - 0.5) / 0.5`` (``SSDLITE_MEAN`` /
    ``SSDLITE_STD``). The model's ``cpu_inference_memory_format`` is channels_last (faster
    for this network on the CPU; docs/BENCHMARKS.md).
    """
    backbone = SSDLiteBackbone(reduced_tail=bool(reduced_tail))
    config = resolve_priors(priors, SSDLITE320)
    head = SSDLiteHead(backbone.out_channels, config.boxes_per_location, num_classes)
    model = SSD(backbone, backbone.out_channels, config, num_classes, head=head)
    model.cpu_inference_memory_format = torch.channels_last
    return model
