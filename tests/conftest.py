"""Shared fixtures: the devices to test on, and random box generators."""

from __future__ import annotations

import pytest
import torch

import ssd_ext  # noqa: F401  (loads the ops)

CUDA_AVAILABLE = torch.cuda.is_available() and ssd_ext._C.cuda_compiled()

# CPU always; CUDA whenever a GPU and the CUDA kernels are both present. The CUDA parameter
# is not generated at all otherwise, so nothing skips silently: `python -m ssd_ext info`
# and tests/test_build.py say which devices were covered.
DEVICES = ["cpu"] + (["cuda"] if CUDA_AVAILABLE else [])


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    return request.param


def random_boxes(
    count: int,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    min_size: float = 0.0,
    max_size: float = 0.5,
) -> torch.Tensor:
    """``[count, 4]`` valid xyxy boxes in [0, 1] with sides in [min_size, max_size]."""
    xy = torch.rand(count, 2, generator=generator, dtype=torch.float64)
    wh = min_size + (max_size - min_size) * torch.rand(count, 2, generator=generator, dtype=torch.float64)
    x1y1 = xy * (1 - wh)
    return torch.cat([x1y1, x1y1 + wh], dim=1).to(dtype)


def assert_close_to_reference(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-5,
                              atol: float = 1e-6) -> None:
    """Float outputs within 1e-5 relative of the reference (DESIGN.md §5)."""
    torch.testing.assert_close(actual.cpu(), expected.cpu(), rtol=rtol, atol=atol, equal_nan=True)
