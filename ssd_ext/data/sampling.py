"""One seeding mechanism for augmented items: a generator per (seed, epoch, index).

:func:`item_generator` makes the ``torch.Generator`` of one item in one epoch;
:class:`AugmentedItems` serves ``dataset.get(index, generator=item_generator(seed, epoch,
index))`` for the key ``(epoch, index)``; :class:`EpochSampler` yields those keys in
``DistributedSampler``'s order. An item's augmentation therefore depends on ``(seed, epoch,
index)`` alone: not on the process, the DataLoader worker, the number of workers, the batch
it lands in, or where an interrupted run resumed. The training loop and
:func:`ssd_ext.data.make_loader` (``seed=...``) both use these; nothing swaps a dataset's
transform or seeds a global generator.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

__all__ = ["AugmentedItems", "EpochSampler", "item_generator"]


def item_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A ``torch.Generator`` seeded from ``(seed, epoch, index)`` through numpy's
    ``SeedSequence`` (so nearby keys give unrelated streams); the same key always gives the
    same generator state."""
    state = np.random.SeedSequence([int(seed), int(epoch), int(index)]).generate_state(1)[0]
    generator = torch.Generator()
    generator.manual_seed(int(state))
    return generator


class AugmentedItems(Dataset):
    """``items[(epoch, index)]``: item ``index`` of ``dataset`` augmented with
    :func:`item_generator` ``(seed, epoch, index)``; a plain int key means epoch 0.

    The dataset is called as ``dataset.get(index, generator=...)`` (a
    :class:`~ssd_ext.data.DetectionDataset`); a dataset without ``get`` (any torch Dataset)
    is served as ``dataset[index]``, its own randomness then being its business. A dict
    target also gets ``"index"``. The dataset is never changed."""

    def __init__(self, dataset: Any, seed: int) -> None:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"seed must be an int, got {seed!r}")
        self.dataset = dataset
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[Any, Any]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        get = getattr(self.dataset, "get", None)
        if get is None:
            image, target = self.dataset[index]
        else:
            image, target = get(index, generator=item_generator(self.seed, epoch, index))
        if isinstance(target, dict):
            target["index"] = int(index)
        return image, target


class EpochSampler(DistributedSampler):
    """``DistributedSampler`` that yields ``(epoch, index)`` keys for :class:`AugmentedItems`.

    The order of an epoch is ``DistributedSampler``'s for ``(seed, epoch)`` (shuffled when
    ``shuffle``), this rank's share of it. ``start`` skips the first samples of that share (a
    mid-epoch resume; set it before iterating, the training loop resets it to 0 after the
    epoch); ``len()`` counts what is left. When :meth:`set_epoch` is never called (as with
    :func:`~ssd_ext.data.make_loader`), the sampler advances the epoch itself: each new
    iteration is the next epoch, starting from 0."""

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False, start: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
                         drop_last=drop_last)
        self.start = start
        self._epoch_is_set = False
        self._next_epoch = 0

    @property
    def start(self) -> int:
        """Samples of this rank's share skipped at the start of the epoch."""
        return self._start

    @start.setter
    def start(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
                or not 0 <= value <= self.num_samples:
            raise ValueError(f"start must be an int in [0, {self.num_samples}], got {value!r}")
        self._start = int(value)

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self._epoch_is_set = True

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        if not self._epoch_is_set:
            self.epoch = self._next_epoch
            self._next_epoch += 1
        epoch = self.epoch
        indices = list(super().__iter__())[self.start:]
        return iter([(epoch, int(i)) for i in indices])

    def __len__(self) -> int:
        return self.num_samples - self.start
