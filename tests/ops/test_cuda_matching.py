"""match and hard_negative_mining: the edges of the CUDA kernels (ground truth past a block,
unordered CSR offsets, ties across chunk edges), CPU vs CUDA bit for bit.

Cases that can run on the CPU (the raw op with bad offsets, more ground truths than priors)
run there too; the CUDA comparisons are marked `cuda` and skip with the reason without a GPU.
"""

from __future__ import annotations

import pytest
import ssd_reference as ref
import torch
from helpers import cuda_only, random_boxes, random_ground_truth, seeded, ssd_priors

from ssd_ext import ops


def crowd(counts, seed, min_size=0.01, max_size=0.6):
    return random_ground_truth(counts, seeded(seed), min_size=min_size, max_size=max_size, num_classes=81)


def match_on(device, boxes, labels, priors, **kwargs):
    loc, lab = ops.match([b.to(device) for b in boxes], [x.to(device) for x in labels],
                         priors.to(device), **kwargs)
    return loc.cpu(), lab.cpu()


def assert_equal_across_devices(boxes, labels, priors, **kwargs):
    """Labels AND loc targets identical on CPU and CUDA (docs/ARCHITECTURE.md, Determinism)."""
    cpu = match_on("cpu", boxes, labels, priors, **kwargs)
    gpu = match_on("cuda", boxes, labels, priors, **kwargs)
    assert torch.equal(gpu[1], cpu[1])
    assert torch.equal(gpu[0], cpu[0])


def raw_match(boxes, labels, offsets, priors):
    return torch.ops.ssd_ext.match(boxes, labels, offsets, priors, 0.5, 0.1, 0.2)


def test_raw_match_rejects_unordered_offsets_on_cpu():
    boxes = random_boxes(6, torch.Generator().manual_seed(0), min_size=0.1)
    labels = torch.ones(6, dtype=torch.int64)
    priors = ref.xyxy_to_cxcywh(random_boxes(40, torch.Generator().manual_seed(1), min_size=0.1))
    for offsets in ([0, 5, 3, 6], [0, 2, 9, 6], [-1, 2, 4, 6]):
        with pytest.raises(ValueError):
            raw_match(boxes, labels, torch.tensor(offsets), priors)


@pytest.mark.parametrize("counts", [[40, 0], [40, 17, 0, 5]])
def test_more_ground_truths_than_priors_every_prior_forced(device, counts):
    boxes, labels = crowd(counts, seed=7, min_size=0.2, max_size=0.9)
    priors = ref.xyxy_to_cxcywh(random_boxes(4, torch.Generator().manual_seed(3), min_size=0.3))
    loc, lab = match_on(device, boxes, labels, priors)
    ref_loc, ref_lab = ref.match(boxes, labels, priors)
    assert torch.equal(lab, ref_lab)
    torch.testing.assert_close(loc, ref_loc, rtol=1e-5, atol=1e-6)
    assert (lab[0] > 0).all()  # 40 large ground truths on 4 large priors: every prior forced


@pytest.mark.parametrize("offsets", [[0, 5, 3, 6], [0, 2, 9, 6], [-1, 2, 4, 6], [3, 1, 6, 6]],
                         ids=["decreasing", "past-end", "negative", "start-after-end"])
@cuda_only
def test_raw_match_with_bad_offsets_is_the_ordered_offsets_on_cuda(offsets):
    boxes = random_boxes(6, torch.Generator().manual_seed(0), min_size=0.1)
    labels = torch.arange(1, 7)
    priors = ref.xyxy_to_cxcywh(random_boxes(300, torch.Generator().manual_seed(1), min_size=0.1))
    raw = torch.tensor(offsets)
    got = raw_match(boxes.cuda(), labels.cuda(), raw.cuda(), priors.cuda())
    torch.cuda.synchronize()
    # The kernel's ordering (docs/ARCHITECTURE.md, Validation): a clamped running maximum.
    # Rows outside [ordered[0], ordered[-1]) belong to no image, so the CPU (which wants
    # offsets from 0 to G) gets that slice.
    ordered = raw.clamp(min=0).cummax(0).values.clamp(max=6)
    first, last = int(ordered[0]), int(ordered[-1])
    want = raw_match(boxes[first:last], labels[first:last], ordered - first, priors)
    assert torch.equal(got[1].cpu(), want[1]) and torch.equal(got[0].cpu(), want[0])
    # The context is still usable: a clean call right after gives the CPU's answer.
    clean = raw_match(boxes.cuda(), labels.cuda(), torch.tensor([0, 3, 6]).cuda(), priors.cuda())
    assert torch.equal(clean[1].cpu(), raw_match(boxes, labels, torch.tensor([0, 3, 6]), priors)[1])



@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", ["gt_over_1024", "batch_48_ssd300", "crowd_ssd512"])
@cuda_only
def test_match_identical_on_cpu_and_cuda(case, dtype):
    if case == "gt_over_1024":
        boxes, labels = crowd([1100, 3], seed=11, min_size=0.005, max_size=0.2)
        priors = ssd_priors("ssd300")
    elif case == "batch_48_ssd300":
        boxes, labels = crowd([(i * 7) % 20 for i in range(48)], seed=12)
        priors = ssd_priors("ssd300")
    else:
        boxes, labels = crowd([300, 2], seed=13, min_size=0.01, max_size=0.1)
        priors = ssd_priors("ssd512")
    boxes = [b.to(dtype) for b in boxes]
    assert_equal_across_devices(boxes, labels, priors.to(dtype))



def mining_inputs(batch, num_priors, seed, dtype=torch.float32, levels=None):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(-1, 3, (batch, num_priors), generator=generator)
    labels[labels > 0] = torch.randint(1, 21, (int((labels > 0).sum()),), generator=generator)
    if levels is None:
        loss = torch.rand(batch, num_priors, generator=generator, dtype=torch.float64)
    else:  # few distinct values: long runs of ties across chunk edges
        loss = torch.randint(0, levels, (batch, num_priors), generator=generator).double()
    return loss.to(dtype), labels


@pytest.mark.parametrize("num_priors", [256, 257, 512])
def test_mining_quota_cut_inside_ties_across_chunk_edge(device, num_priors):
    loss, labels = mining_inputs(4, num_priors, seed=num_priors, levels=2)
    got = ops.hard_negative_mining(loss.to(device), labels.to(device), neg_pos_ratio=3)
    want = ref.hard_negative_mining(loss, labels, neg_pos_ratio=3)
    assert torch.equal(got.cpu(), want)


def test_mining_nan_inf_and_signed_zero_across_chunks(device):
    loss, labels = mining_inputs(3, 700, seed=5)
    specials = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0, 0.0])
    loss.view(-1)[::37] = specials.repeat(loss.numel() // 37 // 5 + 1)[: loss.view(-1)[::37].numel()]
    got = ops.hard_negative_mining(loss.to(device), labels.to(device), neg_pos_ratio=3)
    assert torch.equal(got.cpu(), ref.hard_negative_mining(loss, labels, neg_pos_ratio=3))


@cuda_only
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_mining_256_images_of_8732_identical_on_cpu_and_cuda(dtype):
    levels = 50 if dtype == torch.float64 else None  # fp64: ties
    loss, labels = mining_inputs(256, 8732, seed=9, dtype=dtype, levels=levels)
    cpu = ops.hard_negative_mining(loss, labels, neg_pos_ratio=3, min_negatives=5)
    gpu = ops.hard_negative_mining(loss.cuda(), labels.cuda(), neg_pos_ratio=3, min_negatives=5)
    assert torch.equal(gpu.cpu(), cpu)



def test_size_targets_are_the_double_log_rounded_once(device):
    """loc[..., 2:] = float(log(double(w / pw)) / double(v1)) exactly (box_math's portable_log):
    the property that makes match's targets identical on every device."""
    generator = torch.Generator().manual_seed(21)
    boxes = [random_boxes(1, generator, min_size=0.05, max_size=0.9) for _ in range(64)]
    labels = [torch.ones(1, dtype=torch.int64) for _ in boxes]
    priors = ref.xyxy_to_cxcywh(random_boxes(500, generator, min_size=0.05, max_size=0.9))
    loc, lab = match_on(device, boxes, labels, priors, iou_threshold=0.3)
    gt = torch.cat(boxes)  # one ground truth per image: every positive prior took it
    v1 = torch.tensor(0.2).item()  # the kernel divides by v1 in the math type, float32 here
    for b in range(len(boxes)):
        positive = lab[b] > 0
        w = gt[b, 2] - gt[b, 0]
        h = gt[b, 3] - gt[b, 1]
        want_w = ((w / priors[positive, 2]).double().log() / v1).float()
        want_h = ((h / priors[positive, 3]).double().log() / v1).float()
        assert torch.equal(loc[b, positive, 2], want_w)
        assert torch.equal(loc[b, positive, 3], want_h)
