"""Property-based fuzzing (hypothesis) of every op: the public wrappers and the raw
``torch.ops.ssd_ext.*`` entry points, on every device of ``helpers.DEVICES``.

Each example is first classified by the test itself, from the documented contract (the op
docstrings of ``ssd_ext.ops`` and ``ssd_reference``, and for raw calls the argument rules of
docs/ARCHITECTURE.md and csrc/ops/<stem>_checks.h): valid input must return what
``ssd_reference`` returns for it (so garbage or uninitialised output fails), and invalid input
must raise a ValueError/TypeError whose message names one of the invalid arguments; never another
exception, a crash or a hang. Raw calls start from a valid argument set and take one or two
mutations (a dtype, a dimension, an empty or strided or expanded view, a meta tensor among the
others, a hostile scalar such as NaN, inf, -1, 2**62 or 2**64, malformed CSR offsets: unordered,
negative, past the end, of the wrong dtype). Python ints past int64 never reach a raw op: torch's
schema refuses them with a RuntimeError naming the argument, which the raw tests assert.

The number of examples per test is SSD_FUZZ_EXAMPLES (default 20, a few seconds in all); run
e.g. ``SSD_FUZZ_EXAMPLES=2000 python -m pytest tests/ops/test_fuzz.py`` to search harder, and
``bash scripts/sanitize.sh tests/ops/test_fuzz.py`` to run it under ASan + UBSan.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Collection

import pytest
import ssd_reference as ref
import torch
from helpers import DEVICES
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from ssd_reference.testing import random_boxes, random_priors

from ssd_ext import ops

EXAMPLES = int(os.environ.get("SSD_FUZZ_EXAMPLES", "20"))
fuzz = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])

NAMED_ERRORS = (ValueError, TypeError)
FLOAT_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
HOSTILE_FLOATS = [math.nan, math.inf, -math.inf, -1.0, -0.0, 0.0, 1.0, 1.5, 1e30, -1e30, 1e-30]
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
HOSTILE_INTS = [-(2**64) - 1, -(2**63), -(2**31), -2, -1, 0, 1, 2**31 - 1, 2**31, 2**40, 2**62, 2**63 - 1,
                2**64]
# What an int64 tensor can hold (writing 2**64 into one fails in torch before any op runs).
INT64_HOSTILE_INTS = [v for v in HOSTILE_INTS if INT64_MIN <= v <= INT64_MAX]
SUPPORTED_FLOATS = {torch.float16, torch.bfloat16, torch.float32, torch.float64}
MAX_PRIORS = 2**40  # the ops' cap on the number of priors

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


def assert_named_error(call: Callable[[], object], names: Collection[str],
                       error: type | tuple[type, ...] = NAMED_ERRORS) -> None:
    """``call()`` raises `error`, and its message names one of `names` (the invalid arguments)."""
    event(f"invalid: {' | '.join(sorted(names))}")
    with pytest.raises(error) as caught:
        call()
    message = str(caught.value)
    assert any(name in message for name in names), f"{caught.value!r} names none of {sorted(names)}"


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_positive_finite(value: object) -> bool:
    if not _is_real(value):
        return False
    try:
        return value > 0 and math.isfinite(value)
    except OverflowError:  # an int past float range
        return False


def _is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


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

    def call():
        return ops.match([b.to(device) for b in gt_boxes], [lab.to(device) for lab in gt_labels],
                         priors.to(device))

    bad_row = _first_invalid_ground_truth(gt_boxes, gt_labels)
    if bad_row is not None:
        image, row = bad_row
        with pytest.raises(ValueError, match=rf"ground truth of image {image}, row {row}: "):
            call()
        return
    loc, labels = call()
    expected_loc, expected_labels = ref.match(gt_boxes, gt_labels, priors)
    assert torch.equal(labels.cpu(), expected_labels)
    torch.testing.assert_close(loc.cpu(), expected_loc, rtol=1e-4, atol=1e-5)


def _first_invalid_ground_truth(gt_boxes: list[torch.Tensor], gt_labels: list[torch.Tensor]):
    """(image, row) of the first ground truth ``ops.match`` documents as unusable: a non-finite
    coordinate, zero or negative width or height, or a label below 1; None when all are valid."""
    for image, (boxes, labels) in enumerate(zip(gt_boxes, gt_labels, strict=True)):
        usable = (torch.isfinite(boxes).all(dim=1) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
                  & (labels >= 1))
        bad = torch.nonzero(~usable).flatten()
        if bad.numel():
            return image, int(bad[0])
    return None


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
    args, kwargs = _prior_boxes_arguments(data)
    invalid = _invalid_prior_arguments(*args, **kwargs)
    if invalid:
        assert_named_error(lambda: ops.prior_boxes(*args, **kwargs), invalid)
        return
    event("valid")
    torch.testing.assert_close(ops.prior_boxes(*args, **kwargs), ref.prior_boxes(*args, **kwargs))


def _prior_boxes_arguments(data) -> tuple[tuple, dict]:
    """Arguments of ``ops.prior_boxes`` drawn valid, then up to two of them made hostile (a
    per-level argument at one level): invalid types and values, sides past int64 or the prior
    cap, numbers past float range."""
    levels = data.draw(st.integers(1, 3), label="levels")
    broken = data.draw(st.sets(st.sampled_from(["feature_map_sizes", "image_size", "min_sizes", "max_sizes",
                                                "aspect_ratios", "steps", "offset", "clip", "dtype"]),
                               max_size=2), label="broken")

    def per_level(name, valid, hostile):
        values = [data.draw(st.sampled_from(valid)) for _ in range(levels)]
        if name in broken:
            values[data.draw(st.integers(0, levels - 1))] = data.draw(st.sampled_from(hostile))
        return values

    def one(name, valid, hostile):
        return data.draw(st.sampled_from(hostile if name in broken else valid), label=name)

    fmaps = per_level("feature_map_sizes", [1, 2, 3, (2, 3)],
                      [0, -1, 2.5, 2**62, 2**64, -(2**64) - 1, True, (1, 2**64)])
    mins = per_level("min_sizes", [30, 45.5], [0, -1, math.nan, math.inf, 10**400])
    maxes = None
    if "max_sizes" in broken or data.draw(st.booleans()):
        maxes = per_level("max_sizes", [None, 60], [20, math.inf, -(2**64) - 1])
    ratios = [data.draw(st.lists(st.sampled_from([2, 3, 0.5]), max_size=2)) for _ in range(levels)]
    if "aspect_ratios" in broken:
        ratios[data.draw(st.integers(0, levels - 1))].append(data.draw(st.sampled_from([0, math.nan, -2])))
    steps = None
    if "steps" in broken or data.draw(st.booleans()):
        steps = per_level("steps", [8, (8, 16)], [0, -8, (8, math.inf)])
    kwargs = dict(offset=one("offset", [0.5, 0.0, 1.0], [1.5, -0.1, math.nan, 2**64]),
                  clip=one("clip", [True, False], [1, None]),
                  dtype=one("dtype", [None, torch.float64, torch.float16], [torch.int32, torch.bool]))
    image = one("image_size", [300, (300, 200)], [0, math.nan, 10**400, (300, -1)])
    return (fmaps, image, mins, maxes, ratios, steps), kwargs


def _pair(value: object) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _invalid_prior_arguments(fmaps, image, mins, maxes, ratios, steps, offset, clip, dtype) -> set[str]:
    """The arguments of ``ops.prior_boxes`` that break its documented contract: positive int
    feature maps (an int or an (h, w) pair) giving at most 2**40 priors, positive finite sizes,
    ratios and steps, a max size not below its level's min size, an offset in [0, 1], a bool
    clip and a floating dtype."""
    invalid = set()
    sides = [_pair(fmap) for fmap in fmaps]
    if not all(_is_positive_int(side) for pair in sides for side in pair):
        invalid.add("feature_map_sizes")
    if not all(_is_positive_finite(side) for side in _pair(image)):
        invalid.add("image_size")
    if not all(_is_positive_finite(size) for size in mins):
        invalid.add("min_sizes")
    for level, max_size in enumerate(maxes or []):
        below_min = _is_positive_finite(mins[level]) and _is_real(max_size) and max_size < mins[level]
        if max_size is not None and (not _is_positive_finite(max_size) or below_min):
            invalid.add("max_sizes")
    if not all(_is_positive_finite(r) for level_ratios in ratios for r in level_ratios):
        invalid.add("aspect_ratios")
    if steps is not None and not all(_is_positive_finite(v) for step in steps for v in _pair(step)):
        invalid.add("steps")
    if not (_is_real(offset) and 0 <= offset <= 1):
        invalid.add("offset")
    if not isinstance(clip, bool):
        invalid.add("clip")
    if dtype is not None and dtype not in SUPPORTED_FLOATS:
        invalid.add("dtype")
    if "feature_map_sizes" not in invalid:
        per_cell = [1 + (maxes is not None and maxes[k] is not None) + 2 * len(ratios[k])
                    for k in range(len(fmaps))]
        if sum(h * w * n for (h, w), n in zip(sides, per_cell, strict=True)) > MAX_PRIORS:
            invalid.add("feature_map_sizes")
    return invalid


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


def _ordered_offsets(offsets: torch.Tensor, total: int) -> torch.Tensor:
    """The CUDA match kernel's reading of CSR offsets (docs/RELIABILITY.md): a running maximum of
    the offsets clamped into [0, N], so that bad offsets never index out of the ground truth.
    Valid offsets read as themselves."""
    return offsets.clamp(min=0).cummax(0).values.clamp(max=total)


def _reference(op: str, args: list):
    """The reference's answer to a valid raw call (CPU arguments)."""
    if op == "box_iou":
        return ref.box_iou(*args)
    if op in ("encode", "decode"):
        return getattr(ref, op)(args[0], args[1], args[2])
    if op == "nms":
        return ref.nms(args[0], args[1], args[2], None if args[3] == -1 else args[3])
    if op == "batched_nms":
        return ref.batched_nms(args[0], args[1], args[2], args[3], None if args[4] == -1 else args[4])
    if op == "match":
        bounds = _ordered_offsets(args[2], args[0].shape[0]).tolist()
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


# ---------------------------------------------------------------------------------------
# The argument rules of the raw ops (csrc/ops/<stem>_checks.h, docs/ARCHITECTURE.md), written
# out here to classify each fuzzed call: each function returns the names of the arguments that
# break a rule, as the error messages spell them.

def _check_box(invalid: set, tensor: torch.Tensor, name: str, ndim: int | None = None) -> None:
    """[..., 4] (exactly `ndim` dimensions when given) of a supported floating dtype."""
    dims_ok = tensor.dim() >= 1 if ndim is None else tensor.dim() == ndim
    if not (dims_ok and tensor.shape[-1] == 4 and tensor.dtype in SUPPORTED_FLOATS):
        invalid.add(name)


def _check_same(invalid: set, attribute: str, first: tuple[str, torch.Tensor], *others) -> None:
    for name, tensor in others:
        if getattr(tensor, attribute) != getattr(first[1], attribute):
            invalid.update({first[0], name})


def _check_length(invalid: set, tensor: torch.Tensor, name: str, length: int, dtype=None) -> None:
    if tensor.dim() != 1 or tensor.shape[0] != length or (dtype is not None and tensor.dtype != dtype):
        invalid.add(name)


def _in_unit_interval(value: float, open_at_zero: bool = False) -> bool:
    return (value > 0 if open_at_zero else value >= 0) and value <= 1  # NaN fails both


def _variances_ok(*values: float) -> bool:
    return len(values) == 2 and all(v > 0 and math.isfinite(v) for v in values)


def _invalid_box_iou(args: list) -> set[str]:
    boxes1, boxes2 = args
    invalid: set[str] = set()
    _check_box(invalid, boxes1, "boxes1", 2)
    _check_box(invalid, boxes2, "boxes2", 2)
    _check_same(invalid, "device", ("boxes1", boxes1), ("boxes2", boxes2))
    _check_same(invalid, "dtype", ("boxes1", boxes1), ("boxes2", boxes2))
    return invalid


def _invalid_coding(args: list, first_name: str) -> set[str]:
    first, priors, variances = args
    invalid: set[str] = set()
    _check_box(invalid, first, first_name)
    _check_box(invalid, priors, "priors")
    _check_same(invalid, "device", (first_name, first), ("priors", priors))
    _check_same(invalid, "dtype", (first_name, first), ("priors", priors))
    trailing = tuple(first.shape[first.dim() - priors.dim():]) if priors.dim() <= first.dim() else None
    if trailing != tuple(priors.shape):
        invalid.add("priors")
    if not _variances_ok(*variances):
        invalid.add("variances")
    return invalid


def _invalid_nms(args: list, batched: bool) -> set[str]:
    boxes, scores = args[0], args[1]
    iou, max_output = args[-2], args[-1]
    invalid: set[str] = set()
    _check_box(invalid, boxes, "boxes", 2)
    count = boxes.shape[0] if boxes.dim() >= 1 else -1
    if scores.dtype not in SUPPORTED_FLOATS:
        invalid.add("scores")
    _check_length(invalid, scores, "scores", count)
    tensors = [("boxes", boxes), ("scores", scores)]
    if batched:
        _check_length(invalid, args[2], "idxs", count, dtype=torch.int64)
        tensors.append(("idxs", args[2]))
    _check_same(invalid, "device", *tensors)
    if not _in_unit_interval(iou):
        invalid.add("iou_threshold")
    if max_output < -1:
        invalid.add("max_output")
    if all(t.device.type == "meta" for _, t in tensors):
        invalid.add("meta")  # the kept count depends on values that meta tensors do not hold
    return invalid


def _invalid_match(args: list) -> set[str]:
    gt_boxes, gt_labels, gt_offsets, priors, iou, variance_center, variance_size = args
    invalid: set[str] = set()
    _check_box(invalid, gt_boxes, "gt_boxes", 2)
    _check_box(invalid, priors, "priors", 2)
    _check_same(invalid, "dtype", ("gt_boxes", gt_boxes), ("priors", priors))
    count = gt_boxes.shape[0] if gt_boxes.dim() >= 1 else -1
    _check_length(invalid, gt_labels, "gt_labels", count, dtype=torch.int64)
    if gt_offsets.dtype != torch.int64 or gt_offsets.dim() != 1 or gt_offsets.shape[0] < 1:
        invalid.add("gt_offsets")
    _check_same(invalid, "device", ("priors", priors), ("gt_boxes", gt_boxes), ("gt_labels", gt_labels),
                ("gt_offsets", gt_offsets))
    if not _in_unit_interval(iou, open_at_zero=True):
        invalid.add("iou_threshold")
    if not _variances_ok(variance_center, variance_size):
        invalid.add("variances")
    # Offsets values: read by the CPU kernel only (CUDA orders them on the device, meta has none).
    if "gt_offsets" not in invalid and gt_offsets.device.type == "cpu":
        offsets = gt_offsets.tolist()
        ordered = offsets[0] == 0 and all(a <= b for a, b in zip(offsets, offsets[1:], strict=False))
        if not (ordered and offsets[-1] == count):
            invalid.add("gt_offsets")
    return invalid


def _invalid_mining(args: list) -> set[str]:
    conf_loss, labels, neg_pos_ratio, min_negatives = args
    invalid: set[str] = set()
    if conf_loss.dtype not in SUPPORTED_FLOATS or conf_loss.dim() != 2:
        invalid.add("conf_loss")
    if labels.dtype != torch.int64 or labels.shape != conf_loss.shape:
        invalid.add("labels")
    _check_same(invalid, "device", ("conf_loss", conf_loss), ("labels", labels))
    if neg_pos_ratio < 0:
        invalid.add("neg_pos_ratio")
    if min_negatives < 0:
        invalid.add("min_negatives")
    return invalid


def _invalid_detect(args: list) -> set[str]:
    loc, conf, priors, score, iou, candidates, max_detections, variance_center, variance_size = args
    invalid: set[str] = set()
    _check_box(invalid, loc, "loc", 3)
    if conf.dtype not in SUPPORTED_FLOATS or conf.dim() != 3 or conf.shape[:2] != loc.shape[:2]:
        invalid.add("conf_logits")
    elif conf.shape[2] < 2:
        invalid.add("conf_logits")
    _check_box(invalid, priors, "priors", 2)
    if loc.dim() < 2 or priors.dim() < 1 or priors.shape[0] != loc.shape[1]:
        invalid.add("priors")
    _check_same(invalid, "device", ("loc", loc), ("conf_logits", conf), ("priors", priors))
    _check_same(invalid, "dtype", ("loc", loc), ("conf_logits", conf), ("priors", priors))
    if not _in_unit_interval(score):
        invalid.add("score_threshold")
    if not _in_unit_interval(iou):
        invalid.add("iou_threshold")
    if candidates < 0:
        invalid.add("candidates_per_class")
    if max_detections < 0:
        invalid.add("max_detections")
    if not _variances_ok(variance_center, variance_size):
        invalid.add("variances")
    return invalid


RAW_RULES = {
    "box_iou": _invalid_box_iou,
    "encode": lambda args: _invalid_coding(args, "boxes"),
    "decode": lambda args: _invalid_coding(args, "loc"),
    "nms": lambda args: _invalid_nms(args, batched=False),
    "batched_nms": lambda args: _invalid_nms(args, batched=True),
    "match": _invalid_match,
    "hard_negative_mining": _invalid_mining,
    "detect": _invalid_detect,
}


def _memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _expected_outcome(op: str, args: list) -> tuple[set[str], type | tuple[type, ...]]:
    """(names, error) for a raw call: the invalid arguments and the error they must raise, or
    (empty set, None) for valid input. Examples whose valid output would be too large to build
    in a test (more than 1 GiB) are discarded with `assume`."""
    schema = getattr(torch.ops.ssd_ext, op).default._schema
    past_int64 = {argument.name for argument, value in zip(schema.arguments, args, strict=False)
                  if isinstance(value, int) and not isinstance(value, bool)
                  and not INT64_MIN <= value <= INT64_MAX}
    if past_int64:  # torch's schema refuses them before the op runs
        return {f"argument '{name}'" for name in past_int64}, RuntimeError
    invalid = RAW_RULES[op](args)
    if op != "detect":
        return invalid, NAMED_ERRORS
    # detect states the size of its padded outputs before allocating them: a byte count past
    # int64 on every device, and on the CPU more than the machine's memory.
    loc, device = args[0], args[0].device
    needed = loc.shape[0] * args[6] * 4 * loc.dtype.itemsize if loc.dim() >= 1 and args[6] >= 0 else 0
    if needed > INT64_MAX or (device.type == "cpu" and needed > _memory_bytes(device)):
        invalid.add("max_detections")
    if invalid or device.type == "meta":
        return invalid, NAMED_ERRORS
    if needed > _memory_bytes(device):  # on CUDA: torch's allocator refuses it
        return {"out of memory"}, torch.OutOfMemoryError
    assume(needed <= 2**30)
    return invalid, NAMED_ERRORS


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
            hostile = HOSTILE_FLOATS if value.is_floating_point() else INT64_HOSTILE_INTS
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
@pytest.mark.filterwarnings("ignore:Casting complex values to real")  # a complex dtype mutation, cast again
@fuzz
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_raw_op_returns_the_reference_or_names_the_invalid_argument(op, device, data, seed):
    args = [a.to(device) if isinstance(a, torch.Tensor) else a for a in _valid_raw(op, seed)]
    for _ in range(data.draw(st.integers(1, 2), label="mutations")):
        args = _mutate(data, args, device)
    raw_op = getattr(torch.ops.ssd_ext, op).default
    invalid, error = _expected_outcome(op, args)
    if invalid:
        assert_named_error(lambda: raw_op(*args), invalid, error)
        return
    event("valid")
    result = raw_op(*args)
    outputs = result if isinstance(result, tuple) else (result,)
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    devices = {t.device.type for t in tensors} | {o.device.type for o in outputs}
    assert len(devices) == 1, f"mixed devices accepted: {devices}"
    if devices == {"meta"}:
        return
    _assert_raw_result(op, [a.cpu() if isinstance(a, torch.Tensor) else a for a in args], outputs)


def _assert_raw_result(op: str, cpu_args: list, outputs: tuple) -> None:
    expected = _reference(op, cpu_args)
    if op == "detect":
        boxes, scores, labels, counts = (o.cpu() for o in outputs)
        assert counts.shape == (len(expected),)
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
def test_raw_prior_boxes_returns_the_reference_or_names_the_invalid_argument(data):
    args = _raw_prior_boxes_arguments(data)
    invalid, error = _expected_prior_boxes_outcome(*args)

    def call():
        return torch.ops.ssd_ext.prior_boxes.default(*args, True)

    if invalid:
        assert_named_error(call, invalid, error)
        return
    event("valid")
    fmaps, image, mins, maxes, ratios, counts, steps, offset = args
    nested_ratios, start = [], 0
    for count in counts:
        nested_ratios.append(ratios[start:start + count])
        start += count
    levels = len(mins)
    expected = ref.prior_boxes(
        [(fmaps[2 * k], fmaps[2 * k + 1]) for k in range(levels)], (image[0], image[1]), mins,
        [m or None for m in maxes] if maxes else None, nested_ratios,
        [(steps[2 * k], steps[2 * k + 1]) for k in range(levels)] if steps else None, offset, True)
    torch.testing.assert_close(call(), expected)


def _raw_prior_boxes_arguments(data) -> tuple:
    """The flat arguments of the raw op (csrc/ops/priors.cpp), drawn valid, then up to two of
    them broken: a hostile value (non-positive, NaN, inf, past the prior cap or int64), a wrong
    length, or ratio counts that claim more or fewer ratios than given."""
    levels = data.draw(st.integers(0, 3), label="levels")
    broken = data.draw(st.sets(st.sampled_from(["feature_map_sizes", "image_size", "min_sizes", "max_sizes",
                                                "aspect_ratio_counts", "aspect_ratios", "steps", "offset"]),
                               max_size=2), label="broken")
    fmaps = [data.draw(st.sampled_from([1, 2, 3])) for _ in range(2 * levels)]
    mins = [30.0] * levels
    maxes = data.draw(st.one_of(st.just([]), st.lists(st.sampled_from([0.0, 60.0]), min_size=levels,
                                                      max_size=levels)))
    counts = [data.draw(st.integers(0, 2)) for _ in range(levels)]
    ratios = [data.draw(st.sampled_from([2.0, 3.0])) for _ in range(sum(counts))]
    steps = data.draw(st.sampled_from([[], [8.0, 16.0] * levels]))
    image = data.draw(st.sampled_from([[300.0, 300.0], [300.0, 200.0]]))
    offset = data.draw(st.sampled_from([0.5, 0.0, 1.0]))

    def spoil(values: list, hostile: list) -> list:
        """One element replaced by a hostile value, or the list one element longer or shorter."""
        how = data.draw(st.sampled_from(["value", "longer", "shorter"] if values else ["longer"]))
        values = list(values)
        if how == "value":
            values[data.draw(st.integers(0, len(values) - 1))] = data.draw(st.sampled_from(hostile))
        elif how == "longer":
            values.append(data.draw(st.sampled_from(hostile)))
        else:
            values.pop()
        return values

    if "feature_map_sizes" in broken:
        fmaps = spoil(fmaps, [0, -1, 2**41, 2**62, -(2**63), 2**64, -(2**64) - 1])
    if "min_sizes" in broken:
        mins = spoil(mins, [0.0, -1.0, math.nan, math.inf])
    if "max_sizes" in broken:
        maxes = spoil(maxes or [60.0] * levels, [10.0, -1.0, math.inf, math.nan])
    if "aspect_ratio_counts" in broken:
        counts = spoil(counts, [-1, 3, 2**62, 2**63 - 1, -(2**63), 2**64])
    if "aspect_ratios" in broken:
        ratios = spoil(ratios, [0.0, -2.0, math.nan, math.inf])
    if "steps" in broken:
        steps = spoil(steps, [0.0, -8.0, math.inf])
    if "image_size" in broken:
        image = spoil(image, [0.0, math.nan])
    if "offset" in broken:
        offset = data.draw(st.sampled_from([-0.1, 1.5, math.nan]))
    return fmaps, image, mins, maxes, ratios, counts, steps, offset


def _expected_prior_boxes_outcome(fmaps, image, mins, maxes, ratios, counts, steps, offset):
    """(names, error) of a raw prior_boxes call, from the flat-argument rules of
    csrc/ops/priors.cpp (its header comment): ints past int64 are refused by torch's schema;
    then every level has an (h, w) pair of positive sides, a positive finite min size, a max
    size of 0 (none) or at least the min, a ratio count claiming from the ratios left; the
    ratios are all claimed and positive finite, steps are empty or a positive finite (y, x)
    pair per level, the image a positive finite (h, w), the offset in [0, 1], and the levels
    give at most 2**40 priors. (names empty: valid.)"""
    past_int64 = [name for name, values in (("feature_map_sizes", fmaps), ("aspect_ratio_counts", counts))
                  if any(not INT64_MIN <= v <= INT64_MAX for v in values)]
    if past_int64:
        return {f"argument '{name}'" for name in past_int64}, RuntimeError
    levels = len(mins)
    invalid = set()
    if len(fmaps) != 2 * levels or not all(v > 0 for v in fmaps):
        invalid.add("feature_map_sizes")
    max_ok = [m == 0 or (math.isfinite(m) and m >= low) for m, low in zip(maxes, mins, strict=False)]
    if maxes and (len(maxes) != levels or not all(max_ok)):
        invalid.add("max_sizes")
    if len(counts) != levels:
        invalid.add("aspect_ratio_counts")
    else:
        claimed = 0
        for count in counts:  # each count claims from the ratios the earlier levels left
            if not 0 <= count <= len(ratios) - claimed:
                invalid.add("aspect_ratio_counts")
                break
            claimed += count
        else:
            if claimed != len(ratios):
                invalid.add("aspect_ratios")
    if steps and (len(steps) != 2 * levels or not all(_is_positive_finite(v) for v in steps)):
        invalid.add("steps")
    if not all(_is_positive_finite(v) for v in mins):
        invalid.add("min_sizes")
    if not all(_is_positive_finite(v) for v in ratios):
        invalid.add("aspect_ratios")
    if len(image) != 2 or not all(_is_positive_finite(v) for v in image):
        invalid.add("image_size")
    if not 0 <= offset <= 1:
        invalid.add("offset")
    if not invalid & {"feature_map_sizes", "max_sizes", "aspect_ratio_counts"}:
        per_cell = [1 + (bool(maxes) and maxes[k] > 0) + 2 * counts[k] for k in range(levels)]
        if sum(fmaps[2 * k] * fmaps[2 * k + 1] * per_cell[k] for k in range(levels)) > MAX_PRIORS:
            invalid.add("feature_map_sizes")
    return invalid, NAMED_ERRORS
