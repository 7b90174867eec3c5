"""nms / batched_nms and box_iou: the edges of the CUDA kernels (64-box mask words, tiles of
32 boxes, tied and NaN scores, past 65536 boxes), CPU vs CUDA bit for bit."""

from __future__ import annotations

import pytest
import ssd_reference as ref
import torch
from helpers import cuda_only, random_boxes

from ssd_ext import ops


def clustered(n: int, seed: int, levels: int | None = None):
    generator = torch.Generator().manual_seed(seed)
    boxes = random_boxes(n, generator, min_size=0.02, max_size=0.3)
    if levels is None:
        scores = torch.rand(n, generator=generator)
    else:  # tied scores
        scores = torch.randint(0, levels, (n,), generator=generator).float() / levels
    return boxes, scores


def nms_both(boxes, scores, threshold=0.5, max_output=None, idxs=None):
    if idxs is None:
        cpu = ops.nms(boxes, scores, threshold, max_output)
        gpu = ops.nms(boxes.cuda(), scores.cuda(), threshold, max_output)
    else:
        cpu = ops.batched_nms(boxes, scores, idxs, threshold, max_output)
        gpu = ops.batched_nms(boxes.cuda(), scores.cuda(), idxs.cuda(), threshold, max_output)
    return cpu, gpu.cpu()


@cuda_only
@pytest.mark.parametrize("n", [127, 128, 4096, 4097])
def test_nms_tied_scores_identical_on_cpu_and_cuda(n):
    boxes, scores = clustered(n, seed=n, levels=5)
    cpu, gpu = nms_both(boxes, scores)
    assert torch.equal(gpu, cpu)
    assert torch.equal(cpu, ref.nms(boxes, scores, 0.5))
    idxs = torch.randint(0, 7, (n,), generator=torch.Generator().manual_seed(1))
    cpu, gpu = nms_both(boxes, scores, idxs=idxs)
    assert torch.equal(gpu, cpu)


@cuda_only
def test_nms_over_65536_boxes():
    boxes, scores = clustered(70_000, seed=2)
    boxes = boxes * 0.2  # crowded: many suppressions across far words
    cpu, gpu = nms_both(boxes, scores, threshold=0.3)
    assert torch.equal(gpu, cpu)


@cuda_only
@pytest.mark.parametrize("n", [200, 4097])
def test_nms_nan_scores_past_the_first_word_and_in_the_last_partial_word(n):
    boxes, scores = clustered(n, seed=3)
    scores[[70, 130, n - 1, n - 2]] = float("nan")
    scores[5] = -0.0
    scores[6] = 0.0
    cpu, gpu = nms_both(boxes, scores)
    assert torch.equal(gpu, cpu)
    assert not set(gpu.tolist()) & {70, 130, n - 1, n - 2}


@cuda_only
@pytest.mark.parametrize("max_output", [1, 64, 65, 100, 300])
def test_nms_max_output_reached_in_a_later_word(max_output):
    boxes, scores = clustered(1000, seed=4)
    cpu, gpu = nms_both(boxes, scores, max_output=max_output)
    assert torch.equal(gpu, cpu) and len(gpu) == min(max_output, len(ops.nms(boxes, scores, 0.5)))


def iou_both(a, b):
    return ops.box_iou(a, b), ops.box_iou(a.cuda(), b.cuda()).cpu()


@cuda_only
@pytest.mark.parametrize("n", [1, 31, 32, 33, 63, 64, 65])
@pytest.mark.parametrize("m", [1, 31, 32, 33, 65])
def test_box_iou_tile_edges_identical(n, m):
    generator = torch.Generator().manual_seed(n * 100 + m)
    a, b = random_boxes(n, generator), random_boxes(m, generator)
    cpu, gpu = iou_both(a, b)
    assert torch.equal(gpu, cpu)


@cuda_only
@pytest.mark.parametrize("shape", [(8732, 50), (5000, 5000)])
def test_box_iou_large_identical(shape):
    generator = torch.Generator().manual_seed(shape[1])
    a, b = random_boxes(shape[0], generator), random_boxes(shape[1], generator)
    cpu, gpu = iou_both(a, b)
    assert torch.equal(gpu, cpu)


@cuda_only
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_box_iou_reduced_precision_identical(dtype):
    generator = torch.Generator().manual_seed(7)
    a, b = random_boxes(32, generator, dtype=dtype), random_boxes(33, generator, dtype=dtype)
    cpu, gpu = iou_both(a, b)
    assert torch.equal(gpu, cpu)
    torch.testing.assert_close(gpu, ref.box_iou(a, b))
