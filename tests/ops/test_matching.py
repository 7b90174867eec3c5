"""match: the fused batched matching + encoding op against the reference, hand-made cases
(forced matches, shared best priors, the inclusive threshold, crowds), bad input. opcheck and
torch.compile: test_registration.py."""

from __future__ import annotations

import pytest
import ssd_reference as ref
import torch
from helpers import DEVICES, assert_close_to_reference, random_boxes, random_ground_truth, ssd_priors
from hypothesis import given, settings
from hypothesis import strategies as st

from ssd_ext import ops


def cxcywh(boxes: list[list[float]]) -> torch.Tensor:
    return ref.xyxy_to_cxcywh(torch.tensor(boxes, dtype=torch.float32))


def run_both(boxes, labels, priors, device, **kwargs):
    expected = ref.match(boxes, labels, priors, **kwargs)
    actual = ops.match([b.to(device) for b in boxes], [lab.to(device) for lab in labels],
                       priors.to(device), **kwargs)
    return actual, expected


def assert_matches_reference(actual, expected):
    loc, labels = actual
    ref_loc, ref_labels = expected
    assert labels.dtype == torch.int64
    assert torch.equal(labels.cpu(), ref_labels)
    assert_close_to_reference(loc, ref_loc)


@settings(max_examples=30, deadline=None)
@given(counts=st.lists(st.integers(0, 12), min_size=1, max_size=5), seed=st.integers(0, 2**31 - 1),
       threshold=st.sampled_from([0.3, 0.5, 0.7, 1.0]), num_priors=st.integers(1, 300),
       min_size=st.sampled_from([0.001, 0.01, 0.1]))
def test_matches_reference_random(counts, seed, threshold, num_priors, min_size):
    generator = torch.Generator().manual_seed(seed)
    boxes, labels = random_ground_truth(counts, generator, min_size=min_size)
    priors = ref.xyxy_to_cxcywh(random_boxes(num_priors, generator, min_size=0.02))
    for device in DEVICES:
        assert_matches_reference(*run_both(boxes, labels, priors, device, iou_threshold=threshold))


def quantised_boxes(count: int, generator: torch.Generator, steps: int = 4) -> torch.Tensor:
    """xyxy boxes on a coarse grid (multiples of 1/steps): many exactly equal IoUs."""
    corners = torch.randint(0, steps, (count, 2), generator=generator)
    sizes = torch.randint(1, steps + 1, (count, 2), generator=generator)
    far = (corners + sizes).clamp(max=steps)
    return torch.cat([corners, far], dim=1).float() / steps


@settings(max_examples=20, deadline=None)
@given(counts=st.lists(st.integers(0, 10), min_size=1, max_size=4), num_priors=st.integers(1, 40),
       seed=st.integers(0, 2**31 - 1), threshold=st.sampled_from([0.25, 0.5, 1.0]))
def test_tie_rules_match_reference_on_grid_boxes(counts, num_priors, seed, threshold):
    generator = torch.Generator().manual_seed(seed)
    boxes = [quantised_boxes(g, generator) for g in counts]
    labels = [torch.randint(1, 5, (g,), generator=generator) for g in counts]
    priors = ref.xyxy_to_cxcywh(quantised_boxes(num_priors, generator))
    for device in DEVICES:
        assert_matches_reference(*run_both(boxes, labels, priors, device, iou_threshold=threshold))


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), variances=st.sampled_from([(0.1, 0.2), (0.5, 1.0)]))
def test_matches_reference_ssd300_priors(seed, variances):
    generator = torch.Generator().manual_seed(seed)
    counts = torch.randint(0, 12, (3,), generator=generator).tolist()
    boxes, labels = random_ground_truth(counts, generator)
    for device in DEVICES:
        assert_matches_reference(*run_both(boxes, labels, ssd_priors("ssd300"), device, variances=variances))


def test_matches_reference_ssd512_priors(device):
    generator = torch.Generator().manual_seed(5)
    boxes, labels = random_ground_truth([3, 0, 20], generator, min_size=0.005)
    priors = ssd_priors("ssd512")
    assert priors.shape[0] == 24564
    assert_matches_reference(*run_both(boxes, labels, priors, device))


def test_crowd_of_300_ground_truths(device):
    # A COCO-like crowd: many small, overlapping objects, more than any fixed cap of 256.
    # (Every third SSD300 prior keeps the reference's greedy loop quick.)
    generator = torch.Generator().manual_seed(7)
    boxes, labels = random_ground_truth([300, 2], generator, min_size=0.005, max_size=0.08)
    assert_matches_reference(*run_both(boxes, labels, ssd_priors("ssd300")[::3], device))


def test_crowd_on_ssd300_priors_every_ground_truth_keeps_a_prior(device):
    # Distinct labels per ground truth: each of the 300 must label at least one prior.
    generator = torch.Generator().manual_seed(8)
    boxes, _ = random_ground_truth([300], generator, min_size=0.005, max_size=0.08)
    labels = torch.arange(1, 301)
    _, out_labels = ops.match([boxes[0].to(device)], [labels.to(device)], ssd_priors("ssd300").to(device))
    assert set(out_labels[0].unique().tolist()) == set(range(301))


def test_duplicate_ground_truth_in_crowd_each_keep_a_prior(device):
    # Many identical boxes all want the same best prior: the greedy pass hands each one the
    # next best prior instead of dropping it.
    box = torch.tensor([[0.40, 0.40, 0.52, 0.55]])
    boxes = [box.repeat(40, 1)]
    labels = [torch.arange(1, 41)]
    priors = ssd_priors("ssd300")
    (loc, out_labels), expected = run_both(boxes, labels, priors, device)
    assert_matches_reference((loc, out_labels), expected)
    assert set(out_labels[0].unique().tolist()) >= set(range(1, 41))


def test_empty_image_is_all_background(device):
    priors = cxcywh([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]]).to(device)
    loc, labels = ops.match([torch.zeros(0, 4, device=device)],
                            [torch.zeros(0, dtype=torch.int64, device=device)], priors)
    assert loc.shape == (1, 2, 4) and labels.shape == (1, 2)
    assert not labels.any() and not loc.any()


def test_empty_batch(device):
    priors = cxcywh([[0.0, 0.0, 0.5, 0.5]]).to(device)
    loc, labels = ops.match([], [], priors)
    assert loc.shape == (0, 1, 4) and labels.shape == (0, 1)


def test_low_iou_ground_truth_is_still_forced(device):
    # The gt overlaps its best prior with IoU 0.25 < 0.5: that prior is positive anyway.
    priors = cxcywh([[0.0, 0.0, 0.4, 0.4], [0.6, 0.6, 1.0, 1.0]])
    gt = torch.tensor([[0.0, 0.0, 0.2, 0.2]])  # area 0.04 inside the first prior (area 0.16)
    (loc, labels), expected = run_both([gt], [torch.tensor([7])], priors, device)
    assert labels.cpu().tolist() == [[7, 0]]
    assert_matches_reference((loc, labels), expected)
    assert_close_to_reference(loc[0, 0], ref.encode(gt[0], priors[0]))


def test_two_ground_truths_sharing_a_best_prior_both_keep_one(device):
    # Both gts have prior 0 as their best; ssd.pytorch gives it to the last one and the first
    # loses its only match. The greedy pass gives prior 0 to the higher IoU (gt 1) and gt 0
    # its next best (prior 1), both positive although IoU < 0.5.
    priors = cxcywh([[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.7, 0.7], [0.8, 0.8, 1.0, 1.0]])
    gts = torch.tensor([[0.0, 0.0, 0.3, 0.3], [0.0, 0.0, 0.4, 0.4]])
    iou = ref.box_iou(gts, ref.cxcywh_to_xyxy(priors))
    assert iou[0].argmax() == 0 and iou[1].argmax() == 0 and iou[1, 0] > iou[0, 0]
    (loc, labels), expected = run_both([gts], [torch.tensor([3, 5])], priors, device)
    assert labels.cpu().tolist() == [[5, 3, 0]]
    assert_matches_reference((loc, labels), expected)


def test_equal_iou_tie_goes_to_lower_gt_then_lower_prior(device):
    # Two identical gts and two identical priors: gt 0 gets prior 0, gt 1 prior 1.
    priors = cxcywh([[0.1, 0.1, 0.5, 0.5], [0.1, 0.1, 0.5, 0.5], [0.1, 0.1, 0.6, 0.6]])
    gts = torch.tensor([[0.1, 0.1, 0.45, 0.45], [0.1, 0.1, 0.45, 0.45]])
    (loc, labels), expected = run_both([gts], [torch.tensor([1, 2])], priors, device)
    assert labels.cpu().tolist()[0][:2] == [1, 2]
    assert_matches_reference((loc, labels), expected)


def test_iou_exactly_at_threshold_is_positive(device):
    # gt [0, 0, 0.5, 1] is prior 1 exactly (forced); against prior 0 = [0, 0, 1, 1] its IoU is
    # exactly 0.5 (= threshold, positive); against prior 2 = [0, 0, 0.96875, 1] IoU is just
    # above 0.5 — and prior 3 = [0, 0, 1.03125, 1] gives just below (background).
    priors = cxcywh([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.5, 1.0], [0.0, 0.0, 0.96875, 1.0],
                     [0.0, 0.0, 1.03125, 1.0]])
    gt = torch.tensor([[0.0, 0.0, 0.5, 1.0]])
    iou = ref.box_iou(gt, ref.cxcywh_to_xyxy(priors))[0]
    assert iou[0].item() == 0.5 and iou[2] > 0.5 and iou[3] < 0.5
    (loc, labels), expected = run_both([gt], [torch.tensor([4])], priors, device, iou_threshold=0.5)
    assert labels.cpu().tolist() == [[4, 4, 4, 0]]
    assert_matches_reference((loc, labels), expected)


def test_ground_truth_overlapping_nothing_is_not_forced(device):
    priors = cxcywh([[0.0, 0.0, 0.2, 0.2]])
    gt = torch.tensor([[0.5, 0.5, 0.9, 0.9]])
    loc, labels = ops.match([gt.to(device)], [torch.tensor([2], device=device)], priors.to(device))
    assert labels.cpu().tolist() == [[0]]


def test_more_ground_truths_than_priors(device):
    generator = torch.Generator().manual_seed(3)
    boxes, labels = random_ground_truth([9], generator, min_size=0.2)
    priors = ref.xyxy_to_cxcywh(random_boxes(4, generator, min_size=0.3))
    assert_matches_reference(*run_both(boxes, labels, priors, device, iou_threshold=0.9))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_dtypes(device, dtype):
    generator = torch.Generator().manual_seed(11)
    boxes, labels = random_ground_truth([4, 6], generator, min_size=0.05)
    boxes = [b.to(dtype) for b in boxes]
    priors = ssd_priors("ssd300")[::7].to(dtype)
    loc, out_labels = ops.match([b.to(device) for b in boxes], [lab.to(device) for lab in labels],
                                priors.to(device))
    ref_loc, ref_labels = ref.match(boxes, labels, priors)
    assert loc.dtype == dtype
    assert torch.equal(out_labels.cpu(), ref_labels)
    tolerance = 1e-5 if dtype == torch.float64 else 1e-2
    torch.testing.assert_close(loc.cpu(), ref_loc, rtol=tolerance, atol=tolerance)


def test_mixed_dtypes_and_integer_labels_promote(device):
    priors = ssd_priors("ssd300")[::50].to(device)
    boxes = [random_boxes(3, min_size=0.1, dtype=torch.float64).to(device)]
    loc, labels = ops.match(boxes, [torch.tensor([1, 2, 3], dtype=torch.int32, device=device)], priors)
    assert loc.dtype == torch.float64 and labels.dtype == torch.int64


def test_non_contiguous_input(device):
    generator = torch.Generator().manual_seed(2)
    boxes, labels = random_ground_truth([5], generator)
    strided = torch.cat([boxes[0], boxes[0]], dim=1)[:, :4]
    priors = ssd_priors("ssd300")[::3]
    assert not strided.is_contiguous() and not priors.is_contiguous()
    assert_matches_reference(*run_both([strided], labels, priors, device))


def test_deterministic_across_calls(device):
    generator = torch.Generator().manual_seed(4)
    boxes, labels = random_ground_truth([30, 30], generator, max_size=0.2)
    priors = ssd_priors("ssd300").to(device)
    args = ([b.to(device) for b in boxes], [lab.to(device) for lab in labels], priors)
    first = ops.match(*args)
    second = ops.match(*args)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


@pytest.mark.parametrize(
    "boxes, labels, kwargs, error, match",
    [
        ([torch.tensor([[0.1, 0.1, 0.1, 0.5]])], [torch.tensor([1])], {}, ValueError,
         r"image 0, row 0: .*zero or negative width"),
        ([torch.zeros(0, 4), torch.tensor([[0.1, 0.1, 0.2, 0.2], [0.3, 0.5, 0.4, 0.4]])],
         [torch.zeros(0, dtype=torch.int64), torch.tensor([1, 1])], {}, ValueError,
         r"image 1, row 1: .*negative width or height"),
        ([torch.tensor([[0.1, float("nan"), 0.2, 0.5]])], [torch.tensor([1])], {}, ValueError,
         r"image 0, row 0: .*non-finite"),
        ([torch.tensor([[0.1, 0.1, float("inf"), 0.5]])], [torch.tensor([1])], {}, ValueError, "non-finite"),
        ([torch.tensor([[0.1, 0.1, 0.2, 0.5]])], [torch.tensor([0])], {}, ValueError, "label 0 outside"),
        ([torch.tensor([[0.1, 0.1, 0.2, 0.5]])], [torch.tensor([21])], {"num_classes": 21}, ValueError,
         r"label 21 outside .*< num_classes=21"),
        ([torch.zeros(1, 4)], [torch.tensor([1]), torch.tensor([1])], {}, ValueError, "one entry per image"),
        ([torch.tensor([[0.1, 0.1, 0.2, 0.5]])], [torch.tensor([1, 2])], {}, ValueError,
         r"gt_labels\[0\] must have shape \[1\]"),
        ([torch.zeros(2, 5)], [torch.tensor([1, 1])], {}, ValueError, r"gt_boxes\[0\] must have a last"),
        ([torch.tensor([[0.1, 0.1, 0.2, 0.5]])], [torch.tensor([1.0])], {}, TypeError,
         r"gt_labels\[0\] must be an integer"),
        (torch.zeros(1, 1, 4), [torch.tensor([1])], {}, TypeError, "gt_boxes must be a list"),
        ([torch.tensor([[0.1, 0.1, 0.2, 0.5]], device="meta")], [torch.tensor([1])], {}, ValueError,
         "priors' device"),
        ([torch.tensor([[0.1, 0.1, 0.2, 0.5]])], [torch.tensor([1])], {"iou_threshold": 0.0}, ValueError,
         r"iou_threshold must be in \(0, 1\]"),
        ([torch.tensor([[0.1, 0.1, 0.2, 0.5]])], [torch.tensor([1])], {"variances": (0.1, -1)}, ValueError,
         "variances must be positive"),
        ([torch.tensor([[0.1, 0.1, 0.2, 0.5]])], [torch.tensor([1])], {"invalid": "ignore"}, ValueError,
         "invalid must be"),
    ],
)
def test_bad_input(boxes, labels, kwargs, error, match):
    priors = cxcywh([[0.0, 0.0, 0.5, 0.5]])
    with pytest.raises(error, match=match):
        ops.match(boxes, labels, priors, **kwargs)


def test_drop_invalid_ground_truth_warns(device):
    priors = ssd_priors("ssd300")[::20].to(device)
    good = torch.tensor([[0.1, 0.1, 0.4, 0.5]], device=device)
    bad = torch.tensor([[0.3, 0.3, 0.3, 0.6]], device=device)
    with pytest.warns(UserWarning, match="dropping invalid ground truth"):
        dropped = ops.match([torch.cat([bad, good]), bad], [torch.tensor([4, 2], device=device),
                            torch.tensor([1], device=device)], priors, invalid="drop")
    clean = ops.match([good, good[:0]], [torch.tensor([2], device=device),
                      torch.zeros(0, dtype=torch.int64, device=device)], priors)
    assert torch.equal(dropped[1], clean[1]) and torch.equal(dropped[0], clean[0])
    assert torch.isfinite(dropped[0]).all()


def test_kernel_checks_reach_python_as_value_errors():
    boxes = torch.tensor([[0.1, 0.1, 0.2, 0.5]])
    labels = torch.tensor([1])
    priors = cxcywh([[0.0, 0.0, 0.5, 0.5]])
    with pytest.raises(ValueError, match=r"gt_offsets\[-1\] must equal"):
        torch.ops.ssd_ext.match(boxes, labels, torch.tensor([0, 0]), priors, 0.5, 0.1, 0.2)
    with pytest.raises(ValueError, match="must not decrease"):
        torch.ops.ssd_ext.match(boxes, labels, torch.tensor([0, 1, 0, 1]), priors, 0.5, 0.1, 0.2)
    with pytest.raises(ValueError, match="gt_labels must have shape"):
        torch.ops.ssd_ext.match(boxes, labels[:0], torch.tensor([0, 1]), priors, 0.5, 0.1, 0.2)
    with pytest.raises(TypeError, match="gt_offsets must be an int64"):
        torch.ops.ssd_ext.match(boxes, labels, torch.tensor([0, 1], dtype=torch.int32), priors, 0.5, 0.1, 0.2)
    with pytest.raises(ValueError, match="iou_threshold"):
        torch.ops.ssd_ext.match(boxes, labels, torch.tensor([0, 1]), priors, 1.5, 0.1, 0.2)
