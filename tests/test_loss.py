"""MultiBoxLoss: value and gradients against the reference loss, empty batches, autocast,
bad input."""

from __future__ import annotations

import pytest
import ssd_reference as ref
import torch
from helpers import random_boxes

from ssd_ext.engine import MultiBoxLoss

NUM_CLASSES = 6


def small_priors() -> torch.Tensor:
    return ref.prior_boxes([6, 3, 1], 96, [16, 40, 70], [40, 70, 96], [[2], [2, 3], [2]])


def random_targets(counts, generator):
    return [{"boxes": random_boxes(g, generator, min_size=0.05, max_size=0.6),
             "labels": torch.randint(1, NUM_CLASSES, (g,), generator=generator)} for g in counts]


def reference_and_ours(loc, conf, targets, priors, device, **kwargs):
    ref_loc = loc.detach().clone().requires_grad_(True)
    ref_conf = conf.detach().clone().requires_grad_(True)
    ref_loc_loss, ref_conf_loss = ref.multibox_loss(
        ref_loc, ref_conf, [t["boxes"] for t in targets], [t["labels"] for t in targets], priors, **kwargs)
    (ref_loc_loss + ref_conf_loss).backward()

    module = MultiBoxLoss(priors, NUM_CLASSES, **kwargs).to(device)
    our_loc = loc.detach().to(device).requires_grad_(True)
    our_conf = conf.detach().to(device).requires_grad_(True)
    device_targets = [{key: value.to(device) for key, value in t.items()} for t in targets]
    out = module(our_loc, our_conf, device_targets)
    out["loss"].backward()
    return out, (ref_loc_loss, ref_conf_loss, ref_loc.grad, ref_conf.grad), (our_loc.grad, our_conf.grad)


@pytest.mark.parametrize("counts, kwargs", [
    ([2, 0, 5], {}),
    ([1, 3], {"neg_pos_ratio": 1, "min_negatives": 4, "iou_threshold": 0.4}),
    ([0, 0], {"min_negatives": 5}),
])
def test_value_and_gradients_match_reference(device, counts, kwargs):
    generator = torch.Generator().manual_seed(sum(counts) + len(kwargs))
    priors = small_priors()
    batch, num_priors = len(counts), priors.shape[0]
    loc = torch.randn(batch, num_priors, 4, generator=generator)
    conf = torch.randn(batch, num_priors, NUM_CLASSES, generator=generator)
    targets = random_targets(counts, generator)
    out, expected, (loc_grad, conf_grad) = reference_and_ours(loc, conf, targets, priors, device, **kwargs)
    ref_loc_loss, ref_conf_loss, ref_loc_grad, ref_conf_grad = expected
    torch.testing.assert_close(out["loc_loss"].cpu(), ref_loc_loss.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["conf_loss"].cpu(), ref_conf_loss.detach(), rtol=1e-5, atol=1e-6)
    ref_total = (ref_loc_loss + ref_conf_loss).detach()
    torch.testing.assert_close(out["loss"].cpu(), ref_total, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loc_grad.cpu(), ref_loc_grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(conf_grad.cpu(), ref_conf_grad, rtol=1e-5, atol=1e-7)
    _, labels = ref.match([t["boxes"] for t in targets], [t["labels"] for t in targets], priors,
                          kwargs.get("iou_threshold", 0.5))
    assert int(out["num_positives"]) == int((labels > 0).sum())


def test_batch_without_objects_is_finite(device):
    priors = small_priors()
    module = MultiBoxLoss(priors, NUM_CLASSES).to(device)
    loc = torch.randn(2, priors.shape[0], 4, device=device, requires_grad=True)
    conf = torch.randn(2, priors.shape[0], NUM_CLASSES, device=device, requires_grad=True)
    empty = {"boxes": torch.zeros(0, 4, device=device),
             "labels": torch.zeros(0, dtype=torch.int64, device=device)}
    out = module(loc, conf, [empty, empty])
    assert out["loss"].item() == 0.0 and int(out["num_positives"]) == 0
    out["loss"].backward()
    assert torch.isfinite(loc.grad).all() and torch.isfinite(conf.grad).all()
    # with min_negatives the empty images still teach the background class
    module = MultiBoxLoss(priors, NUM_CLASSES, min_negatives=3).to(device)
    out = module(loc, conf, [empty, empty])
    assert torch.isfinite(out["loss"]) and out["conf_loss"].item() > 0


def test_hand_worked_single_prior():
    # One prior, one object exactly on it: loc target 0, so loc_loss = smooth_l1(loc, 0).
    priors = torch.tensor([[0.5, 0.5, 0.4, 0.4]])
    module = MultiBoxLoss(priors, num_classes=3)
    loc = torch.tensor([[[0.5, -2.0, 0.0, 0.0]]])
    conf = torch.tensor([[[0.0, 0.0, 0.0]]])
    target = {"boxes": torch.tensor([[0.3, 0.3, 0.7, 0.7]]), "labels": torch.tensor([2])}
    out = module(loc, conf, [target])
    torch.testing.assert_close(out["loc_loss"], torch.tensor(0.5 * 0.25 + 1.5))
    torch.testing.assert_close(out["conf_loss"], torch.log(torch.tensor(3.0)))


def test_autocast_inputs_are_upcast(device):
    generator = torch.Generator().manual_seed(9)
    priors = small_priors()
    loc = torch.randn(2, priors.shape[0], 4, generator=generator)
    conf = torch.randn(2, priors.shape[0], NUM_CLASSES, generator=generator)
    targets = random_targets([3, 1], generator)
    module = MultiBoxLoss(priors, NUM_CLASSES).to(device)
    device_targets = [{key: value.to(device) for key, value in t.items()} for t in targets]
    dtype = torch.bfloat16
    with torch.autocast(device_type=device, dtype=dtype):
        out = module(loc.to(device, dtype), conf.to(device, dtype), device_targets)
    assert out["loss"].dtype == torch.float32
    ref_loc_loss, ref_conf_loss = ref.multibox_loss(
        loc.to(dtype), conf.to(dtype), [t["boxes"] for t in targets], [t["labels"] for t in targets], priors)
    torch.testing.assert_close(out["loss"].cpu(), ref_loc_loss + ref_conf_loss, rtol=1e-5, atol=1e-5)


def test_invalid_ground_truth_raises_instead_of_nan():
    priors = small_priors()
    module = MultiBoxLoss(priors, NUM_CLASSES)
    loc = torch.zeros(1, priors.shape[0], 4)
    conf = torch.zeros(1, priors.shape[0], NUM_CLASSES)
    degenerate = {"boxes": torch.tensor([[0.2, 0.2, 0.2, 0.6]]), "labels": torch.tensor([1])}
    with pytest.raises(ValueError, match="image 0"):
        module(loc, conf, [degenerate])
    wrong_class = {"boxes": torch.tensor([[0.2, 0.2, 0.4, 0.6]]), "labels": torch.tensor([NUM_CLASSES])}
    with pytest.raises(ValueError, match="num_classes"):
        module(loc, conf, [wrong_class])


@pytest.mark.parametrize("loc_shape, conf_shape, n_targets, match", [
    ((1, 5, 4), (1, None, NUM_CLASSES), 1, "loc must have shape"),
    ((1, None, 4), (1, None, 3), 1, "conf_logits must have shape"),
    ((1, None, 4), (1, None, NUM_CLASSES), 2, "same batch size"),
])
def test_bad_shapes(loc_shape, conf_shape, n_targets, match):
    priors = small_priors()
    num_priors = priors.shape[0]
    module = MultiBoxLoss(priors, NUM_CLASSES)
    loc = torch.zeros(*[num_priors if s is None else s for s in loc_shape])
    conf = torch.zeros(*[num_priors if s is None else s for s in conf_shape])
    target = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    with pytest.raises(ValueError, match=match):
        module(loc, conf, [target] * n_targets)


def test_priors_are_a_buffer():
    module = MultiBoxLoss(small_priors(), NUM_CLASSES)
    assert "priors" in dict(module.named_buffers())
    with pytest.raises(ValueError, match="num_classes"):
        MultiBoxLoss(small_priors(), 1)



def test_float64_ground_truth_keeps_the_loss_in_the_prediction_dtype():
    priors = small_priors()
    loss = MultiBoxLoss(priors, num_classes=3)
    loc = torch.zeros(1, priors.shape[0], 4)
    conf = torch.zeros(1, priors.shape[0], 3)
    targets = [{"boxes": torch.tensor([[0.1, 0.1, 0.6, 0.6]], dtype=torch.float64),
                "labels": torch.tensor([1])}]
    assert loss(loc, conf, targets)["loss"].dtype == torch.float32


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"neg_pos_ratio": 2.5}, TypeError, "neg_pos_ratio must be an int"),
        ({"min_negatives": -1}, ValueError, "min_negatives must be >= 0"),
        ({"variances": (0.1,)}, ValueError, "variances must have two values"),
        ({"iou_threshold": 1.5}, ValueError, r"iou_threshold must be in \[0, 1\]"),
    ],
)
def test_constructor_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        MultiBoxLoss(small_priors(), num_classes=3, **kwargs)
