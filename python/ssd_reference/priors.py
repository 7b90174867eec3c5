"""Reference prior (default box) generation, in plain PyTorch and Python loops.

Order: level, then row i, then column j, then per cell: the square of side ``min/img``, the
square of side ``sqrt(min * max) / img`` (when the level has a max size), then for each
aspect ratio r: ``(s sqrt(r), s / sqrt(r))`` and ``(s / sqrt(r), s sqrt(r))``. Sizes are in
input pixels and normalised per axis (so a square prior is square in pixels on a non-square
image). ``cx = (j + offset) * step_x / img_w``, ``cy = (i + offset) * step_y / img_h``;
the default step of a level is ``img / feature_map_size`` per axis. ``clip`` clamps cx, cy,
w and h to [0, 1]. Returns ``[P, 4]`` cxcywh.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor


def _pair(value: float | Sequence[float]) -> tuple[float, float]:
    if isinstance(value, (int, float)):
        return float(value), float(value)
    first, second = value
    return float(first), float(second)


def cell_shapes(
    min_size: float,
    max_size: float | None,
    aspect_ratios: Sequence[float],
    image_h: float,
    image_w: float,
) -> list[tuple[float, float]]:
    """(w, h) of the priors of one cell, normalised, in the order above."""
    shapes = [(min_size / image_w, min_size / image_h)]
    if max_size is not None:
        side = math.sqrt(min_size * max_size)
        shapes.append((side / image_w, side / image_h))
    for ratio in aspect_ratios:
        root = math.sqrt(ratio)
        shapes.append((min_size / image_w * root, min_size / image_h / root))
        shapes.append((min_size / image_w / root, min_size / image_h * root))
    return shapes


def prior_boxes(
    feature_map_sizes: Sequence[int | Sequence[int]],
    image_size: int | Sequence[int],
    min_sizes: Sequence[float],
    max_sizes: Sequence[float | None] | None,
    aspect_ratios: Sequence[Sequence[float]],
    steps: Sequence[float | Sequence[float]] | None = None,
    offset: float = 0.5,
    clip: bool = True,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """``[P, 4]`` cxcywh priors; sizes as ints (square) or (h, w) pairs."""
    image_h, image_w = _pair(image_size)
    rows = []
    for level, fmap in enumerate(feature_map_sizes):
        fmap_h, fmap_w = (int(v) for v in _pair(fmap))
        if steps is None:
            step_y, step_x = image_h / fmap_h, image_w / fmap_w
        else:
            step_y, step_x = _pair(steps[level])
        max_size = None if max_sizes is None else max_sizes[level]
        shapes = cell_shapes(min_sizes[level], max_size, aspect_ratios[level], image_h, image_w)
        for i in range(fmap_h):
            cy = (i + offset) * step_y / image_h
            for j in range(fmap_w):
                cx = (j + offset) * step_x / image_w
                for w, h in shapes:
                    rows.append((cx, cy, w, h))
    priors = torch.tensor(rows, dtype=torch.float64).reshape(-1, 4)
    if clip:
        priors = priors.clamp(0.0, 1.0)
    return priors.to(device=device, dtype=dtype or torch.float32)
