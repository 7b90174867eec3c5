"""Batching: ``collate`` and a DataLoader factory (:func:`make_loader`) whose seeded batches do not
depend on the number of workers."""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .sampling import AugmentedItems, EpochSampler

__all__ = ["available_cores", "collate", "default_num_workers", "make_loader", "seed_worker"]

# Above this many workers the augmentation outruns any step we have measured, and each extra
# worker only holds ``prefetch_factor`` more batches in memory.
MAX_DEFAULT_WORKERS = 8


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


class _WorkerInit:
    """:func:`seed_worker`, then the user's ``worker_init_fn`` (a class, not a closure, so
    that it pickles for the ``spawn`` start method)."""

    def __init__(self, user_fn: Callable[[int], Any] | None) -> None:
        self.user_fn = user_fn

    def __call__(self, worker_id: int) -> None:
        seed_worker(worker_id)
        if self.user_fn is not None:
            self.user_fn(worker_id)


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def default_num_workers(cores: int | None = None, step_threads: int | None = None) -> int:
    """Worker processes started by default for ``cores`` (default: the cores available) when
    the training step runs ``step_threads`` intra-op threads (default: torch's current count).

    A worker only helps when a core would otherwise idle while the step runs. When the step's
    threads leave cores free, the workers get them (at least one, at most
    ``MAX_DEFAULT_WORKERS``): on 2 cores with a one-thread step, one worker. When the step uses
    every core, 0 on 1 or 2 cores (a worker would take CPU from the step and add hand-over
    costs; docs/BENCHMARKS.md, "Data pipeline", has the measurements), else ``min(cores - 1, 8)``:
    the main process keeps one core and the workers get the rest."""
    cores = available_cores() if cores is None else int(cores)
    threads = torch.get_num_threads() if step_threads is None else int(step_threads)
    if threads < cores:
        return min(cores - threads, MAX_DEFAULT_WORKERS)
    if cores <= 2:
        return 0
    return min(cores - 1, MAX_DEFAULT_WORKERS)


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool = False, num_workers: int | None = None,
                pin_memory: bool = False, drop_last: bool = False, seed: int | None = None,
                persistent_workers: bool | None = None, prefetch_factor: int | None = None,
                worker_init_fn: Callable[[int], Any] | None = None, **kwargs: Any) -> DataLoader:
    """A ``DataLoader`` over ``dataset`` that batches with :func:`collate`.

    ``num_workers=None`` picks :func:`default_num_workers` for the cores available. With
    workers, they persist across epochs (``persistent_workers``, default True) and each keeps
    ``prefetch_factor`` batches ready (default 2). ``pin_memory`` pins batches when an
    accelerator is present (it is a no-op without one). ``worker_init_fn`` runs in each worker
    after ours (which seeds numpy's and Python's RNGs from torch's). Other keyword arguments go
    to ``DataLoader``.

    ``seed``: the loader serves :class:`~ssd_ext.data.sampling.AugmentedItems` in the order of
    an :class:`~ssd_ext.data.sampling.EpochSampler` (shuffled when ``shuffle``), so item ``i``
    of the ``k``-th pass over the loader is augmented with the generator of ``(seed, k, i)``:
    the batches depend on the seed alone, not on ``num_workers``, and targets get ``"index"``.
    The workers' own RNGs are seeded from ``seed`` too. Without a seed, items are
    ``dataset[i]`` and the transforms draw from each process's global torch RNG (a worker's
    is seeded by DataLoader; with ``num_workers=0`` it is the main process's).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if num_workers is None:
        num_workers = default_num_workers()
    if isinstance(num_workers, bool) or not isinstance(num_workers, int | np.integer) or num_workers < 0:
        raise ValueError(f"num_workers must be an int >= 0 or None, got {num_workers!r}")
    if worker_init_fn is not None and not callable(worker_init_fn):
        raise TypeError(f"worker_init_fn must be callable or None, got {type(worker_init_fn).__name__}")
    num_workers = int(num_workers)
    generator = None
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
            raise TypeError(f"seed must be an int or None, got {seed!r}")
        if "sampler" in kwargs or "batch_sampler" in kwargs:
            raise ValueError("seed orders the items itself: pass seed or a sampler, not both")
        generator = torch.Generator()
        generator.manual_seed(int(seed))
        dataset = AugmentedItems(dataset, int(seed))
        kwargs["sampler"] = EpochSampler(dataset, num_replicas=1, rank=0, shuffle=shuffle, seed=int(seed))
        shuffle = False  # the sampler shuffles
    if num_workers > 0:
        kwargs["persistent_workers"] = True if persistent_workers is None else bool(persistent_workers)
        kwargs["prefetch_factor"] = 2 if prefetch_factor is None else int(prefetch_factor)
    return DataLoader(
        dataset,
        batch_size=int(batch_size),
        shuffle=shuffle,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=bool(pin_memory and torch.accelerator.is_available()),
        drop_last=drop_last,
        worker_init_fn=_WorkerInit(worker_init_fn),
        generator=generator,
        **kwargs,
    )
