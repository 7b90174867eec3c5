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
- ``RFB300_VOC`` / ``RFB300_COCO`` / ``RFB512_VOC`` / ``RFB512_COCO``: RFB Net's (the authors'
  ``data/config.py``): SSD's sizes with ratios (2, 3) on all but the last two levels.
- ``RFB_SMALL_160``: the small RFB model's (``SSD_SMALL_160`` with ratios (2, 3) on four levels).
- ``SSDLITE320``: torchvision's ``ssdlite320_mobilenet_v3_large`` ``DefaultBoxGenerator``
  (ratios (2, 3) on six levels, scales 0.2 ... 0.95 and 1.0, steps from the feature map sizes,
  w and h clamped: ``clip="wh"``); 3,234 priors at 320 px.
- ``SSDLITE160``: the same rule on the 160 px input of the synthetic CPU recipe (maps 10, 5,
  3, 2, 1, 1; 840 priors).
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from .. import ops

__all__ = [
    "PriorConfig",
    "PriorScale",
    "PRESETS",
    "SSD300_VOC",
    "SSD300_COCO",
    "SSD300_TORCHVISION",
    "SSD512_VOC",
    "SSD512_COCO",
    "SSD_SMALL_160",
    "SSD_SMALL_160_FIT",
    "RFB300_VOC",
    "RFB300_COCO",
    "RFB512_VOC",
    "RFB512_COCO",
    "RFB_SMALL_160",
    "SSDLITE320",
    "SSDLITE160",
    "paper_sizes",
    "config_from_scales",
    "get_preset",
]

ClipMode = bool | Literal["wh"]


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _sequence(value: object, name: str) -> Sequence:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) and not hasattr(value, "__len__"):
        raise TypeError(f"PriorConfig.{name} must be a sequence, got {value!r} of type "
                        f"{type(value).__name__}")
    return list(value)


def _pair(value: object, name: str) -> tuple:
    items = _sequence(value, name)
    if len(items) != 2:
        raise ValueError(f"PriorConfig.{name} must be a number or an (h, w) pair, got {value!r}")
    return tuple(items)


def _real(value: object, name: str) -> float:
    if not _is_real(value):
        raise TypeError(f"PriorConfig.{name} must be a number, got {value!r} of type {type(value).__name__}")
    return float(value)


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"PriorConfig.{name} must be an int (or an (h, w) pair of ints), got {value!r} "
                        f"of type {type(value).__name__}")
    if value < 1:
        raise ValueError(f"PriorConfig.{name} must be >= 1, got {value}")
    return int(value)


def _size(value: object, name: str) -> int | tuple[int, int]:
    """An int (square) or an (h, w) pair of ints, as plain Python ints (numpy integers accepted)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return _positive_int(value, name)
    if _is_real(value):  # a float such as 38.0: refuse rather than guess
        raise TypeError(f"PriorConfig.{name} must be an int (or an (h, w) pair of ints), got {value!r}")
    height, width = _pair(value, name)
    return (_positive_int(height, name), _positive_int(width, name))


def _as_pair(value: int | float | Sequence[int | float]) -> tuple:
    if isinstance(value, (int, float)):
        return (value, value)
    first, second = value
    return (first, second)


@dataclasses.dataclass(frozen=True)
class PriorScale:
    """One more scale of priors stacked on a level's cells (see ``PriorConfig.stacked_scales``).

    Attributes:
        min_size: side of the scale's first square prior, in pixels.
        max_size: the second square has side ``sqrt(min_size * max_size)``; ``None`` leaves it out.
        aspect_ratios: ratios ``r`` giving a wide and a tall box each (side ``min_size``).
    """

    min_size: float
    max_size: float | None
    aspect_ratios: tuple[float, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "min_size", _real(self.min_size, "stacked_scales[].min_size"))
        if self.max_size is not None:
            object.__setattr__(self, "max_size", _real(self.max_size, "stacked_scales[].max_size"))
        object.__setattr__(self, "aspect_ratios", tuple(
            _real(r, "stacked_scales[].aspect_ratios") for r in _sequence(self.aspect_ratios,
                                                                          "stacked_scales[].aspect_ratios")))

    @property
    def boxes(self) -> int:
        """Priors this scale adds to each cell."""
        return 1 + int(self.max_size is not None) + 2 * len(self.aspect_ratios)


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
        stacked_scales: per level, more scales (:class:`PriorScale`) whose boxes follow the
            level's own in every cell (Caffe's several ``min_size`` values per layer; the SSD
            paper's Table 3 stacks the scales of removed levels on the remaining ones this way).
            ``None``: one scale per level. ``min_sizes``/``max_sizes``/``aspect_ratios`` always
            describe each level's own (first) scale.
    """

    feature_map_sizes: tuple
    image_size: int | tuple[int, int]
    min_sizes: tuple[float, ...]
    max_sizes: tuple[float | None, ...] | None
    aspect_ratios: tuple[tuple[float, ...], ...]
    steps: tuple | None = None
    offset: float = 0.5
    clip: ClipMode = True
    stacked_scales: tuple[tuple[PriorScale, ...], ...] | None = None

    def __post_init__(self) -> None:
        levels = len(self.feature_map_sizes)
        if levels == 0:
            raise ValueError("PriorConfig needs at least one feature map level")
        named = {"min_sizes": self.min_sizes, "aspect_ratios": self.aspect_ratios}
        if self.max_sizes is not None:
            named["max_sizes"] = self.max_sizes
        if self.steps is not None:
            named["steps"] = self.steps
        if self.stacked_scales is not None:
            named["stacked_scales"] = self.stacked_scales
        for name, values in named.items():
            if len(values) != levels:
                raise ValueError(
                    f"PriorConfig.{name} has {len(values)} entries but there are {levels} feature maps"
                )
        # isinstance, not `in (True, False, "wh")`: 1 == True would slip through and then
        # fail the `clip is True` test in build(), silently turning clipping off.
        if not (isinstance(self.clip, bool) or self.clip == "wh"):
            raise ValueError(f"PriorConfig.clip must be True, False or 'wh', got {self.clip!r}")
        # Normalise to plain Python numbers and tuples, so configs are hashable, compare by
        # value and reach the C++ op as ints/floats (numpy integers and floats are accepted).
        object.__setattr__(self, "feature_map_sizes", tuple(
            _size(f, f"feature_map_sizes[{i}]") for i, f in enumerate(self.feature_map_sizes)))
        object.__setattr__(self, "image_size", _size(self.image_size, "image_size"))
        object.__setattr__(self, "min_sizes", tuple(
            _real(s, f"min_sizes[{i}]") for i, s in enumerate(self.min_sizes)))
        if self.max_sizes is not None:
            object.__setattr__(self, "max_sizes", tuple(
                None if s is None else _real(s, f"max_sizes[{i}]") for i, s in enumerate(self.max_sizes)))
        object.__setattr__(self, "aspect_ratios", tuple(
            tuple(_real(r, f"aspect_ratios[{i}]") for r in _sequence(ratios, f"aspect_ratios[{i}]"))
            for i, ratios in enumerate(self.aspect_ratios)))
        if self.steps is not None:
            object.__setattr__(self, "steps", tuple(
                _real(s, f"steps[{i}]") if _is_real(s) else
                tuple(_real(v, f"steps[{i}]") for v in _pair(s, f"steps[{i}]"))
                for i, s in enumerate(self.steps)))
        if self.stacked_scales is not None:
            object.__setattr__(self, "stacked_scales", _stacked_scales(self.stacked_scales))

    @property
    def num_levels(self) -> int:
        return len(self.feature_map_sizes)

    @property
    def boxes_per_location(self) -> list[int]:
        """Priors per feature-map cell at each level (the heads' anchors per location)."""
        counts = []
        for level, ratios in enumerate(self.aspect_ratios):
            has_max = self.max_sizes is not None and self.max_sizes[level] is not None
            stacked = self.stacked_scales[level] if self.stacked_scales is not None else ()
            counts.append(1 + int(has_max) + 2 * len(ratios) + sum(scale.boxes for scale in stacked))
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
        if self.stacked_scales is None or not any(self.stacked_scales):
            priors = ops.prior_boxes(
                self.feature_map_sizes, self.image_size, self.min_sizes, self.max_sizes,
                self.aspect_ratios, self.steps, self.offset, self.clip is True,
                device=device, dtype=dtype,
            )
        else:
            priors = torch.cat([self._level_priors(level, device, dtype) for level in range(self.num_levels)])
        if self.clip == "wh":
            priors = torch.cat([priors[:, :2], priors[:, 2:].clamp(0.0, 1.0)], dim=1)
        return priors

    def _level_priors(self, level: int, device: torch.device | str | None,
                      dtype: torch.dtype | None) -> Tensor:
        """One level's priors with its stacked scales: in each cell the level's own boxes, then
        each stacked scale's, so the order stays (row, column, box of the cell)."""
        own_max = self.max_sizes[level] if self.max_sizes is not None else None
        scales = [PriorScale(self.min_sizes[level], own_max, self.aspect_ratios[level]),
                  *self.stacked_scales[level]]
        height, width = self.feature_map_hw[level]
        steps = None if self.steps is None else [self.steps[level]]
        per_cell = [
            ops.prior_boxes([self.feature_map_sizes[level]], self.image_size, [scale.min_size],
                            [scale.max_size], [scale.aspect_ratios], steps, self.offset, self.clip is True,
                            device=device, dtype=dtype).view(height * width, scale.boxes, 4)
            for scale in scales
        ]
        return torch.cat(per_cell, dim=1).reshape(-1, 4)


def _stacked_scales(value: object) -> tuple[tuple[PriorScale, ...], ...]:
    """``PriorConfig.stacked_scales`` as tuples of :class:`PriorScale` (checked)."""
    levels = []
    for level, scales in enumerate(_sequence(value, "stacked_scales")):
        items = _sequence(scales, f"stacked_scales[{level}]")
        for scale in items:
            if not isinstance(scale, PriorScale):
                raise TypeError(f"PriorConfig.stacked_scales[{level}] must hold PriorScale entries, got "
                                f"{scale!r} of type {type(scale).__name__}")
        levels.append(tuple(items))
    return tuple(levels)


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

# The small model fitted to the synthetic shapes (20-60 % of the short side, aspect 0.6-1.6):
# sizes 0.2-0.8 of the input (32-128 px at 160, second squares up to 152 px) instead of
# 0.1-0.9, and one ratio pair of 1.6 per level instead of 2 and 3 (2140 priors).
SSD_SMALL_160_FIT = config_from_scales(
    feature_map_sizes=(20, 10, 5, 3, 1), image_size=160,
    aspect_ratios=((1.6,),) * 5, s_min=0.2, s_max=0.8,
)

# RFB Net (Liu, Huang and Wang, ECCV 2018; the authors' data/config.py VOC_300, VOC_512,
# COCO_300, COCO_512): the same sizes, steps and clipping as SSD's presets, but six boxes per
# cell (ratios 2 and 3) on every level but the last two: 11,620 priors at 300 px, 32,756 at 512.
_RFB_RATIOS_300 = ((2, 3), (2, 3), (2, 3), (2, 3), (2,), (2,))
_RFB_RATIOS_512 = ((2, 3), (2, 3), (2, 3), (2, 3), (2, 3), (2,), (2,))
RFB300_VOC = dataclasses.replace(SSD300_VOC, aspect_ratios=_RFB_RATIOS_300)
RFB300_COCO = dataclasses.replace(SSD300_COCO, aspect_ratios=_RFB_RATIOS_300)
RFB512_VOC = dataclasses.replace(SSD512_VOC, aspect_ratios=_RFB_RATIOS_512)
RFB512_COCO = dataclasses.replace(SSD512_COCO, aspect_ratios=_RFB_RATIOS_512)
# The small RFB model (models/rfb.py, rfb_small): SSD_SMALL_160's sizes with ratios 2 and 3 on
# the first four levels (3208 priors).
RFB_SMALL_160 = dataclasses.replace(SSD_SMALL_160, aspect_ratios=((2, 3), (2, 3), (2, 3), (2, 3), (2,)))

# SSDLite320 (torchvision's ssdlite320_mobilenet_v3_large, DefaultBoxGenerator([[2, 3]] * 6,
# min_ratio=0.2, max_ratio=0.95)): scales 0.2 + 0.75 k / 5 for k = 0..5, then 1.0 as the last
# level's second scale; centres (j + 0.5) / fmap (no steps); only w and h clamped to 1.
# 6 * (20^2 + 10^2 + 5^2 + 3^2 + 2^2 + 1) = 3,234 priors.
_SSDLITE_SCALES = tuple(0.2 + (0.95 - 0.2) * k / 5.0 for k in range(6)) + (1.0,)
SSDLITE320 = PriorConfig(
    feature_map_sizes=(20, 10, 5, 3, 2, 1),
    image_size=320,
    min_sizes=tuple(320 * s for s in _SSDLITE_SCALES[:-1]),
    max_sizes=tuple(320 * s for s in _SSDLITE_SCALES[1:]),
    aspect_ratios=((2, 3),) * 6,
    steps=None,
    clip="wh",
)
# The same scales at 160 px (the synthetic CPU recipe): the model's strides give 10, 5, 3, 2, 1
# and 1 cells; 6 * (100 + 25 + 9 + 4 + 1 + 1) = 840 priors.
SSDLITE160 = dataclasses.replace(
    SSDLITE320, feature_map_sizes=(10, 5, 3, 2, 1, 1), image_size=160,
    min_sizes=tuple(160 * s for s in _SSDLITE_SCALES[:-1]),
    max_sizes=tuple(160 * s for s in _SSDLITE_SCALES[1:]),
)

PRESETS: dict[str, PriorConfig] = {
    "ssd300_voc": SSD300_VOC,
    "ssd300_coco": SSD300_COCO,
    "ssd300_torchvision": SSD300_TORCHVISION,
    "ssd512_voc": SSD512_VOC,
    "ssd512_coco": SSD512_COCO,
    "ssd_small_160": SSD_SMALL_160,
    "ssd_small_160_fit": SSD_SMALL_160_FIT,
    "rfb300_voc": RFB300_VOC,
    "rfb300_coco": RFB300_COCO,
    "rfb512_voc": RFB512_VOC,
    "rfb512_coco": RFB512_COCO,
    "rfb_small_160": RFB_SMALL_160,
    "ssdlite320": SSDLITE320,
    "ssdlite160": SSDLITE160,
}


def get_preset(name: str) -> PriorConfig:
    """The preset called ``name`` (case-insensitive; see ``PRESETS``)."""
    if not isinstance(name, str):
        raise TypeError(f"prior preset name must be a str, one of {sorted(PRESETS)}; got {name!r}")
    try:
        return PRESETS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown prior preset {name!r}; known: {sorted(PRESETS)}") from None
