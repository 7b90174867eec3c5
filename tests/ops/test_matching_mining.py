"""hard_negative_mining against the reference (a stable sort), hand-worked cases, the tie
and NaN rules, images without positives, bad input. opcheck and torch.compile:
test_registration.py."""

from __future__ import annotations

import pytest
import ssd_reference as ref
import torch
from helpers import DEVICES, mining_problem
from hypothesis import given, settings
from hypothesis import strategies as st

from ssd_ext import ops

LABELS_2x3 = torch.zeros(2, 3, dtype=torch.int64)


@settings(max_examples=40, deadline=None)
@given(batch=st.integers(1, 4), num_priors=st.integers(1, 600),
       positive_rate=st.sampled_from([0.0, 0.01, 0.1, 0.5]),
       ratio=st.integers(0, 5), min_negatives=st.sampled_from([0, 1, 7, 100]),
       distinct=st.sampled_from([None, 1, 3, 50]), seed=st.integers(0, 2**31 - 1))
def test_matches_reference_random(batch, num_priors, positive_rate, ratio, min_negatives, distinct, seed):
    generator = torch.Generator().manual_seed(seed)
    loss, labels = mining_problem(batch, num_priors, generator, positive_rate, distinct)
    expected = ref.hard_negative_mining(loss, labels, ratio, min_negatives)
    for device in DEVICES:
        actual = ops.hard_negative_mining(loss.to(device), labels.to(device), ratio, min_negatives)
        assert actual.dtype == torch.bool
        assert torch.equal(actual.cpu(), expected)


def test_ssd300_sized_batch(device):
    generator = torch.Generator().manual_seed(0)
    loss, labels = mining_problem(8, 8732, generator, 0.005)
    actual = ops.hard_negative_mining(loss.to(device), labels.to(device))
    expected = ref.hard_negative_mining(loss, labels)
    assert torch.equal(actual.cpu(), expected)
    num_pos = (labels > 0).sum(1)
    assert torch.equal(actual.cpu().sum(1), 4 * num_pos)


def test_hand_worked(device):
    loss = torch.tensor([[0.1, 0.9, 0.5, 0.7, 0.3, 0.8]])
    labels = torch.tensor([[0, 0, 2, 0, 0, 0]])
    # one positive (index 2), ratio 2: the two hardest negatives are 1 (0.9) and 5 (0.8)
    keep = ops.hard_negative_mining(loss.to(device), labels.to(device), neg_pos_ratio=2)
    assert keep.cpu().tolist() == [[False, True, True, False, False, True]]


def test_ties_go_to_lower_index(device):
    loss = torch.tensor([[1.0, 2.0, 2.0, 2.0, 0.5, 2.0]])
    labels = torch.tensor([[3, 0, 0, 0, 0, 0]])
    keep = ops.hard_negative_mining(loss.to(device), labels.to(device), neg_pos_ratio=2)
    assert keep.cpu().tolist() == [[True, True, True, False, False, False]]


def test_negative_zero_ties_with_zero(device):
    loss = torch.tensor([[0.0, -0.0, 0.0, -0.0, -1.0]])
    labels = torch.tensor([[0, 0, 0, 0, 0]])
    keep = ops.hard_negative_mining(loss.to(device), labels.to(device), neg_pos_ratio=0, min_negatives=3)
    assert keep.cpu().tolist() == [[True, True, True, False, False]]
    assert torch.equal(keep.cpu(), ref.hard_negative_mining(loss, labels, 0, 3))


def test_nan_ranks_highest(device):
    nan, inf = float("nan"), float("inf")
    loss = torch.tensor([[1.0, nan, inf, nan, 5.0, -inf]])
    labels = torch.tensor([[1, 0, 0, 0, 0, 0]])
    keep = ops.hard_negative_mining(loss.to(device), labels.to(device), neg_pos_ratio=3)
    # NaNs first (in index order), then +inf
    assert keep.cpu().tolist() == [[True, True, True, True, False, False]]
    assert torch.equal(keep.cpu(), ref.hard_negative_mining(loss, labels, 3))


def test_image_without_positives_gets_min_negatives(device):
    loss = torch.arange(10.0).reshape(1, 10)
    labels = torch.zeros(1, 10, dtype=torch.int64)
    assert not ops.hard_negative_mining(loss.to(device), labels.to(device)).any()
    keep = ops.hard_negative_mining(loss.to(device), labels.to(device), min_negatives=3)
    assert keep.cpu().nonzero()[:, 1].tolist() == [7, 8, 9]


def test_quota_capped_by_negatives_and_ignored_labels(device):
    loss = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0]])
    labels = torch.tensor([[1, 2, -1, 0, 0]])  # -1: ignored, neither positive nor negative
    keep = ops.hard_negative_mining(loss.to(device), labels.to(device), neg_pos_ratio=3)
    assert keep.cpu().tolist() == [[True, True, False, True, True]]


def test_huge_ratio_saturates(device):
    loss = torch.rand(2, 50)
    labels = torch.zeros(2, 50, dtype=torch.int64)
    labels[:, 0] = 1
    keep = ops.hard_negative_mining(loss.to(device), labels.to(device), neg_pos_ratio=2**62)
    assert keep.all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_dtypes(device, dtype):
    generator = torch.Generator().manual_seed(1)
    loss, labels = mining_problem(3, 500, generator, 0.05)
    loss = loss.to(dtype)
    keep = ops.hard_negative_mining(loss.to(device), labels.to(device))
    assert torch.equal(keep.cpu(), ref.hard_negative_mining(loss, labels))


def test_empty(device):
    keep = ops.hard_negative_mining(torch.zeros(0, 5, device=device),
                                    torch.zeros(0, 5, dtype=torch.int64, device=device))
    assert keep.shape == (0, 5)
    keep = ops.hard_negative_mining(torch.zeros(2, 0, device=device),
                                    torch.zeros(2, 0, dtype=torch.int64, device=device))
    assert keep.shape == (2, 0)


def test_non_contiguous_and_int32_labels(device):
    generator = torch.Generator().manual_seed(2)
    loss, labels = mining_problem(6, 300, generator, 0.05)
    keep = ops.hard_negative_mining(loss.t().contiguous().t().to(device), labels.to(torch.int32).to(device))
    assert torch.equal(keep.cpu(), ref.hard_negative_mining(loss, labels))


@pytest.mark.parametrize(
    "loss, labels, kwargs, error, match",
    [
        (torch.zeros(2, 3, 1), LABELS_2x3, {}, ValueError,
         r"conf_loss must have shape \[B, P\]"),
        (torch.zeros(2, 3), torch.zeros(2, 4, dtype=torch.int64), {}, ValueError,
         "labels must have the shape"),
        (torch.zeros(2, 3), torch.zeros(2, 3), {}, TypeError, "labels must be an integer"),
        (torch.zeros(2, 3), LABELS_2x3, {"neg_pos_ratio": -1}, ValueError,
         "neg_pos_ratio must be >= 0"),
        (torch.zeros(2, 3), LABELS_2x3, {"min_negatives": 1.5}, TypeError,
         "min_negatives must be an int"),
        (torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.int64, device="meta"), {}, ValueError,
         "same device"),
        ([[1.0]], torch.zeros(1, 1, dtype=torch.int64), {}, TypeError, "conf_loss must be a torch.Tensor"),
    ],
)
def test_bad_input(loss, labels, kwargs, error, match):
    with pytest.raises(error, match=match):
        ops.hard_negative_mining(loss, labels, **kwargs)


def test_kernel_checks_reach_python():
    with pytest.raises(TypeError, match="labels must be an int64"):
        torch.ops.ssd_ext.hard_negative_mining(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.int32), 3, 0)
    with pytest.raises(ValueError, match="min_negatives must be >= 0"):
        torch.ops.ssd_ext.hard_negative_mining(torch.zeros(2, 3), LABELS_2x3, 3, -2)
