"""One process or many (``torchrun``): the process group, the device, and what crosses ranks.

Under ``torchrun`` (``WORLD_SIZE`` > 1) :func:`setup_distributed` starts the process group
(gloo on the CPU, nccl on CUDA). Every helper here also works in a single process, where it
does nothing or returns its input.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..errors import ConfigError
from .wrappers import unwrap_model

__all__ = ["all_reduce_min", "all_reduce_sum", "barrier", "broadcast_buffers", "gather_to_main",
           "rank_and_world", "resolve_device", "setup_distributed"]


def rank_and_world() -> tuple[int, int]:
    """``(rank, world size)`` of this process; ``(0, 1)`` without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def setup_distributed(device_name: str) -> tuple[int, int, int]:
    """Join the ``torchrun`` process group when there is one: ``(rank, world, local rank)``."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not (dist.is_available() and dist.is_initialized()):
        use_cuda = torch.cuda.is_available() and device_name != "cpu"
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return (*rank_and_world(), local_rank)


def resolve_device(name: str, local_rank: int = 0, world: int = 1) -> torch.device:
    """``train.device`` as a device ("auto": CUDA when available); each rank gets its own GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device={name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device={name!r} but no CUDA device is available; use cpu or auto")
        if world > 1 and device.index is None:
            device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return device


def all_reduce_min(value: torch.Tensor) -> torch.Tensor:
    """``value`` reduced with MIN over ranks (in place), e.g. "finite on every rank"."""
    if rank_and_world()[1] > 1:
        dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return value


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    """``value`` summed over ranks (in place)."""
    if rank_and_world()[1] > 1:
        dist.all_reduce(value)
    return value


def gather_to_main(items: list[Any]) -> list[Any] | None:
    """Every rank's ``items`` concatenated on rank 0 (in rank order); None on the others."""
    rank, world = rank_and_world()
    if world == 1:
        return list(items)
    gathered: list[Any] | None = [None] * world if rank == 0 else None
    dist.gather_object(items, gathered, dst=0)
    if rank != 0:
        return None
    return [item for part in gathered or [] for item in part]


def broadcast_buffers(*modules: nn.Module | None) -> None:
    """Give every rank rank 0's buffers (BatchNorm statistics): DDP broadcasts them at the start
    of each forward, so after the last step each rank still holds its own."""
    if rank_and_world()[1] == 1:
        return
    for module in modules:
        if module is None:
            continue
        for buffer in unwrap_model(module).buffers():
            if buffer.is_floating_point() or buffer.dtype in (torch.int64, torch.int32):
                dist.broadcast(buffer.data, src=0)


def barrier() -> None:
    """Wait for every rank (nothing to wait for in one process)."""
    if rank_and_world()[1] > 1:
        dist.barrier()
