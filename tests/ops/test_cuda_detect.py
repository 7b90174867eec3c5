"""detect: the candidate cut and the GPU-only edges of issue 13 (radix selection per class).

The candidate cut inside a tie and max_detections above the candidates run on every device in
helpers.DEVICES; the SSD-size sweeps compare CUDA with the reference and are marked `cuda`.
"""

from __future__ import annotations

import pytest
import ssd_reference as ref
import torch
from helpers import CUDA_AVAILABLE, DEVICES
from test_detect import PRIORS, assert_same_detections, head_outputs
from test_matching import ssd_priors

from ssd_ext import ops


def cuda_only(test):
    """Marked `cuda`; skipped with the reason when no GPU (or no CUDA kernels) is present."""
    skip = pytest.mark.skipif(not CUDA_AVAILABLE, reason="needs a CUDA device and the CUDA kernels")
    return pytest.mark.cuda(skip(test))


def tied_head(batch: int, num_classes: int, seed: int, tie_levels: int = 3):
    """Logits with only a few distinct values per class: long runs of equal scores."""
    generator = torch.Generator().manual_seed(seed)
    loc = 0.5 * torch.randn(batch, PRIORS.shape[0], 4, generator=generator)
    conf = torch.randint(0, tie_levels, (batch, PRIORS.shape[0], num_classes), generator=generator)
    return loc, conf.float()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("candidates", [1, 7, 64, 200])
def test_candidate_cut_inside_a_tie_keeps_the_lower_priors(device, candidates):
    loc, conf = tied_head(2, 5, seed=candidates)
    kwargs = dict(candidates_per_class=candidates, max_detections=50, iou_threshold=0.6)
    expected = ref.detect(loc, conf, PRIORS, **kwargs)
    actual = ops.detect(loc.to(device), conf.to(device), PRIORS.to(device), **kwargs)
    assert_same_detections(actual, expected)


@pytest.mark.parametrize("device", DEVICES)
def test_all_scores_equal_takes_the_first_priors(device):
    loc = torch.zeros(1, PRIORS.shape[0], 4)
    conf = torch.zeros(1, PRIORS.shape[0], 3)  # every score 1/3
    boxes, scores, labels, counts = ops.detect_padded(
        loc.to(device), conf.to(device), PRIORS.to(device), candidates_per_class=5,
        max_detections=100, iou_threshold=1.0)
    assert counts.tolist() == [10]
    assert labels[0, :10].tolist() == [1] * 5 + [2] * 5
    expected_boxes = ref.cxcywh_to_xyxy(PRIORS[:5]).clamp(0, 1).repeat(2, 1)
    torch.testing.assert_close(boxes[0, :10].cpu(), expected_boxes, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_max_detections_above_the_candidates(device):
    loc, conf = head_outputs(2, 4, seed=3)
    kwargs = dict(candidates_per_class=3, max_detections=500)
    expected = ref.detect(loc, conf, PRIORS, **kwargs)
    actual = ops.detect(loc.to(device), conf.to(device), PRIORS.to(device), **kwargs)
    assert_same_detections(actual, expected)
    assert all(len(d["labels"]) <= 3 * 3 for d in actual)


@pytest.mark.parametrize("device", DEVICES)
def test_fewer_passing_than_candidates_and_none_passing(device):
    loc, conf = head_outputs(3, 6, seed=4, sharp=6.0)
    for threshold in (0.9, 1.0):
        kwargs = dict(score_threshold=threshold, candidates_per_class=200)
        expected = ref.detect(loc, conf, PRIORS, **kwargs)
        actual = ops.detect(loc.to(device), conf.to(device), PRIORS.to(device), **kwargs)
        assert_same_detections(actual, expected)


# SSD300/SSD512 sizes, C = 2/21/81, B = 1/8/32; not the full product: the reference's
# per-(image, class) loop on the host is what takes the time, not the kernel.
SSD_SIZES = [("ssd300", 2, 32), ("ssd300", 21, 1), ("ssd300", 21, 32), ("ssd300", 81, 8),
             ("ssd512", 2, 8), ("ssd512", 21, 8), ("ssd512", 81, 1), ("ssd512", 81, 4)]


@cuda_only
@pytest.mark.parametrize(("priors_name", "num_classes", "batch"), SSD_SIZES)
def test_detect_ssd_sizes_on_cuda_match_the_reference(priors_name, num_classes, batch):
    priors = ssd_priors(priors_name)
    generator = torch.Generator().manual_seed(batch * num_classes)
    loc = torch.randn(batch, priors.shape[0], 4, generator=generator)
    conf = 3 * torch.randn(batch, priors.shape[0], num_classes, generator=generator)
    expected = ref.detect(loc, conf, priors)
    actual = ops.detect(loc.cuda(), conf.cuda(), priors.cuda())
    assert_same_detections(actual, expected, rtol=1e-4, atol=1e-5)


@cuda_only
def test_detect_bf16_and_permuted_head_layout_on_cuda():
    priors = ssd_priors("ssd300")
    generator = torch.Generator().manual_seed(5)
    # The head's (B, A*K, H, W) -> (B, H, W, A*K) permute leaves non-contiguous views.
    raw_loc = torch.randn(4, 4, priors.shape[0], generator=generator)
    raw_conf = 3 * torch.randn(4, 21, priors.shape[0], generator=generator)
    loc, conf = raw_loc.permute(0, 2, 1), raw_conf.permute(0, 2, 1)
    assert not loc.is_contiguous()
    expected = ref.detect(loc, conf, priors)
    actual = ops.detect(loc.cuda(), conf.cuda(), priors.cuda())
    assert_same_detections(actual, expected, rtol=1e-4, atol=1e-5)
    half = [x.to(torch.bfloat16) for x in (loc, conf, priors)]
    expected = ref.detect(*half)
    actual = ops.detect(*[x.cuda() for x in half])
    assert_same_detections(actual, expected, rtol=1e-2, atol=1e-2)
