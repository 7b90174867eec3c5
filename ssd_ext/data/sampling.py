"""SHIM (replaced by the data branch): one seeding mechanism."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler


def item_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    generator = torch.Generator()
    generator.manual_seed(int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0]))
    return generator


class _WithGenerator:
    def __init__(self, transform, generator):
        self.transform, self.generator = transform, generator

    def __call__(self, image, boxes, labels):
        return self.transform(image, boxes, labels, self.generator)


class AugmentedItems(Dataset):
    def __init__(self, dataset: Any, seed: int) -> None:
        self.dataset = dataset
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        epoch, index = key if isinstance(key, tuple) else (0, key)
        generator = item_generator(self.seed, epoch, index)
        transform = self.dataset.transform
        if transform is not None:
            self.dataset.transform = _WithGenerator(transform, generator)
        try:
            image, target = self.dataset[index]
        finally:
            self.dataset.transform = transform
        target["index"] = int(index)
        return image, target


class EpochSampler(DistributedSampler):
    def __init__(self, dataset, num_replicas=1, rank=0, shuffle=True, seed=0, drop_last=False):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
                         drop_last=drop_last)
        self.start = 0

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        indices = list(super().__iter__())[self.start:]
        return iter([(self.epoch, int(i)) for i in indices])

    def __len__(self) -> int:
        return self.num_samples - self.start
