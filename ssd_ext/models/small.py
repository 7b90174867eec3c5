"""A small SSD backbone that trains on a CPU in minutes (160 px input, five feature levels).

Depthwise-separable stages (MobileNet-style, BatchNorm + ReLU) give feature maps of
20x20 (stride 8), 10x10, 5x5, 3x3 and 1x1 at 160 px, matching the ``SSD_SMALL_160`` preset.
About 0.22 M parameters in the backbone at width 32 (0.9 M with 21-class heads); meant for the
synthetic shapes set and for tests, not for VOC/COCO accuracy (docs/BENCHMARKS.md, "Training
the demo", has what it reaches).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from .registry import check_width

__all__ = ["SmallBackbone"]


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                  padding: int | None = None, groups: int = 1) -> nn.Sequential:
    if padding is None:
        padding = kernel_size // 2
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def _separable(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        _conv_bn_relu(in_channels, in_channels, 3, stride, groups=in_channels),
        _conv_bn_relu(in_channels, out_channels, 1),
    )


class SmallBackbone(nn.Module):
    """Compact feature extractor; ``forward`` returns 5 maps with ``out_channels`` channels (or
    the maps ``levels`` after :meth:`select_levels`)."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        w = check_width(width, 2, type(self).__name__)
        self.stem = nn.Sequential(_conv_bn_relu(3, w // 2, 3, 2), _separable(w // 2, w, 2))  # /4
        self.stages = nn.ModuleList([
            nn.Sequential(_separable(w, 2 * w, 2), _separable(2 * w, 2 * w)),  # /8: 20x20
            nn.Sequential(_separable(2 * w, 4 * w, 2), _separable(4 * w, 4 * w)),  # /16: 10x10
            nn.Sequential(_separable(4 * w, 4 * w, 2)),  # /32: 5x5
            nn.Sequential(_separable(4 * w, 4 * w, 2)),  # 3x3
            # 1x1: no BatchNorm, whose batch statistics over one value per channel would make
            # training at batch size 1 fail (and be noisy at small batches).
            nn.Sequential(nn.Conv2d(4 * w, 4 * w, 3, 1, padding=0), nn.ReLU(inplace=True)),
        ])
        self.out_channels = [2 * w, 4 * w, 4 * w, 4 * w, 4 * w]
        self.levels: tuple[int, ...] | None = None
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def select_levels(self, levels: Sequence[int]) -> None:
        """Return only the feature maps ``levels`` (increasing indices, checked by the caller) from
        now on; the stages past the deepest kept level are removed (not computed)."""
        if self.levels is not None:
            raise ValueError(f"{type(self).__name__}: levels were already selected")
        levels = tuple(int(i) for i in levels)
        self.stages = nn.ModuleList(list(self.stages)[:levels[-1] + 1])
        self.out_channels = [self.out_channels[i] for i in levels]
        self.levels = levels

    def selected(self, features: list[Tensor]) -> list[Tensor]:
        """``features`` (one per computed level) reduced to the selected levels."""
        return features if self.levels is None else [features[i] for i in self.levels]

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.stem(x)
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return self.selected(features)
