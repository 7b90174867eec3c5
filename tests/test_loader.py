"""make_loader (ssd_ext.data.loader): default worker count, worker settings, worker_init_fn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from ssd_ext.data import loader as L

WORKER_MARK: dict[str, int] = {}


class MarkedItems(Dataset):
    """Items that report what the worker saw: the user's mark and a numpy draw."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int):
        info = torch.utils.data.get_worker_info()
        target = {
            "mark": WORKER_MARK.get("mark", -1),
            "numpy": float(np.random.random()),
            "worker": -1 if info is None else info.id,
        }
        return torch.zeros(3, 2, 2), target


def mark_worker(worker_id: int) -> None:
    # Runs after the loader's own seeding: numpy's RNG is already seeded from torch's.
    WORKER_MARK["mark"] = 100 + worker_id


@pytest.mark.parametrize(("cores", "expected"), [(1, 0), (2, 0), (3, 2), (4, 3), (9, 8), (64, 8)])
def test_default_num_workers_rule_when_the_step_uses_every_core(cores, expected):
    assert L.default_num_workers(cores, step_threads=cores) == expected


@pytest.mark.parametrize(("cores", "threads", "expected"), [(2, 1, 1), (4, 1, 3), (16, 4, 8), (4, 3, 1)])
def test_default_num_workers_take_the_cores_the_step_leaves(cores, threads, expected):
    assert L.default_num_workers(cores, step_threads=threads) == expected


def test_default_num_workers_uses_the_available_cores():
    assert L.available_cores() >= 1
    assert L.default_num_workers() == L.default_num_workers(L.available_cores())
    loader = L.make_loader(MarkedItems(), batch_size=2)
    assert loader.num_workers == L.default_num_workers()


def test_workers_persist_and_prefetch():
    loader = L.make_loader(MarkedItems(), batch_size=2, num_workers=1)
    assert loader.persistent_workers and loader.prefetch_factor == 2
    loader = L.make_loader(MarkedItems(), batch_size=2, num_workers=1, persistent_workers=False,
                           prefetch_factor=3)
    assert not loader.persistent_workers and loader.prefetch_factor == 3
    assert not L.make_loader(MarkedItems(), batch_size=2, num_workers=0).persistent_workers


def test_user_worker_init_fn_runs_after_the_seeding():
    def batches(seed):
        loader = L.make_loader(MarkedItems(), batch_size=2, num_workers=1, seed=seed,
                               worker_init_fn=mark_worker)
        return [target for _, targets in loader for target in targets]

    first, again = batches(7), batches(7)
    assert [t["mark"] for t in first] == [100] * 4 and [t["worker"] for t in first] == [0] * 4
    # numpy's RNG was still seeded from the loader's seed (our init ran too).
    assert [t["numpy"] for t in first] == [t["numpy"] for t in again]
    assert [t["numpy"] for t in first] != [t["numpy"] for t in batches(8)]


def test_make_loader_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_workers"):
        L.make_loader(MarkedItems(), batch_size=2, num_workers=-1)
    with pytest.raises(ValueError, match="num_workers"):
        L.make_loader(MarkedItems(), batch_size=2, num_workers=1.5)
    with pytest.raises(ValueError, match="batch_size"):
        L.make_loader(MarkedItems(), batch_size=True)
    with pytest.raises(TypeError, match="worker_init_fn"):
        L.make_loader(MarkedItems(), batch_size=2, worker_init_fn=3)
