"""Batching: ``collate`` and a DataLoader factory with reproducible augmentation."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

__all__ = ["collate", "make_loader", "seed_worker"]


def collate(batch: Sequence[tuple[torch.Tensor, dict[str, Any]]]
            ) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """``[(image [3,H,W], target), ...]`` -> ``(images [B,3,H,W], [target, ...])``.

    Targets stay a list since images hold different numbers of boxes. All images must have
    the same size (use a transform that ends with a resize)."""
    if len(batch) == 0:
        raise ValueError("cannot collate an empty batch")
    images = [item[0] for item in batch]
    if not all(isinstance(image, torch.Tensor) for image in images):
        raise TypeError("collate needs tensor images: give the dataset a transform "
                        "(e.g. eval_transform(size))")
    shapes = {tuple(image.shape) for image in images}
    if len(shapes) != 1:
        raise ValueError(f"images in a batch must share one size, got {sorted(shapes)}")
    return torch.stack(images), [item[1] for item in batch]


def seed_worker(worker_id: int) -> None:
    """Seed numpy's and Python's global RNGs in a DataLoader worker from torch's, which the
    loader has already seeded per worker from its generator."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool = False, num_workers: int = 0,
                pin_memory: bool = False, drop_last: bool = False, seed: int | None = None,
                persistent_workers: bool | None = None, **kwargs: Any) -> DataLoader:
    """A ``DataLoader`` over ``dataset`` that batches with :func:`collate`.

    ``seed`` fixes the shuffling order and every worker's torch RNG (which the transforms draw
    from when given no generator), so two loaders with the same seed, dataset and
    ``num_workers`` yield the same augmented batches. With ``num_workers=0`` the augmentation
    draws from the main process's global torch RNG (seed it with ``torch.manual_seed``).
    ``pin_memory`` pins batches when an accelerator is present (it is a no-op without one).
    Other keyword arguments go to ``DataLoader``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    generator = None
    if seed is not None:
        generator = torch.Generator()
        generator.manual_seed(int(seed))
    if persistent_workers is None:
        persistent_workers = num_workers > 0
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=bool(pin_memory and torch.accelerator.is_available()),
        drop_last=drop_last,
        worker_init_fn=seed_worker,
        generator=generator,
        persistent_workers=persistent_workers and num_workers > 0,
        **kwargs,
    )
