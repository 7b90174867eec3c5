"""The SSD paper's VGG16 base network and extra feature layers (SSD300 and SSD512).

Module names mirror ssd.pytorch so checkpoints map with a short, readable table
(see ``weights.py``):

- ``vgg``: an ``nn.Sequential`` of 35 layers with ssd.pytorch's (and torchvision ``vgg16.features``')
  indices: convs at 0, 2, 5, 7, 10, 12, 14, 17, 19, 21 (conv4_3, whose ReLU is 22), 24, 26, 28;
  pool3 (16) uses ``ceil_mode`` so 75 -> 38 at 300 px; pool5 (30) is 3x3 stride 1 pad 1;
  fc6 (31) is a 3x3 conv with dilation 6 and 1024 channels; fc7 (33) is 1x1, 1024 channels.
- ``l2norm``: :class:`L2Norm` on conv4_3 with a learned per-channel scale initialised to 20.
- ``extras``: one ``nn.Sequential(conv1x1, ReLU, conv3x3, ReLU)`` per extra level
  (ssd.pytorch's flat ``extras.{2k}`` / ``extras.{2k+1}`` are ours ``extras.k.0`` / ``extras.k.2``).

``atrous=False`` builds the paper's non-atrous variant (SSD paper, Sec. 3.2 "Atrous is faster":
"the full VGG16, keeping pool5 with 2x2-s2 and not subsampling parameters from fc6 and fc7, and
add conv5_3 for prediction"): pool5 is 2x2 stride 2 (ceil mode, as Caffe pools: 19 -> 10 at
300 px), fc6 is VGG16's 7x7 conv with 4096 channels (padding 3, so the map keeps its size), fc7
1x1 with 4096 channels, and conv5_3 (raw, no L2Norm) predicts. The levels are conv4_3, conv5_3,
fc7 and one extra block fewer, which gives the same feature map sizes as the atrous model
(38, 19, 10, 5, 3, 1 at 300 px; 64 ... 1 at 512 px) and so the same priors. The paper does not
list the extra layers of this variant; ours start from fc7's 4096 channels and keep the atrous
model's widths.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["L2Norm", "VGG16Backbone", "vgg16_base_layers", "CONV4_3_RELU_INDEX", "CONV5_3_RELU_INDEX"]

# Index in ``vgg`` after which conv4_3's (ReLU'd) output is taken as the first feature map.
CONV4_3_RELU_INDEX = 22
# Index of conv5_3's ReLU: the non-atrous variant's second feature map.
CONV5_3_RELU_INDEX = 29

_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "C", 512, 512, 512, "M", 512, 512, 512)


class L2Norm(nn.Module):
    """Channel-wise L2 normalisation with a learned per-channel scale (ParseNet, SSD's conv4_3).

    ``y = weight[c] * x / max(||x||_2 over channels, eps)``; computed in float32 or better
    (float16/bfloat16 inputs in float32, since the norm of 512 half-precision channels loses too
    much precision; float64 stays float64), returned in the input's dtype.
    """

    def __init__(self, channels: int, scale: float = 20.0, eps: float = 1e-10) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        math_dtype = torch.promote_types(x.dtype, torch.float32)
        normalised = F.normalize(x.to(math_dtype), p=2.0, dim=1, eps=self.eps)
        return (normalised * self.weight.to(math_dtype).view(1, -1, 1, 1)).to(x.dtype)


def vgg16_base_layers(atrous: bool = True) -> list[nn.Module]:
    """The 35 layers of SSD's VGG16 base, conv1_1 to fc7's ReLU (ssd.pytorch's ``vgg`` list).

    ``atrous=False``: pool5 2x2 stride 2, fc6 7x7 (4096 channels), fc7 1x1 (4096), at the same
    indices (30, 31, 33), so ImageNet VGG16's fc weights load without subsampling.
    """
    layers: list[nn.Module] = []
    channels = 3
    for item in _VGG16_CFG:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        elif item == "C":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True))
        else:
            layers += [nn.Conv2d(channels, item, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            channels = item
    if not atrous:
        return layers + [
            nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True),  # pool5 as in VGG16
            nn.Conv2d(512, 4096, kernel_size=7, padding=3),  # fc6, full
            nn.ReLU(inplace=True),
            nn.Conv2d(4096, 4096, kernel_size=1),  # fc7, full
            nn.ReLU(inplace=True),
        ]
    layers += [
        nn.MaxPool2d(kernel_size=3, stride=1, padding=1),  # pool5
        nn.Conv2d(512, 1024, kernel_size=3, padding=6, dilation=6),  # fc6, atrous
        nn.ReLU(inplace=True),
        nn.Conv2d(1024, 1024, kernel_size=1),  # fc7
        nn.ReLU(inplace=True),
    ]
    return layers


def _extra_block(in_channels: int, mid_channels: int, out_channels: int, kernel_size: int, stride: int,
                 padding: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, mid_channels, kernel_size=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(mid_channels, out_channels, kernel_size=kernel_size, stride=stride, padding=padding),
        nn.ReLU(inplace=True),
    )


def _extras(variant: str, atrous: bool = True) -> nn.ModuleList:
    if not atrous:
        # fc7 is already at the third map size (10 at 300 px, 16 at 512 px): the atrous model's
        # blocks without the first, the first one taking fc7's 4096 channels.
        blocks = list(_extras(variant))[1:]
        first = blocks[0]
        blocks[0] = _extra_block(4096, first[0].out_channels, first[2].out_channels, first[2].kernel_size[0],
                                 first[2].stride[0], first[2].padding[0])
        return nn.ModuleList(blocks)
    if variant == "ssd300":
        # 19 -> 10 -> 5 -> 3 -> 1 (the last two are unpadded 3x3 convs).
        blocks = [
            _extra_block(1024, 256, 512, 3, 2, 1),
            _extra_block(512, 128, 256, 3, 2, 1),
            _extra_block(256, 128, 256, 3, 1, 0),
            _extra_block(256, 128, 256, 3, 1, 0),
        ]
    elif variant == "ssd512":
        # 32 -> 16 -> 8 -> 4 -> 2 -> 1 (Caffe SSD512: strided 3x3 convs, then a 4x4 conv, pad 1).
        blocks = [
            _extra_block(1024, 256, 512, 3, 2, 1),
            _extra_block(512, 128, 256, 3, 2, 1),
            _extra_block(256, 128, 256, 3, 2, 1),
            _extra_block(256, 128, 256, 3, 2, 1),
            _extra_block(256, 128, 256, 4, 1, 1),
        ]
    else:
        raise ValueError(f"variant must be 'ssd300' or 'ssd512', got {variant!r}")
    return nn.ModuleList(blocks)


class VGG16Backbone(nn.Module):
    """SSD's VGG16 feature extractor, built from replaceable parts.

    SSD300 (300 px): 6 maps, channels [512, 1024, 512, 256, 256, 256], sizes 38, 19, 10, 5, 3, 1.
    SSD512 (512 px): 7 maps, channels [512, 1024, 512, 256, 256, 256, 256], sizes 64 ... 1.

    Parts (``forward`` is the same for every variant; a family such as RFB Net passes its own):

    - ``vgg``: the 35 base layers (conv1_1 ... fc7's ReLU). Two taps: after index
      :data:`CONV4_3_RELU_INDEX` (conv4_3's ReLU) and at the end (fc7's ReLU).
    - the conv4_3 part (``conv4_3_part``; registered as ``conv4_3_name``, default ``"l2norm"``):
      maps the conv4_3 tap to the first feature map; the trunk continues from the *raw* conv4_3
      output. SSD: :class:`L2Norm`.
    - ``fc7_part``: maps the fc7 tap to the second feature map, and the trunk continues from its
      output. SSD: ``nn.Identity`` (no parameters, so no state-dict keys).
    - ``extras``: ``nn.ModuleList``; each block maps the previous map to the next feature map.

    With ``atrous=False`` (see the module docstring) a third tap after conv5_3's ReLU
    (:data:`CONV5_3_RELU_INDEX`) gives the second feature map, fc7 the third.

    Args:
        variant: ``"ssd300"`` or ``"ssd512"``: the default extras (and the SSD parts).
        atrous: the paper's atrous base (True) or the full VGG16 fc6/fc7 layout (False).
        conv4_3_part, fc7_part, extras: replace the SSD parts (``None`` keeps them).
        conv4_3_name: attribute (and state-dict prefix) of the conv4_3 part.
        out_channels: channels of each feature map; required when ``conv4_3_part``,
            ``fc7_part`` or ``extras`` is given.

    Attributes:
        levels: the feature maps ``forward`` returns (indices into all of them), or ``None`` for
            all; set by :meth:`select_levels`.
        out_channels: channels of each returned feature map.
    """

    def __init__(self, variant: str = "ssd300", *, atrous: bool = True, conv4_3_part: nn.Module | None = None,
                 fc7_part: nn.Module | None = None, extras: Sequence[nn.Module] | None = None,
                 conv4_3_name: str = "l2norm", out_channels: Sequence[int] | None = None) -> None:
        super().__init__()
        if variant not in ("ssd300", "ssd512"):
            raise ValueError(f"variant must be 'ssd300' or 'ssd512', got {variant!r}")
        if not isinstance(atrous, bool):
            raise TypeError(f"VGG16Backbone: atrous must be a bool, got {atrous!r}")
        custom = conv4_3_part is not None or fc7_part is not None or extras is not None
        if custom and out_channels is None:
            raise ValueError("VGG16Backbone: out_channels is required when parts are replaced")
        self.variant = variant
        self.atrous = atrous
        self.conv4_3_name = conv4_3_name
        self.vgg = nn.Sequential(*vgg16_base_layers(atrous))
        self.add_module(conv4_3_name, conv4_3_part if conv4_3_part is not None else L2Norm(512, scale=20.0))
        self.fc7_part = fc7_part if fc7_part is not None else nn.Identity()
        self.extras = nn.ModuleList(extras) if extras is not None else _extras(variant, atrous)
        trunk = [512, 1024] if atrous else [512, 512, 4096]
        if out_channels is None:
            out_channels = trunk + [block[2].out_channels for block in self.extras]
        self.out_channels = [int(c) for c in out_channels]
        if len(self.out_channels) != len(trunk) + len(self.extras):
            raise ValueError(f"VGG16Backbone: {len(self.out_channels)} out_channels for "
                             f"{len(trunk) + len(self.extras)} feature maps")
        self.levels: tuple[int, ...] | None = None
        if not custom:
            self.reset_parameters()

    @property
    def trunk_levels(self) -> int:
        """Feature maps taken from the VGG trunk before the extras (2 atrous, 3 not)."""
        return 2 if self.atrous else 3

    def select_levels(self, levels: Sequence[int]) -> None:
        """Return only the feature maps ``levels`` (increasing indices into all of them, checked
        by the caller) from now on.

        Layers no kept level needs are replaced, so none is computed and no parameter is left
        without a gradient: the extras past the deepest kept level are removed, the conv4_3 part
        becomes ``nn.Identity`` when level 0 is not kept, and when no level at or after fc7 is
        kept the trunk layers after the deepest tap become ``nn.Identity`` (the other layers keep
        their indices and state-dict keys).
        """
        if self.levels is not None:
            raise ValueError("VGG16Backbone: levels were already selected")
        levels = tuple(int(i) for i in levels)
        deepest = levels[-1]
        self.extras = nn.ModuleList(list(self.extras)[:max(0, deepest + 1 - self.trunk_levels)])
        if 0 not in levels:
            self.add_module(self.conv4_3_name, nn.Identity())
        if deepest < self.trunk_levels - 1:
            cut = CONV4_3_RELU_INDEX + 1 if deepest == 0 else CONV5_3_RELU_INDEX + 1
            for index in range(cut, len(self.vgg)):
                self.vgg[index] = nn.Identity()
            self.fc7_part = nn.Identity()
        self.out_channels = [self.out_channels[i] for i in levels]
        self.levels = levels

    @property
    def conv4_3_part(self) -> nn.Module:
        return getattr(self, self.conv4_3_name)

    def reset_parameters(self) -> None:
        """Xavier-uniform convs with zero bias (as ssd.pytorch and torchvision); L2Norm scale 20."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, L2Norm):
                nn.init.constant_(module.weight, 20.0)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.vgg[:CONV4_3_RELU_INDEX + 1](x)
        features = [self.conv4_3_part(x)]
        if not self.atrous:
            x = self.vgg[CONV4_3_RELU_INDEX + 1:CONV5_3_RELU_INDEX + 1](x)
            features.append(x)  # pool5 below makes a new tensor: the in-place ReLUs leave it intact
            x = self.vgg[CONV5_3_RELU_INDEX + 1:](x)
        else:
            x = self.vgg[CONV4_3_RELU_INDEX + 1:](x)
        x = self.fc7_part(x)
        features.append(x)
        for block in self.extras:
            x = block(x)
            features.append(x)
        return features if self.levels is None else [features[i] for i in self.levels]
