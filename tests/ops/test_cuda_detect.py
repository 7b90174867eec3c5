"""detect: the candidate cut inside ties, and the CUDA kernel's edges (radix selection per
class, the transpose's tiles of 32 priors x 32 classes) against the reference.

The candidate cut inside a tie and max_detections above the candidates run on every device in
helpers.DEVICES; the CUDA-only cases compare CUDA with the reference and are marked `cuda`.
"""

from __future__ import annotations

import pytest
import ssd_reference as ref
import torch
from helpers import DEVICES, SMALL_PRIORS, assert_same_detections, cuda_only, head_outputs, seeded, ssd_priors
from ssd_reference.testing import random_priors

from ssd_ext import ops


def tied_head(batch: int, num_classes: int, seed: int, distinct_rows: int = 3):
    """Head outputs for SMALL_PRIORS whose logit rows are `distinct_rows` random rows, each prior
    taking one of them: long runs of tied scores. Ties come from whole rows being equal, so
    they are ties on every device (the same softmax of the same numbers gives the same bits)
    and not an accident of one device's summation order, as equal logits in permuted rows
    would be."""
    generator = seeded(seed)
    loc = 0.5 * torch.randn(batch, SMALL_PRIORS.shape[0], 4, generator=generator)
    rows = 2.0 * torch.randn(distinct_rows, num_classes, generator=generator)
    which = torch.randint(0, distinct_rows, (batch, SMALL_PRIORS.shape[0]), generator=generator)
    return loc, rows[which]


DETECT_DEFAULTS = dict(score_threshold=0.01, iou_threshold=0.45, candidates_per_class=400, max_detections=200)


def _relative_gaps(values: torch.Tensor) -> torch.Tensor:
    distinct = torch.unique(values)
    return (distinct[1:] - distinct[:-1]) / distinct[1:].abs()


def assert_decisions_well_apart(loc, conf, priors, gap: float = 1e-5, **kwargs) -> None:
    """Every decision detect makes on these inputs is at least `gap` (relative) away from
    flipping: the score threshold, the order of the distinct scores within a class (the
    candidate cut, the NMS order), the suppression tests against the IoU threshold, and the
    order of an image's kept detections. CUDA's softmax and decode use an exp that may differ
    from the CPU's in the last ulp (docs/ARCHITECTURE.md, detect), so a comparison of CUDA with
    the reference is exact on labels only for inputs like these; equal scores are allowed when
    they come from equal logit rows (equal on every device). (The kept detections of the
    reference come sorted by decreasing score.) Fails on the test's data, not on
    the kernel: pick other data when it does."""
    options = {**DETECT_DEFAULTS, **{k: v for k, v in kwargs.items() if k in DETECT_DEFAULTS}}
    threshold = options["score_threshold"]
    scores = torch.softmax(conf.double(), dim=-1)[..., 1:]
    boxes = ref.decode(loc, priors).clamp(0.0, 1.0)
    assert ((scores - threshold).abs() > gap * max(threshold, 1e-30)).all(), "a score at the threshold"
    for image in range(loc.shape[0]):
        for label in range(1, conf.shape[-1]):
            class_scores = scores[image, :, label - 1]
            passing = torch.nonzero(class_scores > threshold).flatten()
            order = torch.sort(class_scores[passing], descending=True, stable=True).indices
            # The candidates and the first score left out: their order and the cut.
            ranked = passing[order[:options["candidates_per_class"] + 1]]
            assert (_relative_gaps(class_scores[ranked]) > gap).all(), f"near-tied scores, class {label}"
            candidates = ranked[:options["candidates_per_class"]]
            iou = ref.box_iou(boxes[image, candidates], boxes[image, candidates]).double()
            off_diagonal = ~torch.eye(len(candidates), dtype=torch.bool)
            margin = (iou - options["iou_threshold"]).abs()[off_diagonal]
            assert (margin > gap).all(), f"an IoU at the threshold, class {label}"
    for found in ref.detect(loc, conf, priors, **{**options, "max_detections": 10**9}):
        # The kept detections of an image that make its first max_detections, and the cut.
        kept = found["scores"].double()[:options["max_detections"] + 1]
        assert (_relative_gaps(kept) > gap).all(), "near-tied kept scores"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("candidates", [1, 7, 64, 200])
def test_candidate_cut_inside_a_tie_keeps_the_lower_priors(device, candidates):
    loc, conf = tied_head(2, 5, seed=candidates)
    kwargs = dict(candidates_per_class=candidates, max_detections=50, iou_threshold=0.6)
    assert_decisions_well_apart(loc, conf, SMALL_PRIORS, **kwargs)
    expected = ref.detect(loc, conf, SMALL_PRIORS, **kwargs)
    actual = ops.detect(loc.to(device), conf.to(device), SMALL_PRIORS.to(device), **kwargs)
    assert_same_detections(actual, expected)


@pytest.mark.parametrize("device", DEVICES)
def test_all_scores_equal_takes_the_first_priors(device):
    loc = torch.zeros(1, SMALL_PRIORS.shape[0], 4)
    conf = torch.zeros(1, SMALL_PRIORS.shape[0], 3)  # every score 1/3
    boxes, scores, labels, counts = ops.detect_padded(
        loc.to(device), conf.to(device), SMALL_PRIORS.to(device), candidates_per_class=5,
        max_detections=100, iou_threshold=1.0)
    assert counts.tolist() == [10]
    assert labels[0, :10].tolist() == [1] * 5 + [2] * 5
    expected_boxes = ref.cxcywh_to_xyxy(SMALL_PRIORS[:5]).clamp(0, 1).repeat(2, 1)
    torch.testing.assert_close(boxes[0, :10].cpu(), expected_boxes, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_max_detections_above_the_candidates(device):
    loc, conf = head_outputs(2, 4, seed=3)
    kwargs = dict(candidates_per_class=3, max_detections=500)
    expected = ref.detect(loc, conf, SMALL_PRIORS, **kwargs)
    actual = ops.detect(loc.to(device), conf.to(device), SMALL_PRIORS.to(device), **kwargs)
    assert_same_detections(actual, expected)
    assert all(len(d["labels"]) <= 3 * 3 for d in actual)


@pytest.mark.parametrize("device", DEVICES)
def test_fewer_passing_than_candidates_and_none_passing(device):
    loc, conf = head_outputs(3, 6, seed=4, sharp=6.0)
    for threshold in (0.9, 1.0):
        kwargs = dict(score_threshold=threshold, candidates_per_class=200)
        expected = ref.detect(loc, conf, SMALL_PRIORS, **kwargs)
        actual = ops.detect(loc.to(device), conf.to(device), SMALL_PRIORS.to(device), **kwargs)
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


def _detect_on_cuda_matches_reference(loc, conf, priors, **kwargs) -> list[dict]:
    assert_decisions_well_apart(loc, conf, priors, **kwargs)
    expected = ref.detect(loc, conf, priors, **kwargs)
    actual = ops.detect(loc.cuda(), conf.cuda(), priors.cuda(), **kwargs)
    assert_same_detections(actual, expected, rtol=1e-4, atol=1e-5)
    return actual


@cuda_only
@pytest.mark.parametrize("num_priors", [1, 2, 7, 31, 32, 33])
@pytest.mark.parametrize("candidates", [1, 3, 400])
def test_detect_fewer_priors_than_a_tile_on_cuda(num_priors, candidates):
    """P below (or at) the transpose kernel's 32-prior tile and the select kernel's block:
    partly filled tiles, candidates above P (all taken) and below it (a radix select)."""
    loc, conf = head_outputs(2, 6, seed=num_priors, num_priors=num_priors)
    priors = random_priors(num_priors, seeded(num_priors))
    _detect_on_cuda_matches_reference(loc, conf, priors, candidates_per_class=candidates,
                                      score_threshold=0.05)


@cuda_only
@pytest.mark.parametrize("num_classes", [2, 21, 81])
def test_detect_a_single_box_on_cuda(num_classes):
    """One image, one prior: one candidate per class, nothing to suppress."""
    loc, conf = head_outputs(1, num_classes, seed=num_classes, num_priors=1)
    priors = random_priors(1, seeded(0))
    actual = _detect_on_cuda_matches_reference(loc, conf, priors, score_threshold=0.0)
    assert len(actual[0]["labels"]) == num_classes - 1  # every class keeps its only box


@cuda_only
@pytest.mark.parametrize("num_classes", [33, 34, 65, 81])
@pytest.mark.parametrize("num_priors", [5, 40, 100])
def test_detect_more_than_32_object_classes_on_cuda(num_classes, num_priors):
    """C - 1 = 32 object classes fill one class tile of the transpose kernel exactly; 33, 64 and
    COCO's 80 take a second (and third) tile, partly filled; 40 and 100 priors more than one
    prior tile."""
    loc, conf = head_outputs(2, num_classes, seed=num_classes * 1000 + num_priors + 2, num_priors=num_priors)
    priors = SMALL_PRIORS[:num_priors]
    actual = _detect_on_cuda_matches_reference(loc, conf, priors, candidates_per_class=10, max_detections=100)
    last_tile_start = 32 * ((num_classes - 2) // 32)  # object class index of the last tile's first class
    assert any(int(label) - 1 >= last_tile_start for image in actual for label in image["labels"]), \
        "no detection in the last class tile: the case tests nothing"
