"""detect (fused SSD post-processing) against the reference, hand-worked cases and bad input."""

from __future__ import annotations

import pytest
import ssd_reference as ref
import torch
from helpers import DEVICES, SMALL_PRIORS, assert_close_to_reference, assert_same_detections, head_outputs
from ssd_reference.box_coding import cxcywh_to_xyxy

from ssd_ext import ops


@pytest.mark.parametrize("num_classes", [21, 81])
@pytest.mark.parametrize("batch", [1, 4])
def test_matches_reference(device, num_classes, batch):
    loc, conf = head_outputs(batch, num_classes, seed=num_classes + batch)
    expected = ref.detect(loc, conf, SMALL_PRIORS)
    actual = ops.detect(loc.to(device), conf.to(device), SMALL_PRIORS.to(device))
    assert_same_detections(actual, expected)
    assert any(len(d["scores"]) > 0 for d in expected)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(score_threshold=0.2, iou_threshold=0.5, candidates_per_class=30, max_detections=25),
        dict(score_threshold=0.0, iou_threshold=1.0, candidates_per_class=1000, max_detections=1000),
        dict(score_threshold=0.0, iou_threshold=0.0, candidates_per_class=5, max_detections=3),
        dict(score_threshold=0.9, variances=(0.2, 0.1)),
        dict(candidates_per_class=0),
        dict(max_detections=0),
        dict(score_threshold=1.0),
    ],
)
def test_parameters_match_reference(device, kwargs):
    loc, conf = head_outputs(2, 6, seed=7)
    expected = ref.detect(loc, conf, SMALL_PRIORS, **kwargs)
    actual = ops.detect(loc.to(device), conf.to(device), SMALL_PRIORS.to(device), **kwargs)
    assert_same_detections(actual, expected)


def test_ties_lower_class_then_lower_prior(device):
    # Every class has the same logit at every prior: all scores tie. Disjoint priors, no
    # regression: NMS drops nothing, so the order is by class, then by prior.
    centres = torch.tensor([0.1, 0.3, 0.5, 0.7])
    priors = torch.stack([centres, centres, torch.full((4,), 0.1), torch.full((4,), 0.1)], dim=1)
    loc = torch.zeros(1, 4, 4)
    conf = torch.zeros(1, 4, 3)
    result = ops.detect(loc.to(device), conf.to(device), priors.to(device), max_detections=6)[0]
    assert result["labels"].tolist() == [1, 1, 1, 1, 2, 2]
    expected_boxes = ref.detect(loc, conf, priors, max_detections=6)[0]["boxes"]
    assert_close_to_reference(result["boxes"], expected_boxes)
    assert_close_to_reference(result["boxes"][:4], cxcywh_to_xyxy(priors))


def test_hand_worked(device):
    # Two priors that overlap heavily, one far away; class 1 fires on the first two, class 2 on
    # the third. NMS keeps only the best of the overlapping pair.
    priors = torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.31, 0.3, 0.2, 0.2], [0.8, 0.8, 0.1, 0.1]])
    loc = torch.zeros(1, 3, 4)
    conf = torch.tensor([[[0.0, 5.0, 0.0], [0.0, 4.0, 0.0], [0.0, 0.0, 6.0]]])
    result = ops.detect(loc.to(device), conf.to(device), priors.to(device), score_threshold=0.5)[0]
    assert result["labels"].tolist() == [2, 1]
    assert_close_to_reference(result["boxes"], torch.tensor([[0.75, 0.75, 0.85, 0.85], [0.2, 0.2, 0.4, 0.4]]))
    scores = torch.softmax(conf[0], dim=-1)
    assert_close_to_reference(result["scores"], torch.stack([scores[2, 2], scores[0, 1]]))


def test_boxes_are_clipped(device):
    priors = torch.tensor([[0.05, 0.95, 0.3, 0.3]])
    loc = torch.tensor([[[0.0, 0.0, 2.0, 2.0]]])
    conf = torch.tensor([[[0.0, 3.0]]])
    box = ops.detect(loc.to(device), conf.to(device), priors.to(device))[0]["boxes"]
    assert box.min() >= 0 and box.max() <= 1
    assert_close_to_reference(box, ref.detect(loc, conf, priors)[0]["boxes"])


def test_nan_rules(device):
    loc, conf = head_outputs(2, 4, seed=3)
    conf[0, :50] = float("nan")   # these priors score NaN in every class: never detected
    loc[1, :50, 0] = float("nan")  # NaN boxes: detected by score, overlap nothing
    expected = ref.detect(loc, conf, SMALL_PRIORS)
    actual = ops.detect(loc.to(device), conf.to(device), SMALL_PRIORS.to(device))
    assert_same_detections(actual, expected)
    assert not torch.isnan(actual[0]["scores"]).any()
    assert torch.isnan(actual[1]["boxes"]).any()


@pytest.mark.parametrize("dtype", [torch.float16, torch.float64])
def test_other_dtypes(device, dtype):
    loc, conf = head_outputs(2, 5, seed=4, dtype=dtype)
    expected = ref.detect(loc, conf, SMALL_PRIORS.to(dtype))
    actual = ops.detect(loc.to(device), conf.to(device), SMALL_PRIORS.to(device, dtype))
    assert actual[0]["boxes"].dtype == dtype and actual[0]["scores"].dtype == dtype
    tolerance = 1e-5 if dtype == torch.float64 else 1e-3
    assert_same_detections(actual, expected, rtol=tolerance, atol=tolerance)


def test_padded_output(device):
    loc, conf = head_outputs(3, 4, seed=5)
    boxes, scores, labels, counts = ops.detect_padded(loc.to(device), conf.to(device),
                                                      SMALL_PRIORS.to(device), max_detections=50)
    assert boxes.shape == (3, 50, 4) and scores.shape == (3, 50) and labels.shape == (3, 50)
    assert counts.dtype == torch.int64 and counts.shape == (3,)
    for image, count in enumerate(counts.tolist()):
        assert (labels[image, count:] == -1).all() and (scores[image, count:] == 0).all()
        assert (labels[image, :count] >= 1).all()


def test_empty_inputs(device):
    empty = ops.detect(torch.zeros(0, 5, 4, device=device), torch.zeros(0, 5, 3, device=device),
                       SMALL_PRIORS[:5].to(device))
    assert empty == []
    no_priors = ops.detect(torch.zeros(2, 0, 4, device=device), torch.zeros(2, 0, 3, device=device),
                           torch.zeros(0, 4, device=device))
    assert [len(d["scores"]) for d in no_priors] == [0, 0]
    assert no_priors[0]["boxes"].shape == (0, 4)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(loc=torch.zeros(1, 5, 3)), ValueError, "loc must have a last dimension of size 4"),
        (dict(conf_logits=torch.zeros(1, 4, 3)), ValueError, r"conf_logits must have shape \[B, P, C\]"),
        (dict(conf_logits=torch.zeros(1, 5, 1)), ValueError, "at least 2 classes"),
        (dict(priors=torch.zeros(4, 4)), ValueError, "priors must have P = 5"),
        (dict(priors=torch.zeros(5, 4, device="meta")), ValueError, "same device"),
        (dict(conf_logits=torch.zeros(1, 5, 3, dtype=torch.bool)), TypeError, "conf_logits must be a real"),
        (dict(score_threshold=-0.1), ValueError, r"score_threshold must be in \[0, 1\]"),
        (dict(iou_threshold=1.1), ValueError, r"iou_threshold must be in \[0, 1\]"),
        (dict(candidates_per_class=-1), ValueError, "candidates_per_class must be >= 0"),
        (dict(max_detections=2.5), TypeError, "max_detections"),
        (dict(variances=(0.1, 0.0)), ValueError, "variances"),
    ],
)
def test_bad_input(kwargs, error, match):
    args = dict(loc=torch.zeros(1, 5, 4), conf_logits=torch.zeros(1, 5, 3), priors=torch.zeros(5, 4))
    args.update(kwargs)
    with pytest.raises(error, match=match):
        ops.detect(**args)


def test_kernel_checks_reach_python_as_value_errors():
    with pytest.raises(ValueError, match="priors must have P = 5"):
        torch.ops.ssd_ext.detect(torch.zeros(1, 5, 4), torch.zeros(1, 5, 3), torch.zeros(4, 4),
                                 0.01, 0.45, 400, 200, 0.1, 0.2)
    with pytest.raises(TypeError, match="same dtype"):
        torch.ops.ssd_ext.detect(torch.zeros(1, 5, 4), torch.zeros(1, 5, 3, dtype=torch.float64),
                                 torch.zeros(5, 4), 0.01, 0.45, 400, 200, 0.1, 0.2)


def test_cpu_and_cuda_agree():
    # Identical decisions on every device present (CPU only: trivially the CPU result).
    loc, conf = head_outputs(2, 21, seed=10)
    results = [ops.detect(loc.to(d), conf.to(d), SMALL_PRIORS.to(d)) for d in DEVICES]
    for other in results[1:]:
        assert_same_detections(other, [{k: v.cpu() for k, v in d.items()} for d in results[0]])
