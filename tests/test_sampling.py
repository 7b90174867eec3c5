"""One seeding mechanism (ssd_ext.data.sampling): per-item generators, AugmentedItems, EpochSampler,
and make_loader(seed=...) whose batches do not depend on the number of workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, DistributedSampler

from ssd_ext.data import (
    AugmentedItems,
    EpochSampler,
    SyntheticShapes,
    eval_transform,
    item_generator,
    make_loader,
    train_transform,
)


def shapes(count: int = 10, transform=None) -> SyntheticShapes:
    return SyntheticShapes(num_images=count, image_size=48, max_objects=2,
                           transform=transform or train_transform(32), cache=True)


def test_item_generator_is_seeded_from_the_key():
    state = np.random.SeedSequence([3, 1, 7]).generate_state(1)[0]
    expected = torch.Generator().manual_seed(int(state))
    assert torch.equal(item_generator(3, 1, 7).get_state(), expected.get_state())
    draws = {float(torch.rand((), generator=item_generator(3, epoch, index)))
             for epoch in range(3) for index in range(5)}
    assert len(draws) == 15


def test_augmented_items_use_the_item_generator_and_leave_the_dataset_alone():
    dataset = shapes()
    transform = dataset.transform
    items = AugmentedItems(dataset, seed=5)
    image, target = items[(2, 4)]
    expected_image, expected_target = dataset.get(4, generator=item_generator(5, 2, 4))
    assert torch.equal(image, expected_image) and torch.equal(target["boxes"], expected_target["boxes"])
    assert target["index"] == 4 and dataset.transform is transform
    assert torch.equal(items[4][0], items[(0, 4)][0])  # a plain index is epoch 0
    assert not torch.equal(items[(0, 4)][0], items[(1, 4)][0])
    assert len(items) == len(dataset)
    with pytest.raises(TypeError, match="seed"):
        AugmentedItems(dataset, seed=1.5)


def test_augmented_items_serve_a_plain_dataset_by_index():
    class Plain(Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, index):
            return torch.full((1,), float(index)), {"value": index}

    image, target = AugmentedItems(Plain(), seed=0)[(4, 2)]
    assert float(image) == 2.0 and target == {"value": 2, "index": 2}


def test_dataset_get_passes_the_generator_to_its_transform():
    seen = []

    def transform(image, boxes, labels, generator=None):
        seen.append(generator)
        return eval_transform(16)(image, boxes, labels)

    dataset = shapes(2, transform)
    generator = torch.Generator()
    dataset.get(1, generator=generator)
    dataset[1]
    assert seen == [generator, None]


def test_epoch_sampler_follows_distributed_sampler_order():
    items = AugmentedItems(shapes(), seed=0)
    sampler = EpochSampler(items, num_replicas=2, rank=1, shuffle=True, seed=9)
    sampler.set_epoch(3)
    reference = DistributedSampler(items, num_replicas=2, rank=1, shuffle=True, seed=9)
    reference.set_epoch(3)
    keys = list(sampler)
    assert keys == [(3, i) for i in reference] and len(sampler) == 5
    sampler.start = 2  # a mid-epoch resume
    assert list(sampler) == keys[2:] and len(sampler) == 3
    with pytest.raises(ValueError, match="start"):
        sampler.start = 6


def test_epoch_sampler_advances_the_epoch_itself_until_set_epoch_is_called():
    sampler = EpochSampler(range(8), shuffle=True, seed=1)
    epochs = [list(sampler) for _ in range(3)]
    assert [{e for e, _ in keys} for keys in epochs] == [{0}, {1}, {2}]
    assert all(sorted(i for _, i in keys) == list(range(8)) for keys in epochs)
    assert epochs[0] != epochs[1]
    sampler.set_epoch(0)
    assert list(sampler) == epochs[0] and list(sampler) == epochs[0]


def batches(dataset, num_workers: int, seed: int, epochs: int = 2):
    """Per epoch, per batch: (images, item indices, boxes of each item)."""
    loader = make_loader(dataset, batch_size=4, shuffle=True, num_workers=num_workers, seed=seed)
    return [[(images, [t["index"] for t in targets], [t["boxes"] for t in targets])
             for images, targets in loader] for _ in range(epochs)]


def assert_same_batches(epoch_a, epoch_b) -> None:
    for (images_a, index_a, boxes_a), (images_b, index_b, boxes_b) in zip(epoch_a, epoch_b, strict=True):
        assert torch.equal(images_a, images_b) and index_a == index_b
        assert all(torch.equal(a, b) for a, b in zip(boxes_a, boxes_b, strict=True))


def test_seeded_loader_batches_do_not_depend_on_the_number_of_workers():
    dataset = shapes(10)
    serial, parallel, again = batches(dataset, 0, 4), batches(dataset, 2, 4), batches(dataset, 0, 4)
    for run in (parallel, again):
        for epoch_a, epoch_b in zip(serial, run, strict=True):
            assert_same_batches(epoch_a, epoch_b)
    first, second = serial
    assert sorted(i for batch in first for i in batch[1]) == list(range(10))
    assert [batch[1] for batch in first] != [batch[1] for batch in second]  # a new order each epoch
    # The item at index i in epoch k is the one AugmentedItems gives for (k, i).
    index = first[0][1][0]
    assert torch.equal(first[0][0][0], AugmentedItems(dataset, seed=4)[(0, index)][0])
    other_seed = batches(dataset, 0, 5, epochs=1)[0]
    assert [batch[1] for batch in other_seed] != [batch[1] for batch in first]


def test_seed_and_a_sampler_do_not_mix():
    with pytest.raises(ValueError, match="sampler"):
        make_loader(shapes(4), batch_size=2, seed=0, sampler=range(4))
    with pytest.raises(TypeError, match="seed"):
        make_loader(shapes(4), batch_size=2, seed="0")
