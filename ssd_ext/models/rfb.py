"""RFB Net (Receptive Field Block Net; Liu, Huang and Wang, ECCV 2018) on SSD's VGG16 base.

An RFB detector is an :class:`~ssd_ext.models.ssd.SSD` whose :class:`VGG16Backbone` gets
other parts (see ``vgg.py``) and whose priors have more boxes per cell; the head, loss, ops,
trainer and evaluation are SSD's. The structure follows the authors' public code
(``models/RFB_Net_vgg.py`` and ``data/config.py`` of their repository; this is our own code):

- Every convolution inside the blocks is :class:`ConvBN`: no bias, BatchNorm (momentum 0.01,
  eps 1e-5, as the authors train them), then ReLU unless it is the last of a branch, the 1x1
  merge or the shortcut.
- :class:`RFBBlock` (inner width ``w = in/8``), three branches, ``v`` the "visual" base
  dilation: 1x1 (2w) -> 3x3 dilation v; 1x1 (w) -> 3x3 (2w) -> 3x3 dilation v+1;
  1x1 (w) -> 3x3 (3w/2) -> 3x3 (2w) -> 3x3 dilation 2v+1. A stride-2 block strides the first
  1x1 of branch 0, the first 3x3 of branch 1, the second 3x3 of branch 2 and the shortcut.
- :class:`RFBsBlock` (RFB-s, inner width ``w = in/4``), four branches: 1x1 -> 3x3;
  1x1 -> 3x1 -> 3x3 dilation 3; 1x1 -> 1x3 -> 3x3 dilation 3; 1x1 (w/2) -> 1x3 (3w/4) -> 3x1 (w)
  -> 3x3 dilation 5.
- Both: the branches are concatenated, merged by a 1x1 conv, and ``relu(merged * scale +
  shortcut(x))`` with a 1x1 shortcut. ``scale`` is 1.0 in every block the authors' models
  build (the class's default argument in their code, 0.1, is never used by a model).

RFB Net300 (300 px, 11,620 priors, ``RFB300_VOC``): RFB-s on conv4_3 in place of L2Norm (38x38;
the trunk continues from the raw conv4_3), RFB (stride 1, v = 2) on fc7 (19x19; the trunk
continues from it), RFBs of stride 2 and v = 2 to 10x10 (512 channels) and 5x5 (256), then two
1x1 (128) / 3x3 (256, no padding) pairs to 3x3 and 1x1.
RFB Net512 (512 px, 32,756 priors, ``RFB512_VOC``): as above to 16x16 and 8x8, two more stride-2
RFBs with v = 1 (4x4, 2x2; 256 channels), then one 1x1 (128) / 4x4 (256, padding 1) pair to 1x1.
Heads: SSD's 3x3 loc/conf convs; 6 boxes per cell on all but the last two levels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .priors import RFB300_VOC, RFB512_VOC, RFB_SMALL_160, PriorConfig
from .registry import check_width, register_model
from .small import SmallBackbone
from .ssd import SSD, assemble_ssd, resolve_priors
from .switches import check_atrous
from .vgg import VGG16Backbone

__all__ = ["ConvBN", "RFBBlock", "RFBsBlock", "RFBSmallBackbone", "rfb_vgg16_backbone", "rfb300",
           "rfb512", "rfb_small", "RFB_BN_MOMENTUM"]

# The authors' BatchNorm momentum (PyTorch's convention: weight of the new batch statistics).
RFB_BN_MOMENTUM = 0.01

Kernel = int | tuple[int, int]


def _pair(value: Kernel) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


class ConvBN(nn.Module):
    """Conv (no bias) -> BatchNorm -> optional ReLU; padding keeps the size ("same") unless given.

    Module names ``conv`` and ``bn`` are the authors' ``BasicConv`` names, which keeps the
    weight converter (``weights.from_rfbnet``) a rename.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Kernel, stride: int = 1,
                 dilation: int = 1, relu: bool = True, padding: Kernel | None = None) -> None:
        super().__init__()
        kernel = _pair(kernel_size)
        if padding is None:
            padding = (dilation * (kernel[0] - 1) // 2, dilation * (kernel[1] - 1) // 2)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=padding,
                              dilation=dilation, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=1e-5, momentum=RFB_BN_MOMENTUM)
        self.relu = relu

    @property
    def out_channels(self) -> int:
        return self.conv.out_channels

    def forward(self, x: Tensor) -> Tensor:
        x = self.bn(self.conv(x))
        return torch.relu(x) if self.relu else x


def _branch(in_channels: int, layers: Sequence[tuple[int, Kernel, int, int]]) -> nn.Sequential:
    """One RFB branch from ``(out_channels, kernel, stride, dilation)`` rows; the last conv has no ReLU."""
    modules = []
    channels = in_channels
    for index, (out_channels, kernel, stride, dilation) in enumerate(layers):
        modules.append(ConvBN(channels, out_channels, kernel, stride, dilation, relu=index < len(layers) - 1))
        channels = out_channels
    return nn.Sequential(*modules)


class _MultiBranchBlock(nn.Module):
    """Branches concatenated, a linear 1x1 merge, ``relu(merge * scale + shortcut(x))``."""

    branches: nn.ModuleList

    def _finish(self, in_channels: int, out_channels: int, stride: int, scale: float) -> None:
        merged = sum(branch[-1].out_channels for branch in self.branches)
        self.merge = ConvBN(merged, out_channels, 1, relu=False)
        self.shortcut = ConvBN(in_channels, out_channels, 1, stride=stride, relu=False)
        self.scale = float(scale)
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    def forward(self, x: Tensor) -> Tensor:
        merged = self.merge(torch.cat([branch(x) for branch in self.branches], dim=1))
        return torch.relu(merged * self.scale + self.shortcut(x))


class RFBBlock(_MultiBranchBlock):
    """Receptive Field Block: three branches ending in 3x3 convs of dilation v, v+1, 2v+1.

    ``[B, in, H, W] -> [B, out, ceil(H / stride), ceil(W / stride)]``; ``in`` must be a
    multiple of 8 (inner width in/8). See the module docstring for the layers.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1,
                 scale: float = 1.0) -> None:
        super().__init__()
        if in_channels % 8 or in_channels < 16:
            raise ValueError(f"RFBBlock: in_channels must be a multiple of 8 and >= 16, got {in_channels}")
        w, v = in_channels // 8, dilation
        self.dilation = v
        self.branches = nn.ModuleList([
            _branch(in_channels, [(2 * w, 1, stride, 1), (2 * w, 3, 1, v)]),
            _branch(in_channels, [(w, 1, 1, 1), (2 * w, 3, stride, 1), (2 * w, 3, 1, v + 1)]),
            _branch(in_channels, [(w, 1, 1, 1), (w // 2 * 3, 3, 1, 1), (2 * w, 3, stride, 1),
                                  (2 * w, 3, 1, 2 * v + 1)]),
        ])
        self._finish(in_channels, out_channels, stride, scale)


class RFBsBlock(_MultiBranchBlock):
    """RFB-s: four branches with 1x1, 3x1 and 1x3 convs ending in 3x3 convs of dilation 1, 3, 3, 5.

    ``[B, in, H, W] -> [B, out, H, W]``; ``in`` must be a multiple of 16 (inner width in/4).
    """

    def __init__(self, in_channels: int, out_channels: int, scale: float = 1.0) -> None:
        super().__init__()
        if in_channels % 16:
            raise ValueError(f"RFBsBlock: in_channels must be a multiple of 16, got {in_channels}")
        w = in_channels // 4
        self.branches = nn.ModuleList([
            _branch(in_channels, [(w, 1, 1, 1), (w, 3, 1, 1)]),
            _branch(in_channels, [(w, 1, 1, 1), (w, (3, 1), 1, 1), (w, 3, 1, 3)]),
            _branch(in_channels, [(w, 1, 1, 1), (w, (1, 3), 1, 1), (w, 3, 1, 3)]),
            _branch(in_channels, [(w // 2, 1, 1, 1), (w // 4 * 3, (1, 3), 1, 1), (w, (3, 1), 1, 1),
                                  (w, 3, 1, 5)]),
        ])
        self._finish(in_channels, out_channels, 1, scale)


def _conv_pair(in_channels: int, mid_channels: int, out_channels: int, kernel_size: int,
               padding: int) -> nn.Sequential:
    return nn.Sequential(ConvBN(in_channels, mid_channels, 1),
                         ConvBN(mid_channels, out_channels, kernel_size, padding=padding))


def _init_rfb_parts(module: nn.Module) -> None:
    """The authors' initialisation of the parts they add: Kaiming-normal (fan_out) convs,
    BatchNorm weight 1 and bias 0."""
    for sub in module.modules():
        if isinstance(sub, ConvBN):
            nn.init.kaiming_normal_(sub.conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.ones_(sub.bn.weight)
            nn.init.zeros_(sub.bn.bias)


def rfb_vgg16_backbone(variant: str = "rfb300") -> VGG16Backbone:
    """SSD's VGG16 base with RFB Net's parts (``"rfb300"`` or ``"rfb512"``; see the module docstring)."""
    if variant == "rfb300":
        extras = [RFBBlock(1024, 512, stride=2, dilation=2), RFBBlock(512, 256, stride=2, dilation=2),
                  _conv_pair(256, 128, 256, 3, 0), _conv_pair(256, 128, 256, 3, 0)]
    elif variant == "rfb512":
        extras = [RFBBlock(1024, 512, stride=2, dilation=2), RFBBlock(512, 256, stride=2, dilation=2),
                  RFBBlock(256, 256, stride=2, dilation=1), RFBBlock(256, 256, stride=2, dilation=1),
                  _conv_pair(256, 128, 256, 4, 1)]
    else:
        raise ValueError(f"variant must be 'rfb300' or 'rfb512', got {variant!r}")
    out_channels = [512, 1024, 512, 256] + [256] * (len(extras) - 2)
    backbone = VGG16Backbone(
        "ssd300" if variant == "rfb300" else "ssd512", conv4_3_part=RFBsBlock(512, 512),
        conv4_3_name="rfb_s", fc7_part=RFBBlock(1024, 1024, stride=1, dilation=2), extras=extras,
        out_channels=out_channels)
    for layer in backbone.vgg:
        if isinstance(layer, nn.Conv2d):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
    _init_rfb_parts(backbone)
    return backbone


_RFB_ATROUS_ONLY = ("RFB Net is defined on the atrous VGG16 base only; its RFB block on fc7 takes "
                    "1024 channels")


@register_model("rfb300")
def rfb300(num_classes: int = 21, priors: PriorConfig | str | None = None, *,
           aspect_ratios: Sequence[Sequence[float]] | None = None, levels: Sequence[int] | None = None,
           atrous: bool | None = None) -> SSD:
    """RFB Net300: VGG16 with RFB-s/RFB blocks, 6 levels, [6, 6, 6, 6, 4, 4] boxes, 11,620 priors.

    ``aspect_ratios`` and ``levels`` as ``ssd300`` (``ssd_ext.models.switches``); ``atrous`` may
    only be ``True`` (or ``None``).
    """
    check_atrous(atrous, "rfb300", (True,), _RFB_ATROUS_ONLY)
    backbone = rfb_vgg16_backbone("rfb300")
    model = assemble_ssd("rfb300", backbone, resolve_priors(priors, RFB300_VOC), num_classes,
                        aspect_ratios=aspect_ratios, levels=levels)
    model.cpu_inference_memory_format = torch.channels_last
    return model


@register_model("rfb512")
def rfb512(num_classes: int = 21, priors: PriorConfig | str | None = None, *,
           aspect_ratios: Sequence[Sequence[float]] | None = None, levels: Sequence[int] | None = None,
           atrous: bool | None = None) -> SSD:
    """RFB Net512: 7 levels, [6, 6, 6, 6, 6, 4, 4] boxes, 32,756 priors. Switches as :func:`rfb300`."""
    check_atrous(atrous, "rfb512", (True,), _RFB_ATROUS_ONLY)
    backbone = rfb_vgg16_backbone("rfb512")
    model = assemble_ssd("rfb512", backbone, resolve_priors(priors, RFB512_VOC), num_classes,
                        aspect_ratios=aspect_ratios, levels=levels)
    model.cpu_inference_memory_format = torch.channels_last
    return model


class RFBSmallBackbone(SmallBackbone):
    """:class:`SmallBackbone` with RFB Net's two parts: RFB-s on the first level (20x20; the trunk
    continues from the raw map) and an RFB (stride 1, v = 1) on the second (10x10; the trunk
    continues from it). For the synthetic set and tests; not a published model.
    """

    def __init__(self, width: int = 32) -> None:
        width = check_width(width, 8, "rfb_small")
        super().__init__(width)
        self.rfb_s = RFBsBlock(2 * width, 2 * width)
        self.rfb = RFBBlock(4 * width, 4 * width, stride=1, dilation=1)
        _init_rfb_parts(self.rfb_s)
        _init_rfb_parts(self.rfb)

    def select_levels(self, levels: Sequence[int]) -> None:
        """As :meth:`SmallBackbone.select_levels`; the RFB-s part becomes ``nn.Identity`` when
        level 0 is not kept, and the RFB part too when only level 0 is."""
        super().select_levels(levels)
        if 0 not in self.levels:
            self.rfb_s = nn.Identity()
        if len(self.stages) < 2:
            self.rfb = nn.Identity()

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.stages[0](self.stem(x))
        features = [self.rfb_s(x)]
        if len(self.stages) > 1:
            x = self.rfb(self.stages[1](x))
            features.append(x)
        for stage in self.stages[2:]:
            x = stage(x)
            features.append(x)
        return self.selected(features)


@register_model("rfb_small")
def rfb_small(num_classes: int = 21, priors: PriorConfig | str | None = None, width: int = 32, *,
              aspect_ratios: Sequence[Sequence[float]] | None = None, levels: Sequence[int] | None = None,
              atrous: bool | None = None) -> SSD:
    """Small CPU RFB model: 160 px, 5 levels, [6, 6, 6, 6, 4] boxes, 3208 priors (``RFB_SMALL_160``).

    ``aspect_ratios`` and ``levels`` as ``ssd_small``; no atrous choice (``atrous`` must stay ``None``).
    """
    check_atrous(atrous, "rfb_small", (), "its small backbone has no fc6/fc7 to make atrous")
    backbone = RFBSmallBackbone(width)
    return assemble_ssd("rfb_small", backbone, resolve_priors(priors, RFB_SMALL_160), num_classes,
                        aspect_ratios=aspect_ratios, levels=levels)
