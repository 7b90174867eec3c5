"""MobileNetV3-Large (Howard et al., ICCV 2019) as an SSDLite backbone.

The layer table is the paper's Table 1 (``LARGE_BLOCKS``); the "reduced tail" of its Section
6.3 halves the channels of the last three blocks and of the last 1x1 conv (160 -> 80, 960 ->
480), as torchvision builds ``ssdlite320_mobilenet_v3_large`` when no ImageNet backbone is
loaded (and as its COCO weights were trained). Submodule layout and names follow torchvision's
``mobilenetv3.py`` where that costs nothing (``block.N``, ``fc1``/``fc2``, conv-norm-activation
triples indexed 0/1/2), so converting its checkpoints is a rename of prefixes only
(``weights.from_torchvision_ssdlite``).

The two feature maps an SSDLite detector takes from it (Section 6.3 of the paper): the output
of the 1x1 *expansion* conv of the C4 block (the first stride-32 block; 672 channels at stride
16), and the last layer (480 channels at stride 32). The C4 block is split there: ``stage_c4``
ends with its expansion, ``stage_c5`` starts with its depthwise conv. This is valid because
the C4 block has stride 2 and so no residual connection across the split.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor, nn

__all__ = ["BlockSpec", "ConvNormActivation", "InvertedResidual", "LARGE_BLOCKS", "MobileNetV3Backbone",
           "SqueezeExcitation", "make_divisible", "set_batchnorm_folding", "ssdlite_batch_norm"]

# BatchNorm as torchvision's SSDLite trains it (eps 0.001, momentum 0.03, PyTorch's convention:
# the weight of the new batch's statistics); the classification MobileNetV3 uses momentum 0.01.
ssdlite_batch_norm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)

NormLayer = Callable[[int], nn.Module]
Activation = Callable[..., nn.Module] | None


def make_divisible(value: float, divisor: int = 8) -> int:
    """``value`` rounded to the nearest multiple of ``divisor``, never more than 10 % below it
    (MobileNetV2's channel rule, used for the squeeze-excitation widths)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class ConvNormActivation(nn.Sequential):
    """Conv (no bias) -> norm -> optional activation, "same" padding; children ``0``, ``1``, ``2``.

    In eval mode a BatchNorm with running statistics is folded into the convolution on the fly
    (weight * gamma / sqrt(var + eps), bias beta - mean * that scale): the same function up to
    float rounding (about 1e-6 relative per layer), without a pass over the feature map. The
    fold is recomputed at every call from the current parameters (a pass over the weights, far
    smaller than the maps), so nothing is cached; the BatchNorm module itself is not called
    (its hooks do not run). ``fold_in_eval = False`` (or :func:`set_batchnorm_folding`) runs
    the three layers as they are, e.g. to reproduce another library's outputs bit for bit.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
                 groups: int = 1, norm: NormLayer = ssdlite_batch_norm,
                 activation: Activation = nn.ReLU6) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, (kernel_size - 1) // 2, groups=groups,
                      bias=False),
            norm(out_channels),
        ]
        if activation is not None:
            # In place: an out-of-place activation allocates a new map per layer, which in the
            # profile costs more than the activation itself on the CPU.
            layers.append(activation(inplace=True))
        super().__init__(*layers)
        self.out_channels = out_channels
        self.fold_in_eval = True

    def forward(self, x: Tensor) -> Tensor:
        conv, norm = self[0], self[1]
        if (self.training or not self.fold_in_eval or not isinstance(norm, nn.BatchNorm2d)
                or norm.running_var is None):
            return super().forward(x)
        scale = torch.rsqrt(norm.running_var + norm.eps)
        bias = -norm.running_mean * scale
        if norm.affine:
            scale = scale * norm.weight
            bias = bias * norm.weight + norm.bias
        weight = conv.weight * scale.view(-1, 1, 1, 1)
        if conv.kernel_size == (1, 1) and conv.groups == 1 and conv.stride == (1, 1) \
                and x.is_contiguous(memory_format=torch.channels_last):
            # A 1x1 conv on a channels_last map is a matrix product over the channels of the
            # (N, H, W, C) memory; run as one, it skips the layout copies of PyTorch's 1x1
            # conv path on one CPU thread (about 10 % of the forward at batch 1 and 8).
            x = nn.functional.linear(x.permute(0, 2, 3, 1), weight.flatten(1), bias).permute(0, 3, 1, 2)
        else:
            x = nn.functional.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
        return self[2](x) if len(self) > 2 else x


def set_batchnorm_folding(model: nn.Module, enabled: bool) -> nn.Module:
    """Turn the eval-mode BatchNorm folding of every :class:`ConvNormActivation` in ``model`` on
    (the default: faster) or off (the unfolded layers' exact arithmetic); returns ``model``."""
    for module in model.modules():
        if isinstance(module, ConvNormActivation):
            module.fold_in_eval = bool(enabled)
    return model


class SqueezeExcitation(nn.Module):
    """``x * hardsigmoid(fc2(relu(fc1(mean_hw(x)))))`` with 1x1 convs ``fc1`` / ``fc2``."""

    def __init__(self, channels: int, squeeze_channels: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        scale = nn.functional.adaptive_avg_pool2d(x, 1)
        scale = self.fc2(nn.functional.relu(self.fc1(scale)))
        return x * nn.functional.hardsigmoid(scale)


@dataclass(frozen=True)
class BlockSpec:
    """One bottleneck row of the paper's Table 1."""

    in_channels: int
    kernel: int
    expanded: int
    out_channels: int
    squeeze_excite: bool
    hardswish: bool
    stride: int


def _spec(in_channels: int, kernel: int, expanded: int, out_channels: int, se: bool, activation: str,
          stride: int) -> BlockSpec:
    return BlockSpec(in_channels, kernel, expanded, out_channels, se, activation == "HS", stride)


# Table 1 of the paper (input 224: the strides, not the sizes, matter here). "RE" is ReLU,
# "HS" hard-swish; the last three rows are halved when the tail is reduced.
LARGE_BLOCKS = (
    _spec(16, 3, 16, 16, False, "RE", 1),
    _spec(16, 3, 64, 24, False, "RE", 2),
    _spec(24, 3, 72, 24, False, "RE", 1),
    _spec(24, 5, 72, 40, True, "RE", 2),
    _spec(40, 5, 120, 40, True, "RE", 1),
    _spec(40, 5, 120, 40, True, "RE", 1),
    _spec(40, 3, 240, 80, False, "HS", 2),
    _spec(80, 3, 200, 80, False, "HS", 1),
    _spec(80, 3, 184, 80, False, "HS", 1),
    _spec(80, 3, 184, 80, False, "HS", 1),
    _spec(80, 3, 480, 112, True, "HS", 1),
    _spec(112, 3, 672, 112, True, "HS", 1),
    _spec(112, 5, 672, 160, True, "HS", 2),  # C4: the first block at stride 32
    _spec(160, 5, 960, 160, True, "HS", 1),
    _spec(160, 5, 960, 160, True, "HS", 1),
)
_C4_INDEX = 12


def _reduced_tail(blocks: tuple[BlockSpec, ...]) -> tuple[BlockSpec, ...]:
    """Halve the channels from the C4 block's output on (the paper's Section 6.3)."""
    reduced = list(blocks[:_C4_INDEX])
    for index, spec in enumerate(blocks[_C4_INDEX:]):
        in_channels = spec.in_channels if index == 0 else spec.in_channels // 2
        expanded = spec.expanded if index == 0 else spec.expanded // 2
        reduced.append(BlockSpec(in_channels, spec.kernel, expanded, spec.out_channels // 2,
                                 spec.squeeze_excite, spec.hardswish, spec.stride))
    return tuple(reduced)


class InvertedResidual(nn.Module):
    """MobileNetV3 bottleneck: 1x1 expansion (when wider), kxk depthwise, optional
    squeeze-excitation, linear 1x1 projection, and a residual when stride 1 keeps the width.

    ``block`` holds the layers in that order (torchvision's names).
    """

    def __init__(self, spec: BlockSpec, norm: NormLayer = ssdlite_batch_norm) -> None:
        super().__init__()
        activation = nn.Hardswish if spec.hardswish else nn.ReLU
        layers: list[nn.Module] = []
        if spec.expanded != spec.in_channels:
            layers.append(ConvNormActivation(spec.in_channels, spec.expanded, 1, norm=norm,
                                             activation=activation))
        layers.append(ConvNormActivation(spec.expanded, spec.expanded, spec.kernel, spec.stride,
                                         groups=spec.expanded, norm=norm, activation=activation))
        if spec.squeeze_excite:
            layers.append(SqueezeExcitation(spec.expanded, make_divisible(spec.expanded // 4)))
        layers.append(ConvNormActivation(spec.expanded, spec.out_channels, 1, norm=norm, activation=None))
        self.block = nn.Sequential(*layers)
        self.use_residual = spec.stride == 1 and spec.in_channels == spec.out_channels
        self.out_channels = spec.out_channels

    def forward(self, x: Tensor) -> Tensor:
        out = self.block(x)
        if self.use_residual:
            out += x  # in place on the projection's fresh output (which its backward does not need)
        return out


class MobileNetV3Backbone(nn.Module):
    """MobileNetV3-Large trunk returning ``[C4 expansion (672 ch, stride 16), last layer (stride 32)]``.

    Args:
        reduced_tail: halve the channels after C4 (480 at the last layer; torchvision's SSDLite
            without an ImageNet backbone, and its COCO weights) or not (960).
        norm: the normalisation layer factory (``ssdlite_batch_norm`` by default).

    ``stage_c4``: the stem (3x3 stride 2, 16 ch, hard-swish), blocks 1-12 and the C4 block's
    expansion; ``stage_c5``: the rest of the C4 block, blocks 14-15 and the last 1x1 conv
    (6x the last block's width, hard-swish). ``out_channels`` lists the two maps' channels.
    """

    def __init__(self, reduced_tail: bool = True, norm: NormLayer = ssdlite_batch_norm) -> None:
        super().__init__()
        specs = _reduced_tail(LARGE_BLOCKS) if reduced_tail else LARGE_BLOCKS
        blocks = [InvertedResidual(spec, norm) for spec in specs]
        c4_block = blocks[_C4_INDEX].block
        stem = ConvNormActivation(3, specs[0].in_channels, 3, 2, norm=norm, activation=nn.Hardswish)
        self.stage_c4 = nn.Sequential(stem, *blocks[:_C4_INDEX], c4_block[0])
        last_channels = 6 * specs[-1].out_channels
        last = ConvNormActivation(specs[-1].out_channels, last_channels, 1, norm=norm,
                                  activation=nn.Hardswish)
        # A slice of a Sequential keeps its children's names (1, 2, 3), as in torchvision's split.
        self.stage_c5 = nn.Sequential(c4_block[1:], *blocks[_C4_INDEX + 1:], last)
        self.out_channels = [specs[_C4_INDEX].expanded, last_channels]

    def forward(self, x: Tensor) -> list[Tensor]:
        c4 = self.stage_c4(x)
        return [c4, self.stage_c5(c4)]
