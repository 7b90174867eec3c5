"""Bad input to every op, raw and wrapped: a ValueError/TypeError naming the argument, never a
crash, an out-of-bounds read or uninitialised output.

`RAW_CASES`: for each op and each bad-input case, the C++ kernel (eager CPU), the fake kernel
(meta tensors) and torch.compile(fullgraph=True) raise the same exception type. The fakes mirror
the C++ checks (`_check_<op>_args` beside each fake, in the order of csrc/ops/<stem>_checks.h);
a precondition added to C++ and not to the fake fails here.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import pytest
import ssd_reference as ref
import torch
from helpers import CUDA_AVAILABLE, DEVICES

from ssd_ext import ops

F32, F64, I32, I64 = torch.float32, torch.float64, torch.int32, torch.int64


def _z(*shape, dtype=F32):
    return torch.zeros(*shape, dtype=dtype)


def _boxes(n, dtype=F32):
    boxes = torch.rand(n, 4, generator=torch.Generator().manual_seed(n)) * 0.5
    boxes[:, 2:] += boxes[:, :2] + 0.05
    return boxes.to(dtype)


def _priors(n, dtype=F32):
    return ref.box_coding.xyxy_to_cxcywh(_boxes(n)).to(dtype)


@dataclasses.dataclass
class Case:
    op: str
    args: Callable[[], tuple]  # positional arguments of torch.ops.ssd_ext.<op>.default
    error: type
    kwargs: dict = dataclasses.field(default_factory=dict)


def _iou(b1, b2):
    return lambda: (b1(), b2())


def _coding(boxes, priors, variances=(0.1, 0.2)):
    return lambda: (boxes(), priors(), list(variances))


def _nms(boxes=lambda: _boxes(3), scores=lambda: _z(3), iou=0.5, max_output=-1):
    return lambda: (boxes(), scores(), iou, max_output)


def _batched(idxs, iou=0.5, boxes=lambda: _boxes(3)):
    return lambda: (boxes(), _z(3), idxs(), iou, -1)


def _match(boxes=lambda: _boxes(3), labels=lambda: torch.ones(3, dtype=I64),
           offsets=lambda: torch.tensor([0, 3]), priors=lambda: _priors(5), iou=0.5, vc=0.1, vs=0.2):
    return lambda: (boxes(), labels(), offsets(), priors(), iou, vc, vs)


def _mining(loss=lambda: _z(2, 5), labels=lambda: torch.zeros(2, 5, dtype=I64), ratio=3, minimum=0):
    return lambda: (loss(), labels(), ratio, minimum)


def _detect(loc=lambda: _z(1, 5, 4), conf=lambda: _z(1, 5, 3), priors=lambda: _priors(5), score=0.01,
            iou=0.45, candidates=10, max_det=10, vc=0.1, vs=0.2):
    return lambda: (loc(), conf(), priors(), score, iou, candidates, max_det, vc, vs)


def _prior_args(fmaps=(3, 3), image=(300.0, 300.0), mins=(30.0,), maxes=(60.0,), ratios=(2.0,),
                counts=(1,), steps=(), offset=0.5):
    return lambda: (list(fmaps), list(image), list(mins), list(maxes), list(ratios), list(counts),
                    list(steps), offset, True)


def _prior_out(out=lambda: torch.empty(9, 4), fmaps=(3, 3), steps=(100.0, 100.0), shapes=(0.1, 0.1),
               per_level=(1,), image=(300.0, 300.0), offset=0.5):
    return lambda: (out(), list(fmaps), list(steps), list(shapes), list(per_level), list(image), offset, True)


NAN, INF = float("nan"), float("inf")

RAW_CASES: dict[str, Case] = {
    # box_iou
    "box_iou-last-dim-5": Case("box_iou", _iou(lambda: _z(3, 5), lambda: _z(2, 4)), ValueError),
    "box_iou-3d": Case("box_iou", _iou(lambda: _z(1, 3, 4), lambda: _z(2, 4)), ValueError),
    "box_iou-1d": Case("box_iou", _iou(lambda: _z(4), lambda: _z(2, 4)), ValueError),
    "box_iou-int32": Case("box_iou", _iou(lambda: _z(3, 4, dtype=I32), lambda: _z(2, 4, dtype=I32)),
                          TypeError),
    "box_iou-bool": Case("box_iou", _iou(lambda: _z(3, 4), lambda: _z(2, 4, dtype=torch.bool)), TypeError),
    "box_iou-complex": Case("box_iou", _iou(lambda: _z(3, 4, dtype=torch.complex64), lambda: _z(2, 4)),
                            TypeError),
    "box_iou-float8": Case("box_iou", _iou(lambda: _z(3, 4, dtype=torch.float8_e4m3fn),
                                           lambda: _z(2, 4, dtype=torch.float8_e4m3fn)), TypeError),
    "box_iou-mixed-dtype": Case("box_iou", _iou(lambda: _z(3, 4), lambda: _z(2, 4, dtype=F64)), TypeError),
    # 2**40 x 2**40 expanded rows: the output's byte count is past 2**63 (inputs take no memory).
    "box_iou-output-past-2**63-bytes": Case("box_iou", _iou(lambda: _boxes(1).expand(2**40, 4),
                                                            lambda: _boxes(1).expand(2**40, 4)), ValueError),
    "box_iou-bad-shape-and-dtype": Case("box_iou", _iou(lambda: _z(3, 5, dtype=I32), lambda: _z(2, 4)),
                                        ValueError),
    # encode / decode
    "encode-last-dim-3": Case("encode", _coding(lambda: _z(5, 3), lambda: _priors(5)), ValueError),
    "encode-0d-priors": Case("encode", _coding(lambda: _boxes(5), lambda: torch.tensor(1.0)), ValueError),
    "encode-priors-not-trailing": Case("encode", _coding(lambda: _boxes(5), lambda: _priors(4)), ValueError),
    "encode-priors-longer": Case("encode", _coding(lambda: _boxes(5), lambda: _priors(5)[None]), ValueError),
    "encode-int-boxes": Case("encode", _coding(lambda: _z(5, 4, dtype=I64), lambda: _priors(5)), TypeError),
    "encode-mixed-dtype": Case("encode", _coding(lambda: _boxes(5, F64), lambda: _priors(5)), TypeError),
    "encode-three-variances": Case("encode", _coding(lambda: _boxes(5), lambda: _priors(5), (0.1, 0.2, 0.3)),
                                   ValueError),
    "encode-negative-variance": Case("encode", _coding(lambda: _boxes(5), lambda: _priors(5), (-0.1, 0.2)),
                                     ValueError),
    "encode-nan-variance": Case("encode", _coding(lambda: _boxes(5), lambda: _priors(5), (0.1, NAN)),
                                ValueError),
    "decode-inf-variance": Case("decode", _coding(lambda: _z(2, 5, 4), lambda: _priors(5), (INF, 0.2)),
                                ValueError),
    "decode-zero-variance": Case("decode", _coding(lambda: _z(2, 5, 4), lambda: _priors(5), (0.1, 0.0)),
                                 ValueError),
    "decode-half-loc-float-priors": Case("decode", _coding(lambda: _z(5, 4, dtype=torch.float16),
                                                           lambda: _priors(5)), TypeError),
    # nms / batched_nms
    "nms-boxes-5-cols": Case("nms", _nms(boxes=lambda: _z(3, 5)), ValueError),
    "nms-scores-short": Case("nms", _nms(scores=lambda: _z(2)), ValueError),
    "nms-scores-2d": Case("nms", _nms(scores=lambda: _z(3, 1)), ValueError),
    "nms-scores-int": Case("nms", _nms(scores=lambda: _z(3, dtype=I64)), TypeError),
    "nms-boxes-int": Case("nms", _nms(boxes=lambda: _z(3, 4, dtype=I64)), TypeError),
    "nms-iou-1.5": Case("nms", _nms(iou=1.5), ValueError),
    "nms-iou-nan": Case("nms", _nms(iou=NAN), ValueError),
    "nms-max-output-minus-2": Case("nms", _nms(max_output=-2), ValueError),
    "batched_nms-idxs-int32": Case("batched_nms", _batched(lambda: _z(3, dtype=I32)), TypeError),
    "batched_nms-idxs-float": Case("batched_nms", _batched(lambda: _z(3)), TypeError),
    "batched_nms-idxs-short": Case("batched_nms", _batched(lambda: _z(2, dtype=I64)), ValueError),
    "batched_nms-iou-negative": Case("batched_nms", _batched(lambda: _z(3, dtype=I64), iou=-0.5), ValueError),
    # match (gt_offsets: the CSR offsets)
    "match-gt-boxes-3d": Case("match", _match(boxes=lambda: _z(1, 3, 4)), ValueError),
    "match-priors-5-cols": Case("match", _match(priors=lambda: _z(5, 5)), ValueError),
    "match-mixed-dtype": Case("match", _match(priors=lambda: _priors(5, F64)), TypeError),
    "match-labels-int32": Case("match", _match(labels=lambda: torch.ones(3, dtype=I32)), TypeError),
    "match-labels-float": Case("match", _match(labels=lambda: _z(3)), TypeError),
    "match-labels-short": Case("match", _match(labels=lambda: torch.ones(2, dtype=I64)), ValueError),
    "match-offsets-int32": Case("match", _match(offsets=lambda: torch.tensor([0, 3], dtype=I32)), TypeError),
    "match-offsets-float": Case("match", _match(offsets=lambda: torch.tensor([0.0, 3.0])), TypeError),
    "match-offsets-2d": Case("match", _match(offsets=lambda: torch.tensor([[0, 3]])), ValueError),
    "match-offsets-empty": Case("match", _match(offsets=lambda: torch.zeros(0, dtype=I64)), ValueError),
    "match-iou-0": Case("match", _match(iou=0.0), ValueError),
    "match-iou-nan": Case("match", _match(iou=NAN), ValueError),
    "match-variance-0": Case("match", _match(vc=0.0), ValueError),
    "match-variance-inf": Case("match", _match(vs=INF), ValueError),
    "match-output-past-2**63-bytes": Case("match", _match(
        boxes=lambda: _z(0, 4), labels=lambda: torch.zeros(0, dtype=I64),
        offsets=lambda: torch.zeros(1, dtype=I64).expand(2**40 + 1),
        priors=lambda: _priors(1).expand(2**30, 4)), ValueError),
    # hard_negative_mining
    "mining-loss-int": Case("hard_negative_mining", _mining(loss=lambda: _z(2, 5, dtype=I64)), TypeError),
    "mining-loss-3d": Case("hard_negative_mining", _mining(loss=lambda: _z(2, 5, 1)), ValueError),
    "mining-labels-int32": Case("hard_negative_mining",
                                _mining(labels=lambda: torch.zeros(2, 5, dtype=I32)), TypeError),
    "mining-labels-shape": Case("hard_negative_mining",
                                _mining(labels=lambda: torch.zeros(2, 4, dtype=I64)), ValueError),
    "mining-ratio-negative": Case("hard_negative_mining", _mining(ratio=-1), ValueError),
    "mining-min-negatives-negative": Case("hard_negative_mining", _mining(minimum=-1), ValueError),
    # detect
    "detect-loc-2d": Case("detect", _detect(loc=lambda: _z(5, 4)), ValueError),
    "detect-conf-int": Case("detect", _detect(conf=lambda: _z(1, 5, 3, dtype=I64)), TypeError),
    "detect-conf-wrong-p": Case("detect", _detect(conf=lambda: _z(1, 4, 3)), ValueError),
    "detect-one-class": Case("detect", _detect(conf=lambda: _z(1, 5, 1)), ValueError),
    "detect-priors-rows": Case("detect", _detect(priors=lambda: _priors(4)), ValueError),
    "detect-mixed-dtype": Case("detect", _detect(conf=lambda: _z(1, 5, 3, dtype=F64)), TypeError),
    "detect-score-1.5": Case("detect", _detect(score=1.5), ValueError),
    "detect-score-nan": Case("detect", _detect(score=NAN), ValueError),
    "detect-iou-negative": Case("detect", _detect(iou=-0.1), ValueError),
    "detect-candidates-negative": Case("detect", _detect(candidates=-1), ValueError),
    "detect-max-detections-negative": Case("detect", _detect(max_det=-1), ValueError),
    "detect-variance-nan": Case("detect", _detect(vc=NAN), ValueError),
    "detect-max-detections-2**62": Case("detect", _detect(max_det=2**62), ValueError),
    # prior_boxes (no tensor argument: the meta run passes device="meta")
    "priors-ratio-counts-wrap-int64": Case("prior_boxes", _prior_args(
        fmaps=(2, 2) * 4, mins=(30.0,) * 4, maxes=(), ratios=(), counts=(2**62,) * 4), ValueError),
    "priors-ratio-count-past-ratios": Case("prior_boxes", _prior_args(counts=(2,)), ValueError),
    "priors-ratio-count-negative": Case("prior_boxes", _prior_args(
        mins=(30.0, 40.0), maxes=(), fmaps=(2, 2, 1, 1), ratios=(2.0,), counts=(2, -1)), ValueError),
    "priors-fmaps-odd-length": Case("prior_boxes", _prior_args(fmaps=(3,)), ValueError),
    "priors-fmap-zero": Case("prior_boxes", _prior_args(fmaps=(0, 3)), ValueError),
    "priors-fmap-negative": Case("prior_boxes", _prior_args(fmaps=(-3, 3)), ValueError),
    "priors-fmap-2**20": Case("prior_boxes", _prior_args(fmaps=(2**20, 2**20)), ValueError),
    "priors-fmap-2**62": Case("prior_boxes", _prior_args(fmaps=(2**62, 2**62)), ValueError),
    "priors-max-below-min": Case("prior_boxes", _prior_args(maxes=(20.0,)), ValueError),
    "priors-max-sizes-count": Case("prior_boxes", _prior_args(maxes=(60.0, 90.0)), ValueError),
    "priors-min-nan": Case("prior_boxes", _prior_args(mins=(NAN,), maxes=()), ValueError),
    "priors-ratio-inf": Case("prior_boxes", _prior_args(ratios=(INF,)), ValueError),
    "priors-image-zero": Case("prior_boxes", _prior_args(image=(0.0, 300.0)), ValueError),
    "priors-image-three": Case("prior_boxes", _prior_args(image=(300.0, 300.0, 3.0)), ValueError),
    "priors-steps-one-value": Case("prior_boxes", _prior_args(steps=(8.0,)), ValueError),
    "priors-steps-negative": Case("prior_boxes", _prior_args(steps=(-8.0, 8.0)), ValueError),
    "priors-offset-1.5": Case("prior_boxes", _prior_args(offset=1.5), ValueError),
    "priors-offset-nan": Case("prior_boxes", _prior_args(offset=NAN), ValueError),
    "priors-dtype-int": Case("prior_boxes", _prior_args(), TypeError, {"dtype": torch.int32}),
    # _prior_boxes_out (the out-variant behind prior_boxes)
    "priors-out-wrong-rows": Case("_prior_boxes_out", _prior_out(out=lambda: torch.empty(8, 4)), ValueError),
    "priors-out-int": Case("_prior_boxes_out", _prior_out(out=lambda: torch.empty(9, 4, dtype=I32)),
                           TypeError),
    "priors-out-strided": Case("_prior_boxes_out", _prior_out(out=lambda: torch.empty(4, 9).t()),
                               ValueError),
    "priors-out-shapes-per-level-wrap": Case("_prior_boxes_out", _prior_out(
        out=lambda: torch.empty(0, 4), fmaps=(1, 1) * 4, steps=(1.0,) * 8, shapes=(),
        per_level=(2**62,) * 4), ValueError),
    "priors-out-shapes-count": Case("_prior_boxes_out", _prior_out(per_level=(2,)), ValueError),
    "priors-out-shape-zero": Case("_prior_boxes_out", _prior_out(shapes=(0.1, 0.0)), ValueError),
    "priors-out-offset": Case("_prior_boxes_out", _prior_out(offset=-0.5), ValueError),
}


def _root_error(error: BaseException) -> BaseException:
    """The op's own exception behind torch.compile's wrappers: dynamo re-raises a fake
    kernel's error as a TorchRuntimeError whose chain (cause or context) holds the original."""
    seen = error
    while seen is not None:
        if isinstance(seen, (ValueError, TypeError)):
            return seen
        seen = seen.__cause__ or seen.__context__
    return error


def _to_meta(value):
    return value.to("meta") if isinstance(value, torch.Tensor) else value


def _call(case: Case, mode: str):
    op = getattr(torch.ops.ssd_ext, case.op).default
    args, kwargs = case.args(), dict(case.kwargs)
    if mode == "eager":
        return op(*args, **kwargs)
    if mode == "meta":
        if not any(isinstance(a, torch.Tensor) for a in args):
            kwargs["device"] = torch.device("meta")
        return op(*[_to_meta(a) for a in args], **kwargs)
    tensor_slots = [k for k, a in enumerate(args) if isinstance(a, torch.Tensor)]

    def program(*tensors):
        full = list(args)
        for slot, tensor in zip(tensor_slots, tensors, strict=True):
            full[slot] = tensor
        return op(*full, **kwargs)

    torch._dynamo.reset()  # each case compiles afresh: no recompile limit shared between cases
    compiled = torch.compile(program, fullgraph=True, backend="eager", dynamic=False)
    return compiled(*[args[k] for k in tensor_slots])


@pytest.mark.parametrize("mode", ["eager", "meta", "compile"])
@pytest.mark.parametrize("name", sorted(RAW_CASES))
def test_kernel_fake_and_compile_raise_the_same_error(name, mode):
    case = RAW_CASES[name]
    with pytest.raises(Exception) as caught:
        _call(case, mode)
    error = _root_error(caught.value) if mode == "compile" else caught.value
    assert type(error) is case.error, f"{mode}: {type(error).__name__}: {error}"


def test_every_op_has_bad_input_cases():
    from ssd_ext.cli import registered_ops

    assert {case.op for case in RAW_CASES.values()} == set(registered_ops())


# ---------------------------------------------------------------------------------------
# One meta tensor among CPU tensors reaches the fake kernel (the Meta dispatch key
# wins); it must be a device error, not an uninitialised CPU tensor.

def _valid_raw_calls() -> dict[str, tuple]:
    return {
        "box_iou": (_boxes(3), _boxes(2)),
        "encode": (_boxes(5), _priors(5), [0.1, 0.2]),
        "decode": (_z(2, 5, 4), _priors(5), [0.1, 0.2]),
        "nms": (_boxes(3), _z(3), 0.5, -1),
        "batched_nms": (_boxes(3), _z(3), torch.zeros(3, dtype=I64), 0.5, -1),
        "match": (_boxes(3), torch.ones(3, dtype=I64), torch.tensor([0, 1, 3]), _priors(5), 0.5, 0.1, 0.2),
        "hard_negative_mining": (_z(2, 5), torch.zeros(2, 5, dtype=I64), 3, 0),
        "detect": (_z(1, 5, 4), _z(1, 5, 3), _priors(5), 0.01, 0.45, 10, 10, 0.1, 0.2),
        "_prior_boxes_out": (torch.empty(9, 4), [3, 3], [100.0, 100.0], [0.1, 0.1], [1], [300.0, 300.0],
                             0.5, True),
    }


META_CASES = [(op, slot) for op, args in _valid_raw_calls().items()
              for slot, arg in enumerate(args) if isinstance(arg, torch.Tensor)]


@pytest.mark.parametrize(("op", "slot"), [c for c in META_CASES if c[0] != "_prior_boxes_out"],
                         ids=[f"{op}-arg{slot}" for op, slot in META_CASES if op != "_prior_boxes_out"])
def test_one_meta_tensor_among_cpu_tensors_is_a_device_error(op, slot):
    args = list(_valid_raw_calls()[op])
    args[slot] = args[slot].to("meta")
    with pytest.raises(ValueError, match="same device"):
        getattr(torch.ops.ssd_ext, op).default(*args)


@pytest.mark.parametrize("op", ["nms", "batched_nms"])
def test_nms_on_plain_meta_tensors_is_a_named_error(op):
    """The kept count depends on values that meta tensors lack (found by the fuzzer: torch's
    RuntimeError about FakeTensors came out instead)."""
    args = [a.to("meta") if isinstance(a, torch.Tensor) else a for a in _valid_raw_calls()[op]]
    with pytest.raises(ValueError, match=f"{op} cannot run on device meta"):
        getattr(torch.ops.ssd_ext, op).default(*args)


@pytest.mark.parametrize("op", sorted({op for op, _ in META_CASES} - {"_prior_boxes_out"}))
def test_valid_raw_calls_run(op):
    """The table above is valid input: only the meta tensor makes it fail."""
    getattr(torch.ops.ssd_ext, op).default(*_valid_raw_calls()[op])


# ---------------------------------------------------------------------------------------
# Errors of the wrappers that name the argument, what was expected and what came.

PRIORS5 = _priors(5)


@pytest.mark.parametrize("variances", ["ab", b"ab", 0.1, None, [None, 0.2], ["0.1", "0.2"], [True, 0.2],
                                       {0.1, 0.2}])
@pytest.mark.parametrize("fn", ["encode", "decode", "detect", "match"])
def test_variances_that_are_not_two_numbers_are_a_type_error(fn, variances):
    calls = {
        "encode": lambda: ops.encode(_boxes(5), PRIORS5, variances=variances),
        "decode": lambda: ops.decode(_z(5, 4), PRIORS5, variances=variances),
        "detect": lambda: ops.detect(_z(1, 5, 4), _z(1, 5, 3), PRIORS5, variances=variances),
        "match": lambda: ops.match([_boxes(2)], [torch.ones(2, dtype=I64)], PRIORS5, variances=variances),
    }
    with pytest.raises(TypeError, match=r"variances must be a pair of real numbers .*got"):
        calls[fn]()


@pytest.mark.parametrize("variances", [(0.1,), (0.1, 0.2, 0.3), (0.0, 0.2), (0.1, float("nan")),
                                       (0.1, float("inf"))])
def test_variances_of_wrong_count_or_value_are_a_value_error(variances):
    with pytest.raises(ValueError, match="variances"):
        ops.encode(_boxes(5), PRIORS5, variances=variances)


def test_variances_accept_numpy_numbers_and_tensors():
    import numpy as np

    expected = ops.encode(_boxes(5), PRIORS5, (0.1, 0.2))
    for variances in [np.array([0.1, 0.2]), torch.tensor([0.1, 0.2], dtype=F64), (np.float32(0.1), 0.2)]:
        torch.testing.assert_close(ops.encode(_boxes(5), PRIORS5, variances), expected)


PRIOR_ARGS = dict(image_size=300, min_sizes=[30], max_sizes=None, aspect_ratios=[[2]])


@pytest.mark.parametrize("size", [2**19, 2**20, 2**62, 2**63, 2**64, 10**30, (1, 2**64), (2**64, 1)])
def test_prior_boxes_too_many_priors_names_feature_map_sizes(size):
    """2**19 and 2**20 are under the 2**40-prior cap but need terabytes; 2**62 is over it; 2**63
    and more do not fit int64 (the op's schema would refuse them with a RuntimeError)."""
    with pytest.raises(ValueError, match=r"feature_map_sizes.*(needs \d+ bytes|at most 2\^40)"):
        ops.prior_boxes([size], **PRIOR_ARGS)


@pytest.mark.parametrize("size", [-(2**64) - 1, -(2**63), 0])
def test_prior_boxes_non_positive_feature_map_names_it(size):
    with pytest.raises(ValueError, match=r"feature_map_sizes\[0\] must be positive"):
        ops.prior_boxes([size], **PRIOR_ARGS)


@pytest.mark.parametrize("mode", ["fake", "compile"])
def test_prior_boxes_memory_check_of_the_fake_names_feature_map_sizes(mode):
    """Under FakeTensorMode (the raw op) and torch.compile (the wrapper) the fake kernel states
    the memory check in the same words as the eager wrapper."""
    if mode == "fake":
        from torch._subclasses.fake_tensor import FakeTensorMode

        def call():
            with FakeTensorMode():
                torch.ops.ssd_ext.prior_boxes.default([2**20, 2**20], [300.0, 300.0], [30.0], [], [], [0], [],
                                                      device=torch.device("cpu"))
    else:
        def program(scale):
            # One prior per cell: 2**40 priors, at the count cap, past any memory.
            return ops.prior_boxes([2**20], 300, [30], None, [[]]) * scale

        def call():
            torch._dynamo.reset()
            torch.compile(program, fullgraph=True, backend="eager")(torch.tensor(2.0))
    with pytest.raises(Exception) as caught:
        call()
    error = _root_error(caught.value)
    assert type(error) is ValueError and "feature_map_sizes" in str(error) and "needs" in str(error), error


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA_AVAILABLE, reason="needs a CUDA device and the CUDA kernels")
def test_prior_boxes_past_gpu_memory_names_feature_map_sizes():
    with pytest.raises(ValueError, match=r"feature_map_sizes.*needs \d+ bytes.*memory of cuda"):
        ops.prior_boxes([2**20], **PRIOR_ARGS, device="cuda")


def test_prior_boxes_memory_error_states_bytes_and_memory():
    with pytest.raises(ValueError, match=r"needs \d+ bytes \([\d.]+ GiB\), more than the [\d.]+ GiB"):
        ops.prior_boxes([2**19], **PRIOR_ARGS)


# Python numbers past int64 or float range in every numeric argument of the wrappers: a
# ValueError naming the argument, never torch's schema RuntimeError or Python's OverflowError.
PAST_INT64 = [2**63, 2**64, -(2**64) - 1]
PAST_FLOAT = [10**400, -(10**400)]


def _number_cases() -> list[tuple[str, Callable[[object], object], object]]:
    boxes, scores, idxs = _boxes(3), _z(3), torch.zeros(3, dtype=I64)
    head = (_z(1, 5, 4), _z(1, 5, 3), PRIORS5)
    gt = ([_boxes(2)], [torch.ones(2, dtype=I64)], PRIORS5)
    mining = (_z(2, 5), torch.zeros(2, 5, dtype=I64))
    counts = {
        "max_output": [lambda v: ops.nms(boxes, scores, 0.5, v),
                       lambda v: ops.batched_nms(boxes, scores, idxs, 0.5, v)],
        "neg_pos_ratio": [lambda v: ops.hard_negative_mining(*mining, neg_pos_ratio=v)],
        "min_negatives": [lambda v: ops.hard_negative_mining(*mining, min_negatives=v)],
        "candidates_per_class": [lambda v: ops.detect_padded(*head, candidates_per_class=v)],
        "max_detections": [lambda v: ops.detect(*head, max_detections=v)],
        "num_levels": [lambda v: ops.ssd_sizes(300, v)],
    }
    unit_interval = {
        "iou_threshold": [lambda v: ops.nms(boxes, scores, v), lambda v: ops.match(*gt, iou_threshold=v),
                          lambda v: ops.detect(*head, iou_threshold=v)],
        "score_threshold": [lambda v: ops.detect(*head, score_threshold=v)],
        "offset": [lambda v: ops.prior_boxes([2], **PRIOR_ARGS, offset=v)],
    }
    positive = {  # positive reals: 2**64 is a valid value, past float range and negative are not
        "variances": [lambda v: ops.encode(boxes, PRIORS5[:3], (0.1, v)),
                      lambda v: ops.decode(_z(3, 4), PRIORS5[:3], (v, 0.2)),
                      lambda v: ops.match(*gt, variances=(v, 0.2)),
                      lambda v: ops.detect(*head, variances=(0.1, v))],
        "image_size": [lambda v: ops.prior_boxes([2], v, [30], None, [[2]]),
                       lambda v: ops.ssd_sizes(v, 6)],
        "min_sizes": [lambda v: ops.prior_boxes([2], 300, [v], None, [[2]])],
        "max_sizes": [lambda v: ops.prior_boxes([2], 300, [30], [v], [[2]])],
        "aspect_ratios": [lambda v: ops.prior_boxes([2], 300, [30], None, [[v]])],
        "steps": [lambda v: ops.prior_boxes([2], 300, [30], None, [[2]], steps=[v])],
        "s_max": [lambda v: ops.ssd_sizes(300, 6, s_max=v)],
    }
    cases = [(name, call, value) for name, calls in counts.items() for call in calls
             for value in PAST_INT64]
    cases += [("num_classes", lambda v: ops.match(*gt, num_classes=v), -(2**64) - 1)]
    cases += [(name, call, value) for name, calls in unit_interval.items() for call in calls
              for value in PAST_INT64[1:] + PAST_FLOAT]
    cases += [(name, call, value) for name, calls in positive.items() for call in calls
              for value in PAST_INT64[2:] + PAST_FLOAT]
    return cases


NUMBER_CASES = _number_cases()


@pytest.mark.parametrize(("name", "call", "value"), NUMBER_CASES,
                         ids=[f"{name}-{k}" for k, (name, _, _) in enumerate(NUMBER_CASES)])
def test_numbers_past_int64_or_float_range_name_the_argument(name, call, value):
    with pytest.raises(ValueError, match=name):
        call(value)


@pytest.mark.parametrize("value", [2**63, 2**64])
def test_num_classes_past_int64_is_valid_in_match(value):
    """num_classes only bounds the labels in Python: any large int is a valid bound."""
    boxes, labels = [_boxes(2)], [torch.ones(2, dtype=I64)]
    expected = ops.match(boxes, labels, PRIORS5)
    actual = ops.match(boxes, labels, PRIORS5, num_classes=value)
    assert torch.equal(actual[1], expected[1])


@pytest.mark.parametrize("device", ["foo", "cpu:x", "cuda:-2"])
def test_prior_boxes_unknown_device_is_a_value_error(device):
    with pytest.raises(ValueError, match=f"device must name a torch device.*{device}"):
        ops.prior_boxes([2], **PRIOR_ARGS, device=device)


@pytest.mark.parametrize("device", [3.5, object(), True, b"cpu"])
def test_prior_boxes_device_of_wrong_type_is_a_type_error(device):
    with pytest.raises(TypeError, match="device must be a torch.device"):
        ops.prior_boxes([2], **PRIOR_ARGS, device=device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error when CUDA is absent")
def test_prior_boxes_on_cuda_without_cuda_is_a_value_error():
    with pytest.raises(ValueError, match="CUDA is not available"):
        ops.prior_boxes([2], **PRIOR_ARGS, device="cuda")


def test_prior_boxes_on_meta_gives_the_shape():
    priors = ops.prior_boxes([3, 2], 300, [30, 60], [60, None], [[2], []], device="meta")
    assert priors.device.type == "meta" and priors.shape == (3 * 3 * 4 + 2 * 2 * 1, 4)


@pytest.mark.parametrize("fn", [ops.detect, ops.detect_padded])
@pytest.mark.parametrize("max_detections", [2**40, 2**62])
def test_detect_huge_max_detections_states_the_size(fn, max_detections):
    with pytest.raises(ValueError, match=r"max_detections.*(needs \d+ bytes|more than 2\^63 bytes)"):
        fn(_z(2, 5, 4), _z(2, 5, 3), PRIORS5, max_detections=max_detections)


def test_box_iou_output_past_memory_is_a_value_error_before_allocating():
    """2e5 x 2e5 (149 GiB float32) and 1e6 x 1e6 (3.6 TiB): refused with the size, from inputs
    that take no memory (expanded views)."""
    for count in (200_000, 1_000_000):
        boxes = _boxes(1).expand(count, 4)
        needed = count * count * 4
        if needed <= os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"):
            continue  # a machine that could hold it
        with pytest.raises(ValueError, match=r"box_iou: the IoU output \[N, M\].*needs \d+ bytes"):
            ops.box_iou(boxes, boxes)
        with pytest.raises(ValueError, match="needs"):
            torch.ops.ssd_ext.box_iou.default(boxes, boxes)


def test_box_iou_byte_count_overflow_is_a_value_error():
    boxes = _boxes(1).expand(2**40, 4)
    with pytest.raises(ValueError, match=r"more than 2\^63 bytes"):
        torch.ops.ssd_ext.box_iou.default(boxes, boxes)


def test_match_output_past_memory_is_a_value_error():
    """B from the offsets' length times P priors: 1e5 images x 1e7 priors (15 TiB)."""
    offsets = torch.zeros(1, dtype=I64).expand(100_001)
    priors = PRIORS5[:1].expand(10_000_000, 4)
    with pytest.raises(ValueError, match=r"match: the loc_targets output \[B, P, 4\].*needs"):
        torch.ops.ssd_ext.match.default(_z(0, 4), torch.zeros(0, dtype=I64), offsets, priors, 0.5, 0.1, 0.2)


# ---------------------------------------------------------------------------------------
# Malformed CSR offsets reaching the CPU kernel: rejected, never read past the ground truth.

@pytest.mark.parametrize("offsets", [[1, 3], [0, 2], [0, 4], [0, 3, 2, 3], [0, -1, 3], [0, 2**62, 3],
                                     [-(2**63), 3], [0, 3, 3, 2**63 - 1]])
def test_malformed_offsets_are_rejected(offsets):
    with pytest.raises(ValueError, match="gt_offsets"):
        torch.ops.ssd_ext.match.default(_boxes(3), torch.ones(3, dtype=I64), torch.tensor(offsets),
                                        _priors(5), 0.5, 0.1, 0.2)


def test_strided_offsets_are_read_in_order():
    offsets = torch.tensor([0, 9, 1, 9, 3, 9])[::2]  # [0, 1, 3] as a strided view
    loc, labels = torch.ops.ssd_ext.match.default(_boxes(3), torch.ones(3, dtype=I64), offsets,
                                                  _priors(5), 0.5, 0.1, 0.2)
    expected = ref.match([_boxes(3)[:1], _boxes(3)[1:]], [torch.ones(1, dtype=I64), torch.ones(2, dtype=I64)],
                         _priors(5))
    torch.testing.assert_close(labels, expected[1])


# ---------------------------------------------------------------------------------------
# Very large inputs: no 32-bit index overflow.

def test_nms_of_200k_boxes_indexes_past_16_bits():
    """200k identical boxes: one survives, the one of highest score, at an index > 2**17."""
    count = 200_000
    boxes = _boxes(1).expand(count, 4).contiguous()
    scores = torch.zeros(count)
    scores[count - 7] = 1.0
    assert ops.nms(boxes, scores, 0.5).tolist() == [count - 7]
    assert ops.batched_nms(boxes, scores, torch.zeros(count, dtype=I64), 0.5).tolist() == [count - 7]


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("SSD_RUN_HUGE") != "1",
                    reason="allocates ~10 GiB and takes minutes on 2 cores; set SSD_RUN_HUGE=1 to run")
@pytest.mark.parametrize("device", DEVICES)
def test_box_iou_over_2_31_elements(device):
    """An IoU matrix of 46341 x 46341 > 2**31 elements: the last rows are right."""
    n = 46_341
    g = torch.Generator().manual_seed(0)
    boxes = torch.rand(n, 4, generator=g)
    boxes[:, 2:] += boxes[:, :2]
    iou = ops.box_iou(boxes.to(device), boxes.to(device))
    assert iou.numel() > 2**31
    tail = slice(n - 3, n)
    torch.testing.assert_close(iou[tail].cpu(), ref.box_iou(boxes[tail], boxes))
    torch.testing.assert_close(iou[:, tail].cpu(), ref.box_iou(boxes, boxes[tail]))
