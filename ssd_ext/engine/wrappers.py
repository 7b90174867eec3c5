"""What wraps a detector during training and inference, and the one way to reach through it."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["unwrap_model"]


def unwrap_model(model: nn.Module) -> nn.Module:
    """The detector inside any nesting of DistributedDataParallel, DataParallel,
    ``torch.optim.swa_utils.AveragedModel`` (EMA) and ``torch.compile`` wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel,
                              torch.optim.swa_utils.AveragedModel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):  # torch.compile
            model = model._orig_mod
        else:
            return model
