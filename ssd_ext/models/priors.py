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
import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "PriorConfig",
    "PRESETS",
    "SSD300_VOC",
    "SSD300_COCO",
    "SSD300_TORCHVISION",
    "SSD512_VOC",
    "SSD512_COCO",
    "SSD_SMALL_160",
    "caffe_sizes",
    "paper_sizes",
    "config_from_scales",
    "get_preset",
]

ClipMode = bool | Literal["wh"]


def _prior_boxes(
    feature_map_sizes: Sequence[int | tuple[int, int]],
    image_size: int | tuple[int, int],
    min_sizes: Sequence[float],
    max_sizes: Sequence[float | None] | None,
    aspect_ratios: Sequence[Sequence[float]],
    steps: Sequence[float | tuple[float, float]] | None,
    offset: float,
    clip: bool,
    device: torch.device | str | None,
    dtype: torch.dtype | None,
) -> Tensor:
    # The one place the models call the prior generator. Uses the op when it is built in,
    # and the plain-PyTorch reference (same signature and semantics) until then.
    from .. import ops

    prior_boxes = getattr(ops, "prior_boxes", None)
    if prior_boxes is None:  # pragma: no cover - only before the op lands
        from ssd_reference.priors import prior_boxes
    return prior_boxes(
        feature_map_sizes, image_size, min_sizes, max_sizes, aspect_ratios, steps, offset, clip,
        device=device, dtype=dtype,
    )


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
        if self.clip not in (True, False, "wh"):
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
        priors = _prior_boxes(
            self.feature_map_sizes, self.image_size, self.min_sizes, self.max_sizes,
            self.aspect_ratios, self.steps, self.offset, self.clip is True,
            device=device, dtype=dtype,
        )
        if self.clip == "wh":
            priors = torch.cat([priors[:, :2], priors[:, 2:].clamp(0.0, 1.0)], dim=1)
        return priors


def paper_sizes(
    image_size: float, num_levels: int, s_min: float = 0.2, s_max: float = 0.9, last_max: float | None = None,
) -> tuple[list[float], list[float]]:
    """Min and max sizes (pixels) from the paper's rule ``s_k = s_min + (s_max - s_min)(k-1)/(m-1)``.

    The max size of level k is ``s_{k+1}``; for the last level it is ``last_max`` (a scale,
    default ``s_max + (s_max - s_min)/(m-1)``, i.e. the rule continued one step, as Caffe does).
    """
    if num_levels < 1:
        raise ValueError(f"num_levels must be >= 1, got {num_levels}")
    if not 0 < s_min <= s_max:
        raise ValueError(f"need 0 < s_min <= s_max, got s_min={s_min}, s_max={s_max}")
    if num_levels == 1:
        scales = [s_min]
        step = s_max - s_min
    else:
        step = (s_max - s_min) / (num_levels - 1)
        scales = [s_min + step * k for k in range(num_levels)]
    after_last = s_max + step if last_max is None else last_max
    nexts = scales[1:] + [after_last]
    return [image_size * s for s in scales], [image_size * s for s in nexts]


def caffe_sizes(
    image_size: float, num_levels: int, min_ratio: int, max_ratio: int, first_ratios: tuple[float, float],
) -> tuple[list[float], list[float]]:
    """Min and max sizes (pixels) as Caffe SSD's model scripts compute them.

    Levels 2..m follow the paper's rule in whole percent with the step floored to an integer
    (``step = floor((max_ratio - min_ratio) / (m - 2))``); level 1 gets the explicit
    ``first_ratios`` (min %, max %), e.g. (10, 20) for SSD300 VOC.
    """
    if num_levels < 3:
        raise ValueError(f"caffe_sizes needs at least 3 levels, got {num_levels}")
    step = int(math.floor((max_ratio - min_ratio) / (num_levels - 2)))
    ratios = list(range(min_ratio, max_ratio + 1, step))[: num_levels - 1]
    min_sizes = [image_size * first_ratios[0] / 100.0] + [image_size * r / 100.0 for r in ratios]
    max_sizes = [image_size * first_ratios[1] / 100.0] + [image_size * (r + step) / 100.0 for r in ratios]
    return min_sizes, max_sizes


def config_from_scales(
    feature_map_sizes: Sequence[int | tuple[int, int]],
    image_size: int,
    aspect_ratios: Sequence[Sequence[float]],
    s_min: float = 0.2,
    s_max: float = 0.9,
    steps: Sequence[float] | None = None,
    first_level: tuple[float, float] | None = None,
    clip: ClipMode = True,
) -> PriorConfig:
    """A custom :class:`PriorConfig` with sizes from the paper's s_min/s_max rule.

    ``first_level`` (a pair of scales) replaces the first level's (min, max), as the paper and
    Caffe do for conv4_3 (e.g. ``(0.1, 0.2)``); the remaining levels then follow the rule.
    """
    levels = len(feature_map_sizes)
    if first_level is None:
        min_sizes, max_sizes = paper_sizes(image_size, levels, s_min, s_max)
    else:
        if levels < 2:
            raise ValueError("first_level needs at least 2 feature map levels")
        rest_min, rest_max = paper_sizes(image_size, levels - 1, s_min, s_max)
        min_sizes = [image_size * first_level[0]] + rest_min
        max_sizes = [image_size * first_level[1]] + rest_max
    return PriorConfig(
        feature_map_sizes=tuple(feature_map_sizes), image_size=image_size, min_sizes=tuple(min_sizes),
        max_sizes=tuple(max_sizes), aspect_ratios=tuple(tuple(r) for r in aspect_ratios),
        steps=None if steps is None else tuple(steps), clip=clip,
    )


_RATIOS_300 = ((2,), (2, 3), (2, 3), (2, 3), (2,), (2,))
_RATIOS_512 = ((2,), (2, 3), (2, 3), (2, 3), (2, 3), (2,), (2,))


def _caffe_preset(image: int, fmaps, steps, ratios, min_ratio, max_ratio, first) -> PriorConfig:
    min_sizes, max_sizes = caffe_sizes(image, len(fmaps), min_ratio, max_ratio, first)
    return PriorConfig(fmaps, image, tuple(min_sizes), tuple(max_sizes), ratios, steps)


# ssd.pytorch voc: min [30, 60, 111, 162, 213, 264], max [60, 111, 162, 213, 264, 315].
SSD300_VOC = _caffe_preset(300, (38, 19, 10, 5, 3, 1), (8, 16, 32, 64, 100, 300), _RATIOS_300,
                           20, 90, (10, 20))
# ssd.pytorch coco: min [21, 45, 99, 153, 207, 261], max [45, 99, 153, 207, 261, 315].
SSD300_COCO = _caffe_preset(300, (38, 19, 10, 5, 3, 1), (8, 16, 32, 64, 100, 300), _RATIOS_300,
                            15, 90, (7, 15))
_FMAPS_512 = (64, 32, 16, 8, 4, 2, 1)
_STEPS_512 = (8, 16, 32, 64, 128, 256, 512)
# Caffe ssd_pascal_512: min [35.84, 76.8, 153.6, 230.4, 307.2, 384, 460.8], max [76.8, ..., 537.6].
SSD512_VOC = _caffe_preset(512, _FMAPS_512, _STEPS_512, _RATIOS_512, 15, 90, (7, 15))
# Caffe ssd_coco_512: min [20.48, 51.2, 133.12, 215.04, 296.96, 378.88, 460.8], max [51.2, ..., 542.72].
SSD512_COCO = _caffe_preset(512, _FMAPS_512, _STEPS_512, _RATIOS_512, 10, 90, (4, 10))

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
