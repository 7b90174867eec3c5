"""Random inputs shared by the tests and the benchmarks: one generator of boxes and one of
priors, so that every suite draws the same kind of data (valid boxes inside the unit square)."""

from __future__ import annotations

import torch
from torch import Tensor


def random_boxes(
    count: int,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    min_size: float = 0.0,
    max_size: float = 0.5,
) -> Tensor:
    """``[count, 4]`` valid xyxy boxes inside [0, 1] with sides in [min_size, max_size].

    Drawn in float64 and then cast, so that a seed gives the same boxes in every dtype (up to
    rounding).
    """
    xy = torch.rand(count, 2, generator=generator, dtype=torch.float64)
    wh = min_size + (max_size - min_size) * torch.rand(count, 2, generator=generator, dtype=torch.float64)
    x1y1 = xy * (1 - wh)
    return torch.cat([x1y1, x1y1 + wh], dim=1).to(dtype)


def random_priors(
    count: int,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    min_size: float = 0.05,
    max_size: float = 0.6,
) -> Tensor:
    """``[count, 4]`` cxcywh priors: centres in [0, 1], sides in [min_size, max_size]."""
    centres = torch.rand(count, 2, generator=generator, dtype=torch.float64)
    sizes = min_size + (max_size - min_size) * torch.rand(count, 2, generator=generator, dtype=torch.float64)
    return torch.cat([centres, sizes], dim=1).to(dtype)
