"""Prior (default box) configurations: named presets and a builder from the paper's rule.

A :class:`PriorConfig` holds everything ``ssd_ext.ops.prior_boxes`` needs; ``build()`` returns
the ``[P, 4]`` cxcywh priors, normalised to [0, 1], in the order the SSD heads produce their
outputs (level, row, column, then the boxes of one cell: min square, sqrt(min*max) square,
then wide and tall box per aspect ratio).

Sizes are in input pixels. The presets reproduce:

- ``SSD300_VOC`` / ``SSD300_COCO``: ssd.pytorch's (= Caffe SSD's) ``voc`` and ``coco`` configs.
- ``SSD512_VOC`` / ``SSD512_COCO``: Caffe SSD's ``ssd_pascal_512`` / ``ssd_coco_512`` rule
  (min_ratio 15 / 10 %, max_ratio 90 %, first level 7-15 % / 4-10 %).
- ``SSD300_TORCHVISION``: torchvision's ``ssd300_vgg16`` ``DefaultBoxGenerator`` (scales
  0.07 ... 1.05, its steps and ratios). torchvision clamps only w and h, not the centres, so
  this preset uses ``clip="wh"``.
- ``SSD_SMALL_160``: the small CPU model's 160-pixel input with five levels.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from .. import ops

__all__ = [
    "PriorConfig",
    "PRESETS",
    "SSD300_VOC",
    "SSD300_COCO",
    "SSD300_TORCHVISION",
    "SSD512_VOC",
    "SSD512_COCO",
    "SSD_SMALL_160",
    "paper_sizes",
    "config_from_scales",
    "get_preset",
]

ClipMode = bool | Literal["wh"]


def _as_pair(value: int | float | Sequence[int | float]) -> tuple:
    if isinstance(value, (int, float)):
        return (value, value)
    first, second = value
    return (first, second)


@dataclasses.dataclass(frozen=True)
class PriorConfig:
    """Everything that defines a set of SSD priors.

    Attributes:
        feature_map_sizes: per level, ``int`` (square) or ``(h, w)``.
        image_size: ``int`` (square) or ``(h, w)`` in pixels.
        min_sizes: per level, side of the first square prior, in pixels.
        max_sizes: per level, the second square has side ``sqrt(min * max)``; ``None`` (or a
            ``None`` entry) leaves that square out.
        aspect_ratios: per level, ratios ``r`` giving a wide and a tall box each.
        steps: per level, pixel distance between prior centres (``None``: image / fmap).
        offset: centre offset in cells (0.5: cell centres).
        clip: ``True`` clamps cx, cy, w, h to [0, 1]; ``"wh"`` clamps only w and h
            (torchvision's rule); ``False`` clamps nothing.
    """

    feature_map_sizes: tuple
    image_size: int | tuple[int, int]
    min_sizes: tuple[float, ...]
    max_sizes: tuple[float | None, ...] | None
    aspect_ratios: tuple[tuple[float, ...], ...]
    steps: tuple | None = None
    offset: float = 0.5
    clip: ClipMode = True

    def __post_init__(self) -> None:
        levels = len(self.feature_map_sizes)
        if levels == 0:
            raise ValueError("PriorConfig needs at least one feature map level")
        named = {"min_sizes": self.min_sizes, "aspect_ratios": self.aspect_ratios}
        if self.max_sizes is not None:
            named["max_sizes"] = self.max_sizes
        if self.steps is not None:
            named["steps"] = self.steps
        for name, values in named.items():
            if len(values) != levels:
                raise ValueError(
                    f"PriorConfig.{name} has {len(values)} entries but there are {levels} feature maps"
                )
        # isinstance, not `in (True, False, "wh")`: 1 == True would slip through and then
        # fail the `clip is True` test in build(), silently turning clipping off.
        if not (isinstance(self.clip, bool) or self.clip == "wh"):
            raise ValueError(f"PriorConfig.clip must be True, False or 'wh', got {self.clip!r}")
        # Normalise nested lists to tuples so configs are hashable and compare by value.
        object.__setattr__(self, "feature_map_sizes", tuple(
            f if isinstance(f, int) else tuple(f) for f in self.feature_map_sizes))
        object.__setattr__(self, "min_sizes", tuple(float(s) for s in self.min_sizes))
        if self.max_sizes is not None:
            object.__setattr__(self, "max_sizes", tuple(
                None if s is None else float(s) for s in self.max_sizes))
        object.__setattr__(self, "aspect_ratios", tuple(
            tuple(float(r) for r in ratios) for ratios in self.aspect_ratios))
        if self.steps is not None:
            object.__setattr__(self, "steps", tuple(
                s if isinstance(s, (int, float)) else tuple(s) for s in self.steps))
        if not isinstance(self.image_size, int):
            object.__setattr__(self, "image_size", tuple(self.image_size))

    @property
    def num_levels(self) -> int:
        return len(self.feature_map_sizes)

    @property
    def boxes_per_location(self) -> list[int]:
        """Priors per feature-map cell at each level (the heads' anchors per location)."""
        counts = []
        for level, ratios in enumerate(self.aspect_ratios):
            has_max = self.max_sizes is not None and self.max_sizes[level] is not None
            counts.append(1 + int(has_max) + 2 * len(ratios))
        return counts

    @property
    def feature_map_hw(self) -> list[tuple[int, int]]:
        """Feature map sizes as ``(h, w)`` pairs."""
        return [tuple(int(v) for v in _as_pair(f)) for f in self.feature_map_sizes]

    @property
    def num_priors(self) -> int:
        return sum(h * w * a for (h, w), a in zip(self.feature_map_hw, self.boxes_per_location, strict=True))

    def build(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Tensor:
        """``[num_priors, 4]`` cxcywh priors, normalised to [0, 1]."""
        priors = ops.prior_boxes(
            self.feature_map_sizes, self.image_size, self.min_sizes, self.max_sizes,
            self.aspect_ratios, self.steps, self.offset, self.clip is True,
            device=device, dtype=dtype,
        )
        if self.clip == "wh":
            priors = torch.cat([priors[:, :2], priors[:, 2:].clamp(0.0, 1.0)], dim=1)
        return priors


def paper_sizes(
    image_size: float, num_levels: int, s_min: float = 0.2, s_max: float = 0.9,
) -> tuple[list[float], list[float]]:
    """Min and max sizes (pixels) from the paper's rule ``s_k = s_min + (s_max - s_min)(k-1)/(m-1)``.

    The max size of level k is ``s_{k+1}``; for the last level the rule continued one step
    (as Caffe does). Thin wrapper over ``ssd_ext.ops.ssd_sizes(rounding="paper")``.
    """
    from .. import ops

    return ops.ssd_sizes(image_size, num_levels, s_min, s_max, first_level_scale=None, rounding="paper")


def config_from_scales(
    feature_map_sizes: Sequence[int | tuple[int, int]],
    image_size: int,
    aspect_ratios: Sequence[Sequence[float]],
    s_min: float = 0.2,
    s_max: float = 0.9,
    steps: Sequence[float] | None = None,
    first_level_scale: float | None = None,
    rounding: Literal["caffe", "paper"] = "paper",
    clip: ClipMode = True,
) -> PriorConfig:
    """A custom :class:`PriorConfig` with sizes from the paper's s_min/s_max rule
    (``ssd_ext.ops.ssd_sizes``).

    ``first_level_scale`` gives the first level its own (min, max) = (first_level_scale, s_min)
    as Caffe does for conv4_3 (e.g. 0.1 for SSD300 VOC); the rule then spans the other levels.
    ``rounding="caffe"`` uses Caffe's whole-percent steps.
    """
    from .. import ops

    min_sizes, max_sizes = ops.ssd_sizes(image_size, len(feature_map_sizes), s_min, s_max,
                                         first_level_scale=first_level_scale, rounding=rounding)
    return PriorConfig(
        feature_map_sizes=tuple(feature_map_sizes), image_size=image_size, min_sizes=tuple(min_sizes),
        max_sizes=tuple(max_sizes), aspect_ratios=tuple(tuple(r) for r in aspect_ratios),
        steps=None if steps is None else tuple(steps), clip=clip,
    )


_RATIOS_300 = ((2,), (2, 3), (2, 3), (2, 3), (2,), (2,))
_RATIOS_512 = ((2,), (2, 3), (2, 3), (2, 3), (2, 3), (2,), (2,))


def _caffe_preset(image: int, fmaps, steps, ratios, s_min: float, first: float) -> PriorConfig:
    return config_from_scales(fmaps, image, ratios, s_min, 0.9, steps, first_level_scale=first,
                              rounding="caffe")


_FMAPS_300 = (38, 19, 10, 5, 3, 1)
_STEPS_300 = (8, 16, 32, 64, 100, 300)
# ssd.pytorch voc: min [30, 60, 111, 162, 213, 264], max [60, 111, 162, 213, 264, 315].
SSD300_VOC = _caffe_preset(300, _FMAPS_300, _STEPS_300, _RATIOS_300, 0.2, 0.1)
# ssd.pytorch coco: min [21, 45, 99, 153, 207, 261], max [45, 99, 153, 207, 261, 315].
SSD300_COCO = _caffe_preset(300, _FMAPS_300, _STEPS_300, _RATIOS_300, 0.15, 0.07)
_FMAPS_512 = (64, 32, 16, 8, 4, 2, 1)
_STEPS_512 = (8, 16, 32, 64, 128, 256, 512)
# Caffe ssd_pascal_512: min [35.84, 76.8, 153.6, 230.4, 307.2, 384, 460.8], max [76.8, ..., 537.6].
SSD512_VOC = _caffe_preset(512, _FMAPS_512, _STEPS_512, _RATIOS_512, 0.15, 0.07)
# Caffe ssd_coco_512: min [20.48, 51.2, 133.12, 215.04, 296.96, 378.88, 460.8], max [51.2, ..., 542.72].
SSD512_COCO = _caffe_preset(512, _FMAPS_512, _STEPS_512, _RATIOS_512, 0.1, 0.04)

_TORCHVISION_SCALES = (0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05)
SSD300_TORCHVISION = PriorConfig(
    feature_map_sizes=(38, 19, 10, 5, 3, 1),
    image_size=300,
    min_sizes=tuple(300 * s for s in _TORCHVISION_SCALES[:-1]),
    max_sizes=tuple(300 * s for s in _TORCHVISION_SCALES[1:]),
    aspect_ratios=_RATIOS_300,
    steps=(8, 16, 32, 64, 100, 300),
    clip="wh",
)

# The small CPU model: 160 px input, feature maps at strides 8, 16, 32, ~53 and the whole image.
SSD_SMALL_160 = config_from_scales(
    feature_map_sizes=(20, 10, 5, 3, 1), image_size=160,
    aspect_ratios=((2,), (2, 3), (2, 3), (2, 3), (2,)), s_min=0.1, s_max=0.9,
)

PRESETS: dict[str, PriorConfig] = {
    "ssd300_voc": SSD300_VOC,
    "ssd300_coco": SSD300_COCO,
    "ssd300_torchvision": SSD300_TORCHVISION,
    "ssd512_voc": SSD512_VOC,
    "ssd512_coco": SSD512_COCO,
    "ssd_small_160": SSD_SMALL_160,
}


def get_preset(name: str) -> PriorConfig:
    """The preset called ``name`` (case-insensitive; see ``PRESETS``)."""
    try:
        return PRESETS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown prior preset {name!r}; known: {sorted(PRESETS)}") from None
