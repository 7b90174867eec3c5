"""Shared by the model tests: a few optimiser steps of a detector on one fixed batch."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ssd_ext.engine import MultiBoxLoss


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
