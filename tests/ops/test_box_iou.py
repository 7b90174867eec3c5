"""box_iou against the reference, torchvision, hand-worked values and bad input."""

from __future__ import annotations

import pytest
import ssd_reference as ref
import torch
from helpers import DEVICES, assert_close_to_reference, random_boxes
from hypothesis import given, settings
from hypothesis import strategies as st

from ssd_ext import ops


def test_hand_worked_values(device):
    boxes1 = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0]], device=device)
    boxes2 = torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0], [5.0, 5.0, 6.0, 6.0]],
                          device=device)
    expected = torch.tensor([[1 / 7, 1.0, 0.0], [0.0, 0.25, 0.0]])
    assert_close_to_reference(ops.box_iou(boxes1, boxes2), expected)


def test_zero_union_is_zero_not_nan(device):
    point = torch.tensor([[0.5, 0.5, 0.5, 0.5]], device=device)
    iou = ops.box_iou(point, point)
    assert iou.item() == 0.0


def test_nan_box_overlaps_nothing(device):
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [float("nan"), 0.0, 1.0, 1.0]], device=device)
    iou = ops.box_iou(boxes, boxes)
    expected = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    assert torch.equal(iou.cpu(), expected)
    assert torch.equal(ref.box_iou(boxes.cpu(), boxes.cpu()), expected)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 70), m=st.integers(0, 70), seed=st.integers(0, 2**31 - 1),
       min_size=st.sampled_from([0.0, 0.01]))
def test_matches_reference_random(n, m, seed, min_size):
    generator = torch.Generator().manual_seed(seed)
    boxes1 = random_boxes(n, generator, min_size=min_size)
    boxes2 = random_boxes(m, generator, min_size=min_size)
    expected = ref.box_iou(boxes1, boxes2)
    for device in DEVICES:
        actual = ops.box_iou(boxes1.to(device), boxes2.to(device))
        assert actual.shape == (n, m)
        assert_close_to_reference(actual, expected)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_dtypes(device, dtype):
    generator = torch.Generator().manual_seed(0)
    boxes1 = random_boxes(37, generator, dtype=dtype)
    boxes2 = random_boxes(29, generator, dtype=dtype)
    actual = ops.box_iou(boxes1.to(device), boxes2.to(device))
    assert actual.dtype == dtype
    expected = ref.box_iou(boxes1, boxes2)
    tolerance = 1e-5 if dtype == torch.float64 else 1e-2
    torch.testing.assert_close(actual.cpu(), expected, rtol=tolerance, atol=tolerance)


def test_mixed_dtypes_promote(device):
    boxes1 = random_boxes(5).to(device)
    boxes2 = random_boxes(6, dtype=torch.float64).to(device)
    assert ops.box_iou(boxes1, boxes2).dtype == torch.float64


def test_integer_boxes_become_float(device):
    boxes = torch.tensor([[0, 0, 10, 10], [5, 5, 15, 15]], device=device)
    iou = ops.box_iou(boxes, boxes)
    assert iou.dtype == torch.float32
    assert_close_to_reference(iou, torch.tensor([[1.0, 25 / 175], [25 / 175, 1.0]]))


def test_non_contiguous_input(device):
    boxes = random_boxes(20).to(device)
    strided = torch.cat([boxes, boxes], dim=1)[:, ::2]
    assert not strided.is_contiguous()
    assert_close_to_reference(ops.box_iou(strided, boxes), ref.box_iou(strided.cpu(), boxes.cpu()))


def test_empty_inputs(device):
    boxes = random_boxes(3).to(device)
    empty = torch.zeros(0, 4, device=device)
    assert ops.box_iou(empty, boxes).shape == (0, 3)
    assert ops.box_iou(boxes, empty).shape == (3, 0)


def test_agrees_with_torchvision():
    torchvision = pytest.importorskip("torchvision")
    generator = torch.Generator().manual_seed(1)
    boxes1 = random_boxes(300, generator, min_size=0.01)
    boxes2 = random_boxes(200, generator, min_size=0.01)
    assert_close_to_reference(ops.box_iou(boxes1, boxes2), torchvision.ops.box_iou(boxes1, boxes2))


@pytest.mark.parametrize(
    "boxes1, boxes2, error, match",
    [
        (torch.zeros(3, 5), torch.zeros(2, 4), ValueError, "boxes1 must have a last dimension of size 4"),
        (torch.zeros(3, 4), torch.zeros(2, 2, 4), ValueError, r"boxes2 must be 2-dimensional"),
        (torch.zeros(3, 4), [[0, 0, 1, 1]], TypeError, "boxes2 must be a torch.Tensor"),
        (torch.zeros(3, 4, dtype=torch.bool), torch.zeros(2, 4), TypeError, "boxes1 must be a real"),
        (torch.zeros(3, 4), torch.zeros(2, 4, device="meta"), ValueError, "same device"),
    ],
)
def test_bad_input(boxes1, boxes2, error, match):
    with pytest.raises(error, match=match):
        ops.box_iou(boxes1, boxes2)


def test_float8_is_a_clear_type_error():
    boxes = torch.zeros(2, 4).to(torch.float8_e4m3fn)
    with pytest.raises(TypeError, match="boxes1 must be float16, bfloat16, float32 or float64"):
        ops.box_iou(boxes, torch.zeros(2, 4))
    # The kernels' own check (not only at::isFloatingType, which admits float8).
    with pytest.raises(TypeError, match="boxes1 must be a floating-point tensor"):
        torch.ops.ssd_ext.box_iou(boxes, boxes)


def test_kernel_checks_reach_python_as_value_errors():
    # Calling the dispatcher op directly skips the wrapper: the C++ checks still name the argument.
    with pytest.raises(ValueError, match="boxes1 must have 2 dimensions"):
        torch.ops.ssd_ext.box_iou(torch.zeros(3, 5), torch.zeros(2, 4))
    with pytest.raises(TypeError, match="same dtype"):
        torch.ops.ssd_ext.box_iou(torch.zeros(3, 4), torch.zeros(2, 4, dtype=torch.float64))
