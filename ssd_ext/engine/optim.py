"""Optimiser and learning-rate schedule from the config."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from .config import OptimConfig, ScheduleConfig

__all__ = ["build_optimizer", "build_scheduler", "lr_factor", "parameter_groups"]


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two groups: weights of convs/linears with ``weight_decay``; norms' parameters and all
    biases (any parameter of fewer than 2 dimensions, e.g. L2Norm's scale) without."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (decay if parameter.dim() > 1 else no_decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(optim: OptimConfig, model: nn.Module) -> torch.optim.Optimizer:
    """SGD with momentum or AdamW over :func:`parameter_groups`."""
    groups = parameter_groups(model, optim.weight_decay)
    if optim.name == "sgd":
        return torch.optim.SGD(groups, lr=optim.lr, momentum=optim.momentum)
    if optim.name == "adamw":
        return torch.optim.AdamW(groups, lr=optim.lr, betas=tuple(optim.betas))
    raise ConfigError(f"optim.name must be sgd or adamw, got {optim.name!r}")


def lr_factor(schedule: ScheduleConfig, iteration: int, total: int) -> float:
    """The lr multiplier at ``iteration`` (0-based) of ``total``: linear warmup from
    ``warmup_factor``, then multistep or cosine."""
    warm = 1.0
    if iteration < schedule.warmup_iters:
        alpha = iteration / max(1, schedule.warmup_iters)
        warm = schedule.warmup_factor + (1 - schedule.warmup_factor) * alpha
    if schedule.kind == "multistep":
        drops = sum(iteration >= int(m * total) for m in schedule.milestones)
        return warm * schedule.gamma ** drops
    progress = min(1.0, max(0.0, (iteration - schedule.warmup_iters) / max(1, total - schedule.warmup_iters)))
    # Written as one expression: its rounding is part of every recorded run's fingerprint.
    return warm * (schedule.min_lr_factor
                   + (1 - schedule.min_lr_factor) * 0.5 * (1 + math.cos(math.pi * progress)))


def build_scheduler(schedule: ScheduleConfig, optimizer: torch.optim.Optimizer,
                    total_iterations: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-iteration ``LambdaLR`` following :func:`lr_factor`."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer,
                                             lambda it: lr_factor(schedule, it, total_iterations))
