"""Property-based fuzzing (hypothesis) of every op: the public wrappers and the raw
``torch.ops.ssd_ext.*`` entry points, on every device of ``helpers.DEVICES``.

Each example either returns what ``ssd_reference`` returns for the same input, or raises a
ValueError/TypeError: never another exception, a crash, a hang or uninitialised output (a
result is always compared with the reference, so garbage in it fails). Raw calls start from a
valid argument set and take one or two mutations (a dtype, a dimension, an empty or strided or
expanded view, a meta tensor among the others, a hostile scalar such as NaN, inf, -1 or 2**62,
malformed CSR offsets: unordered, negative, past the end, of the wrong dtype).

The number of examples per test is SSD_FUZZ_EXAMPLES (default 20, a few seconds in all); run
e.g. ``SSD_FUZZ_EXAMPLES=2000 python -m pytest tests/ops/test_fuzz.py`` to search harder, and
``bash scripts/sanitize.sh tests/ops/test_fuzz.py`` to run it under ASan + UBSan.
"""

from __future__ import annotations

import math
import os

import pytest
import ssd_reference as ref
import torch
from helpers import DEVICES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ssd_reference.testing import random_boxes, random_priors

from ssd_ext import ops

EXAMPLES = int(os.environ.get("SSD_FUZZ_EXAMPLES", "20"))
fuzz = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

NAMED_ERRORS = (ValueError, TypeError)
FLOAT_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
HOSTILE_FLOATS = [math.nan, math.inf, -math.inf, -1.0, -0.0, 0.0, 1.0, 1.5, 1e30, -1e30, 1e-30]
HOSTILE_INTS = [-(2**63), -(2**31), -2, -1, 0, 1, 2**31 - 1, 2**31, 2**40, 2**62, 2**63 - 1]

# Box coordinates: mostly ordinary, some hostile (NaN, inf, -0.0, huge, inverted boxes come out
# of the random order of the corners).
coordinate = st.one_of(
    st.floats(0.0, 1.0, width=32),
    st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 1e30, -1e30, 0.5]),
)


def _tolerance(dtype: torch.dtype) -> dict:
    if dtype in (torch.float16, torch.bfloat16):
        return {"rtol": 1e-2, "atol": 1e-2}
    return {"rtol": 1e-5, "atol": 1e-6}


@st.composite
def box_tensors(draw, rows: int | None = None, max_rows: int = 6, dtype=None):
    """A [rows, 4] tensor of any supported dtype and layout (contiguous, column-major,
    a strided slice, or an expanded row)."""
    n = draw(st.integers(0, max_rows)) if rows is None else rows
    dtype = dtype or draw(st.sampled_from(FLOAT_DTYPES))
    values = draw(st.lists(coordinate, min_size=4 * n, max_size=4 * n))
    tensor = torch.tensor(values, dtype=torch.float64).reshape(n, 4).to(dtype)
    layout = draw(st.sampled_from(["contiguous", "column-major", "slice", "expand"]))
    if layout == "column-major":
        tensor = tensor.t().contiguous().t()
    elif layout == "slice":
        tensor = torch.stack([tensor, torch.full_like(tensor, 7.0)], dim=1).reshape(2 * n, 4)[::2]
    elif layout == "expand" and n > 0:
        tensor = tensor[:1].expand(n, 4)
    return tensor


def _priors(n: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    return random_priors(n, torch.Generator().manual_seed(seed)).to(dtype) if n else torch.zeros(0, 4,
                                                                                                        dtype=dtype)


# ---------------------------------------------------------------------------------------
# Public wrappers against the reference.

@pytest.mark.parametrize("device", DEVICES)
@fuzz
@given(data=st.data())
def test_box_iou_matches_reference(device, data):
    boxes1, boxes2 = data.draw(box_tensors()), data.draw(box_tensors())
    dtype = torch.promote_types(boxes1.dtype, boxes2.dtype)
    expected = ref.box_iou(boxes1.to(dtype), boxes2.to(dtype))
    actual = ops.box_iou(boxes1.to(device), boxes2.to(device))
    torch.testing.assert_close(actual.cpu(), expected, equal_nan=True, **_tolerance(dtype))


@pytest.mark.parametrize("device", DEVICES)
@fuzz
@given(data=st.data(), direction=st.sampled_from(["encode", "decode"]))
def test_box_coding_matches_reference(device, data, direction):
    batch = data.draw(st.integers(0, 3))
    num_priors = data.draw(st.integers(0, 5))
    dtype = data.draw(st.sampled_from(FLOAT_DTYPES))
    boxes = data.draw(box_tensors(rows=batch * num_priors, dtype=dtype)).reshape(batch, num_priors, 4)
    priors = _priors(num_priors, dtype, data.draw(st.integers(0, 99)))
    variances = data.draw(st.sampled_from([(0.1, 0.2), (1.0, 1.0), (1e-3, 5.0)]))
    op, reference = (ops.encode, ref.encode) if direction == "encode" else (ops.decode, ref.decode)
    expected = reference(boxes, priors, variances)
    actual = op(boxes.to(device), priors.to(device), variances)
    torch.testing.assert_close(actual.cpu(), expected, equal_nan=True, **_tolerance(dtype))


@pytest.mark.parametrize("device", DEVICES)
@fuzz
@given(data=st.data())
def test_nms_matches_reference(device, data):
    boxes = data.draw(box_tensors(max_rows=10, dtype=torch.float32))
    n = boxes.shape[0]
    scores = torch.tensor(data.draw(st.lists(st.one_of(st.floats(0, 1, width=32), st.just(math.nan)),
                                             min_size=n, max_size=n)), dtype=torch.float32)
    idxs = torch.tensor(data.draw(st.lists(st.sampled_from([0, 1, -5, 2**62]), min_size=n, max_size=n)),
                        dtype=torch.int64)
    iou = data.draw(st.sampled_from([0.0, 0.3, 0.5, 1.0]))
    max_output = data.draw(st.sampled_from([None, 0, 1, 3, 2**62]))
    assert torch.equal(ops.nms(boxes.to(device), scores.to(device), iou, max_output).cpu(),
                       ref.nms(boxes, scores, iou, max_output))
    assert torch.equal(ops.batched_nms(boxes.to(device), scores.to(device), idxs.to(device), iou,
                                       max_output).cpu(),
                       ref.batched_nms(boxes, scores, idxs, iou, max_output))


@pytest.mark.parametrize("device", DEVICES)
@fuzz
@given(data=st.data())
def test_match_matches_reference_or_names_the_bad_row(device, data):
    images = data.draw(st.integers(0, 3))
    gt_boxes = [data.draw(box_tensors(max_rows=4, dtype=torch.float32)) for _ in range(images)]
    gt_labels = [torch.tensor(data.draw(st.lists(st.integers(-1, 4), min_size=len(b), max_size=len(b))),
                              dtype=torch.int64) for b in gt_boxes]
    priors = _priors(data.draw(st.integers(1, 12)), torch.float32, data.draw(st.integers(0, 99)))
    try:
        loc, labels = ops.match([b.to(device) for b in gt_boxes], [lab.to(device) for lab in gt_labels],
                                priors.to(device))
    except ValueError as error:
        assert "ground truth of image" in str(error)
        return
    expected_loc, expected_labels = ref.match(gt_boxes, gt_labels, priors)
    assert torch.equal(labels.cpu(), expected_labels)
    torch.testing.assert_close(loc.cpu(), expected_loc, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
@fuzz
@given(data=st.data())
def test_hard_negative_mining_matches_reference(device, data):
    batch, num_priors = data.draw(st.integers(0, 3)), data.draw(st.integers(0, 8))
    n = batch * num_priors
    value = st.one_of(st.floats(0, 10, width=32), st.sampled_from([math.nan, math.inf, -0.0]))
    loss = torch.tensor(data.draw(st.lists(value, min_size=n, max_size=n)), dtype=torch.float32)
    loss = loss.reshape(batch, num_priors)
    labels = torch.tensor(data.draw(st.lists(st.integers(-1, 3), min_size=n, max_size=n)),
                          dtype=torch.int64).reshape(batch, num_priors)
    ratio = data.draw(st.sampled_from([0, 1, 3, 2**62]))
    minimum = data.draw(st.sampled_from([0, 2, 2**62]))
    actual = ops.hard_negative_mining(loss.to(device), labels.to(device), ratio, minimum)
    assert torch.equal(actual.cpu(), ref.hard_negative_mining(loss, labels, ratio, minimum))


@pytest.mark.parametrize("device", DEVICES)
@fuzz
@given(data=st.data())
def test_detect_matches_reference(device, data):
    batch, num_priors, classes = data.draw(st.integers(0, 2)), data.draw(st.integers(0, 6)), data.draw(
        st.integers(2, 4))
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 999)))
    loc = torch.randn(batch, num_priors, 4, generator=g)
    conf = 3 * torch.randn(batch, num_priors, classes, generator=g)
    if data.draw(st.booleans()) and loc.numel():
        loc.view(-1)[0] = data.draw(st.sampled_from([math.nan, math.inf, 1e30]))
    priors = _priors(num_priors, torch.float32, data.draw(st.integers(0, 99)))
    kwargs = dict(score_threshold=data.draw(st.sampled_from([0.0, 0.01, 0.5, 1.0])),
                  iou_threshold=data.draw(st.sampled_from([0.0, 0.45, 1.0])),
                  candidates_per_class=data.draw(st.sampled_from([0, 1, 5, 2**62])),
                  max_detections=data.draw(st.sampled_from([0, 1, 3, 50])))
    actual = ops.detect(loc.to(device), conf.to(device), priors.to(device), **kwargs)
    expected = ref.detect(loc, conf, priors, **kwargs)
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected, strict=True):
        assert torch.equal(got["labels"].cpu(), want["labels"])
        torch.testing.assert_close(got["scores"].cpu(), want["scores"], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got["boxes"].cpu(), want["boxes"], rtol=1e-5, atol=1e-5, equal_nan=True)


@fuzz
@given(data=st.data())
def test_prior_boxes_matches_reference_or_names_the_argument(data):
    levels = data.draw(st.integers(1, 3))
    fmaps = [data.draw(st.sampled_from([1, 2, 3, (2, 3), 0, -1, 2.5, 2**62, True]))
             for _ in range(levels)]
    mins = [data.draw(st.sampled_from([30, 45.5, 0, -1, math.nan, math.inf])) for _ in range(levels)]
    maxes = data.draw(st.one_of(st.none(), st.lists(st.sampled_from([None, 60, 20, math.inf]),
                                                    min_size=levels, max_size=levels)))
    ratio = st.sampled_from([2, 3, 0.5, 0, math.nan])
    ratios = [data.draw(st.lists(ratio, max_size=2)) for _ in range(levels)]
    steps = data.draw(st.one_of(st.none(), st.lists(st.sampled_from([8, (8, 16), 0, -8]), min_size=levels,
                                                    max_size=levels)))
    kwargs = dict(offset=data.draw(st.sampled_from([0.5, 0.0, 1.0, 1.5, math.nan])),
                  clip=data.draw(st.sampled_from([True, False, 1])),
                  dtype=data.draw(st.sampled_from([None, torch.float64, torch.float16, torch.int32])))
    args = (fmaps, data.draw(st.sampled_from([300, (300, 200), 0, math.nan])), mins, maxes, ratios, steps)
    try:
        actual = ops.prior_boxes(*args, **kwargs)
    except NAMED_ERRORS:
        return
    torch.testing.assert_close(actual, ref.prior_boxes(*args, **kwargs))


# ---------------------------------------------------------------------------------------
# Raw entry points: valid arguments with one or two mutations.

def _valid_raw(op: str, seed: int) -> list:
    g = torch.Generator().manual_seed(seed)
    boxes = random_boxes(5, g, min_size=0.05)
    priors = random_priors(6, g)
    if op == "box_iou":
        return [boxes, random_boxes(3, g)]
    if op in ("encode", "decode"):
        return [torch.randn(2, 6, 4, generator=g) if op == "decode" else random_boxes(12, g, min_size=0.05)
                .reshape(2, 6, 4), priors, [0.1, 0.2]]
    if op == "nms":
        return [boxes, torch.rand(5, generator=g), 0.5, -1]
    if op == "batched_nms":
        return [boxes, torch.rand(5, generator=g), torch.randint(0, 3, (5,), generator=g), 0.5, -1]
    if op == "match":
        labels = torch.randint(1, 4, (5,), generator=g)
        return [boxes, labels, torch.tensor([0, 2, 2, 5]), priors, 0.5, 0.1, 0.2]
    if op == "hard_negative_mining":
        return [torch.rand(2, 6, generator=g), torch.randint(-1, 3, (2, 6), generator=g), 3, 1]
    if op == "detect":
        return [torch.randn(2, 6, 4, generator=g), torch.randn(2, 6, 3, generator=g), priors,
                0.01, 0.45, 4, 5, 0.1, 0.2]
    raise AssertionError(op)


def _reference(op: str, args: list):
    """The reference's answer to a raw call whose arguments the kernel accepted."""
    if op == "box_iou":
        return ref.box_iou(*args)
    if op in ("encode", "decode"):
        return getattr(ref, op)(args[0], args[1], args[2])
    if op == "nms":
        return ref.nms(args[0], args[1], args[2], None if args[3] == -1 else args[3])
    if op == "batched_nms":
        return ref.batched_nms(args[0], args[1], args[2], args[3], None if args[4] == -1 else args[4])
    if op == "match":
        bounds = args[2].tolist()
        boxes = [args[0][a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
        labels = [args[1][a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
        return ref.match(boxes, labels, args[3], args[4], (args[5], args[6]))
    if op == "hard_negative_mining":
        return ref.hard_negative_mining(*args)
    if op == "detect":
        loc, conf, priors, score, iou, candidates, max_det, vc, vs = args
        found = ref.detect(loc, conf, priors, score, iou, candidates, max_det, (vc, vs))
        return [d["labels"] for d in found]
    raise AssertionError(op)


def _mutate(data, args: list, device: str) -> list:
    slot = data.draw(st.integers(0, len(args) - 1), label="slot")
    value = args[slot]
    if isinstance(value, torch.Tensor):
        kind = data.draw(st.sampled_from(["dtype", "add-dim", "drop-dim", "resize", "empty", "meta",
                                          "strided", "expand", "values", "offsets"]), label="tensor mutation")
        if kind == "dtype":
            value = value.to(data.draw(st.sampled_from(
                [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int32, torch.int64,
                 torch.uint8, torch.bool, torch.complex64, torch.float8_e4m3fn])))
        elif kind == "add-dim":
            value = value.unsqueeze(data.draw(st.integers(0, value.dim())))
        elif kind == "drop-dim" and value.dim() > 0:
            if value.dim() == 1:
                value = value[: data.draw(st.integers(0, 3))]
            else:
                value = value.select(-1, 0) if value.shape[-1] > 0 else value.flatten()
        elif kind == "resize" and value.dim() > 0 and value.shape[0] > 0:
            dim = data.draw(st.integers(0, value.dim() - 1))
            if data.draw(st.booleans()) or value.shape[dim] == 0:
                value = value.narrow(dim, 0, data.draw(st.integers(0, value.shape[dim])))
            else:
                value = torch.cat([value, value.narrow(dim, 0, 1)], dim=dim)
        elif kind == "empty" and value.dim() > 0:
            value = value.narrow(0, 0, 0)
        elif kind == "meta":
            value = value.to("meta")
        elif kind == "strided" and value.dim() > 0:
            value = torch.stack([value, value], dim=-1).select(-1, 0)
        elif kind == "expand" and value.dim() > 0 and value.shape[0] > 0:
            value = value.narrow(0, 0, 1).expand_as(value)
        elif kind == "values" and value.numel() > 0:
            value = value.clone()
            flat = value.view(-1) if value.is_contiguous() else value
            hostile = HOSTILE_FLOATS if value.is_floating_point() else HOSTILE_INTS
            if value.dtype in (torch.bool, torch.uint8, torch.int32):
                hostile = [0, 1]
            flat.view(-1)[data.draw(st.integers(0, value.numel() - 1))] = data.draw(st.sampled_from(hostile))
        elif kind == "offsets" and value.dtype == torch.int64 and value.dim() == 1:
            # CSR offsets (or idxs / labels): unordered, negative, past the end, huge.
            value = torch.tensor(data.draw(st.lists(st.sampled_from([0, 1, 2, 3, 5, 6, -1, 2**62, -(2**63)]),
                                                    min_size=0, max_size=5)), dtype=torch.int64)
        args[slot] = value if value.device.type == "meta" else value.to(device)
    elif isinstance(value, bool):
        pass
    elif isinstance(value, float):
        args[slot] = data.draw(st.sampled_from(HOSTILE_FLOATS), label="float")
    elif isinstance(value, int):
        args[slot] = data.draw(st.sampled_from(HOSTILE_INTS), label="int")
    elif isinstance(value, list):
        values = st.sampled_from(HOSTILE_FLOATS + [0.1, 0.2])
        args[slot] = data.draw(st.lists(values, max_size=3), label="list")
    return args


RAW_OPS = ["box_iou", "encode", "decode", "nms", "batched_nms", "match", "hard_negative_mining", "detect"]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", RAW_OPS)
@fuzz
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_raw_op_returns_the_reference_or_a_named_error(op, device, data, seed):
    args = [a.to(device) if isinstance(a, torch.Tensor) else a for a in _valid_raw(op, seed)]
    for _ in range(data.draw(st.integers(1, 2), label="mutations")):
        args = _mutate(data, args, device)
    try:
        result = getattr(torch.ops.ssd_ext, op).default(*args)
    except NAMED_ERRORS:
        return
    outputs = result if isinstance(result, tuple) else (result,)
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    devices = {t.device.type for t in tensors} | {o.device.type for o in outputs}
    assert len(devices) == 1, f"mixed devices accepted: {devices}"
    if devices == {"meta"}:
        return
    cpu_args = [a.cpu() if isinstance(a, torch.Tensor) else a for a in args]
    expected = _reference(op, cpu_args)
    if op == "detect":
        boxes, scores, labels, counts = (o.cpu() for o in outputs)
        for image, want in enumerate(expected):
            count = int(counts[image])
            assert torch.equal(labels[image, :count], want)
            assert (labels[image, count:] == -1).all() and (scores[image, count:] == 0).all()
        return
    if not isinstance(expected, tuple):
        expected = (expected,)
    for got, want in zip(outputs, expected, strict=True):
        if got.dtype in (torch.int64, torch.bool):
            assert torch.equal(got.cpu(), want)
        else:
            torch.testing.assert_close(got.cpu(), want, equal_nan=True, **_tolerance(got.dtype))


@fuzz
@given(data=st.data())
def test_raw_prior_boxes_returns_the_reference_or_a_named_error(data):
    levels = data.draw(st.integers(0, 3))
    fmaps = data.draw(st.lists(st.sampled_from([1, 2, 3, 0, -1, 2**31, 2**62]), min_size=2 * levels,
                               max_size=2 * levels + data.draw(st.integers(0, 1))))
    mins = data.draw(st.lists(st.sampled_from([30.0, 0.0, -1.0, math.nan, math.inf]), min_size=levels,
                              max_size=levels))
    maxes = data.draw(st.one_of(st.just([]), st.lists(st.sampled_from([0.0, 60.0, 10.0, math.inf]),
                                                      min_size=levels, max_size=levels + 1)))
    counts = data.draw(st.lists(st.sampled_from([0, 1, 2, -1, 2**62, 2**63 - 1, -(2**63)]), min_size=levels,
                                max_size=levels))
    ratios = data.draw(st.lists(st.sampled_from([2.0, 3.0, 0.0, math.nan]), max_size=4))
    steps = data.draw(st.one_of(st.just([]), st.lists(st.sampled_from([8.0, 0.0, -8.0, math.inf]),
                                                      min_size=2 * levels, max_size=2 * levels)))
    image = data.draw(st.lists(st.sampled_from([300.0, 0.0, math.nan]), min_size=1, max_size=3))
    offset = data.draw(st.sampled_from([0.5, 0.0, 1.0, -0.1, math.nan]))
    try:
        actual = torch.ops.ssd_ext.prior_boxes.default(fmaps, image, mins, maxes, ratios, counts, steps,
                                                       offset, True)
    except NAMED_ERRORS:
        return
    nested_ratios, start = [], 0
    for count in counts:
        nested_ratios.append(ratios[start:start + count])
        start += count
    expected = ref.prior_boxes(
        [(fmaps[2 * k], fmaps[2 * k + 1]) for k in range(levels)], (image[0], image[1]), mins,
        [m or None for m in maxes] if maxes else None, nested_ratios,
        [(steps[2 * k], steps[2 * k + 1]) for k in range(levels)] if steps else None, offset, True)
    torch.testing.assert_close(actual, expected)
