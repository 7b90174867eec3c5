"""nms and batched_nms against the reference, torchvision, hand-worked cases and bad input."""

from __future__ import annotations

import pytest
import ssd_reference as ref
import torch
from helpers import DEVICES, random_boxes, unique_scores
from hypothesis import given, settings
from hypothesis import strategies as st

from ssd_ext import ops


def run_nms(device, boxes, scores, threshold, max_output=None):
    kept = ops.nms(boxes.to(device), scores.to(device), threshold, max_output)
    assert kept.dtype == torch.int64 and kept.device.type == torch.device(device).type
    return kept.cpu()


def run_batched(device, boxes, scores, idxs, threshold, max_output=None):
    kept = ops.batched_nms(boxes.to(device), scores.to(device), idxs.to(device), threshold, max_output)
    assert kept.dtype == torch.int64
    return kept.cpu()


def test_hand_worked(device):
    boxes = torch.tensor([
        [0.0, 0.0, 2.0, 2.0],   # score 0.9: kept
        [0.0, 0.0, 2.0, 1.9],   # IoU 0.95 with box 0: dropped
        [1.0, 1.0, 3.0, 3.0],   # IoU 1/7 with box 0: kept at 0.5, dropped at 0.1
        [5.0, 5.0, 6.0, 6.0],   # disjoint: kept
    ])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.1])
    assert run_nms(device, boxes, scores, 0.5).tolist() == [0, 2, 3]
    assert run_nms(device, boxes, scores, 0.1).tolist() == [0, 3]
    assert run_nms(device, boxes, scores, 0.5, max_output=2).tolist() == [0, 2]
    assert run_nms(device, boxes, scores, 0.5, max_output=0).tolist() == []


def test_threshold_is_strict(device):
    # IoU exactly 0.5: kept at threshold 0.5, dropped below it.
    boxes = torch.tensor([[0.0, 0.0, 2.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    scores = torch.tensor([0.9, 0.8])
    assert run_nms(device, boxes, scores, 0.5).tolist() == [0, 1]
    assert run_nms(device, boxes, scores, 0.4999).tolist() == [0]


@settings(max_examples=15, deadline=None)
@given(n=st.integers(0, 300), seed=st.integers(0, 2**31 - 1),
       threshold=st.sampled_from([0.0, 0.3, 0.5, 0.7, 1.0]))
def test_matches_reference(n, seed, threshold):
    generator = torch.Generator().manual_seed(seed)
    boxes = random_boxes(n, generator, min_size=0.01)
    scores = unique_scores(n, generator)
    expected = ref.nms(boxes, scores, threshold)
    for device in DEVICES:
        assert torch.equal(run_nms(device, boxes, scores, threshold), expected)


@settings(max_examples=15, deadline=None)
@given(n=st.integers(0, 300), classes=st.integers(1, 8), seed=st.integers(0, 2**31 - 1),
       threshold=st.sampled_from([0.0, 0.5, 1.0]), max_output=st.sampled_from([None, 0, 1, 7]))
def test_batched_matches_reference(n, classes, seed, threshold, max_output):
    generator = torch.Generator().manual_seed(seed)
    boxes = random_boxes(n, generator, min_size=0.01)
    scores = unique_scores(n, generator)
    idxs = torch.randint(0, classes, (n,), generator=generator)
    expected = ref.batched_nms(boxes, scores, idxs, threshold, max_output)
    for device in DEVICES:
        assert torch.equal(run_batched(device, boxes, scores, idxs, threshold, max_output), expected)


@pytest.mark.parametrize("n", [0, 1, 63, 64, 65, 129])
@pytest.mark.parametrize("threshold", [0.0, 0.5, 1.0])
def test_block_edges(device, n, threshold):
    generator = torch.Generator().manual_seed(n)
    boxes = random_boxes(n, generator, max_size=0.3)
    scores = unique_scores(n, generator)
    expected = ref.nms(boxes, scores, threshold)
    assert torch.equal(run_nms(device, boxes, scores, threshold), expected)
    for max_output in (1, 64, n):
        assert torch.equal(run_nms(device, boxes, scores, threshold, max_output), expected[:max_output])


def test_ties_go_to_the_lower_index(device):
    generator = torch.Generator().manual_seed(3)
    boxes = random_boxes(200, generator, max_size=0.3)
    scores = torch.randint(0, 5, (200,), generator=generator).to(torch.float32) / 4
    expected = ref.nms(boxes, scores, 0.5)
    kept = run_nms(device, boxes, scores, 0.5)
    assert torch.equal(kept, expected)
    # Decreasing score, and within equal scores increasing index.
    pairs = list(zip((-scores[kept]).tolist(), kept.tolist(), strict=True))
    assert pairs == sorted(pairs)


def test_identical_boxes(device):
    boxes = torch.tensor([[0.1, 0.1, 0.4, 0.5]]).repeat(100, 1)
    scores = torch.full((100,), 0.5)
    assert run_nms(device, boxes, scores, 0.5).tolist() == [0]
    assert run_nms(device, boxes, scores, 1.0).tolist() == list(range(100))


def test_disjoint_boxes_all_kept(device):
    x = torch.arange(100, dtype=torch.float32)
    boxes = torch.stack([x, x, x + 0.5, x + 0.5], dim=1)
    scores = torch.linspace(0, 1, 100)
    assert run_nms(device, boxes, scores, 0.0).tolist() == list(range(99, -1, -1))


def test_zero_area_boxes_never_suppress(device):
    boxes = torch.tensor([[0.5, 0.5, 0.5, 0.5], [0.5, 0.5, 0.5, 0.5], [0.0, 0.0, 1.0, 1.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert run_nms(device, boxes, scores, 0.0).tolist() == [0, 1, 2]


def test_nan_rules(device):
    boxes = torch.tensor([
        [0.0, 0.0, 1.0, 1.0],
        [0.0, 0.0, 1.0, 1.0],
        [float("nan"), 0.0, 1.0, 1.0],
        [0.0, 0.0, 1.0, 1.0],
    ])
    # Box 0 has a NaN score: never kept and suppresses nothing, so box 1 survives; box 2 has a
    # NaN coordinate: kept by its score, overlaps nothing; box 3 is box 1's duplicate.
    scores = torch.tensor([float("nan"), 0.5, 0.9, 0.3])
    expected = [2, 1]
    assert ref.nms(boxes, scores, 0.5).tolist() == expected
    assert run_nms(device, boxes, scores, 0.5).tolist() == expected
    idxs = torch.tensor([0, 0, 0, 1])
    assert ref.batched_nms(boxes, scores, idxs, 0.5).tolist() == [2, 1, 3]
    assert run_batched(device, boxes, scores, idxs, 0.5).tolist() == [2, 1, 3]
    all_nan = torch.full((4,), float("nan"))
    assert run_nms(device, boxes, all_nan, 0.5).tolist() == []


def test_infinite_and_signed_zero_scores(device):
    boxes = random_boxes(6, torch.Generator().manual_seed(0))
    scores = torch.tensor([0.0, -0.0, float("-inf"), float("inf"), -0.0, 0.0])
    expected = ref.nms(boxes, scores, 1.0)
    assert expected.tolist() == [3, 0, 1, 4, 5, 2]
    assert torch.equal(run_nms(device, boxes, scores, 1.0), expected)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_dtypes(device, dtype):
    generator = torch.Generator().manual_seed(5)
    boxes = random_boxes(300, generator, dtype=dtype, max_size=0.3)
    scores = unique_scores(300, generator).to(dtype)
    expected = ref.nms(boxes, scores, 0.5)
    assert torch.equal(run_nms(device, boxes, scores, 0.5), expected)
    idxs = torch.randint(0, 4, (300,), generator=generator)
    assert torch.equal(run_batched(device, boxes, scores, idxs, 0.5),
                       ref.batched_nms(boxes, scores, idxs, 0.5))


def test_batched_float16_huge_class_ids(device):
    # The coordinate-offset trick would add class_id * (max + 1) to float16 coordinates and
    # merge far-apart boxes; here classes are compared, never offset.
    generator = torch.Generator().manual_seed(9)
    boxes = random_boxes(200, generator, dtype=torch.float16, max_size=0.3)
    scores = unique_scores(200, generator).to(torch.float16)
    idxs = torch.randint(0, 3, (200,), generator=generator) * (2**61) + 12345
    expected = ref.batched_nms(boxes, scores, idxs, 0.5)
    assert torch.equal(run_batched(device, boxes, scores, idxs, 0.5), expected)
    per_class = []
    for value in idxs.unique():
        members = torch.nonzero(idxs == value).flatten()
        per_class.append(members[ref.nms(boxes[members], scores[members], 0.5)])
    merged = torch.cat(per_class)
    merged = merged[torch.sort(scores[merged].float(), descending=True, stable=True).indices]
    assert sorted(merged.tolist()) == sorted(expected.tolist())


@pytest.mark.parametrize("n", [0, 1, 64, 65, 500])
@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 1.0])
def test_agrees_with_torchvision(n, threshold):
    torchvision = pytest.importorskip("torchvision")
    generator = torch.Generator().manual_seed(n + int(10 * threshold))
    boxes = random_boxes(n, generator, min_size=0.01)
    scores = unique_scores(n, generator)
    idxs = torch.randint(0, 5, (n,), generator=generator)
    expected = torchvision.ops.nms(boxes, scores, threshold)
    expected_batched = torchvision.ops.batched_nms(boxes, scores, idxs, threshold)
    assert torch.equal(ref.nms(boxes, scores, threshold), expected)
    for device in DEVICES:
        assert torch.equal(run_nms(device, boxes, scores, threshold), expected)
        assert torch.equal(run_batched(device, boxes, scores, idxs, threshold), expected_batched)


def test_many_boxes_agree_with_torchvision():
    torchvision = pytest.importorskip("torchvision")
    # 30k boxes in 300 clusters of near-duplicates: few are kept, so the quadratic peers stay fast.
    generator = torch.Generator().manual_seed(11)
    n, clusters = 30_000, 300
    centres = random_boxes(clusters, generator, min_size=0.02, max_size=0.1)
    jitter = 0.002 * torch.rand(n, 4, generator=generator)
    boxes = centres[torch.randint(0, clusters, (n,), generator=generator)] + jitter
    scores = unique_scores(n, generator)
    expected = torchvision.ops.nms(boxes, scores, 0.5)
    assert len(expected) < 2000
    for device in DEVICES:
        assert torch.equal(run_nms(device, boxes, scores, 0.5), expected)
    idxs = torch.randint(0, 50, (n,), generator=generator)
    expected = torchvision.ops.batched_nms(boxes, scores, idxs, 0.5)
    for device in DEVICES:
        assert torch.equal(run_batched(device, boxes, scores, idxs, 0.5), expected)


def test_cuda_box_limit_is_a_clear_error():
    # The CUDA mask is N^2/8 bytes: past kCudaNmsMaxBoxes the op refuses (CUDA runs only).
    for device in [d for d in DEVICES if d == "cuda"]:
        boxes = torch.zeros(131_073, 4, device=device)
        with pytest.raises(ValueError, match="at most 131072 boxes"):
            ops.nms(boxes, torch.rand(131_073, device=device), 0.5)


def test_non_contiguous_and_integer_inputs(device):
    boxes = random_boxes(50, torch.Generator().manual_seed(2)).to(device)
    scores = torch.rand(100, generator=torch.Generator().manual_seed(4)).to(device)[::2]
    strided = torch.cat([boxes, boxes], dim=1)[:, ::2]
    assert not strided.is_contiguous() and not scores.is_contiguous()
    assert torch.equal(ops.nms(strided, scores, 0.5).cpu(), ref.nms(strided.cpu(), scores.cpu(), 0.5))
    int_boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10]], device=device)
    assert ops.nms(int_boxes, torch.tensor([1, 2], device=device), 0.5).tolist() == [1]


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: ops.nms(torch.zeros(3, 5), torch.zeros(3), 0.5), ValueError, "boxes must have a last"),
        (lambda: ops.nms(torch.zeros(3, 4), torch.zeros(2), 0.5), ValueError,
         r"scores must have shape \[N\]"),
        (lambda: ops.nms(torch.zeros(3, 4), torch.zeros(3, 1), 0.5), ValueError, "scores must have shape"),
        (lambda: ops.nms([[0, 0, 1, 1]], torch.zeros(1), 0.5), TypeError, "boxes must be a torch.Tensor"),
        (lambda: ops.nms(torch.zeros(3, 4), torch.zeros(3), 1.5), ValueError,
         r"iou_threshold must be in \[0, 1\]"),
        (lambda: ops.nms(torch.zeros(3, 4), torch.zeros(3), float("nan")), ValueError, "iou_threshold"),
        (lambda: ops.nms(torch.zeros(3, 4), torch.zeros(3), "0.5"), TypeError, "iou_threshold"),
        (lambda: ops.nms(torch.zeros(3, 4), torch.zeros(3), 0.5, -1), ValueError, "max_output must be >= 0"),
        (lambda: ops.nms(torch.zeros(3, 4), torch.zeros(3), 0.5, 2.0), TypeError, "max_output"),
        (lambda: ops.nms(torch.zeros(3, 4), torch.zeros(3), 0.5, 2**70), ValueError,
         r"max_output must be < 2\*\*63"),
        (lambda: ops.nms(torch.zeros(3, 4), torch.zeros(3, device="meta"), 0.5), ValueError, "same device"),
        (lambda: ops.batched_nms(torch.zeros(3, 4), torch.zeros(3), torch.zeros(3), 0.5), TypeError,
         "idxs must be an integer tensor"),
        (lambda: ops.batched_nms(torch.zeros(3, 4), torch.zeros(3), torch.zeros(2, dtype=torch.long), 0.5),
         ValueError, r"idxs must have shape \[N\]"),
        (lambda: ops.batched_nms(torch.zeros(3, 4), torch.zeros(3), torch.zeros(3, dtype=torch.bool), 0.5),
         TypeError, "idxs"),
    ],
)
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_kernel_checks_reach_python_as_value_errors():
    with pytest.raises(ValueError, match="iou_threshold must be in"):
        torch.ops.ssd_ext.nms(torch.zeros(3, 4), torch.zeros(3), 2.0)
    with pytest.raises(ValueError, match="scores must have shape"):
        torch.ops.ssd_ext.nms(torch.zeros(3, 4), torch.zeros(4), 0.5)
    with pytest.raises(TypeError, match="idxs must be an int64 tensor"):
        torch.ops.ssd_ext.batched_nms(torch.zeros(3, 4), torch.zeros(3),
                                      torch.zeros(3, dtype=torch.int32), 0.5)
