"""The CPU kernels run on torch's intra-op threads: the extension is built with torch's own
parallel backend, a kernel's tasks really run on every allowed thread (recorded per task by a
test-only trace in the extension), and the results do not depend on the thread count:
integer outputs identical, float outputs bit-identical with 1, 2 and 3 threads."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import torch
from helpers import flat_tensors, seeded
from ssd_reference.testing import random_boxes, random_priors

from ssd_ext import _C, ops
from ssd_ext.models import SSD512_VOC
from ssd_ext.ops import priors as priors_module

THREAD_COUNTS = (1, 2, 3)



@contextmanager
def intra_op_threads(count: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def torch_backend() -> str:
    info = torch.__config__.parallel_info()
    return "OpenMP" if "parallel backend: OpenMP" in info else "native"


def _box_iou() -> Callable[[], object]:
    a = random_boxes(300, seeded(0), min_size=0.01)
    b = random_boxes(700, seeded(1), min_size=0.01)
    return lambda: ops.box_iou(a, b)


def _match() -> Callable[[], object]:
    generator = seeded(2)
    priors = random_priors(3000, generator)
    counts = [4, 0, 9, 1, 6]  # an image without ground truth too
    boxes = [random_boxes(g, generator, min_size=0.05) for g in counts]
    # Duplicated boxes make IoU ties, which the tie rules (not the thread split) must settle.
    boxes[2][5] = boxes[2][3]
    labels = [torch.randint(1, 21, (g,), generator=generator) for g in counts]
    return lambda: ops.match(boxes, labels, priors)


def _hard_negative_mining() -> Callable[[], object]:
    generator = seeded(3)
    # Losses rounded to a few values: many ties, settled by the lower prior index.
    loss = (torch.rand(7, 8732, generator=generator) * 8).round() / 8
    labels = torch.where(torch.rand(7, 8732, generator=generator) < 0.01,
                         torch.randint(1, 21, (7, 8732), generator=generator), 0)
    labels[1] = 0  # no positive: min_negatives alone
    return lambda: ops.hard_negative_mining(loss, labels, min_negatives=5)


def _nms() -> Callable[[], object]:
    generator = seeded(4)
    boxes = random_boxes(3000, generator, min_size=0.02, max_size=0.3)
    scores = (torch.rand(3000, generator=generator) * 64).round()  # ties
    return lambda: ops.nms(boxes, scores, 0.5)


def _batched_nms() -> Callable[[], object]:
    generator = seeded(5)
    boxes = random_boxes(3000, generator, min_size=0.02, max_size=0.3)
    scores = (torch.rand(3000, generator=generator) * 64).round()
    idxs = torch.randint(0, 7, (3000,), generator=generator)
    return lambda: ops.batched_nms(boxes, scores, idxs, 0.5)


def _detect() -> Callable[[], object]:
    generator = seeded(6)
    priors = random_priors(4000, generator)
    loc = torch.randn(3, 4000, 4, generator=generator)
    conf = 3 * torch.randn(3, 4000, 21, generator=generator)
    return lambda: [tuple(d.values()) for d in ops.detect(loc, conf, priors)]


def _encode() -> Callable[[], object]:
    generator = seeded(7)
    priors = random_priors(8732, generator)
    boxes = torch.stack([random_boxes(8732, generator, min_size=0.01) for _ in range(5)])
    return lambda: ops.encode(boxes, priors)


def _decode() -> Callable[[], object]:
    generator = seeded(8)
    priors = random_priors(8732, generator)
    loc = 2 * torch.randn(5, 8732, 4, generator=generator)
    return lambda: ops.decode(loc, priors)


def _prior_boxes() -> Callable[[], object]:
    def run() -> torch.Tensor:
        priors_module._CACHE.clear()  # the wrapper caches its results: run the kernel each time
        return SSD512_VOC.build()

    return run


# Every op with a CPU kernel. nms (one set of boxes) is one greedy sweep and runs on one
# thread by design: it is only checked for thread-count independence.
OPS: dict[str, Callable[[], Callable[[], object]]] = {
    "box_iou": _box_iou,
    "match": _match,
    "hard_negative_mining": _hard_negative_mining,
    "nms": _nms,
    "batched_nms": _batched_nms,
    "detect": _detect,
    "encode": _encode,
    "decode": _decode,
    "prior_boxes": _prior_boxes,
}
SPLIT_ACROSS_THREADS = [name for name in OPS if name != "nms"]


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's raw bits, so that equality is bit equality (NaN == NaN, -0.0 != 0.0)."""
    if tensor.is_floating_point():
        integer = {2: torch.int16, 4: torch.int32, 8: torch.int64}[tensor.element_size()]
        return tensor.contiguous().view(integer)
    return tensor


def test_parallel_info_reports_torch_backend() -> None:
    info = _C.parallel_info()
    assert info["backend"] == torch_backend()
    assert info["torch_backend"] == torch_backend()
    with intra_op_threads(3):
        assert _C.parallel_info()["num_threads"] == 3
    with intra_op_threads(1):
        assert _C.parallel_info()["num_threads"] == 1


@pytest.mark.parametrize("name", SPLIT_ACROSS_THREADS)
def test_kernel_tasks_run_on_every_allowed_thread(name: str) -> None:
    run = OPS[name]()
    for count in THREAD_COUNTS:
        with intra_op_threads(count):
            _C._start_thread_trace()
            try:
                run()
            finally:
                seen = _C._stop_thread_trace()
        assert seen == list(range(count)), f"{name} with {count} thread(s) ran on threads {seen}"


def test_thread_trace_is_off_by_default() -> None:
    run = _box_iou()
    _C._start_thread_trace()
    _C._stop_thread_trace()
    run()
    assert _C._stop_thread_trace() == []


@pytest.mark.parametrize("name", list(OPS))
def test_results_do_not_depend_on_thread_count(name: str) -> None:
    run = OPS[name]()
    results = {}
    for count in THREAD_COUNTS:
        with intra_op_threads(count):
            results[count] = [_bits(t) for t in flat_tensors(run())]
    for count in THREAD_COUNTS[1:]:
        assert len(results[count]) == len(results[1])
        for single, several in zip(results[1], results[count], strict=True):
            assert single.dtype == several.dtype and single.shape == several.shape
            assert torch.equal(single, several), f"{name}: 1 vs {count} threads differ"
