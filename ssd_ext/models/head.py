"""The SSD multibox head: one 3x3 box-regression conv and one 3x3 classification conv per level."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .registry import check_num_classes

__all__ = ["SSDHead"]


class SSDHead(nn.Module):
    """Per-level 3x3 ``loc`` and ``conf`` convolutions, flattened into the prior order.

    Args:
        in_channels: channels of each level's feature map.
        boxes_per_location: anchors per cell at each level (``PriorConfig.boxes_per_location``).
        num_classes: classes including background.

    ``forward(features)`` maps one ``[B, C_l, H_l, W_l]`` map per level to
    ``(loc [B, P, 4], conf_logits [B, P, num_classes])`` with ``P = sum(H_l * W_l * A_l)``: each
    conv's ``(B, A*K, H, W)`` output is permuted to ``(B, H, W, A*K)`` and flattened, so channel
    ``a*K + k`` of cell (i, j) is value k of that cell's a-th prior (Caffe's and ssd.pytorch's
    order). Convs are Xavier-uniform with zero bias.
    """

    def __init__(self, in_channels: Sequence[int], boxes_per_location: Sequence[int],
                 num_classes: int) -> None:
        super().__init__()
        num_classes = check_num_classes(num_classes)
        if len(in_channels) != len(boxes_per_location):
            raise ValueError(f"SSDHead: {len(in_channels)} in_channels but {len(boxes_per_location)} "
                             "boxes_per_location entries; one of each per level")
        self.num_classes = num_classes
        self.boxes_per_location = [int(a) for a in boxes_per_location]
        levels = list(zip(in_channels, self.boxes_per_location, strict=True))
        self.loc = nn.ModuleList(nn.Conv2d(c, a * 4, kernel_size=3, padding=1) for c, a in levels)
        self.conf = nn.ModuleList(nn.Conv2d(c, a * num_classes, kernel_size=3, padding=1) for c, a in levels)
        for conv in [*self.loc, *self.conf]:
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)

    @property
    def num_levels(self) -> int:
        return len(self.loc)

    def forward(self, features: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        if len(features) != self.num_levels:
            raise ValueError(f"SSDHead has {self.num_levels} levels but got {len(features)} feature maps")
        batch = features[0].shape[0]
        locs, confs = [], []
        for feature, loc_conv, conf_conv, anchors in zip(features, self.loc, self.conf,
                                                         self.boxes_per_location, strict=True):
            height, width = feature.shape[-2:]
            priors = height * width * anchors  # explicit, so an empty batch reshapes too
            locs.append(loc_conv(feature).permute(0, 2, 3, 1).reshape(batch, priors, 4))
            confs.append(conf_conv(feature).permute(0, 2, 3, 1).reshape(batch, priors, self.num_classes))
        return torch.cat(locs, dim=1), torch.cat(confs, dim=1)
