"""Shared fixtures: the devices to test on, and the random box generators of
ssd_reference.testing (shared with the benchmarks)."""

from __future__ import annotations

import pytest
import torch
from ssd_reference.testing import random_boxes, random_priors  # noqa: F401  (shared generators)

import ssd_ext  # noqa: F401  (loads the ops)

CUDA_AVAILABLE = torch.cuda.is_available() and ssd_ext._C.cuda_compiled()

# CPU always; CUDA whenever a GPU and the CUDA kernels are both present. The CUDA parameter
# is not generated at all otherwise, so nothing skips silently: `python -m ssd_ext info`
# and tests/test_build.py say which devices were covered.
DEVICES = ["cpu"] + (["cuda"] if CUDA_AVAILABLE else [])


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    return request.param


def assert_close_to_reference(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-5,
                              atol: float = 1e-6) -> None:
    """Float outputs within 1e-5 relative of the reference (docs/ARCHITECTURE.md "Testing")."""
    torch.testing.assert_close(actual.cpu(), expected.cpu(), rtol=rtol, atol=atol, equal_nan=True)
