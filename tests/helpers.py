"""What several test files share: the devices to test on, reference tolerances, random boxes,
a few optimiser steps on one batch, and the check that head outputs follow the prior order.

Test files import these by name (``from helpers import DEVICES``); ``conftest.py`` only holds
fixtures.
"""

from __future__ import annotations

import pytest
import torch
from ssd_reference.testing import random_boxes, random_priors
from torch import Tensor, nn

import ssd_ext
from ssd_ext.engine import MultiBoxLoss

__all__ = ["CUDA_AVAILABLE", "DEVICES", "assert_close_to_reference", "check_head_order", "overfit_losses",
           "random_boxes", "random_priors"]

CUDA_AVAILABLE = torch.cuda.is_available() and ssd_ext._C.cuda_compiled()

# CPU always; CUDA whenever a GPU and the CUDA kernels are both present. The CUDA parameter
# is not generated at all otherwise, so nothing skips silently: `python -m ssd_ext info`
# and tests/test_build.py say which devices were covered.
DEVICES = ["cpu"] + (["cuda"] if CUDA_AVAILABLE else [])


def assert_close_to_reference(actual: Tensor, expected: Tensor, rtol: float = 1e-5,
                              atol: float = 1e-6) -> None:
    """Float outputs within 1e-5 relative of the reference (docs/ARCHITECTURE.md "Testing")."""
    torch.testing.assert_close(actual.cpu(), expected.cpu(), rtol=rtol, atol=atol, equal_nan=True)


def overfit_losses(model: nn.Module, images: Tensor, targets: list[dict], steps: int,
                   lr: float = 3e-3) -> list[float]:
    """The MultiBox loss of ``model`` at each of ``steps`` Adam steps on the same batch."""
    criterion = MultiBoxLoss(model.priors, model.num_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loc, conf = model(images)
        loss = criterion(loc, conf, targets)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def check_head_order(model: nn.Module, features: list[Tensor], loc: Tensor, conf: Tensor) -> None:
    """Every checked (level, row, column, anchor) of the raw head maps of an SSD ``model``
    (its ``loc``/``conf`` convs per level) lands on the prior at that position of
    ``model.priors``, and the flattened ``loc``/``conf`` cover every prior once."""
    priors = model.priors.double()
    config = model.prior_config
    image_h, image_w = model.image_size
    offset = 0
    with torch.no_grad():
        for level, feature in enumerate(features):
            raw_loc, raw_conf = model.loc[level](feature), model.conf[level](feature)
            anchors = config.boxes_per_location[level]
            height, width = feature.shape[-2:]
            step_y, step_x = image_h / height, image_w / width
            if config.steps is not None:
                step_y = step_x = config.steps[level]
            for i, j, a in [(0, 0, 0), (height - 1, width - 1, anchors - 1), (height // 2, width - 1, 1)]:
                index = offset + (i * width + j) * anchors + a
                torch.testing.assert_close(loc[0, index], raw_loc[0, a * 4:(a + 1) * 4, i, j])
                classes = model.num_classes
                torch.testing.assert_close(conf[0, index], raw_conf[0, a * classes:(a + 1) * classes, i, j])
                assert priors[index, 0].item() == pytest.approx(min(1.0, (j + 0.5) * step_x / image_w))
                assert priors[index, 1].item() == pytest.approx(min(1.0, (i + 0.5) * step_y / image_h))
            offset += height * width * anchors
    assert offset == loc.shape[1] == conf.shape[1] == priors.shape[0]
