"""Dispatcher registration of every op, from one table: torch.library.opcheck (schema, fake
kernel, dispatcher round trips) on every device, and the public wrapper under
torch.compile(fullgraph=True) against eager. A new op adds a row to OPCHECK and to COMPILED;
test_every_registered_op_is_in_the_table fails until it does."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from helpers import (
    SMALL_PRIORS,
    assert_close_to_reference,
    head_outputs,
    mining_problem,
    seeded,
    unique_scores,
)
from ssd_reference.testing import random_boxes, random_priors

from ssd_ext import ops
from ssd_ext.cli import registered_ops

# ---------------------------------------------------------------------------------------
# opcheck: op name -> argument sets (args, kwargs) on a device.

def _box_iou_args(device):
    g = seeded(0)
    return [((random_boxes(7, g).to(device), random_boxes(5, g).to(device)), {})]


def _coding_args(device):
    g = seeded(6)
    boxes = random_boxes(2 * 9, g, min_size=0.01).reshape(2, 9, 4).to(device)
    priors = random_priors(9, g).to(device)
    return [((boxes, priors, [0.1, 0.2]), {}), ((boxes[0], priors, [0.5, 0.3]), {})]


def _prior_boxes_args(device):
    args = ([3, 3, 2, 2], [300.0, 300.0], [30.0, 60.0], [60.0, 0.0], [2.0, 2.0, 3.0], [1, 2], [], 0.5, True)
    return [(args, {"dtype": torch.float32, "device": torch.device(device)})]


def _prior_boxes_out_args(device):
    out = torch.empty(5, 4, device=device)
    return [((out, [1, 1, 2, 2], [300.0, 300.0, 150.0, 150.0], [0.1, 0.1, 0.2, 0.2], [1, 1],
              [300.0, 300.0], 0.5, True), {})]


def _match_args(device):
    boxes = random_boxes(5, seeded(0), min_size=0.05).to(device)
    labels = torch.tensor([1, 2, 3, 4, 5], device=device)
    offsets = torch.tensor([0, 2, 2, 5], device=device)
    return [((boxes, labels, offsets, SMALL_PRIORS.to(device), 0.5, 0.1, 0.2), {})]


def _mining_args(device):
    loss, labels = mining_problem(3, 40, seeded(3))
    return [((loss.to(device), labels.to(device), 3, 2), {})]


def _nms_inputs(device, count=40, seed=8):
    g = seeded(seed)
    boxes = random_boxes(count, g, max_size=0.4).to(device)
    scores = unique_scores(count, g).to(device)
    idxs = torch.randint(0, 3, (count,), generator=g).to(device)
    return boxes, scores, idxs


def _nms_args(device):
    boxes, scores, _ = _nms_inputs(device)
    return [((boxes, scores, 0.5, -1), {}), ((boxes, scores, 0.3, 5), {})]


def _batched_nms_args(device):
    boxes, scores, idxs = _nms_inputs(device)
    return [((boxes, scores, idxs, 0.5, -1), {})]


def _detect_args(device):
    loc, conf = head_outputs(2, 4, seed=6)
    return [((loc.to(device), conf.to(device), SMALL_PRIORS.to(device), 0.05, 0.45, 20, 10, 0.1, 0.2), {})]


OPCHECK: dict[str, Callable[[str], list[tuple[tuple, dict]]]] = {
    "box_iou": _box_iou_args,
    "encode": _coding_args,
    "decode": _coding_args,
    "prior_boxes": _prior_boxes_args,
    "_prior_boxes_out": _prior_boxes_out_args,
    "match": _match_args,
    "hard_negative_mining": _mining_args,
    "nms": _nms_args,
    "batched_nms": _batched_nms_args,
    "detect": _detect_args,
}


@pytest.mark.parametrize("name", sorted(OPCHECK))
def test_opcheck(name, device):
    op = getattr(torch.ops.ssd_ext, name).default
    for args, kwargs in OPCHECK[name](device):
        torch.library.opcheck(op, args, kwargs)


# ---------------------------------------------------------------------------------------
# torch.compile(fullgraph=True): a small program over the public wrapper, and its inputs.

@dataclass(frozen=True)
class Compiled:
    program: Callable
    inputs: Callable[[], tuple]
    exact: bool = False  # integer / index outputs: compare bit for bit


def _best_iou(boxes1, boxes2):
    return ops.box_iou(boxes1, boxes2).max(dim=1).values


def _round_trip(boxes, priors):
    return ops.decode(ops.encode(boxes, priors) * 0.5, priors, (0.1, 0.2))


def _round_trip_inputs():
    g = seeded(7)
    return random_boxes(3 * 11, g, min_size=0.01).reshape(3, 11, 4), random_priors(11, g)


def _scaled_priors(scale):
    return ops.prior_boxes([[3, 3], [2, 2]], 300, [30, 60], [60, 111], [[2], [2, 3]]) * scale


def _positives(box_a, box_b, labels_a, labels_b):
    _, labels = ops.match([box_a, box_b], [labels_a, labels_b], SMALL_PRIORS)
    return (labels > 0).sum(dim=1)


def _positives_inputs():
    g = seeded(1)
    boxes = [random_boxes(count, g, min_size=0.05, max_size=0.6) for count in (3, 4)]
    labels = [torch.randint(1, 21, (count,), generator=g) for count in (3, 4)]
    return (*boxes, *labels)


def _mined_loss(loss, labels):
    keep = ops.hard_negative_mining(loss, labels, 3, 1)
    return torch.where(keep, loss, torch.zeros_like(loss)).sum()


def _kept_boxes(boxes, scores, idxs):
    keep = ops.nms(boxes, scores, 0.5)
    keep_per_class = ops.batched_nms(boxes, scores, idxs, 0.5, 10)
    return boxes[keep], scores[keep_per_class]


def _top_scores(loc, conf, priors):
    _, scores, _, counts = ops.detect_padded(loc, conf, priors, max_detections=20)
    return scores.sum(dim=1), counts


COMPILED: dict[str, Compiled] = {
    "box_iou": Compiled(_best_iou, lambda: (random_boxes(9, seeded(2)), random_boxes(4, seeded(3)))),
    "box_coding": Compiled(_round_trip, _round_trip_inputs),
    "priors": Compiled(_scaled_priors, lambda: (torch.tensor(2.0),)),
    "matching": Compiled(_positives, _positives_inputs, exact=True),
    "mining": Compiled(_mined_loss, lambda: mining_problem(2, 100, seeded(4))),
    "nms": Compiled(_kept_boxes, lambda: _nms_inputs("cpu", count=60, seed=6), exact=True),
    "detect": Compiled(_top_scores, lambda: (*head_outputs(2, 4, seed=8), SMALL_PRIORS)),
}


@pytest.mark.parametrize("name", sorted(COMPILED))
def test_torch_compile_fullgraph(name):
    case = COMPILED[name]
    compiled = torch.compile(case.program, fullgraph=True, backend="aot_eager")
    inputs = case.inputs()
    actual, expected = compiled(*inputs), case.program(*inputs)
    if isinstance(expected, torch.Tensor):
        actual, expected = (actual,), (expected,)
    for got, want in zip(actual, expected, strict=True):
        if case.exact:
            assert torch.equal(got, want)
        else:
            assert_close_to_reference(got, want)


def test_every_registered_op_is_in_the_table():
    assert set(OPCHECK) == set(registered_ops())


def _meta(*shape, dtype=torch.float32):
    return torch.zeros(*shape, dtype=dtype, device="meta")


# A direct call on meta tensors runs the fake kernel: it states the wrapper's rules in the
# wrapper's words.
FAKE_ERRORS = [
    ("box_iou", (_meta(3, 5), _meta(2, 4)), ValueError, "boxes1 must have a last dimension of size 4"),
    ("encode", (_meta(2, 4), _meta(3, 4), [0.1, 0.2]), ValueError, "priors must have the shape of"),
    ("nms", (_meta(3, 4), _meta(2), 0.5, -1), ValueError, "scores must have shape"),
    ("batched_nms", (_meta(3, 4), _meta(3), _meta(3, dtype=torch.int32), 0.5, -1), TypeError,
     "idxs must be an int64 tensor"),
    ("hard_negative_mining", (_meta(2, 3), _meta(2, 4, dtype=torch.int64), 3, 0), ValueError,
     "labels must have the shape of conf_loss"),
    ("detect", (_meta(1, 5, 4), _meta(1, 5, 3), _meta(4, 4), 0.01, 0.45, 10, 10, 0.1, 0.2), ValueError,
     "priors must have P = 5"),
]


@pytest.mark.parametrize(("name", "args", "error", "match"), FAKE_ERRORS, ids=[row[0] for row in FAKE_ERRORS])
def test_fake_kernels_raise_the_wrappers_errors(name, args, error, match):
    with pytest.raises(error, match=match):
        getattr(torch.ops.ssd_ext, name).default(*args)
