"""SSD detectors: a backbone giving feature maps, 3x3 loc/conf heads, and priors.

``model(images)`` returns raw head outputs ``(loc [B, P, 4], conf_logits [B, P, C])`` whose
prior axis follows ``model.priors`` (level, row, column, box of the cell): each head's
``(B, A*K, H, W)`` output is permuted to ``(B, H, W, A*K)`` and flattened, so channel
``a*K + k`` of cell (i, j) is value k of the cell's a-th prior. ``model.detect(images)``
post-processes with ``ssd_ext.ops.detect`` and returns torchvision-style dicts with boxes in
input pixel coordinates.

Inputs are normalised images as the backbone's weights expect (see docs/ARCHITECTURE.md,
"Models and weights"); the model does no resizing or normalisation itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .priors import SSD300_VOC, SSD512_VOC, SSD_SMALL_160, PriorConfig, get_preset
from .small import SmallBackbone
from .vgg import VGG16Backbone

__all__ = ["SSD", "ssd300", "ssd512", "ssd_small", "build_model", "MODEL_NAMES"]


class SSD(nn.Module):
    """Single Shot MultiBox Detector over any backbone returning a list of feature maps.

    Args:
        backbone: module mapping ``[B, 3, H, W]`` to one feature map per prior level.
        in_channels: channels of each feature map.
        prior_config: the priors; its ``boxes_per_location`` sets the heads' anchors per cell and
            its ``feature_map_sizes`` must be what the backbone produces at ``image_size``.
        num_classes: classes including background (VOC 21, COCO 81).
        variances: the box coding variances used by ``detect`` (and the loss).

    Attributes:
        priors: ``[P, 4]`` cxcywh non-persistent buffer (follows ``.to(device)``, not saved).
        loc, conf: ``nn.ModuleList`` of 3x3 head convs, one per level.
    """

    def __init__(self, backbone: nn.Module, in_channels: Sequence[int], prior_config: PriorConfig,
                 num_classes: int, variances: tuple[float, float] = (0.1, 0.2)) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes counts the background and must be >= 2, got {num_classes}")
        if len(in_channels) != prior_config.num_levels:
            raise ValueError(
                f"backbone gives {len(in_channels)} feature maps but the prior config has "
                f"{prior_config.num_levels} levels"
            )
        self.backbone = backbone
        self.prior_config = prior_config
        self.num_classes = num_classes
        self.variances = tuple(float(v) for v in variances)
        anchors = prior_config.boxes_per_location
        levels = list(zip(in_channels, anchors, strict=True))
        self.loc = nn.ModuleList(nn.Conv2d(c, a * 4, kernel_size=3, padding=1) for c, a in levels)
        self.conf = nn.ModuleList(nn.Conv2d(c, a * num_classes, kernel_size=3, padding=1) for c, a in levels)
        for conv in [*self.loc, *self.conf]:
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)
        self.register_buffer("priors", prior_config.build(), persistent=False)

    @property
    def image_size(self) -> tuple[int, int]:
        """The ``(h, w)`` input size the priors were made for."""
        size = self.prior_config.image_size
        return (size, size) if isinstance(size, int) else tuple(size)

    @property
    def num_priors(self) -> int:
        return int(self.priors.shape[0])

    def _apply(self, fn, recurse=True):  # noqa: ANN001 - nn.Module's own signature
        # Priors stay float32 (or float64) when the model is cast to half precision: the
        # decode in detect needs them exact, and they are not a learned tensor.
        priors = self.priors
        result = super()._apply(fn, recurse)
        if self.priors.dtype in (torch.float16, torch.bfloat16):
            self.priors = priors.to(device=self.priors.device)
        return result

    def head_outputs(self, features: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """Flatten per-level head outputs into ``(loc [B, P, 4], conf [B, P, C])``."""
        expected = self.prior_config.feature_map_hw
        sizes = [tuple(f.shape[-2:]) for f in features]
        if sizes != expected:
            raise ValueError(
                f"the backbone produced feature maps {sizes} but the priors expect {expected}; "
                f"feed images of size {self.image_size} (h, w) or use a matching PriorConfig"
            )
        batch = features[0].shape[0]
        locs, confs = [], []
        for feature, loc_head, conf_head in zip(features, self.loc, self.conf, strict=True):
            locs.append(loc_head(feature).permute(0, 2, 3, 1).reshape(batch, -1, 4))
            confs.append(conf_head(feature).permute(0, 2, 3, 1).reshape(batch, -1, self.num_classes))
        return torch.cat(locs, dim=1), torch.cat(confs, dim=1)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """``images [B, 3, H, W]`` -> ``(loc [B, P, 4], conf_logits [B, P, C])``."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [B, 3, H, W], got shape {tuple(images.shape)}")
        return self.head_outputs(self.backbone(images))

    @torch.no_grad()
    def detect(self, images: Tensor, score_threshold: float = 0.01, iou_threshold: float = 0.45,
               candidates_per_class: int = 400, max_detections: int = 200,
               image_sizes: Sequence[tuple[int, int]] | None = None) -> list[dict[str, Tensor]]:
        """Run the model and post-process (softmax, decode, per-class NMS, top-k).

        Returns one dict per image: ``boxes [K, 4]`` xyxy in input pixel coordinates
        (x in [0, W], y in [0, H]), ``scores [K]``, ``labels [K]`` int64 (1..C-1), sorted by
        decreasing score. With ``image_sizes`` (one ``(H, W)`` per image: the sizes of the
        original pictures that were resized to the input), the boxes are in those pictures'
        pixels instead (x in [0, W_i], y in [0, H_i]). Runs in eval mode and restores the
        previous mode.
        """
        from .. import ops

        scales = None
        if image_sizes is not None:  # checked before the forward pass, whose cost it would waste
            sizes = list(image_sizes)
            if len(sizes) != images.shape[0]:
                raise ValueError(f"image_sizes must give one (H, W) per image ({images.shape[0]}), "
                                 f"got {len(sizes)}")
            scales = []
            for size in sizes:
                try:
                    pair = [float(v) for v in size]
                except (TypeError, ValueError):
                    pair = []
                if len(pair) != 2 or not all(0 < v < float("inf") for v in pair):
                    raise ValueError(f"image_sizes entries must be positive (H, W) pairs, got {size!r}")
                scales.append((pair[1], pair[0]))
        was_training = self.training
        self.eval()
        try:
            loc, conf = self(images)
        finally:
            self.train(was_training)
        results = ops.detect(
            loc.float(), conf.float(), self.priors.float(), score_threshold=score_threshold,
            iou_threshold=iou_threshold, candidates_per_class=candidates_per_class,
            max_detections=max_detections, variances=self.variances,
        )
        if scales is None:
            height, width = images.shape[-2:]
            scales = [(float(width), float(height))] * len(results)
        detections = []
        for r, (width, height) in zip(results, scales, strict=True):
            scale = r["boxes"].new_tensor([width, height, width, height])
            detections.append({"boxes": r["boxes"] * scale, "scores": r["scores"], "labels": r["labels"]})
        return detections


def _resolve(priors: PriorConfig | str | None, default: PriorConfig) -> PriorConfig:
    if priors is None:
        return default
    if isinstance(priors, str):
        return get_preset(priors)
    if not isinstance(priors, PriorConfig):
        raise TypeError(f"priors must be a PriorConfig, a preset name or None, got {type(priors).__name__}")
    return priors


def ssd300(num_classes: int = 21, priors: PriorConfig | str | None = None) -> SSD:
    """SSD300 with the paper's VGG16 base (6 levels, [4, 6, 6, 6, 4, 4] boxes; 8732 priors)."""
    backbone = VGG16Backbone("ssd300")
    return SSD(backbone, backbone.out_channels, _resolve(priors, SSD300_VOC), num_classes)


def ssd512(num_classes: int = 21, priors: PriorConfig | str | None = None) -> SSD:
    """SSD512 with the paper's VGG16 base (7 levels, [4, 6, 6, 6, 6, 4, 4] boxes; 24564 priors)."""
    backbone = VGG16Backbone("ssd512")
    return SSD(backbone, backbone.out_channels, _resolve(priors, SSD512_VOC), num_classes)


def ssd_small(num_classes: int = 21, priors: PriorConfig | str | None = None, width: int = 32) -> SSD:
    """Small CPU-friendly SSD: 160 px input, 5 levels, 2408 priors (``SSD_SMALL_160``)."""
    backbone = SmallBackbone(width)
    return SSD(backbone, backbone.out_channels, _resolve(priors, SSD_SMALL_160), num_classes)


_FACTORIES = {"ssd300": ssd300, "ssd512": ssd512, "ssd_small": ssd_small}
MODEL_NAMES = tuple(_FACTORIES)


def build_model(name: str, num_classes: int, priors: PriorConfig | str | None = None, **kwargs) -> SSD:
    """Build ``"ssd300"``, ``"ssd512"`` or ``"ssd_small"`` (extra ``kwargs`` go to the factory)."""
    try:
        factory = _FACTORIES[name.lower()]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {list(MODEL_NAMES)}") from None
    return factory(num_classes=num_classes, priors=priors, **kwargs)
